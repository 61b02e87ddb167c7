"""``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` → numpy arrays.

Duck-typed on the ROS field names (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``;
``format``, ``data``), so rclpy and rosbags messages both work.

Array conventions
-----------------
- ``image_to_array`` always returns ``(H, W, C)`` (``C = 1`` for mono/depth images), in native byte order, with
  the channel order of the encoding (``bgra8`` stays BGRA). Bayer and YUV 4:2:2 encodings have no per-pixel
  channels, so they are converted to RGB (``(H, W, 3)``, same bit depth). The result is a zero-copy, possibly
  row-strided view of ``msg.data`` whenever the layout allows (read-only when ``data`` is ``bytes``); it is a
  copy when the bytes must be swapped (``is_bigendian`` differs from this machine), are misaligned for the
  pixel type, or when the encoding had to be converted.
- ``image_to_rgb8`` returns a C-contiguous ``(H, W, 3)`` uint8 RGB array for the perception pipeline. For an
  unpadded ``rgb8`` image this is a view of ``msg.data``; copy it before writing into it.
  Depth scaling to 8 bits is fixed (never per frame, so frames stay comparable): 16-bit values are mapped
  linearly, ``v / 257`` rounded (0 → 0, 65535 → 255); float values are taken as intensities in [0, 1]
  (OpenCV's convention for float images), clipped, times 255, NaN → 0. Generic ``8UC3``/``8UC4`` buffers are
  taken as BGR/BGRA, the order OpenCV (and hence cv_bridge) writes them in. Signed-integer images are refused.
- Size: an image of more than ``max_pixels`` (default ``DEFAULT_MAX_IMAGE_PIXELS``, 4096 x 4096) is refused. For a
  ``CompressedImage`` the size is read from the encoded header before anything is decoded
  (``image_header.py``), so a small PNG that declares 20000 x 20000 pixels costs microseconds, not a 1.2 GB
  decode; the limit caps the decoded buffer at ``max_pixels`` x 4 channels x 2 bytes (128 MiB by default).
- Layout: ``data`` must be exactly ``step * height`` bytes, as cv_bridge requires; a Bayer image must be at least
  3 x 3 pixels (OpenCV's demosaic returns smaller ones all black).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv._buffers import as_byte_array
from regionadapt_ros.core.msgconv.image_header import check_decoded_size

IMAGE = "sensor_msgs/Image"
COMPRESSED = "sensor_msgs/CompressedImage"

# ROS names a Bayer mosaic by its top-left 2x2 block; OpenCV names it by the block starting at (1, 1), so
# ROS "rggb" is OpenCV "BayerBG". Pinned by a synthetic round-trip test.
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_YUV_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
_CHANNEL_TO_RGB = {
    "rgb": None,
    "bgr": cv2.COLOR_BGR2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "bgra": cv2.COLOR_BGRA2RGB,
    "mono": cv2.COLOR_GRAY2RGB,
}
_GENERIC = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C(\d+)$")
_GENERIC_DTYPES = {
    "8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16,
    "32S": np.int32, "32F": np.float32, "64F": np.float64,
}
_NATIVE_BIG = sys.byteorder == "big"
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class ImageEncoding:
    """How one ROS image encoding lays out its pixels.

    ``layout`` is one of rgb, bgr, rgba, bgra, mono, bayer, yuv or generic; ``channels`` counts the values
    per pixel in the message buffer (1 for a Bayer mosaic, 2 for YUV 4:2:2); ``pattern`` is the Bayer
    pattern in ROS naming (``rggb``...) or the YUV byte order (``uyvy``/``yuyv``).
    """

    name: str
    dtype: np.dtype
    channels: int
    layout: str
    pattern: str = ""


def _named_encodings() -> dict[str, ImageEncoding]:
    table: dict[str, ImageEncoding] = {}
    for bits, dt in ((8, np.uint8), (16, np.uint16)):
        for layout, channels in (("rgb", 3), ("bgr", 3), ("rgba", 4), ("bgra", 4)):
            name = f"{layout}{bits}"
            table[name] = ImageEncoding(name, np.dtype(dt), channels, layout)
        table[f"mono{bits}"] = ImageEncoding(f"mono{bits}", np.dtype(dt), 1, "mono")
        for pattern in _BAYER_TO_RGB:
            name = f"bayer_{pattern}{bits}"
            table[name] = ImageEncoding(name, np.dtype(dt), 1, "bayer", pattern)
    # sensor_msgs/image_encodings.hpp: "yuv422" is UYVY, "yuv422_yuy2" is YUYV; newer distros add the aliases.
    for name, order in (("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")):
        table[name] = ImageEncoding(name, np.dtype(np.uint8), 2, "yuv", order)
    return table


_NAMED = _named_encodings()


def image_encoding(encoding: str, msg_type: str = IMAGE) -> ImageEncoding:
    """Look up a ROS image encoding string (named ones like ``bgra8`` or generic ones like ``16UC1``)."""
    key = str(encoding).strip()
    found = _NAMED.get(key) or _NAMED.get(key.lower())
    if found is not None:
        return found
    match = _GENERIC.match(key.upper())
    if match and int(match.group(2)) >= 1:
        return ImageEncoding(key, np.dtype(_GENERIC_DTYPES[match.group(1)]), int(match.group(2)), "generic")
    raise MessageConversionError(
        msg_type, "encoding", f"unknown encoding {encoding!r} (supported: {', '.join(sorted(_NAMED))}, "
        "and <8U|8S|16U|16S|32S|32F|64F>C<n>)"
    )


def _pixel_view(msg: Any, enc: ImageEncoding, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, C) array of the raw pixel values in native byte order; a strided view of msg.data if possible."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        field = "height" if height <= 0 else "width"
        raise MessageConversionError(IMAGE, field, f"image is empty ({width}x{height})")
    if width * height > max_pixels:
        raise MessageConversionError(IMAGE, "width", f"{width}x{height} = {width * height:,} pixels is more than the "
                                     f"limit of {max_pixels:,} (max_image_pixels)")
    itemsize = enc.dtype.itemsize
    row_bytes = width * enc.channels * itemsize
    if step < row_bytes:
        raise MessageConversionError(
            IMAGE, "step", f"{step} B is smaller than one row of {enc.name}: {width} px x {enc.channels} ch x "
            f"{itemsize} B = {row_bytes} B"
        )
    buf = as_byte_array(msg.data, IMAGE)
    if buf.size < step * height:
        raise MessageConversionError(
            IMAGE, "data", f"has {buf.size} B, fewer than step*height = {step}*{height} = {step * height} B"
        )
    if buf.size > step * height:
        # cv_bridge refuses it too (height * step != data size): a publisher whose height or step is wrong would
        # otherwise have its frame silently cropped
        raise MessageConversionError(
            IMAGE, "data", f"has {buf.size} B, more than step*height = {step}*{height} = {step * height} B"
        )
    big = bool(msg.is_bigendian)
    dtype = enc.dtype.newbyteorder(">" if big else "<") if itemsize > 1 else enc.dtype
    view = np.ndarray(
        shape=(height, width, enc.channels), dtype=dtype, buffer=buf,
        strides=(step, enc.channels * itemsize, itemsize),
    )
    if not dtype.isnative:
        return view.astype(enc.dtype)  # byte-swapping copy, C-contiguous
    if not view.flags.aligned:
        # OpenCV refuses misaligned 16/32-bit data (a step that is not a multiple of the pixel size, or a
        # buffer at an odd address inside a deserialised bag message).
        return view.copy()
    return view


def _demosaic(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    if min(mosaic.shape) < 3:
        # OpenCV's bilinear demosaic needs a 3x3 neighbourhood: smaller mosaics come back all black, silently
        raise MessageConversionError(IMAGE, "height" if mosaic.shape[0] < 3 else "width",
                                     f"a {mosaic.shape[1]}x{mosaic.shape[0]} Bayer image is too small to "
                                     "demosaic (at least 3x3)")
    return cv2.cvtColor(mosaic, _BAYER_TO_RGB[pattern])


def image_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` → ``(H, W, C)`` array of the pixel values (see the module docstring).

    dtype follows the encoding (uint8, uint16, int8, int16, int32, float32, float64). Bayer encodings are
    demosaiced (bilinear, OpenCV) to RGB, YUV 4:2:2 encodings converted to RGB.
    Raises MessageConversionError naming the field for an unknown encoding, a ``step`` smaller than a row, or
    ``data`` that is not ``step * height`` bytes, or a Bayer image under 3 x 3.
    """
    enc = image_encoding(msg.encoding)
    view = _pixel_view(msg, enc, max_pixels)
    if enc.layout == "bayer":
        return _demosaic(view[:, :, 0], enc.pattern)
    if enc.layout == "yuv":
        _check_even_width(msg)
        return cv2.cvtColor(view, _YUV_TO_RGB[enc.pattern])
    return view


