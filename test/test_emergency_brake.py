"""The emergency-braking guard in the command path: full braking at risk level brake whatever the decision model
says, held by the estimator's hysteresis, counted with its reason, switched off by one setting; the
perception/risk message and the collision-risk diagnostic. Sessions run the real networks on ONNX Runtime with
the obstacle distance scripted (test/risk_support.py)."""

from __future__ import annotations

import functools
import math

import pytest
from risk_support import ScriptedObstacleBackend, approach
from test_driving_session_support import camera_image, lidar_cloud

from regionadapt_ros.core.collision_risk import RiskConfig, RiskLevel
from regionadapt_ros.core.control import ControlMapper, VehicleLimits
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard
from regionadapt_ros.driving_session import DiagnosticLevel, DrivingConfig, DrivingSession
from regionadapt_ros.inference.swap import LoadedWeights
from regionadapt_ros.nodes import _params

T0 = 1_700_000_000.0
HZ = 10.0
MODEL_ACCEL = 1.5  # what the scripted decision model asks for on every frame: accelerate


@functools.cache
def _weights():
    from conftest import perturbed_weights

    return {m: perturbed_weights(m, 5) for m in ("perception", "decision")}


@functools.cache
def _onnxruntime():
    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend()


def loader(region):
    return LoadedWeights(region, f"{region}@v1", _weights(), rules={"speed_limit_kph": 100})


def scripted(distance) -> ScriptedObstacleBackend:
    return ScriptedObstacleBackend(distance, accel=MODEL_ACCEL, inner=_onnxruntime())


def session_with(distance, **config) -> DrivingSession:
    s = DrivingSession(DrivingConfig(**config), loader, "base", backend=scripted(distance))
    s.start()
    return s


def drive(session, types, n, speed=12.0, t0=T0, lidar=True):
    """n frames at HZ with a fresh sweep and speed each; returns the frame results."""
    results = []
    for i in range(n):
        now = t0 + i / HZ
        if lidar:
            session.on_lidar(lidar_cloud(types, now, seed=i), now)
        session.on_speed(speed, now)
        results.append(session.on_image(camera_image(types, now, seed=i), now))
    return results


# ------------------------------------------------------------------------------------------ mapper and guard
def test_emergency_brake_is_full_deceleration_at_once_with_the_models_steering_limited():
    lim = VehicleLimits(max_decel=7.0, max_jerk=10.0, max_steering_rate=0.5)
    m = ControlMapper(lim)
    m.map(0.0, 2.0, 10.0, 0.0)  # accelerating
    cmd = m.emergency_brake(0.3, 10.0, 0.1, "emergency brake: TTC 1.0 s")
    assert cmd.accel == -7.0 and cmd.emergency_brake and not cmd.stop
    assert cmd.target_speed == pytest.approx(10.0 - 0.7)
    assert cmd.steering_angle == pytest.approx(0.05) and "steering_rate" in cmd.limited  # rate limit still holds
    assert cmd.reason == "emergency brake: TTC 1.0 s" and "emergency_brake" in cmd.limited
    throttle, _, brake = cmd.carla(lim)
    assert throttle == 0.0 and brake == pytest.approx(min(1.0, 7.0 * lim.brake_per_decel))
    # AckermannDrive: deceleration as a magnitude, jerk 0 = "as fast as possible" (not the comfort limit)
    _steer, _rate, speed, acceleration, jerk = cmd.ackermann(lim)
    assert (speed, acceleration, jerk) == (pytest.approx(9.3), 7.0, 0.0)
    # after the override, the model's acceleration comes back through the jerk limit: no step
    after = m.map(0.3, 2.0, 9.3, 0.2)
    assert after.accel == pytest.approx(-7.0 + 10.0 * 0.1) and "jerk" in after.limited
    # a non-finite steering while braking holds the last steering
    held = m.emergency_brake(math.nan, 9.0, 0.3, "x", stop=True)
    assert held.steering_angle == pytest.approx(after.steering_angle) and held.stop


