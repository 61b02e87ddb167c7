"""The rosbag import's options and the message types it reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from regionadapt_ros.core.bag_topics import FLOAT32_TYPE, ODOMETRY_TYPE, TWIST_STAMPED_TYPE  # the speed inputs' types
from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.control import VehicleLimits
from regionadapt_ros.core.errors import ConfigError

IMAGE_TYPE = "sensor_msgs/msg/Image"


COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"


ACKERMANN_TYPE = "ackermann_msgs/msg/AckermannDriveStamped"


CARLA_TYPE = "carla_msgs/msg/CarlaEgoVehicleControl"


TWIST_TYPE = "geometry_msgs/msg/Twist"


# Accepted types per role, most preferred first (used when a topic is not named).
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "camera": (IMAGE_TYPE, COMPRESSED_TYPE),
    "lidar": (CLOUD_TYPE,),
    "speed": (ODOMETRY_TYPE, FLOAT32_TYPE, TWIST_STAMPED_TYPE),  # the replay's order (replay_topics.SPEED_ROLES)
    "command": (ACKERMANN_TYPE, CARLA_TYPE, TWIST_TYPE),
}


COMMAND_SOURCES = ("command", "odometry")


TIME_SOURCES = ("header", "log")


LIDAR_FIELDS = ("x", "y", "z", "intensity")  # as the serving pipeline reads clouds


# Header stamps further than this from the recording times mean two clocks (e.g. sim time vs wall time).
CLOCK_MISMATCH_S = 1.0


@dataclass(frozen=True)
class RosbagImportConfig:
    """How a bag becomes samples. Topics left None are found by type when the bag has exactly one candidate
    (see ROLE_TYPES for the preference between types). Times in seconds, lengths in metres."""

    camera_topic: str | None = None
    lidar_topic: str | None = None
    use_lidar: bool = True               # False: ignore lidar, BEV grids are zeros
    speed_topic: str | None = None
    command_topic: str | None = None
    command_source: str = "command"      # "command" (a command topic) or "odometry" (derived)
    max_dt_s: float = 0.1                # speed / command message to image stamp
    max_lidar_age_s: float = 0.1         # lidar sweep to image stamp
    time_source: str = "header"
    accel_window_s: float = 0.5          # smoothing window of d(speed)/dt and yaw rate (odometry source)
    min_steer_speed_mps: float = 1.0     # below this |speed| steering is not observable from yaw rate
    limits: VehicleLimits = field(default_factory=VehicleLimits)  # wheelbase, CARLA pedal/steer scaling
    # False: the steering limit was not given (--max-steering-angle), so a CARLA control topic implies CARLA's
    # (control.CARLA_MAX_STEERING_ANGLE), as the driving node's carla.yaml has it.
    max_steering_angle_given: bool = False
    # Clouds are brought into the vehicle frame as the driving node brings them: by the bag's /tf_static, else
    # by this extrinsic (x, y, z [m], roll, pitch, yaw [rad]: the lidar's pose in the vehicle frame).
    vehicle_frame: str = "base_link"
    lidar_extrinsic: tuple[float, ...] | None = None
    ground_z_m: float = BEV.z_ground  # the road's height in the vehicle frame (0: a REP 105 base_link on the road)
    every: int = 1                       # keep every n-th camera frame (after matching)
    split_block_s: float = 10.0          # time blocks of the train/val/test split
    seed: int = 0

    def validate(self) -> None:
        """ConfigError naming the option that is out of range."""
        if self.command_source not in COMMAND_SOURCES:
            raise ConfigError("--command-source", f"{self.command_source!r} is not one of {', '.join(COMMAND_SOURCES)}")
        if self.time_source not in TIME_SOURCES:
            raise ConfigError("--time-source", f"{self.time_source!r} is not one of {', '.join(TIME_SOURCES)}")
        for option, value in (("--max-dt", self.max_dt_s), ("--max-lidar-age", self.max_lidar_age_s),
                              ("--accel-window", self.accel_window_s), ("--split-block", self.split_block_s)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(option, f"must be a positive number of seconds, got {value}")
        if not (math.isfinite(self.min_steer_speed_mps) and self.min_steer_speed_mps > 0):
            raise ConfigError("--min-steer-speed", f"must be a positive speed, got {self.min_steer_speed_mps}")
        if self.every < 1:
            raise ConfigError("--every", f"must be at least 1, got {self.every}")
        if self.lidar_extrinsic is not None:
            from regionadapt_ros.core.frames import parse_extrinsic

            parse_extrinsic(self.lidar_extrinsic, "--lidar-extrinsic")  # before a message is read
        if not math.isfinite(self.ground_z_m):
            raise ConfigError("--ground-z", f"must be a finite height in metres, got {self.ground_z_m}")
        if not self.vehicle_frame.strip("/ "):
            raise ConfigError("--vehicle-frame", "must name a frame")
        if self.command_source == "odometry" and self.command_topic is not None:
            raise ConfigError("--command-topic", "is not used with --command-source odometry")
