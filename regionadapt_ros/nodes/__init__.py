"""Thin rclpy shells. The only modules of the package that import rclpy."""
