"""The emergency brake's lidar channel: the path corridor geometry (core.lidar_corridor) and how the frame
pipeline tracks it beside the perceived obstacle distance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionadapt_ros.core.collision_risk import RiskLevel
from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.lidar_corridor import (
    CorridorConfig,
    LidarCorridor,
    PathArc,
    path_curvature,
    predicted_paths,
)

GROUND = BEV.z_ground
FRONT = CorridorConfig().front_m


def car_rear(x_rear: float, y_centre: float = 0.0, width: float = 1.8, height: float = 1.4) -> np.ndarray:
    """Returns of a car's rear face (and a little of its sides) whose rear is at x_rear in the vehicle frame."""
    ys = np.linspace(y_centre - width / 2, y_centre + width / 2, 12)
    zs = GROUND + np.linspace(0.35, height, 5)
    face = np.array([(x_rear, y, z, 0.35) for y in ys for z in zs])
    sides = np.array([(x_rear + d, y_centre + s * width / 2, GROUND + 0.8, 0.35)
                      for d in (0.5, 1.0, 1.5) for s in (-1, 1)])
    return np.concatenate((face, sides)).astype(np.float32)


def ground(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 60, n), rng.uniform(-10, 10, n)
    return np.stack((x, y, GROUND + rng.normal(0, 0.03, n), np.full(n, 0.1)), axis=1).astype(np.float32)


def wall(y: float, x0: float = 0.0, x1: float = 60.0, heading: float = 0.0) -> np.ndarray:
    """A roadside wall along x (tilted by ``heading`` towards the path), 0 to 2.5 m high."""
    xs = np.arange(x0, x1, 0.2)
    zs = GROUND + np.linspace(0.1, 2.5, 8)
    return np.array([(x, y + math.tan(heading) * (x - x0), z, 0.22) for x in xs for z in zs], np.float32)


def straight() -> PathArc:
    return PathArc(0.0)


def test_a_car_ahead_is_found_at_its_gap_from_the_bumper_and_the_ground_is_not() -> None:
    corridor = LidarCorridor()
    found = corridor.nearest(np.concatenate((ground(), car_rear(FRONT + 12.0))), straight())
    assert found.distance_m == pytest.approx(12.0, abs=1e-5)
    assert corridor.nearest(ground(), straight()).distance_m is None


def test_returns_outside_the_height_band_or_the_width_do_not_count() -> None:
    corridor = LidarCorridor()
    overhead = car_rear(FRONT + 10.0)
    overhead[:, 2] += 3.5  # a gantry: above max_height_m
    beside = car_rear(FRONT + 10.0, y_centre=3.5)  # the next lane
    assert corridor.nearest(np.concatenate((overhead, beside)), straight()).distance_m is None
    # a car half in the corridor counts
    assert corridor.nearest(car_rear(FRONT + 10.0, y_centre=1.5), straight()).distance_m == pytest.approx(10.0)


def test_returns_behind_the_bumper_are_the_vehicle_itself() -> None:
    hood = car_rear(FRONT - 2.0)  # its sides reach 0.5 m short of the bumper
    assert LidarCorridor().nearest(hood, straight()).distance_m is None
    assert LidarCorridor(CorridorConfig(front_m=0.0)).nearest(hood, straight()).distance_m == pytest.approx(
        FRONT - 2.0)


def test_stray_returns_and_a_grazed_wall_do_not_confirm_an_obstacle() -> None:
    corridor = LidarCorridor()
    stray = np.array([[FRONT + 5.0, 0.0, GROUND + 1.0, 0.1], [FRONT + 9.0, 0.2, GROUND + 0.8, 0.1]], np.float32)
    assert corridor.nearest(stray, straight()).distance_m is None
    # a wall 0.9 m from the path, entering the corridor's edge at a shallow angle: lane departure, no obstacle
    grazed = wall(-1.2, x0=FRONT + 4.0, heading=0.03)
    assert corridor.nearest(grazed, straight()).points > 0
    assert corridor.nearest(grazed, straight()).distance_m is None
    # the same wall across the path (a dead end) is one
    across = np.array([(FRONT + 7.0, y, GROUND + z, 0.22) for y in np.linspace(-3, 3, 30) for z in (0.5, 1.5)],
                      np.float32)
    assert corridor.nearest(across, straight()).distance_m == pytest.approx(7.0)
    assert LidarCorridor(CorridorConfig(min_width_m=0.0)).nearest(grazed, straight()).distance_m is not None


def test_a_curved_path_follows_the_bend() -> None:
    """A car 20 m along a left bend of 50 m radius is 4 m to the left of the straight line: the bend's corridor
    finds it at its arc length, the straight one does not; a car straight ahead is off the bend's corridor."""
    kappa, s = 1 / 50.0, FRONT + 20.0
    phi = s * kappa
    x, y = math.sin(phi) / kappa, (1 - math.cos(phi)) / kappa
    in_bend = car_rear(x, y_centre=y, width=1.0)
    corridor = LidarCorridor()
    assert corridor.nearest(in_bend, PathArc(kappa)).distance_m == pytest.approx(20.0, abs=0.6)
    assert corridor.nearest(in_bend, straight()).distance_m is None
    assert corridor.nearest(car_rear(FRONT + 20.0), PathArc(kappa)).distance_m is None
    # the mirror image on a right bend
    mirrored = in_bend.copy()
    mirrored[:, 1] *= -1
    assert corridor.nearest(mirrored, PathArc(-kappa)).distance_m == pytest.approx(20.0, abs=0.6)


def test_heading_and_offset_place_the_path() -> None:
    corridor = LidarCorridor()
    # a path leaving 0.1 rad to the left finds a car 2 m to the left 20 m ahead
    target = car_rear(FRONT + 20.0, y_centre=(FRONT + 20.0) * math.tan(0.1), width=1.0)
    assert corridor.nearest(target, PathArc(0.0, heading=0.1)).distance_m == pytest.approx(20.0, abs=0.5)
    assert corridor.nearest(target, straight()).distance_m is None
    # a lane whose centre is 3 m to the left holds a car there, not one straight ahead
    lane = PathArc(0.0, offset_m=3.0, half_width_m=1.6)
    assert corridor.nearest(car_rear(FRONT + 10, y_centre=3.0), lane).distance_m == pytest.approx(10.0)
    assert corridor.nearest(car_rear(FRONT + 10, y_centre=-1.0, width=0.6), lane).distance_m is None


def test_a_return_counts_only_inside_every_path() -> None:
    corridor = LidarCorridor()
    ahead = car_rear(FRONT + 15.0)
    bend = PathArc(1 / 40.0)
    assert corridor.nearest(ahead, [straight()]).distance_m == pytest.approx(15.0)
    assert corridor.nearest(ahead, [straight(), bend]).distance_m is None
    # near enough, both paths hold it
    near = car_rear(FRONT + 3.0)
    assert corridor.nearest(near, [straight(), bend]).distance_m == pytest.approx(3.0)
    # a path's length limits the corridor
    assert corridor.nearest(ahead, [straight(), PathArc(0.0, length_m=10.0)]).distance_m is None


def test_hostile_points_and_paths_do_not_raise() -> None:
    corridor = LidarCorridor()
    bad = car_rear(FRONT + 8.0)
    bad[::3, :3] = np.nan
    bad[1::7, 0] = np.inf
    assert corridor.nearest(bad, straight()).distance_m == pytest.approx(8.0)
    for points in (np.empty((0, 4), np.float32), np.zeros((5, 2), np.float32), np.zeros(7, np.float32)):
        assert corridor.nearest(points, straight()).distance_m is None
    for path in (PathArc(math.nan, math.nan, math.nan), PathArc(math.inf, 5.0, -3.0), PathArc(1e9)):
        found = corridor.nearest(car_rear(FRONT + 2.0), path)
        assert found.distance_m is None or found.distance_m >= 0.0
    with pytest.raises(ValueError):
        corridor.nearest(car_rear(10.0), [])


@pytest.mark.parametrize("settings", [
    {"half_width_m": 0.0}, {"half_width_m": math.nan}, {"min_points": 0}, {"min_points": 2.5},
    {"min_height_m": 3.0, "max_height_m": 2.0}, {"front_m": -1.0}, {"max_range_m": -5.0}, {"enabled": "yes"},
    {"max_kappa": math.inf}, {"motion_horizon_s": 0.0}, {"lane_half_width_m": -1.0}, {"min_width_m": -0.1},
])
def test_bad_corridor_settings_are_refused(settings: dict) -> None:
    with pytest.raises(ConfigError):
        CorridorConfig(**settings)


def test_unknown_corridor_settings_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"corridor\.\* parameters.*width"):
        CorridorConfig.from_dict({"width": 2.0}, "corridor.* parameters")
    with pytest.raises(ConfigError, match=r"corridor\.\* parameters"):
        CorridorConfig.from_dict({"min_points": 0}, "corridor.* parameters")


