"""Thread-safe versions of the per-frame helpers a session shares between its frame path, its stop timer and
its diagnostics (each runs on a thread of its own in the node)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from regionadapt_ros.core.collision_risk import CollisionRiskEstimator, RiskConfig, RiskEstimate, RiskThresholds
from regionadapt_ros.core.control import ControlMapper, VehicleCommand, VehicleLimits
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard


class _SharedMapper(ControlMapper):
    """The ControlMapper of a session: frames (``map``) and the stop timer (``stop``) use it from different
    threads, so every call holds its lock (for microseconds: it is arithmetic)."""

    def __init__(self, limits: VehicleLimits) -> None:
        super().__init__(limits)
        self._lock = threading.Lock()

    def map(self, steering: float, accel: float, speed: float, stamp_s: float) -> VehicleCommand:
        with self._lock:
            return super().map(steering, accel, speed, stamp_s)

    def stop(self, stamp_s: float, speed: float, reason: str) -> VehicleCommand:
        with self._lock:
            return super().stop(stamp_s, speed, reason)

    def emergency_brake(self, steering: float, speed: float, stamp_s: float, reason: str,
                        stop: bool = False) -> VehicleCommand:
        with self._lock:
            return super().emergency_brake(steering, speed, stamp_s, reason, stop)

    def reset(self) -> None:
        with self._lock:
            super().reset()


class _SharedRisk(CollisionRiskEstimator):
    """The collision-risk estimator of a session: frames update it, a clock jump seen by the stop timer resets
    it and diagnostics read its counts, from different threads; every call holds its lock."""

    def __init__(self, config: RiskConfig, warnings: CountedWarnings, source: str = "perception") -> None:
        self._lock = threading.RLock()  # update() resets itself on a stamp going back
        super().__init__(config, warnings, source)

    def set_rules(self, rules: Mapping[str, Any] | None) -> RiskThresholds:
        with self._lock:
            return super().set_rules(rules)

    def update(self, stamp_s: float, distance_m: float | None, ego_speed_mps: float | None = None, *,
               lidar: bool = True) -> RiskEstimate:
        with self._lock:
            return super().update(stamp_s, distance_m, ego_speed_mps, lidar=lidar)

    def reset(self) -> None:
        with self._lock:
            super().reset()

    def count_snapshot(self) -> dict[str, int]:
        with self._lock:
            return super().count_snapshot()


class _SharedGuard(EmergencyBrakeGuard):
    """The emergency-braking guard of a session: frames decide, a clock jump resets, diagnostics read."""

    def __init__(self, enabled: bool) -> None:
        self._lock = threading.RLock()
        super().__init__(enabled)

    def decide(self, risk: RiskEstimate, region: str = "") -> str | None:
        with self._lock:
            return super().decide(risk, region)

    def reset(self) -> None:
        with self._lock:
            super().reset()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return super().status()
