"""Messages the product publishes or writes into bags, built from numbers and arrays.

Every builder takes ``types``, a resolver ``name -> message class`` (see ``msgtypes``), and constructs the
message by passing every field as a keyword argument, nested messages resolved through ``types`` too: rosbags
dataclasses need every field, rclpy classes accept them. Field values are adapted to the class family:
rosbags wants numpy arrays for ``uint8[]``; the generated rclpy classes want ``array.array('B')`` for
``uint8[]`` sequences (their setter refuses numpy arrays and checks lists element by element) and ``bytes``
for ``byte`` fields. Fixed-size ``float64[N]`` arrays are numpy arrays for both.
Stamps are float seconds (``s_to_stamp_parts``); arrays are copied, so later writes to them do not change
a built message.
"""

from __future__ import annotations

import array as pyarray
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv.image import COMPRESSED, IMAGE, image_encoding, native_is_bigendian
from regionadapt_ros.core.msgconv.msgtypes import TypeResolver
from regionadapt_ros.core.msgconv.navsat import (
    COVARIANCE_TYPE_DIAGONAL_KNOWN,
    COVARIANCE_TYPE_UNKNOWN,
)
from regionadapt_ros.core.msgconv.stamps import s_to_stamp_parts

POINTFIELD_FLOAT32 = 7
SERVICE_GPS = 1
# One DiagnosticStatus entry: (name, level 0..3, message, hardware_id, key/value pairs).
DiagnosticEntry = tuple[str, int, str, str, Mapping[str, str]]


def _new(cls: Any, **fields: Any) -> Any:
    """Instantiate a message class of either family with all ``fields``, adapting byte fields for rclpy."""
    if dataclasses.is_dataclass(cls):
        return cls(**fields)
    field_types = getattr(cls, "get_fields_and_field_types", None)
    if field_types is not None:
        declared = field_types()
        for name, value in fields.items():
            kind = declared.get(name, "")
            if kind == "octet":
                fields[name] = bytes([int(value)])
            elif kind.startswith("sequence<uint8") and isinstance(value, np.ndarray):
                as_array = pyarray.array("B")
                as_array.frombytes(memoryview(np.ascontiguousarray(value, dtype=np.uint8)))
                fields[name] = as_array
    return cls(**fields)


def build_time(types: TypeResolver, stamp_s: float) -> Any:
    """``builtin_interfaces/Time`` from float seconds."""
    sec, nanosec = s_to_stamp_parts(stamp_s)
    return _new(types("builtin_interfaces/msg/Time"), sec=sec, nanosec=nanosec)


def build_header(types: TypeResolver, stamp_s: float, frame_id: str = "") -> Any:
    """``std_msgs/Header`` from float seconds and a frame id."""
    return _new(types("std_msgs/msg/Header"), stamp=build_time(types, stamp_s), frame_id=str(frame_id))


def build_image(types: TypeResolver, array: np.ndarray, encoding: str, stamp_s: float, frame_id: str = "") -> Any:
    """``sensor_msgs/Image`` from an ``(H, W, C)`` or ``(H, W)`` array already in ``encoding``'s layout.

    The array's dtype must match the encoding (uint8 for ``*8``, uint16 for ``*16``/``16UC*``, float32 for
    ``32FC*``...) and its channel count the encoding's (a Bayer mosaic is ``(H, W)``, see ``rgb_to_bayer``).
    Rows are written unpadded (``step = W * C * itemsize``) in this machine's byte order.
    """
    enc = image_encoding(encoding)
    values = np.asarray(array)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.shape[2] != enc.channels:
        raise MessageConversionError(
            IMAGE, "encoding", f"{encoding} has {enc.channels} channel(s), the array has shape {values.shape}"
        )
    if values.dtype != enc.dtype:
        raise MessageConversionError(IMAGE, "encoding", f"{encoding} holds {enc.dtype}, the array is {values.dtype}")
    height, width, channels = values.shape
    data = np.array(values, order="C", copy=True).reshape(-1).view(np.uint8)
    return _new(
        types("sensor_msgs/msg/Image"),
        header=build_header(types, stamp_s, frame_id),
        height=int(height),
        width=int(width),
        encoding=enc.name,
        is_bigendian=int(native_is_bigendian() and enc.dtype.itemsize > 1),
        step=int(width * channels * enc.dtype.itemsize),
        data=data,
    )


