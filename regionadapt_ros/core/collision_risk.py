"""Collision risk from the perceived distance to the obstacle ahead: closing speed, time to collision, a level.

A simple, explainable estimate kept beside the learned models, as Autoware's AEB module and openpilot's
forward-collision warning keep one: the perception head's distance to the nearest obstacle in the ego lane is
tracked over the last ``window_s``; its rate of change is the closing speed; distance / closing speed is the
time to collision (TTC); TTC and distance give a level (none / warn / brake) with hysteresis.

What makes it robust (each case is counted in ``counts``):
- *Filtering*: the closing speed is a Theil-Sen slope (the median of the slopes between pairs of samples at least
  half the window apart), so one noisy distance moves it little; the distance is the median of the samples
  projected to the newest stamp. A fit needs ``min_samples`` samples over ``min_span_s`` and uses at most
  ``FIT_SAMPLES`` of the window's samples, evenly spread.
- *A frame without lidar* (the distance is then a camera-only guess), a missing distance (non-finite perception
  output) and a bad one (non-finite or negative) are not measurements: the track is kept, the level is held, it
  neither rises nor falls; after ``max_gap_s`` without a measurement the estimate is stale and the level is none.
  A missing or stale distance can therefore never start a brake.
- *Clock jumps*: a stamp going back forgets everything; a forward leap beyond ``max_gap_s`` makes the track
  stale. A repeated stamp is ignored.
- *The obstacle changing* (a car cuts in, the lead car leaves the lane): a distance further from the track's
  prediction than ``jump_abs_m + jump_rel * distance`` is held back; if ``confirm_jump_frames`` such samples agree
  with each other, the track restarts on them, else they are dropped as outliers.
- *Ego speed* (optional): the closing speed is capped at ego speed + ``max_oncoming_mps`` (an obstacle in the
  ego lane rarely comes towards the ego), which bounds what perception noise can make of a short distance at low
  speed; below ``min_ego_speed_mps`` the ego is standing and brake becomes warn. A non-finite or negative ego
  speed is counted and not used.

Levels: brake when closing at ``min_closing_mps`` or more and TTC <= ``ttc_brake_s`` or distance <=
``min_distance_m``; warn when closing and TTC <= ``ttc_warn_s``. A higher level is taken after
``engage_frames`` consecutive measurements say so; a level is left only after the release condition (the same
thresholds scaled by ``release_factor``, as openPASS's AEB releases above 1.5 x its TTC threshold) has held for
``release_hold_s``. Thresholds are the vehicle's (``RiskConfig``); a region's rules in regions.yaml
(``ttc_warn_s``, ``ttc_brake_s``, ``min_obstacle_distance_m``) may only make them stricter.

ROS-free, standard library only; not thread-safe (one instance per driving session).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from functools import lru_cache
from typing import Any, NamedTuple

from regionadapt_ros.core.contracts import OBSTACLE_MAX_M
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import ConfigError, settings_from_dict

# regions.yaml rule key -> RiskThresholds field. A region may raise these, never lower them.
REGION_RULE_KEYS = {"ttc_warn_s": "ttc_warn_s", "ttc_brake_s": "ttc_brake_s",
                    "min_obstacle_distance_m": "min_distance_m"}
# A fit uses at most this many samples of the window (evenly thinned beyond: 1 s at 16 Hz or less is all of it).
FIT_SAMPLES = 16
# perception/risk publishes TTC capped at this (not closing, or closing too slowly to matter within it).
RISK_TTC_MAX_S = 100.0
# Estimate states.
TRACKING, ACQUIRING, CLEAR, HELD, STALE = "tracking", "acquiring", "clear", "held", "stale"


class RiskLevel(IntEnum):
    """Collision risk level; the values are what ``perception/risk`` publishes (vector.z)."""

    NONE = 0
    WARN = 1
    BRAKE = 2


@dataclass(frozen=True)
class RiskThresholds:
    """The thresholds in force for one frame (the vehicle's, made stricter by the region's rules)."""

    ttc_warn_s: float
    ttc_brake_s: float
    min_distance_m: float

    def scaled(self, factor: float) -> RiskThresholds:
        return RiskThresholds(self.ttc_warn_s * factor, self.ttc_brake_s * factor, self.min_distance_m * factor)


_INT_FIELDS = ("min_samples", "confirm_jump_frames", "engage_frames")
_NON_NEGATIVE = ("min_distance_m", "jump_rel", "max_oncoming_mps", "min_ego_speed_mps", "release_hold_s")


@dataclass(frozen=True)
class RiskConfig:
    """The vehicle's risk thresholds and the estimator's filter settings (the driving node's ``risk.*``
    parameters). Seconds, metres, m/s."""

    ttc_warn_s: float = 2.5          # warn at or below this TTC
    ttc_brake_s: float = 1.2         # brake at or below this TTC
    min_distance_m: float = 1.0      # brake at or below this distance while closing, whatever the TTC (0: off)
    min_closing_mps: float = 0.5     # slower closing is not a collision course
    window_s: float = 1.0            # samples of the last window_s are fitted
    min_samples: int = 3             # a fit needs this many samples ...
    min_span_s: float = 0.15         # ... spanning at least this long
    max_gap_s: float = 0.5           # no measurement for longer: the estimate is stale
    clear_distance_m: float = 0.95 * OBSTACLE_MAX_M  # at or beyond: nothing ahead (the head saturates at 60 m)
    jump_abs_m: float = 3.0          # a sample further than jump_abs_m + jump_rel * distance from the track's
    jump_rel: float = 0.25           # prediction is a jump (another obstacle, or an outlier)
    confirm_jump_frames: int = 2     # this many agreeing jumped samples restart the track on the new obstacle
    max_oncoming_mps: float = 2.0    # closing speed is capped at ego speed + this
    min_ego_speed_mps: float = 0.1   # a slower (standing) ego is not braked for: warn only
    engage_frames: int = 2           # consecutive measurements needed to raise the level
    release_factor: float = 1.5      # release thresholds = thresholds x this (hysteresis)
    release_hold_s: float = 0.5      # the release condition must hold this long

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _INT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"risk.{f.name}", f"must be an integer >= 1, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"risk.{f.name}", f"must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and f.name not in _NON_NEGATIVE):
                raise ConfigError(f"risk.{f.name}", f"must be {'>= 0' if f.name in _NON_NEGATIVE else '> 0'}, "
                                  f"got {value!r}")
        if self.min_samples < 2:
            raise ConfigError("risk.min_samples", f"a slope needs two samples or more, got {self.min_samples}")
        if self.ttc_brake_s > self.ttc_warn_s:
            raise ConfigError("risk.ttc_brake_s", f"{self.ttc_brake_s:g} s is above risk.ttc_warn_s "
                              f"({self.ttc_warn_s:g} s): the warning would come after the brake")
        if self.release_factor < 1.0:
            raise ConfigError("risk.release_factor", f"must be >= 1 (release above the thresholds), got "
                              f"{self.release_factor!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "risk settings") -> RiskConfig:
        """From ``{field: value}`` (the ``risk.*`` parameters without the prefix); ConfigError names ``source``
        and the problem."""
        return settings_from_dict(cls, data, source, "risk setting")

    def thresholds(self, rules: Mapping[str, Any] | None = None) -> RiskThresholds:
        """The vehicle's thresholds, each raised to the region's rule where the rule is stricter. Region rules are
        validated when regions.yaml is loaded (``bundle_store``); a non-number here is ignored."""
        values = {"ttc_warn_s": self.ttc_warn_s, "ttc_brake_s": self.ttc_brake_s,
                  "min_distance_m": self.min_distance_m}
        for key, name in REGION_RULE_KEYS.items():
            value = (rules or {}).get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values[name] = max(values[name], float(value))
        values["ttc_warn_s"] = max(values["ttc_warn_s"], values["ttc_brake_s"])
        return RiskThresholds(**values)


class RiskEstimate(NamedTuple):
    """The risk of one frame (a named tuple rather than a frozen dataclass: one is made per frame, and a frozen
    dataclass's ``__init__`` costs several times more).

    level: with hysteresis (what the guard acts on); raw_level: what this frame's measurement alone says;
    state: tracking | acquiring (too few samples for a fit) | clear (nothing ahead) | held (no measurement this
    frame, the last one is recent) | stale; distance_m: filtered distance at ``stamp_s`` (None: no track);
    closing_speed_mps: + = closing (None: no fit); ttc_s: inf when not closing, None when unknown; measured:
    this frame's distance was used; reason: why the level is what it is (``note`` where something other than
    the estimate's own numbers says it, else formatted from them when asked for: most frames' reasons are never
    read); trigger: what raised the level to where it is (kept while the level is held); source: the distance
    it tracks ("perception": the perception network's; "lidar": the path corridor's, ``core.lidar_corridor``).
    """

    stamp_s: float
    level: RiskLevel
    raw_level: RiskLevel
    state: str
    distance_m: float | None
    closing_speed_mps: float | None
    ttc_s: float | None
    measured: bool
    note: str
    trigger: str
    thresholds: RiskThresholds
    source: str = "perception"

    @property
    def reason(self) -> str:
        return self.note or _describe(self.raw_level, self.distance_m, self.closing_speed_mps, self.ttc_s,
                                      self.thresholds)

    def vector(self) -> tuple[float, float, float]:
        """What ``perception/risk`` (geometry_msgs/Vector3Stamped) carries: x = TTC [s] (capped at
        RISK_TTC_MAX_S; NaN: unknown), y = closing speed [m/s, + = closing] (NaN: unknown), z = level (0 none,
        1 warn, 2 brake)."""
        ttc = math.nan if self.ttc_s is None else min(self.ttc_s, RISK_TTC_MAX_S)
        closing = math.nan if self.closing_speed_mps is None else self.closing_speed_mps
        return ttc, closing, float(int(self.level))

    def as_dict(self) -> dict[str, Any]:
        return {"stamp_s": self.stamp_s, "level": self.level.name.lower(), "raw_level": self.raw_level.name.lower(),
                "state": self.state, "distance_m": self.distance_m, "closing_speed_mps": self.closing_speed_mps,
                "ttc_s": self.ttc_s, "measured": self.measured, "reason": self.reason, "trigger": self.trigger,
                "source": self.source}


def more_urgent(first: RiskEstimate, second: RiskEstimate | None) -> RiskEstimate:
    """The estimate the guard acts on when two channels estimate the risk: the higher level; on a tie ``first``
    (the perception channel, whose numbers ``perception/risk`` has always carried)."""
    return second if second is not None and second.level > first.level else first


def theil_sen(times: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """(slope, value at times[-1]) of a robust line fit: the median of the slopes between pairs of samples at
    least half the time span apart, and the median of the samples projected to the newest time along it.
    ``times`` strictly increasing, at least two. Plain Python: on the <= FIT_SAMPLES samples the estimator fits,
    several times cheaper than numpy's per-call cost."""
    n = len(times)
    half = max(0.5 * (times[-1] - times[0]) - 1e-9, 1e-12)
    # For a sample i the partners far enough apart are a suffix j >= first (times increase, and so do their
    # rounded differences), and first only moves forward with i: one pass finds every suffix, and only the
    # pairs that count are divided, in one comprehension.
    starts: list[tuple[int, int]] = []
    first = 1
    for i in range(n - 1):
        t_i = times[i]
        if first <= i:
            first = i + 1
        while first < n and times[first] - t_i < half:
            first += 1
        if first == n:
            break
        starts.append((i, first))
    slopes = [(values[j] - values[i]) / (times[j] - times[i]) for i, start in starts for j in range(start, n)]
    slopes.sort()
    slope = _median_sorted(slopes)
    newest = times[-1]
    projected = [v + slope * (newest - t) for t, v in zip(times, values, strict=True)]
    projected.sort()
    return slope, _median_sorted(projected)


