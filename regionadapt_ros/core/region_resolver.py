"""Region resolution over time: GNSS fixes in, the active region (with hysteresis) and a prefetch hint out.

Feed fixes in time order with ``RegionResolver.update(fix, now_s)``; each call returns a ``ResolverState``.
Time is only what the caller gives (fix stamps and ``now_s``, seconds on one clock); nothing reads a wall clock,
so a replay gives the same decisions as the drive.

Rules, in the order they are applied to each fix:

1. Quality gate. A fix with ``status < 0`` (NavSatStatus.STATUS_NO_FIX; STATUS_UNKNOWN, see below), a
   non-finite or out-of-range lat/lon,
   a stamp older than the last accepted fix, a stamp more than ``max_fix_age_s`` before ``now_s``, or a
   horizontal standard deviation above ``max_h_std_m`` is not used: the region is held, ``hold_reason`` says
   why and the counter of that reason goes up. ``h_std_m`` None means "accuracy unknown" (NavSatFix
   COVARIANCE_TYPE_UNKNOWN) and is accepted; NaN or a negative value means the receiver's covariance is not one
   (``invalid_accuracy``), +inf that it says "do not trust this fix" (``poor_accuracy``): both are held. A
   rejected fix is no evidence for a pending switch, and does not restart it (a receiver that drops every fifth
   fix would otherwise never let the switch confirm); but a switch confirms only while most fixes are usable
   (see rule 4), and the confirmation restarts when the accepted fixes that see the new region are further apart
   than an outage (``_gap_limit_s``).
   ``STATUS_UNKNOWN (-2)`` is Jazzy's default ("status is not yet set"): a driver that never sets the field,
   as the CARLA ROS bridge, sends it with every fix. The message says a fix is valid when
   ``status >= STATUS_FIX``, so such fixes are held as ``unknown_status`` unless ``accept_unknown_status``
   says the driver's positions are good; then they are used like STATUS_FIX.
2. Operator override (``set_override``): while set, the region is the override, whatever the fixes say.
3. Acquisition. The first accepted fix (and the first one after an override is cleared) sets the region
   directly to the region under the fix: there is no previous region to be sticky about.
4. Hysteresis. When the fix lies in another region's territory (see core/geofence.py), the resolver switches
   only when all of these hold:
   - enter margin: the fix is at least ``enter_margin_m`` inside the new region (not applied when the new
     region is the default region: "outside every fence" has no inside to be deep in);
   - exit margin: the fix is at least ``exit_margin_m`` outside the current region (not applied when the
     current region is the default region);
   - confirmation: both margins have held on every accepted fix for at least ``confirm_s`` seconds, on at
     least two accepted fixes, and while at least half of the last ``RECENT_FIXES`` fixes were accepted (two
     multipath outliers in a stream of rejected fixes are not evidence), with no gap between those fixes longer than
     ``max(confirm_s, CONFIRM_GAP_S, GAP_INTERVALS x the receiver's usual interval)`` (an outage: what was seen
     before it is old; a receiver that fixes every 5 s is not in an outage), so one multipath jump across a
     boundary does not switch;
   - dwell: at least ``min_dwell_s`` seconds have passed since the last switch or override (an acquisition
     does not count: it is not a change of mind).
   Across a boundary shared by two fences both margins apply, so the switch happens ``max(enter, exit)``
   metres past it. A fence narrower than twice the enter margin is never entered. A vehicle driving along
   a boundary within the margins never switches: that is the point.
5. Prediction (prefetch hint). With heading and speed, from ``update_motion`` (odometry) while that is fresh
   or else from a least-squares fit over the accepted fixes of the last ``motion_window_s`` seconds, the reach
   is the distance covered in ``horizon_s`` at the current speed. ``next_region`` is the first fence on the
   straight line ahead within reach, or, when that line leaves every fence as it does on a curved road, the
   nearest fence within reach in front of the vehicle (core/region_prediction.py has the rules: slivers and
   gaps that could never be switched to are passed over; a fence beside the road is not staged).
   ``next_eta_s`` is the straight-line distance to it over the speed (never later than along the road); 0 when
   the fix is already inside it. Below ``min_speed_mps`` the heading is meaningless and there is no
   prediction. A rejected fix keeps the last prediction; an override clears it.

Units: metres, seconds, radians; headings are ENU yaw (0 = east, counter-clockwise, REP 103), which is what
nav_msgs/Odometry carries in an ENU-aligned frame. Compass bearings (clockwise from north) must be converted:
``heading_rad = pi/2 - bearing_rad``.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Protocol

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geofence import GeofenceSet
from regionadapt_ros.core.region_prediction import NextRegionPredictor

# Longest gap between the accepted fixes that confirm a switch before the confirmation starts again [s]: a 1 Hz
# receiver that loses one fix stays within it; three seconds without a usable fix is an outage, unless the
# receiver's usual interval (the median of its last accepted intervals) is that long: then GAP_INTERVALS of it.
CONFIRM_GAP_S = 3.0
GAP_INTERVALS = 2.5
# A switch confirms while at least half of the last RECENT_FIXES fixes (accepted or rejected) are accepted: two
# multipath outliers in a stream of rejected fixes are not evidence, half of a noisy receiver's fixes are.
RECENT_FIXES = 5
MAX_SETTING = 1e6  # the largest value of any resolver setting (metres, seconds, m/s)

STATUS_NO_FIX = -1  # sensor_msgs/NavSatStatus.STATUS_NO_FIX
STATUS_UNKNOWN = -2  # sensor_msgs/NavSatStatus.STATUS_UNKNOWN (Jazzy): "status is not yet set", its default


class GnssFixLike(Protocol):
    """What the resolver reads from a fix (duck-typed; msgconv's GnssFix and geo_track's TrackFix fit).

    stamp_s: fix time, seconds; lat, lon: WGS84 degrees; status: NavSatStatus (-1 = no fix, >= 0 = a fix);
    h_std_m: horizontal standard deviation in metres, None when unknown.
    """

    @property
    def stamp_s(self) -> float: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def status(self) -> int: ...
    @property
    def h_std_m(self) -> float | None: ...


class HoldReason(str, Enum):
    """Why the region did not follow the latest fix (a ``str``, so it serialises as its value)."""

    AWAITING_FIX = "awaiting_fix"  # no fix accepted yet
    NO_FIX = "no_fix"
    UNKNOWN_STATUS = "unknown_status"  # status STATUS_UNKNOWN (-2, not set by the driver), not accepted
    INVALID_POSITION = "invalid_position"  # NaN/inf or out-of-range lat/lon, or a non-finite stamp
    OUT_OF_ORDER = "out_of_order"  # stamp before the last accepted fix
    STALE_FIX = "stale_fix"  # older than max_fix_age_s at now_s
    POOR_ACCURACY = "poor_accuracy"  # h_std_m above max_h_std_m (+inf included)
    INVALID_ACCURACY = "invalid_accuracy"  # h_std_m NaN or negative: the covariance is unusable
    OVERRIDE = "override"  # the operator forces the region
    ENTER_MARGIN = "enter_margin"  # in another region, but not deep enough inside it yet
    EXIT_MARGIN = "exit_margin"  # not far enough outside the current region yet
    CONFIRMING = "confirming"  # margins met, but not for confirm_s yet
    MIN_DWELL = "min_dwell"  # the last switch was less than min_dwell_s ago

    def __str__(self) -> str:
        return self.value


QUALITY_REASONS = frozenset(
    {
        HoldReason.NO_FIX,
        HoldReason.UNKNOWN_STATUS,
        HoldReason.INVALID_POSITION,
        HoldReason.OUT_OF_ORDER,
        HoldReason.STALE_FIX,
        HoldReason.POOR_ACCURACY,
        HoldReason.INVALID_ACCURACY,
    }
)


_BOOL_FIELDS = frozenset({"accept_unknown_status"})


@dataclass(frozen=True)
class ResolverConfig:
    """Resolver parameters (the region_manager node's parameters of the same names). Metres and seconds.

    ``accept_unknown_status``: use fixes whose status is STATUS_UNKNOWN (-2) as fixes (a driver that never
    sets the status, e.g. the CARLA ROS bridge on Jazzy); default False, as the message defines.
    """

    enter_margin_m: float = 10.0
    exit_margin_m: float = 5.0
    confirm_s: float = 0.5
    min_dwell_s: float = 5.0
    max_fix_age_s: float = 2.0
    max_h_std_m: float = 10.0
    horizon_s: float = 10.0
    min_speed_mps: float = 1.0
    motion_window_s: float = 2.0
    motion_max_age_s: float = 1.0
    accept_unknown_status: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.accept_unknown_status, bool):
            raise ConfigError("accept_unknown_status", f"must be true or false, got {self.accept_unknown_status!r}")
        for field in fields(self):
            if field.name in _BOOL_FIELDS:
                continue
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(field.name, f"must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(field.name, f"must be >= 0, got {value!r}")
            if value > MAX_SETTING:
                # metres or seconds beyond a thousand kilometres or eleven days mean nothing here, and 1e308
                # overflows the prediction's geometry
                raise ConfigError(field.name, f"must be at most {MAX_SETTING:g}, got {value!r}")
        for name in ("max_h_std_m", "motion_window_s", "max_fix_age_s"):
            if getattr(self, name) == 0:
                raise ConfigError(name, "must be > 0")


@dataclass(frozen=True)
class ResolverState:
    """The resolver's decision after one input.

    region: the active region id. changed: region differs from the previous state's. acquisition: the change
    (if any) came straight from the position (first fix, or first after an override), not from a switch.
    previous_region: the region before this change (None unless changed). switch_time_s: time of the latest
    region change (fix stamp, or the override time), None before the first. hold_reason: why the region did not
    follow the latest fix (None when it did). candidate: the region the position points to while a switch to
    it is held back. raw_region: the region under the latest accepted fix, without hysteresis. stamp_s: stamp
    of the latest accepted fix. next_region / next_eta_s: prefetch hint, the region ahead and seconds to its
    boundary. heading_rad / speed_mps: the motion used for the hint (ENU yaw, m/s). override: the operator
    override in force, if any.
    """

    region: str
    changed: bool = False
    switch_time_s: float | None = None
    hold_reason: HoldReason | None = HoldReason.AWAITING_FIX
    next_region: str | None = None
    next_eta_s: float | None = None
    candidate: str | None = None
    raw_region: str | None = None
    stamp_s: float | None = None
    previous_region: str | None = None
    acquisition: bool = False
    heading_rad: float | None = None
    speed_mps: float | None = None
    override: str | None = None


@dataclass
class _Motion:
    heading_rad: float
    speed_mps: float
    stamp_s: float | None


class RegionResolver:
    """Turns a stream of GNSS fixes into the active region and a next-region hint (see module docstring).

    Not thread-safe: call from one thread (the node's callback group) or guard it.
    """

    def __init__(
        self,
        geofences: GeofenceSet,
        config: ResolverConfig | None = None,
        *,
        initial_region: str | None = None,
    ) -> None:
        self.geofences = geofences
        self.config = config or ResolverConfig()
        region = initial_region if initial_region is not None else geofences.default_region
        self._check_region("initial_region", region)
        self._state = ResolverState(region=region)
        self._acquired = False
        self._override: str | None = None
        self._last_stamp_s: float | None = None
        self._candidate: str | None = None
        self._candidate_since_s: float | None = None
        self._candidate_last_s: float | None = None  # the newest accepted fix that saw the candidate
        self._candidate_accepted = 0  # accepted fixes that saw the candidate since it became one
        # the last fixes since then, True for accepted: a switch confirms while most of them are usable
        self._candidate_recent: deque[bool] = deque(maxlen=RECENT_FIXES)
        self._intervals: deque[float] = deque(maxlen=9)  # between the last accepted fixes: the receiver's rate
        self._gap_limit = CONFIRM_GAP_S
        self._last_switch_s: float | None = None  # dwell clock: switches and overrides, not acquisitions
        self._restart_dwell = False  # after restart_time_line: the dwell clock starts at the next accepted fix
        self._samples: deque[tuple[float, float, float]] = deque()  # (stamp_s, x_m, y_m) of accepted fixes
        self._odometry: _Motion | None = None
        self._counts: Counter[str] = Counter()
        self._predictor = NextRegionPredictor(geofences, self.config.enter_margin_m, self.config.exit_margin_m)

    # ----------------------------------------------------------------------------------------------- public
    def restart_time_line(self) -> None:
        """The clock went back (a looped replay, a restarted driver): forget what refers to the old time line
        (the last stamp, a pending confirmation, the motion samples) and keep the region, the override and the
        counters. The next fix is not an acquisition: a change of region must still pass the margins and the
        confirmation, and a dwell still running (a switch less than ``min_dwell_s`` before) starts again at the
        first fix of the new time line, so a clock reset (or one late fix that looks like one) cannot switch the
        region sooner than a steady clock would."""
        # The dwell carries over only while it was still running: a time line restarted again and again (an
        # unstamped fix every few seconds) must not hold a legitimate switch off for ever.
        dwelling = (self._last_switch_s is not None and self._last_stamp_s is not None
                    and self._last_stamp_s - self._last_switch_s < self.config.min_dwell_s)
        self._restart_dwell = self._acquired and dwelling
        self._last_switch_s = None if not dwelling else self._last_switch_s
        self._last_stamp_s = None
        self._reset_candidate()
        self._intervals.clear()
        self._samples.clear()
        self._odometry = None

    @property
    def last_stamp_s(self) -> float | None:
        """Stamp of the last accepted fix of this time line (None before one, and after a restart)."""
        return self._last_stamp_s

    @property
    def state(self) -> ResolverState:
        """The latest decision (the initial state before any input)."""
        return self._state

    @property
    def counters(self) -> dict[str, int]:
        """Counts since construction: ``fixes``, ``accepted``, ``switches``, ``overrides`` and one per
        HoldReason value (fixes that were held for that reason)."""
        return dict(self._counts)

    @property
    def override(self) -> str | None:
        return self._override

    def set_override(self, region: str | None, now_s: float | None = None) -> ResolverState:
        """Force ``region`` (a fence region or the default region) until ``set_override(None)``.

        ``now_s`` is recorded as the switch time (default: the latest fix stamp). Clearing the override keeps
        the forced region until the next accepted fix, which then sets the region from the position.
        Raises ConfigError for an unknown region.
        """
        if region is not None:
            self._check_region("region_override", region)
        if region == self._override:
            return self._emit()
        when = now_s if now_s is not None else self._last_stamp_s
        self._override = region
        self._reset_candidate()
        if region is None:
            self._acquired = False
            return self._emit(hold_reason=None)
        self._counts["overrides"] += 1
        return self._switch_to(region, when, hold_reason=HoldReason.OVERRIDE)

    def update_motion(self, heading_rad: float, speed_mps: float, stamp_s: float | None = None) -> None:
        """Heading (ENU yaw, rad) and speed (m/s, >= 0) from odometry, used for the next-region hint while
        ``stamp_s`` is within ``motion_max_age_s`` of the fix being processed (always, when stamp_s is None).
        Non-finite values are ignored and counted as ``invalid_motion``."""
        if not (math.isfinite(heading_rad) and math.isfinite(speed_mps)) or (
            stamp_s is not None and not math.isfinite(stamp_s)
        ):
            self._counts["invalid_motion"] += 1
            return
        self._odometry = _Motion(float(heading_rad), abs(float(speed_mps)), stamp_s)

    def update(self, fix: GnssFixLike, now_s: float | None = None) -> ResolverState:
        """Process one fix; ``now_s`` (same clock as the stamps) is used for the age check, None = no check."""
        self._counts["fixes"] += 1
        rejection = self._quality_problem(fix, now_s)
        if rejection is not None:
            self._counts[rejection.value] += 1
            if self._candidate is not None:
                self._candidate_recent.append(False)
            return self._emit(hold_reason=HoldReason.OVERRIDE if self._override else rejection)

        self._counts["accepted"] += 1
        if int(fix.status) == STATUS_UNKNOWN:
            self._counts["accepted_unknown_status"] += 1
        stamp_s = float(fix.stamp_s)
        previous = self._last_stamp_s
        self._gap_limit = self._gap_limit_s()  # from the intervals before this fix: its own may be an outage
        if previous is not None and stamp_s > previous:
            self._intervals.append(stamp_s - previous)
        self._last_stamp_s = stamp_s
        if self._restart_dwell:
            self._last_switch_s, self._restart_dwell = stamp_s, False
        x_m, y_m = self.geofences.project(float(fix.lat), float(fix.lon))
        self._remember_sample(stamp_s, x_m, y_m)
        raw = self.geofences.region_at_xy(x_m, y_m)
        motion = self._motion(stamp_s)
        seen = {"raw_region": raw, "stamp_s": stamp_s}

        if self._override is not None:
            self._counts[HoldReason.OVERRIDE.value] += 1
            return self._emit(hold_reason=HoldReason.OVERRIDE, **seen, **self._predict(x_m, y_m, raw, None))

        if not self._acquired:
            self._acquired = True
            hint = self._predict(x_m, y_m, raw, motion)
            return self._switch_to(raw, stamp_s, acquisition=True, hold_reason=None, **seen, **hint)

        current = self._state.region
        if raw == current:
            self._reset_candidate()
            return self._emit(hold_reason=None, **seen, **self._predict(x_m, y_m, current, motion))

        blocker = self._switch_blocker(x_m, y_m, raw, current, stamp_s)
        if blocker is None:
            self._counts["switches"] += 1
            self._reset_candidate()
            return self._switch_to(raw, stamp_s, hold_reason=None, **seen, **self._predict(x_m, y_m, raw, motion))
        self._counts[blocker.value] += 1
        hint = self._predict(x_m, y_m, current, motion)
        return self._emit(hold_reason=blocker, candidate=raw, **seen, **hint)

    # ---------------------------------------------------------------------------------------------- private
    def _check_region(self, parameter: str, region: str) -> None:
        known = self.geofences.known_regions
        if region not in known:
            raise ConfigError(parameter, f"unknown region {region!r}; known regions: {', '.join(known)}")

    def _quality_problem(self, fix: GnssFixLike, now_s: float | None) -> HoldReason | None:
        status = int(fix.status)
        if status == STATUS_UNKNOWN:
            if not self.config.accept_unknown_status:
                return HoldReason.UNKNOWN_STATUS
        elif status <= STATUS_NO_FIX:
            return HoldReason.NO_FIX
        lat, lon, stamp_s = float(fix.lat), float(fix.lon), float(fix.stamp_s)
        if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(stamp_s)):
            return HoldReason.INVALID_POSITION
        if abs(lat) > 90.0 or abs(lon) > 180.0:
            return HoldReason.INVALID_POSITION
        if self._last_stamp_s is not None and stamp_s < self._last_stamp_s:
            return HoldReason.OUT_OF_ORDER
        if now_s is not None and now_s - stamp_s > self.config.max_fix_age_s:
            return HoldReason.STALE_FIX
        h_std = fix.h_std_m
        if h_std is None:
            return None  # accuracy unknown (COVARIANCE_TYPE_UNKNOWN) is accepted
        try:
            h_std = float(h_std)
        except (TypeError, ValueError):
            return HoldReason.INVALID_ACCURACY
        if math.isnan(h_std) or h_std < 0.0:
            return HoldReason.INVALID_ACCURACY
        if h_std > self.config.max_h_std_m:
            return HoldReason.POOR_ACCURACY
        return None

    def _switch_blocker(self, x_m: float, y_m: float, new: str, current: str, stamp_s: float) -> HoldReason | None:
        """Why a switch from ``current`` to ``new`` (the region under the fix) must wait, or None."""
        cfg = self.config
        default = self.geofences.default_region
        if new != default and self.geofences.signed_distance_xy(x_m, y_m, new) < cfg.enter_margin_m:
            self._reset_candidate()
            return HoldReason.ENTER_MARGIN
        if current != default and -self.geofences.signed_distance_xy(x_m, y_m, current) < cfg.exit_margin_m:
            self._reset_candidate()
            return HoldReason.EXIT_MARGIN
        last_seen = self._candidate_last_s
        if self._candidate != new or (last_seen is not None and stamp_s - last_seen > self._gap_limit):
            # a new candidate, or no evidence for it for longer than an outage: start again
            self._candidate, self._candidate_since_s = new, stamp_s
            self._candidate_accepted = 0
            self._candidate_recent.clear()
        self._candidate_last_s = stamp_s
        self._candidate_accepted += 1
        self._candidate_recent.append(True)
        assert self._candidate_since_s is not None
        mostly_usable = 2 * sum(self._candidate_recent) >= len(self._candidate_recent)
        if cfg.confirm_s > 0 and (stamp_s - self._candidate_since_s < cfg.confirm_s or self._candidate_accepted < 2
                                  or not mostly_usable):
            return HoldReason.CONFIRMING
        last_switch = self._last_switch_s
        if last_switch is not None and stamp_s - last_switch < cfg.min_dwell_s:
            return HoldReason.MIN_DWELL
        return None

    def _reset_candidate(self) -> None:
        self._candidate, self._candidate_since_s, self._candidate_last_s = None, None, None
        self._candidate_accepted = 0
        self._candidate_recent.clear()

    def _gap_limit_s(self) -> float:
        """Seconds between two accepted fixes beyond which they are an outage apart (see CONFIRM_GAP_S)."""
        usual = sorted(self._intervals)[len(self._intervals) // 2] if self._intervals else 0.0
        return max(self.config.confirm_s, CONFIRM_GAP_S, GAP_INTERVALS * usual)

    def _remember_sample(self, stamp_s: float, x_m: float, y_m: float) -> None:
        self._samples.append((stamp_s, x_m, y_m))
        while self._samples and self._samples[0][0] < stamp_s - self.config.motion_window_s:
            self._samples.popleft()

    def _motion(self, stamp_s: float) -> _Motion | None:
        odom = self._odometry
        if odom is not None and (odom.stamp_s is None or abs(stamp_s - odom.stamp_s) <= self.config.motion_max_age_s):
            return odom
        return self._motion_from_fixes()

    def _motion_from_fixes(self) -> _Motion | None:
        """Velocity by a least-squares line through the recent fixes: a difference of two fixes would turn
        metres of GNSS noise into tens of degrees of heading."""
        if len(self._samples) < 2:
            return None
        t0 = self._samples[0][0]
        span = self._samples[-1][0] - t0
        if span < 0.25 * self.config.motion_window_s:
            return None
        n = len(self._samples)
        mean_t = sum(s[0] - t0 for s in self._samples) / n
        mean_x = sum(s[1] for s in self._samples) / n
        mean_y = sum(s[2] for s in self._samples) / n
        var_t = sum((s[0] - t0 - mean_t) ** 2 for s in self._samples)
        if var_t <= 0.0:
            return None
        vx = sum((s[0] - t0 - mean_t) * (s[1] - mean_x) for s in self._samples) / var_t
        vy = sum((s[0] - t0 - mean_t) * (s[2] - mean_y) for s in self._samples) / var_t
        return _Motion(math.atan2(vy, vx), math.hypot(vx, vy), self._samples[-1][0])

    def _predict(self, x_m: float, y_m: float, current: str, motion: _Motion | None) -> dict[str, object]:
        """State fields of the prefetch hint and the motion it used (see the module docstring, rule 5)."""
        fields_: dict[str, object] = {
            "next_region": None,
            "next_eta_s": None,
            "heading_rad": motion.heading_rad if motion else None,
            "speed_mps": motion.speed_mps if motion else None,
        }
        if motion is None or motion.speed_mps < self.config.min_speed_mps or self.config.horizon_s <= 0:
            return fields_
        reach = motion.speed_mps * self.config.horizon_s
        ahead = self._predictor.predict(x_m, y_m, motion.heading_rad, reach, current)
        if ahead is not None:
            fields_["next_region"], fields_["next_eta_s"] = ahead[0], ahead[1] / motion.speed_mps
        return fields_

    def _switch_to(
        self, region: str, when_s: float | None, *, acquisition: bool = False, **fields_: object
    ) -> ResolverState:
        previous = self._state.region
        changed = region != previous
        switch_time = when_s if changed or acquisition else self._state.switch_time_s
        if changed and not acquisition:
            self._last_switch_s = when_s
        return self._emit(
            region=region,
            changed=changed,
            previous_region=previous if changed else None,
            switch_time_s=switch_time,
            acquisition=acquisition and changed,
            **fields_,
        )

    def _emit(self, **fields_: object) -> ResolverState:
        """The next state: the previous one with ``fields_`` replaced; per-step flags reset unless given."""
        step = {"changed": False, "candidate": None, "previous_region": None, "acquisition": False}
        step.update(fields_)
        step["override"] = self._override
        if self._override is not None:
            step.update(next_region=None, next_eta_s=None)
        self._state = replace(self._state, **step)
        return self._state
