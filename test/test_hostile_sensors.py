"""Hostile sensor messages: a small image that declares a huge one, a huge point cloud. Each is bounded before it
is processed (DESIGN.md §7): refused or strided, counted, and the session keeps serving."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from test_driving_session_support import camera_image, lidar_cloud, write_region_bundles

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import ConfigError, MessageConversionError
from regionadapt_ros.core.msgconv.image_header import encoded_size
from regionadapt_ros.driving_session import DrivingConfig, DrivingSession
from regionadapt_ros.nodes import _params


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG stream (valid CRCs) whose IHDR declares ``width`` x ``height`` RGB pixels; its
    IDAT holds the first rows only, as a decompression bomb's would before the decoder allocates the rest."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def compressed(types, data: bytes, fmt: str = "rgb8; png compressed bgr8", stamp: float = 1.0):
    return types("sensor_msgs/msg/CompressedImage")(header=msgconv.build_header(types, stamp, "camera"), format=fmt,
                                                    data=np.frombuffer(data, np.uint8).copy())


def jpeg_declaring(width: int, height: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ------------------------------------------------------------------------------------------------- headers


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_the_header_size_of_real_encodings_is_their_decoded_size(ext: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        pytest.skip(f"this OpenCV cannot write {ext}")
    size = encoded_size(encoded.tobytes())
    assert (size.width, size.height) == (53, 37) and size.codec == {".jpg": "jpeg"}.get(ext, ext[1:])


def test_a_small_png_declaring_20000_by_20000_pixels_is_refused_before_decoding(types) -> None:
    data = png_declaring(20000, 20000)
    assert len(data) < 4096
    with pytest.raises(MessageConversionError, match=r"CompressedImage\.data: PNG header declares 20000x20000 = "
                       r"400,000,000 pixels, more than the limit of 16,777,216 \(max_image_pixels\); refused before "
                       "decoding"):
        msgconv.compressed_image_to_rgb8(compressed(types, data))
    with pytest.raises(MessageConversionError, match="more than the limit of 1,000"):
        msgconv.compressed_image_to_rgb8(compressed(types, png_declaring(100, 100)), max_pixels=1000)


def test_a_jpeg_declaring_a_huge_frame_is_refused_before_decoding(types) -> None:
    with pytest.raises(MessageConversionError, match=r"JPEG header declares 60000x50000"):
        msgconv.compressed_image_to_rgb8(compressed(types, jpeg_declaring(60000, 50000), "jpeg"))


def progressive_jpeg_with_scans(extra: int, side: int = 64) -> bytes:
    """A real progressive JPEG (OpenCV's encoder) with its last scan repeated ``extra`` more times before the end
    of image: a valid stream the decoder works through scan by scan."""
    image = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = encoded.tobytes()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra + data[-2:]


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding(types) -> None:
    from regionadapt_ros.core.msgconv.image_header import MAX_JPEG_SCANS

    plain = progressive_jpeg_with_scans(0)
    scans = plain.count(b"\xff\xda")
    assert 1 < scans < MAX_JPEG_SCANS  # a real progressive encoder's handful
    rgb = msgconv.compressed_image_to_rgb8(compressed(types, plain, "jpeg"))
    assert rgb.shape == (64, 64, 3)
    at_limit = progressive_jpeg_with_scans(MAX_JPEG_SCANS - scans)
    assert msgconv.compressed_image_to_rgb8(compressed(types, at_limit, "jpeg")).shape == (64, 64, 3)
    bomb = progressive_jpeg_with_scans(MAX_JPEG_SCANS - scans + 1)
    with pytest.raises(MessageConversionError, match=rf"JPEG with {MAX_JPEG_SCANS + 1} scans \(at most "
                       rf"{MAX_JPEG_SCANS}\)"):
        msgconv.compressed_image_to_rgb8(compressed(types, bomb, "jpeg"))


def test_the_real_road_frame_as_a_progressive_jpeg_is_accepted(road_frame_png) -> None:
    image = cv2.imread(str(road_frame_png), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    size = encoded_size(encoded.tobytes())
    assert (size.width, size.height) == (1164, 874)


@pytest.mark.parametrize(("data", "needle"), [
    (b"II*\x00" + b"\x00" * 100, "is not a PNG, JPEG, WebP or BMP image (first bytes: 49 49 2a 00"),  # TIFF
    (b"GIF89a" + b"\x00" * 20, "is not a PNG, JPEG, WebP or BMP image"),
    (b"\xff\xd8" + b"\xff\xe1\x00\x04\x00\x00" * 2000, "JPEG with more than 512 segments before its frame header"),
    (b"\xff\xd8\xff\xda\x00\x08", "JPEG with no frame header (SOF) before its first scan"),
    (b"\xff\xd8" + b"\xff" * 1000, "more than 64 fill bytes"),
    (b"\xff\xd8\xff\xe0\x00", "JPEG truncated before its frame header"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG without an IHDR chunk first"),
])
def test_malformed_or_unsupported_headers_are_refused_with_the_reason(types, data: bytes, needle: str) -> None:
    with pytest.raises(MessageConversionError) as info:
        msgconv.compressed_image_to_rgb8(compressed(types, data, "jpeg"))
    assert info.value.field == "data" and needle in str(info.value)


def test_a_raw_image_larger_than_the_limit_is_refused(types) -> None:
    msg = camera_image(types, 1.0)
    with pytest.raises(MessageConversionError, match=r"Image\.width: 160x96 = 15,360 pixels is more than the limit "
                       "of 10,000"):
        msgconv.image_to_rgb8(msg, max_pixels=10_000)


# ------------------------------------------------------------------------------------------------- clouds


def organised_cloud(types, rows: int, cols: int):
    """An organised (rows x cols) cloud whose point (r, c) is at x = r, y = c, z = 0, intensity = r * cols + c."""
    r, c = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    points = np.stack([r, c, np.zeros_like(r), r * cols + c], axis=-1).reshape(-1, 4)
    msg = msgconv.build_pointcloud2(types, points, ("x", "y", "z", "intensity"), 1.0, "lidar")
    msg.height, msg.width = rows, cols
    msg.row_step = cols * msg.point_step
    return msg


def test_a_huge_cloud_is_strided_before_it_is_read_and_counted(types) -> None:
    from regionadapt_ros.core.diagnostics import CountedWarnings

    msg = organised_cloud(types, 128, 2048)  # an Ouster-like 128 x 2048 sweep
    warnings = CountedWarnings()
    result = msgconv.read_pointcloud2(msg, max_points=10_000, warnings=warnings)
    assert result.downsampled_from == 128 * 2048 and len(result.points) <= 10_000
    assert warnings.count("pointcloud2.downsampled") == 1
    # Every k-th point of each row, and of the rows, so the strided cloud still covers the whole sweep.
    rows = np.unique(result.points[:, 0])
    cols = np.unique(result.points[:, 1])
    assert rows[0] == 0 and rows[-1] >= 128 - (rows[1] - rows[0]) and cols[0] == 0 and cols[-1] >= 2048 - cols[1]
    ids = result.points[:, 3].astype(np.int64)
    np.testing.assert_array_equal(ids, (rows[:, None] * 2048 + cols[None, :]).reshape(-1).astype(np.int64))
    assert msgconv.read_pointcloud2(msg, max_points=128 * 2048).downsampled_from is None


def test_a_cloud_of_two_million_points_costs_what_the_cap_costs_in_the_session(tmp_path, types) -> None:
    regions = write_region_bundles(tmp_path)
    session = DrivingSession.from_regions_file(DrivingConfig(lidar_max_points=50_000), str(regions))
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(0, 40, 2_000_000), rng.uniform(-10, 10, 2_000_000), np.full(2_000_000, -1.6),
                   rng.uniform(0, 1, 2_000_000)]
    huge = msgconv.build_pointcloud2(types, points, ("x", "y", "z", "intensity"), 1.0, "lidar")
    try:
        session.start()
        assert session.on_lidar(huge, 1.0)
        assert session.warnings.count("pointcloud2.downsampled") == 1
        stored = session._lidar[-1][1]
        assert len(stored) == 50_000 and stored.shape[1] == 4
        result = session.on_image(camera_image(types, 1.0), 1.0)
        assert result is not None and result.lidar_used
    finally:
        session.close()


# -------------------------------------------------------------------------------------------- the session


def test_a_bomb_frame_is_dropped_and_counted_and_the_next_frame_is_served(tmp_path, types) -> None:
    regions = write_region_bundles(tmp_path)
    session = DrivingSession.from_regions_file(DrivingConfig(), str(regions))
    try:
        session.start()
        session.on_lidar(lidar_cloud(types, 1.0), 1.0)
        assert session.on_image(compressed(types, png_declaring(20000, 20000)), 1.0, compressed=True) is None
        assert session.warnings.count("bad_compressed_image") == 1
        assert "declares 20000x20000" in session.warnings.last_message("bad_compressed_image")
        good = msgconv.build_compressed_image(types, np.full((96, 160, 3), 90, np.uint8), "jpeg", 1.05)
        result = session.on_image(good, 1.05, compressed=True)
        assert result is not None and not result.command.stop
    finally:
        session.close()


def test_the_new_limits_are_driving_node_parameters_with_the_session_defaults() -> None:
    defaults = {spec.name: spec.default for spec in _params.DRIVING_PARAMETERS}
    config = _params.driving_config(defaults)
    assert config.max_image_pixels == DrivingConfig().max_image_pixels == msgconv.DEFAULT_MAX_IMAGE_PIXELS
    assert config.lidar_max_points == DrivingConfig().lidar_max_points == msgconv.DEFAULT_LIDAR_MAX_POINTS
    spec = _params.spec_of(_params.DRIVING_PARAMETERS, "max_image_pixels")
    assert spec is not None and spec.problem(0) is not None and spec.problem(1.5) is not None
    with pytest.raises(ConfigError, match=r"lidar_max_points: must be an integer >= 1, got 0"):
        DrivingConfig(lidar_max_points=0)


def test_a_cloud_with_a_million_fields_is_refused_without_walking_them(types) -> None:
    msg = lidar_cloud(types, 1.0)
    msg.fields = list(msg.fields) * 250_000
    with pytest.raises(MessageConversionError, match=r"PointCloud2\.fields: 1000000 fields, more than 256"):
        msgconv.pointcloud2_to_array(msg)


def test_the_header_parser_only_ever_raises_a_conversion_error_on_random_bytes() -> None:
    from regionadapt_ros.core.msgconv.image_header import check_decoded_size

    rng = np.random.default_rng(11)
    prefixes = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"\xff\xd8\xff\xc0", b"RIFF\x00\x00\x00\x00WEBPVP8X",
                b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM"]
    for k in range(3000):
        tail = rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        data = prefixes[k % len(prefixes)] + tail
        try:
            size = check_decoded_size(data, 1 << 24)
        except MessageConversionError:
            continue
        assert size.width > 0 and size.height > 0 and size.pixels <= 1 << 24


def test_random_cloud_layouts_are_converted_or_refused_and_capped(types) -> None:
    from regionadapt_ros.core.msgconv.pointcloud import _strides_for

    for height, width, cap in ((128, 2048, 10_000), (1, 5_000_000, 131_072), (10**7, 1, 1000), (3, 7, 2)):
        row, col = _strides_for(height, width, cap)
        assert -(-height // row) * -(-width // col) <= cap
    rng = np.random.default_rng(2)
    base = lidar_cloud(types, 1.0, n_points=64)
    for _ in range(1500):
        msg = lidar_cloud(types, 1.0, n_points=64)
        msg.height, msg.width = int(rng.integers(-1, 5)), int(rng.integers(-1, 200))
        msg.point_step = int(rng.integers(-2, 40))
        msg.row_step = int(rng.integers(-2, 4000))
        fields = []
        for f in base.fields:
            fields.append(types("sensor_msgs/msg/PointField")(name=f.name, offset=int(rng.integers(-2, 40)),
                                                              datatype=int(rng.integers(0, 10)),
                                                              count=int(rng.integers(0, 3))))
        msg.fields = fields
        msg.data = rng.integers(0, 256, int(rng.integers(0, 6000)), dtype=np.uint8)
        try:
            points = msgconv.pointcloud2_to_array(msg, max_points=int(rng.integers(1, 300)))
        except MessageConversionError:
            continue
        assert points.ndim == 2 and points.shape[1] == 4 and points.dtype == np.float32


def test_random_gnss_fixes_never_raise_and_unusable_ones_are_counted(types, tmp_path) -> None:
    import json

    from regionadapt_ros.core.region_resolver import ResolverConfig
    from regionadapt_ros.region_session import RegionSession

    ring = [[[9.99, 9.99], [10.01, 9.99], [10.01, 10.01], [9.99, 10.01], [9.99, 9.99]]]
    fences = tmp_path / "fences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": "east", "priority": 1},
         "geometry": {"type": "Polygon", "coordinates": ring}}]}))
    session = RegionSession.from_file(fences, "base", ResolverConfig(confirm_s=0.0, min_dwell_s=0.0))
    rng = np.random.default_rng(4)
    specials = [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e308, -1e308, 5e-324]
    for k in range(1500):
        msg = msgconv.build_navsatfix(types, 10.0, 10.0, 20.0, 100.0 + k * 0.1, status=0, h_std_m=2.0)
        msg.status.status = int(rng.choice([-2, -1, 0, 1, 2, 3, 127, -128]))
        msg.position_covariance_type = int(rng.integers(0, 256))
        cov = rng.normal(0, 5, 9)
        mask = rng.random(9) < 0.3
        cov[mask] = rng.choice(specials, int(mask.sum()))
        msg.position_covariance[:] = cov
        if rng.random() < 0.2:
            msg.latitude = float(rng.choice([*specials, 91.0, -1000.0]))
        if rng.random() < 0.1:
            msg.header.stamp.sec = int(rng.choice([0, -(2**31), 2**31 - 1]))
        session.on_fix(msg, 100.0 + k * 0.1)
        session.diagnostics(100.0 + k * 0.1)
    counters = session.resolver.counters
    assert counters.get("invalid_accuracy", 0) > 0 and counters.get("invalid_position", 0) > 0, counters


def test_random_camera_messages_never_raise_and_the_session_keeps_serving(tmp_path, types) -> None:
    regions = write_region_bundles(tmp_path)
    session = DrivingSession.from_regions_file(DrivingConfig(max_image_pixels=1 << 20), str(regions))
    rng = np.random.default_rng(9)
    encodings = ["rgb8", "bgra8", "mono16", "32FC1", "bayer_rggb8", "yuv422", "8SC3", "16UC7", "nonsense", ""]
    try:
        session.start()
        for k in range(200):
            stamp = 1.0 + k * 0.01
            if k % 2:
                msg = camera_image(types, stamp)
                msg.encoding = str(rng.choice(encodings))
                msg.height, msg.width = int(rng.integers(-1, 1200)), int(rng.integers(-1, 1200))
                msg.step = int(rng.integers(-1, 5000))
                msg.data = rng.integers(0, 256, int(rng.integers(0, 20_000)), dtype=np.uint8)
                session.on_image(msg, stamp)
            else:
                head = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b""][k % 8 // 2]
                data = head + rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
                session.on_image(compressed(types, data, str(rng.choice(["jpeg", "png", "16UC1; compressedDepth",
                                                                           "rgb8; jpeg compressed bgr8", ""])),
                                            stamp), stamp, compressed=True)
        assert session.dropped_frames() > 150
        good = session.on_image(camera_image(types, 10.0), 10.0)
        assert good is not None and not good.command.stop
    finally:
        session.close()


_IMAGE_CHILD = """
import resource, sys
import numpy as np
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import MessageConversionError

class Frame:  # what compressed_image_to_rgb8 reads of a CompressedImage
    format = "png"
    data = np.fromfile(sys.argv[1], np.uint8)

with open("/proc/self/status") as fh:
    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))
try:
    msgconv.compressed_image_to_rgb8(Frame())
    print("DECODED")
except MessageConversionError as exc:
    print("REFUSED", exc)
except MemoryError:
    print("MEMORY")
"""


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_png_bomb_is_refused_within_64_mib_of_address_space(tmp_path) -> None:
    """The header check runs before any allocation: under a 64 MiB address-space budget the 20000 x 20000 PNG
    (a 1.2 GB decode) is refused with the reason, not attempted."""
    import os
    import subprocess
    import sys

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    result = subprocess.run([sys.executable, "-c", _IMAGE_CHILD, str(bomb)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("REFUSED") and "declares 20000x20000" in result.stdout, result.stdout
