"""Everything the region manager node does per message, without ROS: GNSS fixes (and optional odometry) in, the
active region (published latched) and a next-region prefetch hint out. Shared by the rclpy node, the ROS-less
replay and the demo.

``on_fix`` returns what to publish: the active region when it differs from the last one announced (the first
announcement is the region of the first usable fix, or the operator override: a region manager restarted in the
middle of a drive does not announce the default region before it knows where it is), and the next-region hint
when the prediction names a region it did not name on the previous fix.

Time comes from the caller (``now_s``, the clock fixes are stamped in). When it goes backwards (a looped bag, a
simulator reset), or a fix is stamped more than ``clock_jump_s`` before the last accepted one while fresh on the
receipt clock (the fixes' clock itself went back; an unstamped fix is only held as out of order), the resolver
starts a new time line (``RegionResolver.restart_time_line``): a jump never locks the region on "out of order"
fixes, and the region, the override and the hysteresis stay, so a reset (an unstamped fix, two receivers on
two clocks) cannot switch the region on one fix. Time leaping
forward is not a jump here: the session only sees time when a message arrives, and a GNSS outage (a tunnel)
is exactly such a gap; stale fixes are the resolver's business.

Not thread-safe: call it from one thread.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import ConfigError, MessageConversionError
from regionadapt_ros.core.geofence import GeofenceSet
from regionadapt_ros.core.region_resolver import (
    QUALITY_REASONS,
    HoldReason,
    RegionResolver,
    ResolverConfig,
    ResolverState,
)
from regionadapt_ros.driving_session import DiagnosticLevel, DiagnosticStatusData

# Holds that mean the position could not be used: WARN, with the reason.
RESETS_WARN = 3  # clock resets within RESETS_WINDOW_S that make the region status WARN
RESETS_WINDOW_S = 60.0
_WARN_HOLDS = frozenset(QUALITY_REASONS | {HoldReason.AWAITING_FIX, HoldReason.OVERRIDE})


class RegionUpdate(NamedTuple):
    """What one input asks the node to publish: ``active_region_changed`` (the new region, or None) and
    ``next_region_hint`` (a region to prefetch, or None)."""

    active_region_changed: str | None
    next_region_hint: str | None


@dataclass(frozen=True)
class _UnusableFix:
    """Stands in for a NavSatFix that claimed a fix but could not be read (NaN or out-of-range lat/lon), so
    that the resolver records it as ``invalid_position`` and holds the region."""

    stamp_s: float
    lat: float = math.nan
    lon: float = math.nan
    status: int = 0
    h_std_m: float | None = None


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Yaw (rotation about z, rad, counter-clockwise) of a unit quaternion."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class RegionSession:
    """GNSS fixes → active region and prefetch hint, over a ``GeofenceSet`` and a ``RegionResolver``.

    ``config``: resolver parameters (margins, dwell, fix quality limits, prediction horizon);
    ``initial_region``: served until the first usable fix (default: the geofences' default region);
    ``override``: an operator override in force from the start ("" or None: none);
    ``fix_timeout_s``: no NavSatFix message for longer than this makes diagnostics STALE;
    ``use_odometry``: take heading and speed for the prediction from odometry (its frame must be ENU-aligned,
    REP 103/105, as CARLA's map frame is), else they come from successive fixes.
    """

    def __init__(
        self,
        geofences: GeofenceSet,
        config: ResolverConfig | None = None,
        *,
        initial_region: str | None = None,
        override: str | None = None,
        fix_timeout_s: float = 2.0,
        clock_jump_s: float = 5.0,
        use_odometry: bool = True,
        warnings: CountedWarnings | None = None,
        name: str = "regionadapt_region",
        hardware_id: str = "",
    ) -> None:
        if not (isinstance(fix_timeout_s, (int, float)) and math.isfinite(fix_timeout_s) and fix_timeout_s > 0):
            raise ConfigError("fix_timeout_s", f"must be a positive number, got {fix_timeout_s!r}")
        self.geofences = geofences
        self.config = config or ResolverConfig()
        self.fix_timeout_s = float(fix_timeout_s)
        self.clock_jump_s = float(clock_jump_s)
        self.use_odometry = use_odometry
        self.warnings = warnings or CountedWarnings()
        self.name = name
        self.hardware_id = hardware_id
        self.resolver = RegionResolver(geofences, self.config, initial_region=initial_region)
        self.messages = 0
        self.resets = 0
        self._reset_times: deque[float] = deque(maxlen=RESETS_WARN + 1)
        self._last_now: float | None = None
        self._last_message_t: float | None = None
        self._last_hint: str | None = None
        self._announced: str | None = None
        if override:
            self.resolver.set_override(override)

    @classmethod
    def from_file(cls, geofence_file: str | Path, default_region: str, config: ResolverConfig | None = None, *,
                  repair: bool = False, **kwargs: Any) -> RegionSession:
        """Load and validate the GeoJSON fences (ConfigError naming the file and the problem)."""
        warnings = kwargs.pop("warnings", None) or CountedWarnings()
        geofences = GeofenceSet.load(geofence_file, default_region, repair=repair, warnings=warnings)
        return cls(geofences, config, warnings=warnings, **kwargs)

    # ------------------------------------------------------------------------------------------ state
    @property
    def state(self) -> ResolverState:
        return self.resolver.state

    @property
    def active_region(self) -> str:
        return self.resolver.state.region

    @property
    def known_regions(self) -> list[str]:
        return list(self.geofences.known_regions)

    @property
    def override(self) -> str | None:
        return self.resolver.override

    @property
    def announced_region(self) -> str | None:
        """The region last returned for publication (None before the first fix or override)."""
        return self._announced

    def initial_announcement(self) -> str | None:
        """The region to publish at start: the override when one is in force, else None (wait for a fix)."""
        return self._announce(self.resolver.state)

    def _announce(self, state: ResolverState) -> str | None:
        known = state.stamp_s is not None or state.override is not None
        if not known or state.region == self._announced:
            return None
        self._announced = state.region
        return state.region

    def counters(self) -> dict[str, int]:
        """Resolver counters since construction (across resets): fixes, accepted, switches, hold reasons."""
        return self.resolver.counters

    # ------------------------------------------------------------------------------------------ time
    def _observe_time(self, now_s: float) -> None:
        last, self._last_now = self._last_now, now_s
        if last is not None and now_s < last:
            self._reset(now_s)

    def _reset(self, now_s: float) -> None:
        """Start the resolver's time line over (``RegionResolver.restart_time_line``): the region, the override and
        the hysteresis stay. Before, a new resolver took the next fix as an acquisition, so every reset (a fix
        stamped 0 among stamped ones, two receivers on two clocks) could switch the region on one fix."""
        self.resolver.restart_time_line()
        self._last_hint = None
        self._reset_times.append(now_s)
        self.resets += 1

    # ------------------------------------------------------------------------------------------ inputs
    def on_fix(self, msg: Any, now_s: float) -> RegionUpdate:
        """One ``sensor_msgs/NavSatFix``. A fix that claims a position it does not have (NaN, out of range) is
        counted (``bad_navsatfix``) and holds the region as ``invalid_position``; a message that is not a
        NavSatFix at all is counted and ignored."""
        self._observe_time(now_s)
        self.messages += 1
        self._last_message_t = now_s
        try:
            fix: Any = msgconv.navsatfix_to_fix(msg)
        except MessageConversionError as exc:
            self.warnings.warn("bad_navsatfix", str(exc))
            try:
                fix = _UnusableFix(msgconv.stamp_to_s(msg.header))
            except (AttributeError, TypeError, ValueError):
                fix = _UnusableFix(now_s)
        except (AttributeError, TypeError, ValueError) as exc:
            self.warnings.warn("bad_navsatfix", f"not a NavSatFix: {type(exc).__name__}: {exc}")
            return RegionUpdate(None, None)
        last_stamp = self.resolver.last_stamp_s
        fresh = math.isfinite(fix.stamp_s) and now_s - fix.stamp_s <= self.config.max_fix_age_s
        if last_stamp is not None and fresh and fix.stamp_s < last_stamp - self.clock_jump_s:
            # A stamp far back that is fresh on the receipt clock: the fixes' clock itself went back. One that is
            # also old on the receipt clock (an unstamped fix, a second receiver on a clock behind) is only a
            # stale fix: the resolver holds it, and the time line stays.
            self._reset(now_s)
        state = self.resolver.update(fix, now_s)
        hint = state.next_region if state.next_region is not None and state.next_region != self._last_hint else None
        self._last_hint = state.next_region
        return RegionUpdate(self._announce(state), hint)

    def on_odometry(self, msg: Any, now_s: float) -> bool:
        """``nav_msgs/Odometry``: heading (pose yaw) and speed (|twist.linear.x|) for the prediction. False when
        refused (counted as ``bad_odometry``) or when odometry is not used."""
        self._observe_time(now_s)
        if not self.use_odometry:
            return False
        try:
            q = msg.pose.pose.orientation
            heading = yaw_from_quaternion(float(q.x), float(q.y), float(q.z), float(q.w))
            speed = abs(msgconv.odometry_speed(msg))
            stamp = msgconv.stamp_to_s(msg.header)
            if not math.isfinite(heading):
                raise ValueError("pose.pose.orientation is not finite")
        except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
            self.warnings.warn("bad_odometry", f"{type(exc).__name__}: {exc}")
            return False
        self.resolver.update_motion(heading, speed, stamp)
        return True

    def set_override(self, region: str | None, now_s: float | None = None) -> str | None:
        """Force ``region`` ("" or None clears the override). Returns the active region to publish when it differs
        from the last one announced. ConfigError for a region the geofences do not know (the node rejects the
        parameter with it)."""
        return self._announce(self.resolver.set_override(region or None, now_s))

    # ------------------------------------------------------------------------------------------ diagnostics
    def diagnostics(self, now_s: float) -> list[DiagnosticStatusData]:
        """One status ``<name>: region``: STALE when no NavSatFix arrived for ``fix_timeout_s``; WARN while the
        region is held because of the fixes (no fix, NaN, stale, poor accuracy, out of order), before the
        first fix and under an operator override, with the reason; OK otherwise (hysteresis holds included)."""
        state = self.resolver.state
        age = None if self._last_message_t is None else max(0.0, now_s - self._last_message_t)
        values: dict[str, str] = {
            "region": state.region,
            "override": state.override or "none",
            "hold_reason": str(state.hold_reason) if state.hold_reason is not None else "none",
            "candidate": state.candidate or "none",
            "raw_region": state.raw_region or "none",
            "next_region": state.next_region or "none",
            "next_eta_s": "none" if state.next_eta_s is None else f"{state.next_eta_s:.1f}",
            "last_fix_message_age_s": "none" if age is None else f"{age:.2f}",
            "messages": str(self.messages),
            "resets": str(self.resets),
            "default_region": self.geofences.default_region,
            "accept_unknown_status": str(self.config.accept_unknown_status).lower(),
            "geofence_file": self.geofences.source,
        }
        for key, count in sorted(self.counters().items()):
            values[f"count.{key}"] = str(count)
        for kind, count in sorted(self.warnings.counts().items()):
            values[f"warnings.{kind}"] = str(count)
        reason = state.hold_reason
        if self._last_message_t is not None and age is not None and age > self.fix_timeout_s:
            level, message = DiagnosticLevel.STALE, f"no GNSS fix message for {age:.1f} s; holding {state.region}"
        elif self._last_message_t is None and reason is not HoldReason.OVERRIDE:
            level, message = DiagnosticLevel.WARN, f"no GNSS fix message yet; holding {state.region}"
        elif reason is HoldReason.OVERRIDE:
            level, message = DiagnosticLevel.WARN, f"operator override: {state.region}"
        elif reason is HoldReason.UNKNOWN_STATUS:
            level, message = DiagnosticLevel.WARN, (
                f"holding {state.region}: fixes arrive with status -2 (STATUS_UNKNOWN: the GNSS driver does not "
                f"set it) and are not used; set accept_unknown_status: true if its positions are good")
        elif sum(1 for t in self._reset_times if 0.0 <= now_s - t <= RESETS_WINDOW_S) >= RESETS_WARN:
            # each reset restarts the hysteresis: with resets this frequent a change of region may never confirm
            level, message = DiagnosticLevel.WARN, (
                f"holding {state.region}: the fixes' clock went back {RESETS_WARN} or more times in "
                f"{RESETS_WINDOW_S:g} s (unstamped fixes, or two receivers on two clocks on one topic?)")
        elif reason in _WARN_HOLDS:
            level, message = DiagnosticLevel.WARN, f"holding {state.region}: {reason}"
        elif reason is not None:
            level = DiagnosticLevel.OK
            message = f"{state.region} (switch to {state.candidate or '?'} held: {reason})"
        else:
            level = DiagnosticLevel.OK
            ahead = f", next {state.next_region} in {state.next_eta_s:.1f} s" if state.next_region and \
                state.next_eta_s is not None else ""
            message = f"{state.region}{ahead}"
        return [DiagnosticStatusData(f"{self.name}: region", level, message, values, self.hardware_id)]

    def diagnostic_array(self, types: msgconv.TypeResolver, now_s: float) -> Any:
        """``diagnostic_msgs/DiagnosticArray`` of ``diagnostics(now_s)`` stamped ``now_s``."""
        return msgconv.build_diagnostic_array(types, now_s, [d.as_entry() for d in self.diagnostics(now_s)])

    def region_message(self, types: msgconv.TypeResolver, region: str | None = None) -> Any:
        """``std_msgs/String`` of ``region`` (default: the active region)."""
        return msgconv.build_string(types, region if region is not None else self.active_region)


def resolver_config_from(values: Mapping[str, Any]) -> ResolverConfig:
    """A ResolverConfig from node parameter values (``prefetch_horizon_s`` is the resolver's ``horizon_s``)."""
    names = {f for f in ResolverConfig.__dataclass_fields__}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = "horizon_s" if key == "prefetch_horizon_s" else key
        if name in names:
            kwargs[name] = value if isinstance(value, bool) else float(value)
    return ResolverConfig(**kwargs)
