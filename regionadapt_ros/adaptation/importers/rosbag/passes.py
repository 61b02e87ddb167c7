"""The two passes over a bag: the index pass (stamps, speeds, commands; matching and validation) and the conversion
pass (decoding only the frames and sweeps that are kept)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.importers.common import (
    LABEL_INDEX,
    empty_labels,
)
from regionadapt_ros.adaptation.importers.rosbag.config import (
    ACKERMANN_TYPE,
    CARLA_TYPE,
    CLOCK_MISMATCH_S,
    COMPRESSED_TYPE,
    FLOAT32_TYPE,
    LIDAR_FIELDS,
    ODOMETRY_TYPE,
    TWIST_TYPE,
    RosbagImportConfig,
)
from regionadapt_ros.adaptation.importers.rosbag.signals import (
    TimeSeries,
    cdr_header_stamp,
    command_period,
    local_linear_fit,
    nearest_index,
    odometry_commands,
    steering_from_yaw_rate,
    trend_sign,
)
from regionadapt_ros.adaptation.importers.rosbag.topics import _Topic
from regionadapt_ros.core.errors import DataError, MessageConversionError
from regionadapt_ros.core.frames import IMPLAUSIBLE, CloudFrames


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
    first_refusal: dict[str, str] = field(default_factory=dict)  # role -> why its first message was refused
    bad_yaw_rates: int = 0  # speed messages whose yaw rate was refused (their speed was kept)
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


def _speed_row(msgtype: str, msg: Any, index: _Index, max_curvature: float) -> tuple[float, ...]:
    """(speed, yaw rate) of a speed message; the yaw rate is NaN for a Float32, and NaN (counted in
    ``index.bad_yaw_rates``) where the driving session refuses it too (``msgconv.plausible_yaw_rate``): the speed
    stays a label, the steering derived from the yaw rate is not labelled around it."""
    from regionadapt_ros.core import msgconv

    if msgtype == FLOAT32_TYPE:
        return msgconv.float32_speed(msg), math.nan
    odometry = msgtype == ODOMETRY_TYPE
    speed = msgconv.odometry_speed(msg) if odometry else msgconv.twist_speed(msg)
    try:
        yaw_rate = (msgconv.odometry_yaw_rate if odometry else msgconv.twist_yaw_rate)(msg, max_curvature)
    except MessageConversionError:
        index.bad_yaw_rates += 1
        yaw_rate = None
    return speed, math.nan if yaw_rate is None else yaw_rate


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
    from regionadapt_ros.core.msgconv import max_turn_curvature

    use_header = cfg.time_source == "header"
    max_curvature = max_turn_curvature(cfg.limits.max_steering_angle, cfg.limits.wheelbase)
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
                    index.speed_rows.append(_speed_row(topic.msgtype, msg, index, max_curvature))
                    index.speed_t.append(t)
                else:
                    index.command_rows.append(_command_row(topic.msgtype, msg))
                    index.command_t.append(t)
            except MessageConversionError as exc:
                index.unreadable[topic.role] += 1
                index.first_refusal.setdefault(topic.role, str(exc))
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
            # As ackermann_msgs defines it, acceleration is a magnitude. The label is the signed dv/dt (as the
            # CARLA and odometry sources give it, and as the product's mapping reads it: target = speed + accel *
            # period), so its sign is whether the commanded speed is above or below the measured one: speeding
            # up backwards is negative. The speed measured within one command period (a stale one across a gap
            # would flip the sign).
            close, _ = speed.at(raw.t, period)
            measured_close = close[:, 0]
            if roles["speed"].msgtype == FLOAT32_TYPE:
                # A speedometer has no sign: it moves the way the last commanded speed away from 0 says.
                measured_close = np.abs(measured_close) * _travel_sign(commanded)
            direction = np.sign(commanded - measured_close)
            # No measured speed at a command: the trend of the commanded speed says it instead.
            direction = np.where(np.isfinite(direction), direction, trend_sign(commanded))
            accel = accel * direction
            info["accel"] = "drive.acceleration (a magnitude) signed by drive.speed - the measured speed (dv/dt)"
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
        accel, info["accel"] = _twist_accel(raw.t, linear, measured[:, 0], period, cfg.accel_window_s, speed)
    return TimeSeries(raw.t, np.stack([steering, accel], axis=1)), info


# How far the product's own Twist relation (linear.x = speed + accel * period) may miss the commanded speed's
# trend, as a median over the drive, for the relation to be read back [m/s²]. The product's output misses it by
# the period times the change of its acceleration (tenths at most); another driver's target speed, a tracking
# error above the measured speed, by that error over the period (a 0.3 m/s error at 50 Hz reads as 15 m/s²).
TWIST_RELATION_TOLERANCE = 0.5
MIN_RELATION_SAMPLES = 10


def _travel_sign(commanded: np.ndarray) -> np.ndarray:
    """Per command, the sign of the last commanded speed that was not 0 (+1 before any): the way the vehicle
    moves while a command stops it."""
    sign = np.sign(np.asarray(commanded, dtype=np.float64))
    sign[~np.isfinite(sign)] = 0.0
    last = np.where(sign != 0, np.arange(sign.size), -1)
    np.maximum.accumulate(last, out=last)
    return np.where(last >= 0, sign[np.maximum(last, 0)], 1.0)


def _twist_accel(t: np.ndarray, linear: np.ndarray, measured: np.ndarray, period: float, window_s: float,
                 speed: TimeSeries) -> tuple[np.ndarray, str]:
    """The acceleration of Twist commands (M,) and how it was read. The product publishes target speed = speed +
    accel * period, which gives the accel back exactly; a Twist of another driver (teleop, a planner's cmd_vel)
    holds a target speed with its own tracking error, and a keyboard teleop a target that steps and then stays.
    Which one a recording holds is told by whether the relation holds on it against the commanded speed's trend;
    where it does not, the accel is the measured speed's slope over ``window_s``, as the odometry source takes
    it."""
    relation = (linear - measured) / period
    trend, _ = local_linear_fit(t, linear, window_s)
    both = np.isfinite(relation) & np.isfinite(trend)
    if both.sum() >= MIN_RELATION_SAMPLES and \
            float(np.median(np.abs(relation[both] - trend[both]))) > TWIST_RELATION_TOLERANCE:
        slope, _ = local_linear_fit(speed.t, speed.v[:, 0], window_s)
        ok = np.isfinite(slope)
        accel = np.interp(t, speed.t[ok], slope[ok], left=np.nan, right=np.nan) if ok.any() else \
            np.full(t.shape, np.nan)
        return accel, (f"slope of the measured speed over {window_s:g} s: linear.x is not the product's speed + "
                       "accel * period (another driver's target speed)")
    return relation, f"(linear.x - measured speed) / command period {period:.3f} s"


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
                  progress: bool, frames: CloudFrames | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the kept frames and their sweeps into ``images`` / ``bev``; returns (n,) bool masks of the
    samples that converted (a frame whose image or sweep cannot be read is dropped) and of those dropped because
    /tf_static puts their lidar off the vehicle. Sweeps are brought into the vehicle frame by ``frames`` as the
    driving node brings them."""
    from tqdm import tqdm

    from regionadapt_ros.core import msgconv
    from regionadapt_ros.core.preprocess import IntensityScale, bev_grid, resize_rgb

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
    off_vehicle = np.zeros(n, dtype=bool)
    intensity = IntensityScale()  # the bag's lidar topic is one sensor: one scale for the whole import
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
                    points = msgconv.lidar_sweep_points(msg, LIDAR_FIELDS,
                                                        max_points=msgconv.DEFAULT_LIDAR_MAX_POINTS)
                    if frames is not None:  # one lookup, as the driving session makes it
                        frame = str(msg.header.frame_id or "")
                        transform, how = frames.transform_for(frame)
                        frames.record(frame, how)
                        if how == IMPLAUSIBLE:
                            ok[outs] = False
                            off_vehicle[outs] = True
                            continue
                        points = frames.apply(points, transform)
                    grid = bev_grid(points, intensity=intensity).astype(np.float16)
                except (MessageConversionError, ValueError):
                    ok[outs] = False
                    continue
                for i in outs:
                    bev[i] = grid
    return ok, off_vehicle
