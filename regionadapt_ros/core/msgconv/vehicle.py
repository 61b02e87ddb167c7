"""Vehicle state and command messages → plain numbers: speed from ``nav_msgs/Odometry``, ``std_msgs/Float32``
(CARLA's speedometer) or ``geometry_msgs/TwistStamped`` (a vehicle interface's twist), and recorded commands
(``ackermann_msgs/AckermannDriveStamped``, ``carla_msgs/CarlaEgoVehicleControl``) read back from bags, e.g. as
expert labels."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv.stamps import stamp_to_s

# No road vehicle moves at 150 m/s (540 km/h). A larger reading is a sensor or driver fault, and one past
# float32's range would reach the decision model as inf and make every output NaN.
MAX_PLAUSIBLE_SPEED_MPS = 150.0
# Half a turn a second is beyond any road vehicle that is driving, not spinning; so is a lateral acceleration
# (yaw rate x speed) of 1.5 g. Such a reading is a gyro fault or degrees per second published as radians: as
# yaw rate / speed it would curl the ego's predicted path up beside it, out of the way of what lies ahead.
MAX_PLAUSIBLE_YAW_RATE = math.pi  # rad/s
MAX_PLAUSIBLE_LATERAL_ACCEL = 15.0  # m/s²
# At a low speed neither bound above holds a wrong yaw rate back (2.5 rad/s at 5 m/s is 12.5 m/s² sideways), but
# the turn it implies does: yaw rate / speed is the path's curvature, and no car turns tighter than its steering
# allows. Half as much again leaves room for tyre slip and a noisy gyro. Below MIN_CURVATURE_SPEED_MPS the
# curvature is not defined well enough (noise over a walking pace) to judge by, nor used (``path_curvature``).
CURVATURE_MARGIN = 1.5
MIN_CURVATURE_SPEED_MPS = 1.0


def max_turn_curvature(max_steering_angle: float, wheelbase_m: float) -> float:
    """The tightest curvature [1/m] a measured yaw rate may imply for a vehicle of these limits: the kinematic
    bicycle's tan(max steering) / wheelbase, times ``CURVATURE_MARGIN``. ValueError unless the angle is in
    (0, pi/2) and the wheelbase positive: a negative bound would refuse every yaw rate."""
    if not (0.0 < max_steering_angle < math.pi / 2 and wheelbase_m > 0.0):
        raise ValueError(f"no turn bound for a steering angle of {max_steering_angle!r} rad and a wheelbase of "
                         f"{wheelbase_m!r} m")
    return CURVATURE_MARGIN * math.tan(max_steering_angle) / wheelbase_m


# World-fixed frames (REP 105's map and odom, REP 103's ENU/NED, the Earth's) and a GNSS receiver's. A twist
# expressed in one of them is a velocity over the ground in east/north (a localiser's, a receiver's), not the
# vehicle's forward speed: its x is the speed eastwards, zero when driving north. A frame is judged by the words
# of its name, so "ego/odom", "map_ned", "odom_combined" and "utm_10n" are world frames too. A receiver's frame
# ("gps", "gnss_link") counts as one: its velocity is ENU, and due west it would pass the sideslip bound below as
# a fast reverse.
WORLD_FRAMES = frozenset({"map", "odom", "world", "earth", "enu", "ned", "utm", "ecef", "wgs84", "gps", "gnss"})
# A vehicle slides sideways by a few degrees of its heading at most; a twist whose y is half its x and 2 m/s
# more is in no vehicle frame, whatever its name says.
MAX_SIDESLIP_FRACTION = 0.5
MAX_SIDESLIP_OFFSET_MPS = 2.0


def is_world_frame(frame_id: Any) -> bool:
    """True when a word of ``frame_id`` (split at anything not a letter or digit) names a world-fixed frame
    (``WORLD_FRAMES``); an empty or unknown name is taken as the vehicle's, as drivers that leave it blank mean."""
    return any(word in WORLD_FRAMES for word in re.split(r"[^a-z0-9]+", str(frame_id).lower()))


