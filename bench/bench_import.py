"""rosbag2 import cost, measured side by side in one run on a bag written here (camera bgr8, lidar, odometry,
Ackermann commands at realistic sizes).

Baseline: reading every raw message of the bag without decoding (the least any import must do). Compared
with it: the stamp index read from the CDR headers (what the importer's first pass does) against the same
index from fully deserialised messages, and the whole import (both passes, preprocessing, writing the
dataset). Also prints the whole import against the recording's duration (real-time factor).

    .venv/bin/python bench/bench_import.py [--frames 150] [--width 640] [--height 480] [--points 30000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.adaptation.importers import import_rosbag
from regionadapt_ros.adaptation.importers.rosbag import cdr_header_stamp
from regionadapt_ros.core import msgconv

T0 = 1_700_000_000.0


def write_bag(path: Path, frames: int, width: int, height: int, points: int, hz: float = 10.0) -> float:
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = msgconv.rosbags_typestore()
    types = msgconv.rosbags_types(store)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cloud = np.concatenate([rng.uniform(-40, 40, (points, 2)), rng.uniform(-1.7, 1, (points, 1)),
                            rng.uniform(0, 1, (points, 1))], axis=1).astype(np.float32)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {
            "camera": writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store),
            "lidar": writer.add_connection("/lidar/points", "sensor_msgs/msg/PointCloud2", typestore=store),
            "odom": writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store),
            "cmd": writer.add_connection("/vehicle/command", "ackermann_msgs/msg/AckermannDriveStamped",
                                         typestore=store),
        }
        for i in range(frames):
            t = T0 + i / hz
            for key, msg, msgtype in (
                ("odom", msgconv.build_odometry(types, 5.0 + 0.1 * i, t, yaw_rate=0.05), "nav_msgs/msg/Odometry"),
                ("cmd", msgconv.build_ackermann(types, 0.01, 5.0, 0.3, t), "ackermann_msgs/msg/AckermannDriveStamped"),
                ("lidar", msgconv.build_pointcloud2(types, cloud, ("x", "y", "z", "intensity"), t),
                 "sensor_msgs/msg/PointCloud2"),
                ("camera", msgconv.build_image(types, np.roll(image, i, axis=1), "bgr8", t), "sensor_msgs/msg/Image"),
            ):
                writer.write(conns[key], round(t * 1e9), store.serialize_cdr(msg, msgtype))
    return frames / hz


def _reader(bag: Path):
    from rosbags.highlevel import AnyReader

    return AnyReader([bag], default_typestore=msgconv.rosbags_typestore())


def raw_read(bag: Path) -> int:
    total = 0
    with _reader(bag) as reader:
        for _, _, raw in reader.messages():
            total += len(raw)
    return total


def stamps_from_headers(bag: Path) -> list[float]:
    with _reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in ("/camera/image", "/lidar/points")]
        return [cdr_header_stamp(raw) or 0.0 for _, _, raw in reader.messages(connections=conns)]


def stamps_from_messages(bag: Path) -> list[float]:
    with _reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in ("/camera/image", "/lidar/points")]
        return [msgconv.stamp_to_s(reader.deserialize(raw, c.msgtype).header)
                for c, _, raw in reader.messages(connections=conns)]


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # page cache and imports
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--points", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        duration = write_bag(bag, args.frames, args.width, args.height, args.points)
        size_mb = sum(p.stat().st_size for p in bag.iterdir()) / 1e6
        print(f"bag: {args.frames} frames {args.width}x{args.height} bgr8 + {args.points}-point sweeps at 10 Hz, "
              f"{duration:.1f} s, {size_mb:.0f} MB (MCAP)")
        assert stamps_from_headers(bag) == stamps_from_messages(bag)
        base = median_s(lambda: raw_read(bag), args.repeats)
        header = median_s(lambda: stamps_from_headers(bag), args.repeats)
        decoded = median_s(lambda: stamps_from_messages(bag), args.repeats)
        out = Path(tmp) / "ds"
        full = median_s(lambda: import_rosbag(bag, out, "bench", progress=False), args.repeats)
        print(f"{'step':44s} {'median s':>9s} {'x raw read':>11s}")
        for name, value in (
            ("raw read of every message (baseline)", base),
            ("stamp index from CDR headers (pass 1)", header),
            ("stamp index from deserialised messages", decoded),
            ("whole import (2 passes + preprocess + write)", full),
        ):
            print(f"{name:44s} {value:9.3f} {value / base:11.2f}")
        print(f"header index vs deserialised index: {decoded / header:.2f}x faster")
        print(f"whole import: {duration / full:.1f}x real time ({args.frames / full:.0f} frames/s)")


if __name__ == "__main__":
    main()
