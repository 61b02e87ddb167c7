"""Import a recorded rosbag2 drive as imitation-learning pairs for the decision model.

Every camera frame becomes one sample: the frame itself, the nearest lidar sweep within ``max_lidar_age_s``,
the ego speed and the vehicle's command at the frame's stamp (interpolated between the two neighbouring
messages when both are within ``max_dt_s``, else the nearest one within ``max_dt_s``). A frame without a
match is skipped and counted by reason. Labels: ``steering``, ``accel`` and ``speed``; the perception labels
are NaN (not labelled). The format and the options are documented in docs/data_formats.md.

Commands come from the bag's command topic (``command_source="command"``):

- ``ackermann_msgs/AckermannDriveStamped``: ``drive.steering_angle`` [rad] and ``drive.acceleration``, which
  the message defines as a magnitude: its sign is whether ``drive.speed`` is above or below the measured speed
  (a recording with negative accelerations is taken as signed already); when a recording leaves every
  ``acceleration`` at 0 while ``drive.speed`` changes, accel is taken from the commanded speed as for Twist;
- ``carla_msgs/CarlaEgoVehicleControl``: the inverse of the product's CARLA mapping (core.control):
  steering = -steer * max_steering_angle, accel = throttle / throttle_per_accel - brake / brake_per_decel
  (negated in reverse);
- ``geometry_msgs/Twist``: steering = atan(wheelbase * angular.z / linear.x) for |linear.x| > 1 m/s (NaN below:
  the angle is not observable), accel = (linear.x - measured speed) / command period, the inverse of the
  product's Twist output (target speed = speed + accel * period).

or, with no command topic (``command_source="odometry"``), from ``nav_msgs/Odometry`` or a vehicle's
``geometry_msgs/TwistStamped`` (both carry the yaw rate): accel is the slope of a
local linear fit of the speed over ``accel_window_s`` (a smoothed d(speed)/dt), steering is
atan(wheelbase * yaw_rate / speed) with the yaw rate averaged over the same window, for |speed| > 1 m/s.

Time stamps are the messages' header stamps (``time_source="header"``; headerless messages such as
``std_msgs/Float32`` and ``geometry_msgs/Twist`` and zero stamps use the recording time) or the recording
times of all messages (``time_source="log"``).

Two passes over the bag: the first reads only the stamps of the camera and lidar messages (from the CDR
header, without decoding the pixels) and the small speed/command messages, matches and validates
everything (topics, counts, the split); the second decodes only the frames and sweeps that are kept. Nothing
is written unless the first pass succeeded.

Modules: ``config`` (the options and the message types read), ``signals`` (time series, interpolation, the
derivations of steering and accel), ``topics`` (choosing the bag's topics), ``passes`` (the index pass and the
conversion pass), ``importer`` (``import_rosbag``).
"""

from regionadapt_ros.adaptation.importers.rosbag.config import (
    ACKERMANN_TYPE,
    CARLA_TYPE,
    CLOCK_MISMATCH_S,
    CLOUD_TYPE,
    COMMAND_SOURCES,
    COMPRESSED_TYPE,
    FLOAT32_TYPE,
    IMAGE_TYPE,
    LIDAR_FIELDS,
    ODOMETRY_TYPE,
    ROLE_TYPES,
    TIME_SOURCES,
    TWIST_TYPE,
    RosbagImportConfig,
)
from regionadapt_ros.adaptation.importers.rosbag.importer import import_rosbag, with_vehicle
from regionadapt_ros.adaptation.importers.rosbag.signals import (
    TimeSeries,
    cdr_header_stamp,
    command_period,
    local_linear_fit,
    nearest_index,
    odometry_commands,
    steering_from_yaw_rate,
)

__all__ = [
    "ACKERMANN_TYPE",
    "CARLA_TYPE",
    "CLOCK_MISMATCH_S",
    "CLOUD_TYPE",
    "COMMAND_SOURCES",
    "COMPRESSED_TYPE",
    "FLOAT32_TYPE",
    "IMAGE_TYPE",
    "LIDAR_FIELDS",
    "ODOMETRY_TYPE",
    "ROLE_TYPES",
    "TIME_SOURCES",
    "TWIST_TYPE",
    "RosbagImportConfig",
    "TimeSeries",
    "cdr_header_stamp",
    "command_period",
    "import_rosbag",
    "local_linear_fit",
    "nearest_index",
    "odometry_commands",
    "steering_from_yaw_rate",
    "with_vehicle",
]