def _risk(level, stamp, trigger="TTC 1.00 s <= 1.2 s (obstacle 10.0 m, closing 10.0 m/s)", ttc=1.0):
    from regionadapt_ros.core.collision_risk import RiskEstimate, RiskThresholds

    return RiskEstimate(stamp, level, level, "tracking", 10.0, 10.0, ttc, True, trigger, trigger,
                        RiskThresholds(2.5, 1.2, 1.0))


def test_the_guard_counts_each_override_once_with_its_reason():
    guard = EmergencyBrakeGuard()
    reasons = [guard.decide(_risk(level, t, ttc=1.0 - 0.1 * t), "highway")
               for t, level in enumerate([RiskLevel.WARN, RiskLevel.BRAKE, RiskLevel.BRAKE, RiskLevel.BRAKE,
                                          RiskLevel.NONE, RiskLevel.BRAKE, RiskLevel.NONE])]
    assert [r is not None for r in reasons] == [False, True, True, True, False, True, False]
    assert reasons[1] == "emergency brake: TTC 1.00 s <= 1.2 s (obstacle 10.0 m, closing 10.0 m/s)"
    assert guard.overrides == 2 and guard.override_frames == 4 and guard.suppressed == 0
    first, second = guard.episodes
    assert (first.start_s, first.end_s, first.frames, first.region) == (1, 4, 3, "highway")
    assert first.min_ttc_s == pytest.approx(0.7) and first.applied
    assert second.end_s == 6 and guard.last_reason.startswith("TTC")


def test_a_guard_switched_off_overrides_nothing_but_records_what_it_would_have_done():
    guard = EmergencyBrakeGuard(enabled=False)
    assert all(guard.decide(_risk(RiskLevel.BRAKE, t)) is None for t in range(3))
    guard.decide(_risk(RiskLevel.NONE, 3))
    assert guard.overrides == 0 and guard.override_frames == 0
    assert guard.suppressed == 1 and guard.suppressed_frames == 3 and not guard.episodes[0].applied


# ------------------------------------------------------------------------------------------ in the session
def test_an_approaching_obstacle_overrides_the_models_acceleration_until_the_risk_clears(types):
    # nothing ahead for 10 frames, then an obstacle from 30 m closing at 10 m/s (it leaves the lane at 0.5 m)
    s = session_with(approach(10, 30.0, 10.0, HZ))
    try:
        results = drive(s, types, 52)
    finally:
        s.close()
    braking = [r.command.emergency_brake for r in results]
    first = braking.index(True)
    risk = results[first].risk
    assert risk.level is RiskLevel.BRAKE and risk.ttc_s <= 1.2
    assert results[first - 1].risk.level < RiskLevel.BRAKE
    # before: the model's acceleration (it asked for +1.5); during: full braking whatever it asked for
    assert all(r.command.accel > 0 for r in results[:first - 1] if not r.command.stop)
    limits = s.config.limits
    overridden = [r for r in results if r.command.emergency_brake]
    assert all(r.command.accel == -limits.max_decel and r.raw_control[1] == pytest.approx(MODEL_ACCEL)
               for r in overridden)
    assert all("emergency brake: TTC" in r.command.reason for r in overridden)
    # one override, contiguous (no chatter), ending when the risk has cleared and the hold has passed
    last = max(i for i, b in enumerate(braking) if b)
    assert all(braking[first:last + 1])
    assert not any(braking[last + 1:]) and results[last + 1].risk.level is RiskLevel.NONE
    assert s.guard.overrides == 1 and s.guard.override_frames == last - first + 1
    # the obstacle left at 0.5 m (frame 10 + 30): the brake is held for release_hold_s of clear readings
    clear = next(i for i in range(first, 52) if results[i].risk.state == "clear")
    assert results[last + 1].stamp_s - results[clear].stamp_s == pytest.approx(RiskConfig().release_hold_s, abs=1e-6)


def test_the_guard_switched_off_leaves_the_models_command_and_says_so(types):
    s = session_with(approach(10, 30.0, 10.0, HZ), emergency_brake=False)
    try:
        results = drive(s, types, 40)
        assert not any(r.command.emergency_brake for r in results)
        assert any(r.risk.level is RiskLevel.BRAKE for r in results)  # the estimate itself still runs
        assert s.guard.overrides == 0 and s.guard.suppressed == 1 and s.guard.suppressed_frames > 0
        risk_status = s.diagnostics(results[-1].stamp_s)[3]
        assert risk_status.level == DiagnosticLevel.WARN and "guard off" in risk_status.message
        assert risk_status.values["guard_enabled"] == "false"
    finally:
        s.close()