def test_the_motion_path_comes_from_yaw_rate_then_steering() -> None:
    assert path_curvature(10.0, 0.2) == pytest.approx(0.02)
    # at walking pace the yaw rate says little: the commanded steering angle gives the bicycle's curvature
    assert path_curvature(0.5, 0.2, 0.1, 2.7) == pytest.approx(math.tan(0.1) / 2.7)
    assert path_curvature(10.0, math.nan, None) == 0.0
    assert path_curvature(None, None, math.inf) == 0.0


def test_predicted_paths_without_a_lane_use_the_motion_over_the_whole_range() -> None:
    cfg = CorridorConfig()
    (only,) = predicted_paths(cfg, 12.0, 0.01, None)
    assert only.source == "motion" and only.length_m == cfg.max_range_m
    assert len(predicted_paths(cfg, 12.0, 0.01, (0.0, math.nan, 0.0))) == 1
    lane, motion, bounds = predicted_paths(cfg, 12.0, 0.01, (0.4, 0.05, 0.02))
    assert (lane.kappa, lane.heading, lane.source) == (0.02, -0.05, "lane")
    assert motion.length_m == pytest.approx(12.0 * cfg.motion_horizon_s)
    assert predicted_paths(cfg, 1.0, 0.01, (0.4, 0.05, 0.02))[1].length_m == cfg.motion_min_m
    assert (bounds.offset_m, bounds.half_width_m) == (-0.4, cfg.lane_half_width_m)


def test_a_car_in_the_lane_ahead_passes_all_three_paths_and_the_roadside_does_not() -> None:
    """What the pipeline asks for: on a straight road, a stopped car in the ego lane is found, a wall beyond the
    lane edge is not, even with the ego 1 m off the lane centre towards it."""
    cfg = CorridorConfig()
    corridor = LidarCorridor(cfg)
    paths = predicted_paths(cfg, 10.0, 0.0, (-1.0, 0.0, 0.0))  # ego 1 m right of the lane centre
    assert corridor.nearest(car_rear(FRONT + 14.0, y_centre=1.0), paths).distance_m == pytest.approx(14.0)
    kerb_wall = wall(-1.0, x0=FRONT + 5.0)  # 1 m right of the ego: 2 m right of the lane centre
    assert corridor.nearest(kerb_wall, PathArc(0.0, half_width_m=1.2, source="motion")).points > 0
    assert corridor.nearest(kerb_wall, paths).distance_m is None


def test_risk_level_is_an_int_enum_the_channels_compare_by() -> None:
    from regionadapt_ros.core.collision_risk import CollisionRiskEstimator, more_urgent

    quiet = CollisionRiskEstimator().update(1.0, 60.0, 10.0)
    loud = CollisionRiskEstimator(source="lidar")
    for i in range(12):
        alarm = loud.update(1.0 + 0.1 * i, 12.0 - 1.0 * i, 10.0)
    assert alarm.level is RiskLevel.BRAKE and alarm.source == "lidar" and alarm.trigger.startswith("lidar: ")
    assert more_urgent(quiet, alarm) is alarm
    assert more_urgent(alarm, quiet) is alarm
    assert more_urgent(quiet, None) is quiet
    assert more_urgent(quiet, CollisionRiskEstimator(source="lidar").update(1.0, 60.0, 10.0)) is quiet


# ------------------------------------------------------------------------------------------ in the session
# The perception network's obstacle output says "nothing ahead" throughout (the night failure: the models did
# not see a car standing in the lane); the lidar clouds hold one. The real networks run on ONNX Runtime with
# the obstacle distance and the lane scripted (test/risk_support.py).
HZ = 10.0
T0 = 1_700_000_000.0
STRAIGHT_LANE = (0.0, 0.0, 0.0)


def _session(lane=STRAIGHT_LANE, **config):
    from risk_support import ScriptedObstacleBackend
    from test_emergency_brake import _onnxruntime, loader

    from regionadapt_ros.driving_session import DrivingConfig, DrivingSession

    backend = ScriptedObstacleBackend(lambda frame: 60.0, accel=1.5, inner=_onnxruntime(), lane=lane)
    s = DrivingSession(DrivingConfig(**config), loader, "base", backend=backend)
    s.start()
    return s


def _cloud(types, stamp, gap_m):
    from regionadapt_ros.core import msgconv

    points = ground(600, seed=int(stamp * 10) % 1000)
    if gap_m is not None:
        points = np.concatenate((points, car_rear(FRONT + gap_m)))
    return msgconv.build_pointcloud2(types, points, ("x", "y", "z", "intensity"), stamp, "base_link")


