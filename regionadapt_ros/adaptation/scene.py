"""The state of one instant of a driving scene, its labels, and the rule-based expert driver.

Frames and conventions
- Road frame: station ``s`` [m] along the road's reference line, measured from the ego's own station (the
  ego is at s = 0), and lateral ``lat`` [m], + = left. The reference line is the centre line between the two
  directions (on a divided road without oncoming lanes: the inner edge of the ego carriageway).
  Right-hand traffic puts the ego's lanes at negative lateral, left-hand traffic at positive lateral; lane 0 is
  the lane next to the reference line.
- Vehicle frame: the lidar origin, x forward, y left, z up; the ground is at z = -LIDAR_HEIGHT_M. The ego's
  reference point (rear axle of the kinematic bicycle) is the lidar origin.
- Curvature: + = road bends left. Heading error: + = vehicle points left of the road direction.

The expert driver (``expert_control``) sees the true scene and obeys the region's rules:
- steering = curvature feed-forward atan(L·κ) plus a Stanley-like correction of heading and lateral error
  (the same law in left- and right-hand traffic: only the lane the ego is in changes);
- accel = the most restrictive of: tracking a target speed (region speed limit, and the curve speed
  sqrt(a_lat_max/|κ|) of the road ahead reached at a comfortable deceleration), stopping with its front bumper
  STOP_LINE_MARGIN_M before the stop line of a red light (and of a yellow light when the needed deceleration is
  within the region's yellow limit), where the light is still in the camera's view,
  following the vehicle ahead in the ego lane with the region's time gap, stopping before an obstacle;
  clamped to ±STEER_LIMIT_RAD and ACCEL_LIMITS_MPS2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from regionadapt_ros.adaptation.regions import RGB, RegionSpec
from regionadapt_ros.core.contracts import BEV, LABELS, OBSTACLE_MAX_M

WHEELBASE_M = 2.7
STEER_LIMIT_RAD = 0.5
ACCEL_LIMITS_MPS2 = (-6.0, 3.0)
LIDAR_HEIGHT_M = -BEV.z_ground  # lidar origin above the ground
CAMERA_HEIGHT_M = 1.4
CURVATURE_PREVIEW_M = 15.0  # the curvature label and the steering feed-forward average over this much road
TL_RANGE_M = 60.0  # a light governs the label when its stop line is within this distance
STOP_LINE_MARGIN_M = 1.0  # a driver stops its front bumper this far before a stop line
EGO_FRONT_M = 3.7  # the ego's front bumper ahead of its reference point (rear axle; wheelbase + front overhang)
SPEED_PREVIEW_M = 80.0  # curves within this distance lower the target speed

TL_NONE, TL_RED, TL_YELLOW, TL_GREEN = 0, 1, 2, 3

# Expert gains. Speed tracking [1/s], stopping-profile tracking [1/s], gap [1/s^2] and relative speed [1/s].
_K_SPEED = 0.8
_K_STOP = 1.0
_K_GAP = 0.25
_K_REL = 0.6
# Stanley-like lateral law: heading gain, offset gain [m/s per m] and a softening speed [m/s].
_K_HEADING = 1.0
_K_OFFSET = 1.0
_V_SOFT = 2.0
_LEAD_HORIZON_M = 100.0
_FREE_SPACE_BINS = 8
_LANE_OVERLAP_M = 0.25  # an object counts as in the ego lane when it overlaps it by more than this

_LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}


@dataclass(frozen=True)
class CurvatureProfile:
    """Curvature of the reference line [1/m] as a piecewise-linear function of station [m]: linear between the
    knots, constant beyond the first and last knot (constant-curvature arcs joined by linear transitions)."""

    stations: np.ndarray
    curvatures: np.ndarray

    def at(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, self.stations, self.curvatures)

    def shifted(self, ds: float) -> CurvatureProfile:
        """The same road seen from ``ds`` metres further along (stations decrease by ds)."""
        return CurvatureProfile(self.stations - ds, self.curvatures)

    @staticmethod
    def straight() -> CurvatureProfile:
        return CurvatureProfile(np.array([0.0, 1.0]), np.array([0.0, 0.0]))


@dataclass(frozen=True)
class LaneLayout:
    """Lanes across the road. ``ego_lane`` counts from the reference line outward (0 = innermost)."""

    lane_width: float
    lanes_ego: int
    lanes_oncoming: int  # 0 on a divided road
    ego_lane: int
    driving_side: str  # "right" or "left"

    @property
    def side(self) -> int:
        """Sign of the lateral of the ego's lanes: -1 right-hand traffic, +1 left-hand traffic."""
        return -1 if self.driving_side == "right" else 1

    def lane_centre(self, lane: int) -> float:
        return self.side * (lane + 0.5) * self.lane_width

    @property
    def ego_lane_centre(self) -> float:
        return self.lane_centre(self.ego_lane)

    @property
    def ego_lane_bounds(self) -> tuple[float, float]:
        c = self.ego_lane_centre
        return c - 0.5 * self.lane_width, c + 0.5 * self.lane_width

    @property
    def ego_edge(self) -> float:
        """Lateral of the outer edge of the ego carriageway (kerb side)."""
        return self.side * self.lanes_ego * self.lane_width

    @property
    def oncoming_edge(self) -> float:
        """Lateral of the outer edge of the oncoming lanes (the reference line on a divided road)."""
        return -self.side * self.lanes_oncoming * self.lane_width

    @property
    def road_bounds(self) -> tuple[float, float]:
        a, b = self.ego_edge, self.oncoming_edge
        return min(a, b), max(a, b)

    def oncoming_lane_centre(self, lane: int) -> float:
        return -self.side * (lane + 0.5) * self.lane_width


