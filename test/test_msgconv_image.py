"""sensor_msgs/Image and CompressedImage conversion with real ROS 2 (Humble) message classes from the rosbags
type store, a real camera frame (comma2k19) and hand-built edge cases."""

from __future__ import annotations

import array
from pathlib import Path

import cv2
import numpy as np
import pytest

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv import (
    build_compressed_image,
    build_header,
    build_image,
    compressed_image_to_array,
    compressed_image_to_rgb8,
    image_to_array,
    image_to_rgb8,
    parse_compressed_format,
    rgb_to_bayer,
)


@pytest.fixture(scope="module")
def frame(road_frame_png: Path) -> np.ndarray:
    """The real road-camera frame, (874, 1164, 3) uint8 RGB."""
    bgr = cv2.imread(str(road_frame_png), cv2.IMREAD_COLOR)
    assert bgr is not None and bgr.shape == (874, 1164, 3)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def raw_image(types, pixels: np.ndarray, encoding: str, *, pad: int = 0, big: bool = False, data_kind="numpy",
              step: int | None = None, fill: int = 0xEE):
    """Hand-built sensor_msgs/Image (real rosbags class) with ``pad`` bytes of row padding and the given byte
    order, from an (H, W, C) or (H, W) array of pixel values."""
    values = pixels if pixels.ndim == 3 else pixels[:, :, None]
    height, width, _ = values.shape
    dtype = values.dtype.newbyteorder(">" if big else "<") if values.dtype.itemsize > 1 else values.dtype
    rows = values.astype(dtype).reshape(height, -1).view(np.uint8)
    row_bytes = rows.shape[1]
    step = row_bytes + pad if step is None else step
    buf = np.full((height, step), fill, dtype=np.uint8)
    buf[:, : min(row_bytes, step)] = rows[:, : min(row_bytes, step)]
    data = buf.reshape(-1)
    payload = {
        "numpy": data,
        "bytes": data.tobytes(),
        "bytearray": bytearray(data.tobytes()),
        "memoryview": memoryview(data.tobytes()),
        "array.array": array.array("B", data.tobytes()),
        "list": data.tolist(),
    }[data_kind]
    return types("sensor_msgs/msg/Image")(
        header=build_header(types, 12.5, "camera"), height=height, width=width, encoding=encoding,
        is_bigendian=int(big), step=step, data=payload,
    )


def cdr_round_trip(store, msg):
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


# --- real frame round trips -------------------------------------------------------------------------------


def test_rgb8_real_frame_survives_build_cdr_and_back(store, types, frame):
    msg = cdr_round_trip(store, build_image(types, frame, "rgb8", 1700000000.25, "front_camera"))
    assert msg.step == 1164 * 3 and msg.height == 874 and msg.width == 1164
    np.testing.assert_array_equal(image_to_array(msg), frame)
    rgb = image_to_rgb8(msg)
    assert rgb.flags.c_contiguous and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, frame)


def test_bgra8_from_carla_keeps_channel_order_and_converts_to_rgb(store, types, frame):
    bgra = cv2.cvtColor(frame, cv2.COLOR_RGB2BGRA)
    msg = cdr_round_trip(store, build_image(types, bgra, "bgra8", 3.0, "carla/ego/rgb_front"))
    values = image_to_array(msg)
    assert values.shape == (874, 1164, 4)
    np.testing.assert_array_equal(values[:, :, 0], frame[:, :, 2])  # B first, as CARLA sends it
    np.testing.assert_array_equal(image_to_rgb8(msg), frame)


def test_bgr8_with_row_padding_is_a_zero_copy_strided_view(types, frame):
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    msg = raw_image(types, bgr, "bgr8", pad=64)
    assert msg.step == 1164 * 3 + 64
    values = image_to_array(msg)
    assert np.shares_memory(values, msg.data)
    assert values.strides[0] == msg.step
    np.testing.assert_array_equal(values, bgr)
    np.testing.assert_array_equal(image_to_rgb8(msg), frame)