def _vehicle_frame_speed(linear: Any, frame_id: Any, msg_type: str, prefix: str, frame_field: str) -> float:
    """The forward speed ``linear.x`` of a twist that must be in the vehicle frame: refused when ``frame_id``
    names a world-fixed frame, when x is not finite or plausible, or when y is too large beside x to be a
    sideslip (a y that is not finite is taken as unmeasured)."""
    if is_world_frame(frame_id):
        raise MessageConversionError(msg_type, frame_field, f"is {str(frame_id)!r}, a world-fixed frame: the twist "
                                                            "is a velocity over the ground, not the vehicle's "
                                                            "forward speed")
    speed = plausible_speed(linear.x, msg_type, f"{prefix}.x")
    sideways = float(linear.y)  # not finite: a driver marking the lateral speed unmeasured; x stands alone
    if math.isfinite(sideways) and abs(sideways) > MAX_SIDESLIP_FRACTION * abs(speed) + MAX_SIDESLIP_OFFSET_MPS:
        raise MessageConversionError(msg_type, f"{prefix}.y", f"is {sideways:g} m/s beside {prefix}.x = {speed:g}: "
                                                              "no vehicle slides sideways so fast, the twist is not "
                                                              "in the vehicle frame")
    return speed


def _finite(value: Any, msg_type: str, field: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise MessageConversionError(msg_type, field, f"is {number}")
    return number


def plausible_speed(value: float, msg_type: str, field: str) -> float:
    """``value`` when it is finite and within ±MAX_PLAUSIBLE_SPEED_MPS, else MessageConversionError."""
    speed = _finite(value, msg_type, field)
    if abs(speed) > MAX_PLAUSIBLE_SPEED_MPS:
        raise MessageConversionError(msg_type, field, f"is {speed:g} m/s, beyond any road vehicle "
                                                      f"(|speed| <= {MAX_PLAUSIBLE_SPEED_MPS:g})")
    return speed


def odometry_speed(msg: Any) -> float:
    """Signed forward speed in m/s from ``nav_msgs/Odometry``: ``twist.twist.linear.x``.

    REP 105 expresses the odometry twist in ``child_frame_id`` (the vehicle frame, x forward), so x is the
    forward speed and negative when reversing. Raises MessageConversionError when it is not finite or not
    plausible (``plausible_speed``), or when the twist is not in the vehicle frame (``child_frame_id`` names a
    world-fixed frame, ``is_world_frame``; y beyond a sideslip).
    """
    return _vehicle_frame_speed(msg.twist.twist.linear, getattr(msg, "child_frame_id", ""), "nav_msgs/Odometry",
                                "twist.twist.linear", "child_frame_id")


def plausible_yaw_rate(value: float, speed_mps: float, msg_type: str, field: str,
                       max_curvature: float | None = None) -> float:
    """``value`` [rad/s] when it is finite, within ±MAX_PLAUSIBLE_YAW_RATE and, at ``speed_mps``, within
    MAX_PLAUSIBLE_LATERAL_ACCEL and (given the vehicle's ``max_curvature``, ``max_turn_curvature``, and from
    MIN_CURVATURE_SPEED_MPS) a turn no tighter than that; else MessageConversionError."""
    rate = _finite(value, msg_type, field)
    if abs(rate) > MAX_PLAUSIBLE_YAW_RATE:
        raise MessageConversionError(msg_type, field, f"is {rate:g} rad/s, beyond any road vehicle (|yaw rate| <= "
                                                      f"{MAX_PLAUSIBLE_YAW_RATE:.2f}; degrees per second?)")
    if abs(rate * speed_mps) > MAX_PLAUSIBLE_LATERAL_ACCEL:
        raise MessageConversionError(msg_type, field, f"is {rate:g} rad/s at {speed_mps:g} m/s: a lateral "
                                                      f"acceleration of {abs(rate * speed_mps):.1f} m/s², beyond "
                                                      f"any road vehicle (<= {MAX_PLAUSIBLE_LATERAL_ACCEL:g})")
    if (max_curvature is not None and abs(speed_mps) >= MIN_CURVATURE_SPEED_MPS
            and abs(rate / speed_mps) > max_curvature):
        raise MessageConversionError(msg_type, field, f"is {rate:g} rad/s at {speed_mps:g} m/s: a turn of radius "
                                                      f"{abs(speed_mps / rate):.3g} m, tighter than the vehicle "
                                                      f"can steer (>= {1.0 / max_curvature:.3g} m; see "
                                                      "max_steering_angle and wheelbase)")
    return rate


def odometry_yaw_rate(msg: Any, max_curvature: float | None = None) -> float | None:
    """Yaw rate [rad/s, + = turning left] from ``nav_msgs/Odometry`` (``twist.twist.angular.z``, in the vehicle
    frame by REP 105); None when the message lacks it. MessageConversionError when it is not finite or not
    plausible at the message's own speed (``plausible_yaw_rate``): the speed may still be good."""
    try:
        value = float(msg.twist.twist.angular.z)
        speed = float(msg.twist.twist.linear.x)
    except (AttributeError, TypeError, ValueError):
        return None
    return plausible_yaw_rate(value, speed, "nav_msgs/Odometry", "twist.twist.angular.z", max_curvature)


def twist_speed(msg: Any) -> float:
    """Signed forward speed in m/s from ``geometry_msgs/TwistStamped``: ``twist.linear.x``.

    The twist is in ``header.frame_id``, which for a vehicle interface's twist (Dataspeed's dbw ``vehicle/twist``,
    CAN bridges) is the vehicle frame, x forward, as REP 105 has it for odometry. A GNSS receiver's velocity
    (ENU, e.g. ublox ``fix_velocity``) is another thing and must not be fed here. Raises MessageConversionError
    when it is not finite or not plausible (``plausible_speed``), or when the twist is not in the vehicle frame
    (``header.frame_id`` names a world-fixed frame, as such a velocity's does; y beyond a sideslip)."""
    return _vehicle_frame_speed(msg.twist.linear, msg.header.frame_id, "geometry_msgs/TwistStamped", "twist.linear",
                                "header.frame_id")


def twist_yaw_rate(msg: Any, max_curvature: float | None = None) -> float | None:
    """Yaw rate [rad/s, + = left] from ``geometry_msgs/TwistStamped`` (``twist.angular.z``); None when absent,
    MessageConversionError when not finite or not plausible (as ``odometry_yaw_rate``)."""
    try:
        value = float(msg.twist.angular.z)
        speed = float(msg.twist.linear.x)
    except (AttributeError, TypeError, ValueError):
        return None
    return plausible_yaw_rate(value, speed, "geometry_msgs/TwistStamped", "twist.angular.z", max_curvature)


def float32_speed(msg: Any) -> float:
    """Speed in m/s from a ``std_msgs/Float32`` (CARLA's speedometer pseudo-sensor)."""
    return plausible_speed(msg.data, "std_msgs/Float32", "data")


@dataclass(frozen=True)
class AckermannCommand:
    """``ackermann_msgs/AckermannDriveStamped`` as numbers: stamp [s], steering angle [rad, + = left],
    steering angle velocity [rad/s], speed [m/s, negative = reverse], acceleration [m/s²: a magnitude by the
    message's definition, though some drivers record it signed], jerk [m/s³]."""

    stamp_s: float
    steering_angle: float
    steering_angle_velocity: float
    speed: float
    acceleration: float
    jerk: float


def ackermann_to_command(msg: Any) -> AckermannCommand:
    """Read an ``AckermannDriveStamped``; MessageConversionError names a non-finite ``drive`` field."""
    drive = msg.drive
    msg_type = "ackermann_msgs/AckermannDriveStamped"
    values = {
        name: _finite(getattr(drive, name), msg_type, f"drive.{name}")
        for name in ("steering_angle", "steering_angle_velocity", "speed", "acceleration", "jerk")
    }
    return AckermannCommand(stamp_s=stamp_to_s(msg.header), **values)


@dataclass(frozen=True)
class CarlaControl:
    """``carla_msgs/CarlaEgoVehicleControl`` as numbers: throttle [0, 1], steer [-1, 1] (+ = right in CARLA),
    brake [0, 1], and the flags."""

    stamp_s: float
    throttle: float
    steer: float
    brake: float
    hand_brake: bool
    reverse: bool
    gear: int
    manual_gear_shift: bool


def carla_control_to_command(msg: Any) -> CarlaControl:
    """Read a ``CarlaEgoVehicleControl``; MessageConversionError names a non-finite pedal/steer field."""
    msg_type = "carla_msgs/CarlaEgoVehicleControl"
    return CarlaControl(
        stamp_s=stamp_to_s(msg.header),
        throttle=_finite(msg.throttle, msg_type, "throttle"),
        steer=_finite(msg.steer, msg_type, "steer"),
        brake=_finite(msg.brake, msg_type, "brake"),
        hand_brake=bool(msg.hand_brake),
        reverse=bool(msg.reverse),
        gear=int(msg.gear),
        manual_gear_shift=bool(msg.manual_gear_shift),
    )
