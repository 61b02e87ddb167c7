"""Lidar clouds in another frame than the vehicle's are brought into it from /tf_static or a static extrinsic,
with the road where the BEV grid expects it; a cloud whose frame has no known transform is reported once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.frames import (
    CloudFrames,
    RigidTransform,
    StaticTransforms,
    is_plausible_mount,
    parse_extrinsic,
)
from regionadapt_ros.driving_session import DrivingConfig, DrivingSession

# nuScenes' LIDAR_TOP: x right, y forward, z up; mounted 0.94 m ahead of base_link, 1.84 m up
YAW_MINUS_90 = (0.0, 0.0, -math.sqrt(0.5), math.sqrt(0.5))
AHEAD_IN_LIDAR = np.array([[0.0, 20.0, 0.5, 7.0], [3.0, 10.0, -1.8, 9.0]], np.float32)  # 20 m ahead; 3 m right


def tf_message(types, parent: str, child: str, xyz, quat):
    ts = types("geometry_msgs/msg/TransformStamped")(
        header=msgconv.build_header(types, 1.0, parent), child_frame_id=child,
        transform=types("geometry_msgs/msg/Transform")(
            translation=msgconv.build_vector3(types, *xyz),
            rotation=types("geometry_msgs/msg/Quaternion")(x=quat[0], y=quat[1], z=quat[2], w=quat[3])))
    return types("tf2_msgs/msg/TFMessage")(transforms=[ts])


def test_tf_static_rotates_a_nuscenes_cloud_into_the_vehicle_frame(types):
    frames = CloudFrames(ground_z_m=0.0)  # nuScenes' ego frame sits on the road
    assert frames.on_tf_static(tf_message(types, "base_link", "LIDAR_TOP", (0.94, 0.0, 1.84), YAW_MINUS_90)) == 1
    points, known = frames.to_vehicle(AHEAD_IN_LIDAR, "LIDAR_TOP")
    assert known and frames.used == {"LIDAR_TOP": "/tf_static"}
    # forward 20.94 m, on the centre line; the grid's road is at -1.7, so z = 0.5 + 1.84 - 1.7
    np.testing.assert_allclose(points[0], [20.94, 0.0, 0.64, 7.0], atol=1e-5)
    np.testing.assert_allclose(points[1], [10.94, -3.0, -1.66, 9.0], atol=1e-5)   # right is -y
    np.testing.assert_allclose(AHEAD_IN_LIDAR[0], [0.0, 20.0, 0.5, 7.0])          # the input is left alone


def test_a_chain_of_static_transforms_in_either_direction(types):
    tf = StaticTransforms()
    # base_link → roof (1 m up), and the lidar given as the PARENT of roof (a tree recorded the other way up)
    tf.add("base_link", "roof", RigidTransform.from_xyz_rpy([0, 0, 1.0, 0, 0, 0]))
    tf.add("lidar", "roof", RigidTransform.from_xyz_rpy([0, 0, 0, 0, 0, -math.pi / 2]).inverse())
    t = tf.lookup("base_link", "lidar")
    np.testing.assert_allclose(t.apply(np.array([[0.0, 20.0, 0.0]], np.float32))[0], [20.0, 0.0, 1.0], atol=1e-5)
    assert tf.lookup("base_link", "camera") is None
    assert StaticTransforms().lookup("base_link", "base_link") is not None


def test_rpy_extrinsic_matches_the_quaternion():
    a = RigidTransform.from_xyz_rpy([0.94, 0, 1.84, 0, 0, -math.pi / 2])
    from regionadapt_ros.core.frames import rotation_from_quaternion

    np.testing.assert_allclose(a.rotation, rotation_from_quaternion(*YAW_MINUS_90), atol=1e-12)
    with pytest.raises(ConfigError, match="lidar_extrinsic"):
        parse_extrinsic([1.0, 2.0])
    assert parse_extrinsic([]) is None


def test_a_transform_that_is_not_a_rotation_is_skipped_and_counted(types):
    frames = CloudFrames()
    assert frames.on_tf_static(tf_message(types, "base_link", "LIDAR_TOP", (0, 0, 0), (0, 0, 0, 0))) == 0
    assert frames.tf.rejected == 1
    _, known = frames.to_vehicle(AHEAD_IN_LIDAR, "LIDAR_TOP")
    assert not known and frames.unknown_frames == {"LIDAR_TOP"}


def session(**config) -> DrivingSession:
    return DrivingSession(DrivingConfig(**config), lambda region: None, "base")  # no models: on_lidar only


def cloud(types, frame: str, stamp: float):
    return msgconv.build_pointcloud2(types, AHEAD_IN_LIDAR, ("x", "y", "z", "intensity"), stamp, frame)


def test_the_session_uses_tf_static_then_the_extrinsic_and_reports_an_unknown_frame_once(types, caplog):
    s = session()
    s.on_tf_static(tf_message(types, "base_link", "LIDAR_TOP", (0.0, 0.0, 0.0), YAW_MINUS_90))
    assert s.on_lidar(cloud(types, "LIDAR_TOP", 1.0), 1.0)
    np.testing.assert_allclose(s._lidar[-1][1][0, :3], [20.0, 0.0, 0.5], atol=1e-5)

    with_extrinsic = session(lidar_extrinsic=(0.0, 0.0, 0.0, 0.0, 0.0, -math.pi / 2))
    assert with_extrinsic.on_lidar(cloud(types, "velodyne", 1.0), 1.0)
    np.testing.assert_allclose(with_extrinsic._lidar[-1][1][0, :3], [20.0, 0.0, 0.5], atol=1e-5)

    plain = session()
    with caplog.at_level("ERROR", logger="regionadapt_ros.driving"):
        for i in range(3):
            assert plain.on_lidar(cloud(types, "LIDAR_TOP", 1.0 + 0.1 * i), 1.0 + 0.1 * i)
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "LIDAR_TOP" in r.getMessage()]
    assert len(errors) == 1 and "lidar_extrinsic" in errors[0].getMessage()
    assert plain.warnings.count("lidar_frame_unknown") == 1 and plain.unknown_frame_clouds == 3
    np.testing.assert_allclose(plain._lidar[-1][1][0, :3], [0.0, 20.0, 0.5])   # used as it is
    sensors = {d.name.split(": ")[1]: d for d in plain.diagnostics(1.25)}["sensors"]
    assert "lidar frame LIDAR_TOP has no transform to base_link" in sensors.message
    assert sensors.values["lidar_frame.LIDAR_TOP"] == "unknown: used as it is"


def test_a_transform_that_puts_the_lidar_off_the_vehicle_refuses_its_clouds(types):
    # A tree with a map-sized offset in it (or metres typed as millimetres): every point would leave the grid and
    # the brake's corridor, and the lidar would be blind without a word. Refused: the lidar goes stale, loudly.
    s = session()
    s.on_tf_static(tf_message(types, "base_link", "lidar", (0.0, 0.0, 0.0), (0, 0, 0, 1)))
    s.on_tf_static(tf_message(types, "lidar", "velodyne", (940.0, 0.0, 1840.0), (0, 0, 0, 1)))
    assert s.on_lidar(cloud(types, "velodyne", 1.0), 1.0) is False
    assert not s._lidar and s.warnings.count("lidar_transform_implausible") == 1
    message = s.warnings.last_message("lidar_transform_implausible")
    assert "lidar frame 'velodyne' 2066 m from 'base_link'" in message and "refused" in message
    sensors = {d.name.split(": ")[1]: d for d in s.diagnostics(1.25)}["sensors"]
    assert sensors.values["lidar_age_s"] == "none"  # no sweep taken: the lidar is missing
    assert sensors.values["lidar_frame.velodyne"] == "refused: /tf_static puts it more than 50 m away"
    # Refused whatever the sweep holds: not even converted (a cloud it could not read is no bad_pointcloud).
    unreadable = cloud(types, "velodyne", 1.05)
    unreadable.data = unreadable.data[:5]  # truncated: a bad_pointcloud, were it converted
    assert s.on_lidar(unreadable, 1.05) is False
    assert s.warnings.count("lidar_transform_implausible") == 2 and s.warnings.count("bad_pointcloud") == 0
    unreadable.header.frame_id = "base_link"
    assert s.on_lidar(unreadable, 1.06) is False and s.warnings.count("bad_pointcloud") == 1
    # Nor are such points used by the file inference's frame conversion, moved or as they are.
    with pytest.raises(ValueError, match="puts frame 'velodyne' 2066 m from 'base_link'"):
        s.cloud_frames.to_vehicle(AHEAD_IN_LIDAR, "velodyne")
    # 50 m (a long articulated vehicle's far end) is still a mount.
    s.on_tf_static(tf_message(types, "base_link", "rear_lidar", (-49.0, 0.0, 2.0), (0, 0, 0, 1)))
    assert s.on_lidar(cloud(types, "rear_lidar", 1.1), 1.1) is True
    with pytest.raises(ConfigError, match="puts the sensor 1000 m from the vehicle frame's origin"):
        parse_extrinsic((1000.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    # An offset that is not a number (huge opposite translations composed) is no mount either.
    assert not is_plausible_mount(RigidTransform(np.eye(3), np.array([math.nan, 0.0, 0.0])))
    assert not is_plausible_mount(RigidTransform(np.eye(3), np.array([math.inf, -math.inf, 0.0])))
    assert is_plausible_mount(RigidTransform(np.eye(3), np.array([-49.0, 0.0, 2.0])))
    with pytest.raises(ConfigError, match="lidar_extrinsic"):
        session(lidar_extrinsic=(0.0, 0.0, 120.0, 0.0, 0.0, 0.0))


def test_a_cloud_in_the_vehicle_frame_is_shifted_to_the_grid_road_height(types):
    s = session(ground_z_m=0.0)
    assert s.on_lidar(cloud(types, "base_link", 1.0), 1.0)
    assert s._lidar[-1][1][0, 2] == pytest.approx(0.5 - 1.7)
    with pytest.raises(ConfigError, match="ground_z_m"):
        DrivingConfig(ground_z_m=math.nan)


def test_a_sensors_intensity_scale_is_decided_once_and_kept():
    from regionadapt_ros.core.preprocess import IntensityScale, bev_grid

    near = [20.0, 0.0, -1.6]
    dim = np.array([[*near, 0.5], [30.0, 5.0, -1.6, 0.9]], np.float32)
    with_bright = np.array([[*near, 0.5], [30.0, 5.0, -1.6, 0.9], [10.0, -10.0, -1.6, 1.5]], np.float32)
    cell = bev_grid(dim)[2]
    value = float(cell[cell > 0].min())
    assert value == pytest.approx(0.5)
    # A 0..1 sensor: a bright return later is clipped, it does not rescale every other point.
    scale = IntensityScale()
    bev_grid(dim, intensity=scale)
    assert scale.full_scale == 1.0 and scale.decided_by == "first sweep"
    later = bev_grid(with_bright, intensity=scale)[2]
    assert float(np.sort(later[later > 0])[0]) == pytest.approx(0.5) and float(later.max()) == 1.0
    # An 8-bit sensor decided by its first sweep keeps 255 for a dark sweep.
    eight_bit = IntensityScale()
    bev_grid(np.array([[*near, 200.0]], np.float32), intensity=eight_bit)
    assert eight_bit.full_scale == 255.0
    dark = bev_grid(np.array([[*near, 0.9]], np.float32), intensity=eight_bit)[2]
    assert float(dark.max()) == pytest.approx(0.9 / 255.0)
    # A dark first sweep (a sensor warming up) decides nothing either: the next one does.
    warming = IntensityScale()
    bev_grid(np.array([[*near, 0.0]], np.float32), intensity=warming)
    assert warming.full_scale is None
    bev_grid(np.array([[*near, 120.0]], np.float32), intensity=warming)
    assert warming.full_scale == 255.0
    # An all-NaN channel decides nothing; a configured scale is used as given.
    undecided = IntensityScale()
    bev_grid(np.array([[*near, np.nan]], np.float32), intensity=undecided)
    assert undecided.full_scale is None
    fixed = bev_grid(np.array([[*near, 50.0]], np.float32), intensity=IntensityScale(100.0))[2]
    assert float(fixed.max()) == pytest.approx(0.5)
    for bad in (0.0, -1.0, float("nan"), True, "255"):
        with pytest.raises(ValueError, match="full_scale"):
            IntensityScale(bad)


def test_a_frame_name_per_sweep_does_not_grow_the_diagnostics(types, tmp_path):
    from test_driving_session_support import lidar_cloud, write_region_bundles

    from regionadapt_ros.core.frames import MAX_FRAME_NAME, MAX_RECORDED_FRAMES

    session = DrivingSession.from_regions_file(DrivingConfig(), str(write_region_bundles(tmp_path)))
    try:
        for k in range(300):
            cloud = lidar_cloud(types, 100.0 + 0.1 * k, n_points=20)
            cloud.header.frame_id = f"lidar_{k}_" + "x" * 500 + "\n"
            assert session.on_lidar(cloud, 100.0 + 0.1 * k)
        assert session.warnings.count("lidar_frame_unknown") == MAX_RECORDED_FRAMES
        sensors = {d.name.split(": ")[1]: d for d in session.diagnostics(130.0)}["sensors"]
        named = [key for key in sensors.values if key.startswith("lidar_frame.")]
        assert len(named) == MAX_RECORDED_FRAMES
        assert all(len(key) <= len("lidar_frame.") + MAX_FRAME_NAME and "\n" not in key for key in named)
        assert sensors.values["lidar_clouds_of_further_frames"] == str(300 - MAX_RECORDED_FRAMES)
        assert session.unknown_frame_clouds == 300  # every cloud is still counted as used as it is
    finally:
        session.close()
