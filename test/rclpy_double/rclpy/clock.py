"""rclpy.clock for the test double: every clock reads the double's fake ROS time."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import ros_double
from ros_double import unsupported


class ClockType(IntEnum):
    UNINITIALIZED = 0
    ROS_TIME = 1
    SYSTEM_TIME = 2
    STEADY_TIME = 3


class Clock:
    def __init__(self, *, clock_type: ClockType = ClockType.SYSTEM_TIME) -> None:
        self._clock_type = clock_type

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def now(self) -> Any:
        from rclpy.time import Time

        return Time(nanoseconds=ros_double.graph().time_ns, clock_type=self._clock_type)

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"rclpy.clock.Clock.{name}")


class ROSClock(Clock):
    def __init__(self) -> None:
        super().__init__(clock_type=ClockType.ROS_TIME)
