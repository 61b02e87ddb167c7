"""launch.actions of the launch double."""

from launch._double import (
    DeclareLaunchArgument,
    ExecuteProcess,
    GroupAction,
    IncludeLaunchDescription,
    TimerAction,
)

__all__ = ["DeclareLaunchArgument", "ExecuteProcess", "GroupAction", "IncludeLaunchDescription", "TimerAction"]
