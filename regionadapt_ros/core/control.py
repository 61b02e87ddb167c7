"""Decision output → vehicle command, clamped and rate-limited to the vehicle's limits.

The mapper is the last line of defence: whatever the network says, what leaves it respects the configured
steering angle, steering rate, acceleration, deceleration and speed limits, and a non-finite decision never
leaves it at all — it becomes a stop command with the reason attached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from regionadapt_ros.core.errors import ConfigError

# CARLA's steer 1.0 turns the road wheels of its default vehicles by 70 degrees (config/carla.yaml gives the
# driving node the same): a recording of CARLA control is read with it unless the vehicle is given.
CARLA_MAX_STEERING_ANGLE = 1.22


@dataclass(frozen=True)
class VehicleLimits:
    """Vehicle limits; units SI. Defaults fit a mid-size passenger car."""

    max_steering_angle: float = 0.5      # rad at the road wheels
    max_steering_rate: float = 0.6       # rad/s
    max_accel: float = 2.5               # m/s^2
    max_decel: float = 6.0               # m/s^2 (positive number)
    max_jerk: float = 10.0               # m/s^3, limits how fast the acceleration command may change
    max_speed: float = 33.0              # m/s, hard cap whatever the region allows
    stop_decel: float = 3.0              # m/s^2 used by stop commands (firm, not an emergency stop)
    wheelbase: float = 2.7               # m, for Twist yaw rate
    throttle_per_accel: float = 1.0 / 3.0  # CARLA throttle in [0, 1] per m/s^2
    brake_per_decel: float = 1.0 / 6.0     # CARLA brake in [0, 1] per m/s^2

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "vehicle limits") -> VehicleLimits:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(source, f"unknown vehicle limit(s): {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(source, f"{key} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number <= 0:
                raise ConfigError(source, f"{key} must be a positive finite number, got {value!r}")
            if key == "max_steering_angle" and number >= math.pi / 2:
                # tan() of the angle bounds the curvature a measured yaw rate may imply: a road wheel turned by
                # a right angle or more is no steering angle (degrees given as radians?)
                raise ConfigError(source, f"max_steering_angle must be below pi/2 rad, got {value!r}")
            values[key] = number
        return cls(**values)


# AckermannDrive.acceleration 0 means "change speed as quickly as possible": a command that holds its speed
# sends this small magnitude instead [m/s^2].
MIN_ACKERMANN_ACCEL = 0.1


class VehicleCommand(NamedTuple):
    """What is published, in vehicle terms, plus why (a named tuple: one is made per frame, at a fraction of a
    frozen dataclass's cost).

    steering_angle [rad, + left], accel [m/s^2], target_speed [m/s] (current speed + accel over one control
    period, capped), stop: a stop command (stale camera, non-finite output, ...), reason: why it is a stop or
    why values were limited; stamp_s: the source image stamp; emergency_brake: the collision-risk guard
    replaced the decision's acceleration by full braking (``ControlMapper.emergency_brake``).
    """

    stamp_s: float
    steering_angle: float
    accel: float
    target_speed: float
    stop: bool = False
    reason: str = ""
    limited: tuple[str, ...] = ()
    emergency_brake: bool = False

    def carla(self, limits: VehicleLimits) -> tuple[float, float, float]:
        """(throttle [0,1], steer [-1,1] with + = RIGHT as CARLA expects, brake [0,1])."""
        steer = -self.steering_angle / limits.max_steering_angle
        if self.accel >= 0 and not self.stop:
            throttle, brake = min(1.0, self.accel * limits.throttle_per_accel), 0.0
        else:
            throttle, brake = 0.0, min(1.0, -self.accel * limits.brake_per_decel)
            if self.stop:
                brake = max(brake, 0.5)
        return throttle, max(-1.0, min(1.0, steer)), brake

    def ackermann(self, limits: VehicleLimits) -> tuple[float, float, float, float, float]:
        """(steering_angle [rad, + left], steering_angle_velocity [rad/s], speed [m/s], acceleration [m/s^2],
        jerk [m/s^3]) as ackermann_msgs/AckermannDrive defines them: speed carries the direction (negative =
        reverse), acceleration is an absolute magnitude (deceleration included), and the rate fields are the
        positive limits the controller may use (0 would mean "as fast as possible"): the configured steering
        rate and jerk. A hold-speed command (accel 0) carries ``MIN_ACKERMANN_ACCEL`` instead of 0. An emergency
        brake carries jerk 0: build the deceleration as fast as possible, not at the comfort jerk limit."""
        return (self.steering_angle, limits.max_steering_rate, self.target_speed,
                max(abs(self.accel), MIN_ACKERMANN_ACCEL), 0.0 if self.emergency_brake else limits.max_jerk)

    def twist(self, limits: VehicleLimits) -> tuple[float, float]:
        """(linear.x [m/s], angular.z [rad/s]) with the kinematic bicycle yaw rate."""
        v = self.target_speed
        return v, v * math.tan(self.steering_angle) / limits.wheelbase


class ControlMapper:
    """Stateful: the rate limits need the previous command. One instance per vehicle output."""

    def __init__(self, limits: VehicleLimits | None = None, speed_limit: float | None = None) -> None:
        self.limits = limits or VehicleLimits()
        self.speed_limit = speed_limit  # m/s, the region's rule; None = only the vehicle cap
        self._last_stamp: float | None = None
        self._last_steer = 0.0
        self._last_accel = 0.0

    def reset(self) -> None:
        """Forget the previous command (after a clock jump or a restart)."""
        self._last_stamp = None

    @property
    def last_steering(self) -> float | None:
        """The steering angle [rad] of the last command; None before the first one or after a reset."""
        return self._last_steer if self._last_stamp is not None else None

    def _dt(self, stamp_s: float) -> float:
        if self._last_stamp is None:
            return 0.1
        dt = stamp_s - self._last_stamp
        # A stamp going backwards or a long gap: do not let the rate limit produce a huge step.
        return dt if 0.0 < dt <= 0.5 else 0.1

    def map(self, steering: float, accel: float, speed: float, stamp_s: float) -> VehicleCommand:
        """Network output (steering [rad], accel [m/s^2]) at ego ``speed`` [m/s] → limited command."""
        lim = self.limits
        if not (math.isfinite(steering) and math.isfinite(accel)):
            return self.stop(stamp_s, speed, "non-finite decision output")
        dt = self._dt(stamp_s)
        steer, limited = self._limit_steering(steering, dt)
        a = max(-lim.max_decel, min(lim.max_accel, accel))
        if a != accel:
            limited.append("accel")
        max_da = lim.max_jerk * dt
        if self._last_stamp is not None and abs(a - self._last_accel) > max_da:
            a = self._last_accel + math.copysign(max_da, a - self._last_accel)
            limited.append("jerk")
        cap = self._speed_cap()
        speed = speed if math.isfinite(speed) else 0.0
        if speed >= cap and a > 0:
            a = 0.0
            limited.append("speed")
        target = max(0.0, min(cap, speed + a * dt))
        self._last_stamp, self._last_steer, self._last_accel = stamp_s, steer, a
        return VehicleCommand(stamp_s, steer, a, target, False, ",".join(limited), tuple(limited))

    def _speed_cap(self) -> float:
        lim = self.limits
        return lim.max_speed if self.speed_limit is None else min(lim.max_speed, self.speed_limit)

    def _limit_steering(self, steering: float, dt: float) -> tuple[float, list[str]]:
        """``steering`` clamped to the angle limit and rate-limited from the last command, and what was limited."""
        lim = self.limits
        limited = []
        steer = max(-lim.max_steering_angle, min(lim.max_steering_angle, steering))
        if steer != steering:
            limited.append("steering_angle")
        max_step = lim.max_steering_rate * dt
        if self._last_stamp is not None and abs(steer - self._last_steer) > max_step:
            steer = self._last_steer + math.copysign(max_step, steer - self._last_steer)
            limited.append("steering_rate")
        return steer, limited

    def emergency_brake(self, steering: float, speed: float, stamp_s: float, reason: str,
                        stop: bool = False) -> VehicleCommand:
        """Full braking: ``-max_decel`` at once, whatever the decision's acceleration. ``max_decel`` is what the
        vehicle can brake; the jerk limit is a comfort limit that this command, like a stop command, does not wait
        for (it still shapes the ramp back from -max_decel once the override ends). Steering is the decision's,
        limited as ``map`` limits it, or held when it is not finite. ``stop`` marks a stop command that the
        override made harder (non-finite output while braking)."""
        lim = self.limits
        if not math.isfinite(steering):
            steering = self._last_steer if math.isfinite(self._last_steer) else 0.0
        dt = self._dt(stamp_s)
        steer, limited = self._limit_steering(steering, dt)
        speed = speed if math.isfinite(speed) else 0.0
        accel = -lim.max_decel
        target = max(0.0, min(self._speed_cap(), speed + accel * dt))
        self._last_stamp, self._last_steer, self._last_accel = stamp_s, steer, accel
        return VehicleCommand(stamp_s, steer, accel, target, stop, reason, ("emergency_brake", *limited),
                              emergency_brake=True)

    def stop(self, stamp_s: float, speed: float, reason: str) -> VehicleCommand:
        """A stop command: brake at ``stop_decel``; steering held (rate-limited towards the last value)."""
        lim = self.limits
        steer = self._last_steer if math.isfinite(self._last_steer) else 0.0
        speed = speed if math.isfinite(speed) else 0.0
        dt = self._dt(stamp_s)
        self._last_stamp, self._last_accel = stamp_s, -lim.stop_decel
        return VehicleCommand(
            stamp_s, steer, -lim.stop_decel, max(0.0, speed - lim.stop_decel * dt), True, reason, ()
        )
