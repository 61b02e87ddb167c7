"""``import_rosbag``: a recorded drive into a dataset, nothing written unless the index pass succeeded."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.dataset import (
    BEV_SHAPE,
    IMAGE_SHAPE,
    MIN_SAMPLES,
    implausible_labels,
    write_dataset,
)
from regionadapt_ros.adaptation.importers.common import (
    LABEL_INDEX,
    ImportResult,
    check_output,
    check_region,
    time_block_splits,
)
from regionadapt_ros.adaptation.importers.rosbag.config import (
    CARLA_TYPE,
    ODOMETRY_TYPE,
    TWIST_STAMPED_TYPE,
    RosbagImportConfig,
)
from regionadapt_ros.adaptation.importers.rosbag.passes import (
    _check_clocks,
    _commands,
    _convert_pass,
    _deserialize,
    _index_pass,
    _match,
    _Plan,
)
from regionadapt_ros.adaptation.importers.rosbag.signals import TimeSeries
from regionadapt_ros.adaptation.importers.rosbag.topics import _open_reader, _pick_topic, _Topic
from regionadapt_ros.core.bag_storage import bag_extent
from regionadapt_ros.core.bag_topics import SPEED_SOURCE_ROLES, BagTopics, TopicRole
from regionadapt_ros.core.control import CARLA_MAX_STEERING_ANGLE, VehicleLimits
from regionadapt_ros.core.errors import ConfigError, DataError
from regionadapt_ros.core.frames import TF_STATIC_TOPIC, TF_STATIC_TYPE, CloudFrames, parse_extrinsic

# ------------------------------------------------------------------------------------------------ import

def drop_implausible_labels(labels: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Labels derived from a recording (acceleration from two speeds over one command period: a stop command at
    10 m/s and 20 Hz gives -200 m/s^2) that no vehicle reaches are not labels: NaN, counted per label. Values a
    user wrote are refused instead (``importers.frames``), and a dataset holding them does not open."""
    labels = np.array(labels, dtype=np.float32, copy=True)
    dropped: dict[str, int] = {}
    for name, outside in implausible_labels(labels).items():
        labels[outside, LABEL_INDEX[name]] = np.nan
        dropped[name] = int(outside.sum())
    return labels, dropped

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
    topics = BagTopics.of(bag, reader.connections)
    extent = bag_extent(reader, bag)
    camera = _pick_topic(topics, extent, "camera", cfg.camera_topic, True)
    assert camera is not None
    roles: dict[str, _Topic] = {"camera": camera}
    if cfg.use_lidar:
        lidar = _pick_topic(topics, extent, "lidar", cfg.lidar_topic, False)
        if lidar is not None:
            roles["lidar"] = lidar
    elif cfg.lidar_topic is not None:
        raise ConfigError("--lidar-topic", "is not used with --no-lidar")
    speed_topic = _speed_topic(topics, extent, cfg)
    roles["speed"] = speed_topic
    if cfg.command_source == "command":
        command = _pick_topic(topics, extent, "command", cfg.command_topic, True,
                              ", or derive commands from odometry with --command-source odometry")
        assert command is not None
        roles["command"] = command
        custom = cfg.max_steering_angle_given or cfg.limits.max_steering_angle != VehicleLimits().max_steering_angle
        if command.msgtype == CARLA_TYPE and not custom:
            cfg = replace(cfg, limits=replace(cfg.limits, max_steering_angle=CARLA_MAX_STEERING_ANGLE))
            topics.notes.append(f"command: CARLA control, steer 1.0 read as {CARLA_MAX_STEERING_ANGLE} rad at the "
                                "wheels (CARLA's default vehicles; --max-steering-angle for another)")
    elif speed_topic.msgtype not in (ODOMETRY_TYPE, TWIST_STAMPED_TYPE):
        raise DataError(bag, f"--command-source odometry needs a {ODOMETRY_TYPE} or {TWIST_STAMPED_TYPE} speed "
                             "topic (for the yaw rate); "
                             f"{speed_topic.topic} is {speed_topic.msgtype}")
    for role, topic in roles.items():
        if topic.count == 0:
            raise DataError(bag, f"{role} topic {topic.topic} has no messages")

    index = _index_pass(reader, roles, cfg, progress)
    _check_clocks(bag, index, roles)
    speed = TimeSeries.from_rows(index.speed_t, index.speed_rows, 2)
    if len(speed) == 0:
        why = index.first_refusal.get("speed")
        raise DataError(bag, f"speed topic {roles['speed'].topic}: no readable message "
                             f"({index.unreadable['speed']} unreadable" + (f"; the first: {why})" if why else ")"))
    commands, command_info = _commands(index, roles, speed, cfg)
    plan = _match(index, speed, commands, "lidar" in roles, cfg)
    # Messages refused, not frames: counted apart from the frames skipped.
    refused = {"unreadable_speed_messages": index.unreadable["speed"],
               "unreadable_command_messages": index.unreadable["command"],
               "implausible_yaw_rates": index.bad_yaw_rates}
    n_camera = len(index.camera_t)
    _check_enough(bag, out_dir, plan, n_camera, cfg, refused)
    splits = time_block_splits(plan.stamps, cfg.split_block_s, cfg.seed)

    n = plan.camera_ordinal.size
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.import-", dir=out_dir.parent) as tmp:
        # Memory maps: a long drive does not have to fit in memory twice (here and in write_dataset).
        images = np.lib.format.open_memmap(Path(tmp) / "images.npy", mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE))
        bev = np.lib.format.open_memmap(Path(tmp) / "bev.npy", mode="w+", dtype=np.float16, shape=(n, *BEV_SHAPE))
        frames = _cloud_frames(reader, cfg) if "lidar" in roles else None
        ok, lidar_refused = _convert_pass(reader, roles, plan, index.camera_keys, index.lidar_keys, images, bev,
                                          progress, frames)
        labels, stamps = plan.labels, plan.stamps
        frame_failures = int((~ok).sum())
        plan.skipped["unreadable_frames"] = frame_failures - int(lidar_refused.sum())
        plan.skipped["lidar_transform_implausible"] = int(lidar_refused.sum())
        if frame_failures:
            images, bev, labels, stamps = images[ok], bev[ok], labels[ok], stamps[ok]
            kept = _Plan(plan.camera_ordinal[ok], plan.lidar_ordinal[ok], stamps, labels, plan.skipped)
            _check_enough(bag, out_dir, kept, n_camera, cfg, refused, frames)
            splits = time_block_splits(stamps, cfg.split_block_s, cfg.seed)
        labels, implausible = drop_implausible_labels(labels)
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
                       "refused_messages": refused,
                       "steering_not_labelled": int(np.isnan(steering).sum()),
                       "labels_beyond_plausible_range": implausible},
            "split": {"kind": "time_blocks", "block_s": cfg.split_block_s},
            "start_stamp_s": float(stamps[0]), "duration_s": float(stamps[-1] - stamps[0]),
        }
        notes = topics.notes + ([extent.note] if extent.note else [])
        if frames is not None:
            meta["lidar_frames"] = dict(frames.used)
            meta["lidar_vehicle_frame"] = {"frame": cfg.vehicle_frame, "ground_z_m": cfg.ground_z_m}
            notes += _lidar_frame_notes(frames, cfg)
        if notes:
            meta["bag_notes"] = notes
        write_dataset(out_dir, images, bev, labels, meta, splits)
    return ImportResult(out_dir, int(labels.shape[0]), dict(plan.skipped),
                        json.loads((out_dir / "meta.json").read_text()), refused)