def build_compressed_image(types: TypeResolver, image: np.ndarray, codec: str, stamp_s: float,
                           frame_id: str = "", quality: int = 90) -> Any:
    """``sensor_msgs/CompressedImage`` as image_transport's compressed plugin writes it.

    ``image``: ``(H, W, 3)`` uint8 RGB (format ``"rgb8; <codec> compressed bgr8"``), or ``(H, W)`` /
    ``(H, W, 1)`` uint8 or uint16 grey (``"mono8; ..."`` / ``"mono16; png compressed mono16"``).
    ``codec``: ``jpeg`` (``quality`` 0..100) or ``png``.
    """
    codec = codec.lower()
    if codec not in ("jpeg", "png"):
        raise ValueError(f"codec must be jpeg or png, got {codec!r}")
    values = np.asarray(image)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim == 3 and values.shape[2] == 3 and values.dtype == np.uint8:
        fmt = f"rgb8; {codec} compressed bgr8"
        pixels = cv2.cvtColor(values, cv2.COLOR_RGB2BGR)
    elif values.ndim == 2 and values.dtype in (np.uint8, np.uint16):
        mono = "mono8" if values.dtype == np.uint8 else "mono16"
        if mono == "mono16" and codec == "jpeg":
            raise ValueError("16-bit images can only be compressed as png")
        fmt = f"{mono}; {codec} compressed {mono}"
        pixels = values
    else:
        raise ValueError(f"expected (H, W, 3) uint8 RGB or (H, W) uint8/uint16 grey, got {values.shape} {values.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", pixels, params)
    if not ok:
        raise MessageConversionError(COMPRESSED, "data", f"OpenCV could not encode the image as {codec}")
    return _new(
        types("sensor_msgs/msg/CompressedImage"),
        header=build_header(types, stamp_s, frame_id),
        format=fmt,
        data=encoded.reshape(-1),
    )


def build_pointfield(types: TypeResolver, name: str, offset: int, datatype: int, count: int = 1) -> Any:
    """``sensor_msgs/PointField``."""
    return _new(types("sensor_msgs/msg/PointField"), name=str(name), offset=int(offset), datatype=int(datatype),
                count=int(count))


def build_pointcloud2(types: TypeResolver, points: np.ndarray, field_names: Sequence[str], stamp_s: float,
                      frame_id: str = "") -> Any:
    """Unorganised ``sensor_msgs/PointCloud2`` (height 1) from ``(N, K)`` points, one FLOAT32 field per column
    at offset ``4 * k`` (``point_step = 4 * K``, CARLA's layout for x, y, z, intensity).
    ``is_dense`` is True when every value is finite."""
    pts = np.array(points, dtype=np.float32, order="C", copy=True)
    names = [str(n) for n in field_names]
    if pts.ndim != 2 or pts.shape[1] != len(names):
        raise ValueError(f"points must be (N, {len(names)}) for fields {names}, got shape {pts.shape}")
    n_points, n_fields = pts.shape
    point_step = 4 * n_fields
    return _new(
        types("sensor_msgs/msg/PointCloud2"),
        header=build_header(types, stamp_s, frame_id),
        height=1,
        width=int(n_points),
        fields=[build_pointfield(types, name, 4 * k, POINTFIELD_FLOAT32) for k, name in enumerate(names)],
        is_bigendian=native_is_bigendian(),
        point_step=point_step,
        row_step=point_step * int(n_points),
        data=pts.reshape(-1).view(np.uint8),
        is_dense=bool(np.isfinite(pts).all()),
    )