def test_frames_without_lidar_or_a_speed_never_start_a_brake(types):
    s = session_with(approach(0, 30.0, 10.0, HZ))
    try:
        results = drive(s, types, 30, lidar=False)   # camera-only distances: not measurements
        assert all(r.risk.level is RiskLevel.NONE and not r.command.emergency_brake for r in results)
        assert s.risk.counts["no_lidar"] == 30
    finally:
        s.close()


def test_reversing_is_an_unknown_forward_speed_counted_without_a_warning(types):
    # Reversing with a steady obstacle 12 m ahead: a parking manoeuvre's negative speed is a reading, not a fault
    # to warn of on every frame; the forward risk goes on without an ego speed.
    s = session_with(lambda f: 12.0)
    try:
        results = drive(s, types, 20, speed=-3.0)
        assert not any(r.command.emergency_brake for r in results)
        assert all(r.risk.level is RiskLevel.NONE for r in results)
        assert s.risk.counts["bad_speed"] == 0 and s.warnings.count("risk_bad_speed") == 0
        assert s.diagnostics(results[-1].stamp_s)[3].values["risk.reversing"] == "20"
    finally:
        s.close()


def test_a_negative_speed_never_lowers_a_brake_for_a_closing_obstacle(types):
    # A sign flipped upstream (or a west-heading ENU velocity) while an obstacle closes at 10 m/s: the speed is
    # unknown to the forward risk, not "standing", which would lower the brake to a warning.
    s = session_with(approach(0, 30.0, 10.0, HZ))
    try:
        results = drive(s, types, 30, speed=-10.0)
        assert any(r.command.emergency_brake for r in results)
    finally:
        s.close()


def test_non_finite_perception_while_braking_is_a_harder_stop_and_still_an_error(types):
    s = session_with(lambda f: (30.0 - 10.0 * f / HZ) if f < 23 else math.nan)
    try:
        results = drive(s, types, 26)
        assert results[22].command.emergency_brake
        nan_frame = results[23]
        assert nan_frame.perception is None and nan_frame.risk.state == "held"
        assert nan_frame.command.stop and nan_frame.command.emergency_brake
        assert nan_frame.command.reason.startswith("non-finite perception output; emergency brake")
        assert nan_frame.command.accel == -s.config.limits.max_decel
        assert s.non_finite_stops == 3 and s.diagnostics(results[-1].stamp_s)[0].level == DiagnosticLevel.ERROR
    finally:
        s.close()


def test_a_clock_jump_back_resets_the_estimate_and_ends_the_override(types):
    s = session_with(approach(0, 20.0, 10.0, HZ))
    try:
        results = drive(s, types, 12)
        assert results[-1].command.emergency_brake
        # the bag loops: the clock and the stamps go back 10 s; the first frames after it do not brake
        again = drive(s, types, 3, t0=T0 - 10.0)
        assert s.clock_jumps >= 1 and s.risk.counts["clock_jumps"] + s.clock_jumps >= 1
        assert not any(r.command.emergency_brake for r in again) and s.guard.episodes[-1].end_s is not None
    finally:
        s.close()


def test_a_clock_jump_seen_by_the_stop_timer_resets_the_estimate_it_shares_with_frames(types):
    s = session_with(approach(0, 20.0, 10.0, HZ))
    try:
        results = drive(s, types, 12)
        assert results[-1].command.emergency_brake and s.guard.active
        # the stop timer (another thread on the node) sees the clock go back first
        s.tick(T0 - 30.0)
        assert s.clock_jumps == 1
        assert s.risk.level is RiskLevel.NONE and not s.guard.active and s.guard.episodes[-1].end_s is not None
    finally:
        s.close()