@dataclass
class Vehicle:
    """A box on the road: car, truck or rock. ``s`` and ``lat`` are the box centre in the road frame."""

    kind: str  # "car", "truck" or "rock"
    s: float
    lat: float
    length: float
    width: float
    height: float
    heading: float = 0.0  # relative to the road direction: 0 = same direction as the ego, pi = oncoming
    speed: float = 0.0  # m/s along its own heading (0 for parked cars and rocks)
    accel: float = 0.0  # m/s^2; braking (< -0.5) lights the brake lights
    colour: RGB = (150, 150, 150)
    shape_seed: int = 0  # outline jitter of rocks

    @property
    def rear_s(self) -> float:
        return self.s - 0.5 * self.length

    @property
    def front_s(self) -> float:
        return self.s + 0.5 * self.length

    @property
    def oncoming(self) -> bool:
        return abs(self.heading) > 0.5 * math.pi

    @property
    def speed_along_road(self) -> float:
        """Speed in the ego's direction of travel (negative when oncoming)."""
        return self.speed * math.cos(self.heading)

    @property
    def braking(self) -> bool:
        return self.accel < -0.5


@dataclass
class TrafficLight:
    """A traffic light and its stop line. Lamp order of a vertical housing is red / yellow / green from the
    top; of a horizontal housing red / yellow / go from the left, or go / yellow / red when ``red_on_right``."""

    stop_s: float  # station of the stop line
    state: int  # TL_RED, TL_YELLOW or TL_GREEN
    housing_s: float
    housing_lat: float
    housing_height: float  # centre of the housing above the ground
    pole_lat: float
    horizontal: bool
    red_on_right: bool = False
    facing_ego: bool = True  # False: seen from the back (a light for the other direction)
    governs_ego: bool = True
    arrow_panel: bool = False  # turn arrows lit green under a red main light (the ego goes straight: red)
    go_colour: RGB = (40, 235, 90)
    yellow_colour: RGB = (255, 205, 0)

    def lamp_states(self) -> tuple[int, int, int]:
        """Lamp meaning in drawing order (top→bottom, or left→right as seen by the ego)."""
        if not self.horizontal or not self.red_on_right:
            return (TL_RED, TL_YELLOW, TL_GREEN)
        return (TL_GREEN, TL_YELLOW, TL_RED)


@dataclass
class Facade:
    """A vertical wall beside the road between stations s0 and s1: a building face or a rock wall. ``lat`` is
    the lateral of the face, ``depth`` how far the block extends away from the road (signed like lat)."""

    s0: float
    s1: float
    lat: float
    depth: float
    height: float
    colour: RGB
    kind: str = "building"  # or "rock_wall"
    seed: int = 0  # fixes the rock-wall outline and lit windows of this wall across frames


@dataclass
class Guardrail:
    lat: float
    s0: float
    s1: float


@dataclass
class Look:
    """Per-scene rendering variation: exposure and colour tint (day) and the seed of sensor noise."""

    exposure: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_seed: int = 0
    silhouette_seed: int = 0


