"""What a hostile input costs now that it is bounded before it is processed, measured side by side in one run.

- a PNG that declares 20000 x 20000 pixels: refused from its header vs decoding a real camera frame;
- a 5 M-point sweep: converted with the default cap (131 072 points, strided on the layout) vs the same sweep
  converted whole (what it cost before the cap), and the BEV grid of each;
- a bundle manifest: the strict parser vs ``json.loads``.

Prints ratios (this machine is shared: absolute times drift, ratios measured together hold).
"""

from __future__ import annotations

import json
import statistics
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from regionadapt_ros.core import msgconv, strict_parse
from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.preprocess import bev_grid

REPO = Path(__file__).resolve().parents[1]


def best_ms(fn, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 8, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def main() -> None:
    store = msgconv.rosbags_typestore()
    types = msgconv.rosbags_types(store)

    bomb = types("sensor_msgs/msg/CompressedImage")(header=msgconv.build_header(types, 0.0, "camera"),
                                                    format="png", data=np.frombuffer(png_declaring(20000, 20000),
                                                                                     np.uint8).copy())
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    real = msgconv.build_compressed_image(types, frame, "jpeg", 0.0)

    def refuse_bomb() -> None:
        try:
            msgconv.compressed_image_to_rgb8(bomb)
        except MessageConversionError:
            return
        raise AssertionError("the bomb was decoded")

    refuse_ms = best_ms(refuse_bomb)
    decode_ms = best_ms(lambda: msgconv.compressed_image_to_rgb8(real))
    print(f"PNG declaring 20000x20000 ({bomb.data.size} B): refused in {refuse_ms:.3f} ms; a real 1280x720 JPEG "
          f"decodes in {decode_ms:.2f} ms: refusal / decode = {refuse_ms / decode_ms:.4f}")

    n = 5_000_000
    rng = np.random.default_rng(1)
    points = np.c_[rng.uniform(-50, 50, (n, 2)), rng.uniform(-2, 1, n), rng.uniform(0, 1, n)].astype(np.float32)
    cloud = msgconv.build_pointcloud2(types, points, ("x", "y", "z", "intensity"), 0.0, "lidar")
    capped_ms = best_ms(lambda: bev_grid(msgconv.pointcloud2_to_array(cloud, max_points=131_072)), repeat=5)
    whole_ms = best_ms(lambda: bev_grid(msgconv.pointcloud2_to_array(cloud)), repeat=3)
    print(f"5 M-point sweep, conversion + BEV: capped at 131072 points {capped_ms:.1f} ms, whole {whole_ms:.1f} ms: "
          f"capped / whole = {capped_ms / whole_ms:.3f}")

    raw = (REPO / "bundles" / "highway" / "manifest.json").read_bytes()
    strict_ms = best_ms(lambda: [strict_parse.loads_json(raw, "manifest") for _ in range(50)]) / 50
    plain_ms = best_ms(lambda: [json.loads(raw) for _ in range(50)]) / 50
    print(f"manifest ({len(raw)} B): strict parse {strict_ms:.3f} ms, json.loads {plain_ms:.3f} ms: "
          f"strict / plain = {strict_ms / plain_ms:.2f}")


if __name__ == "__main__":
    main()
