"""The synthetic world as a closed-loop simulator: the ego is driven by whatever command it is given.

``ClosedLoopWorld`` is a ``DriveGenerator`` whose road, lights, parked cars, rocks and roadside are all built
when it is created (far enough for its route), from the generator's own random stream, so a seed fixes the
same road and the same light timings for every driver; traffic, sensor noise and the heading disturbance
(wind, camber) draw from streams of their own. Moving traffic still reacts to where the ego is (it spawns
ahead of it), as background traffic does in CARLA.

Frames. The road frame (station s, lateral lat, + = left) is the generator's; the map frame is metric, x/y
anchored at ``start_pose``, obtained from the road frame through the reference line (``ReferenceLine``), so the
route, the stop lines and the ego's pose agree exactly. The ego's reference point (rear axle, where camera and
lidar sit) is (S, d); its bounding box centre, which the scorer uses as CARLA uses the actor location, is
``WHEELBASE_M / 2`` ahead.

Per tick: ``observe()`` renders the camera and the lidar at the ego's pose; ``apply(steer, accel)`` moves the
ego (kinematic bicycle) and the traffic by one period, and returns what the ego hit. A collision puts the ego
back where it was and stops it (a crash ends the motion; the driver may pull away again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from regionadapt_ros.adaptation.regions import RegionSpec
from regionadapt_ros.adaptation.render import render_camera, simulate_lidar
from regionadapt_ros.adaptation.scene import (
    EGO_FRONT_M,
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    WHEELBASE_M,
    Scene,
    Vehicle,
)
from regionadapt_ros.adaptation.synthetic import DriveGenerator
from regionadapt_ros.adaptation.synthetic.drive import _WorldVehicle
from regionadapt_ros.adaptation.synthetic.scenes import _region_code
from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W
from regionadapt_ros.scoring.criteria import RED, YELLOW, Scenario, StopLine
from regionadapt_ros.scoring.route import RoutePath

EGO_WIDTH_M = 1.85  # a mid-size car, as the world's cars (4.0-4.9 m × 1.72-1.92 m)
EGO_CENTRE_AHEAD_M = 0.5 * WHEELBASE_M  # bounding-box centre ahead of the rear axle
EGO_LENGTH_M = 2.0 * (EGO_FRONT_M - EGO_CENTRE_AHEAD_M)  # 4.7 m: the front bumper where the expert puts it
ROUTE_SPACING_M = 1.0
TRAFFIC_RADIUS_M = 50.0  # background traffic within this distance counts for the minimum-speed criterion
JOIN_EASE_M = 12.0  # curvature eased to zero over this before a straight run-out (the generator's longest)
_STRAIGHT_START_M = 30.0  # every generated world is straight up to this station
_STREAM = 0xC105ED  # separates the closed-loop streams from the generator's
_STATE_NAMES = {TL_RED: RED, TL_YELLOW: YELLOW, TL_GREEN: "green"}


class ReferenceLine:
    """The road's reference line in the map frame, sampled every ``ds`` metres of station from ``s_min``."""

    def __init__(self, knots_s: np.ndarray, knots_k: np.ndarray, origin: tuple[float, float], heading: float,
                 s_min: float, s_max: float, ds: float = 0.25) -> None:
        s = np.round(np.arange(s_min, s_max + ds, ds) / ds) * ds
        k = np.interp(s, knots_s, knots_k)
        theta = np.concatenate(([0.0], np.cumsum(0.5 * (k[1:] + k[:-1]) * ds)))
        mid = 0.5 * (theta[1:] + theta[:-1])
        x = np.concatenate(([0.0], np.cumsum(np.cos(mid) * ds)))
        y = np.concatenate(([0.0], np.cumsum(np.sin(mid) * ds)))
        i0 = int(np.argmin(np.abs(s)))  # station 0: where the line passes ``origin`` in direction ``heading``
        alpha = heading - theta[i0]
        ca, sa = math.cos(alpha), math.sin(alpha)
        x, y = x - x[i0], y - y[i0]
        self.s = s
        self.x = origin[0] + ca * x - sa * y
        self.y = origin[1] + sa * x + ca * y
        self.theta = theta + alpha

    def pose(self, s: float | np.ndarray, lat: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map-frame (x, y, direction of the road) of road-frame points (s, lat)."""
        th = np.interp(s, self.s, self.theta)
        x = np.interp(s, self.s, self.x) - np.sin(th) * lat
        y = np.interp(s, self.s, self.y) + np.cos(th) * lat
        return x, y, th


class Observation:
    """What the sensors see at time ``t`` [s on the world clock]: the camera image ``rgb`` (H, W, 3) uint8, the
    lidar sweep ``points`` (N, 4) float32 (NaN rows: no return), the ego's speed, and the scene (truth, for the
    expert and for labelling). Camera and lidar are rendered when first asked for (the expert needs neither);
    the lidar's noise comes from the world's sensor stream in the order sweeps are rendered."""

    def __init__(self, t: float, speed: float, scene: Scene, image_size: tuple[int, int],
                 sensor_rng: np.random.Generator) -> None:
        self.t = t
        self.speed = speed
        self.scene = scene
        self._size = image_size
        self._rng = sensor_rng

    @cached_property
    def rgb(self) -> np.ndarray:
        return render_camera(self.scene, self._size)

    @cached_property
    def points(self) -> np.ndarray:
        return simulate_lidar(self.scene, self._rng)


@dataclass(frozen=True)
class Hit:
    """Something the ego ran into: CARLA-like actor id (0 = static layout) and type id."""

    other_id: int
    type_id: str


@dataclass
class EgoPose:
    """Map-frame pose of the rear axle (x, y, yaw) and of the bounding-box centre, with speed and yaw rate."""

    x: float
    y: float
    yaw: float
    centre_x: float
    centre_y: float
    speed: float
    yaw_rate: float = 0.0


def _box_corners(cs: float, cl: float, half_len: float, half_wid: float, ang: float, curvature: float = 0.0
                 ) -> np.ndarray:
    """(4, 2) road-frame (s, lat) corners of a box centred at (cs, cl) heading ``ang`` relative to the road.
    A straight box on a road curving by ``curvature`` drifts off the curving lanes by κ·x²/2 at x metres from
    its centre; the corners get that correction (tight mountain curves would otherwise skew the test)."""
    c, s = math.cos(ang), math.sin(ang)
    dx = np.array([half_len, half_len, -half_len, -half_len])
    dy = np.array([half_wid, -half_wid, -half_wid, half_wid])
    along = c * dx - s * dy
    return np.stack((cs + along, cl + s * dx + c * dy - 0.5 * curvature * along * along), axis=1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quadrilaterals given as (4, 2) corners."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges:
            axis = np.array([-ey, ex])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


@dataclass
class _Ids:
    """Stable actor ids in order of first sight (reproducible, unlike Python object ids)."""

    next_id: int = 100
    ids: dict[int, int] = field(default_factory=dict)

    def of(self, obj: object) -> int:
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = self.next_id
            self.next_id += 1
        return self.ids[key]


class ClosedLoopWorld(DriveGenerator):
    """One region's world for a route of ``length_m`` metres, driven by external commands.

    ``start_pose``: map-frame (x, y, yaw) of the ego's rear axle at the start; ``start_speed`` [m/s] (default:
    the generator's 0.7 × the speed limit); ``start_offset`` / ``start_heading``: the ego's offset from its lane
    centre [m] and heading error [rad] at the start (default: drawn by the generator); ``t0``: the world clock
    at the start (light cycles run on it). ``straight_end_m``: the last metres of the route, and the road built
    beyond its end, are straight (see ``straighten_from``).
    """

    def __init__(self, region: str | RegionSpec, seed: int, length_m: float, *, hz: float = 10.0,
                 image_size: tuple[int, int] = (IMAGE_H, IMAGE_W), start_speed: float | None = None,
                 start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0), start_offset: float | None = None,
                 start_heading: float | None = None, t0: float = 0.0, straight_end_m: float = 0.0) -> None:
        if not (math.isfinite(length_m) and length_m > 0):
            raise ValueError(f"route length must be > 0, got {length_m!r}")
        super().__init__(region, seed, hz=hz, image_size=image_size, start_speed=start_speed,
                         start_pose=start_pose, t0=t0)
        self.length_m = float(length_m)
        streams = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _region_code(self.spec.name), _STREAM]).spawn(3)
        self.traffic_rng, self.sensor_rng, self.disturbance_rng = (np.random.default_rng(s) for s in streams)
        if start_offset is not None:
            self.d = self.layout.ego_lane_centre + float(start_offset)
        if start_heading is not None:
            self.psi = float(start_heading)
        self._extend(self.length_m + self._BUILD_AHEAD)  # the whole route's road: fixed by the seed alone
        if straight_end_m > 0:
            self.straighten_from(self.length_m - float(straight_end_m))
        self.road_yaw = self.yaw - self.psi
        # station 0 is where the ego starts: its reference point is at lateral d
        origin = (self.x + math.sin(self.road_yaw) * self.d, self.y - math.cos(self.road_yaw) * self.d)
        knots_s, knots_k = np.asarray(self.world.knots_station), np.asarray(self.world.knots_k)
        self.reference = ReferenceLine(knots_s, knots_k, origin, self.road_yaw, -80.0,
                                       self.length_m + self._BUILD_AHEAD + 40.0)
        self._ids = _Ids()
        self._light_ids = {id(wl): i + 1 for i, wl in enumerate(self.world.lights)}
        self._all_lights = list(self.world.lights)
        self._pose = self._ego_pose(0.0)

    # ------------------------------------------------------------------------------------------ geometry
    def straighten_from(self, station: float) -> None:
        """Make the road straight from ``station`` to as far as it is built, easing the curvature to zero over
        the ``JOIN_EASE_M`` before it (never inside the generator's straight start). Only while the world is
        being built: the reference line is made from these curvatures afterwards.

        Why: a route of several regions is one world per region, and a world is only rendered while the ego is
        in it. A curve running through the join would be seen to continue up to the join and then, the next
        world being straight at its start, to jump straight: a sensor discontinuity that no real road has
        (roads change curvature along transition curves). Straight on both sides, the road continues the way
        the ego saw it, and only the looks change where the region changes."""
        w = self.world
        end = max(float(station), _STRAIGHT_START_M)
        ease = max(end - JOIN_EASE_M, _STRAIGHT_START_M)
        s = np.asarray(w.knots_station)
        k = np.asarray(w.knots_k)
        k_ease = float(np.interp(ease, s, k))
        keep = s < ease
        stations = [float(v) for v in s[keep]] + [ease]
        curvatures = [float(v) for v in k[keep]] + [k_ease]
        if end > ease:
            stations.append(end)
            curvatures.append(0.0)
        stations.append(max(float(w.built_to), end + 1.0))
        curvatures.append(0.0)
        w.knots_station[:] = stations
        w.knots_k[:] = curvatures

    @property
    def station(self) -> float:
        """Distance along the road from the start [m] (the ego's rear axle)."""
        return self.S

    def _ego_pose(self, yaw_rate: float) -> EgoPose:
        x, y, th = self.reference.pose(self.S, self.d)
        yaw = float(th) + self.psi
        cx = float(x) + EGO_CENTRE_AHEAD_M * math.cos(yaw)
        cy = float(y) + EGO_CENTRE_AHEAD_M * math.sin(yaw)
        return EgoPose(float(x), float(y), yaw, cx, cy, self.v, yaw_rate)

    @property
    def pose(self) -> EgoPose:
        return self._pose

    def refresh_pose(self) -> None:
        """Recompute the map-frame pose after the road-frame state was set from outside."""
        self._pose = self._ego_pose(0.0)

    def lane_bounds(self) -> tuple[float, float]:
        """(right, left) lateral extent of the ego's carriageway relative to its lane centre [m]."""
        lay = self.layout
        a, b = sorted((0.0, lay.ego_edge))
        c = lay.ego_lane_centre
        return (a - c, b - c)

    def route_path(self, length_m: float | None = None) -> RoutePath:
        """The route: the ego lane's centre line from the start station over ``length_m`` (default: the
        world's route length), with the carriageway as route lanes and the region's speed limit."""
        length = self.length_m if length_m is None else float(length_m)
        s = np.arange(0.0, length + 0.5 * ROUTE_SPACING_M, ROUTE_SPACING_M)
        x, y, _ = self.reference.pose(s, self.layout.ego_lane_centre)
        limits = np.full(s.size, self.spec.speed_limit_mps)
        return RoutePath(np.stack((x, y), axis=1), self.lane_bounds(), limits)

    def stop_lines(self, light_id_offset: int = 0) -> list[StopLine]:
        """Stop lines of every light on the route, across the ego's carriageway (±0.6 lane width around each
        lane's centre, as the leaderboard draws them)."""
        lay = self.layout
        lo, hi = sorted((0.0, lay.ego_edge))
        extra = 0.1 * lay.lane_width
        out = []
        for wl in self._all_lights:
            if wl.stop_station > self.length_m + 20.0:
                continue
            x, y, _ = self.reference.pose(np.array([wl.stop_station] * 3), np.array([lo - extra, hi + extra,
                                                                                      0.5 * (lo + hi)]))
            out.append(StopLine(light_id_offset + self._light_ids[id(wl)], (float(x[0]), float(y[0])),
                                (float(x[1]), float(y[1])), (float(x[2]), float(y[2]))))
        return out

    def light_stations(self) -> dict[int, float]:
        return {self._light_ids[id(wl)]: wl.stop_station for wl in self._all_lights}

    def scenarios(self, station_offset: float = 0.0) -> list[Scenario]:
        """Each intersection is a scenario: from 30 m before its stop line to 15 m past it, within a full red
        and yellow phase plus 10 s."""
        out = []
        for wl in self._all_lights:
            if wl.stop_station > self.length_m:
                continue
            out.append(Scenario(f"intersection {self._light_ids[id(wl)]}", station_offset + wl.stop_station - 30.0,
                                station_offset + wl.stop_station + 15.0, wl.red_s + wl.yellow_s + 10.0))
        return out

    def light_states(self, light_id_offset: int = 0) -> dict[int, str]:
        return {light_id_offset + self._light_ids[id(wl)]: _STATE_NAMES[wl.state(self.t)] for wl in self._all_lights}

    def light_phases(self) -> dict[int, tuple[float, float, float, float]]:
        """(phase, green, yellow, red) [s] of each light."""
        return {self._light_ids[id(wl)]: (wl.phase, wl.green_s, wl.yellow_s, wl.red_s) for wl in self._all_lights}

    def traffic_speeds(self) -> list[float]:
        """Speeds of the moving traffic in the ego's direction within TRAFFIC_RADIUS_M (the surrounding traffic
        of the minimum-speed criterion; the oncoming traffic of this world ignores lights, so it is left out)."""
        return [wv.vehicle.speed for wv in self.world.vehicles
                if wv.lane_key[0] == "ego" and abs(wv.vehicle.s - self.S) < TRAFFIC_RADIUS_M]

    def actors(self) -> dict[int, str]:
        """{actor id: CARLA-style type id} of the vehicles and rocks of the world now (0: the static layout)."""
        out = {0: "static.layout"}
        for wv in self.world.vehicles:
            out[self._ids.of(wv)] = _type_id(wv.vehicle.kind)
        return out

    def place_static(self, kind: str, ahead_m: float, lat: float, size_m: float = 1.0) -> None:
        """Put a static box ("rock" or a parked "car") ``ahead_m`` metres ahead of the ego at lateral ``lat``."""
        if kind not in ("rock", "car"):
            raise ValueError(f"kind must be 'rock' or 'car', got {kind!r}")
        length, width, height = (size_m, size_m, 0.8 * size_m) if kind == "rock" else (4.5, 1.8, 1.5)
        box = Vehicle(kind, self.S + ahead_m, lat, length, width, height, 0.0)
        self.world.vehicles.append(_WorldVehicle(box, 0.0, ("rock" if kind == "rock" else "parked", 0)))

    # ------------------------------------------------------------------------------------------ per tick
    def observe(self) -> Observation:
        return Observation(self.t, self.v, self.scene(), self.image_size, self.sensor_rng)

    def apply(self, steer: float, accel: float) -> list[Hit]:
        """Move the ego by one period with steering angle ``steer`` [rad, + left] and ``accel`` [m/s^2], then the
        traffic. Returns what the ego ran into on the way (its motion is undone and it stops)."""
        if not (math.isfinite(steer) and math.isfinite(accel)):
            raise ValueError(f"non-finite command: steer {steer!r}, accel {accel!r}")
        before = (self.S, self.d, self.psi, self.v, self.road_yaw, self.x, self.y, self.yaw)
        yaw_before = self._pose.yaw
        self._move_ego(steer, accel, self.dt, self.disturbance_rng)
        hits = self._hits()
        if hits:
            self.S, self.d, self.psi, _, self.road_yaw, self.x, self.y, self.yaw = before
            self.v = 0.0
        self._move_traffic(self.dt)
        self._spawn_traffic(self.traffic_rng)
        self._forget_behind()
        self.t += self.dt
        pose = self._ego_pose(0.0)
        pose.yaw_rate = _wrap(pose.yaw - yaw_before) / self.dt
        self._pose = pose
        return hits

    def _hits(self) -> list[Hit]:
        """Boxes, guardrails and walls the ego's bounding box overlaps, in the road frame (locally flat)."""
        cs = self.S + EGO_CENTRE_AHEAD_M * math.cos(self.psi)
        cl = self.d + EGO_CENTRE_AHEAD_M * math.sin(self.psi)
        kappa = float(np.interp(cs, self.world.knots_station, self.world.knots_k))
        ego = _box_corners(cs, cl, EGO_LENGTH_M / 2, EGO_WIDTH_M / 2, self.psi, kappa)
        reach = EGO_LENGTH_M
        hits: list[Hit] = []
        for wv in self.world.vehicles:
            v = wv.vehicle
            if abs(v.s - cs) > reach + 0.5 * v.length or abs(v.lat - cl) > reach + 0.5 * v.width:
                continue
            box = _box_corners(v.s, v.lat, 0.5 * v.length, 0.5 * v.width, v.heading if v.kind == "rock" else 0.0)
            if boxes_overlap(ego, box):
                hits.append(Hit(self._ids.of(wv), _type_id(v.kind)))
        for rail in self.world.guardrails:
            if rail.s0 - reach < cs < rail.s1 + reach:
                box = _box_corners(cs, rail.lat, reach, 0.15, 0.0)
                if boxes_overlap(ego, box):
                    hits.append(Hit(0, "static.guardrail"))
                    break
        for f in self.world.facades:
            if f.s0 - reach < cs < f.s1 + reach:
                lo, hi = sorted((f.lat, f.lat + f.depth))
                box = _box_corners(0.5 * (f.s0 + f.s1), 0.5 * (lo + hi), 0.5 * (f.s1 - f.s0), 0.5 * (hi - lo), 0.0)
                if boxes_overlap(ego, box):
                    hits.append(Hit(0, "static.building" if f.kind == "building" else "static.rock_wall"))
                    break
        return hits

    def lane_markings_crossed(self, lat_before: float, lat_after: float) -> list[int]:
        """carla.LaneMarkingType values of the markings the ego's reference point crossed between two laterals
        (1 Broken, 2 Solid, 3 SolidSolid)."""
        lay, spec = self.layout, self.spec
        lines: list[tuple[float, int]] = []
        for i in range(1, lay.lanes_ego):
            lines.append((lay.side * i * lay.lane_width, 1))
        for i in range(1, lay.lanes_oncoming):
            lines.append((-lay.side * i * lay.lane_width, 1))
        centre = {"dashed": 1, "solid": 2, "double": 3}[spec.centre_line] if lay.lanes_oncoming else 2
        lines.append((0.0, centre))
        lines.append((lay.ego_edge, 2))
        if lay.lanes_oncoming:
            lines.append((lay.oncoming_edge, 2))
        lo, hi = sorted((lat_before, lat_after))
        return [kind for lat, kind in lines if lo < lat <= hi]


def _type_id(kind: str) -> str:
    return {"car": "vehicle.car", "truck": "vehicle.truck", "rock": "static.prop.rock"}.get(kind, f"static.{kind}")


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi
