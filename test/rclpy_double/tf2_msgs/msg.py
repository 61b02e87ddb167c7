"""tf2_msgs message classes for the rclpy test double: the rosbags type-store classes (real field names)."""

from ros_double import message_namespace, missing_message

globals().update(message_namespace("tf2_msgs"))
__getattr__ = missing_message("tf2_msgs")
