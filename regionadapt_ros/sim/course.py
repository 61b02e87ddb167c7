"""Routes: seeded stretches of road, one region or several in a row, each a distance to cover in a time limit.

A ``RouteSpec`` names its segments (region, metres) and a seed; ``Course`` builds one ``ClosedLoopWorld`` per
segment when the route starts, each anchored where the route's lane centre line ends in the previous one, so
the whole route (``RoutePath``), its stop lines and its intersections are known before the ego moves. When the
ego's rear axle passes the end of a segment it continues in the next world with its speed, its offset from
the lane centre and its heading error (a lane on the other side of the road, after a left-hand segment
boundary, is where it continues: the boundary is where the rules change). The road is straight on both sides
of a join (``JOIN_STRAIGHT_M`` before it, the generator's straight start after it), so what the ego sees ahead
of the join is what it drives on after it.

The time limit is the leaderboard's growing route timeout (``CriteriaConfig``) with a shorter start
(``min_timeout_s``) and a shorter blocked time than the leaderboard's 300 s / 180 s, which are made for
routes of kilometres; these routes are a few hundred metres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W
from regionadapt_ros.scoring.criteria import CriteriaConfig, RouteSetup, Scenario, StopLine
from regionadapt_ros.scoring.route import RoutePath
from regionadapt_ros.sim.world import EGO_LENGTH_M, ClosedLoopWorld, EgoPose, Hit, Observation

# Route lengths per region: long enough for one or two intersections (lights every 140-320 m from ~120 m
# on), or a few curves and a lead vehicle; about 20-30 s of driving each.
ROUTE_LENGTH_M: dict[str, float] = {"urban_day": 300.0, "urban_night": 300.0, "highway": 600.0,
                                    "mountain": 300.0, "left_hand": 300.0}
SIM_CRITERIA = CriteriaConfig(min_timeout_s=30.0, blocked_time_s=30.0, vehicle_extent_x_m=EGO_LENGTH_M / 2)
# The closed-loop demo: the five regions in a row, about a minute of driving.
DEMO_COURSE: tuple[tuple[str, float], ...] = (
    ("urban_day", 180.0), ("urban_night", 180.0), ("mountain", 170.0), ("highway", 380.0), ("left_hand", 170.0))
# The last metres of a segment that another follows are straight (ClosedLoopWorld.straighten_from): about what
# a camera model looks ahead, so the previous region's model, still in charge until the region manager has
# switched a hysteresis margin past the join, sees the road continue as it is.
JOIN_STRAIGHT_M = 40.0
# A segment keeps at least this far from the route before it (its own join excepted), else another road of its
# region is drawn (Course._plan): a route that came back on itself would put two regions' geofences
# (sim/geo.py, COURSE_FENCE_HALF_WIDTH_M either side) over the same road, or cross itself.
MIN_CLEARANCE_M = 80.0
ROAD_VARIANTS = 8
_MAX_SEARCHED = 400  # roads built at most while planning (each a few milliseconds)
_VARIANT_SEED_STRIDE = 7919
_JOIN_NEIGHBOURHOOD_M = 120.0  # the route this close before a join is where the next segment starts from
_SEGMENT_SEED_STRIDE = 101
LIGHT_ID_STRIDE = 1000  # light ids of segment i are i * LIGHT_ID_STRIDE + the world's own ids
ACTOR_ID_STRIDE = 1_000_000  # and its actor ids i * ACTOR_ID_STRIDE + the world's (0 stays the layout)


@dataclass(frozen=True)
class RouteSpec:
    """A route: ``segments`` ((region, metres), ...) driven in order, the ``seed`` that fixes their worlds,
    the simulation rate and camera size, and the scoring criteria."""

    route_id: str
    segments: tuple[tuple[str, float], ...]
    seed: int
    hz: float = 10.0
    image_size: tuple[int, int] = (IMAGE_H, IMAGE_W)
    start_speed: float | None = None
    criteria: CriteriaConfig = field(default=SIM_CRITERIA)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a route needs at least one segment")
        for region, length in self.segments:
            if not (isinstance(length, (int, float)) and math.isfinite(length) and length > 0):
                raise ValueError(f"segment {region!r}: length must be > 0 m, got {length!r}")
        if not (math.isfinite(self.hz) and self.hz > 0):
            raise ValueError(f"hz must be > 0, got {self.hz!r}")

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.segments)

    @property
    def length_m(self) -> float:
        return float(sum(length for _, length in self.segments))


def region_routes(region: str, n: int, first_seed: int = 0, length_m: float | None = None, **kwargs
                  ) -> list[RouteSpec]:
    """``n`` seeded routes of one region (seeds first_seed, first_seed + 1, ...)."""
    length = float(length_m if length_m is not None else ROUTE_LENGTH_M.get(region, 300.0))
    return [RouteSpec(f"{region}-{seed}", ((region, length),), seed, **kwargs)
            for seed in range(first_seed, first_seed + n)]


class Course:
    """The worlds of a route and which one the ego is in."""

    def __init__(self, spec: RouteSpec, t0: float = 0.0) -> None:
        self.spec = spec
        self._t0 = t0
        self._built: dict[tuple[int, ...], ClosedLoopWorld] = {}
        self.worlds = self._plan()
        self.offsets: list[float] = []  # route station where each segment starts
        station = 0.0
        paths = []
        for world in self.worlds:
            path = world.route_path()
            paths.append(path)
            self.offsets.append(station)
            station += path.length
        self._built.clear()
        self.path = _concatenate(paths)
        self.active = 0

    def _world(self, variants: tuple[int, ...]) -> ClosedLoopWorld:
        """The world of segment ``len(variants) - 1`` when the segments up to it are these variants of their
        roads (built once: every later segment starts where it ends)."""
        if variants not in self._built:
            spec = self.spec
            i = len(variants) - 1
            region, length = spec.segments[i]
            if i == 0:
                pose = (0.0, 0.0, 0.0)
            else:
                before = self._world(variants[:-1])
                x, y, th = before.reference.pose(before.length_m, before.layout.ego_lane_centre)
                pose = (float(x), float(y), float(th))
            first = i == 0
            seed = spec.seed + _SEGMENT_SEED_STRIDE * i + _VARIANT_SEED_STRIDE * variants[-1]
            self._built[variants] = ClosedLoopWorld(
                region, seed, length, hz=spec.hz, image_size=spec.image_size,
                start_speed=spec.start_speed if first else None, start_pose=pose,
                start_offset=None if first else 0.0, start_heading=None if first else 0.0, t0=self._t0,
                straight_end_m=JOIN_STRAIGHT_M if i + 1 < len(spec.segments) else 0.0)
        return self._built[variants]

    def _plan(self) -> list[ClosedLoopWorld]:
        """The segments' worlds: each segment the seed's road, unless the route would then come within
        ``MIN_CLEARANCE_M`` of itself; then the next of ``ROAD_VARIANTS`` roads of the same region drawn from
        seeds of their own, depth first (a mountain's hairpins can turn the road back towards where it came
        from, whichever way they bend). When no combination keeps clear, the clearest one found."""
        n = len(self.spec.segments)
        best: tuple[float, tuple[int, ...]] = (-1.0, (0,) * n)
        searched = 0
        points: dict[tuple[int, ...], np.ndarray] = {}  # route points of a segment, by its variants so far

        def route_points(variants: tuple[int, ...]) -> np.ndarray:
            if variants not in points:
                points[variants] = self._world(variants).route_path().points
            return points[variants]

        def search(prefix: tuple[int, ...], clearance: float) -> tuple[int, ...] | None:
            nonlocal best, searched
            if len(prefix) == n:
                return prefix
            for k in range(ROAD_VARIANTS if prefix else 1):
                if searched >= _MAX_SEARCHED:
                    return None
                searched += 1
                chosen = (*prefix, k)
                segments = [route_points(chosen[:j + 1]) for j in range(len(chosen))]
                c = min(clearance, _clearance_of_last(segments))
                if len(chosen) == n and c > best[0]:
                    best = (c, chosen)
                if c >= MIN_CLEARANCE_M:
                    found = search(chosen, c)
                    if found is not None:
                        return found
            return None

        choice = search((), math.inf) or best[1]
        return [self._world(choice[:i + 1]) for i in range(n)]

    # ------------------------------------------------------------------------------------------ set-up
    @property
    def world(self) -> ClosedLoopWorld:
        return self.worlds[self.active]

    @property
    def region(self) -> str:
        return self.world.spec.name

    def route_setup(self) -> RouteSetup:
        stops: list[StopLine] = []
        scenarios: list[Scenario] = []
        for i, world in enumerate(self.worlds):
            stops += world.stop_lines(i * LIGHT_ID_STRIDE)
            for sc in world.scenarios(self.offsets[i]):
                scenarios.append(Scenario(f"{world.spec.name} {sc.name}", sc.s_start, sc.s_end, sc.timeout_s))
        return RouteSetup(self.path, stops, scenarios, self.spec.criteria)

    # ------------------------------------------------------------------------------------------ per tick
    def observe(self) -> Observation:
        return self.world.observe()

    @property
    def pose(self) -> EgoPose:
        return self.world.pose

    def light_states(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for i, world in enumerate(self.worlds):
            if i == self.active:
                out.update(world.light_states(i * LIGHT_ID_STRIDE))
        return out

    def traffic_speeds(self) -> list[float]:
        return self.world.traffic_speeds()

    def actors(self) -> dict[int, str]:
        out = {}
        for i, world in enumerate(self.worlds):
            if i == self.active:
                out.update({(k + i * ACTOR_ID_STRIDE if k else 0): v for k, v in world.actors().items()})
        return out

    def apply(self, steer: float, accel: float) -> tuple[list[Hit], list[int]]:
        """Move the ego and the active world by one period; (hits, lane markings crossed). Passing the end of a
        segment moves the ego into the next one."""
        world = self.world
        lat_before = world.d
        hits = world.apply(steer, accel)
        markings = world.lane_markings_crossed(lat_before, world.d)
        offset = self.active * ACTOR_ID_STRIDE
        hits = [Hit(h.other_id + offset if h.other_id else 0, h.type_id) for h in hits]
        if world.length_m <= world.S and self.active + 1 < len(self.worlds):
            self._enter_next(world)
        return hits, markings

    def _enter_next(self, old: ClosedLoopWorld) -> None:
        new = self.worlds[self.active + 1]
        overshoot = old.S - old.length_m
        new.S = overshoot
        new.d = new.layout.ego_lane_centre + (old.d - old.layout.ego_lane_centre)
        new.psi = old.psi
        new.v = old.v
        new.t = old.t
        new.road_yaw = float(np.interp(new.S, new.reference.s, new.reference.theta))
        new.x, new.y = (float(c) for c in new.reference.pose(new.S, new.d)[:2])
        new.yaw = new.road_yaw + new.psi
        new.refresh_pose()
        self.active += 1


def route_clearance(segments: Sequence[np.ndarray]) -> float:
    """How close a route of these segments' (N, 2) route points comes to itself: the smallest distance from a
    segment to the route before it, less the ``_JOIN_NEIGHBOURHOOD_M`` before its own start [m]."""
    return min((_clearance_of_last(segments[:i + 1]) for i in range(1, len(segments))), default=math.inf)


def _clearance_of_last(segments: Sequence[np.ndarray]) -> float:
    if len(segments) < 2:
        return math.inf
    earlier = np.concatenate(segments[:-1])
    steps = np.linalg.norm(np.diff(earlier, axis=0), axis=1)
    station = np.concatenate(([0.0], np.cumsum(steps)))
    return _clearance(segments[-1], earlier[station < station[-1] - _JOIN_NEIGHBOURHOOD_M])


def _clearance(points: np.ndarray, earlier: np.ndarray) -> float:
    """Smallest distance between a segment's route line and the ``earlier`` route line [m] (inf when none)."""
    if len(earlier) < 2:
        return math.inf
    from shapely.geometry import LineString

    return float(LineString(points).distance(LineString(earlier)))


def _concatenate(paths: Sequence[RoutePath]) -> RoutePath:
    if len(paths) == 1:
        return paths[0]
    pts = np.concatenate([p.points for p in paths])
    bounds = np.concatenate([p.bounds for p in paths])
    limits = np.concatenate([p.speed_limits for p in paths])
    return RoutePath(pts, bounds, limits)
