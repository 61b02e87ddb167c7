"""rcl_interfaces for the rclpy test double."""
