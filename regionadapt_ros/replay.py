"""The ROS-less replay runner: a rosbag2 (sqlite3 or MCAP) through the same driving and region logic as the
nodes, in bag time.

Messages are read with the ``rosbags`` library in log-time order and handed to a ``RegionSession`` (GNSS,
odometry) and a ``DrivingSession`` (camera, lidar, speed, active/next region) exactly as the nodes' callbacks
would; the stale-camera timer and the 1 Hz diagnostics run on bag time. The output is a rosbag2 with every
input message plus the commands, the active region, the next-region hints, perception results (the collision
risk on ``/perception/risk`` included) and ``/diagnostics`` — so ``ros2 bag play`` or Foxglove shows the run —
and a report directory (TTC over time with warnings and emergency-brake overrides marked among its plots).

Loading a region's weights runs on the loader thread as on the vehicle. When the replay runs faster than real
time (the default) it waits for a load it has just asked for before reading on, so a run is reproducible and
a swap costs the bag no frames it would not also cost live; ``rate`` > 0 paces the replay against the wall
clock instead and lets loads overlap frames as they would live.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import msgconv, safe_read
from regionadapt_ros.core.errors import DataError, RegionAdaptError
from regionadapt_ros.replay_report import FrameRecord, ReplayLog, write_report

_LOG = logging.getLogger("regionadapt_ros.replay")

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
EXPECTED_TYPES = {
    "lidar": ("sensor_msgs/msg/PointCloud2",),
    "gnss": ("sensor_msgs/msg/NavSatFix",),
    "odom": ("nav_msgs/msg/Odometry",),
    "speed": ("std_msgs/msg/Float32",),
}
OUTPUT_TOPICS = {
    "command": "/control/command",
    "active_region": "/regionadapt/active_region",
    "next_region": "/regionadapt/next_region",
    "diagnostics": "/diagnostics",
    "perception/traffic_light": "/perception/traffic_light",
    "perception/lane": "/perception/lane",
    "perception/obstacle_distance": "/perception/obstacle_distance",
    "perception/risk": "/perception/risk",
}
COMMAND_TYPES = {
    "ackermann": "ackermann_msgs/msg/AckermannDriveStamped",
    "carla": "carla_msgs/msg/CarlaEgoVehicleControl",
    "twist": "geometry_msgs/msg/Twist",
}
PERCEPTION_TYPES = {
    "perception/traffic_light": "std_msgs/msg/String",
    "perception/lane": "geometry_msgs/msg/Vector3Stamped",
    "perception/obstacle_distance": "std_msgs/msg/Float32",
    "perception/risk": "geometry_msgs/msg/Vector3Stamped",
}


@dataclass
class ReplayConfig:
    """Topics are the bag's; ``None`` disables an input. Paths default to the package's config/."""

    regions_file: Path
    geofence_file: Path
    bundle_dir: Path | None = None
    backend: str = "onnxruntime"
    command_type: str = "ackermann"
    camera_topic: str = "/camera/image"
    lidar_topic: str | None = "/lidar/points"
    gnss_topic: str | None = "/gnss/fix"
    odom_topic: str | None = "/odom"
    speed_topic: str | None = None
    out_bag: Path | None = None
    report_dir: Path | None = None
    storage: str = "mcap"
    rate: float = 0.0              # 0: as fast as possible; 1.0: real time
    timer_hz: float = 10.0         # stale-camera check, as the node's timer
    diagnostics_hz: float = 1.0
    loops: int = 1                 # replay the bag this many times; the clock jumps back at each restart
    progress: bool = True
    resolver: dict[str, Any] = field(default_factory=dict)   # ResolverConfig overrides
    emergency_brake: bool = True   # the collision-risk guard may override commands (off: it only records)


@dataclass
class ReplaySummary:
    bag: str
    frames: int
    frames_missed: int
    commands: int
    stop_commands: int
    regions: list[str]
    swaps: int
    latency_ms_p50: float
    latency_ms_p99: float
    duration_s: float
    wall_s: float
    speed_vs_real_time: float
    report: str | None
    out_bag: str | None
    dropped_frames: int
    failed_loads: int
    clock_jumps: int
    warnings: dict[str, int]
    per_region: list[dict[str, Any]]
    swap_events: list[dict[str, Any]]
    stage_latency_ms: dict[str, dict[str, float]]
    # collision risk: overridden episodes (suppressed: would have been, guard off), frames at warn / brake level,
    # the lowest TTC seen, and every episode (start, end, reason, frames, lowest TTC and distance)
    emergency_brakes: int = 0
    emergency_brake_frames: int = 0
    suppressed_emergency_brakes: int = 0
    risk_warn_frames: int = 0
    risk_brake_frames: int = 0
    min_ttc_s: float | None = None
    brake_episodes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) for k, v in self.__dict__.items()}


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _open_reader(path: Path, store):
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise DataError(path, "bag path does not exist")
    safe_read.check_regular_tree(path, error=DataError)  # a FIFO would block the bag reader for ever
    try:
        reader = AnyReader([path], default_typestore=store)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable metadata / storage
        raise DataError(path, f"cannot open as a rosbag2 (sqlite3 or MCAP): {exc}") from exc
    return reader


def _check_topics(path: Path, reader, cfg: ReplayConfig) -> dict[str, Any]:
    by_topic = {c.topic: c for c in reader.connections}
    listing = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(by_topic.items())) or "none"
    cam = by_topic.get(cfg.camera_topic)
    if cam is None:
        raise DataError(path, f"no camera topic {cfg.camera_topic!r} in the bag; it has: {listing}")
    if cam.msgtype not in IMAGE_TYPES:
        raise DataError(path, f"topic {cfg.camera_topic!r} has type {cam.msgtype}, expected one of "
                              f"{', '.join(IMAGE_TYPES)}")
    conns = {"camera": cam}
    for key in ("lidar", "gnss", "odom", "speed"):
        topic = getattr(cfg, f"{key}_topic")
        if not topic:
            continue
        conn = by_topic.get(topic)
        if conn is None:
            _LOG.warning("%s: no %s topic %r; going on without it", path, key, topic)
            continue
        if conn.msgtype not in EXPECTED_TYPES[key]:
            raise DataError(path, f"topic {topic!r} has type {conn.msgtype}, expected "
                                  f"{' or '.join(EXPECTED_TYPES[key])}")
        conns[key] = conn
    return conns


class ReplayRunner:
    def __init__(self, cfg: ReplayConfig, backend=None, wall_clock: Callable[[], float] = time.perf_counter):
        self.cfg = cfg
        self.backend = backend
        self.wall = wall_clock

    def run(self, bag: str | Path) -> ReplaySummary:
        from regionadapt_ros.core.region_resolver import ResolverConfig
        from regionadapt_ros.driving_session import DrivingConfig, DrivingSession
        from regionadapt_ros.region_session import RegionSession

        cfg = self.cfg
        bag = Path(bag)
        store = msgconv.rosbags_typestore()
        types = msgconv.rosbags_types(store)
        reader = _open_reader(bag, store)
        try:
            conns = _check_topics(bag, reader, cfg)
            compressed = conns["camera"].msgtype.endswith("CompressedImage")
            region_session = RegionSession.from_file(cfg.geofence_file, _default_region(cfg.regions_file),
                                                     ResolverConfig(**cfg.resolver) if cfg.resolver else None)
            driving = DrivingSession.from_regions_file(
                DrivingConfig(backend=cfg.backend if cfg.backend != "auto" else "auto",
                              command_type=cfg.command_type,
                              speed_source="speed" if "speed" in conns and "odom" not in conns else "odom",
                              emergency_brake=cfg.emergency_brake),
                str(cfg.regions_file), bundle_dir=str(cfg.bundle_dir) if cfg.bundle_dir else None,
                geofence_regions=region_session.geofences.regions, backend=self.backend,
                swap_clock=self.wall)
            driving.start()
            try:
                return self._loop(bag, reader, conns, compressed, driving, region_session, store, types)
            finally:
                driving.close()
        finally:
            reader.close()

    # ------------------------------------------------------------------------------------------ the loop
    def _loop(self, bag, reader, conns, compressed, driving, region_session, store, types) -> ReplaySummary:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from tqdm import tqdm

        cfg = self.cfg
        log = ReplayLog()
        writer = None
        out_conns: dict[str, Any] = {}
        if cfg.out_bag is not None:
            out = Path(cfg.out_bag)
            if out.exists():
                raise DataError(out, "output bag already exists")
            plugin = StoragePlugin.MCAP if cfg.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(out, version=8, storage_plugin=plugin)
            writer.open()
            for conn in reader.connections:
                out_conns[("in", conn.id)] = writer.add_connection(conn.topic, conn.msgtype, typestore=reader.typestore)
            out_conns["command"] = writer.add_connection(OUTPUT_TOPICS["command"], COMMAND_TYPES[cfg.command_type],
                                                         typestore=store)
            for key in ("active_region", "next_region"):
                out_conns[key] = writer.add_connection(OUTPUT_TOPICS[key], "std_msgs/msg/String", typestore=store)
            out_conns["diagnostics"] = writer.add_connection(OUTPUT_TOPICS["diagnostics"],
                                                             "diagnostic_msgs/msg/DiagnosticArray", typestore=store)
            for key, msgtype in PERCEPTION_TYPES.items():
                out_conns[key] = writer.add_connection(OUTPUT_TOPICS[key], msgtype, typestore=store)

        offset = [0]  # output-bag time offset of the current loop, so the output is one continuous recording

        def emit(key: str, ns: int, msg: Any, msgtype: str) -> None:
            if writer is not None:
                writer.write(out_conns[key], ns + offset[0], store.serialize_cdr(msg, msgtype))

        # every connection is read (and copied into the output bag); only the configured ones are handled
        wanted = list(reader.connections) if writer is not None else list(conns.values())
        handled = {c.id for c in conns.values()}
        total = sum(c.msgcount for c in wanted) * max(1, cfg.loops)
        start_ns, end_ns = reader.start_time, reader.end_time
        duration = max(0.0, (end_ns - start_ns) / 1e9)
        camera_period = 1.0 / max(1e-6, reader_rate(conns["camera"], duration))
        next_tick = next_diag = None
        stops = 0
        commands = 0
        missed = 0
        served_region = driving.region
        wall0 = self.wall()
        emit("active_region", start_ns, msgconv.build_string(types, served_region or ""), "std_msgs/msg/String")
        bar = tqdm(total=total, desc=f"replay {bag.name}", disable=not cfg.progress, unit="msg", leave=False)
        try:
            for conn, ns, raw, out_ns in self._messages(reader, wanted, cfg.loops, start_ns, end_ns):
                bar.update(1)
                offset[0] = out_ns - ns
                now = ns / 1e9
                if cfg.rate > 0:  # pace against the wall clock
                    ahead = (now - start_ns / 1e9) / cfg.rate - (self.wall() - wall0)
                    if ahead > 0:
                        time.sleep(ahead)
                if writer is not None:
                    writer.write(out_conns[("in", conn.id)], out_ns, raw)
                if conn.id not in handled:
                    continue
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    driving.warnings.warn("undecodable_message", f"{conn.topic} at {now:.3f}: {exc}")
                    if conn is conns["camera"]:
                        missed += 1
                    continue
                if conn is conns.get("gnss"):
                    update = region_session.on_fix(msg, now)
                    fix = getattr(msg, "latitude", math.nan), getattr(msg, "longitude", math.nan)
                    if update.next_region_hint:
                        driving.on_next_region(update.next_region_hint, now)
                        emit("next_region", ns, msgconv.build_string(types, update.next_region_hint),
                             "std_msgs/msg/String")
                        self._settle(driving)
                    if update.active_region_changed:
                        driving.on_active_region(update.active_region_changed, now)
                        emit("active_region", ns, msgconv.build_string(types, update.active_region_changed),
                             "std_msgs/msg/String")
                        self._settle(driving)
                    if all(math.isfinite(v) for v in fix):
                        log.track.append((now, fix[0], fix[1], driving.region or ""))
                elif conn is conns.get("odom"):
                    driving.on_odometry(msg, now)
                    region_session.on_odometry(msg, now)
                elif conn is conns.get("speed"):
                    driving.on_speed(msg, now)
                elif conn is conns.get("lidar"):
                    driving.on_lidar(msg, now)
                elif conn is conns["camera"]:
                    result = driving.on_image(msg, now, compressed=compressed)
                    if result is None:
                        missed += 1
                        continue
                    late = result.timings_ms.get("total", 0.0) > camera_period * 1000.0
                    missed += int(late)
                    commands += 1
                    cmd = result.command
                    emit("command", ns, driving.command_message(types, result), COMMAND_TYPES[cfg.command_type])
                    for key, pmsg in driving.perception_messages(types, result).items():
                        emit(key, ns, pmsg, PERCEPTION_TYPES[key])
                    speed = driving._speed if driving._speed is not None else 0.0
                    log.frames.append(FrameRecord(now, result.region, result.bundle_id, cmd.steering_angle,
                                                  cmd.accel, cmd.target_speed, speed, cmd.stop,
                                                  dict(result.timings_ms), late, *risk_fields(result)))
                    if result.region != served_region:
                        self._record_swap(log, driving, served_region, result.region, now)
                        served_region = result.region
                # the node's timers, on bag time (fired at message times: the session's clock never goes back)
                if next_tick is None or now < next_tick - 1.0:  # first message, or the clock jumped back
                    next_tick, next_diag = now, now
                if now >= next_tick:
                    stop = driving.tick(now)
                    if stop is not None:
                        stops += 1
                        commands += 1
                        log.stops.append((now, stop.reason))
                        emit("command", ns, driving.command_message(types, stop), COMMAND_TYPES[cfg.command_type])
                    next_tick = max(next_tick + 1.0 / cfg.timer_hz, now)
                if now >= next_diag:
                    diag_ns = int(now * 1e9)
                    emit("diagnostics", diag_ns, driving.diagnostic_array(types, now),
                         "diagnostic_msgs/msg/DiagnosticArray")
                    emit("diagnostics", diag_ns, region_session.diagnostic_array(types, now),
                         "diagnostic_msgs/msg/DiagnosticArray")
                    next_diag = now + 1.0 / cfg.diagnostics_hz
        except RegionAdaptError:
            raise
        except Exception as exc:  # a truncated or corrupt storage file fails while reading
            raise DataError(bag, f"bag is corrupt or truncated ({bar.n} of {total} messages read): {exc}") from exc
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        wall = self.wall() - wall0
        stats = driving.stats(end_ns / 1e9)
        log.warnings = driving.warnings.counts()
        held_unknown = region_session.counters().get("unknown_status", 0)
        if held_unknown:
            # Fixes with NavSatStatus STATUS_UNKNOWN (-2) were not used for the region: say so in the summary.
            log.warnings["gnss_unknown_status_held"] = held_unknown
        totals = np.array([f.latency_ms.get("total", math.nan) for f in log.frames], dtype=float)
        totals = totals[np.isfinite(totals)]
        regions = list(dict.fromkeys(f.region for f in log.frames))
        summary = ReplaySummary(
            bag=str(bag), frames=len(log.frames) + (missed - sum(1 for f in log.frames if f.missed)),
            frames_missed=missed, commands=commands, stop_commands=stops, regions=regions,
            swaps=len(log.swaps), latency_ms_p50=float(np.percentile(totals, 50)) if totals.size else math.nan,
            latency_ms_p99=float(np.percentile(totals, 99)) if totals.size else math.nan,
            duration_s=duration, wall_s=wall, speed_vs_real_time=duration / wall if wall > 0 else math.inf,
            report=None, out_bag=str(cfg.out_bag) if cfg.out_bag else None, dropped_frames=stats.dropped_frames,
            failed_loads=stats.swap.get("failed_loads", 0), clock_jumps=stats.clock_jumps, warnings=log.warnings,
            per_region=[], swap_events=log.swaps, stage_latency_ms=stats.latency_ms,
        )
        from regionadapt_ros.replay_report import per_region_summary

        summary.per_region = [{k: _finite_or_none(v) for k, v in r.items()} for r in per_region_summary(log)]
        log.brake_episodes = [e.as_dict() for e in driving.guard.episodes]
        _add_risk_summary(summary, log, driving.guard)
        if cfg.report_dir is not None:
            path = write_report(log, cfg.report_dir, f"Replay of {bag.name}", region_session.geofences,
                                summary={k: v for k, v in summary.as_dict().items() if k != "stage_latency_ms"})
            summary.report = str(path)
        return summary

    @staticmethod
    def _messages(reader, connections, loops: int, start_ns: int, end_ns: int):
        """(connection, log time, raw, output time) — ``loops`` times over the bag. Each loop restarts the log
        time (the clock jumps back, as with ``ros2 bag play --loop``); the output time keeps running."""
        period = end_ns - start_ns + 100_000_000
        for k in range(max(1, loops)):
            for conn, ns, raw in reader.messages(connections=connections):
                yield conn, ns, raw, ns + k * period

    def _settle(self, driving) -> None:
        """As fast as possible: let the load just asked for finish before reading on (see module doc)."""
        if self.cfg.rate <= 0 and driving.swap is not None:
            driving.swap.wait_idle(60)

    @staticmethod
    def _record_swap(log: ReplayLog, driving, old: str | None, new: str, now: float) -> None:
        rec = driving.swap.history[-1] if driving.swap and driving.swap.history else None
        lat = lon = None
        if log.track:
            lat, lon = log.track[-1][1], log.track[-1][2]
        event = {"t": now, "from": old, "to": new, "lat": lat, "lon": lon}
        if rec is not None and rec.region == new:
            event.update(bundle_id=rec.bundle_id, prefetched=rec.prefetched)
            if rec.request_t is not None and rec.switched_t is not None:
                event["request_to_switch_ms"] = (rec.switched_t - rec.request_t) * 1000.0
            if rec.load_start_t is not None and rec.ready_t is not None:
                event["load_ms"] = (rec.ready_t - rec.load_start_t) * 1000.0
            if rec.request_t is not None and rec.first_frame_t is not None:
                event["request_to_first_frame_ms"] = (rec.first_frame_t - rec.request_t) * 1000.0
        log.swaps.append(event)


def risk_fields(result) -> tuple[Any, ...]:
    """(TTC [s], distance [m], risk level, emergency brake, TTC warn and brake thresholds) of a frame result, the
    risk fields of its FrameRecord."""
    risk = result.risk
    if risk is None:
        return None, None, 0, bool(result.command.emergency_brake), None, None
    return (risk.ttc_s, risk.distance_m, int(risk.level), bool(result.command.emergency_brake),
            risk.thresholds.ttc_warn_s, risk.thresholds.ttc_brake_s)


def _add_risk_summary(summary: ReplaySummary, log: ReplayLog, guard) -> None:
    ttcs = [f.ttc_s for f in log.frames if f.ttc_s is not None and math.isfinite(f.ttc_s)]
    summary.emergency_brakes = guard.overrides
    summary.emergency_brake_frames = guard.override_frames
    summary.suppressed_emergency_brakes = guard.suppressed
    summary.risk_warn_frames = sum(1 for f in log.frames if f.risk_level == 1)
    summary.risk_brake_frames = sum(1 for f in log.frames if f.risk_level == 2)
    summary.min_ttc_s = min(ttcs) if ttcs else None
    summary.brake_episodes = [{k: _finite_or_none(v) for k, v in e.items()} for e in log.brake_episodes]


def reader_rate(conn, duration_s: float) -> float:
    """Messages per second of a connection over the bag (10 Hz when it cannot be told)."""
    if duration_s <= 0 or conn.msgcount < 2:
        return 10.0
    return (conn.msgcount - 1) / duration_s


def _default_region(regions_file: Path) -> str:
    from regionadapt_ros.core import strict_parse

    try:
        data = strict_parse.load_yaml_file(regions_file, error=DataError) or {}
    except FileNotFoundError:
        raise DataError(regions_file, "cannot read: no such file") from None
    if not isinstance(data, dict):
        raise DataError(regions_file, "must be a YAML mapping with 'regions'")
    return str(data.get("default_region", "base"))
