"""ROS 2 time stamps (``builtin_interfaces/Time``: int32 ``sec`` + uint32 ``nanosec``) ⇄ float seconds."""

from __future__ import annotations

import math
from typing import Any


def stamp_to_s(header_or_stamp: Any) -> float:
    """Seconds (float) of a ``std_msgs/Header``, a ``builtin_interfaces/Time``, or an ``rclpy.time.Time``.

    Duck-typed: an object with ``stamp`` is taken as a header; one with ``sec``/``nanosec`` as a Time message;
    one with ``nanoseconds`` (rclpy's Time class) as an integer nanosecond count. A float has about 0.24 µs
    resolution at present-day epoch times, ample for sensor stamps.
    """
    obj = getattr(header_or_stamp, "stamp", header_or_stamp)
    if hasattr(obj, "sec") and hasattr(obj, "nanosec"):
        return int(obj.sec) + int(obj.nanosec) * 1e-9
    if hasattr(obj, "nanoseconds"):
        return int(obj.nanoseconds) * 1e-9
    raise TypeError(f"not a header or time stamp: {type(header_or_stamp).__name__} has no stamp/sec/nanosec")


def s_to_stamp_parts(t: float) -> tuple[int, int]:
    """Float seconds → ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (ROS 2 convention, also for t < 0).

    The fraction is taken before scaling so that epoch-sized times keep their sub-microsecond part.
    """
    if not math.isfinite(t):
        raise ValueError(f"time stamp must be finite, got {t}")
    sec = math.floor(t)
    nanosec = round((t - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec += 1
        nanosec -= 1_000_000_000
    return int(sec), int(nanosec)