@pytest.mark.parametrize("data_kind", ["numpy", "bytes", "bytearray", "memoryview", "array.array", "list"])
def test_every_kind_of_data_buffer_gives_the_same_pixels(types, data_kind):
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    msg = raw_image(types, bgr, "bgr8", pad=3, data_kind=data_kind)
    np.testing.assert_array_equal(image_to_array(msg), bgr)
    np.testing.assert_array_equal(image_to_rgb8(msg), bgr[:, :, ::-1])


def test_rclpy_style_array_data_is_viewed_without_copy(types):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    msg = raw_image(types, rgb, "rgb8", data_kind="array.array")
    values = image_to_array(msg)
    msg.data[0] = (int(rgb[0, 0, 0]) + 1) % 256  # the view follows the message buffer
    assert values[0, 0, 0] == (int(rgb[0, 0, 0]) + 1) % 256


@pytest.mark.parametrize("encoding", ["rgba8", "bgr8", "8UC3", "8UC4"])
def test_colour_encodings_map_to_rgb(types, frame, encoding):
    crop = frame[100:140, 200:260]
    pixels = {
        "rgba8": cv2.cvtColor(crop, cv2.COLOR_RGB2RGBA),
        "bgr8": cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
        "8UC3": cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),  # generic 3-channel buffers are OpenCV's BGR
        "8UC4": cv2.cvtColor(crop, cv2.COLOR_RGB2BGRA),
    }[encoding]
    msg = raw_image(types, pixels, encoding, pad=5)
    np.testing.assert_array_equal(image_to_array(msg), pixels)
    np.testing.assert_array_equal(image_to_rgb8(msg), crop)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_hxwx1_and_grey_rgb(types, frame, encoding):
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    msg = raw_image(types, grey, encoding, pad=2)
    values = image_to_array(msg)
    assert values.shape == (874, 1164, 1)
    np.testing.assert_array_equal(values[:, :, 0], grey)
    rgb = image_to_rgb8(msg)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


# --- 16-bit, float, byte order --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("big", [False, True])
def test_16bit_values_decode_in_either_byte_order(types, encoding, big):
    values = np.array([[0, 1, 255, 256], [257, 4660, 65280, 65535]], dtype=np.uint16)
    msg = raw_image(types, values, encoding, big=big, pad=4)
    raw = bytes(msg.data)
    if big:  # the first pixel of row 1 is 257 = 0x0101 either way; 4660 = 0x1234 tells the orders apart
        assert raw[msg.step + 2:msg.step + 4] == b"\x12\x34"
    decoded = image_to_array(msg)
    assert decoded.dtype == np.uint16 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded[:, :, 0], values)
    grey = image_to_rgb8(msg)[:, :, 0]
    np.testing.assert_array_equal(grey, np.round(values / 257.0).astype(np.uint8))


def test_16bit_with_odd_row_padding_is_copied_to_aligned_memory(types):
    values = np.arange(3 * 5, dtype=np.uint16).reshape(3, 5) * 1000
    msg = raw_image(types, values, "mono16", pad=1)
    decoded = image_to_array(msg)
    assert decoded.flags.aligned
    np.testing.assert_array_equal(decoded[:, :, 0], values)
    np.testing.assert_array_equal(image_to_rgb8(msg)[:, :, 0], np.round(values / 257.0).astype(np.uint8))


@pytest.mark.parametrize("big", [False, True])
def test_32fc1_values_and_fixed_unit_scaling(types, big):
    values = np.array([[0.0, 0.25, 1.0], [2.0, -1.0, np.nan]], dtype=np.float32)
    msg = raw_image(types, values, "32FC1", big=big)
    decoded = image_to_array(msg)
    np.testing.assert_array_equal(decoded[:, :, 0], values)  # NaN compares equal here
    grey = image_to_rgb8(msg)[:, :, 0]
    np.testing.assert_array_equal(grey, [[0, 64, 255], [255, 0, 0]])


