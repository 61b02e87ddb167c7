"""What a hostile input costs now that it is bounded before it is processed, measured side by side in one run.

- a PNG that declares 20000 x 20000 pixels: refused from its header vs decoding a real camera frame;
- a 5 M-point sweep: converted with the default cap (131 072 points, strided on the layout) vs the same sweep
  converted whole (what it cost before the cap), and the BEV grid of each;
- a bundle manifest: the strict parser vs ``json.loads``;
- bags: opening and reading a legitimately compressed bag (MCAP zstd chunks; message compression) through
  ``open_bag`` (regular-file, decompression-bomb and extent checks) vs rosbags alone, and refusing a 40 KB
  chunk that inflates to 1.25 GiB.

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


    bags()


def _drive_bag(path: Path, mode: str, seconds: float = 20.0) -> Path:
    """A 10 Hz drive (odometry, GNSS, a 96x160 camera) written by rosbags with ``mode`` compression."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    store = msgconv.rosbags_typestore()
    types = msgconv.rosbags_types(store)
    rng = np.random.default_rng(0)
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression({"chunks": CompressionMode.STORAGE, "message": CompressionMode.MESSAGE}[mode],
                           CompressionFormat.ZSTD)
    with writer:
        odom = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        cam = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        base = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
        for i in range(int(seconds * 10)):
            t = 1000.0 + 0.1 * i
            ns = int(t * 1e9)
            writer.write(odom, ns, store.serialize_cdr(msgconv.build_odometry(types, 10.0, t), "nav_msgs/msg/Odometry"))
            img = msgconv.build_image(types, np.roll(base, i, axis=1), "rgb8", t, "cam")
            writer.write(cam, ns, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


def bags() -> None:
    import tempfile

    from rosbags.highlevel import AnyReader

    from regionadapt_ros.core.bag_storage import bag_extent, open_bag
    from regionadapt_ros.core.errors import DataError

    store = msgconv.rosbags_typestore()

    def read_all(reader) -> int:
        return sum(len(raw) for _, _, raw in reader.messages())

    def checked(path: Path) -> None:
        reader = open_bag(path, store, DataError)
        try:
            bag_extent(reader, path)
            read_all(reader)
        finally:
            reader.close()

    def plain(path: Path) -> None:
        with AnyReader([path], default_typestore=store) as reader:
            read_all(reader)

    plain_of: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("chunks", "message"):
            bag = _drive_bag(Path(tmp) / mode, mode)
            size = sum(p.stat().st_size for p in bag.iterdir())
            checked_ms = best_ms(lambda bag=bag: checked(bag), 5)
            plain_ms = plain_of[mode] = best_ms(lambda bag=bag: plain(bag), 5)
            print(f"bag of 200 frames, zstd {mode} ({size / 1e6:.1f} MB): open + read all through open_bag "
                  f"{checked_ms:.1f} ms, rosbags alone {plain_ms:.1f} ms: checked / plain = "
                  f"{checked_ms / plain_ms:.2f}")
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        compressor = zstd.ZstdCompressor()
        piece = bytes(16 << 20)
        data = b"".join(compressor.compress(piece) for _ in range(80)) + compressor.flush()
        name = b"zstd"
        chunk = struct.pack("<QQQI", 0, 1, 4096, 0) + struct.pack("<I", len(name)) + name + struct.pack(
            "<Q", len(data)) + data
        bomb = Path(tmp) / "bomb.mcap"
        bomb.write_bytes(b"\x89MCAP0\r\n" + struct.pack("<BQ", 0x06, len(chunk)) + chunk)

        def refuse() -> None:
            try:
                open_bag(bomb, store, DataError)
            except DataError:
                return
            raise AssertionError("the bomb was opened")

        refuse_ms = best_ms(refuse, 5)
        print(f"MCAP chunk of {len(data)} B inflating to 1.25 GiB, declaring 4 KiB: refused in {refuse_ms:.1f} ms "
              f"(rosbags alone would allocate 1.25 GiB); refusal / reading the 200-frame chunked bag = "
              f"{refuse_ms / plain_of['chunks']:.3f}")


if __name__ == "__main__":
    main()
