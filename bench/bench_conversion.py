"""Message conversion cost vs a plain numpy copy of the same bytes, measured side by side in one run.

1. sensor_msgs/Image 1920x1080 bgr8 with row padding (step = 1920*3 + 64) → (H, W, 3) uint8 RGB
   (``image_to_rgb8``); goal: ratio ≤ 3.
2. sensor_msgs/PointCloud2, 120 000 points in CARLA's layout (x, y, z, intensity float32, point_step 16)
   → (N, 4) float32 (``pointcloud2_to_array``); goal: ratio ≤ 3.

Messages are real rosbags Humble message objects (numpy ``data``, as the replay runner sees them); a second
image row uses ``array.array('B')`` data, as rclpy delivers it. Ratios are medians of repeated runs.
The goal's baseline is ``raw.copy()`` (allocates, like a conversion must); the last column also compares
with ``np.copyto`` into a preallocated buffer (memory bandwidth alone, no page faults of a fresh allocation).
Run: ``.venv/bin/python bench/bench_conversion.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import array
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.core.msgconv import (
    build_header,
    build_pointfield,
    image_to_rgb8,
    pointcloud2_to_array,
    rosbags_types,
    rosbags_typestore,
)


def median_s(func: Callable[[], object], repeats: int) -> float:
    func()  # warm caches and lazy initialisation
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def copyto_s(raw: np.ndarray, repeats: int) -> float:
    target = np.empty_like(raw)
    return median_s(lambda: np.copyto(target, raw), repeats)


def padded_bgr8_image(types, rng: np.random.Generator, rclpy_style: bool):
    height, width, pad = 1080, 1920, 64
    step = width * 3 + pad
    data = rng.integers(0, 256, size=step * height, dtype=np.uint8)
    payload = array.array("B", data.tobytes()) if rclpy_style else data
    return types("sensor_msgs/msg/Image")(
        header=build_header(types, 0.0, "camera"), height=height, width=width, encoding="bgr8",
        is_bigendian=0, step=step, data=payload,
    ), data


def carla_cloud(types, rng: np.random.Generator):
    n_points = 120_000
    points = rng.normal(0.0, 20.0, size=(n_points, 4)).astype(np.float32)
    fields = [build_pointfield(types, name, 4 * k, 7) for k, name in enumerate(("x", "y", "z", "intensity"))]
    data = points.reshape(-1).view(np.uint8)
    return types("sensor_msgs/msg/PointCloud2")(
        header=build_header(types, 0.0, "lidar"), height=1, width=n_points, fields=fields, is_bigendian=False,
        point_step=16, row_step=16 * n_points, data=data, is_dense=True,
    ), data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    types = rosbags_types(rosbags_typestore())
    rng = np.random.default_rng(0)

    rows = []
    for label, rclpy_style in (("Image 1920x1080 bgr8 padded, numpy data", False),
                               ("Image 1920x1080 bgr8 padded, array.array data", True)):
        msg, raw = padded_bgr8_image(types, rng, rclpy_style)
        convert = median_s(lambda msg=msg: image_to_rgb8(msg), args.repeats)
        copy = median_s(lambda raw=raw: raw.copy(), args.repeats)
        rows.append((label + " -> RGB uint8", convert, copy, copyto_s(raw, args.repeats)))

    cloud, raw = carla_cloud(types, rng)
    convert = median_s(lambda: pointcloud2_to_array(cloud), args.repeats)
    copy = median_s(lambda: raw.copy(), args.repeats)
    rows.append(("PointCloud2 120k pts CARLA layout -> (N,4) float32", convert, copy, copyto_s(raw, args.repeats)))

    print(f"{'conversion':62s} {'convert ms':>10s} {'copy ms':>8s} {'ratio':>6s} {'goal':>9s} {'vs copyto':>9s}")
    for label, convert, copy, copyto in rows:
        ratio = convert / copy
        verdict = "<=3 ok" if ratio <= 3 else "<=3 MISS"
        print(f"{label:62s} {convert * 1e3:10.3f} {copy * 1e3:8.3f} {ratio:6.2f} {verdict:>9s} {convert / copyto:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