def test_region_rules_make_the_guard_stricter(types):
    def strict_loader(region):
        weights = loader(region)
        return LoadedWeights(weights.region, weights.bundle_id, weights.weights,
                             rules={"speed_limit_kph": 100, "ttc_brake_s": 2.0})

    results = {}
    for name, load in (("vehicle", loader), ("region", strict_loader)):
        s = DrivingSession(DrivingConfig(), load, "base", backend=scripted(approach(0, 40.0, 10.0, HZ)))
        s.start()
        try:
            results[name] = [r.command.emergency_brake for r in drive(s, types, 35)].index(True)
            assert s.last_result.risk.thresholds.ttc_brake_s == (2.0 if name == "region" else 1.2)
        finally:
            s.close()
    assert results["region"] < results["vehicle"]


# ------------------------------------------------------------------------------------------ outputs
def test_perception_risk_is_a_stamped_vector_of_ttc_closing_speed_and_level(types):
    s = session_with(approach(0, 30.0, 10.0, HZ))
    try:
        results = drive(s, types, 22)
        messages = [s.perception_messages(types, r)["perception/risk"] for r in results]
    finally:
        s.close()
    braking = results[-1]
    msg = messages[-1]
    assert type(msg).__name__.endswith("Vector3Stamped") and msg.header.frame_id == "base_link"
    assert msg.header.stamp.sec == int(braking.stamp_s)
    assert (msg.vector.x, msg.vector.y, msg.vector.z) == pytest.approx((braking.risk.ttc_s, 10.0, 2.0), rel=1e-6)
    assert math.isnan(messages[0].vector.x) and messages[0].vector.z == 0.0  # no estimate on the first frame
    assert [m.vector.z for m in messages] == [float(int(r.risk.level)) for r in results]


def test_the_collision_risk_diagnostic_reports_the_level_and_the_overrides(types):
    s = session_with(approach(0, 30.0, 10.0, HZ))
    try:
        assert s.diagnostics(T0)[3].level == DiagnosticLevel.OK  # no frame yet
        results = drive(s, types, 22)
        status = s.diagnostics(results[-1].stamp_s)[3]
        assert status.name == "regionadapt_driving: collision risk"
        assert status.level == DiagnosticLevel.ERROR and status.message.startswith("emergency brake: TTC")
        assert status.values["level"] == "brake" and status.values["overrides"] == "1"
        assert float(status.values["ttc_s"]) == pytest.approx(results[-1].risk.ttc_s, abs=0.01)
        assert status.values["last_override_reason"].startswith("TTC")
        array = s.diagnostic_array(types, results[-1].stamp_s)
        assert [st.level for st in array.status][3] == 2
        stats = s.stats(results[-1].stamp_s)
        assert stats.emergency_brake["overrides"] == 1 and stats.emergency_brake["active"]
        # the camera goes stale: the stale-camera stop takes over, the risk diagnostic no longer claims a brake
        later = s.diagnostics(results[-1].stamp_s + 2.0)[3]
        assert later.level == DiagnosticLevel.OK and later.message == "no recent camera frame"
    finally:
        s.close()


def test_the_node_parameters_reach_the_session_config():
    values = {spec.name: spec.default for spec in _params.DRIVING_PARAMETERS}
    config = _params.driving_config(values)
    assert config.emergency_brake is True and config.risk == RiskConfig()
    values.update({"emergency_brake": False, "risk.ttc_brake_s": 1.5, "risk.engage_frames": 3})
    config = _params.driving_config(values)
    assert not config.emergency_brake and config.risk.ttc_brake_s == 1.5 and config.risk.engage_frames == 3
    values["risk.ttc_brake_s"] = 4.0  # above ttc_warn_s
    from regionadapt_ros.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"risk\.\* parameters: .*ttc_brake_s"):
        _params.driving_config(values)
    # every estimator setting is a declared parameter
    declared = {spec.name for spec in _params.DRIVING_PARAMETERS}
    assert {f"risk.{name}" for name in RiskConfig.__dataclass_fields__} <= declared


def test_bad_emergency_brake_config_names_the_field():
    from regionadapt_ros.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        DrivingConfig(emergency_brake="yes")
    assert info.value.path == "emergency_brake"
    with pytest.raises(ConfigError) as info:
        DrivingConfig(risk={"ttc_brake_s": 1.0})
    assert info.value.path == "risk"
