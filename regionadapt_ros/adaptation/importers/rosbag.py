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

or, with no command topic (``command_source="odometry"``), from ``nav_msgs/Odometry``: accel is the slope of a
local linear fit of the speed over ``accel_window_s`` (a smoothed d(speed)/dt), steering is
atan(wheelbase * yaw_rate / speed) with the yaw rate averaged over the same window, for |speed| > 1 m/s.

Time stamps are the messages' header stamps (``time_source="header"``; headerless messages such as
``std_msgs/Float32`` and ``geometry_msgs/Twist`` and zero stamps use the recording time) or the recording
times of all messages (``time_source="log"``).

Two passes over the bag: the first reads only the stamps of the camera and lidar messages (from the CDR
header, without decoding the pixels) and the small speed/command messages, matches and validates
everything (topics, counts, the split); the second decodes only the frames and sweeps that are kept. Nothing
is written unless the first pass succeeded.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.dataset import BEV_SHAPE, IMAGE_SHAPE, MIN_SAMPLES, write_dataset
from regionadapt_ros.adaptation.importers.common import (
    LABEL_INDEX,
    ImportResult,
    check_output,
    check_region,
    empty_labels,
    time_block_splits,
)
from regionadapt_ros.core import safe_read
from regionadapt_ros.core.control import VehicleLimits
from regionadapt_ros.core.errors import ConfigError, DataError, MessageConversionError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
FLOAT32_TYPE = "std_msgs/msg/Float32"
ACKERMANN_TYPE = "ackermann_msgs/msg/AckermannDriveStamped"
CARLA_TYPE = "carla_msgs/msg/CarlaEgoVehicleControl"
TWIST_TYPE = "geometry_msgs/msg/Twist"

# Accepted types per role, most preferred first (used when a topic is not named).
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "camera": (IMAGE_TYPE, COMPRESSED_TYPE),
    "lidar": (CLOUD_TYPE,),
    "speed": (ODOMETRY_TYPE, FLOAT32_TYPE),
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
        if self.command_source == "odometry" and self.command_topic is not None:
            raise ConfigError("--command-topic", "is not used with --command-source odometry")