def _drive(s, types, seconds, gap, camera_hz=HZ, lidar_every=1, speed=10.0, lidar_until=None, yaw_rate=0.0):
    """Frames at camera_hz; a sweep on every ``lidar_every``-th frame (until ``lidar_until`` s) with the car at
    ``gap(t)`` m beyond the bumper (None: no car); odometry with ``yaw_rate`` (0: driving straight)."""
    from test_driving_session_support import camera_image

    from regionadapt_ros.core import msgconv

    results = []
    for i in range(int(seconds * camera_hz)):
        t = i / camera_hz
        now = T0 + t
        if i % lidar_every == 0 and (lidar_until is None or t < lidar_until):
            s.on_lidar(_cloud(types, now, gap(t)), now)
        s.on_odometry(msgconv.build_odometry(types, speed, now, yaw_rate=yaw_rate), now)
        results.append(s.on_image(camera_image(types, now, seed=i), now))
    return results


def closing_at(start_m, mps, from_s=0.5):
    return lambda t: None if t < from_s else max(start_m - mps * (t - from_s), 0.3)


def test_the_lidar_channel_brakes_for_a_car_the_perception_output_misses(types):
    s = _session()
    try:
        results = _drive(s, types, 3.0, closing_at(30.0, 10.0))
    finally:
        s.close()
    braking = [r.command.emergency_brake for r in results]
    first = braking.index(True)
    risk = results[first].risk
    assert risk.source == "lidar" and risk.level is RiskLevel.BRAKE
    assert risk.ttc_s <= 1.2 and risk.closing_speed_mps == pytest.approx(10.0, rel=0.1)
    assert results[first].command.reason.startswith("emergency brake: lidar: TTC")
    assert all(r.perception is not None and r.perception.obstacle_distance == 60.0 for r in results)
    assert s.guard.overrides >= 1 and s.guard.episodes[0].reason.startswith("lidar: ")
    # the gap at the first override: braking started with room to stop from 10 m/s at 6 m/s^2 (8.3 m)
    assert 8.3 < 30.0 - 10.0 * (results[first].stamp_s - T0 - 0.5) <= 12.0 + 1.0


@pytest.mark.parametrize(("yaw_rate", "speed", "reason"), [
    (1e6, 10.0, "rad/s, beyond any road vehicle"),
    (30.0, 10.0, "degrees per second?"),
    (2.0, 10.0, "a lateral acceleration of 20.0 m/s²"),
    # 2.5 rad/s at 5 m/s is 12.5 m/s² sideways, but a 2 m radius: this car turns no tighter than 4.9 m (3.3 m
    # with the margin for slip)
    (2.5, 5.0, "a turn of radius 2 m, tighter than the vehicle can steer (>= 3.29 m;"),
    (-1.2, 1.2, "a turn of radius 1 m"),
])
def test_an_impossible_yaw_rate_does_not_bend_the_corridor_away_from_the_car_ahead(types, yaw_rate, speed, reason):
    # A faulty gyro, or a driver publishing degrees per second: as yaw rate / speed the motion path would curl
    # up beside the ego and the car ahead would never be in it. No road vehicle turns that fast (at 10 m/s,
    # 2 rad/s is 2 g sideways), nor tighter than its steering allows: the reading is refused (counted) and the
    # path falls back to the steering.
    s = _session()
    try:
        results = _drive(s, types, 3.0, closing_at(3.0 * speed, speed), speed=speed, yaw_rate=yaw_rate)
        assert s._speed == speed and s._yaw_rate is None  # the speed of the same message is still good
    finally:
        s.close()
    assert any(r.command.emergency_brake for r in results)
    assert s.warnings.count("bad_yaw_rate") == len(results)
    assert reason in s.warnings.last_message("bad_yaw_rate")


def test_switched_off_the_lidar_channel_has_no_say(types):
    from regionadapt_ros.core.lidar_corridor import CorridorConfig

    s = _session(corridor=CorridorConfig(enabled=False))
    try:
        results = _drive(s, types, 3.0, closing_at(30.0, 10.0))
    finally:
        s.close()
    assert not any(r.command.emergency_brake for r in results)
    assert all(r.risk.source == "perception" for r in results) and s.lidar_risk.latest is None


def test_a_sweep_serving_three_camera_frames_is_one_sample(types):
    """30 Hz camera, 10 Hz lidar: the closing speed is the car's, not a third of it (three frames at one
    distance), and the lidar estimate's stamps are the sweeps'."""
    s = _session()
    try:
        results = _drive(s, types, 2.0, closing_at(20.0, 8.0), camera_hz=30.0, lidar_every=3, speed=8.0)
        tracked = s.lidar_risk.latest
        counts = s.lidar_risk.count_snapshot()
    finally:
        s.close()
    assert len(results) == 60 and tracked.state == "tracking"
    assert tracked.closing_speed_mps == pytest.approx(8.0, rel=0.1)
    assert round((tracked.stamp_s - T0) * 10, 6) == pytest.approx(round((tracked.stamp_s - T0) * 10))  # a sweep's
    assert counts.get("duplicate_stamps", 0) == 0


