"""What a ``DrivingSession`` publishes, built from its state: the command and perception messages of a frame,
and its diagnostic statuses. Plain functions of explicit inputs, so that the session keeps only the per-message
logic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.collision_risk import RiskEstimate
from regionadapt_ros.core.control import VehicleCommand
from regionadapt_ros.core.frames import CloudFrames
from regionadapt_ros.core.preprocess import IntensityScale
from regionadapt_ros.driving_session.config import DrivingConfig
from regionadapt_ros.driving_session.diagnostic import DiagnosticLevel, DiagnosticStatusData, _fmt
from regionadapt_ros.pipeline import FrameResult


# ------------------------------------------------------------------------------------------ messages
def build_command_message(config: DrivingConfig, types: msgconv.TypeResolver,
                          item: FrameResult | VehicleCommand) -> Any:
    """The configured output message for a frame result or a command: AckermannDriveStamped (steering angle,
    target speed, acceleration), CarlaEgoVehicleControl (throttle/steer/brake, header stamp = the source image
    stamp) or Twist (forward speed, yaw rate). ``types`` resolves message classes (rclpy or rosbags). The
    Ackermann fields follow ackermann_msgs: acceleration is a magnitude (the target speed says whether to speed
    up or slow down), steering_angle_velocity and jerk are the configured limits."""
    command = item.command if isinstance(item, FrameResult) else item
    limits = config.limits
    if config.command_type == "carla":
        throttle, steer, brake = command.carla(limits)
        return msgconv.build_carla_control(types, throttle, steer, brake, command.stamp_s, frame_id=config.frame_id)
    if config.command_type == "twist":
        linear, angular = command.twist(limits)
        return msgconv.build_twist(types, linear, angular)
    steering, steering_rate, speed, acceleration, jerk = command.ackermann(limits)
    return msgconv.build_ackermann(types, steering, speed, acceleration, command.stamp_s, frame_id=config.frame_id,
                                   steering_angle_velocity=steering_rate, jerk=jerk)


def build_perception_messages(config: DrivingConfig, types: msgconv.TypeResolver, result: FrameResult
                              ) -> dict[str, Any]:
    """{topic: message} of ``PERCEPTION_TOPICS`` for one frame. The perception outputs are left out when they
    were not finite (nothing of them is published then); ``perception/risk`` is there for every frame."""
    messages = {} if result.risk is None else {"perception/risk": build_risk_message(config, types, result.risk)}
    perception = result.perception
    if perception is None:
        return messages
    header = msgconv.build_header(types, result.stamp_s, config.frame_id)
    lane = types("geometry_msgs/msg/Vector3Stamped")(
        header=header,
        vector=msgconv.build_vector3(types, perception.lane_offset, perception.heading_error, perception.curvature),
    )
    return {
        "perception/traffic_light": msgconv.build_string(types, perception.tl_state),
        "perception/lane": lane,
        "perception/obstacle_distance": msgconv.build_float32(types, perception.obstacle_distance),
        **messages,
    }


def build_risk_message(config: DrivingConfig, types: msgconv.TypeResolver, risk: RiskEstimate) -> Any:
    """``perception/risk``: geometry_msgs/Vector3Stamped stamped with the frame's image stamp, x = TTC [s]
    (capped at 100; NaN unknown), y = closing speed [m/s] (NaN unknown), z = level (0 none, 1 warn, 2 brake)."""
    return types("geometry_msgs/msg/Vector3Stamped")(
        header=msgconv.build_header(types, risk.stamp_s, config.frame_id),
        vector=msgconv.build_vector3(types, *risk.vector()),
    )


# ------------------------------------------------------------------------------------------ diagnostics
def pipeline_status(name: str, hardware_id: str, stats: Any, *, non_finite_recent: bool, drop_recent: bool,
                    started: bool, frame_error: str | None = None) -> DiagnosticStatusData:
    """``<name>: pipeline``: ERROR while the models fail on frames (``frame_error``: the last failure) or after
    non-finite model output produced a stop, WARN after dropped frames or before the models are loaded; counters
    and per-stage latency percentiles as values."""
    total = stats.latency_ms.get("total", {})
    values = {
        "frames": str(stats.frames),
        "dropped_frames": str(stats.dropped_frames),
        "frame_rate_hz": _fmt(stats.frame_rate_hz, 2),
        "non_finite_stops": str(stats.non_finite_stops),
        "stale_stops": str(stats.stale_stops),
        "clock_jumps": str(stats.clock_jumps),
        "lidar_frames": str(stats.lidar_frames),
    }
    for stage, latency in stats.latency_ms.items():
        values[f"latency_{stage}_p50_ms"] = _fmt(latency["p50"], 2)
        values[f"latency_{stage}_p99_ms"] = _fmt(latency["p99"], 2)
    for kind, count in sorted(stats.warnings.items()):
        values[f"warnings.{kind}"] = str(count)
    if frame_error is not None:
        level, message = DiagnosticLevel.ERROR, f"the models fail on camera frames: {frame_error}"
    elif non_finite_recent:
        level, message = DiagnosticLevel.ERROR, (f"non-finite model output: stop commanded "
                                                 f"({stats.non_finite_stops} frames so far)")
    elif drop_recent:
        level, message = DiagnosticLevel.WARN, f"dropped {stats.dropped_frames} camera frames (bad messages)"
    elif not started:
        level, message = DiagnosticLevel.WARN, "models not loaded"
    else:
        level = DiagnosticLevel.OK
        message = f"{stats.frame_rate_hz:.1f} fps, total p99 {_fmt(total.get('p99'), 1)} ms"
    return DiagnosticStatusData(f"{name}: pipeline", level, message, values, hardware_id)


def sensors_status(name: str, hardware_id: str, config: DrivingConfig, ages: Any, speed: float | None,
                   cloud_frames: CloudFrames, intensity: IntensityScale | None = None, *,
                   camera_received_age_s: float | None = None, commanding: bool = True) -> DiagnosticStatusData:
    """``<name>: sensors``: STALE while the camera is stale (a stop is commanded while ``commanding``), WARN for
    missing or stale lidar or speed and for a lidar frame without a transform. ``camera_received_age_s``: since
    a camera message last arrived, whether or not it gave a command (the camera's age counts only those that
    did): frames that arrive but fail are not a silent camera."""
    values = {"camera_age_s": _fmt(ages.camera), "lidar_age_s": _fmt(ages.lidar), "speed_age_s": _fmt(ages.speed),
              "speed_source": config.speed_source, "speed_mps": _fmt(speed, 2)}
    problems = []
    if ages.lidar is None or ages.lidar > config.lidar_max_age_s:
        problems.append(f"lidar missing or stale: speed capped at {config.degraded_max_speed:g} m/s")
    if ages.speed is None or ages.speed > config.speed_max_age_s:
        problems.append("speed missing or stale")
    frame_problem = []
    if cloud_frames.unknown_frames:
        frames = ", ".join(sorted(cloud_frames.unknown_frames))
        frame_problem = [f"lidar frame {frames} has no transform to {config.frame_id}: clouds used as they are "
                         "(set /tf_static or lidar_extrinsic)"]
        problems += frame_problem
    for frame, how in sorted(cloud_frames.used.items()):
        values[f"lidar_frame.{frame}"] = how
    if cloud_frames.unrecorded_clouds:
        values["lidar_clouds_of_further_frames"] = str(cloud_frames.unrecorded_clouds)
    if intensity is not None:
        values["lidar_intensity_full_scale"] = ("undecided" if intensity.full_scale is None else
                                                f"{intensity.full_scale:g} ({intensity.decided_by})")
    if ages.camera is None or ages.camera > config.camera_timeout_s:
        if camera_received_age_s is not None and camera_received_age_s <= config.camera_timeout_s:
            why = ("camera frames arrive but none gave a command" + ("" if ages.camera is None else
                                                                     f" for {ages.camera:.2f} s"))
        else:
            why = "no camera frame yet" if ages.camera is None else f"no camera frame for {ages.camera:.2f} s"
        consequence = "stop commanded" if commanding else "inactive: no command is sent"
        return DiagnosticStatusData(f"{name}: sensors", DiagnosticLevel.STALE,
                                    "; ".join([f"{why}: {consequence}", *frame_problem]), values, hardware_id)
    if problems:
        return DiagnosticStatusData(f"{name}: sensors", DiagnosticLevel.WARN, "; ".join(problems), values,
                                    hardware_id)
    return DiagnosticStatusData(f"{name}: sensors", DiagnosticLevel.OK, "camera, lidar and speed fresh", values,
                                hardware_id)


def model_status(name: str, hardware_id: str, swap: Mapping[str, Any], active_region: str | None, backend: str,
                 started: bool, refused_region: str | None = None) -> DiagnosticStatusData:
    """``<name>: model``: region, bundle and swap state; WARN while a load fails, before start, or while the last
    active region asked for has no bundle (``refused_region``: the vehicle drives with another region's model)."""
    values = {
        "region": str(swap.get("serving_region") or "none"),
        "active_region": str(active_region or "none"),
        "bundle_id": str(swap.get("bundle_id") or "none"),
        "bundle_version": str(swap.get("bundle_version") if swap.get("bundle_version") is not None else "none"),
        "bundle_sha256": str(swap.get("bundle_sha256") or "none"),
        "backend": backend,
        "swap_state": str(swap.get("state", "not started")),
        "swaps": str(swap.get("swaps", 0)),
        "failed_loads": str(swap.get("failed_loads", 0)),
    }
    failures = swap.get("failures") or {}
    for region, reason in sorted(failures.items()):
        values[f"failure.{region}"] = reason
    if not started:
        return DiagnosticStatusData(f"{name}: model", DiagnosticLevel.WARN, "models not loaded", values, hardware_id)
    if refused_region is not None:
        values["refused_region"] = refused_region
        return DiagnosticStatusData(f"{name}: model", DiagnosticLevel.WARN,
                                    f"active region {refused_region!r} has no bundle here: serving "
                                    f"{values['bundle_id']} (check regions.yaml against the geofences)", values,
                                    hardware_id)
    if failures:
        failed = ", ".join(f"{r}: {why}" for r, why in sorted(failures.items()))
        return DiagnosticStatusData(f"{name}: model", DiagnosticLevel.WARN,
                                    f"serving {values['bundle_id']}; loading failed ({failed})", values, hardware_id)
    if swap.get("commit_failures"):
        values["commit_failures"] = str(swap["commit_failures"])
        return DiagnosticStatusData(f"{name}: model", DiagnosticLevel.WARN,
                                    f"serving {values['bundle_id']}, but its version could not be recorded as "
                                    f"installed (rollback protection): {swap.get('last_commit_error')}", values,
                                    hardware_id)
    return DiagnosticStatusData(f"{name}: model", DiagnosticLevel.OK,
                                f"serving {values['bundle_id']} ({values['swap_state']})", values, hardware_id)
