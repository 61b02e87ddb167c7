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

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_storage import BagExtent, bag_extent, mark_recording, open_bag, recovery_hint
from regionadapt_ros.core.errors import DataError, RegionAdaptError
from regionadapt_ros.replay_report import FrameRecord, ReplayLog, write_report
from regionadapt_ros.replay_topics import ROLE_TYPES, TopicChoice, choose_topics

_LOG = logging.getLogger("regionadapt_ros.replay")

NO_LIDAR_TOPIC = "no lidar topic in the bag"
LATE_SWEEP = "its sweep was recorded after the image (the bag is in receive order; the frame could not wait)"
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
RECORDED_PREFIX = "/recorded"  # where a bag's own copies of the output topics go in the replay's bag
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
    """Topics: a name (must be in the bag), None (found: the default name, else the bag's only topic of the
    kind; see replay_topics) or "" (not read). Paths default to the package's config/."""

    regions_file: Path
    geofence_file: Path
    bundle_dir: Path | None = None
    backend: str = "onnxruntime"
    command_type: str = "ackermann"
    camera_topic: str | None = None
    lidar_topic: str | None = None
    gnss_topic: str | None = None
    odom_topic: str | None = None
    speed_topic: str | None = None
    twist_topic: str | None = None
    out_bag: Path | None = None
    report_dir: Path | None = None
    storage: str = "mcap"
    rate: float = 0.0              # 0: as fast as possible; 1.0: real time
    timer_hz: float = 10.0         # stale-camera check, as the node's timer
    diagnostics_hz: float = 1.0
    loops: int = 1                 # replay the bag this many times; the clock jumps back at each restart
    progress: bool = True
    resolver: dict[str, Any] = field(default_factory=dict)   # ResolverConfig overrides
    repair: bool = False           # repair invalid geofence polygons (shapely make_valid), counted
    driving: dict[str, Any] = field(default_factory=dict)    # DrivingConfig overrides (lidar_extrinsic, ...)
    emergency_brake: bool = True   # the collision-risk guard may override commands (off: it only records)


@dataclass
class ReplaySummary:
    """What a replay did. Times ``t`` are seconds since the bag's first message (``t_offset_s`` is that
    message's time), latencies milliseconds; ``as_dict`` rounds for people."""

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
    region_changes: int = 0        # swaps on crossing a fence (the start-up acquisition from the first fix is not one)
    prefetched_changes: int = 0    # of those, how many had their weights staged by a next_region hint
    t_offset_s: float = 0.0
    topics: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    camera_only_frames: int = 0
    camera_only_reasons: dict[str, int] = field(default_factory=dict)
    camera_only_examples: list[dict[str, Any]] = field(default_factory=list)  # the first few, with numbers
    region_switches: list[dict[str, Any]] = field(default_factory=list)
    failed_load_events: list[dict[str, Any]] = field(default_factory=list)
    gnss_fixes: int = 0
    lidar_frames: dict[str, str] = field(default_factory=dict)
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
        return {k: _rounded(v) for k, v in self.__dict__.items()}