def build_navsatfix(types: TypeResolver, lat: float, lon: float, alt: float, stamp_s: float, status: int = 0,
                    h_std_m: float | None = None, frame_id: str = "", service: int = SERVICE_GPS,
                    v_std_m: float | None = None) -> Any:
    """``sensor_msgs/NavSatFix``. With ``h_std_m`` (metres) the covariance is diagonal,
    ``diag(h², h², v²)`` with ``v = v_std_m`` or ``h_std_m``, type DIAGONAL_KNOWN; without it all zeros, type
    UNKNOWN."""
    covariance = np.zeros(9, dtype=np.float64)
    covariance_type = COVARIANCE_TYPE_UNKNOWN
    if h_std_m is not None:
        vertical = h_std_m if v_std_m is None else v_std_m
        covariance[[0, 4, 8]] = (h_std_m**2, h_std_m**2, vertical**2)
        covariance_type = COVARIANCE_TYPE_DIAGONAL_KNOWN
    return _new(
        types("sensor_msgs/msg/NavSatFix"),
        header=build_header(types, stamp_s, frame_id),
        status=_new(types("sensor_msgs/msg/NavSatStatus"), status=int(status), service=int(service)),
        latitude=float(lat),
        longitude=float(lon),
        altitude=float(alt),
        position_covariance=covariance,
        position_covariance_type=covariance_type,
    )


def build_ackermann(types: TypeResolver, steering_angle: float, speed: float, accel: float, stamp_s: float,
                    frame_id: str = "", steering_angle_velocity: float = 0.0, jerk: float = 0.0) -> Any:
    """``ackermann_msgs/AckermannDriveStamped`` as the message defines its fields: steering angle [rad, + = left],
    ``speed`` [m/s, the direction: negative = reverse], ``acceleration`` = ``|accel|`` [m/s²] ("a desired
    absolute magnitude; that includes deceleration": whether the vehicle speeds up or slows down follows from
    ``speed``), ``steering_angle_velocity`` [rad/s] and ``jerk`` [m/s³] as positive limits, 0 meaning "as fast as
    possible". ``accel`` may be given signed (vehicle terms); a negative rate limit is a ValueError."""
    for name, value in (("steering_angle_velocity", steering_angle_velocity), ("jerk", jerk)):
        if not value >= 0.0:
            raise ValueError(f"AckermannDrive.{name} is a magnitude (>= 0), got {value}")
    drive = _new(
        types("ackermann_msgs/msg/AckermannDrive"),
        steering_angle=float(steering_angle),
        steering_angle_velocity=float(steering_angle_velocity),
        speed=float(speed),
        acceleration=abs(float(accel)),
        jerk=float(jerk),
    )
    return _new(types("ackermann_msgs/msg/AckermannDriveStamped"), header=build_header(types, stamp_s, frame_id),
                drive=drive)


def build_carla_control(types: TypeResolver, throttle: float, steer: float, brake: float, stamp_s: float,
                        hand_brake: bool = False, reverse: bool = False, gear: int = 0,
                        manual_gear_shift: bool = False, frame_id: str = "") -> Any:
    """``carla_msgs/CarlaEgoVehicleControl``: throttle [0, 1], steer [-1, 1] (+ = right), brake [0, 1].
    The stamp should be the source camera frame's (the CARLA leaderboard checks it)."""
    return _new(
        types("carla_msgs/msg/CarlaEgoVehicleControl"),
        header=build_header(types, stamp_s, frame_id),
        throttle=float(throttle),
        steer=float(steer),
        brake=float(brake),
        hand_brake=bool(hand_brake),
        reverse=bool(reverse),
        gear=int(gear),
        manual_gear_shift=bool(manual_gear_shift),
    )


