"""ROS message ⇄ numpy conversion, duck-typed on ROS field names so rclpy and rosbags messages both work.

Readers (message → arrays/numbers): ``image_to_array``, ``image_to_rgb8``, ``compressed_image_to_array``,
``compressed_image_to_rgb8``, ``pointcloud2_to_array`` / ``read_pointcloud2``, ``navsatfix_to_fix``,
``odometry_speed``, ``float32_speed``, ``ackermann_to_command``, ``carla_control_to_command``, ``stamp_to_s``.
Builders (numbers/arrays → message) take a type resolver from ``rosbags_types`` or ``rclpy_types``.
Every refusal is a ``MessageConversionError`` naming the message field and the problem; repairs are counted
on an optional ``CountedWarnings``. Nothing here imports rclpy or torch.
"""

from regionadapt_ros.core.msgconv.builders import (
    DiagnosticEntry,
    build_ackermann,
    build_carla_control,
    build_compressed_image,
    build_diagnostic_array,
    build_float32,
    build_header,
    build_image,
    build_navsatfix,
    build_odometry,
    build_pointcloud2,
    build_pointfield,
    build_string,
    build_time,
    build_twist,
    build_vector3,
)
from regionadapt_ros.core.msgconv.image import (
    DEFAULT_MAX_IMAGE_PIXELS,
    CompressedFormat,
    ImageEncoding,
    compressed_image_to_array,
    compressed_image_to_rgb8,
    image_encoding,
    image_to_array,
    image_to_rgb8,
    parse_compressed_format,
    rgb_to_bayer,
)
from regionadapt_ros.core.msgconv.msgtypes import (
    TypeResolver,
    normalise_type_name,
    rclpy_types,
    rosbags_types,
    rosbags_typestore,
)
from regionadapt_ros.core.msgconv.navsat import GnssFix, horizontal_std_m, navsatfix_to_fix
from regionadapt_ros.core.msgconv.pointcloud import (
    DEFAULT_LIDAR_MAX_POINTS,
    CloudConversion,
    pointcloud2_to_array,
    pointfield_dtype,
    read_pointcloud2,
)
from regionadapt_ros.core.msgconv.stamps import s_to_stamp_parts, stamp_to_s
from regionadapt_ros.core.msgconv.vehicle import (
    AckermannCommand,
    CarlaControl,
    ackermann_to_command,
    carla_control_to_command,
    float32_speed,
    odometry_speed,
    odometry_yaw_rate,
)

__all__ = [
    "DEFAULT_LIDAR_MAX_POINTS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "AckermannCommand",
    "CarlaControl",
    "CloudConversion",
    "CompressedFormat",
    "DiagnosticEntry",
    "GnssFix",
    "ImageEncoding",
    "TypeResolver",
    "ackermann_to_command",
    "build_ackermann",
    "build_carla_control",
    "build_compressed_image",
    "build_diagnostic_array",
    "build_float32",
    "build_header",
    "build_image",
    "build_navsatfix",
    "build_odometry",
    "build_pointcloud2",
    "build_pointfield",
    "build_string",
    "build_time",
    "build_twist",
    "build_vector3",
    "carla_control_to_command",
    "compressed_image_to_array",
    "compressed_image_to_rgb8",
    "float32_speed",
    "horizontal_std_m",
    "image_encoding",
    "image_to_array",
    "image_to_rgb8",
    "navsatfix_to_fix",
    "normalise_type_name",
    "odometry_speed",
    "odometry_yaw_rate",
    "parse_compressed_format",
    "pointcloud2_to_array",
    "pointfield_dtype",
    "rclpy_types",
    "read_pointcloud2",
    "rgb_to_bayer",
    "rosbags_types",
    "rosbags_typestore",
    "s_to_stamp_parts",
    "stamp_to_s",
]
