"""std_msgs message classes for the rclpy test double: the rosbags type-store classes (real field names)."""

from ros_double import message_namespace, missing_message

globals().update(message_namespace("std_msgs"))
__getattr__ = missing_message("std_msgs")
