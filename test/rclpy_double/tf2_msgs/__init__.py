"""tf2_msgs for the rclpy test double: the ROS 2 Humble definitions from the rosbags type store."""
