"""DrivingSession: the driving node's per-message logic, fed real ROS 2 message classes (rosbags Humble type
store) and real region bundles of the networks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_driving_session_support import camera_image, lidar_cloud, write_region_bundles

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.control import VehicleCommand
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.driving_session import (
    COMMAND_MSG_TYPES,
    DiagnosticLevel,
    DrivingConfig,
    DrivingSession,
)
from regionadapt_ros.inference.backend import InferenceBackend, ModelRunner
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import LoadedWeights

T0 = 1_700_000_000.0  # an epoch-sized ROS time, as on a vehicle


@pytest.fixture(scope="module")
def regions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_region_bundles(tmp_path_factory.mktemp("regions"))


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    # One backend for the module: the exported ONNX graphs are reused by every session.
    return OnnxRuntimeBackend()


def make_session(regions_file: Path, backend: InferenceBackend, **config) -> DrivingSession:
    session = DrivingSession.from_regions_file(DrivingConfig(**config), str(regions_file), backend=backend)
    session.start()
    return session


@pytest.fixture
def session(regions_file, backend):
    s = make_session(regions_file, backend)
    yield s
    s.close()


def drive(session, types, t_start: float, n: int, dt: float = 0.05, lidar_every: int = 2, speed: float = 8.0):
    """n camera frames at 1/dt Hz with a sweep every ``lidar_every`` frames; returns the results."""
    results = []
    for i in range(n):
        now = t_start + i * dt
        if lidar_every and i % lidar_every == 0:
            assert session.on_lidar(lidar_cloud(types, now, seed=i), now)
        session.on_speed(speed, now)
        results.append(session.on_image(camera_image(types, now, seed=i), now + 0.01))
    return results


def test_every_frame_gets_a_command_stamped_with_its_image_and_uses_a_fresh_sweep(session, types):
    results = drive(session, types, T0, 8)
    assert all(r is not None for r in results)
    for i, r in enumerate(results):
        assert r.stamp_s == pytest.approx(T0 + i * 0.05)
        assert r.command.stamp_s == r.stamp_s and not r.command.stop
        assert r.lidar_used and r.degraded is None
        assert r.region == "base" and r.bundle_id.startswith("base@v1:")
        msg = session.command_message(types, r)
        assert msgconv.stamp_to_s(msg.header) == pytest.approx(r.stamp_s, abs=1e-6)
    stats = session.stats(T0 + 0.4)
    assert stats.frames == 8 and stats.dropped_frames == 0 and stats.lidar_frames == 8
    assert stats.frame_rate_hz == pytest.approx(20.0, rel=0.01)
    assert {"convert", "perception", "decision", "total", "convert_lidar"} <= set(stats.latency_ms)
    assert stats.latency_ms["total"]["count"] == 8  # each frame recorded once, by the session
    assert session.pipeline.timings is None


def test_a_sweep_older_than_the_limit_is_not_used_and_caps_the_speed(session, types):
    session.on_lidar(lidar_cloud(types, T0), T0)
    session.on_speed(12.0, T0)
    result = session.on_image(camera_image(types, T0 + 0.5), T0 + 0.5)
    assert result is not None and not result.lidar_used and result.degraded
    assert result.command.target_speed <= session.config.degraded_max_speed + 1e-9
    sensors = {d.name.split(": ")[1]: d for d in session.diagnostics(T0 + 0.5)}["sensors"]
    assert sensors.level == DiagnosticLevel.WARN and "lidar" in sensors.message


def test_the_newest_sweep_within_the_window_is_the_one_used(regions_file, backend, types):
    """Two sweeps within lidar_max_age_s of the image: the frame must equal one fed only the newer sweep."""
    stamp = T0 + 1.0
    old, new = lidar_cloud(types, stamp - 0.1, n_points=50, seed=1), lidar_cloud(types, stamp - 0.02, seed=2)
    both, only_new, only_old = (make_session(regions_file, backend) for _ in range(3))
    try:
        both.on_lidar(old, stamp)
        both.on_lidar(new, stamp)
        only_new.on_lidar(new, stamp)
        only_old.on_lidar(old, stamp)
        image = camera_image(types, stamp)
        r_both, r_new, r_old = (s.on_image(image, stamp) for s in (both, only_new, only_old))
        assert r_both.perception == r_new.perception
        assert r_both.perception != r_old.perception  # the two sweeps do lead to different outputs
    finally:
        for s in (both, only_new, only_old):
            s.close()


def test_a_sweep_is_gridded_once_and_serves_every_frame_matched_with_it(regions_file, backend, types, monkeypatch):
    """A 30 Hz camera over a 10 Hz lidar: the BEV grid of a sweep is computed when it arrives, not again for each
    of the three frames it serves, and those frames equal frames whose grid was computed from the points."""
    import regionadapt_ros.driving_session.session as session_module
    from regionadapt_ros.core.preprocess import bev_grid
    from regionadapt_ros.pipeline import FrameInputs

    grids: list[int] = []

    def counted(points, *args, **kwargs):
        grids.append(len(points))
        return bev_grid(points, *args, **kwargs)

    monkeypatch.setattr(session_module, "bev_grid", counted)
    cached, reference = make_session(regions_file, backend), make_session(regions_file, backend)
    try:
        for sweep in range(2):
            t = T0 + 0.1 * sweep
            cloud = lidar_cloud(types, t, seed=sweep)
            cached.on_lidar(cloud, t)
            points = msgconv.pointcloud2_to_array(cloud, ("x", "y", "z", "intensity"))
            for k in range(3):
                now = t + k / 30.0
                image = camera_image(types, now, seed=k)
                got = cached.on_image(image, now)
                rgb = msgconv.image_to_rgb8(image)
                want = reference.pipeline.process(FrameInputs(msgconv.stamp_to_s(image.header), rgb, points, 0.0,
                                                              False))
                assert got.lidar_used and got.perception == want.perception
                assert got.command == want.command
        assert len(grids) == 2  # one grid per sweep, none per frame
        assert "preprocess_lidar" in cached.stats(T0 + 0.3).latency_ms
    finally:
        cached.close()
        reference.close()


def test_a_bad_image_is_counted_and_the_session_keeps_going(session, types):
    good = camera_image(types, T0)
    wrong_encoding = type(good)(header=good.header, height=good.height, width=good.width, encoding="bogus8",
                                is_bigendian=0, step=good.step, data=good.data)
    short_step = type(good)(header=good.header, height=good.height, width=good.width, encoding="rgb8",
                            is_bigendian=0, step=good.width * 2, data=good.data)
    assert session.on_image(wrong_encoding, T0) is None
    assert "encoding" in session.warnings.last_message("bad_image")
    assert session.on_image(short_step, T0 + 0.01) is None
    assert "step" in session.warnings.last_message("bad_image")
    assert session.warnings.count("bad_image") == 2
    assert session.on_image(camera_image(types, T0 + 0.05), T0 + 0.05) is not None
    pipeline = session.diagnostics(T0 + 0.05)[0]
    assert pipeline.level == DiagnosticLevel.WARN and "dropped 2" in pipeline.message
    assert pipeline.values["dropped_frames"] == "2" and pipeline.values["frames"] == "1"
    # The warning ages out; the count stays.
    later = session.diagnostics(T0 + 0.05 + session.config.error_hold_s + 1.0)[0]
    assert later.level == DiagnosticLevel.OK
    assert later.values["dropped_frames"] == "2"


def test_a_cloud_without_x_is_refused_and_the_frame_runs_camera_only(session, types):
    cloud = msgconv.build_pointcloud2(types, np.ones((10, 3), np.float32), ("a", "y", "z"), T0, "lidar")
    assert session.on_lidar(cloud, T0) is False
    assert session.warnings.count("bad_pointcloud") == 1
    assert "fields" in session.warnings.last_message("bad_pointcloud")
    result = session.on_image(camera_image(types, T0), T0)
    assert result is not None and not result.lidar_used


def test_a_sweep_of_only_non_finite_points_is_refused_and_the_frame_runs_degraded(session, types):
    # A blinded lidar publishing NaN everywhere gave an empty grid: "the road is clear" at full speed.
    session.on_speed(12.0, T0)
    blind = msgconv.build_pointcloud2(types, np.full((450, 4), np.nan, np.float32), ("x", "y", "z", "intensity"),
                                      T0, "lidar")
    assert session.on_lidar(blind, T0) is False
    assert "none of its 450 points has a finite x/y/z" in session.warnings.last_message("bad_pointcloud")
    result = session.on_image(camera_image(types, T0 + 0.01), T0 + 0.01)
    assert result is not None and not result.lidar_used and result.degraded
    assert result.command.target_speed <= session.config.degraded_max_speed + 1e-9
    # an empty cloud (no points at all) is a sweep that saw nothing, and is used
    empty = msgconv.build_pointcloud2(types, np.zeros((0, 4), np.float32), ("x", "y", "z", "intensity"),
                                      T0 + 0.02, "lidar")
    assert session.on_lidar(empty, T0 + 0.02) is True
    # one finite point among NaNs keeps the sweep
    partly = np.full((10, 4), np.nan, np.float32)
    partly[3] = (10.0, 0.0, -1.6, 0.5)
    cloud = msgconv.build_pointcloud2(types, partly, ("x", "y", "z", "intensity"), T0 + 0.03, "lidar")
    assert session.on_lidar(cloud, T0 + 0.03) is True
    result = session.on_image(camera_image(types, T0 + 0.04), T0 + 0.04)
    assert result is not None and result.lidar_used


def test_non_finite_speed_and_odometry_are_refused_and_counted(session, types):
    assert session.on_speed(msgconv.build_float32(types, math.nan), T0) is False
    assert "std_msgs/Float32.data: is nan" in session.warnings.last_message("bad_speed")
    assert session.on_speed("fast", T0) is False
    assert "'fast'" in session.warnings.last_message("bad_speed")
    assert session.warnings.count("bad_speed") == 2
    odom = msgconv.build_odometry(types, math.inf, T0)
    assert session.on_odometry(odom, T0) is False
    assert "twist.twist.linear.x" in session.warnings.last_message("bad_odometry")
    assert session.on_odometry(msgconv.build_odometry(types, 7.5, T0), T0) is True
    assert session.diagnostics(T0)[1].values["speed_mps"] == "7.50"


def test_a_vehicle_twist_gives_the_speed_and_the_yaw_rate(session, types):
    assert session.on_twist(msgconv.build_twist_stamped(types, -2.5, 0.3, T0), T0) is True  # reversing
    assert session.diagnostics(T0)[1].values["speed_mps"] == "-2.50"
    assert session._yaw_rate == pytest.approx(0.3)
    for bad in (math.nan, 1e300):
        assert session.on_twist(msgconv.build_twist_stamped(types, bad, 0.0, T0), T0) is False
    assert session.warnings.count("bad_twist") == 2
    assert "geometry_msgs/TwistStamped.twist.linear.x" in session.warnings.last_message("bad_twist")
    assert session.diagnostics(T0)[1].values["speed_mps"] == "-2.50"  # the last good reading stands
    # A non-finite yaw rate leaves the speed good and the path without a yaw rate (it falls back).
    assert session.on_twist(msgconv.build_twist_stamped(types, 4.0, math.inf, T0), T0) is True
    assert session._yaw_rate is None


def test_a_twist_over_the_ground_is_not_taken_for_the_forward_speed(session, types):
    # A GNSS or localiser velocity in map/ENU: its x is the speed eastwards, 0 m/s when driving north at 20.
    assert session.on_twist(msgconv.build_twist_stamped(types, 6.0, 0.0, T0), T0) is True
    world = ("map", "/odom", "ENU", "ego_vehicle/odom", "world/", "map_ned", "odom_combined", "utm_10n",
             "ecef", "map\x00", "ego:odom", "gps", "gnss_link")
    for frame in world:
        ground = msgconv.build_twist_stamped(types, 0.0, 0.0, T0, frame_id=frame)
        assert session.on_twist(ground, T0) is False, frame
    assert session.warnings.count("bad_twist") == len(world)
    assert "'gnss_link', a world-fixed frame" in session.warnings.last_message("bad_twist")
    # Whatever its frame is called: 20 m/s sideways beside 0 forward is no vehicle-frame twist (driving north).
    north = msgconv.build_twist_stamped(types, 0.0, 0.0, T0, frame_id="base_link")
    north.twist.linear.y = 20.0
    assert session.on_twist(north, T0) is False
    assert "twist.linear.y: is 20 m/s beside twist.linear.x = 0" in session.warnings.last_message("bad_twist")
    unmeasured = msgconv.build_twist_stamped(types, 6.0, 0.0, T0)
    unmeasured.twist.linear.y = math.nan  # a driver marking the lateral speed unmeasured: x stands alone
    assert session.on_twist(unmeasured, T0) is True
    slipping = msgconv.build_twist_stamped(types, 6.0, 0.0, T0)
    slipping.twist.linear.y = 0.8  # a sideslip of 7.6 degrees: a reading
    assert session.on_twist(slipping, T0) is True
    bad_twists = session.warnings.count("bad_twist")
    odom = msgconv.build_odometry(types, 0.0, T0, child_frame_id="odom")  # twist in the world frame too
    assert session.on_odometry(odom, T0) is False
    assert "child_frame_id" in session.warnings.last_message("bad_odometry")
    assert session.diagnostics(T0)[1].values["speed_mps"] == "6.00"  # the vehicle-frame reading stands
    # Blank and vehicle frames are the vehicle's, as drivers that leave the frame empty mean.
    for frame in ("", "base_link", "base_footprint", "odometer", "ego_vehicle", "mapper_link"):
        assert session.on_twist(msgconv.build_twist_stamped(types, 7.0, 0.0, T0, frame_id=frame), T0) is True
    assert session.warnings.count("bad_twist") == bad_twists


def test_an_implausible_speed_is_refused_before_it_reaches_the_model(session, types):
    # 1e300 m/s is finite as a float64 but inf as the decision model's float32 input: every output NaN.
    assert session.on_odometry(msgconv.build_odometry(types, 7.5, T0), T0) is True
    for speed in (1e300, -4e38, msgconv.MAX_PLAUSIBLE_SPEED_MPS + 1.0):
        assert session.on_odometry(msgconv.build_odometry(types, speed, T0), T0) is False
    assert session.warnings.count("bad_odometry") == 3
    assert "beyond any road vehicle" in session.warnings.last_message("bad_odometry")
    assert session.on_speed(1e308, T0) is False and session.on_speed(msgconv.build_float32(types, 3e38), T0) is False
    assert session.warnings.count("bad_speed") == 2
    assert session.diagnostics(T0)[1].values["speed_mps"] == "7.50"  # the last good reading stands
    assert session.on_speed(-msgconv.MAX_PLAUSIBLE_SPEED_MPS, T0) is True  # the bound itself is allowed
    result = session.on_image(camera_image(types, T0 + 0.01), T0 + 0.01)
    assert result is not None and math.isfinite(result.command.steering_angle)


def test_a_stale_camera_gives_stop_commands_at_every_tick_until_frames_return(session, types):
    drive(session, types, T0, 2)
    last_frame = T0 + 0.05 + 0.01
    ticks = [last_frame + 0.05 * k for k in range(1, 21)]  # 20 Hz for one second
    commands = [session.tick(t) for t in ticks]
    timeout = session.config.camera_timeout_s
    for t, command in zip(ticks, commands, strict=True):
        if t - last_frame <= timeout:
            assert command is None
        else:
            assert command is not None and command.stop and command.stamp_s == t
            assert command.accel == -session.config.limits.stop_decel and "camera" in command.reason
    assert sum(c is not None for c in commands) == session.stale_stops > 0
    sensors = session.diagnostics(ticks[-1])[1]
    assert sensors.level == DiagnosticLevel.STALE and "stop" in sensors.message
    now = ticks[-1] + 0.05
    assert session.on_image(camera_image(types, now), now) is not None
    assert session.tick(now + 0.05) is None


def test_time_going_back_resets_history_without_a_spurious_stop(session, types):
    drive(session, types, T0, 4)
    looped = T0 - 60.0  # the bag started over
    assert session.tick(looped) is None
    assert session.clock_jumps == 1
    result = session.on_image(camera_image(types, looped), looped)
    assert result is not None and not result.command.stop
    # Lidar of the old time line is gone; a fresh sweep is used again.
    assert not result.lidar_used
    session.on_lidar(lidar_cloud(types, looped + 0.05), looped + 0.05)
    assert session.on_image(camera_image(types, looped + 0.1), looped + 0.1).lidar_used
    # A real outage after the jump is still caught.
    assert session.tick(looped + 0.1 + session.config.camera_timeout_s + 0.05).stop
    # A forward leap beyond clock_jump_s (a seek) is a jump too, again without a stop.
    leap = looped + 0.2 + session.config.clock_jump_s + 1.0
    assert session.tick(leap) is None and session.clock_jumps == 2


def test_image_stamps_going_back_reset_the_control_history(session, types):
    drive(session, types, T0, 3)
    jumps = session.clock_jumps
    now = T0 + 0.2
    assert session.on_image(camera_image(types, T0 - 30.0), now) is not None
    assert session.clock_jumps == jumps + 1


def test_active_region_switches_between_frames_and_unknown_regions_are_refused(session, types):
    assert session.on_active_region(msgconv.build_string(types, "highway"), T0)
    during = drive(session, types, T0, 2, lidar_every=0)
    assert all(r is not None and r.region in ("base", "highway") for r in during)  # never a gap
    assert session.swap.wait_idle(60)
    after = session.on_image(camera_image(types, T0 + 1.0), T0 + 1.0)
    assert after.region == "highway" and after.bundle_id.startswith("highway@v1:")
    assert session.swap.status()["swaps"] == 1
    model = session.diagnostics(T0 + 1.0)[2]
    assert model.values["region"] == "highway" and model.values["bundle_version"] == "1"
    assert len(model.values["bundle_sha256"]) == 64
    assert session.on_active_region("moon", T0 + 1.1) is False
    assert "moon" in session.warnings.last_message("unknown_region")
    assert session.on_active_region("  ", T0 + 1.1) is False
    assert session.warnings.count("bad_region") == 1
    assert session.region == "highway"


def test_a_next_region_hint_stages_the_bundle_so_the_switch_is_immediate(session, types):
    assert session.on_next_region("highway", T0)
    assert session.swap.wait_idle(60)
    assert session.swap.staged is not None and session.swap.staged.region == "highway"
    assert session.on_image(camera_image(types, T0), T0).region == "base"  # a hint does not switch
    session.on_active_region("highway", T0 + 0.05)
    assert session.on_image(camera_image(types, T0 + 0.1), T0 + 0.1).region == "highway"
    assert session.swap.history[-1].prefetched


def test_the_active_region_before_start_becomes_the_initial_region(regions_file, backend, types):
    s = DrivingSession.from_regions_file(DrivingConfig(), str(regions_file), backend=backend)
    assert s.on_active_region("highway", T0)
    assert s.on_image(camera_image(types, T0), T0) is None  # not started: dropped and counted
    assert s.warnings.count("not_started") == 1 and s.tick(T0) is None
    s.start()
    try:
        assert s.region == "highway"
    finally:
        s.close()
    assert not s.started and s.serving is None


@pytest.mark.parametrize("command_type", ["ackermann", "carla", "twist"])
def test_command_messages_of_each_type(command_type, types):
    s = DrivingSession(DrivingConfig(command_type=command_type), lambda region: None, "base")
    command = VehicleCommand(T0 + 0.25, steering_angle=0.1, accel=1.5, target_speed=10.0)
    msg = s.command_message(types, command)
    assert type(msg).__msgtype__ == COMMAND_MSG_TYPES[command_type]
    limits = s.config.limits
    if command_type == "ackermann":
        assert msg.drive.steering_angle == pytest.approx(0.1) and msg.drive.speed == pytest.approx(10.0)
        assert msg.drive.acceleration == pytest.approx(1.5)
        # The rate fields carry the configured limits (0 would mean "as fast as possible").
        assert msg.drive.jerk == pytest.approx(limits.max_jerk)
        assert msg.drive.steering_angle_velocity == pytest.approx(limits.max_steering_rate)
        assert msgconv.stamp_to_s(msg.header) == pytest.approx(T0 + 0.25, abs=1e-6)
    elif command_type == "carla":
        throttle, steer, brake = command.carla(limits)
        assert (msg.throttle, msg.steer, msg.brake) == pytest.approx((throttle, steer, brake))
        assert msg.steer < 0  # left in ROS is negative steer in CARLA
        assert msgconv.stamp_to_s(msg.header) == pytest.approx(T0 + 0.25, abs=1e-6)
    else:
        assert msg.linear.x == pytest.approx(10.0)
        assert msg.angular.z == pytest.approx(10.0 * math.tan(0.1) / limits.wheelbase)
    stop = VehicleCommand(T0, 0.0, -3.0, 0.0, stop=True, reason="stale camera")
    stop_msg = s.command_message(types, stop)
    if command_type == "carla":
        assert stop_msg.brake >= 0.5 and stop_msg.throttle == 0.0


def test_perception_results_on_standard_types(session, types):
    result = session.on_image(camera_image(types, T0), T0)
    messages = session.perception_messages(types, result)
    assert type(messages["perception/traffic_light"]).__msgtype__ == "std_msgs/msg/String"
    assert messages["perception/traffic_light"].data == result.perception.tl_state
    lane = messages["perception/lane"]
    assert lane.vector.x == pytest.approx(result.perception.lane_offset)
    assert lane.vector.z == pytest.approx(result.perception.curvature)
    assert msgconv.stamp_to_s(lane.header) == pytest.approx(T0, abs=1e-6)
    assert messages["perception/obstacle_distance"].data == pytest.approx(result.perception.obstacle_distance,
                                                                          rel=1e-6)


def test_compressed_frames_are_accepted(session, types):
    rgb = np.full((96, 160, 3), 100, np.uint8)
    msg = msgconv.build_compressed_image(types, rgb, "jpeg", T0)
    assert session.on_image(msg, T0, compressed=True) is not None
    raw_as_compressed = camera_image(types, T0 + 0.05)
    assert session.on_image(raw_as_compressed, T0 + 0.05, compressed=True) is None
    assert session.warnings.count("bad_compressed_image") == 1


class NanPerception(InferenceBackend):
    """Perception turns non-finite after warm-up, as a numerically broken engine would."""

    name = "nan-after-warmup"

    def __init__(self) -> None:
        self.inner = OnnxRuntimeBackend()
        self.armed = False

    def prepare(self, model_name, weights):
        inner = self.inner.prepare(model_name, weights)
        backend = self

        class Runner(ModelRunner):
            def __init__(self) -> None:
                self.model_name, self.input_names, self.output_names = (
                    inner.model_name, inner.input_names, inner.output_names)

            def run(self, inputs):
                out = inner.run(inputs)
                if backend.armed and model_name == "perception":
                    out = {k: v * np.nan for k, v in out.items()}
                return out

        return Runner()


def test_non_finite_model_output_is_a_stop_and_an_error_diagnostic(types):
    from conftest import perturbed_weights

    def loader(region):
        return LoadedWeights(region, f"{region}@v1", {m: perturbed_weights(m, 3) for m in ("perception", "decision")})

    backend = NanPerception()
    s = DrivingSession(DrivingConfig(), loader, "base", backend=backend)
    s.start()
    try:
        backend.armed = True
        result = s.on_image(camera_image(types, T0), T0)
        assert result.command.stop and "non-finite" in result.command.reason
        assert all(math.isfinite(v) for v in (result.command.steering_angle, result.command.accel))
        # nothing of the perception outputs is published; the risk is, without an estimate
        messages = s.perception_messages(types, result)
        assert set(messages) == {"perception/risk"}
        risk = messages["perception/risk"].vector
        assert math.isnan(risk.x) and math.isnan(risk.y) and risk.z == 0.0
        msg = s.command_message(types, result)
        # A stop: the deceleration's magnitude, and a target speed below the current one.
        assert msg.drive.acceleration == pytest.approx(s.config.limits.stop_decel)
        assert msg.drive.speed <= 0.0 + 1e-9
        pipeline = s.diagnostics(T0)[0]
        assert pipeline.level == DiagnosticLevel.ERROR and "non-finite" in pipeline.message
        array = s.diagnostic_array(types, T0)
        assert array.status[0].level == 2 and msgconv.stamp_to_s(array.header) == pytest.approx(T0, abs=1e-6)
    finally:
        s.close()


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("command_type", "tank", "is not one of ackermann, carla, twist"),
    ("speed_source", "gps", "is not one of odom, speed, twist"),
    ("backend", "cuda", "is not one of"),
    ("lidar_max_age_s", 0.0, "must be a positive number"),
    ("camera_timeout_s", math.nan, "must be a positive number"),
    ("degraded_max_speed", -1.0, "must be a number >= 0"),
])
def test_bad_driving_config_names_the_field(field, value, problem):
    with pytest.raises(ConfigError) as info:
        DrivingConfig(**{field: value})
    assert info.value.path == field and problem in str(info.value)


def test_an_unknown_initial_region_and_a_missing_regions_file_fail_at_start(regions_file, tmp_path):
    with pytest.raises(ConfigError, match=r"initial_region: unknown region 'moon'"):
        DrivingSession.from_regions_file(DrivingConfig(), str(regions_file), initial_region="moon")
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as info:
        DrivingSession.from_regions_file(DrivingConfig(), str(missing))
    assert str(missing) in str(info.value) and "cannot read" in str(info.value)


def test_a_frame_slightly_out_of_order_is_dropped_and_the_history_kept(session, types):
    # T0, +33 ms, +66 ms, then one stamped 1 ms before the last (a second publisher, a relay reordering)
    for k, stamp in enumerate((T0, T0 + 0.033)):
        session.on_lidar(lidar_cloud(types, stamp), stamp)
        assert session.on_image(camera_image(types, stamp), stamp + 0.001 * k).lidar_used
    last = session.on_image(camera_image(types, T0 + 0.066), T0 + 0.07)
    assert last is not None and last.lidar_used
    jumps, dropped = session.clock_jumps, session.dropped_frames()
    assert session.on_image(camera_image(types, T0 + 0.065), T0 + 0.08) is None
    assert session.warnings.count("out_of_order_frame") == 1
    assert f"{T0 + 0.065:.3f}" in session.warnings.last_message("out_of_order_frame")
    assert session.clock_jumps == jumps and session.dropped_frames() == dropped + 1
    after = session.on_image(camera_image(types, T0 + 0.099), T0 + 0.1)
    assert after is not None and after.lidar_used  # the lidar buffer was kept
    assert session.last_lidar_gap is None


def test_the_lidar_intensity_scale_is_kept_for_the_session_and_reported(regions_file, backend, types):
    decided, fixed = make_session(regions_file, backend), make_session(regions_file, backend,
                                                                       lidar_intensity_max=255.0)
    try:
        for session in (decided, fixed):
            session.on_lidar(lidar_cloud(types, T0), T0)  # intensities 0..1
        sensors = {d.name.split(": ")[1]: d for d in decided.diagnostics(T0)}["sensors"]
        assert sensors.values["lidar_intensity_full_scale"] == "1 (first sweep)"
        fixed_sensors = {d.name.split(": ")[1]: d for d in fixed.diagnostics(T0)}["sensors"]
        assert fixed_sensors.values["lidar_intensity_full_scale"] == "255 (configured)"
        # a later sweep with one bright return leaves the decided scale as it was
        bright = lidar_cloud(types, T0 + 0.1)
        bright.data[12:16] = np.frombuffer(np.float32(200.0).tobytes(), np.uint8)
        decided.on_lidar(bright, T0 + 0.1)
        assert decided.intensity_scale.full_scale == 1.0
    finally:
        decided.close()
        fixed.close()
    with pytest.raises(ConfigError, match="lidar_intensity_max: must be a number >= 0"):
        DrivingConfig(lidar_intensity_max=-1.0)


def test_a_refused_active_region_is_a_model_warning_until_a_known_one_comes(session, types):
    model = {d.name.split(": ")[1]: d for d in session.diagnostics(T0)}["model"]
    assert model.level == DiagnosticLevel.OK
    assert session.on_active_region(msgconv.build_string(types, "mountain" + "x" * 5000), T0) is False
    model = {d.name.split(": ")[1]: d for d in session.diagnostics(T0)}["model"]
    assert model.level == DiagnosticLevel.WARN and "has no bundle here" in model.message
    assert len(model.message) < 300 and len(session.warnings.last_message("unknown_region")) < 400
    assert session.on_active_region(msgconv.build_string(types, "highway"), T0 + 0.1)
    model = {d.name.split(": ")[1]: d for d in session.diagnostics(T0 + 0.1)}["model"]
    assert model.level == DiagnosticLevel.OK and "refused_region" not in model.values


def test_models_failing_on_every_frame_are_a_pipeline_error_not_a_missing_camera(session, types):
    def fail(inputs):
        raise RuntimeError("CUDA error: an illegal memory access")

    session.pipeline.process = fail
    for k in range(10):
        assert session.on_image(camera_image(types, T0 + 0.05 * k), T0 + 0.05 * k) is None
    status = {d.name.split(": ")[1]: d for d in session.diagnostics(T0 + 0.5)}
    assert status["pipeline"].level == DiagnosticLevel.ERROR
    assert "the models fail on camera frames: RuntimeError: CUDA error" in status["pipeline"].message
    assert status["sensors"].level == DiagnosticLevel.STALE  # still no command: the stop timer stops
    assert "camera frames arrive but none gave a command" in status["sensors"].message
    assert "stop commanded" in status["sensors"].message
    inactive = {d.name.split(": ")[1]: d for d in session.diagnostics(T0 + 0.5, commanding=False)}["sensors"]
    assert "inactive: no command is sent" in inactive.message and "stop commanded" not in inactive.message