def _check_enough(bag: Path, out_dir: Path, plan: _Plan, n_camera: int, cfg: RosbagImportConfig,
                  refused: dict[str, int], frames: CloudFrames | None = None) -> None:
    n = plan.camera_ordinal.size
    if n >= MIN_SAMPLES:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in plan.skipped.items() if v) or "none skipped"
    messages = ", ".join(f"{k} {v}" for k, v in refused.items() if v)
    lidar = [f"lidar frame {frame!r} {how}" for frame, how in sorted(frames.used.items())
             if how.startswith("refused")] if frames is not None else []
    raise DataError(bag, f"too few samples to split: {n} of {n_camera} camera frame(s) matched (skipped: {reasons}"
                         + (f"; messages refused: {messages}" if messages else "")
                         + "".join(f"; {text}" for text in lidar)
                         + f"; max dt {cfg.max_dt_s} s, max lidar age {cfg.max_lidar_age_s} s); a dataset needs at "
                         f"least {MIN_SAMPLES}, nothing written to {out_dir}")


def _speed_topic(topics: BagTopics, extent: Any, cfg: RosbagImportConfig) -> _Topic:
    """The speed the labels come from: the one given by ``--speed-topic`` (checked for a yaw rate below, with
    the reason), else the first speed input the bag has in the replay's order (odometry, a Float32 speed, a
    vehicle's twist), so a bag is labelled from the speed it replays with. Deriving commands from odometry needs a
    yaw rate: a Float32 speed is then not looked for."""
    if cfg.speed_topic is not None:
        chosen = _pick_topic(topics, extent, "speed", cfg.speed_topic, True)
        assert chosen is not None
        return chosen
    with_yaw_rate = cfg.command_source == "odometry"
    for name, role in SPEED_SOURCE_ROLES.items():
        if with_yaw_rate and name == "speed":
            continue
        # as the import's one speed role: its refusals name --speed-topic; the first input found is the speed,
        # so a later one (never read) cannot refuse the bag
        chosen = topics.choose(TopicRole("speed", role.types, role.default, role.hints), None)
        if chosen is not None:
            return _Topic("speed", chosen.topic, chosen.msgtype, chosen.connections,
                          extent.count_of(chosen.connections))
    # None of them: refused with the types, the default and the bag's topics.
    chosen_any = _pick_topic(topics, extent, "speed_with_yaw_rate" if with_yaw_rate else "speed", None, True)
    assert chosen_any is not None
    return chosen_any


