"""rclpy.executors for the test double: only the exceptions a node's main() catches."""

from typing import Any

from ros_double import unsupported


class ExternalShutdownException(Exception):  # noqa: N818 - rclpy's name
    """The context was shut down from outside while spinning."""


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.executors.{name}")
