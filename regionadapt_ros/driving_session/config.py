"""The driving session's parameters (the driving node's parameters of the same names) and the names it
publishes under."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.collision_risk import RiskConfig
from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.control import VehicleLimits
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.frames import parse_extrinsic
from regionadapt_ros.core.lidar_corridor import CorridorConfig
from regionadapt_ros.pipeline import STAGES

LIDAR_GAP_NONE_YET = "no lidar sweep received yet"

COMMAND_TYPES = ("ackermann", "carla", "twist")
SPEED_SOURCES = ("odom", "speed", "twist")
BACKENDS = ("onnxruntime", "torch", "tensorrt", "auto")
COMMAND_MSG_TYPES = {
    "ackermann": "ackermann_msgs/msg/AckermannDriveStamped",
    "carla": "carla_msgs/msg/CarlaEgoVehicleControl",
    "twist": "geometry_msgs/msg/Twist",
}
# Perception results on standard types (RViz / Foxglove), keyed by topic relative to the node's namespace.
# perception/lane is a Vector3Stamped: x = lateral offset [m, + = left of the lane centre], y = heading error
# [rad], z = curvature [1/m]. perception/risk is a Vector3Stamped too: x = time to collision [s] (capped at
# 100; NaN: unknown), y = closing speed [m/s, + = closing] (NaN: unknown), z = level (0 none, 1 warn, 2 brake).
PERCEPTION_TOPICS = {
    "perception/traffic_light": "std_msgs/msg/String",
    "perception/lane": "geometry_msgs/msg/Vector3Stamped",
    "perception/obstacle_distance": "std_msgs/msg/Float32",
    "perception/risk": "geometry_msgs/msg/Vector3Stamped",
}
SESSION_STAGES = (*STAGES, "convert_lidar")
LIDAR_FIELDS = ("x", "y", "z", "intensity")
TENSORRT_PRECISIONS = ("fp16", "fp32")

# Kinds of CountedWarnings that mean a camera frame produced no command.
DROP_KINDS = ("bad_image", "bad_compressed_image", "frame_error", "not_started", "late_frame",
              "out_of_order_frame")
# Callbacks on different executor threads read the clock before they get the session's lock, so their times
# can arrive out of order by about the time a lock hand-over takes; a step back of up to this much is that, not
# a clock jump [s].
REORDER_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class DrivingConfig:
    """Driving parameters (the driving node's parameters of the same names). Seconds, metres, m/s.

    backend: "onnxruntime" | "torch" | "tensorrt" | "auto" (see ``inference.selection``).
    tensorrt_precision, tensorrt_refit, tensorrt_dla_core (-1: the GPU), tensorrt_cache_dir ("": the default):
        the engines a TensorRT backend serves, and so the engine cache keys it looks up; ``regionadapt engine
        build`` fills the cache for the same settings.
    command_type: "ackermann" | "carla" | "twist", the output message type.
    speed_source: "odom" (nav_msgs/Odometry), "speed" (std_msgs/Float32, CARLA's speedometer) or "twist"
        (geometry_msgs/TwistStamped in the vehicle frame, a vehicle interface's ``vehicle/twist``).
    lidar_max_age_s: a sweep is used for a frame when its stamp is within this of the image stamp.
    camera_timeout_s: no camera frame for longer than this → ``tick`` returns stop commands.
    speed_max_age_s: a speed older than this is reported as stale (the last value is still used).
    degraded_max_speed: speed cap [m/s] while the lidar is missing or stale.
    clock_jump_s: a forward jump of the clock by more than this counts as a jump (history reset).
    error_hold_s: diagnostics stay ERROR (non-finite output) / WARN (dropped frames) this long after the event.
    frame_id: header frame of stamped outputs, and the vehicle frame lidar clouds are brought into.
    lidar_extrinsic: () or (x, y, z, roll, pitch, yaw) [m, rad], the lidar's pose in the vehicle frame, for
        clouds whose frame ``/tf_static`` does not connect to ``frame_id`` (core.frames).
    ground_z_m: height of the road in the vehicle frame; the BEV grid assumes -1.7 (clouds are shifted by the
        difference: a REP 105 base_link on the road is 0).
    max_image_pixels: a camera frame of more pixels is dropped (counted); for a CompressedImage the encoded
        header is checked before decoding, so the cost of a hostile frame is bounded.
    lidar_max_points: a sweep of more points is strided down to this many before it is read (counted as
        ``pointcloud2.downsampled``), bounding the conversion and BEV cost of one sweep.
    lidar_intensity_max: the lidar's full-scale intensity (255 for the 8-bit drivers: Velodyne, Livox,
        RoboSense; 1 for CARLA), which the BEV grid maps to reflectance 1; 0 decides it once from the first sweep
        (``core.preprocess.IntensityScale``).
    load_timeout_s: a bundle load (the initial one included) that takes longer is abandoned and counted as a
        failed load; the loader process is restarted and later loads go on.
    emergency_brake: the collision-risk guard may override the decision with full braking (on by default; off,
    it still records what it would have done). risk: the vehicle's collision-risk thresholds and filter (both
    channels). corridor: the lidar channel's path corridor (``core.lidar_corridor``; ``enabled`` False leaves the
    guard to the perception channel alone).
    """

    backend: str = "onnxruntime"
    tensorrt_precision: str = "fp16"
    tensorrt_refit: bool = True
    tensorrt_dla_core: int = -1
    tensorrt_cache_dir: str = ""
    command_type: str = "ackermann"
    speed_source: str = "odom"
    lidar_max_age_s: float = 0.15
    camera_timeout_s: float = 0.5
    speed_max_age_s: float = 1.0
    degraded_max_speed: float = 5.0
    clock_jump_s: float = 5.0
    error_hold_s: float = 5.0
    frame_id: str = "base_link"
    lidar_extrinsic: tuple[float, ...] = ()
    ground_z_m: float = BEV.z_ground
    max_image_pixels: int = msgconv.DEFAULT_MAX_IMAGE_PIXELS
    lidar_max_points: int = msgconv.DEFAULT_LIDAR_MAX_POINTS
    lidar_intensity_max: float = 0.0
    limits: VehicleLimits = field(default_factory=VehicleLimits)
    warmup_iterations: int = 2
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    rate_window_s: float = 2.0
    load_timeout_s: float = 20.0
    emergency_brake: bool = True
    risk: RiskConfig = field(default_factory=RiskConfig)
    corridor: CorridorConfig = field(default_factory=CorridorConfig)

    def tensorrt_options(self) -> dict[str, Any]:
        """Keyword arguments of ``TensorRTBackend`` for these settings."""
        return {"precision": self.tensorrt_precision, "refittable": self.tensorrt_refit,
                "dla_core": None if self.tensorrt_dla_core < 0 else self.tensorrt_dla_core,
                "cache": self.tensorrt_cache_dir or None}

    def __post_init__(self) -> None:
        for name, allowed in (("backend", BACKENDS), ("command_type", COMMAND_TYPES),
                              ("speed_source", SPEED_SOURCES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("lidar_max_age_s", "camera_timeout_s", "speed_max_age_s", "clock_jump_s", "error_hold_s",
                     "retry_initial_s", "retry_max_s", "rate_window_s", "load_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                      and value > 0):
                raise ConfigError(name, f"must be a positive number, got {value!r}")
        for name in ("degraded_max_speed", "lidar_intensity_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                      and value >= 0):
                raise ConfigError(name, f"must be a number >= 0, got {value!r}")
        parse_extrinsic(self.lidar_extrinsic)
        if isinstance(self.ground_z_m, bool) or not isinstance(self.ground_z_m, (int, float)) or not math.isfinite(
                self.ground_z_m):
            raise ConfigError("ground_z_m", f"must be a finite height in metres, got {self.ground_z_m!r}")
        for name in ("max_image_pixels", "lidar_max_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        if not isinstance(self.limits, VehicleLimits):
            raise ConfigError("limits", f"must be a VehicleLimits, got {type(self.limits).__name__}")
        if self.tensorrt_precision not in TENSORRT_PRECISIONS:
            raise ConfigError("tensorrt_precision", f"{self.tensorrt_precision!r} is not one of "
                                                    f"{', '.join(TENSORRT_PRECISIONS)}")
        if not isinstance(self.tensorrt_refit, bool):
            raise ConfigError("tensorrt_refit", f"must be true or false, got {self.tensorrt_refit!r}")
        if isinstance(self.tensorrt_dla_core, bool) or not isinstance(self.tensorrt_dla_core, int) \
                or not -1 <= self.tensorrt_dla_core <= 7:
            raise ConfigError("tensorrt_dla_core", f"must be a DLA core 0..7 or -1 (the GPU), got "
                                                   f"{self.tensorrt_dla_core!r}")
        if self.tensorrt_dla_core >= 0 and self.tensorrt_precision == "fp32":
            raise ConfigError("tensorrt_dla_core", "DLA runs fp16 or int8 only: set tensorrt_precision fp16 or "
                                                   "tensorrt_dla_core -1")
        if not isinstance(self.tensorrt_cache_dir, str):
            raise ConfigError("tensorrt_cache_dir", f"must be a path (empty: the default), got "
                                                    f"{self.tensorrt_cache_dir!r}")
        if not isinstance(self.emergency_brake, bool):
            raise ConfigError("emergency_brake", f"must be true or false, got {self.emergency_brake!r}")
        if not isinstance(self.risk, RiskConfig):
            raise ConfigError("risk", f"must be a RiskConfig, got {type(self.risk).__name__}")
        if not isinstance(self.corridor, CorridorConfig):
            raise ConfigError("corridor", f"must be a CorridorConfig, got {type(self.corridor).__name__}")
