"""The route criteria of the CARLA leaderboard 2.0, evaluated tick by tick on what a recording holds: the ego's
pose and speed, collision events, traffic-light stop lines and states. No map is needed, so the same
``RouteScorer`` scores the closed-loop simulator live and a bag recorded next to the CARLA bridge afterwards.

Each criterion follows its scenario_runner counterpart (carla-simulator/scenario_runner, branch
leaderboard-2.0, ``srunner/scenariomanager/scenarioatomics/atomic_criteria.py``; the parameters are those
``leaderboard/scenarios/route_scenario.py`` gives them):

- route completion (``RouteCompletionTest``): progress along the route; 100 % once past 99 % and within
  10 m of the end;
- outside route lanes (``OutsideRouteLanesTest``): route metres completed while the vehicle is more than
  ``ALLOWED_OUT_DISTANCE`` (0.5 m) outside the route's lanes, as a percentage of the metres completed. The
  leaderboard asks the map for the nearest driving lane; here the route carries the lateral extent of its
  lanes (``RoutePath.lane_bounds``);
- collisions (``CollisionTest``): by the other actor's type id (static / traffic → layout, vehicle, walker);
  a second collision with the same actor within 5 s, or within 5 m of the last one, or at ego speed below
  0.1 m/s, does not count;
- red lights (``RunningRedLightTest``): the vehicle's tail crossing the stop line of a red light whose centre
  is within 15 m; once per light. At 10 Hz the leaderboard's 1.5 m tail segment can jump over a stop line
  between ticks, so the segment also spans where the tail was on the previous tick;
- minimum speed (``MinimumSpeedRouteTest``, 4 checkpoints): per quarter of the route, the ego's mean speed as a
  percentage of the surrounding traffic's (100 when there is none);
- route deviation (``InRouteTest``, offroad_max 30 m): more than 30 m from the route, or more than 30 % of
  the route driven more than 15 m from it, ends the route;
- blocked (``ActorBlockedTest``): slower than 0.1 m/s for longer than ``blocked_time_s`` ends the route;
- route timeout (``RouteTimeoutBehavior``, srunner/scenariomanager/timer.py): the time allowed starts at
  ``min_timeout_s`` and grows by every metre of progress divided by 10 % of the speed limit there;
- scenario timeout: the time allowed to get through a stretch of the route (``Scenario``), once per scenario.

Not measured by the leaderboard directly, reported in ``RouteScore.extras``: speed-limit violations (share of
the distance driven faster than the limit + ``speeding_tolerance``), stops at red lights (time from the light
first requiring a stop within ``red_light_approach_m`` to standstill, and where the centre stopped),
and lane-marking crossings by kind when the recording has them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.scoring.route import RoutePath

RED, YELLOW, GREEN = "red", "yellow", "green"


# Criteria a route cannot do without (divisors, durations, distances that define an event); the rest may be 0.
# How far ahead of its last match on the route the ego is looked for: this much, plus this many times the
# distance it moved since the last tick (sparse odometry still finds it).
SEARCH_AHEAD_MIN_M = 10.0
SEARCH_AHEAD_FACTOR = 3.0
_POSITIVE_CRITERIA = frozenset({"offroad_max_m", "max_route_percentage", "blocked_time_s", "timeout_route_percent",
                                "default_speed_limit_kph", "completion_percentage", "completion_distance_m",
                                "red_light_distance_m", "red_light_approach_m"})


@dataclass(frozen=True)
class CriteriaConfig:
    """Leaderboard 2.0 values by default (see the module doc for where each comes from)."""

    allowed_out_distance_m: float = 0.5
    offroad_max_m: float = 30.0
    offroad_min_m: float | None = None  # None: half of offroad_max_m
    max_route_percentage: float = 30.0
    blocked_speed_mps: float = 0.1
    blocked_time_s: float = 180.0
    min_timeout_s: float = 300.0
    timeout_route_percent: float = 10.0
    default_speed_limit_kph: float = 30.0  # for the timeout where the route carries no speed limit
    min_speed_checkpoints: int = 4
    collision_radius_m: float = 5.0
    collision_id_time_s: float = 5.0
    collision_min_speed_mps: float = 0.1
    red_light_distance_m: float = 15.0
    completion_percentage: float = 99.0
    completion_distance_m: float = 10.0
    vehicle_extent_x_m: float = 2.45  # half length of the ego's bounding box
    # extras
    speeding_tolerance: float = 0.05  # faster than limit × (1 + this) counts as speeding
    red_light_approach_m: float = 60.0
    stop_speed_mps: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "offroad_min_m" and value is None:
                continue
            if f.name == "min_speed_checkpoints":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{f.name} must be an integer >= 1, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and f.name in _POSITIVE_CRITERIA):
                raise ValueError(f"{f.name} must be {'> 0' if f.name in _POSITIVE_CRITERIA else '>= 0'}, "
                                 f"got {value!r}")
        for name in ("max_route_percentage", "completion_percentage"):
            if getattr(self, name) > 100:
                raise ValueError(f"{name} is a percentage (<= 100), got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Any) -> CriteriaConfig:
        """From ``{field: value}`` (a route file's ``criteria``); ValueError names an unknown field or a bad
        value."""
        if not isinstance(data, Mapping):
            raise ValueError(f"criteria must be an object of criteria values, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown criteria: {', '.join(map(str, unknown))}")
        return cls(**dict(data))

    @property
    def offroad_safe_m(self) -> float:
        return self.offroad_min_m if self.offroad_min_m is not None else self.offroad_max_m / 2.0


@dataclass(frozen=True)
class StopLine:
    """A traffic light's stop line: segment p0-p1 across the lanes it governs (map frame), and the light's
    ``centre`` (for the 15 m distance test; the middle of the stop line when not given)."""

    light_id: int
    p0: tuple[float, float]
    p1: tuple[float, float]
    centre: tuple[float, float] | None = None

    @property
    def middle(self) -> tuple[float, float]:
        if self.centre is not None:
            return self.centre
        return (0.5 * (self.p0[0] + self.p1[0]), 0.5 * (self.p0[1] + self.p1[1]))


@dataclass(frozen=True)
class Scenario:
    """A stretch of the route [s_start, s_end) that must be got through within ``timeout_s`` of entering it."""

    name: str
    s_start: float
    s_end: float
    timeout_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a scenario's name must be a non-empty string, got {self.name!r}")
        for name in ("s_start", "s_end", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"scenario {self.name!r}: {name} must be a finite number, got {value!r}")
        if not 0 <= self.s_start < self.s_end:
            raise ValueError(f"scenario {self.name!r}: needs 0 <= s_start < s_end, got {self.s_start!r}, "
                             f"{self.s_end!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"scenario {self.name!r}: timeout_s must be > 0, got {self.timeout_s!r}")

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        if not isinstance(data, Mapping):
            raise ValueError(f"a scenario is an object with name, s_start, s_end, timeout_s; got "
                             f"{type(data).__name__}")
        keys = {f.name for f in fields(cls)}
        if set(data) != keys:
            missing, unknown = sorted(keys - set(data)), sorted(set(data) - keys)
            raise ValueError("a scenario needs exactly name, s_start, s_end, timeout_s"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(map(str, unknown))}" if unknown else ""))
        return cls(**dict(data))


@dataclass(frozen=True)
class EgoState:
    """The ego at time ``t`` [s]: centre of its bounding box (x, y) [m], yaw [rad], speed [m/s]."""

    t: float
    x: float
    y: float
    yaw: float
    speed: float


def _segments_intersect(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float],
                        d: tuple[float, float]) -> bool:
    def orient(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on(p, q, r) -> bool:
        return min(p[0], r[0]) - 1e-9 <= q[0] <= max(p[0], r[0]) + 1e-9 and \
            min(p[1], r[1]) - 1e-9 <= q[1] <= max(p[1], r[1]) + 1e-9

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if (o1 > 0) != (o2 > 0) and (o3 > 0) != (o4 > 0) and o1 != 0 and o2 != 0 and o3 != 0 and o4 != 0:
        return True
    return (o1 == 0 and on(a, c, b)) or (o2 == 0 and on(a, d, b)) or (o3 == 0 and on(c, a, d)) or \
        (o4 == 0 and on(c, b, d))


def collision_kind(type_id: str) -> str | None:
    """The leaderboard's classification of the other actor of a collision (None: not counted)."""
    if ("static" in type_id or "traffic" in type_id) and "sidewalk" not in type_id:
        return lb.COLLISION_LAYOUT
    if "vehicle" in type_id:
        return lb.COLLISION_VEHICLE
    if "walker" in type_id:
        return lb.COLLISION_PEDESTRIAN
    return None


@dataclass
class _LightTrack:
    line: StopLine
    s: float  # station of the stop line on the route
    approach_t: float | None = None
    stopped: bool = False


class RouteScorer:
    """Feed ``step`` once per tick (and ``collision`` / ``lane_invasion`` / ``report`` as events happen); ``done``
    says when a criterion ended the route; ``finish`` returns the ``RouteScore``."""

    def __init__(self, route: RoutePath, route_id: str = "route", stop_lines: Sequence[StopLine] = (),
                 scenarios: Sequence[Scenario] = (), config: CriteriaConfig | None = None) -> None:
        self.route = route
        self.route_id = route_id
        self.cfg = config or CriteriaConfig()
        self.events: list[lb.InfractionEvent] = []
        self.ended: str | None = None  # "completed" or a route-ending kind
        self._index = 0
        self._progress = 0.0
        self.start_station_m = 0.0  # where along the route the drive was first matched (a late recording)
        self._completed = False
        self._t0: float | None = None
        self._t_last: float | None = None
        self._last: EgoState | None = None
        self._prev_tail_far: tuple[float, float] | None = None
        self._prev_light_states: dict[int, str] = {}
        # outside route lanes
        self._total_m = 0.0
        self._wrong_m = 0.0
        self._outside = False
        self._outside_event: int | None = None  # index of the event in self.events (updated as it grows)
        # route deviation
        self._out_route_m = 0.0
        # blocked
        self._last_moving_t: float | None = None
        # timeout
        self._timeout_s = self.cfg.min_timeout_s
        # minimum speed
        self._checkpoint_m = route.length / max(1, self.cfg.min_speed_checkpoints)
        self._checkpoint_start = 0.0
        self._ms_ego = 0.0
        self._ms_traffic = 0.0
        self._ms_points = 0
        self._ms_values: list[float] = []
        # collisions
        self._collision_id: int | None = None
        self._collision_t: float | None = None
        self._collision_xy: tuple[float, float] | None = None
        # red lights
        self._lights = [_LightTrack(line, route.project(*line.middle)[0]) for line in stop_lines]
        self._last_red_light_id: int | None = None
        # scenarios
        self._scenarios = list(scenarios)
        self._scenario_enter: dict[str, float] = {}
        self._scenario_done: set[str] = set()
        # extras
        self._driven_m = 0.0
        self._speeding_m = 0.0
        self._speeding = False
        self._speeding_events = 0
        self._red_stops: list[dict[str, float]] = []
        self._lane_crossings = {"solid": 0, "broken": 0, "other": 0}

    # ------------------------------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.ended is not None

    @property
    def progress_m(self) -> float:
        return self._progress

    @property
    def completion_percent(self) -> float:
        if self._completed:  # the whole route as the leaderboard counts it, less what a late recording missed
            return 100.0 - 100.0 * self.start_station_m / self.route.length  # exactly 100 from the start
        return min(100.0, 100.0 * (self._progress - self.start_station_m) / self.route.length)

    def _event(self, kind: str, t: float, message: str, value: float | None = None,
               xy: tuple[float, float] | None = None) -> lb.InfractionEvent:
        event = lb.InfractionEvent(kind, t, message, value, None if xy is None else round(xy[0], 3),
                                   None if xy is None else round(xy[1], 3))
        self.events.append(event)
        return event

    # ------------------------------------------------------------------------------------------ inputs
    def step(self, ego: EgoState, light_states: Mapping[int, str] | None = None,
             traffic_speeds: Sequence[float] | None = None) -> list[lb.InfractionEvent]:
        """One tick. ``light_states``: {light id: "red" | "yellow" | "green"}; ``traffic_speeds``: speeds [m/s]
        of the surrounding traffic now (None or empty: none). Returns the events this tick added."""
        n_before = len(self.events)
        if self.done:
            return []
        cfg = self.cfg
        if self._t0 is None:
            self._t0 = ego.t
            self._last_moving_t = ego.t
        dt = 0.0 if self._t_last is None else max(0.0, ego.t - self._t_last)
        self._t_last = ego.t
        start, window = self._search_window(ego)
        s, lateral, index = self.route.project(ego.x, ego.y, start, window)
        if self._last is None:
            first, first_lateral, first_index = self.route.project(ego.x, ego.y, 0, None)
            if first > SEARCH_AHEAD_MIN_M and abs(first_lateral) < abs(lateral):
                # A recording that starts along the route (a recorder started late): matched where it is, and
                # credited only with what it drives from there.
                s, lateral, index = first, first_lateral, first_index
                self.start_station_m = first
                self._progress = first
        self._index = index
        distance = abs(lateral)
        lo, hi = self.route.lane_bounds_at(s)
        self._outside = lateral < lo - cfg.allowed_out_distance_m or lateral > hi + cfg.allowed_out_distance_m

        # progress: route completion, outside-lane accounting, timeout growth, deviation accounting
        advance = s - self._progress
        if advance > 0:
            self._progress = s
            self._total_m += advance
            if self._outside:
                self._wrong_m += advance
            limit = self.route.speed_limit_at(s)
            limit = limit if limit else cfg.default_speed_limit_kph / 3.6
            self._timeout_s += advance / (limit * cfg.timeout_route_percent / 100.0)
            if distance >= cfg.offroad_safe_m:
                self._out_route_m += advance
        if self._wrong_m > 0:
            self._update_outside_event(ego.t)
        reached = 100.0 * self._progress / self.route.length  # where along the route, whatever was driven
        if (reached > cfg.completion_percentage and self._progress > self.start_station_m
                and math.hypot(ego.x - self.route.end[0], ego.y - self.route.end[1]) < cfg.completion_distance_m):
            self._completed = True

        self._minimum_speed(ego, traffic_speeds)
        self._red_lights(ego, light_states or {})
        self._scenario_times(ego)
        self._extras(ego, dt, s)
        self._collision_forget(ego)

        # route-ending criteria
        if self._completed:
            self.ended = "completed"
        elif distance > cfg.offroad_max_m or 100.0 * self._out_route_m / self.route.length > cfg.max_route_percentage:
            self._event(lb.ROUTE_DEVIATION, ego.t, f"Agent deviated from the route at (x={ego.x:.3f}, "
                        f"y={ego.y:.3f})", xy=(ego.x, ego.y))
            self.ended = lb.ROUTE_DEVIATION
        elif ego.speed >= cfg.blocked_speed_mps:
            self._last_moving_t = ego.t
        elif ego.t - self._last_moving_t > cfg.blocked_time_s:
            self._event(lb.VEHICLE_BLOCKED, ego.t, f"Agent got blocked at (x={ego.x:.3f}, y={ego.y:.3f})",
                        xy=(ego.x, ego.y))
            self.ended = lb.VEHICLE_BLOCKED
        if not self.done and ego.t - self._t0 > self._timeout_s:
            self._event(lb.ROUTE_TIMEOUT, ego.t, "Route timeout.")
            self.ended = lb.ROUTE_TIMEOUT
        self._last = ego
        return self.events[n_before:]

    def _search_window(self, ego: EgoState) -> tuple[int, int]:
        """(first segment, number of segments) the ego is projected on: from just behind its last match to as far
        ahead as it can have driven since the last tick. The leaderboard's route criteria start at waypoint 0 and
        look a few waypoints ahead on every tick (InRouteTest 5, RouteCompletionTest 2, at 1 m spacing), so a
        route that doubles back cannot be cut short by a jump to its other leg. The first tick also looks along
        the whole route (``step``): a recording that starts along it is matched there and credited only with the
        distance it drives from there (route completion counts from ``start_station_m``); a drive run
        backwards gains nothing."""
        moved = 0.0 if self._last is None else math.hypot(ego.x - self._last.x, ego.y - self._last.y)
        ahead_m = SEARCH_AHEAD_MIN_M + SEARCH_AHEAD_FACTOR * moved
        start = max(0, self._index - 2)
        reach = float(self.route.cumulative[min(self._index, len(self.route.cumulative) - 1)]) + ahead_m
        end = int(np.searchsorted(self.route.cumulative, reach, side="right")) + 1
        return start, max(end - start, 1)

    def collision(self, t: float, other_id: int, type_id: str, ego: EgoState | None = None
                  ) -> lb.InfractionEvent | None:
        """A collision of the ego with actor ``other_id`` of ``type_id`` (CARLA type ids: "vehicle.*",
        "walker.*", "static.*", "traffic.*"; id 0 = the static layout). ``ego``: the ego at that time (default:
        the last ``step``). Returns the event, or None when the leaderboard would not count it."""
        ego = ego or self._last
        if self.done or ego is None:
            return None
        cfg = self.cfg
        if self._collision_id is not None and self._collision_id == other_id:
            return None
        if self._collision_xy is not None and math.hypot(ego.x - self._collision_xy[0],
                                                         ego.y - self._collision_xy[1]) <= cfg.collision_radius_m:
            return None
        if ego.speed < cfg.collision_min_speed_mps:
            return None
        kind = collision_kind(type_id)
        self._collision_t = t
        self._collision_xy = (ego.x, ego.y)
        if other_id != 0:
            self._collision_id = other_id
        if kind is None:
            return None
        return self._event(kind, t, f"Agent collided against object with type={type_id} and id={other_id} at "
                           f"(x={ego.x:.3f}, y={ego.y:.3f})", xy=(ego.x, ego.y))

    def lane_invasion(self, t: float, markings: Sequence[int]) -> None:
        """CARLA lane-invasion event: carla.LaneMarkingType values of the markings crossed (0 Other, 1 Broken,
        2 Solid, 3 SolidSolid, 4 SolidBroken, 5 BrokenSolid, 6 BrokenBroken, 7 BottsDots, 8 Grass, 9 Curb)."""
        for m in markings:
            if m in (1, 6, 7):
                self._lane_crossings["broken"] += 1
            elif m in (2, 3, 4, 5, 8, 9):
                self._lane_crossings["solid"] += 1
            else:
                self._lane_crossings["other"] += 1

    def report(self, kind: str, t: float, message: str = "") -> lb.InfractionEvent | None:
        """An infraction found elsewhere (a stop sign, a pedestrian collision, ...)."""
        if self.done:
            return None
        return self._event(kind, t, message)

    # ------------------------------------------------------------------------------------------ criteria
    def _update_outside_event(self, t: float) -> None:
        pct = 100.0 * self._wrong_m / max(self._total_m, 1e-9)
        message = (f"Agent went outside its route lanes for about {self._wrong_m:.3f} meters "
                   f"({pct:.2f}% of the completed route)")
        event = lb.InfractionEvent(lb.OUTSIDE_ROUTE_LANES, t, message, pct)
        if self._outside_event is None:
            self._outside_event = len(self.events)
            self.events.append(event)
        else:
            self.events[self._outside_event] = event

    def _minimum_speed(self, ego: EgoState, traffic_speeds: Sequence[float] | None) -> None:
        if self._progress - self._checkpoint_start > self._checkpoint_m:
            self._close_checkpoint(ego.t)
            self._checkpoint_start = self._progress
        if traffic_speeds:
            self._ms_traffic += float(np.mean(traffic_speeds))
            self._ms_ego += ego.speed
            self._ms_points += 1

    def _close_checkpoint(self, t: float) -> None:
        if self._ms_points > 0 and self._ms_traffic:
            value = round(self._ms_ego / self._ms_traffic * 100.0, 2)
        else:
            value = 100.0
        if value < 100.0:
            self._event(lb.MIN_SPEED, t, f"Average speed is {value}% of the surrounding traffic's one", value)
        self._ms_values.append(value)
        self._ms_ego = self._ms_traffic = 0.0
        self._ms_points = 0

    def _red_lights(self, ego: EgoState, states: Mapping[int, str]) -> None:
        cfg = self.cfg
        c, s = math.cos(ego.yaw), math.sin(ego.yaw)
        tail_close = (ego.x - 0.8 * cfg.vehicle_extent_x_m * c, ego.y - 0.8 * cfg.vehicle_extent_x_m * s)
        tail_far = (ego.x - (cfg.vehicle_extent_x_m + 1.0) * c, ego.y - (cfg.vehicle_extent_x_m + 1.0) * s)
        previous_tail = self._prev_tail_far
        self._prev_tail_far = tail_far
        previous_states, self._prev_light_states = self._prev_light_states, dict(states)
        for track in self._lights:
            line = track.line
            if states.get(line.light_id) != RED:
                continue
            # The tail's sweep since the last tick counts only when the light was already red then: a light that
            # turned red since is judged on the leaderboard's own segment, so a tail that crossed on green is
            # not an infraction.
            was_red = previous_tail is not None and previous_states.get(line.light_id) == RED
            sweep_start = previous_tail if was_red else tail_far
            if self._last_red_light_id == line.light_id:
                continue
            mx, my = line.middle
            if math.hypot(mx - ego.x, my - ego.y) > cfg.red_light_distance_m:
                continue
            if _segments_intersect(sweep_start, tail_close, line.p0, line.p1):
                self._event(lb.RED_LIGHT, ego.t, f"Agent ran a red light {line.light_id} at (x={mx:.3f}, "
                            f"y={my:.3f})", xy=(mx, my))
                self._last_red_light_id = line.light_id
        # extras: stops at red lights, timed from the light first asking for a stop with the vehicle's centre
        # within red_light_approach_m of the line, until standstill before the tail has crossed it
        for track in self._lights:
            if track.stopped:
                continue
            to_line = track.s - self._progress
            state = states.get(track.line.light_id)
            if to_line < -cfg.vehicle_extent_x_m:
                track.stopped = True  # passed it (on green, through a yellow, or an infraction)
            elif track.approach_t is None and state in (RED, YELLOW) and to_line <= cfg.red_light_approach_m:
                track.approach_t = ego.t
            elif track.approach_t is not None and ego.speed < cfg.stop_speed_mps:
                self._red_stops.append({"light_id": track.line.light_id, "time_to_stop_s": ego.t - track.approach_t,
                                        "centre_to_line_m": to_line})
                track.stopped = True

    def _scenario_times(self, ego: EgoState) -> None:
        for sc in self._scenarios:
            if sc.name in self._scenario_done:
                continue
            inside = sc.s_start <= self._progress < sc.s_end
            if inside and sc.name not in self._scenario_enter:
                self._scenario_enter[sc.name] = ego.t
            if self._progress >= sc.s_end:
                self._scenario_done.add(sc.name)
            elif sc.name in self._scenario_enter and ego.t - self._scenario_enter[sc.name] > sc.timeout_s:
                self._event(lb.SCENARIO_TIMEOUT, ego.t, f"Agent timed out a scenario ({sc.name})")
                self._scenario_done.add(sc.name)

    def _extras(self, ego: EgoState, dt: float, s: float) -> None:
        driven = ego.speed * dt
        self._driven_m += driven
        limit = self.route.speed_limit_at(s)
        speeding = limit is not None and ego.speed > limit * (1.0 + self.cfg.speeding_tolerance)
        if speeding:
            self._speeding_m += driven
            if not self._speeding:
                self._speeding_events += 1
        self._speeding = speeding

    def _collision_forget(self, ego: EgoState) -> None:
        cfg = self.cfg
        if self._collision_xy is not None and math.hypot(ego.x - self._collision_xy[0],
                                                         ego.y - self._collision_xy[1]) > cfg.collision_radius_m:
            self._collision_xy = None
        if self._collision_t is not None and ego.t - self._collision_t > cfg.collision_id_time_s:
            self._collision_id = None

    # ------------------------------------------------------------------------------------------ result
    def finish(self, t: float | None = None) -> lb.RouteScore:
        """The route's score (call once, when ``done`` or when the run stops)."""
        if self._progress / self.route.length > 0.95 and self.cfg.min_speed_checkpoints > 0 and \
                len(self._ms_values) < self.cfg.min_speed_checkpoints:
            self._close_checkpoint(self._t_last if self._t_last is not None else 0.0)
        t_end = t if t is not None else (self._t_last if self._t_last is not None else 0.0)
        duration = t_end - (self._t0 if self._t0 is not None else t_end)
        stops = self._red_stops
        extras: dict[str, Any] = {
            "outside_route_lanes_m": self._wrong_m,
            "outside_route_lanes_percent": 100.0 * self._wrong_m / max(self._total_m, 1e-9),
            "min_speed_checkpoints": list(self._ms_values),
            "driven_m": self._driven_m,
            "speeding_percent": 100.0 * self._speeding_m / self._driven_m if self._driven_m > 0 else 0.0,
            "speeding_events": self._speeding_events,
            "red_light_stops": len(stops),
            "time_to_stop_s": float(np.mean([r["time_to_stop_s"] for r in stops])) if stops else None,
            "stop_centre_to_line_m": float(np.mean([r["centre_to_line_m"] for r in stops])) if stops else None,
            "lane_crossings": dict(self._lane_crossings),
            "ended": self.ended or "stopped",
            "start_station_m": self.start_station_m,
        }
        return lb.route_score(self.route_id, self.route.length, self.completion_percent, self.events, duration,
                              extras)


@dataclass
class RouteSetup:
    """Everything a scorer needs besides the ego: the route, its stop lines and scenarios, the criteria."""

    route: RoutePath
    stop_lines: list[StopLine] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    config: CriteriaConfig = field(default_factory=CriteriaConfig)

    def scorer(self, route_id: str) -> RouteScorer:
        return RouteScorer(self.route, route_id, self.stop_lines, self.scenarios, self.config)
