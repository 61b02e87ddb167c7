"""launch.conditions of the launch double."""

from launch._double import IfCondition, UnlessCondition

__all__ = ["IfCondition", "UnlessCondition"]
