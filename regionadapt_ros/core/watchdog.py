"""Sensor watchdogs that understand replayed and simulated time.

Time may jump: a looped bag restarts its clock, a simulator resets, ``ros2 bag play --clock`` seeks. A
watchdog that saw time go backwards (or leap forward by more than ``max_jump_s``) resets itself instead of
firing, so a jump never produces a spurious stop and never hides a real outage afterwards.
"""

from __future__ import annotations

import math


class SensorWatchdog:
    """Tracks the last receive time of one sensor in the clock the node runs on (seconds)."""

    def __init__(self, name: str, timeout_s: float, max_jump_s: float = 5.0, reorder_tolerance_s: float = 0.0) -> None:
        """``reorder_tolerance_s``: a step back in time no larger than this is not a jump but callers reading the
        clock on different threads before they get to the watchdog (the later time is kept)."""
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"watchdog {name}: timeout_s must be a positive number, got {timeout_s!r}")
        self.name = name
        self.timeout_s = timeout_s
        self.max_jump_s = max_jump_s
        self.reorder_tolerance_s = reorder_tolerance_s
        self.last_s: float | None = None
        self._last_now: float | None = None
        self.resets = 0
        self.fired = 0

    def feed(self, now_s: float) -> None:
        self._check_jump(now_s)
        self.last_s = now_s

    def mark(self, received_s: float) -> None:
        """Record a message received at ``received_s`` without a jump check: for a caller that checked the time
        when the message arrived and records it only after processing it (the clock has moved on meanwhile)."""
        if self.last_s is None or received_s > self.last_s:
            self.last_s = received_s

    def resume(self, now_s: float) -> None:
        """The clock was not watched for a while (the node was inactive): ``now_s`` is not a jump from the last
        time seen, and the sensor keeps its age (silent since before the pause: stale at once)."""
        self._last_now = now_s

    def _check_jump(self, now_s: float) -> None:
        prev = self._last_now
        if prev is not None and prev - self.reorder_tolerance_s <= now_s < prev:
            return  # out of order by less than the tolerance: keep the later time
        self._last_now = now_s
        if prev is None:
            return
        if now_s < prev or now_s - prev > self.max_jump_s:
            self.reset(now_s)

    def reset(self, now_s: float | None = None) -> None:
        """Forget the history: a sensor seen before counts as fresh from ``now_s`` on (unknown if None); one never
        seen stays unseen (a clock jump must not make a camera that never sent a frame look alive)."""
        self.last_s = None if self.last_s is None else now_s
        self.resets += 1

    def age(self, now_s: float) -> float | None:
        """Seconds since the last message, None if none was ever seen."""
        self._check_jump(now_s)
        if self.last_s is None:
            return None
        return max(0.0, now_s - self.last_s)

    def stale(self, now_s: float) -> bool:
        """True when no message arrived for longer than the timeout (or none ever, once started)."""
        age = self.age(now_s)
        is_stale = age is None or age > self.timeout_s
        if is_stale:
            self.fired += 1
        return is_stale
