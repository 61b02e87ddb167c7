"""rclpy.time.Time for the test double (nanoseconds, seconds_nanoseconds, to_msg)."""

from __future__ import annotations

from typing import Any

from ros_double import message_class, unsupported

CONVERSION_CONSTANT = 10**9


class Time:
    def __init__(self, *, seconds: float = 0, nanoseconds: int = 0, clock_type: Any = None) -> None:
        from rclpy.clock import ClockType

        total = int(seconds * CONVERSION_CONSTANT) + int(nanoseconds)
        if total < 0:
            raise ValueError("Negative total time is not allowed")
        self._nanoseconds = total
        self._clock_type = ClockType.SYSTEM_TIME if clock_type is None else clock_type

    @property
    def nanoseconds(self) -> int:
        return self._nanoseconds

    @property
    def clock_type(self) -> Any:
        return self._clock_type

    def seconds_nanoseconds(self) -> tuple[int, int]:
        return self._nanoseconds // CONVERSION_CONSTANT, self._nanoseconds % CONVERSION_CONSTANT

    def to_msg(self) -> Any:
        sec, nanosec = self.seconds_nanoseconds()
        return message_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"rclpy.time.Time.{name}")