def _cloud_frames(reader: Any, cfg: RosbagImportConfig) -> CloudFrames:
    """How the bag's clouds come into the vehicle frame: its /tf_static (every message, as the driving node
    gathers them), else ``cfg.lidar_extrinsic``."""
    frames = CloudFrames(cfg.vehicle_frame, parse_extrinsic(cfg.lidar_extrinsic, "--lidar-extrinsic"),
                         ground_z_m=cfg.ground_z_m)
    tf = [c for c in reader.connections if c.topic == TF_STATIC_TOPIC and c.msgtype == TF_STATIC_TYPE]
    if tf:
        for conn, _, raw in reader.messages(connections=tf):
            msg = _deserialize(reader, raw, conn.msgtype)
            if msg is not None:
                frames.on_tf_static(msg)
    return frames


def _lidar_frame_notes(frames: CloudFrames, cfg: RosbagImportConfig) -> list[str]:
    notes = []
    for frame, how in sorted(frames.used.items()):
        if how.startswith("unknown"):
            notes.append(f"lidar frame {frame!r}: no transform to {cfg.vehicle_frame!r}, clouds used as they are "
                         "(give it on /tf_static or with --lidar-extrinsic, or name the vehicle frame with "
                         "--vehicle-frame)")
        elif how.startswith("refused"):
            notes.append(f"lidar frame {frame!r}: {how}; its frames were dropped (lidar_transform_implausible)")
        elif how != "vehicle frame":
            notes.append(f"lidar frame {frame!r}: into {cfg.vehicle_frame!r} with {how}")
    return notes


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
    return replace(config, limits=limits,
                   max_steering_angle_given=config.max_steering_angle_given or max_steering_angle is not None)


def _limits_dict(limits: VehicleLimits) -> dict[str, float]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}
