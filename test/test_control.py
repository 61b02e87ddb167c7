"""Control mapping: vehicle limits, rate limits, stop on non-finite output, message-level mappings."""

from __future__ import annotations

import math

import pytest

from regionadapt_ros.core.control import ControlMapper, VehicleLimits
from regionadapt_ros.core.errors import ConfigError


def test_steering_angle_and_accel_are_clamped():
    m = ControlMapper(VehicleLimits(max_steering_angle=0.3, max_accel=2.0, max_decel=4.0))
    cmd = m.map(1.0, 10.0, 5.0, 0.0)
    assert cmd.steering_angle == pytest.approx(0.3)
    assert cmd.accel == pytest.approx(2.0)
    assert "steering_angle" in cmd.limited and "accel" in cmd.limited


def test_steering_rate_is_limited_between_frames():
    m = ControlMapper(VehicleLimits(max_steering_rate=0.5))
    m.map(0.0, 0.0, 5.0, 0.0)
    cmd = m.map(0.4, 0.0, 5.0, 0.1)  # 0.4 rad in 0.1 s asks for 4 rad/s
    assert cmd.steering_angle == pytest.approx(0.05)
    assert "steering_rate" in cmd.limited


def test_jerk_limit_and_backwards_stamp_do_not_explode():
    m = ControlMapper(VehicleLimits(max_jerk=10.0))
    m.map(0.0, 0.0, 5.0, 10.0)
    cmd = m.map(0.0, -6.0, 5.0, 9.0)  # stamp went backwards: treated as one nominal period
    assert cmd.accel == pytest.approx(-1.0)


def test_speed_cap_stops_accelerating():
    m = ControlMapper(VehicleLimits(max_speed=30.0), speed_limit=50 / 3.6)
    cmd = m.map(0.0, 2.0, 14.0, 0.0)
    assert cmd.accel == 0.0 and "speed" in cmd.limited
    assert cmd.target_speed <= 50 / 3.6 + 1e-9


@pytest.mark.parametrize("steer,accel", [(math.nan, 0.0), (0.1, math.inf), (-math.inf, math.nan)])
def test_non_finite_output_becomes_stop(steer, accel):
    m = ControlMapper()
    cmd = m.map(steer, accel, 10.0, 1.0)
    assert cmd.stop and "non-finite" in cmd.reason
    assert math.isfinite(cmd.steering_angle) and math.isfinite(cmd.accel)
    assert cmd.accel < 0 and cmd.target_speed < 10.0


def test_carla_mapping_signs():
    lim = VehicleLimits(max_steering_angle=0.5)
    m = ControlMapper(lim)
    left = m.map(0.25, 1.5, 5.0, 0.0)
    throttle, steer, brake = left.carla(lim)
    assert steer == pytest.approx(-0.5)  # CARLA: positive steer turns right
    assert throttle == pytest.approx(0.5) and brake == 0.0
    stop = m.stop(0.1, 5.0, "camera stale")
    throttle, _, brake = stop.carla(lim)
    assert throttle == 0.0 and brake >= 0.5


def test_twist_yaw_rate_follows_bicycle_model():
    lim = VehicleLimits(wheelbase=2.5)
    cmd = ControlMapper(lim).map(0.1, 0.0, 10.0, 0.0)
    v, wz = cmd.twist(lim)
    assert wz == pytest.approx(v * math.tan(0.1) / 2.5)


def test_limits_from_config_refuse_bad_values():
    assert VehicleLimits.from_dict({"max_speed": 20}).max_speed == 20.0
    with pytest.raises(ConfigError, match="max_sped"):
        VehicleLimits.from_dict({"max_sped": 20}, "vehicle.yaml")
    with pytest.raises(ConfigError, match=r"vehicle\.yaml: max_accel must be a positive"):
        VehicleLimits.from_dict({"max_accel": -1}, "vehicle.yaml")
    # A right angle at the road wheels (degrees given as radians) is no steering limit: tan() of it would make
    # the tightest plausible turn negative and every measured yaw rate a gyro fault.
    for angle in (math.pi / 2, 1.6, 30):
        with pytest.raises(ConfigError, match="max_steering_angle must be below pi/2 rad"):
            VehicleLimits.from_dict({"max_steering_angle": angle}, "vehicle.yaml")
    assert VehicleLimits.from_dict({"max_steering_angle": 1.5}).max_steering_angle == 1.5


def test_the_tightest_plausible_turn_needs_a_steering_angle_below_a_right_angle():
    from regionadapt_ros.core.msgconv import max_turn_curvature

    assert max_turn_curvature(0.5, 2.7) == pytest.approx(1.5 * math.tan(0.5) / 2.7)
    for angle, wheelbase in ((1.6, 2.7), (0.0, 2.7), (0.5, 0.0), (math.nan, 2.7)):
        with pytest.raises(ValueError, match="no turn bound"):
            max_turn_curvature(angle, wheelbase)


def test_an_import_refuses_a_steering_angle_of_a_right_angle_or_more():
    from regionadapt_ros.adaptation.importers.rosbag import RosbagImportConfig
    from regionadapt_ros.adaptation.importers.rosbag.importer import with_vehicle

    with pytest.raises(ConfigError, match="vehicle options: max_steering_angle must be below pi/2"):
        with_vehicle(RosbagImportConfig(), max_steering_angle=1.6)
    assert with_vehicle(RosbagImportConfig(), max_steering_angle=0.6).limits.max_steering_angle == 0.6