def _check_even_width(msg: Any) -> None:
    if int(msg.width) % 2:
        raise MessageConversionError(IMAGE, "width", f"{msg.width} is odd; YUV 4:2:2 needs pixel pairs")


def _to_uint8(values: np.ndarray, msg_type: str, encoding: str) -> np.ndarray:
    """Fixed scaling of one image's values to uint8 (see the module docstring)."""
    kind = values.dtype.kind
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.uint16:
        return cv2.convertScaleAbs(values, alpha=1.0 / 257.0)
    if kind == "f":
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, clipped to 1 below
            unit = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
        return cv2.convertScaleAbs(np.clip(unit, 0.0, 1.0), alpha=255.0)
    raise MessageConversionError(
        msg_type, "encoding", f"{encoding} holds {values.dtype} values, which have no RGB meaning"
    )


def _layout_of_generic(channels: int, msg_type: str, encoding: str) -> str:
    layouts = {1: "mono", 3: "bgr", 4: "bgra"}
    if channels not in layouts:
        raise MessageConversionError(
            msg_type, "encoding", f"{encoding} has {channels} channels; only 1, 3 or 4 can be shown as RGB"
        )
    return layouts[channels]


def _values_to_rgb8(values: np.ndarray, layout: str, msg_type: str, encoding: str) -> np.ndarray:
    """(H, W, C) values in ``layout`` channel order → C-contiguous (H, W, 3) uint8 RGB."""
    small = _to_uint8(values, msg_type, encoding)
    code = _CHANNEL_TO_RGB[layout]
    if code is None:
        return np.ascontiguousarray(small)
    return cv2.cvtColor(small, code)