# ------------------------------------------------------------------------------------------------ series
@dataclass
class TimeSeries:
    """Values sampled at times: ``t`` (M,) seconds ascending, ``v`` (M, K)."""

    t: np.ndarray
    v: np.ndarray

    @classmethod
    def from_rows(cls, times: Sequence[float], rows: Sequence[Sequence[float]], width: int) -> TimeSeries:
        t = np.asarray(times, dtype=np.float64)
        v = np.asarray(rows, dtype=np.float64).reshape(len(t), width)
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order])

    def __len__(self) -> int:
        return int(self.t.size)

    def at(self, t: np.ndarray, max_dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Values at times ``t`` (N,): linear interpolation between the neighbours before and after when both
        are within ``max_dt``, else the nearer one if within ``max_dt``. Returns (values (N, K), matched (N,))."""
        t = np.asarray(t, dtype=np.float64)
        k = self.v.shape[1]
        out = np.full((t.size, k), np.nan)
        if len(self) == 0:
            return out, np.zeros(t.size, dtype=bool)
        right = np.searchsorted(self.t, t, side="left")
        left = right - 1
        has_left, has_right = left >= 0, right < len(self)
        li, ri = np.clip(left, 0, len(self) - 1), np.clip(right, 0, len(self) - 1)
        dl = np.where(has_left, t - self.t[li], np.inf)
        dr = np.where(has_right, self.t[ri] - t, np.inf)
        near_l, near_r = dl <= max_dt, dr <= max_dt
        both = near_l & near_r
        span = np.where(both, dl + dr, 1.0)
        w = np.where(both & (span > 0), dl / np.where(span > 0, span, 1.0), 0.0)[:, None]
        interp = self.v[li] * (1.0 - w) + self.v[ri] * w
        nearest = np.where((dl <= dr)[:, None], self.v[li], self.v[ri])
        out = np.where(both[:, None], interp, nearest)
        matched = near_l | near_r
        out[~matched] = np.nan
        return out, matched


def nearest_index(times: np.ndarray, t: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into ascending ``times`` of the nearest entry to each of ``t`` within ``max_dt``; -1 when none."""
    if times.size == 0:
        return np.full(t.size, -1, dtype=np.int64)
    right = np.clip(np.searchsorted(times, t, side="left"), 0, times.size - 1)
    left = np.clip(right - 1, 0, times.size - 1)
    pick = np.where(np.abs(times[left] - t) <= np.abs(times[right] - t), left, right)
    return np.where(np.abs(times[pick] - t) <= max_dt, pick, -1).astype(np.int64)


def local_linear_fit(t: np.ndarray, v: np.ndarray, window_s: float, max_rows: int = 1 << 21
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the samples within ±window_s/2 of each sample: (slope (M,), mean (M,)).
    The slope is a smoothed derivative dv/dt (NaN where the window holds fewer than two distinct times).
    Centred on each sample's own time, so an epoch-sized ``t`` loses no precision."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    m = t.size
    slope, mean = np.full(m, np.nan), np.full(m, np.nan)
    if m == 0:
        return slope, mean
    lo = np.searchsorted(t, t - window_s / 2.0, side="left")
    hi = np.searchsorted(t, t + window_s / 2.0, side="right")
    width = int((hi - lo).max())
    chunk = max(1, max_rows // max(width, 1))
    offsets = np.arange(width)
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        idx = lo[start:stop, None] + offsets[None, :]
        valid = idx < hi[start:stop, None]
        idx = np.minimum(idx, m - 1)
        dt = np.where(valid, t[idx] - t[start:stop, None], 0.0)
        vv = np.where(valid, v[idx], 0.0)
        count = valid.sum(axis=1)
        dt_mean = dt.sum(axis=1) / count
        v_mean = vv.sum(axis=1) / count
        dtc = np.where(valid, dt - dt_mean[:, None], 0.0)
        sxx = (dtc * dtc).sum(axis=1)
        sxy = (dtc * np.where(valid, vv - v_mean[:, None], 0.0)).sum(axis=1)
        ok = (count >= 2) & (sxx > 1e-12)
        slope[start:stop] = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
        mean[start:stop] = v_mean
    return slope, mean


def steering_from_yaw_rate(speed: np.ndarray, yaw_rate: np.ndarray, wheelbase_m: float,
                           min_speed_mps: float) -> np.ndarray:
    """Kinematic-bicycle steering angle [rad, + = left] = atan(wheelbase * yaw_rate / speed); NaN where
    |speed| <= min_speed_mps (the angle is not observable when standing)."""
    speed = np.asarray(speed, dtype=np.float64)
    moving = np.abs(speed) > min_speed_mps
    safe = np.where(moving, speed, 1.0)
    return np.where(moving, np.arctan(wheelbase_m * np.asarray(yaw_rate, dtype=np.float64) / safe), np.nan)


def odometry_commands(odometry: TimeSeries, window_s: float, wheelbase_m: float, min_speed_mps: float
                      ) -> TimeSeries:
    """Commands derived from odometry (columns speed, yaw rate) → TimeSeries (steering, accel)."""
    accel, _ = local_linear_fit(odometry.t, odometry.v[:, 0], window_s)
    _, yaw_rate = local_linear_fit(odometry.t, odometry.v[:, 1], window_s)
    steering = steering_from_yaw_rate(odometry.v[:, 0], yaw_rate, wheelbase_m, min_speed_mps)
    return TimeSeries(odometry.t, np.stack([steering, accel], axis=1))


def command_period(t: np.ndarray) -> float:
    """Median interval of a command stream [s] (the control period); 0.1 s when it cannot be told."""
    if t.size < 2:
        return 0.1
    diffs = np.diff(t)
    diffs = diffs[diffs > 0]
    return float(np.median(diffs)) if diffs.size else 0.1


# ------------------------------------------------------------------------------------------------ bag access
def cdr_header_stamp(raw: bytes | memoryview) -> float | None:
    """Stamp [s] of a CDR-serialised message whose first field is ``std_msgs/Header`` (Image, CompressedImage,
    PointCloud2, ...), read from the bytes without decoding the rest; None if the encapsulation is not plain
    CDR. Layout: 4-byte encapsulation header (0x00 0x01 little endian, 0x00 0x00 big endian), then the
    stamp's int32 sec and uint32 nanosec."""
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec + nanosec * 1e-9


@dataclass
class _Topic:
    role: str
    topic: str
    msgtype: str
    connections: list[Any]

    @property
    def count(self) -> int:
        return sum(int(getattr(c, "msgcount", 0)) for c in self.connections)

    def describe(self) -> dict[str, Any]:
        return {"topic": self.topic, "type": self.msgtype, "messages": self.count}


def _bag_topics(reader: Any) -> dict[str, tuple[str, list[Any]]]:
    topics: dict[str, tuple[str, list[Any]]] = {}
    for c in reader.connections:
        _, conns = topics.setdefault(c.topic, (c.msgtype, []))
        conns.append(c)
    return topics


def _listing(topics: dict[str, tuple[str, list[Any]]]) -> str:
    if not topics:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{name} ({t})" for name, (t, _) in sorted(topics.items()))


def _option(role: str) -> str:
    return f"--{role}-topic"


def _pick_topic(bag: Path, topics: dict[str, tuple[str, list[Any]]], role: str, requested: str | None,
                required: bool, why: str = "") -> _Topic | None:
    """The topic of one role: the requested one (DataError listing the bag's topics if absent or of a wrong
    type), else the only one of the most preferred type that the bag has."""
    allowed = ROLE_TYPES[role]
    if requested is not None:
        if requested not in topics:
            raise DataError(bag, f"no {role} topic {requested!r} ({_option(role)}); {_listing(topics)}")
        msgtype, conns = topics[requested]
        if msgtype not in allowed:
            raise DataError(bag, f"{role} topic {requested!r} is {msgtype}; the {role} must be one of "
                                 f"{', '.join(allowed)}")
        return _Topic(role, requested, msgtype, conns)
    for msgtype in allowed:
        names = sorted(name for name, (t, _) in topics.items() if t == msgtype)
        if len(names) > 1:
            raise DataError(bag, f"several {role} topics of type {msgtype}: {', '.join(names)}; choose one with "
                                 f"{_option(role)}")
        if names:
            return _Topic(role, names[0], msgtype, topics[names[0]][1])
    if required:
        types = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise DataError(bag, f"no {role} topic ({types}; name it with {_option(role)}{why}); {_listing(topics)}")
    return None


def _open_reader(bag: Path) -> Any:
    from rosbags.highlevel import AnyReader

    from regionadapt_ros.core.msgconv import rosbags_typestore

    if not bag.exists():
        raise DataError(bag, "rosbag2 path does not exist")
    if bag.is_file() and bag.suffix == ".bag":
        raise DataError(bag, "is a ROS 1 bag; convert it to rosbag2 first (e.g. `rosbags-convert --src BAG`)")
    if bag.is_file() and bag.suffix not in (".mcap", ".db3"):
        raise DataError(bag, "not a rosbag2: expected a bag directory (with metadata.yaml) or a .mcap/.db3 file")
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        raise DataError(bag, "not a rosbag2 directory: metadata.yaml is missing")
    safe_read.check_regular_tree(bag, error=DataError)  # a FIFO would block the bag reader for ever
    try:
        reader = AnyReader([bag], default_typestore=rosbags_typestore())
        reader.open()
    except Exception as exc:  # rosbags raises its own reader errors for damaged or foreign files
        raise DataError(bag, f"cannot read rosbag2 ({type(exc).__name__}: {exc})") from exc
    return reader


# ------------------------------------------------------------------------------------------------ pass 1
@dataclass
class _Index:
    """What the first pass learned: per camera and lidar message (in bag order) its stamp and its key in the
    bag, the speed series (speed[, yaw rate]) and the command series (raw per type), and per role the
    differences recording time - header stamp (to detect two clocks)."""

    camera_t: list[float] = field(default_factory=list)
    camera_keys: list[tuple[int, int]] = field(default_factory=list)
    lidar_t: list[float] = field(default_factory=list)
    lidar_keys: list[tuple[int, int]] = field(default_factory=list)
    speed_t: list[float] = field(default_factory=list)
    speed_rows: list[tuple[float, ...]] = field(default_factory=list)
    command_t: list[float] = field(default_factory=list)
    command_rows: list[tuple[float, ...]] = field(default_factory=list)
    unreadable: dict[str, int] = field(default_factory=lambda: {"speed": 0, "command": 0})
    log_timed: set[str] = field(default_factory=set)  # roles timed (at least once) by recording time
    clock_offsets: dict[str, list[float]] = field(default_factory=dict)

    def note_offset(self, role: str, log_ns: int, stamp: float) -> None:
        offsets = self.clock_offsets.setdefault(role, [])
        if len(offsets) < 1000:  # a median over the first messages is enough to tell two clocks apart
            offsets.append(log_ns * 1e-9 - stamp)


def _deserialize(reader: Any, raw: bytes, msgtype: str) -> Any | None:
    """The message, or None when its bytes are not a ``msgtype`` (truncated, corrupt): one bad message in a
    recording is counted by the caller, never the end of the import."""
    try:
        return reader.deserialize(raw, msgtype)
    except Exception:  # rosbags raises its own errors, and struct/index/unicode errors, for bytes that do not parse
        return None


def _msg_time(msg: Any, log_ns: int, use_header: bool) -> tuple[float, bool]:
    """(seconds, from header?) — the header stamp unless absent, zero or not wanted."""
    from regionadapt_ros.core.msgconv import stamp_to_s

    if use_header and hasattr(msg, "header"):
        t = stamp_to_s(msg.header)
        if t != 0.0:
            return t, True
    return log_ns * 1e-9, False


def _speed_row(msgtype: str, msg: Any) -> tuple[float, ...]:
    from regionadapt_ros.core.msgconv import float32_speed, odometry_speed

    if msgtype == ODOMETRY_TYPE:
        yaw_rate = float(msg.twist.twist.angular.z)
        if not math.isfinite(yaw_rate):
            raise MessageConversionError("nav_msgs/Odometry", "twist.twist.angular.z", f"is {yaw_rate}")
        return odometry_speed(msg), yaw_rate
    return float32_speed(msg), math.nan


def _command_row(msgtype: str, msg: Any) -> tuple[float, ...]:
    """Raw command numbers: Ackermann (steering, acceleration, speed), CARLA (throttle, steer, brake,
    reverse), Twist (linear.x, angular.z)."""
    from regionadapt_ros.core.msgconv import ackermann_to_command, carla_control_to_command

    if msgtype == ACKERMANN_TYPE:
        c = ackermann_to_command(msg)
        return c.steering_angle, c.acceleration, c.speed
    if msgtype == CARLA_TYPE:
        k = carla_control_to_command(msg)
        return k.throttle, k.steer, k.brake, float(k.reverse)
    linear, angular = float(msg.linear.x), float(msg.angular.z)
    if not (math.isfinite(linear) and math.isfinite(angular)):
        raise MessageConversionError("geometry_msgs/Twist", "linear.x" if not math.isfinite(linear) else
                                     "angular.z", "is not finite")
    return linear, angular


def _index_pass(reader: Any, roles: dict[str, _Topic], cfg: RosbagImportConfig, progress: bool) -> _Index:
    from tqdm import tqdm

    index = _Index()
    use_header = cfg.time_source == "header"
    by_conn: dict[int, _Topic] = {id(c): topic for topic in roles.values() for c in topic.connections}
    connections = [c for topic in roles.values() for c in topic.connections]
    total = sum(t.count for t in roles.values())
    with tqdm(total=total or None, desc="indexing bag", unit="msg", disable=not progress, leave=False) as bar:
        for conn, log_ns, raw in reader.messages(connections=connections):
            bar.update(1)
            topic = by_conn[id(conn)]
            if topic.role in ("camera", "lidar"):
                # The stamp straight from the CDR bytes: decoding a whole image just for its stamp would
                # double the cost of the import.
                stamp = cdr_header_stamp(raw) if use_header else None
                if stamp is None and use_header:
                    msg = _deserialize(reader, raw, conn.msgtype)
                    stamp, from_header = _msg_time(msg, log_ns, True) if msg is not None else (0.0, False)
                    stamp = stamp if from_header else 0.0
                if stamp is None or stamp == 0.0:
                    stamp = log_ns * 1e-9
                    index.log_timed.add(topic.role)
                elif use_header:
                    index.note_offset(topic.role, log_ns, stamp)
                key = (int(conn.id), int(log_ns))
                if topic.role == "camera":
                    index.camera_t.append(stamp)
                    index.camera_keys.append(key)
                else:
                    index.lidar_t.append(stamp)
                    index.lidar_keys.append(key)
                continue
            msg = _deserialize(reader, raw, conn.msgtype)
            if msg is None:
                index.unreadable[topic.role] += 1  # counted, as the replay counts it; never fatal
                continue
            t, from_header = _msg_time(msg, log_ns, use_header)
            if not from_header:
                index.log_timed.add(topic.role)
            elif use_header:
                index.note_offset(topic.role, log_ns, t)
            try:
                if topic.role == "speed":
                    index.speed_rows.append(_speed_row(topic.msgtype, msg))
                    index.speed_t.append(t)
                else:
                    index.command_rows.append(_command_row(topic.msgtype, msg))
                    index.command_t.append(t)
            except MessageConversionError:
                index.unreadable[topic.role] += 1
    return index


def _commands(index: _Index, roles: dict[str, _Topic], speed: TimeSeries, cfg: RosbagImportConfig
              ) -> tuple[TimeSeries, dict[str, Any]]:
    """The command series (steering [rad], accel [m/s²]) and how it was obtained (for meta)."""
    lim = cfg.limits
    if cfg.command_source == "odometry":
        info = {"source": "odometry", "accel": f"local linear fit of speed over {cfg.accel_window_s} s",
                "steering": "atan(wheelbase * yaw_rate / speed)"}
        return odometry_commands(speed, cfg.accel_window_s, lim.wheelbase, cfg.min_steer_speed_mps), info
    msgtype = roles["command"].msgtype
    width = {ACKERMANN_TYPE: 3, CARLA_TYPE: 4, TWIST_TYPE: 2}[msgtype]
    raw = TimeSeries.from_rows(index.command_t, index.command_rows, width)
    period = command_period(raw.t)
    measured, _ = speed.at(raw.t, max(cfg.max_dt_s, period))
    info: dict[str, Any] = {"source": "command", "type": msgtype}
    if msgtype == ACKERMANN_TYPE:
        steering, accel = raw.v[:, 0], raw.v[:, 1]
        commanded = raw.v[:, 2]
        if len(raw) and not np.any(accel) and np.ptp(commanded) > 0:
            # Recorded drives often leave the acceleration field at 0 and command a speed instead.
            accel = (commanded - measured[:, 0]) / period
            info["accel"] = f"(drive.speed - measured speed) / command period {period:.3f} s"
        elif len(raw) and np.all(accel >= 0):
            # As ackermann_msgs defines it, acceleration is a magnitude: speeding up or slowing down is whether
            # the commanded speed is above or below the measured one (in the direction of travel).
            # The speed measured within one command period (a stale one across a gap would flip the sign).
            close, _ = speed.at(raw.t, period)
            direction = np.sign(np.abs(commanded) - np.abs(close[:, 0]))
            if len(raw) > 1:
                # No measured speed at a command: the trend of the commanded speed says it instead.
                trend = np.sign(np.gradient(np.abs(commanded), raw.t))
                direction = np.where(np.isfinite(direction), direction, trend)
            accel = accel * direction
            info["accel"] = "drive.acceleration (a magnitude) signed by drive.speed vs the measured speed"
        else:
            info["accel"] = "drive.acceleration (recorded signed)"
    elif msgtype == CARLA_TYPE:
        throttle, steer, brake, reverse = raw.v.T
        steering = -steer * lim.max_steering_angle
        accel = throttle / lim.throttle_per_accel - brake / lim.brake_per_decel
        accel = np.where(reverse > 0, -accel, accel)
        info["steering"] = f"-steer * {lim.max_steering_angle} rad"
        info["accel"] = f"throttle / {lim.throttle_per_accel:g} - brake / {lim.brake_per_decel:g}"
    else:
        linear, angular = raw.v.T
        steering = steering_from_yaw_rate(linear, angular, lim.wheelbase, cfg.min_steer_speed_mps)
        accel = (linear - measured[:, 0]) / period
        info["accel"] = f"(linear.x - measured speed) / command period {period:.3f} s"
    return TimeSeries(raw.t, np.stack([steering, accel], axis=1)), info


@dataclass
class _Plan:
    """Kept frames in output order: camera message ordinal (index into the first pass's camera messages),
    lidar message ordinal (-1: none), stamps [s] and labels."""

    camera_ordinal: np.ndarray
    lidar_ordinal: np.ndarray
    stamps: np.ndarray
    labels: np.ndarray
    skipped: dict[str, int]


def _match(index: _Index, speed: TimeSeries, commands: TimeSeries, use_lidar: bool, cfg: RosbagImportConfig
           ) -> _Plan:
    cam_t = np.asarray(index.camera_t, dtype=np.float64)
    order = np.argsort(cam_t, kind="stable")
    t = cam_t[order]
    speed_v, speed_ok = speed.at(t, cfg.max_dt_s)
    cmd_v, cmd_ok = commands.at(t, cfg.max_dt_s)
    # A command that exists but is NaN in both columns (e.g. standing still with Twist) is still a match:
    # the row simply labels nothing for the decision head but the speed.
    lidar_t = np.asarray(index.lidar_t, dtype=np.float64)
    lidar_order = np.argsort(lidar_t, kind="stable")
    if use_lidar:
        near = nearest_index(lidar_t[lidar_order], t, cfg.max_lidar_age_s)
        lidar_ok = near >= 0
        lidar_ordinal = np.where(lidar_ok, lidar_order[np.maximum(near, 0)], -1)
    else:
        lidar_ok = np.ones(t.size, dtype=bool)
        lidar_ordinal = np.full(t.size, -1, dtype=np.int64)
    skipped = {
        "no_lidar": int((~lidar_ok).sum()),
        "no_speed": int((lidar_ok & ~speed_ok).sum()),
        "no_command": int((lidar_ok & speed_ok & ~cmd_ok).sum()),
    }
    keep = np.flatnonzero(lidar_ok & speed_ok & cmd_ok)
    thinned = keep.size - keep[:: cfg.every].size
    keep = keep[:: cfg.every]
    skipped["thinned"] = int(thinned)
    labels = empty_labels(keep.size)
    labels[:, LABEL_INDEX["speed"]] = speed_v[keep, 0]
    labels[:, LABEL_INDEX["steering"]] = cmd_v[keep, 0]
    labels[:, LABEL_INDEX["accel"]] = cmd_v[keep, 1]
    return _Plan(order[keep], lidar_ordinal[keep], t[keep], labels, skipped)


def _check_clocks(bag: Path, index: _Index, roles: dict[str, _Topic]) -> None:
    """Header stamps and recording times from different clocks cannot be matched: refuse with the fix."""
    log_roles = sorted(r for r in index.log_timed if r in roles)
    if not log_roles:
        return
    for role in roles:
        offsets = index.clock_offsets.get(role)
        if role in index.log_timed or not offsets:
            continue
        offset = float(np.median(offsets))
        if abs(offset) > CLOCK_MISMATCH_S:
            timed = ", ".join(f"{roles[r].topic} ({roles[r].msgtype})" for r in log_roles)
            raise DataError(bag, f"the header stamps of {roles[role].topic} are {offset:+.1f} s away from the "
                                 f"recording times, and {timed} is timed by recording time: the two clocks differ "
                                 "(sim time?); use --time-source log")


# ------------------------------------------------------------------------------------------------ pass 2
def _repeat_keys(keys: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(connection id, recording time) → (connection id, recording time, how many times it came before)."""
    count: dict[tuple[int, int], int] = {}
    out = []
    for key in keys:
        repeat = count.get(key, 0)
        count[key] = repeat + 1
        out.append((*key, repeat))
    return out


def _convert_pass(reader: Any, roles: dict[str, _Topic], plan: _Plan, camera_keys: list[tuple[int, int]],
                  lidar_keys: list[tuple[int, int]], images: np.ndarray, bev: np.ndarray,
                  progress: bool) -> np.ndarray:
    """Decode the kept frames and their sweeps into ``images`` / ``bev``; returns a (n,) bool mask of the
    samples that converted (a frame whose image or sweep cannot be read is dropped)."""
    from tqdm import tqdm

    from regionadapt_ros.core import msgconv
    from regionadapt_ros.core.preprocess import bev_grid, resize_rgb

    n = plan.camera_ordinal.size
    # Messages are found again by (connection, recording time, repeat): the same whatever else is read.
    camera_ids = _repeat_keys(camera_keys)
    out_of_camera = {camera_ids[k]: i for i, k in enumerate(plan.camera_ordinal)}
    lidar_ids = _repeat_keys(lidar_keys)
    outs_of_lidar: dict[tuple[int, int, int], list[int]] = {}
    for i, j in enumerate(plan.lidar_ordinal):
        if j >= 0:
            outs_of_lidar.setdefault(lidar_ids[j], []).append(i)
    ok = np.ones(n, dtype=bool)
    roles_used = [roles["camera"]] + ([roles["lidar"]] if outs_of_lidar else [])
    by_conn = {id(c): topic for topic in roles_used for c in topic.connections}
    compressed = roles["camera"].msgtype == COMPRESSED_TYPE
    to_rgb: Callable[[Any], np.ndarray] = (msgconv.compressed_image_to_rgb8 if compressed
                                           else msgconv.image_to_rgb8)
    seen: dict[tuple[int, int], int] = {}
    connections = [c for topic in roles_used for c in topic.connections]
    with tqdm(total=n, desc="converting frames", unit="frame", disable=not progress, leave=False) as bar:
        for conn, log_ns, raw in reader.messages(connections=connections):
            role = by_conn[id(conn)].role
            key = (int(conn.id), int(log_ns))
            repeat = seen.get(key, 0)
            seen[key] = repeat + 1
            if role == "camera":
                i = out_of_camera.get((*key, repeat))
                if i is None:
                    continue
                msg = _deserialize(reader, raw, conn.msgtype)
                try:
                    if msg is None:
                        raise ValueError("undecodable message")
                    images[i] = resize_rgb(to_rgb(msg))
                except (MessageConversionError, ValueError):
                    ok[i] = False
                bar.update(1)
            else:
                outs = outs_of_lidar.get((*key, repeat))
                if outs is None:
                    continue
                msg = _deserialize(reader, raw, conn.msgtype)
                try:
                    if msg is None:
                        raise ValueError("undecodable message")
                    points = msgconv.pointcloud2_to_array(msg, LIDAR_FIELDS,
                                                          max_points=msgconv.DEFAULT_LIDAR_MAX_POINTS)
                    grid = bev_grid(points).astype(np.float16)
                except (MessageConversionError, ValueError):
                    ok[outs] = False
                    continue
                for i in outs:
                    bev[i] = grid
    return ok


# ------------------------------------------------------------------------------------------------ import
def import_rosbag(bag: str | Path, out_dir: str | Path, region: str,
                  config: RosbagImportConfig | None = None, progress: bool = True) -> ImportResult:
    """rosbag2 drive (directory, or a bare ``.mcap``/``.db3``) → dataset at ``out_dir`` (source "rosbag"),
    split by time blocks. DataError naming the bag (or the output) before anything is written when a topic is
    missing, the clocks disagree or too few frames match."""
    cfg = config or RosbagImportConfig()
    cfg.validate()
    bag, out_dir = Path(bag), Path(out_dir)
    check_region(region)
    if not bag.exists():
        raise DataError(bag, "rosbag2 path does not exist")
    check_output(out_dir, [bag])
    reader = _open_reader(bag)
    try:
        return _import(reader, bag, out_dir, region, cfg, progress)
    finally:
        reader.close()


def _import(reader: Any, bag: Path, out_dir: Path, region: str, cfg: RosbagImportConfig, progress: bool
            ) -> ImportResult:
    topics = _bag_topics(reader)
    camera = _pick_topic(bag, topics, "camera", cfg.camera_topic, True)
    assert camera is not None
    roles: dict[str, _Topic] = {"camera": camera}
    if cfg.use_lidar:
        lidar = _pick_topic(bag, topics, "lidar", cfg.lidar_topic, False)
        if lidar is not None:
            roles["lidar"] = lidar
    elif cfg.lidar_topic is not None:
        raise ConfigError("--lidar-topic", "is not used with --no-lidar")
    speed_topic = _pick_topic(bag, topics, "speed", cfg.speed_topic, True)
    assert speed_topic is not None
    roles["speed"] = speed_topic
    if cfg.command_source == "command":
        command = _pick_topic(bag, topics, "command", cfg.command_topic, True,
                              ", or derive commands from odometry with --command-source odometry")
        assert command is not None
        roles["command"] = command
    elif speed_topic.msgtype != ODOMETRY_TYPE:
        raise DataError(bag, f"--command-source odometry needs a {ODOMETRY_TYPE} speed topic (for the yaw rate); "
                             f"{speed_topic.topic} is {speed_topic.msgtype}")
    for role, topic in roles.items():
        if topic.count == 0:
            raise DataError(bag, f"{role} topic {topic.topic} has no messages")

    index = _index_pass(reader, roles, cfg, progress)
    _check_clocks(bag, index, roles)
    speed = TimeSeries.from_rows(index.speed_t, index.speed_rows, 2)
    if len(speed) == 0:
        raise DataError(bag, f"speed topic {roles['speed'].topic}: no readable message "
                             f"({index.unreadable['speed']} unreadable)")
    commands, command_info = _commands(index, roles, speed, cfg)
    plan = _match(index, speed, commands, "lidar" in roles, cfg)
    plan.skipped["unreadable_speed_messages"] = index.unreadable["speed"]
    plan.skipped["unreadable_command_messages"] = index.unreadable["command"]
    n_camera = len(index.camera_t)
    _check_enough(bag, out_dir, plan, n_camera, cfg)
    splits = time_block_splits(plan.stamps, cfg.split_block_s, cfg.seed)

    n = plan.camera_ordinal.size
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.import-", dir=out_dir.parent) as tmp:
        # Memory maps: a long drive does not have to fit in memory twice (here and in write_dataset).
        images = np.lib.format.open_memmap(Path(tmp) / "images.npy", mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE))
        bev = np.lib.format.open_memmap(Path(tmp) / "bev.npy", mode="w+", dtype=np.float16, shape=(n, *BEV_SHAPE))
        ok = _convert_pass(reader, roles, plan, index.camera_keys, index.lidar_keys, images, bev, progress)
        labels, stamps = plan.labels, plan.stamps
        frame_failures = int((~ok).sum())
        plan.skipped["unreadable_frames"] = frame_failures
        if frame_failures:
            images, bev, labels, stamps = images[ok], bev[ok], labels[ok], stamps[ok]
            kept = _Plan(plan.camera_ordinal[ok], plan.lidar_ordinal[ok], stamps, labels, plan.skipped)
            _check_enough(bag, out_dir, kept, n_camera, cfg)
            splits = time_block_splits(stamps, cfg.split_block_s, cfg.seed)
        steering = labels[:, LABEL_INDEX["steering"]]
        meta = {
            "region": region, "seed": int(cfg.seed), "source": "rosbag", "has_lidar": "lidar" in roles,
            "bag": str(bag.resolve()),
            "topics": {role: roles[role].describe() if role in roles else None
                       for role in ("camera", "lidar", "speed", "command")},
            "commands": command_info,
            "time_source": cfg.time_source,
            "log_timed_topics": sorted(roles[r].topic for r in index.log_timed if r in roles),
            "matching": {"max_dt_s": cfg.max_dt_s, "max_lidar_age_s": cfg.max_lidar_age_s, "every": cfg.every},
            "vehicle": {"wheelbase_m": cfg.limits.wheelbase, "max_steering_angle_rad": cfg.limits.max_steering_angle,
                        "min_steer_speed_mps": cfg.min_steer_speed_mps},
            "counts": {"camera_frames": n_camera, "imported": int(labels.shape[0]), "skipped": dict(plan.skipped),
                       "steering_not_labelled": int(np.isnan(steering).sum())},
            "split": {"kind": "time_blocks", "block_s": cfg.split_block_s},
            "start_stamp_s": float(stamps[0]), "duration_s": float(stamps[-1] - stamps[0]),
        }
        write_dataset(out_dir, images, bev, labels, meta, splits)
    return ImportResult(out_dir, int(labels.shape[0]), dict(plan.skipped),
                        json.loads((out_dir / "meta.json").read_text()))


def _check_enough(bag: Path, out_dir: Path, plan: _Plan, n_camera: int, cfg: RosbagImportConfig) -> None:
    n = plan.camera_ordinal.size
    if n >= MIN_SAMPLES:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in plan.skipped.items() if v) or "none skipped"
    raise DataError(bag, f"too few samples to split: {n} of {n_camera} camera frame(s) matched (skipped: {reasons}; "
                         f"max dt {cfg.max_dt_s} s, max lidar age {cfg.max_lidar_age_s} s); a dataset needs at "
                         f"least {MIN_SAMPLES}, nothing written to {out_dir}")


def with_vehicle(config: RosbagImportConfig, wheelbase_m: float | None = None,
                 max_steering_angle: float | None = None) -> RosbagImportConfig:
    """``config`` with the vehicle geometry replaced where given (ConfigError for a non-positive value)."""
    values = {}
    if wheelbase_m is not None:
        values["wheelbase"] = wheelbase_m
    if max_steering_angle is not None:
        values["max_steering_angle"] = max_steering_angle
    if not values:
        return config
    limits = VehicleLimits.from_dict({**_limits_dict(config.limits), **values}, "vehicle options")
    return replace(config, limits=limits)


def _limits_dict(limits: VehicleLimits) -> dict[str, float]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}