def test_rgb16_is_scaled_to_8_bits(types):
    values = np.array([[[65535, 0, 257]]], dtype=np.uint16)
    msg = raw_image(types, values, "rgb16", big=True)
    np.testing.assert_array_equal(image_to_rgb8(msg)[0, 0], [255, 0, 1])


# --- Bayer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_uniform_colour_round_trips_exactly(types, pattern):
    rgb = np.empty((8, 10, 3), dtype=np.uint8)
    rgb[...] = (200, 100, 50)
    msg = raw_image(types, rgb_to_bayer(rgb, f"bayer_{pattern}8"), f"bayer_{pattern}8", pad=6)
    out = image_to_rgb8(msg)
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])
    np.testing.assert_array_equal(image_to_array(msg)[2:-2, 2:-2], rgb[2:-2, 2:-2])


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_real_frame_round_trips_with_correct_channels(types, frame, pattern):
    encoding = f"bayer_{pattern}8"
    msg = raw_image(types, rgb_to_bayer(frame, encoding), encoding)
    out = image_to_rgb8(msg).astype(np.int16)
    error = np.abs(out - frame).mean()
    swapped = np.abs(out[:, :, ::-1] - frame).mean()
    assert error < 6.0, error  # bilinear demosaicing blurs edges a little
    assert swapped > 3 * error  # a pattern mix-up would swap red and blue


def test_bayer16_big_endian_demosaics_to_16bit_rgb(types):
    rgb = np.empty((6, 8, 3), dtype=np.uint16)
    rgb[...] = (60000, 30000, 1000)
    msg = raw_image(types, rgb_to_bayer(rgb, "bayer_grbg16"), "bayer_grbg16", big=True)
    out = image_to_array(msg)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])
    np.testing.assert_array_equal(image_to_rgb8(msg)[3, 3], np.round(np.array([60000, 30000, 1000]) / 257))


def test_yuv422_grey_decodes_to_grey(types):
    uyvy = np.full((4, 6, 2), 128, dtype=np.uint8)
    uyvy[:, :, 1] = 90  # Y of every pixel; U and V neutral
    msg = raw_image(types, uyvy, "yuv422", pad=4)
    out = image_to_rgb8(msg)
    assert out.shape == (4, 6, 3)
    assert np.abs(out.astype(int) - out[0, 0, 0]).max() <= 1
    assert abs(int(out[0, 0, 0]) - 90) <= 12  # limited-range luma


# --- bad input ------------------------------------------------------------------------------------------


def test_data_shorter_than_step_times_height_is_refused(types):
    msg = raw_image(types, np.zeros((4, 5, 3), np.uint8), "rgb8", pad=1)
    msg.data = msg.data[:-1]
    with pytest.raises(MessageConversionError) as err:
        image_to_rgb8(msg)
    assert err.value.field == "data"
    assert "step*height" in str(err.value) and "sensor_msgs/Image.data" in str(err.value)


def test_data_longer_than_step_times_height_is_refused_as_cv_bridge_does(types):
    msg = raw_image(types, np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.data = np.zeros(1_000_000, np.uint8)  # a publisher whose height is wrong: not silently cropped
    with pytest.raises(MessageConversionError, match=r"has 1000000 B, more than step\*height = 6\*2 = 12 B") as err:
        image_to_rgb8(msg)
    assert err.value.field == "data"


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 4), (2, 2), (2, 8), (8, 2)])
def test_a_bayer_image_too_small_to_demosaic_is_refused(types, height, width):
    msg = build_image(types, np.full((height, width), 200, np.uint8), "bayer_rggb8", 1.0)
    with pytest.raises(MessageConversionError, match="too small to demosaic"):
        image_to_rgb8(msg)
    assert image_to_rgb8(build_image(types, np.full((3, 3), 200, np.uint8), "bayer_rggb8", 1.0)).min() == 200