def _rounded(v: Any) -> Any:
    """JSON for people: floats to 3 decimals (NaN and infinities as null), inside lists and dicts too."""
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_rounded(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float):
        return round(v, 3) if math.isfinite(v) else None
    return v


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class ReplayRunner:
    def __init__(self, cfg: ReplayConfig, backend=None, wall_clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.backend = backend
        self.wall = wall_clock
        self.sleep = sleep  # the pacing's own (``wall_clock`` and this are replaced together in tests)

    def run(self, bag: str | Path) -> ReplaySummary:
        from regionadapt_ros.core.region_resolver import ResolverConfig
        from regionadapt_ros.driving_session import DrivingConfig, DrivingSession
        from regionadapt_ros.region_session import RegionSession

        cfg = self.cfg
        bag = Path(bag)
        store = msgconv.rosbags_typestore()
        types = msgconv.rosbags_types(store)
        reader = open_bag(bag, store, DataError)
        try:
            extent = bag_extent(reader, bag)
            topics = choose_topics(bag, list(reader.connections), {
                "camera": cfg.camera_topic, "lidar": cfg.lidar_topic, "gnss": cfg.gnss_topic,
                "odom": cfg.odom_topic, "speed": cfg.speed_topic, "twist": cfg.twist_topic})
            if extent.count_of(topics.connections["camera"]) == 0:
                # a replay of no frame would exit 0 with "frames: 0", which reads like a run that worked
                raise DataError(bag, f"holds no message on {topics.topic('camera')}: no frame to replay")
            region_session = RegionSession.from_file(cfg.geofence_file, _default_region(cfg.regions_file),
                                                     ResolverConfig(**cfg.resolver) if cfg.resolver else None,
                                                     repair=cfg.repair)
            driving = DrivingSession.from_regions_file(
                DrivingConfig(backend=cfg.backend, command_type=cfg.command_type, speed_source=topics.speed_source,
                              emergency_brake=cfg.emergency_brake, **cfg.driving),
                str(cfg.regions_file), bundle_dir=str(cfg.bundle_dir) if cfg.bundle_dir else None,
                geofence_regions=region_session.geofences.regions, backend=self.backend,
                swap_clock=self.wall)
            # rosbags reads every message of the bag for an empty connection list: without /tf_static there is
            # nothing to read here (and a pass over the whole bag would fail on any undecodable message)
            if topics.tf_static:
                for conn, ns, raw in reader.messages(connections=topics.tf_static):
                    # /tf_static is latched: every transform applies from the start, whenever it was recorded
                    try:
                        msg = reader.deserialize(raw, conn.msgtype)
                    except Exception as exc:  # one bad message is counted, as in the main loop
                        driving.warnings.warn("undecodable_message", f"{conn.topic} at t="
                                              f"{(ns - extent.start_ns) / 1e9:.3f} s: {exc}")
                        continue
                    driving.on_tf_static(msg)
            driving.start()
            try:
                return self._loop(bag, reader, extent, topics, driving, region_session, store, types)
            finally:
                driving.close()
        finally:
            reader.close()

    # ------------------------------------------------------------------------------------------ the loop
    def _loop(self, bag, reader, extent: BagExtent, topics: TopicChoice, driving, region_session, store, types
              ) -> ReplaySummary:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from tqdm import tqdm

        cfg = self.cfg
        log = ReplayLog()
        writer = None
        out_conns: dict[Any, Any] = {}
        out_types: dict[tuple[str, str], Any] = {}
        in_types: dict[int, Any] = {}  # input connection id → the type store its copy is written with
        ros1 = not getattr(reader, "is2", True)
        notes: list[str] = [extent.note] if extent.note else []  # said after the topic choice's notes
        uncopied: list[tuple[str, str]] = []
        if cfg.out_bag is not None:
            out = Path(cfg.out_bag)
            if out.exists():
                raise DataError(out, "output bag already exists")
            plugin = StoragePlugin.MCAP if cfg.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(out, version=8, storage_plugin=plugin)
            writer.open()
            # A topic recorded as several connections of one type becomes one; a topic recorded with two types
            # keeps one connection per type (their messages cannot share a declared type).
            by_topic: dict[tuple[str, str], Any] = {}
            produced = set(OUTPUT_TOPICS.values())
            bag_topics = {c.topic for c in reader.connections}
            renamed: set[str] = set()
            for conn in reader.connections:
                topic = conn.topic
                if topic in produced:
                    # The bag holds the stack's outputs already (a bag recorded on the vehicle, a drive or an
                    # earlier replay): the replay writes its own there, so the recorded ones are kept beside them
                    # for comparison, one level further under /recorded when that name is taken too (a replay of
                    # a replay).
                    topic = RECORDED_PREFIX + topic
                    while topic in bag_topics:
                        topic = RECORDED_PREFIX + topic
                    if conn.topic not in renamed:
                        renamed.add(conn.topic)
                        notes.append(f"{conn.topic} recorded in the bag is copied as {topic}: the replay writes its "
                                     f"own {conn.topic}")
                key = topic, conn.msgtype
                if key not in by_topic:
                    # ROS 1 messages are written as their ROS 2 definitions where the project knows them
                    ts = store if ros1 and conn.msgtype in store.fielddefs else reader.typestore
                    if conn.msgtype not in ts.fielddefs:
                        # A bag without message definitions (sqlite3 from Humble) holding a type the project
                        # does not know either: the output bag cannot declare it, so the topic stays out.
                        if key not in uncopied:
                            uncopied.append(key)
                            notes.append(f"{conn.topic} ({conn.msgtype}) not copied into the output bag: neither "
                                         "the bag nor the project has its message definition")
                        continue
                    by_topic[key] = writer.add_connection(topic, conn.msgtype, typestore=ts)
                    out_types[key] = ts
                out_conns[("in", conn.id)] = by_topic[key]
                in_types[conn.id] = out_types[key]
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

        role_of = topics.role_of()
        # every connection is read (and copied into the output bag); only the chosen ones are handled
        wanted = list(reader.connections) if writer is not None else [c for cs in topics.connections.values()
                                                                      for c in cs]
        total = extent.count_of(wanted) * max(1, cfg.loops)
        start_ns, end_ns = extent.start_ns, extent.end_ns
        t0 = start_ns / 1e9
        duration = max(0.0, (end_ns - start_ns) / 1e9)
        camera_count = extent.count_of(topics.connections["camera"])
        camera_period = 1.0 / max(1e-6, _rate(camera_count, duration))
        compressed = topics.msgtype("camera") == "sensor_msgs/msg/CompressedImage"
        next_tick = next_diag = None
        stops = commands = missed = fixes = 0
        served_region = driving.region
        acquired: set[str] = set()  # regions set straight from a first fix, not by crossing a fence
        active = served_region
        failures_seen = 0
        camera_only: list[list[Any]] = []   # [bag-relative t, image stamp, reason, detail with numbers]
        wall0 = self.wall()
        emit("active_region", start_ns, msgconv.build_string(types, served_region or ""), "std_msgs/msg/String")
        bar = tqdm(total=total, desc=f"replay {bag.name}", disable=not cfg.progress, unit="msg", leave=False)
        read = 0
        failure: BaseException | None = None
        try:
            for conn, ns, raw, out_ns in self._messages(reader, wanted, cfg.loops, start_ns, end_ns):
                read += 1  # counted here: a disabled progress bar (--no-progress) counts nothing
                bar.update(1)
                offset[0] = out_ns - ns
                now = ns / 1e9
                t_rel = (out_ns - start_ns) / 1e9  # seconds since the bag's start, running on over loops
                if cfg.rate > 0:  # pace against the wall clock, over every loop (a loop's own time restarts)
                    ahead = t_rel / cfg.rate - (self.wall() - wall0)
                    if ahead > 0:
                        self.sleep(ahead)
                if writer is not None and ("in", conn.id) in out_conns:
                    data = raw
                    if ros1:  # a ROS 1 bag's messages are re-serialised as CDR for the rosbag2 output
                        data = in_types[conn.id].serialize_cdr(
                            reader.deserialize(raw, conn.msgtype), conn.msgtype)
                    writer.write(out_conns[("in", conn.id)], out_ns, data)
                role = role_of.get(conn.id)
                if role is None:
                    continue
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    driving.warnings.warn("undecodable_message", f"{conn.topic} at t={t_rel:.3f} s: {exc}")
                    if role == "camera":
                        missed += 1
                    continue
                if role == "gnss":
                    fixes += 1
                    update = region_session.on_fix(msg, now)
                    fix = getattr(msg, "latitude", math.nan), getattr(msg, "longitude", math.nan)
                    # The switch first: the hint computed at the same fix is about the region after it.
                    if update.active_region_changed:
                        new = update.active_region_changed
                        if region_session.state.acquisition:
                            acquired.add(new)
                        if new != active:
                            log.region_switches.append({"t": t_rel, "from": active, "to": new, "frames_served": 0,
                                                        "lat": _float_or_none(fix[0]),
                                                        "lon": _float_or_none(fix[1])})
                            active = new
                        driving.on_active_region(new, now)
                        emit("active_region", ns, msgconv.build_string(types, new), "std_msgs/msg/String")
                        self._settle(driving)
                    if update.next_region_hint:
                        driving.on_next_region(update.next_region_hint, now)
                        emit("next_region", ns, msgconv.build_string(types, update.next_region_hint),
                             "std_msgs/msg/String")
                        self._settle(driving)
                    if all(math.isfinite(v) for v in fix):
                        log.track.append((t_rel, fix[0], fix[1], driving.region or ""))
                elif role == "odom":
                    # The driving node subscribes to one speed input (speed_source; choose_topics leaves out a
                    # speed or twist topic it does not read); the region manager to odometry whatever it is.
                    if topics.speed_source == "odom":
                        driving.on_odometry(msg, now)
                    region_session.on_odometry(msg, now)
                elif role == "speed":
                    driving.on_speed(msg, now)
                elif role == "twist":
                    driving.on_twist(msg, now)
                elif role == "lidar":
                    driving.on_lidar(msg, now)
                    self._late_sweep(msg, driving, camera_only)
                elif role == "camera":
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
                    log.frames.append(FrameRecord(t_rel, result.region, result.bundle_id, cmd.steering_angle,
                                                  cmd.accel, cmd.target_speed, speed, cmd.stop,
                                                  dict(result.timings_ms), late, *risk_fields(result),
                                                  lidar_used=result.lidar_used))
                    if not result.lidar_used:
                        reason = NO_LIDAR_TOPIC if "lidar" not in topics.connections else (
                            driving.last_lidar_gap or "lidar missing")
                        offset_s = driving.nearest_sweep_offset(result.stamp_s)
                        detail = reason if offset_s is None else f"nearest sweep {offset_s:+.3f} s from the image"
                        camera_only.append([t_rel, result.stamp_s, reason, detail])
                    if log.region_switches and log.region_switches[-1]["to"] == result.region:
                        log.region_switches[-1]["frames_served"] += 1
                    if result.region != served_region:
                        self._record_swap(log, driving, served_region, result.region, t_rel,
                                          acquisition=result.region in acquired)
                        acquired.discard(result.region)
                        served_region = result.region
                if driving.swap is not None and driving.swap.failed_loads > failures_seen:
                    failures_seen = driving.swap.failed_loads
                    for region, reason in sorted(driving.swap.failures.items()):
                        log.failed_loads.append({"t": t_rel, "region": region, "reason": reason})
                # the node's timers, on bag time (fired at message times: the session's clock never goes back)
                if next_tick is None or now < next_tick - 1.0:  # first message, or the clock jumped back
                    next_tick, next_diag = now, now
                if now >= next_tick:
                    stop = driving.tick(now)
                    if stop is not None:
                        stops += 1
                        commands += 1
                        log.stops.append((t_rel, stop.reason))
                        emit("command", ns, driving.command_message(types, stop), COMMAND_TYPES[cfg.command_type])
                    next_tick = max(next_tick + 1.0 / cfg.timer_hz, now)
                if now >= next_diag:
                    diag_ns = int(now * 1e9)
                    emit("diagnostics", diag_ns, driving.diagnostic_array(types, now),
                         "diagnostic_msgs/msg/DiagnosticArray")
                    emit("diagnostics", diag_ns, region_session.diagnostic_array(types, now),
                         "diagnostic_msgs/msg/DiagnosticArray")
                    next_diag = now + 1.0 / cfg.diagnostics_hz
        except RegionAdaptError as exc:
            failure = exc
            raise
        except Exception as exc:  # a truncated or corrupt storage file fails while reading
            failure = DataError(bag, f"bag is corrupt or truncated ({read} of {total} messages read): {exc}"
                                     f"{recovery_hint(bag)}")
            raise failure from exc
        except BaseException as exc:  # Ctrl-C
            failure = exc
            raise
        finally:
            bar.close()
            if writer is not None:
                mark_recording(writer, failure)  # the output bag says whether the replay reached the input's end
                writer.close()
        wall = self.wall() - wall0
        stats = driving.stats(end_ns / 1e9)
        log.warnings = driving.warnings.counts()
        if read < total:
            # The reader can end a damaged chunk's records without an error: the storage's own count says what
            # was never read (`bag recover` copies around the damage).
            log.warnings["messages_unread"] = total - read
        log.camera_only = [(t, reason) for t, _, reason, _ in camera_only]
        log.has_gnss = "gnss" in topics.connections
        held_unknown = region_session.counters().get("unknown_status", 0)
        if held_unknown:
            # Fixes with NavSatStatus STATUS_UNKNOWN (-2) were not used for the region: say so in the summary.
            log.warnings["gnss_unknown_status_held"] = held_unknown
        totals = np.array([f.latency_ms.get("total", math.nan) for f in log.frames], dtype=float)
        totals = totals[np.isfinite(totals)]
        regions = list(dict.fromkeys(f.region for f in log.frames))
        reasons: dict[str, int] = {}
        for _, _, reason, _ in camera_only:
            reasons[reason] = reasons.get(reason, 0) + 1
        summary = ReplaySummary(
            bag=str(bag), frames=len(log.frames) + (missed - sum(1 for f in log.frames if f.missed)),
            frames_missed=missed, commands=commands, stop_commands=stops, regions=regions,
            swaps=len(log.swaps), latency_ms_p50=float(np.percentile(totals, 50)) if totals.size else math.nan,
            latency_ms_p99=float(np.percentile(totals, 99)) if totals.size else math.nan,
            duration_s=duration * cfg.loops, wall_s=wall,
            speed_vs_real_time=duration * cfg.loops / wall if wall > 0 else math.inf,
            report=None, out_bag=str(cfg.out_bag) if cfg.out_bag else None, dropped_frames=stats.dropped_frames,
            failed_loads=stats.swap.get("failed_loads", 0), clock_jumps=stats.clock_jumps, warnings=log.warnings,
            per_region=[], swap_events=log.swaps, stage_latency_ms=stats.latency_ms, t_offset_s=t0,
            topics={role: topics.topic(role) for role in ROLE_TYPES}, notes=[*topics.notes, *notes],
            camera_only_frames=len(camera_only), camera_only_reasons=reasons,
            camera_only_examples=_examples(camera_only),
            region_switches=log.region_switches, failed_load_events=log.failed_loads, gnss_fixes=fixes,
            lidar_frames=dict(driving.cloud_frames.used),
            region_changes=sum(1 for e in log.swaps if not e.get("acquisition")),
            prefetched_changes=sum(1 for e in log.swaps if not e.get("acquisition") and e.get("prefetched")),
        )
        if topics.tf_static:
            summary.notes.append(f"/tf_static: {len(driving.cloud_frames.tf.frames)} frames")
        from regionadapt_ros.replay_report import per_region_summary

        summary.per_region = [{k: _finite_or_none(v) for k, v in r.items()} for r in per_region_summary(log)]
        log.brake_episodes = [_bag_relative(e.as_dict(), t0) for e in driving.guard.episodes]
        _add_risk_summary(summary, log, driving.guard)
        if cfg.report_dir is not None:
            path = write_report(log, cfg.report_dir, f"Replay of {bag.name}", region_session.geofences,
                                summary={k: v for k, v in summary.as_dict().items() if k != "stage_latency_ms"})
            summary.report = str(path)
        return summary

    @staticmethod
    def _late_sweep(msg: Any, driving: Any, camera_only: list[list[Any]]) -> None:
        """A sweep stamped close enough to a frame that already ran camera-only came after it in the bag:
        say so instead of "no sweep" (a bag sorted by receive time can put the sweep after the image)."""
        try:
            stamp = msgconv.stamp_to_s(msg.header)
        except (AttributeError, TypeError, ValueError):
            return
        limit = driving.config.lidar_max_age_s
        for entry in camera_only[-50:]:
            _, image_stamp, reason, _ = entry
            if abs(stamp - image_stamp) <= limit and reason != LATE_SWEEP:
                entry[2] = LATE_SWEEP
                entry[3] = f"its sweep (stamped {stamp - image_stamp:+.3f} s from the image) was recorded after it"

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
    def _record_swap(log: ReplayLog, driving, old: str | None, new: str, t: float, acquisition: bool = False
                     ) -> None:
        rec = driving.swap.history[-1] if driving.swap and driving.swap.history else None
        lat = lon = None
        if log.track:
            lat, lon = log.track[-1][1], log.track[-1][2]
        event = {"t": t, "from": old, "to": new, "lat": lat, "lon": lon, "acquisition": acquisition}
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


def _bag_relative(episode: dict[str, Any], t0: float) -> dict[str, Any]:
    """A brake episode with its start and end as seconds since the bag's start, like every other time."""
    out = dict(episode)
    for key in ("start_s", "end_s"):
        if isinstance(out.get(key), (int, float)):
            out[key] = out[key] - t0
    return out


def _rate(messages: int, duration_s: float) -> float:
    """Messages per second over the bag (10 Hz when it cannot be told)."""
    if duration_s <= 0 or messages < 2:
        return 10.0
    return (messages - 1) / duration_s


def _examples(camera_only: list[list[Any]], per_reason: int = 3) -> list[dict[str, Any]]:
    """The first few frames of each reason, with the numbers behind it."""
    seen: dict[str, int] = {}
    out = []
    for t, _, reason, detail in camera_only:
        if seen.get(reason, 0) < per_reason:
            seen[reason] = seen.get(reason, 0) + 1
            out.append({"t": t, "why": detail})
    return out


def _float_or_none(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _default_region(regions_file: Path) -> str:
    from regionadapt_ros.core import strict_parse

    try:
        data = strict_parse.load_yaml_file(regions_file, error=DataError) or {}
    except FileNotFoundError:
        raise DataError(regions_file, "cannot read: no such file") from None
    if not isinstance(data, dict):
        raise DataError(regions_file, "must be a YAML mapping with 'regions'")
    return str(data.get("default_region", "base"))