def build_vector3(types: TypeResolver, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Any:
    """``geometry_msgs/Vector3``."""
    return _new(types("geometry_msgs/msg/Vector3"), x=float(x), y=float(y), z=float(z))


def build_twist(types: TypeResolver, linear_x: float, angular_z: float) -> Any:
    """``geometry_msgs/Twist`` with forward speed [m/s] and yaw rate [rad/s, + = left]; other axes zero."""
    return _new(types("geometry_msgs/msg/Twist"), linear=build_vector3(types, x=linear_x),
                angular=build_vector3(types, z=angular_z))


def build_twist_stamped(types: TypeResolver, linear_x: float, angular_z: float, stamp_s: float,
                        frame_id: str = "base_link") -> Any:
    """``geometry_msgs/TwistStamped`` in ``frame_id`` (a vehicle interface's twist): forward speed [m/s], yaw rate
    [rad/s, + = left]."""
    return _new(types("geometry_msgs/msg/TwistStamped"), header=build_header(types, stamp_s, frame_id),
                twist=build_twist(types, linear_x, angular_z))


def build_string(types: TypeResolver, text: str) -> Any:
    """``std_msgs/String``."""
    return _new(types("std_msgs/msg/String"), data=str(text))


def build_float32(types: TypeResolver, value: float) -> Any:
    """``std_msgs/Float32``."""
    return _new(types("std_msgs/msg/Float32"), data=float(value))


def build_diagnostic_array(types: TypeResolver, stamp_s: float, statuses: Iterable[DiagnosticEntry]) -> Any:
    """``diagnostic_msgs/DiagnosticArray`` from ``(name, level, message, hardware_id, {key: value})`` entries;
    level is DiagnosticStatus OK 0, WARN 1, ERROR 2, STALE 3."""
    key_value = types("diagnostic_msgs/msg/KeyValue")
    status_cls = types("diagnostic_msgs/msg/DiagnosticStatus")
    entries = []
    for name, level, message, hardware_id, values in statuses:
        if int(level) not in (0, 1, 2, 3):
            raise ValueError(f"diagnostic level of {name!r} must be 0..3, got {level}")
        entries.append(_new(
            status_cls,
            level=int(level),
            name=str(name),
            message=str(message),
            hardware_id=str(hardware_id),
            values=[_new(key_value, key=str(k), value=str(v)) for k, v in values.items()],
        ))
    return _new(types("diagnostic_msgs/msg/DiagnosticArray"), header=build_header(types, stamp_s, ""),
                status=entries)


def build_odometry(types: TypeResolver, speed: float, stamp_s: float, frame_id: str = "odom",
                   child_frame_id: str = "base_link", x: float = 0.0, y: float = 0.0, yaw: float = 0.0,
                   yaw_rate: float = 0.0) -> Any:
    """``nav_msgs/Odometry``: pose (x, y [m], yaw [rad]) in ``frame_id``, twist in ``child_frame_id``
    (forward ``speed`` [m/s], ``yaw_rate`` [rad/s]); covariances zero (unknown)."""
    quaternion = _new(types("geometry_msgs/msg/Quaternion"), x=0.0, y=0.0, z=math.sin(yaw / 2.0),
                      w=math.cos(yaw / 2.0))
    pose = _new(types("geometry_msgs/msg/Pose"),
                position=_new(types("geometry_msgs/msg/Point"), x=float(x), y=float(y), z=0.0),
                orientation=quaternion)
    return _new(
        types("nav_msgs/msg/Odometry"),
        header=build_header(types, stamp_s, frame_id),
        child_frame_id=str(child_frame_id),
        pose=_new(types("geometry_msgs/msg/PoseWithCovariance"), pose=pose,
                  covariance=np.zeros(36, dtype=np.float64)),
        twist=_new(types("geometry_msgs/msg/TwistWithCovariance"), twist=build_twist(types, speed, yaw_rate),
                   covariance=np.zeros(36, dtype=np.float64)),
    )
