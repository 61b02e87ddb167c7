"""The nearest lidar return in the ego's path: the obstacle distance the emergency brake gets without a model.

The collision-risk estimate (``core.collision_risk``) was fed only by the perception network's obstacle
distance, so the safety guard failed exactly where the model does: at night the regional and base models both
missed a car standing in the lane 20 m ahead (their distance output stayed at "nothing within 57 m") while the
lidar returned it plainly. Autoware's autonomous emergency braking keeps its own path: the obstacle point cloud
inside the ego's predicted path, the path being an arc of the measured yaw rate over the speed. This module is
that geometry for the session's lidar sweep, and a second, independent estimator tracks its distance.

A path is an arc of curvature ``kappa`` [1/m, + = turning left] through a point beside the vehicle-frame origin
(x forward, y left, z up; base_link at the rear axle), leaving it at a heading (``PathArc``). A return counts
when it lies inside every path's corridor (``predicted_paths``: parallel to the perceived lane, along the ego's
own motion, and inside the perceived lane's bounds), between ``min_height_m`` and ``max_height_m`` above the
ground (ground, kerbs and lane paint below; bridges, gantries and canopy above), and between the front bumper
(``front_m`` along the path from the origin) and the shortest path's end (a quarter turn of an arc at most: a
predicted path is not trusted further). The distance is the gap along the first path from the front bumper to
the nearest return that ``min_points`` returns within ``cluster_m`` confirm, spread ``min_width_m`` across the
path: one stray return (spray, dust, a noisy range) does not start a brake, nor does a wall the ego grazes at a
shallow angle. A gap, not a distance from the origin, because time to collision is the gap over the closing
speed: measured from the rear axle, a car 5 m ahead of the bumper at 10 m/s closing would read 0.37 s late.

What it does not do, and why the perception channel stays beside it: an obstacle in a bend the ego is only
entering is seen once the paths overlap there, an ego that has left its lane is not braked for what stands
outside it, nothing beyond the corridor's range counts, and the road is assumed flat in the vehicle frame (the
session's ``ground_z_m``; a steep crest can put road surface above ``min_height_m`` at long range, which the
range limit bounds).

ROS-free, numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.errors import ConfigError, settings_from_dict
from regionadapt_ros.core.msgconv.vehicle import MIN_CURVATURE_SPEED_MPS

# The nearest this many dense clusters are checked for width; a sweep with more before a wide one is the
# roadside along a bend, not an obstacle.
MAX_CANDIDATES = 256
# Below this |curvature| [1/m] (a radius over 10 km) the path is a straight line: the arc formulas lose precision.
STRAIGHT_KAPPA = 1e-4


@dataclass(frozen=True)
class CorridorConfig:
    """The path corridor (the driving node's ``corridor.*`` parameters). Metres.

    front_m: the front bumper ahead of the vehicle-frame origin (wheelbase + front overhang for a base_link at
    the rear axle); half_width_m: half the corridor's width (the vehicle's half width and a margin);
    min_height_m / max_height_m: the band above the ground that holds obstacles (the ground at the BEV grid's
    ``z_ground``: the session brings every cloud to that convention, ``ground_z_m``); max_range_m: the
    corridor's length beyond the bumper (returns behind the bumper are the vehicle's own body, or already hit);
    min_points: returns within cluster_m along the path that confirm an obstacle, spread at least min_width_m
    across it (a wall grazed at a shallow angle, the ego drifting to the roadside, covers only the corridor's
    edge: a lane departure, not a forward collision; a pedestrian is about 0.4 m wide); max_kappa: a larger
    |curvature| is clipped to it (a yaw rate measured at walking pace would otherwise give a path that circles
    on the spot); motion_horizon_s, motion_min_m: the motion path's corridor is speed x motion_horizon_s long,
    motion_min_m at least; lane_half_width_m: returns further from the perceived lane centre are roadside
    (``predicted_paths``).
    """

    enabled: bool = True
    front_m: float = 3.7
    half_width_m: float = 1.05
    min_height_m: float = 0.3
    max_height_m: float = 2.6
    max_range_m: float = 40.0
    min_points: int = 3
    cluster_m: float = 1.0
    min_width_m: float = 0.3
    max_kappa: float = 0.2
    motion_horizon_s: float = 2.0
    motion_min_m: float = 8.0
    lane_half_width_m: float = 1.6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "enabled":
                if not isinstance(value, bool):
                    raise ConfigError("corridor.enabled", f"must be true or false, got {value!r}")
                continue
            if f.name == "min_points":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError("corridor.min_points", f"must be an integer >= 1, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"corridor.{f.name}", f"must be a finite number, got {value!r}")
            if f.name not in ("front_m", "min_height_m", "min_width_m") and value <= 0:
                raise ConfigError(f"corridor.{f.name}", f"must be > 0, got {value!r}")
        for name in ("front_m", "min_width_m", "min_height_m"):
            if getattr(self, name) < 0:
                raise ConfigError(f"corridor.{name}", f"must be >= 0, got {getattr(self, name)!r}")
        if self.min_height_m >= self.max_height_m:
            raise ConfigError("corridor.min_height_m", f"{self.min_height_m:g} m is not below corridor.max_height_m "
                              f"({self.max_height_m:g} m): no return could count")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "corridor settings") -> CorridorConfig:
        """From ``{field: value}`` (the ``corridor.*`` parameters without the prefix); ConfigError names
        ``source`` and the problem."""
        return settings_from_dict(cls, data, source, "corridor setting")


class PathArc(NamedTuple):
    """One path: an arc of curvature ``kappa`` [1/m, + = left] through the point ``offset_m`` to the left of the
    vehicle-frame origin, leaving it at ``heading`` [rad, + = left of the vehicle's x axis], ``length_m`` long
    beyond the front bumper; its corridor is ``half_width_m`` to either side (None: the config's); ``source``
    names where it came from ("lane": parallel to the perceived lane; "motion": the measured yaw rate;
    "lane_bounds": the perceived lane itself)."""

    kappa: float
    heading: float = 0.0
    length_m: float = math.inf
    source: str = "motion"
    offset_m: float = 0.0
    half_width_m: float | None = None


class CorridorObstacle(NamedTuple):
    """One sweep's answer. distance_m: gap along the first path from the front bumper to the nearest confirmed
    return inside every path's corridor (None: nothing); points: returns inside them all; path: the first path;
    range_m: how far beyond the bumper the shortest corridor reached."""

    distance_m: float | None
    points: int
    path: PathArc
    range_m: float


def path_curvature(speed_mps: float | None, yaw_rate: float | None, steering_angle: float | None = None,
                   wheelbase_m: float = 2.7) -> float:
    """The curvature [1/m] of the ego's own motion: yaw rate / speed when both are measured and the speed is
    above a walking pace (as Autoware's AEB predicts its path from the IMU), else the kinematic bicycle's
    tan(steering) / wheelbase from the last commanded steering angle, else 0 (straight)."""
    if (speed_mps is not None and yaw_rate is not None and math.isfinite(speed_mps) and math.isfinite(yaw_rate)
            and abs(speed_mps) >= MIN_CURVATURE_SPEED_MPS):
        return yaw_rate / speed_mps
    if steering_angle is not None and math.isfinite(steering_angle) and wheelbase_m > 0:
        return math.tan(steering_angle) / wheelbase_m
    return 0.0


def predicted_paths(config: CorridorConfig, speed_mps: float, motion_kappa: float,
                    lane: tuple[float, float, float] | None) -> tuple[PathArc, ...]:
    """The paths whose corridors must agree: with a perceived lane (lateral offset [m, + = vehicle left of the
    lane centre], heading error [rad, + = vehicle pointing left of the lane], curvature [1/m]), the path parallel
    to it through the ego, the ego's own motion over ``motion_horizon_s`` of travel, and the lane itself
    (``lane_half_width_m`` either side of its centre); without one, the motion path over the whole range.

    Why both, and only where both agree: either alone braked for nothing in closed loop. The motion path (yaw
    rate / speed) runs straight on into the outer wall while the ego is still turning into a bend; the lane path
    is as good as the perceived curvature, and 0.01 1/m of error puts a wall 1.5 m to the side into a corridor
    17 m ahead. A return inside both is in front of the ego whichever way it is about to go; inside the lane
    too, it is not the roadside (on a mountain hairpin the ego passes a rock wall 0.3 m beyond its mirrors,
    which is no reason for full braking). The cost: entering a bend, an obstacle in the bend is seen only once
    the paths overlap there (about 10 m ahead at a 50 m radius), and an ego that has left its lane is not
    braked for what stands outside it; the perception channel, and the models, cover both."""
    if lane is None or not all(map(math.isfinite, lane)):
        return (PathArc(motion_kappa, 0.0, config.max_range_m, "motion"),)
    speed = abs(speed_mps) if math.isfinite(speed_mps) else 0.0
    motion = max(config.motion_min_m, speed * config.motion_horizon_s)
    lane_offset, heading_error, curvature = lane
    return (PathArc(curvature, -heading_error, config.max_range_m, "lane"),
            PathArc(motion_kappa, 0.0, motion, "motion"),
            PathArc(curvature, -heading_error, config.max_range_m, "lane_bounds", -lane_offset,
                    config.lane_half_width_m))


class LidarCorridor:
    """Finds the nearest confirmed return in the corridors of one or more predicted paths (``nearest``)."""

    def __init__(self, config: CorridorConfig | None = None) -> None:
        self.config = config or CorridorConfig()

    def nearest(self, points: np.ndarray, paths: PathArc | tuple[PathArc, ...] | list[PathArc]) -> CorridorObstacle:
        """(N, 3+) float points [x, y, z, ...] in the vehicle frame (non-finite rows ignored) and the predicted
        paths → the nearest obstacle in the corridor they agree on: a return counts only inside every path's
        corridor, and its gap is measured along the first path."""
        cfg = self.config
        arcs = [paths] if isinstance(paths, PathArc) else list(paths)
        if not arcs:
            raise ValueError("at least one path is needed")
        arcs = [self._clean(p) for p in arcs]
        ends = [self._end(p) for p in arcs]
        near = min(ends)
        reach = max(0.0, near - cfg.front_m)
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] < 3:
            return CorridorObstacle(None, 0, arcs[0], reach)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        height = z - BEV.z_ground
        with np.errstate(invalid="ignore"):
            # a cheap box first: most of a sweep (the ground above all) leaves here
            keep = (height >= cfg.min_height_m) & (height <= cfg.max_height_m) & (x > -cfg.half_width_m) \
                & (x <= near + cfg.half_width_m) & (np.abs(y) <= near + cfg.half_width_m)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return CorridorObstacle(None, 0, arcs[0], reach)
        px, py = x[idx].astype(np.float64), y[idx].astype(np.float64)
        inside, s, lateral = self._inside(px, py, arcs[0], ends[0])
        for path, end in zip(arcs[1:], ends[1:], strict=True):
            inside &= self._inside(px, py, path, end)[0]
        order = np.argsort(s[inside])
        gaps = s[inside][order] - cfg.front_m
        return CorridorObstacle(self._confirmed(gaps, lateral[inside][order]), int(gaps.size), arcs[0], reach)

    def _clean(self, path: PathArc) -> PathArc:
        k = float(path.kappa) if math.isfinite(path.kappa) else 0.0
        k = max(-self.config.max_kappa, min(self.config.max_kappa, k))
        heading = float(path.heading) if math.isfinite(path.heading) else 0.0
        heading = max(-0.5 * math.pi, min(0.5 * math.pi, heading))
        length = float(path.length_m) if not math.isnan(path.length_m) else 0.0
        offset = float(path.offset_m) if math.isfinite(path.offset_m) else 0.0
        half = self.config.half_width_m if path.half_width_m is None or not math.isfinite(path.half_width_m) \
            else max(0.0, float(path.half_width_m))
        return PathArc(k, heading, max(0.0, min(length, self.config.max_range_m)), path.source, offset, half)

    def _end(self, path: PathArc) -> float:
        """How far along the path from the origin its corridor reaches."""
        end = self.config.front_m + path.length_m
        if abs(path.kappa) >= STRAIGHT_KAPPA:
            end = min(end, 0.5 * math.pi / abs(path.kappa))
        return end

    def _inside(self, px: np.ndarray, py: np.ndarray, path: PathArc, end: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside the path's corridor, station along the path from the origin, lateral from the path [m, + =
        left]) of each return."""
        cfg = self.config
        if path.heading:
            # into the path's own frame: its start direction becomes x
            c, s_ = math.cos(path.heading), math.sin(path.heading)
            px, py = px * c + py * s_, py * c - px * s_
        if path.offset_m:
            py = py - path.offset_m
        k = path.kappa
        if abs(k) < STRAIGHT_KAPPA:
            s, lateral = px, py
        else:
            radius = 1.0 / k  # the turn's centre is at (0, radius)
            sign = 1.0 if k > 0 else -1.0
            lateral = sign * (abs(radius) - np.hypot(px, py - radius))  # + = left of the path, as y
            s = np.arctan2(px, sign * (radius - py)) * abs(radius)
        return (np.abs(lateral) <= path.half_width_m) & (s >= cfg.front_m) & (s <= end), s, lateral

    def _confirmed(self, gaps: np.ndarray, lateral: np.ndarray) -> float | None:
        """The nearest gap (sorted) that ``min_points`` returns within ``cluster_m`` confirm, spread at least
        ``min_width_m`` across the path."""
        cfg = self.config
        n, m = int(gaps.size), cfg.min_points - 1
        if n <= m:
            return None
        dense = np.flatnonzero(gaps[m:] - gaps[: n - m] <= cfg.cluster_m)
        if dense.size == 0:
            return None
        stops = np.searchsorted(gaps, gaps[dense] + cfg.cluster_m, side="right")
        for i, j in zip(dense[:MAX_CANDIDATES].tolist(), stops[:MAX_CANDIDATES].tolist(), strict=True):
            window = lateral[i:j]
            if float(window.max() - window.min()) >= cfg.min_width_m:
                return float(gaps[i])
        return None