def test_without_sweeps_the_lidar_channel_goes_stale_and_releases(types):
    s = _session()
    try:
        # the car closes in and triggers; then the lidar stops (and the car is gone as far as anyone knows)
        results = _drive(s, types, 4.0, closing_at(20.0, 10.0), lidar_until=1.8)
        counts = s.lidar_risk.count_snapshot()
    finally:
        s.close()
    braking = [r.command.emergency_brake for r in results]
    assert any(braking[:19])
    stale_from = int((1.8 + s.config.risk.max_gap_s) * HZ) + 2
    assert not any(braking[stale_from:]), "a lidar that went silent keeps no brake on"
    assert all(r.risk.source == "perception" for r in results[stale_from:])
    assert counts["track_timeouts"] == 1


def test_a_vehicle_whose_steering_bounds_no_turn_fails_the_session_start():
    # Built around from_dict's check (a right angle at the wheels): refused when the session is made, not as an
    # uncaught error in the first odometry callback.
    from regionadapt_ros.core.control import VehicleLimits

    with pytest.raises(ConfigError, match=r"vehicle\.max_steering_angle: no turn bound"):
        _session(limits=VehicleLimits(max_steering_angle=1.6))


def test_a_tight_but_possible_turn_keeps_its_yaw_rate(types):
    from regionadapt_ros.core import msgconv

    s = _session()
    try:
        # Full lock at 3 m/s (a 4.9 m radius, 0.61 rad/s), and any yaw rate at a walking pace, are readings.
        for speed, rate in ((3.0, 0.61), (3.0, -0.9), (0.5, 1.5)):
            assert s.on_odometry(msgconv.build_odometry(types, speed, T0, yaw_rate=rate), T0)
            assert s._yaw_rate == pytest.approx(rate)
        assert s.warnings.count("bad_yaw_rate") == 0
    finally:
        s.close()


def test_odometry_yaw_rate_shapes_the_motion_path_and_a_bad_one_is_not_used(types):
    from regionadapt_ros.core import msgconv

    s = _session()
    try:
        odom = msgconv.build_odometry(types, 10.0, T0, yaw_rate=0.2)
        assert s.on_odometry(odom, T0) and s._yaw_rate == pytest.approx(0.2)
        odom.twist.twist.angular.z = math.nan
        assert s.on_odometry(odom, T0 + 0.1) and s._yaw_rate is None and s._speed == 10.0
        assert msgconv.odometry_yaw_rate(object()) is None
    finally:
        s.close()


def test_the_lidar_channels_counts_are_in_the_diagnostics(types):
    s = _session()
    try:
        results = _drive(s, types, 2.0, closing_at(18.0, 5.0), lidar_until=0.8)  # the lidar goes silent
        stats = s.stats(results[-1].stamp_s)
        values = s.diagnostics(results[-1].stamp_s)[3].values
    finally:
        s.close()
    assert stats.risk_counts["lidar.track_timeouts"] == 1
    assert values["risk.lidar.track_timeouts"] == "1"


def test_the_corridor_node_parameters_reach_the_session_config():
    from regionadapt_ros.nodes import _params

    values = {spec.name: spec.default for spec in _params.DRIVING_PARAMETERS}
    assert _params.driving_config(values).corridor == CorridorConfig()
    values.update({"corridor.enabled": False, "corridor.front_m": 4.2, "corridor.min_points": 5})
    config = _params.driving_config(values)
    assert (config.corridor.enabled, config.corridor.front_m, config.corridor.min_points) == (False, 4.2, 5)
    values.update({"corridor.min_height_m": 2.0, "corridor.max_height_m": 1.0})
    with pytest.raises(ConfigError, match=r"corridor\.\* parameters: .*min_height_m"):
        _params.driving_config(values)
    declared = {spec.name for spec in _params.DRIVING_PARAMETERS}
    assert {f"corridor.{name}" for name in CorridorConfig.__dataclass_fields__} <= declared
    # the shipped vehicle.yaml sets every one of them, to the defaults
    import yaml

    from regionadapt_ros.paths import config_dir

    doc = yaml.safe_load((config_dir() / "vehicle.yaml").read_text())
    shipped = doc["/**/driving_node"]["ros__parameters"]["corridor"]
    assert CorridorConfig(**shipped) == CorridorConfig()
