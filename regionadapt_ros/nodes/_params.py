"""The nodes' interface as data: parameters (the nodes declare exactly these), topic names, and the conversion of
parameter values into the sessions' configurations.

ROS-free on import (rcl_interfaces is imported inside ``ParamSpec.descriptor``), so the launch and config tests,
the docs and the replay tooling can read the tables without rclpy. Type and range rules mirror rclpy's: a DOUBLE
parameter refuses an integer value (write ``1.0`` in YAML, not ``1``), ranges are inclusive.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionadapt_ros.core.collision_risk import RiskConfig
from regionadapt_ros.core.control import VehicleLimits
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.lidar_corridor import CorridorConfig

DRIVING_NODE = "driving_node"
REGION_MANAGER_NODE = "region_manager_node"
PACKAGE = "regionadapt_ros"
# Declared by rclpy itself on every node; launch files and YAML may set them too.
# Declared by rclpy itself: TimeSource (every distribution) and, on Jazzy, TypeDescriptionService.
BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default (its Python type is the parameter type), description, inclusive range for
    numbers, allowed values for strings, and whether it may change while the node runs."""

    name: str
    default: bool | int | float | str
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True

    @property
    def type_name(self) -> str:
        """rclpy's Parameter.Type name: BOOL, INTEGER, DOUBLE or STRING."""
        if isinstance(self.default, bool):
            return "BOOL"
        if isinstance(self.default, int):
            return "INTEGER"
        if isinstance(self.default, float):
            return "DOUBLE"
        return "STRING"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` would be refused for this parameter (type as rclpy checks it, range, choices), or None."""
        expected = {"BOOL": (bool,), "INTEGER": (int,), "DOUBLE": (float,), "STRING": (str,)}[self.type_name]
        if not isinstance(value, expected) or (self.type_name == "INTEGER" and isinstance(value, bool)):
            return f"{self.name}: expected {self.type_name}, got {value!r} ({type(value).__name__})"
        if self.range is not None:
            low, high = self.range
            if not (math.isfinite(value) and low <= value <= high):
                return f"{self.name}: {value!r} is outside [{low:g}, {high:g}]"
        if self.choices and value not in self.choices:
            return f"{self.name}: {value!r} is not one of {', '.join(self.choices)}"
        return None

    def descriptor(self) -> Any:
        """rcl_interfaces/ParameterDescriptor with the description, range and read-only flag."""
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        kwargs: dict[str, Any] = {"description": self.description, "read_only": self.read_only}
        if self.choices:
            kwargs["additional_constraints"] = "one of: " + ", ".join(self.choices)
        if self.range is not None and self.type_name == "DOUBLE":
            kwargs["floating_point_range"] = [FloatingPointRange(from_value=float(self.range[0]),
                                                                 to_value=float(self.range[1]), step=0.0)]
        elif self.range is not None and self.type_name == "INTEGER":
            kwargs["integer_range"] = [IntegerRange(from_value=int(self.range[0]), to_value=int(self.range[1]),
                                                    step=1)]
        return ParameterDescriptor(**kwargs)


_LIMIT_RANGES = {
    "max_steering_angle": ((0.01, 1.5), "steering angle limit at the road wheels; with the wheelbase, the "
                                        "tightest turn a measured yaw rate may imply [rad]"),
    "max_steering_rate": ((0.01, 10.0), "steering rate limit [rad/s]"),
    "max_accel": ((0.1, 10.0), "acceleration limit [m/s^2]"),
    "max_decel": ((0.1, 15.0), "deceleration limit [m/s^2, positive]"),
    "max_jerk": ((0.1, 100.0), "limit on the change of the acceleration command [m/s^3]"),
    "max_speed": ((0.1, 100.0), "hard speed cap whatever the region allows [m/s]"),
    "stop_decel": ((0.1, 15.0), "deceleration of stop commands [m/s^2]"),
    "wheelbase": ((0.5, 10.0), "wheelbase for the Twist yaw rate and the tightest turn a measured yaw rate may "
                               "imply [m]"),
    "throttle_per_accel": ((0.01, 1.0), "CARLA throttle per m/s^2"),
    "brake_per_decel": ((0.01, 1.0), "CARLA brake per m/s^2 of deceleration"),
}
_DEFAULT_LIMITS = VehicleLimits()
_RISK_RANGES = {
    "ttc_warn_s": ((0.1, 20.0), "collision risk: warn at or below this time to collision [s]"),
    "ttc_brake_s": ((0.1, 20.0), "collision risk: emergency brake at or below this time to collision [s]"),
    "min_distance_m": ((0.0, 20.0), "collision risk: brake at or below this obstacle distance while closing [m]"),
    "min_closing_mps": ((0.01, 20.0), "collision risk: slower closing is no collision course [m/s]"),
    "window_s": ((0.1, 10.0), "collision risk: distances of this window are fitted [s]"),
    "min_samples": ((2, 100), "collision risk: a closing-speed fit needs this many distances"),
    "min_span_s": ((0.01, 5.0), "collision risk: ... spanning at least this long [s]"),
    "max_gap_s": ((0.05, 10.0), "collision risk: no distance for longer: estimate stale, level none [s]"),
    "clear_distance_m": ((1.0, 1000.0), "collision risk: a distance at or beyond this means nothing ahead [m]"),
    "jump_abs_m": ((0.1, 100.0), "collision risk: a distance this far (+ jump_rel x distance) from the track is "
                   "a jump [m]"),
    "jump_rel": ((0.0, 10.0), "collision risk: relative part of the jump gate"),
    "confirm_jump_frames": ((1, 100), "collision risk: agreeing jumped distances that restart the track"),
    "max_oncoming_mps": ((0.0, 100.0), "collision risk: closing speed is capped at ego speed + this [m/s]"),
    "min_ego_speed_mps": ((0.0, 5.0), "collision risk: a slower (standing) ego gets a warning, no brake [m/s]"),
    "engage_frames": ((1, 100), "collision risk: consecutive frames needed to raise the level"),
    "release_factor": ((1.0, 10.0), "collision risk: release thresholds = thresholds x this (hysteresis)"),
    "release_hold_s": ((0.0, 10.0), "collision risk: the release condition must hold this long [s]"),
}
_DEFAULT_RISK = RiskConfig()
_CORRIDOR_RANGES = {
    "front_m": ((0.0, 20.0), "lidar corridor: the front bumper ahead of the vehicle frame's origin [m]"),
    "half_width_m": ((0.3, 5.0), "lidar corridor: half its width (vehicle half width and a margin) [m]"),
    "min_height_m": ((0.0, 3.0), "lidar corridor: returns lower above the road are ground and kerbs [m]"),
    "max_height_m": ((0.5, 10.0), "lidar corridor: returns higher above the road are bridges and signs [m]"),
    "max_range_m": ((1.0, 200.0), "lidar corridor: its length beyond the bumper [m]"),
    "min_points": ((1, 1000), "lidar corridor: returns within cluster_m that confirm an obstacle"),
    "cluster_m": ((0.05, 10.0), "lidar corridor: ... along the path [m]"),
    "min_width_m": ((0.0, 5.0), "lidar corridor: ... spread at least this wide across it [m]"),
    "max_kappa": ((0.01, 1.0), "lidar corridor: path curvatures are clipped to this [1/m]"),
    "motion_horizon_s": ((0.1, 10.0), "lidar corridor: the ego-motion path covers this much travel [s]"),
    "motion_min_m": ((0.5, 100.0), "lidar corridor: ... and at least this far [m]"),
    "lane_half_width_m": ((0.5, 5.0), "lidar corridor: returns further from the perceived lane centre are "
                          "roadside [m]"),
}
_DEFAULT_CORRIDOR = CorridorConfig()

DRIVING_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "configure and activate on start (else wait for lifecycle transitions)"),
    ParamSpec("regions_file", "", "regions.yaml (region -> bundle, rules); empty: <share>/config/regions.yaml"),
    ParamSpec("bundle_dir", "", "directory of the region bundles; empty: as regions.yaml says"),
    ParamSpec("initial_region", "", "region served from configure until regionadapt/active_region arrives; "
              "empty: the default region of regions.yaml"),
    ParamSpec("backend", "onnxruntime", "inference backend", choices=("onnxruntime", "torch", "tensorrt", "auto")),
    ParamSpec("tensorrt_precision", "fp16", "TensorRT engine precision (backend tensorrt or auto on a GPU)",
              choices=("fp16", "fp32")),
    ParamSpec("tensorrt_refit", True, "one refittable TensorRT engine per model, refitted with each region's "
              "weights at swap time (false: one engine per region); `regionadapt engine build` fills the cache"),
    ParamSpec("tensorrt_dla_core", -1, "DLA core the TensorRT engines run on (Jetson); -1: the GPU", (-1, 7)),
    ParamSpec("tensorrt_cache_dir", "", "TensorRT engine cache; empty: $REGIONADAPT_ENGINE_CACHE or "
              "~/.cache/regionadapt/engines"),
    ParamSpec("command_type", "ackermann", "control/command message type", choices=("ackermann", "carla", "twist")),
    ParamSpec("camera_transport", "raw", "raw: camera/image (Image); compressed: camera/image/compressed",
              choices=("raw", "compressed")),
    ParamSpec("speed_source", "odom", "odom: nav_msgs/Odometry on odom; speed: std_msgs/Float32 on speed; twist: "
              "geometry_msgs/TwistStamped (vehicle frame) on vehicle/twist", choices=("odom", "speed", "twist")),
    ParamSpec("lidar_max_age_s", 0.15, "a sweep is used when stamped within this of the image [s]", (0.01, 2.0),
              read_only=False),
    ParamSpec("camera_timeout_s", 0.5, "no camera frame for this long: stop commands [s]", (0.05, 10.0),
              read_only=False),
    ParamSpec("speed_max_age_s", 1.0, "speed older than this is reported stale [s]", (0.05, 10.0)),
    ParamSpec("degraded_max_speed", 5.0, "speed cap while the lidar is missing or stale [m/s]", (0.0, 40.0),
              read_only=False),
    ParamSpec("stop_rate_hz", 20.0, "rate of stop commands while the camera is stale [Hz]", (1.0, 100.0)),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics [s]", (0.1, 10.0)),
    ParamSpec("clock_jump_s", 5.0, "a forward clock jump larger than this resets the history [s]", (0.5, 60.0)),
    ParamSpec("frame_id", "base_link", "header frame of stamped outputs, and the vehicle frame lidar clouds are "
              "brought into (from /tf_static, else lidar_extrinsic)"),
    ParamSpec("lidar_extrinsic", "", "'x y z roll pitch yaw' [m, rad]: the lidar's pose in the vehicle frame, for "
              "clouds whose frame /tf_static does not connect to frame_id; empty: none"),
    ParamSpec("ground_z_m", -1.7, "height of the road in the vehicle frame (the BEV grid assumes -1.7; 0 for a "
              "base_link on the road) [m]", (-10.0, 10.0)),
    ParamSpec("max_image_pixels", 4096 * 4096, "camera frames of more pixels are dropped (compressed: checked in the "
              "encoded header, before decoding)", (1, 1 << 30)),
    ParamSpec("lidar_max_points", 131_072, "sweeps of more points are strided down to this many before conversion",
              (1, 1 << 26)),
    ParamSpec("lidar_intensity_max", 0.0, "the lidar's full-scale intensity, read as reflectance 1 (255: Velodyne, "
              "Livox, RoboSense; 1: CARLA); 0: decided once from the first sweep", (0.0, 1.0e6)),
    *(ParamSpec(f"vehicle.{name}", float(getattr(_DEFAULT_LIMITS, name)), text, bounds)
      for name, (bounds, text) in _LIMIT_RANGES.items()),
    ParamSpec("emergency_brake", True, "full braking when the collision risk reaches brake, whatever the model "
              "says (false: only warn and count what it would have done)"),
    *(ParamSpec(f"risk.{name}", getattr(_DEFAULT_RISK, name), text, bounds)
      for name, (bounds, text) in _RISK_RANGES.items()),
    ParamSpec("corridor.enabled", True, "the emergency brake's lidar channel: the nearest lidar return in the "
              "ego's path corridor (false: the perceived obstacle distance alone)"),
    *(ParamSpec(f"corridor.{name}", getattr(_DEFAULT_CORRIDOR, name), text, bounds)
      for name, (bounds, text) in _CORRIDOR_RANGES.items()),
)

REGION_MANAGER_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("geofence_file", "", "GeoJSON geofences; empty: <share>/config/geofences.geojson"),
    ParamSpec("default_region", "base", "region outside every geofence"),
    ParamSpec("repair_geofences", False, "repair invalid polygons with make_valid instead of refusing them"),
    ParamSpec("enter_margin_m", 10.0, "switch only this far inside the new region [m]", (0.0, 1000.0)),
    ParamSpec("exit_margin_m", 5.0, "switch only this far outside the current region [m]", (0.0, 1000.0)),
    ParamSpec("confirm_s", 0.5, "margins must hold this long before a switch [s]", (0.0, 60.0)),
    ParamSpec("min_dwell_s", 5.0, "minimum time between two switches [s]", (0.0, 600.0)),
    ParamSpec("max_fix_age_s", 2.0, "older fixes are not used [s]", (0.01, 60.0)),
    ParamSpec("max_h_std_m", 10.0, "fixes with a larger horizontal standard deviation are not used [m]",
              (0.01, 1000.0)),
    ParamSpec("accept_unknown_status", False, "use fixes with NavSatStatus STATUS_UNKNOWN (-2: status not set by "
              "the driver, Jazzy's default; the CARLA bridge's on Jazzy) as fixes; false: hold the region on them, as "
              "the message defines (a fix is valid when status >= STATUS_FIX)"),
    ParamSpec("prefetch_horizon_s", 10.0, "look-ahead of the next-region hint [s]", (0.0, 120.0)),
    ParamSpec("min_speed_mps", 1.0, "no hint below this speed [m/s]", (0.0, 50.0)),
    ParamSpec("motion_window_s", 2.0, "fixes of this window give heading and speed without odometry [s]",
              (0.1, 60.0)),
    ParamSpec("motion_max_age_s", 1.0, "odometry older than this (vs the fix) is not used [s]", (0.0, 60.0)),
    ParamSpec("use_odometry", True, "heading and speed from odom (its frame must be ENU-aligned); false: from fixes"),
    ParamSpec("fix_timeout_s", 2.0, "no NavSatFix for this long: diagnostics STALE [s]", (0.1, 60.0)),
    ParamSpec("clock_jump_s", 5.0, "a fix stamped this much before the last accepted one (a restarted stamp "
              "source) restarts the resolver, as the clock going back does [s]", (0.5, 60.0)),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics [s]", (0.1, 10.0)),
    ParamSpec("region_override", "", "operator override: force this region; empty: follow GNSS", read_only=False),
)

PARAMETERS: dict[str, tuple[ParamSpec, ...]] = {DRIVING_NODE: DRIVING_PARAMETERS,
                                                 REGION_MANAGER_NODE: REGION_MANAGER_PARAMETERS}

# Topic names relative to the node's namespace (remap them in launch files), message type per topic.
DRIVING_TOPICS: dict[str, str] = {
    "camera/image": "sensor_msgs/msg/Image",
    "camera/image/compressed": "sensor_msgs/msg/CompressedImage",
    "lidar/points": "sensor_msgs/msg/PointCloud2",
    "odom": "nav_msgs/msg/Odometry",
    "speed": "std_msgs/msg/Float32",
    "vehicle/twist": "geometry_msgs/msg/TwistStamped",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "regionadapt/active_region": "std_msgs/msg/String",
    "regionadapt/next_region": "std_msgs/msg/String",
    "control/command": "ackermann_msgs/msg/AckermannDriveStamped | carla_msgs/msg/CarlaEgoVehicleControl | "
                       "geometry_msgs/msg/Twist",
    "perception/traffic_light": "std_msgs/msg/String",
    "perception/lane": "geometry_msgs/msg/Vector3Stamped",
    "perception/obstacle_distance": "std_msgs/msg/Float32",
    "perception/risk": "geometry_msgs/msg/Vector3Stamped",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
REGION_MANAGER_TOPICS: dict[str, str] = {
    "gnss/fix": "sensor_msgs/msg/NavSatFix",
    "odom": "nav_msgs/msg/Odometry",
    "regionadapt/active_region": "std_msgs/msg/String",
    "regionadapt/next_region": "std_msgs/msg/String",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
TOPICS: dict[str, dict[str, str]] = {DRIVING_NODE: DRIVING_TOPICS, REGION_MANAGER_NODE: REGION_MANAGER_TOPICS}


def declare(node: Any, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on an rclpy node; returns {name: value} (overrides applied).

    rclpy raises a ParameterException subclass when an override (a YAML file, ``-p``) has the wrong type or is
    outside the declared range; that becomes a ConfigError naming the node, the parameter and rclpy's reason.
    """
    from rclpy.exceptions import ParameterException

    values = {}
    for spec in specs:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except ParameterException as exc:
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            raise ConfigError(f"{node.get_name()} parameters",
                              f"parameter {spec.name} ({spec.type_name}): {reason}") from None
    return values


def add_parameter_callbacks(node: Any, validate: Any, apply: Any) -> bool:
    """Register ``validate`` as the node's on-set-parameters callback (rclpy documents it as validation: no
    side effects) and ``apply`` as its post-set callback, where rclpy has one (Iron and later: Jazzy). Returns
    False on Humble, which has none: the caller applies the change at the end of ``validate`` then."""
    node.add_on_set_parameters_callback(validate)
    if not hasattr(node, "add_post_set_parameters_callback"):
        return False
    node.add_post_set_parameters_callback(apply)
    return True


def spec_of(specs: tuple[ParamSpec, ...], name: str) -> ParamSpec | None:
    return next((s for s in specs if s.name == name), None)


def default_config_path(file_name: str) -> str:
    """``<share>/config/<file_name>`` of the installed package, or the source tree's config/ when the package is
    not installed in a ROS workspace."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory(PACKAGE), "config", file_name)
    except (ImportError, LookupError, ValueError):
        return str(Path(__file__).resolve().parents[2] / "config" / file_name)


def driving_config(values: Mapping[str, Any]) -> Any:
    """A DrivingConfig from driving_node parameter values (ConfigError names a bad parameter)."""
    from regionadapt_ros.driving_session import DrivingConfig

    limits = VehicleLimits.from_dict({k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("vehicle.")},
                                     source="vehicle.* parameters")
    risk = RiskConfig.from_dict({k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("risk.")},
                                source="risk.* parameters")
    corridor = CorridorConfig.from_dict({k.split(".", 1)[1]: v for k, v in values.items()
                                         if k.startswith("corridor.")}, source="corridor.* parameters")
    return DrivingConfig(
        backend=values["backend"],
        tensorrt_precision=values["tensorrt_precision"],
        tensorrt_refit=values["tensorrt_refit"],
        tensorrt_dla_core=values["tensorrt_dla_core"],
        tensorrt_cache_dir=values["tensorrt_cache_dir"],
        command_type=values["command_type"],
        speed_source=values["speed_source"],
        lidar_max_age_s=values["lidar_max_age_s"],
        camera_timeout_s=values["camera_timeout_s"],
        speed_max_age_s=values["speed_max_age_s"],
        degraded_max_speed=values["degraded_max_speed"],
        clock_jump_s=values["clock_jump_s"],
        frame_id=values["frame_id"],
        lidar_extrinsic=_numbers(values["lidar_extrinsic"], "lidar_extrinsic"),
        ground_z_m=values["ground_z_m"],
        max_image_pixels=values["max_image_pixels"],
        lidar_max_points=values["lidar_max_points"],
        lidar_intensity_max=values["lidar_intensity_max"],
        limits=limits,
        emergency_brake=values.get("emergency_brake", True),
        risk=risk,
        corridor=corridor,
    )


def _numbers(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).replace(",", " ").split())
    except ValueError:
        raise ConfigError(name, f"{text!r} is not a list of numbers 'x y z roll pitch yaw'") from None


def check_values(specs: tuple[ParamSpec, ...], values: Mapping[str, Any], source: str) -> None:
    """ConfigError naming ``source`` and the parameter for the first unknown name or refused value."""
    for name, value in values.items():
        spec = spec_of(specs, name)
        if spec is None:
            if name in BUILTIN_PARAMETERS:
                continue
            raise ConfigError(source, f"unknown parameter {name!r}")
        problem = spec.problem(value)
        if problem is not None:
            raise ConfigError(source, problem)