def test_float64_beyond_float32_range_is_clipped_without_a_warning(types):
    import warnings

    values = np.array([[[1e300], [-1e300]], [[0.5], [np.nan]]], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = image_to_rgb8(build_image(types, values, "64FC1", 1.0))
    assert rgb[:, :, 0].tolist() == [[255, 0], [128, 0]]


def test_unknown_encoding_is_refused(types):
    msg = raw_image(types, np.zeros((2, 2, 3), np.uint8), "rgb9")
    with pytest.raises(MessageConversionError) as err:
        image_to_array(msg)
    assert err.value.field == "encoding"
    assert "unknown encoding 'rgb9'" in str(err.value)


def test_step_smaller_than_a_row_is_refused(types):
    msg = raw_image(types, np.zeros((3, 4, 3), np.uint8), "bgr8", step=11)
    with pytest.raises(MessageConversionError) as err:
        image_to_rgb8(msg)
    assert err.value.field == "step"
    assert "smaller than one row" in str(err.value) and "12 B" in str(err.value)


def test_empty_image_is_refused(types):
    msg = raw_image(types, np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.width = 0
    with pytest.raises(MessageConversionError) as err:
        image_to_rgb8(msg)
    assert err.value.field == "width" and "empty" in str(err.value)


def test_signed_image_has_no_rgb_meaning(types):
    msg = raw_image(types, np.zeros((2, 2), np.int16), "16SC1")
    assert image_to_array(msg).dtype == np.int16
    with pytest.raises(MessageConversionError) as err:
        image_to_rgb8(msg)
    assert err.value.field == "encoding" and "int16" in str(err.value)


def test_data_that_is_not_bytes_is_refused(types):
    msg = raw_image(types, np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.data = "not bytes"
    with pytest.raises(MessageConversionError) as err:
        image_to_array(msg)
    assert err.value.field == "data" and "not a byte sequence" in str(err.value)


def test_builder_refuses_a_dtype_that_does_not_match_the_encoding(types):
    with pytest.raises(MessageConversionError) as err:
        build_image(types, np.zeros((2, 2), np.float32), "mono16", 0.0)
    assert err.value.field == "encoding" and "uint16" in str(err.value)


# --- CompressedImage ------------------------------------------------------------------------------------


def test_jpeg_real_frame_decodes_close_to_the_source(store, types, frame):
    msg = cdr_round_trip(store, build_compressed_image(types, frame, "jpeg", 5.0, "camera", quality=95))
    assert msg.format == "rgb8; jpeg compressed bgr8"
    rgb = compressed_image_to_rgb8(msg)
    assert rgb.shape == frame.shape and rgb.dtype == np.uint8
    mse = np.mean((rgb.astype(np.float64) - frame) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR in dB
    np.testing.assert_array_equal(compressed_image_to_array(msg), rgb)  # source was rgb8: RGB order back


def test_png_real_frame_is_lossless(store, types, frame):
    msg = cdr_round_trip(store, build_compressed_image(types, frame, "png", 5.0))
    np.testing.assert_array_equal(compressed_image_to_rgb8(msg), frame)


def test_plain_format_string_decodes_in_opencv_order(types, frame):
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    msg = types("sensor_msgs/msg/CompressedImage")(header=build_header(types, 0.0, ""), format="png",
                                                   data=encoded.reshape(-1))
    np.testing.assert_array_equal(compressed_image_to_array(msg), frame[:, :, ::-1])
    np.testing.assert_array_equal(compressed_image_to_rgb8(msg), frame)


def test_mono16_png_keeps_values(types):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    msg = build_compressed_image(types, values, "png", 0.0)
    assert msg.format == "mono16; png compressed mono16"
    np.testing.assert_array_equal(compressed_image_to_array(msg)[:, :, 0], values)
    np.testing.assert_array_equal(compressed_image_to_rgb8(msg)[:, :, 1], np.round(values / 257.0))


def test_compressed_depth_16uc1_skips_its_config_header(types):
    depth = np.array([[0, 1000], [2000, 65535]], dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", depth)
    assert ok
    payload = np.concatenate([np.zeros(12, np.uint8), encoded.reshape(-1)])
    msg = types("sensor_msgs/msg/CompressedImage")(header=build_header(types, 0.0, ""),
                                                   format="16UC1; compressedDepth png", data=payload)
    np.testing.assert_array_equal(compressed_image_to_array(msg)[:, :, 0], depth)


def test_format_strings_parse():
    parsed = parse_compressed_format("rgb8; jpeg compressed bgr8")
    assert (parsed.source_encoding, parsed.codec, parsed.depth) == ("rgb8", "jpeg", False)
    parsed = parse_compressed_format("16UC1; compressedDepth")
    assert (parsed.source_encoding, parsed.codec, parsed.depth) == ("16UC1", "png", True)
    parsed = parse_compressed_format("jpg")
    assert (parsed.source_encoding, parsed.codec, parsed.depth) == ("", "jpeg", False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "header_zeroed"])
def test_corrupt_jpeg_is_refused(types, frame, damage):
    msg = build_compressed_image(types, frame[:200, :300], "jpeg", 0.0)
    data = np.array(msg.data)
    if damage == "truncated":
        data = data[: data.size // 2]
    elif damage == "garbage":
        data = np.random.default_rng(3).integers(0, 256, size=data.size, dtype=np.uint8)
    else:
        data[2:40] = 0
    msg.data = data
    with pytest.raises(MessageConversionError) as err:
        compressed_image_to_rgb8(msg)
    assert err.value.field == "data" and "sensor_msgs/CompressedImage" in str(err.value)
    # Damage to the header is found by the size check before decoding; damage after it by the decoder.
    expected = {"truncated": "could not be decoded as jpeg", "garbage": "is not a PNG, JPEG, WebP or BMP image",
                "header_zeroed": "JPEG corrupt: no segment marker at offset 2"}[damage]
    assert expected in str(err.value)


def test_empty_compressed_data_is_refused(types):
    msg = types("sensor_msgs/msg/CompressedImage")(header=build_header(types, 0.0, ""), format="jpeg",
                                                   data=np.zeros(0, np.uint8))
    with pytest.raises(MessageConversionError) as err:
        compressed_image_to_array(msg)
    assert err.value.field == "data" and "empty" in str(err.value)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding only the TIFF Orientation tag (0x0112), as cameras write it."""
    import struct

    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


@pytest.mark.parametrize(("orientation", "upright"), [
    (1, lambda a: a), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_a_jpeg_is_turned_upright_by_its_exif_orientation(types, tmp_path, orientation, upright):
    # A sensor that stores pixels sideways and says so in EXIF (phones, dash cameras) must reach the models upright.
    from regionadapt_ros.adaptation.importers.common import decode_image_file

    stored = np.zeros((48, 96, 3), np.uint8)
    stored[:24, :32] = (255, 255, 255)      # a white block top left, a red one bottom right (RGB)
    stored[24:, 64:] = (255, 0, 0)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(stored, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    data = _with_exif_orientation(buf.tobytes(), orientation)
    want = np.ascontiguousarray(upright(stored)).astype(np.int16)
    msg = types("sensor_msgs/msg/CompressedImage")(header=build_header(types, 1.0, "camera"), format="jpeg",
                                                   data=np.frombuffer(data, np.uint8))
    got = compressed_image_to_rgb8(msg)
    assert got.shape == want.shape and np.abs(got.astype(np.int16) - want).mean() < 3.0
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert np.abs(decode_image_file(path).astype(np.int16) - want).mean() < 3.0
    if orientation == 1:  # a grey JPEG stays one channel
        ok, grey = cv2.imencode(".jpg", stored[:, :, 0])
        msg = types("sensor_msgs/msg/CompressedImage")(header=build_header(types, 1.0), format="jpeg",
                                                       data=np.frombuffer(grey.tobytes(), np.uint8))
        assert compressed_image_to_array(msg).shape == (48, 96, 1)