@dataclass
class Scene:
    """Everything needed to render the camera, simulate the lidar, label the frame and drive it."""

    region: RegionSpec
    profile: CurvatureProfile
    layout: LaneLayout
    ego_lat: float  # lateral of the ego in the road frame
    ego_heading: float  # heading error [rad]
    speed: float  # m/s
    vehicles: list[Vehicle] = field(default_factory=list)
    lights: list[TrafficLight] = field(default_factory=list)
    facades: list[Facade] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    street_lamps: list[tuple[float, float]] = field(default_factory=list)  # (station, lateral) of lamp posts
    dash_phase: float = 0.0  # station [m] where a lane-divider dash starts (mod the dash period)
    world_yaw: float = 0.0  # ego yaw in the world [rad]: turns the distant scenery
    look: Look = field(default_factory=Look)
    # Geometry derived once and shared by the camera and the lidar (not copied by dataclasses.replace).
    render_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @cached_property
    def geometry(self) -> RoadGeometry:
        return RoadGeometry(self.profile, self.ego_lat, self.ego_heading)

    @property
    def lane_offset(self) -> float:
        return self.ego_lat - self.layout.ego_lane_centre


# Roadside scenery is not rendered where the road has turned further than this from its direction at the ego
# (RoadGeometry.scenery_range): about 115 degrees, past the apex of a hairpin.
SCENERY_MAX_TURN_RAD = 2.0