@lru_cache(maxsize=64)
def _thinned(n: int, keep: int) -> tuple[int, ...]:
    if n <= keep:
        return tuple(range(n))
    step = (n - 1) / (keep - 1)
    return tuple(sorted({round(i * step) for i in range(keep)}))


def thinned(n: int, keep: int) -> list[int]:
    """Indices of at most ``keep`` of ``n`` samples, evenly spread, the first and the newest included."""
    return list(_thinned(n, keep))


def _median_sorted(values: Sequence[float]) -> float:
    half = len(values) // 2
    return float(values[half]) if len(values) % 2 else 0.5 * float(values[half - 1] + values[half])


def level_for(distance: float | None, closing: float | None, ttc: float | None, thr: RiskThresholds,
              min_closing: float) -> RiskLevel:
    """The level one estimate calls for (no hysteresis)."""
    if distance is None or closing is None or ttc is None or closing < min_closing:
        return RiskLevel.NONE
    if ttc <= thr.ttc_brake_s or distance <= thr.min_distance_m:
        return RiskLevel.BRAKE
    if ttc <= thr.ttc_warn_s:
        return RiskLevel.WARN
    return RiskLevel.NONE


def _describe(level: RiskLevel, distance: float | None, closing: float | None, ttc: float | None,
              thr: RiskThresholds) -> str:
    if distance is None or closing is None or ttc is None:
        return "no closing-speed estimate"
    motion = f"obstacle {distance:.1f} m, closing {closing:.1f} m/s"
    if level is RiskLevel.BRAKE:
        if ttc <= thr.ttc_brake_s:
            return f"TTC {ttc:.2f} s <= {thr.ttc_brake_s:g} s ({motion})"
        return f"obstacle {distance:.2f} m <= {thr.min_distance_m:g} m while closing at {closing:.1f} m/s"
    if level is RiskLevel.WARN:
        return f"TTC {ttc:.2f} s <= {thr.ttc_warn_s:g} s ({motion})"
    return f"TTC {'inf' if math.isinf(ttc) else f'{ttc:.2f}'} s ({motion})"