def image_to_rgb8(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` → C-contiguous ``(H, W, 3)`` uint8 RGB (see the module docstring for scaling).

    Raises MessageConversionError naming the field when the image cannot be read (as ``image_to_array``) or
    has no RGB meaning (signed integers, 2 or more than 4 generic channels).
    """
    enc = image_encoding(msg.encoding)
    view = _pixel_view(msg, enc, max_pixels)
    if enc.layout == "bayer":
        # Demosaic at 8 bits when possible: cheaper, and the scaling commutes with bilinear interpolation.
        return _demosaic(np.ascontiguousarray(_to_uint8(view[:, :, 0], IMAGE, enc.name)), enc.pattern)
    if enc.layout == "yuv":
        _check_even_width(msg)
        return cv2.cvtColor(view, _YUV_TO_RGB[enc.pattern])
    layout = _layout_of_generic(enc.channels, IMAGE, enc.name) if enc.layout == "generic" else enc.layout
    return _values_to_rgb8(view, layout, IMAGE, enc.name)


def rgb_to_bayer(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """``(H, W, 3)`` RGB → ``(H, W)`` Bayer mosaic in the ROS pattern of ``encoding`` (e.g. ``bayer_rggb8``).

    Each pixel keeps the one colour its filter passes; the inverse of what a Bayer camera driver publishes.
    """
    enc = image_encoding(encoding)
    if enc.layout != "bayer":
        raise MessageConversionError(IMAGE, "encoding", f"{encoding} is not a Bayer encoding")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    channel_of = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for index, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel_of[enc.pattern[index]]]
    return mosaic


# --- CompressedImage -----------------------------------------------------------------------------------------

# compressed_depth_image_transport prefixes the PNG with a 12-byte ConfigHeader (int32 format, float32[2]
# quantisation parameters).
_DEPTH_HEADER_BYTES = 12


@dataclass(frozen=True)
class CompressedFormat:
    """Parsed ``CompressedImage.format``: ``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``,
    ``"16UC1; compressedDepth png"``. ``source_encoding`` is the encoding of the image before compression
    (empty when the string does not say)."""

    source_encoding: str
    codec: str
    depth: bool


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """Split an image_transport format string into source encoding, codec and the compressedDepth flag."""
    text = str(fmt).strip()
    source, _, rest = text.partition(";") if ";" in text else ("", "", text)
    words = rest.lower().split()
    depth = "compresseddepth" in words
    codec = next((w for w in words if w in ("jpeg", "jpg", "png", "tiff", "webp", "bmp", "rvl")), "")
    if depth and not codec:
        codec = "png"  # compressed_depth_image_transport's default before RVL existed
    return CompressedFormat(source.strip(), "jpeg" if codec == "jpg" else codec, depth)


_JPEG_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


def _decode(msg: Any, max_pixels: int) -> tuple[np.ndarray, CompressedFormat]:
    fmt = parse_compressed_format(getattr(msg, "format", ""))
    buf = as_byte_array(msg.data, COMPRESSED)
    if fmt.depth:
        if fmt.source_encoding.upper() == "32FC1":
            raise MessageConversionError(
                COMPRESSED, "format", f"{msg.format!r}: quantised 32FC1 compressedDepth images are not supported"
            )
        if fmt.codec == "rvl":
            raise MessageConversionError(COMPRESSED, "format", f"{msg.format!r}: the RVL codec is not supported")
        buf = buf[_DEPTH_HEADER_BYTES:]
    if buf.size == 0:
        raise MessageConversionError(COMPRESSED, "data", "is empty")
    check_decoded_size(buf, max_pixels)  # before decoding: the header may declare far more than the bytes hold
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores the EXIF orientation, so a phone or dash-camera
    # JPEG stored sideways would reach the models sideways. JPEG has no alpha: decode it with the flags that
    # keep its channels and depth and apply the orientation, as every image viewer does.
    flags = _JPEG_FLAGS if bytes(buf[:3]) == b"\xff\xd8\xff" else cv2.IMREAD_UNCHANGED
    try:
        decoded = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise MessageConversionError(
            COMPRESSED, "data", f"could not be decoded as {fmt.codec or 'an image'} ({exc.msg.strip()})"
        ) from None
    if decoded is None or decoded.size == 0:
        raise MessageConversionError(
            COMPRESSED, "data", f"{buf.size} B could not be decoded as {fmt.codec or 'an image'} "
            f"(format {msg.format!r}): corrupt or truncated"
        )
    if decoded.ndim == 2:
        decoded = decoded[:, :, None]
    return decoded, fmt


def compressed_image_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` → ``(H, W, C)`` array (uint8, or uint16 for 16-bit PNG).

    Channel order: that of the source encoding named in ``format`` when it has one (``"rgb8; jpeg compressed
    bgr8"`` → RGB, as the uncompressed image was), else OpenCV's decoding order (BGR / BGRA / mono).
    Raises MessageConversionError (field ``data``) for empty or undecodable data (corrupt JPEG/PNG), a format
    that is not a camera frame format, or a header declaring more than ``max_pixels`` (checked before decoding).
    """
    decoded, fmt = _decode(msg, max_pixels)
    if fmt.source_encoding:
        try:
            source = image_encoding(fmt.source_encoding, COMPRESSED)
        except MessageConversionError:
            return decoded
        if source.layout == "rgb" and decoded.shape[2] == 3:
            return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        if source.layout == "rgba" and decoded.shape[2] == 4:
            return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
    return decoded


def compressed_image_to_rgb8(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` → C-contiguous ``(H, W, 3)`` uint8 RGB.

    Grey images are expanded to three channels, alpha is dropped, 16-bit PNGs are scaled as in
    ``image_to_rgb8``. Raises MessageConversionError (field ``data``) for empty or undecodable data.
    """
    decoded, _ = _decode(msg, max_pixels)
    layout = {1: "mono", 3: "bgr", 4: "bgra"}.get(decoded.shape[2])
    if layout is None:
        raise MessageConversionError(COMPRESSED, "data", f"decoded to {decoded.shape[2]} channels")
    return _values_to_rgb8(decoded, layout, COMPRESSED, str(getattr(msg, "format", "")))


def native_is_bigendian() -> bool:
    """``is_bigendian`` value for arrays in this machine's byte order (what builders write)."""
    return _NATIVE_BIG
