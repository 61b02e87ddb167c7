"""The emergency-braking guard: at risk level brake, the command decelerates whatever the decision model says.

The guard only decides and keeps the record; ``ControlMapper.emergency_brake`` builds the command. An override
lasts from the frame the risk estimate reaches ``RiskLevel.BRAKE`` to the frame it leaves it (the estimator's
hysteresis keeps it from chattering), and each one is counted with the reason that started it. Switched off
(``enabled=False``, the driving node's ``emergency_brake`` parameter), it overrides nothing but still counts
the frames and episodes it would have braked, so a closed-loop run with the guard off measures what the guard
would have done.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from regionadapt_ros.core.collision_risk import RiskEstimate, RiskLevel


@dataclass
class BrakeEpisode:
    """One stretch of frames at level brake: when it started and ended (frame stamps), why, and how it went.
    ``applied``: the command was overridden (False: the guard was off and only recorded it)."""

    start_s: float
    reason: str
    region: str
    applied: bool
    end_s: float | None = None
    frames: int = 0
    min_ttc_s: float | None = None
    min_distance_m: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EmergencyBrakeGuard:
    """Decides per frame whether the command is overridden, and counts overrides with their reasons.

    overrides: episodes whose commands were overridden; override_frames: frames overridden; suppressed,
    suppressed_frames: the same while the guard was off; episodes: the last ``max_episodes`` episodes, newest last.
    """

    def __init__(self, enabled: bool = True, max_episodes: int = 1000) -> None:
        self.enabled = bool(enabled)
        self.overrides = 0
        self.override_frames = 0
        self.suppressed = 0
        self.suppressed_frames = 0
        self.episodes: deque[BrakeEpisode] = deque(maxlen=max_episodes)
        self._open: BrakeEpisode | None = None
        self._last_stamp: float | None = None

    @property
    def active(self) -> bool:
        """An override is in force (the last frame was overridden)."""
        return self._open is not None and self._open.applied

    @property
    def last_reason(self) -> str:
        return self.episodes[-1].reason if self.episodes else ""

    def decide(self, risk: RiskEstimate, region: str = "") -> str | None:
        """The reason to override this frame's command (``"emergency brake: <why>"``), or None."""
        self._last_stamp = risk.stamp_s
        if risk.level is not RiskLevel.BRAKE:
            self._close(risk.stamp_s)
            return None
        episode = self._open
        if episode is None:
            episode = BrakeEpisode(risk.stamp_s, risk.trigger or risk.reason, region, self.enabled)
            self.episodes.append(episode)
            self._open = episode
            if episode.applied:
                self.overrides += 1
            else:
                self.suppressed += 1
        episode.frames += 1
        if risk.ttc_s is not None and (episode.min_ttc_s is None or risk.ttc_s < episode.min_ttc_s):
            episode.min_ttc_s = risk.ttc_s
        if risk.distance_m is not None and (episode.min_distance_m is None or risk.distance_m < episode.min_distance_m):
            episode.min_distance_m = risk.distance_m
        if not episode.applied:
            self.suppressed_frames += 1
            return None
        self.override_frames += 1
        return f"emergency brake: {episode.reason}"

    def reset(self) -> None:
        """End an open episode (clock jump, restart); the counts stay."""
        self._close(self._last_stamp)

    def _close(self, stamp_s: float | None) -> None:
        if self._open is not None:
            self._open.end_s = stamp_s
            self._open = None

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "active": self.active, "overrides": self.overrides,
                "override_frames": self.override_frames, "suppressed": self.suppressed,
                "suppressed_frames": self.suppressed_frames, "last_reason": self.last_reason}


def _fmt(value: float | None) -> str:
    if value is None:
        return "unknown"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def risk_status(risk: RiskEstimate | None, guard: EmergencyBrakeGuard,
                counts: dict[str, int] | None = None) -> tuple[int, str, dict[str, str]]:
    """(diagnostic level, message, values) of the collision-risk diagnostic for the latest frame's ``risk`` (None:
    no recent frame): OK at level none, WARN at warn or with the guard switched off, ERROR while an override
    brakes. Levels as diagnostic_msgs/DiagnosticStatus."""
    values = {"guard_enabled": str(guard.enabled).lower(), "overrides": str(guard.overrides),
              "override_frames": str(guard.override_frames), "suppressed_overrides": str(guard.suppressed),
              "suppressed_frames": str(guard.suppressed_frames), "last_override_reason": guard.last_reason or "none"}
    for kind, count in sorted((counts or {}).items()):
        values[f"risk.{kind}"] = str(count)
    if risk is None:
        return 0 if guard.enabled else 1, "no recent camera frame" + ("" if guard.enabled else "; guard off"), values
    values.update(level=risk.level.name.lower(), raw_level=risk.raw_level.name.lower(), state=risk.state,
                  ttc_s=_fmt(risk.ttc_s), closing_speed_mps=_fmt(risk.closing_speed_mps),
                  distance_m=_fmt(risk.distance_m), ttc_warn_s=f"{risk.thresholds.ttc_warn_s:g}",
                  ttc_brake_s=f"{risk.thresholds.ttc_brake_s:g}",
                  min_distance_m=f"{risk.thresholds.min_distance_m:g}")
    if risk.level is RiskLevel.BRAKE:
        if guard.enabled:
            return 2, f"emergency brake: {risk.trigger or risk.reason}", values
        return 1, f"brake level, guard off (emergency_brake:=false): {risk.trigger or risk.reason}", values
    text = f"{risk.level.name.lower()}: {risk.reason}"
    if not guard.enabled:
        return 1, f"emergency-braking guard off (emergency_brake:=false); {text}", values
    return (1 if risk.level is RiskLevel.WARN else 0), text, values
