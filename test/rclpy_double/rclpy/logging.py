"""rclpy.logging for the test double: named loggers (the same Logger class nodes get)."""

from __future__ import annotations

from typing import Any

from ros_double import unsupported

_loggers: dict[str, Any] = {}


def get_logger(name: str) -> Any:
    from rclpy.node import Logger

    return _loggers.setdefault(name, Logger(name))


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.logging.{name}")