@dataclass
class _Track:
    times: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    slope: float | None = None        # m/s (+ = receding) of the last fit, closing speed capped
    fitted: float | None = None       # distance at times[-1] of the last fit

    def predict(self, t: float) -> float:
        if self.slope is None or self.fitted is None:
            return self.distances[-1]
        return self.fitted + self.slope * (t - self.times[-1])


class CollisionRiskEstimator:
    """Per-frame collision risk (see the module docstring). ``warnings`` counts bad inputs by kind
    (``risk_bad_distance``, ``risk_bad_speed``, ``risk_bad_stamp``) next to the session's other warnings."""

    def __init__(self, config: RiskConfig | None = None, warnings: CountedWarnings | None = None,
                 source: str = "perception") -> None:
        self.config = config or RiskConfig()
        self.source = source
        self.warnings = warnings or CountedWarnings()
        self.counts: Counter[str] = Counter()
        self.thresholds = self.config.thresholds()
        self._rules_key: tuple[Any, ...] = ()
        self.reset()

    def set_rules(self, rules: Mapping[str, Any] | None) -> RiskThresholds:
        """Apply a region's rules (called per frame with the serving bundle's rules; cheap when unchanged)."""
        key = tuple(map(rules.get, REGION_RULE_KEYS)) if rules else ()
        if key != self._rules_key:
            self._rules_key = key
            self.thresholds = self.config.thresholds(rules)
        return self.thresholds

    def reset(self) -> None:
        """Forget the track, the level and the time line (after a clock jump or a restart)."""
        self._track = _Track()
        self._pending: list[tuple[float, float]] = []  # jumped samples waiting for confirmation
        self._last_stamp: float | None = None
        self._last_fresh: float | None = None
        self._level = RiskLevel.NONE
        self._trigger = ""
        self._raise: list[RiskLevel] = []          # raw levels of consecutive measurements above the level
        self._release_since: float | None = None
        self._last: RiskEstimate | None = None

    @property
    def level(self) -> RiskLevel:
        return self._level

    @property
    def latest(self) -> RiskEstimate | None:
        """The last estimate returned (None before the first, or after a reset)."""
        return self._last

    def count_snapshot(self) -> dict[str, int]:
        """A copy of ``counts`` (what diagnostics report)."""
        return dict(self.counts)

    # ------------------------------------------------------------------------------------------ inputs
    def _valid_distance(self, distance: Any) -> float | None:
        if type(distance) is float and 0.0 <= distance < math.inf:  # the usual case, without conversions
            return distance
        if distance is None:
            self.counts["missing"] += 1
            return None
        try:
            value = float(distance)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            self.counts["bad_distance"] += 1
            self.warnings.warn("risk_bad_distance", f"obstacle distance {distance!r} is not a finite distance "
                               ">= 0; not used")
            return None
        return value

    def _valid_speed(self, speed: Any) -> float | None:
        if type(speed) is float and 0.0 <= speed < math.inf:
            return speed
        if speed is None:
            return None
        try:
            value = float(speed)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            self.counts["bad_speed"] += 1
            self.warnings.warn("risk_bad_speed", f"ego speed {speed!r} is not a finite speed >= 0; not used")
            return None
        return value

    # ------------------------------------------------------------------------------------------ the frame
    def update(self, stamp_s: float, distance_m: float | None, ego_speed_mps: float | None = None, *,
               lidar: bool = True) -> RiskEstimate:
        """The risk at camera stamp ``stamp_s`` given this frame's obstacle distance [m] (None: no perception
        output), the ego speed [m/s] (None: unknown) and whether the frame had a fresh lidar sweep. Never
        raises on bad values: they are counted and do not count as measurements."""
        cfg = self.config
        try:
            stamp = float(stamp_s)
        except (TypeError, ValueError):
            stamp = math.nan
        if not math.isfinite(stamp):
            self.counts["bad_stamp"] += 1
            self.warnings.warn("risk_bad_stamp", f"frame stamp {stamp_s!r} is not finite; risk not updated")
            return self._last or self._estimate(0.0, None, None, None, False, STALE, "no valid stamp yet")
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.counts["clock_jumps"] += 1
            self.reset()
        elif self._last_stamp is not None and stamp == self._last_stamp and self._last is not None:
            self.counts["duplicate_stamps"] += 1
            return self._last
        self._last_stamp = stamp
        ego = self._valid_speed(ego_speed_mps)
        distance = self._valid_distance(distance_m)
        if distance is not None and not lidar:
            self.counts["no_lidar"] += 1
            distance = None
        if self._last_fresh is not None and stamp - self._last_fresh > cfg.max_gap_s + 1e-9:
            self._go_stale()
        if distance is None:
            return self._hold(stamp)
        if distance >= cfg.clear_distance_m:
            self._track, self._pending = _Track(), []
            self._last_fresh = stamp
            return self._measured(stamp, None, None, None, CLEAR, f"nothing ahead within {cfg.clear_distance_m:g} m")
        if not self._accept(stamp, distance, ego):
            return self._hold(stamp, "distance jumped: waiting to confirm a new obstacle")
        self._last_fresh = stamp
        return self._fit(stamp, ego)

    def _go_stale(self) -> None:
        if self._track.times:
            self.counts["track_timeouts"] += 1
        self._track, self._pending = _Track(), []
        self._last_fresh = None
        self._level, self._trigger, self._raise, self._release_since = RiskLevel.NONE, "", [], None

    def _gate(self, predicted: float) -> float:
        return self.config.jump_abs_m + self.config.jump_rel * max(0.0, predicted)

    def _accept(self, stamp: float, distance: float, ego: float | None) -> bool:
        """Add the sample to the track, or hold it back as a jump; True when the track took a sample."""
        track = self._track
        if not track.times:
            track.times.append(stamp)
            track.distances.append(distance)
            return True
        dt = stamp - track.times[-1]
        predicted = track.predict(stamp)
        slack = (ego or 0.0) * dt if track.slope is None else 0.0  # no fit yet: allow for the ego's own motion
        if abs(distance - predicted) <= self._gate(predicted) + slack:
            if self._pending:
                self.counts["outliers"] += len(self._pending)
                self._pending = []
            track.times.append(stamp)
            track.distances.append(distance)
            return True
        if self._pending:
            t_prev, d_prev = self._pending[-1]
            if abs(distance - d_prev) > self._gate(d_prev) + (ego or 0.0) * (stamp - t_prev):
                self.counts["outliers"] += len(self._pending)
                self._pending = []
        self._pending.append((stamp, distance))
        if len(self._pending) < self.config.confirm_jump_frames:
            return False
        self.counts["obstacle_changes"] += 1
        self._track = _Track([t for t, _ in self._pending], [d for _, d in self._pending])
        self._pending = []
        return True

    def _fit(self, stamp: float, ego: float | None) -> RiskEstimate:
        cfg, track = self.config, self._track
        while track.times and track.times[0] < stamp - cfg.window_s - 1e-9:
            track.times.pop(0)
            track.distances.pop(0)
        n = len(track.times)
        if n < cfg.min_samples or track.times[-1] - track.times[0] < cfg.min_span_s - 1e-9:
            track.slope = track.fitted = None
            return self._measured(stamp, track.distances[-1], None, None, ACQUIRING,
                                  f"{n} sample(s) of this obstacle: no closing-speed estimate yet")
        # a fit's cost grows with the square of its samples: at high frame rates it uses an evenly thinned window
        if n <= FIT_SAMPLES:
            slope, fitted = theil_sen(track.times, track.distances)
        else:
            keep = _thinned(n, FIT_SAMPLES)
            slope, fitted = theil_sen([track.times[i] for i in keep], [track.distances[i] for i in keep])
        closing = -slope
        if ego is not None and closing > ego + cfg.max_oncoming_mps:
            self.counts["closing_capped"] += 1
            closing = ego + cfg.max_oncoming_mps
        # predictions (gating, frames without a measurement) go on at the capped closing speed
        track.slope, track.fitted = -closing, fitted
        distance = max(0.0, fitted)
        ttc = distance / closing if closing > 0 else math.inf
        stopped = ego is not None and ego < cfg.min_ego_speed_mps
        return self._measured(stamp, distance, closing, ttc, TRACKING, "", stopped)

    # ------------------------------------------------------------------------------------------ levels
    def _measured(self, stamp: float, distance: float | None, closing: float | None, ttc: float | None,
                  state: str, note: str, stopped: bool = False) -> RiskEstimate:
        cfg, thr = self.config, self.thresholds
        raw = level_for(distance, closing, ttc, thr, cfg.min_closing_mps)
        if stopped and raw is RiskLevel.BRAKE:
            # braking a standing vehicle avoids nothing (Autoware's AEB is inactive below 0.1 m/s): warn only
            raw = RiskLevel.WARN
            note = f"ego stopped: warn only; {_describe(RiskLevel.BRAKE, distance, closing, ttc, thr)}"
        if raw > self._level:
            self._raise.append(raw)
            if len(self._raise) >= cfg.engage_frames:
                self._level = min(self._raise[-cfg.engage_frames:])
                self._trigger = _describe(self._level, distance, closing, ttc, thr)
                if self.source != "perception":
                    self._trigger = f"{self.source}: {self._trigger}"
                self._raise, self._release_since = [], None
        else:
            self._raise = []
        reason = note  # "": the estimate's numbers say it (RiskEstimate.reason formats them when asked)
        if self._level > raw:
            release_level = level_for(distance, closing, ttc, thr.scaled(cfg.release_factor),
                                      cfg.min_closing_mps / cfg.release_factor)
            if release_level < self._level:
                if self._release_since is None:
                    self._release_since = stamp
                if stamp - self._release_since >= cfg.release_hold_s - 1e-9:
                    self._level, self._release_since = release_level, None
                    self._trigger = self._trigger if self._level > RiskLevel.NONE else ""
            else:
                self._release_since = None
            if self._level > raw:
                why = note or _describe(raw, distance, closing, ttc, thr)
                reason = f"{self._level.name.lower()} held (hysteresis): {why}"
        else:
            self._release_since = None
        if self._level is RiskLevel.NONE:
            self._trigger = ""
        return self._estimate(stamp, distance, closing, ttc, True, state, reason, raw)

    def _hold(self, stamp: float, why: str = "") -> RiskEstimate:
        """No measurement this frame: the level is held while the last measurement is recent."""
        if self._last_fresh is None:
            self._go_stale()
            return self._estimate(stamp, None, None, None, False, STALE, why or "no recent obstacle distance")
        track = self._track
        distance = closing = ttc = None
        if track.times:
            distance = max(0.0, track.predict(stamp))
            if track.slope is not None:
                closing = -track.slope
                ttc = distance / closing if closing > 0 else math.inf
        age = stamp - self._last_fresh
        return self._estimate(stamp, distance, closing, ttc, False, HELD,
                              why or f"no distance this frame (last {age:.2f} s ago): level held")

    def _estimate(self, stamp: float, distance: float | None, closing: float | None, ttc: float | None,
                  measured: bool, state: str, reason: str, raw: RiskLevel = RiskLevel.NONE) -> RiskEstimate:
        estimate = RiskEstimate(stamp, self._level, raw, state, distance, closing, ttc, measured, reason,
                                self._trigger, self.thresholds, self.source)
        self._last = estimate
        return estimate