class RoadGeometry:
    """The reference line in the vehicle frame, sampled every ``ds`` metres of station from s_min to s_max.

    Heading is integrated from the curvature (trapezoid rule) and position from the heading, both anchored at
    the ego's station, then moved into the vehicle frame (ego at lateral ``ego_lat``, heading error
    ``ego_heading``).
    """

    def __init__(
        self,
        profile: CurvatureProfile,
        ego_lat: float,
        ego_heading: float,
        s_min: float = -60.0,
        s_max: float = 170.0,
        ds: float = 0.5,
    ) -> None:
        n_back = round(-s_min / ds)
        s = (np.arange(n_back + round(s_max / ds) + 1) - n_back) * ds
        k = profile.at(s)
        theta = np.concatenate(([0.0], np.cumsum(0.5 * (k[1:] + k[:-1]) * ds)))
        theta -= theta[n_back]
        mid = 0.5 * (theta[1:] + theta[:-1])
        x = np.concatenate(([0.0], np.cumsum(np.cos(mid) * ds)))
        y = np.concatenate(([0.0], np.cumsum(np.sin(mid) * ds)))
        x -= x[n_back]
        y -= y[n_back] + ego_lat
        c, sn = math.cos(ego_heading), math.sin(ego_heading)
        self.s = s
        self.curvature = k
        self.x = c * x + sn * y
        self.y = -sn * x + c * y
        self.theta = theta - ego_heading
        self.s_min = float(s[0])
        self.s_max = float(s[-1])

    def points(self, s: np.ndarray, lat: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame (x, y) of road-frame points (s, lat); s is clamped to the sampled range."""
        xs = np.interp(s, self.s, self.x)
        ys = np.interp(s, self.s, self.y)
        th = np.interp(s, self.s, self.theta)
        return xs - lat * np.sin(th), ys + lat * np.cos(th)

    def heading(self, s: np.ndarray | float) -> np.ndarray:
        """Vehicle-frame direction [rad] of the road at station s."""
        return np.interp(s, self.s, self.theta)

    @cached_property
    def scenery_range(self) -> tuple[float, float]:
        """(s_lo, s_hi): the stations whose roadside scenery (walls, guardrails, lamps) the sensors see.

        The road is a curve in a flat plane, so a hairpin's far side can pass through the road in front of the
        ego; on a real mountain it runs above or below, and the rock face on the inside of the bend hides it.
        Scenery is therefore cut where the road has turned more than SCENERY_MAX_TURN_RAD from its direction at
        the ego (ahead and behind): without the cut the lidar returned a rock wall standing across the ego's lane
        at a hairpin, where the world has none to collide with."""
        turned = np.abs(self.theta - np.interp(0.0, self.s, self.theta)) > SCENERY_MAX_TURN_RAD
        ahead = np.flatnonzero(turned & (self.s > 0.0))
        behind = np.flatnonzero(turned & (self.s < 0.0))
        s_hi = float(self.s[ahead[0]]) if ahead.size else self.s_max
        s_lo = float(self.s[behind[-1]]) if behind.size else self.s_min
        return s_lo, s_hi


# --------------------------------------------------------------------------------------------------------
# Labels


def curvature_preview(profile: CurvatureProfile) -> float:
    """Mean reference-line curvature over the next CURVATURE_PREVIEW_M metres (the curvature label)."""
    s = np.linspace(0.0, CURVATURE_PREVIEW_M, 16)
    return float(np.mean(profile.at(s)))


def _in_ego_lane(scene: Scene, v: Vehicle) -> bool:
    lo, hi = scene.layout.ego_lane_bounds
    half = 0.5 * v.width
    overlap = min(hi, v.lat + half) - max(lo, v.lat - half)
    return overlap > _LANE_OVERLAP_M


def vehicles_ahead_in_lane(scene: Scene) -> list[Vehicle]:
    """Boxes in the ego lane whose rear is ahead of the ego, nearest first."""
    ahead = [v for v in scene.vehicles if v.rear_s > 0.0 and _in_ego_lane(scene, v)]
    return sorted(ahead, key=lambda v: v.rear_s)


def governing_light(scene: Scene) -> TrafficLight | None:
    """The nearest light governing the ego lane with its stop line ahead within TL_RANGE_M, if any."""
    best = None
    for light in scene.lights:
        in_range = light.governs_ego and light.facing_ego and 0.0 < light.stop_s <= TL_RANGE_M
        if in_range and (best is None or light.stop_s < best.stop_s):
            best = light
    return best


def obstacle_distance(scene: Scene) -> float:
    """Distance [m] along the lane to the rear of the nearest box in the ego lane, capped at OBSTACLE_MAX_M."""
    ahead = vehicles_ahead_in_lane(scene)
    if not ahead:
        return OBSTACLE_MAX_M
    return float(min(ahead[0].rear_s, OBSTACLE_MAX_M))


def free_space(scene: Scene) -> float:
    """Fraction of the ego lane up to OBSTACLE_MAX_M that is free: the lane is cut into lateral strips, each
    free from the ego up to the first box covering it; the result is the mean free length / OBSTACLE_MAX_M."""
    lo, hi = scene.layout.ego_lane_bounds
    edges = np.linspace(lo, hi, _FREE_SPACE_BINS + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    free = np.full(_FREE_SPACE_BINS, OBSTACLE_MAX_M)
    for v in scene.vehicles:
        if v.rear_s <= 0.0:
            continue
        covered = np.abs(centres - v.lat) < 0.5 * v.width
        free[covered] = np.minimum(free[covered], v.rear_s)
    return float(np.clip(free, 0.0, OBSTACLE_MAX_M).mean() / OBSTACLE_MAX_M)


def scene_labels(scene: Scene) -> np.ndarray:
    """(len(LABELS),) float32 labels of the scene in LABELS order, with the expert's command."""
    out = np.empty(len(LABELS), dtype=np.float32)
    light = governing_light(scene)
    steer, accel = expert_control(scene)
    out[_LABEL_INDEX["tl_state"]] = TL_NONE if light is None else light.state
    out[_LABEL_INDEX["lane_offset"]] = scene.lane_offset
    out[_LABEL_INDEX["heading_error"]] = scene.ego_heading
    out[_LABEL_INDEX["curvature"]] = curvature_preview(scene.profile)
    out[_LABEL_INDEX["obstacle_distance"]] = obstacle_distance(scene)
    out[_LABEL_INDEX["free_space"]] = free_space(scene)
    out[_LABEL_INDEX["steering"]] = steer
    out[_LABEL_INDEX["accel"]] = accel
    out[_LABEL_INDEX["speed"]] = scene.speed
    return out


# --------------------------------------------------------------------------------------------------------
# Expert driver


def lane_keeping_steer(offset: float, heading: float, curvature: float, speed: float) -> float:
    """Steering angle [rad, + left]: curvature feed-forward plus heading and lateral-offset correction."""
    delta = (
        math.atan(WHEELBASE_M * curvature) - _K_HEADING * heading - math.atan(_K_OFFSET * offset / (speed + _V_SOFT))
    )
    return float(np.clip(delta, -STEER_LIMIT_RAD, STEER_LIMIT_RAD))


def target_speed(region: RegionSpec, profile: CurvatureProfile) -> float:
    """Speed [m/s] to track now: the speed limit, and every curve ahead's speed sqrt(a_lat_max/|κ|) reachable
    from here at the region's comfortable deceleration."""
    s = np.linspace(0.0, SPEED_PREVIEW_M, 41)
    k = np.maximum(np.abs(profile.at(s)), 1e-5)
    v_curve_sq = region.curve_lat_accel_mps2 / k
    v_allowed = np.sqrt(v_curve_sq + 2.0 * region.decel_comfort_mps2 * s)
    return float(min(region.speed_limit_mps, v_allowed.min()))


def _profile_accel(region: RegionSpec, speed: float, room: float, final_speed: float = 0.0) -> float:
    """Acceleration to be at ``final_speed`` after ``room`` metres: track the braking profile
    sqrt(v_f² + 2·b·d) plus the kinematic deceleration (v² - v_f²)/(2·d). On the profile this is exactly -b
    (a comfortable constant-deceleration stop); above it (late) it brakes harder and still stops in ``room``;
    below it the result is positive and other limits decide."""
    room_c = max(room, 0.0)
    allowed = math.sqrt(final_speed * final_speed + 2.0 * region.decel_comfort_mps2 * room_c)
    needed = max(speed * speed - final_speed * final_speed, 0.0) / (2.0 * max(room_c, 0.1))
    return _K_STOP * (allowed - speed) - needed


def stop_accel(region: RegionSpec, speed: float, distance: float) -> float:
    """Acceleration to come to a standstill ``distance`` metres ahead (see _profile_accel)."""
    return _profile_accel(region, speed, distance)


def follow_accel(region: RegionSpec, speed: float, gap: float, lead_speed: float) -> float:
    """Acceleration behind a lead box ``gap`` metres ahead moving at ``lead_speed`` (0 for obstacles): a time-gap
    controller, limited by the braking profile that matches the lead's speed by the standstill gap."""
    desired = region.standstill_gap_m + region.time_gap_s * speed
    a_gap = _K_GAP * (gap - desired) + _K_REL * (lead_speed - speed)
    room = gap - region.standstill_gap_m
    return min(a_gap, _profile_accel(region, speed, room, max(lead_speed, 0.0)))


def light_requires_stop(region: RegionSpec, light: TrafficLight, speed: float, front_m: float = 0.0) -> bool:
    """Red: always stop. Yellow: stop if the needed deceleration is within the region's yellow limit.
    ``front_m``: how far the driver's front is ahead of the point ``light.stop_s`` is measured from."""
    if light.state == TL_RED:
        return True
    if light.state == TL_YELLOW:
        room = max(light.stop_s - front_m - STOP_LINE_MARGIN_M, 0.1)
        return speed * speed / (2.0 * room) <= region.yellow_max_decel_mps2
    return False


def longitudinal_accel(
    region: RegionSpec,
    speed: float,
    v_target: float,
    leads: Iterable[tuple[float, float]] = (),
    stop_distances: Iterable[float] = (),
) -> float:
    """The expert's acceleration [m/s^2] from its speed target, leads ((gap m, speed m/s) of boxes ahead in the
    lane) and stop points (m ahead), clamped to ACCEL_LIMITS_MPS2."""
    accel = float(np.clip(_K_SPEED * (v_target - speed), -region.decel_comfort_mps2, region.accel_max_mps2))
    for gap, lead_speed in leads:
        if gap < _LEAD_HORIZON_M:
            accel = min(accel, follow_accel(region, speed, gap, lead_speed))
    for distance in stop_distances:
        accel = min(accel, stop_accel(region, speed, distance))
    return float(np.clip(accel, *ACCEL_LIMITS_MPS2))


def expert_control(scene: Scene) -> tuple[float, float]:
    """(steering [rad, + left], accel [m/s^2]) of the rule-based expert for the scene."""
    region = scene.region
    steer = lane_keeping_steer(scene.lane_offset, scene.ego_heading, curvature_preview(scene.profile), scene.speed)
    leads = [(v.rear_s, max(v.speed_along_road, 0.0)) for v in vehicles_ahead_in_lane(scene)]
    stops = []
    light = governing_light(scene)
    if light is not None and light_requires_stop(region, light, scene.speed, EGO_FRONT_M):
        stops.append(light.stop_s - EGO_FRONT_M - STOP_LINE_MARGIN_M)
    accel = longitudinal_accel(region, scene.speed, target_speed(region, scene.profile), leads, stops)
    return steer, accel
