"""Decoded size of an encoded image from its header, before anything is decoded.

A 390 KiB PNG can declare 20000 x 20000 pixels: decoding it allocates 1.2 GB and takes seconds. The decoders
have no limit of their own that a caller can set per image (OpenCV's ``OPENCV_IO_MAX_IMAGE_PIXELS`` is one process
-wide environment variable, read once, and defaults to 2^30), and ``cv2.IMREAD_REDUCED_*`` still parses the whole
stream. So the header is read here:

- PNG: the IHDR chunk, which the format requires first (width, height: 4-byte big-endian each);
- JPEG: the first start-of-frame segment (SOF0..SOF15 except DHT/JPG/DAC) reached by walking the segment lengths
  from the start; a height of 0 (defined later by a DNL segment) is refused, as is a scan before any frame;
- WebP: the VP8X canvas, or the VP8L / VP8 (key frame) dimensions;
- BMP: the BITMAPINFOHEADER width and height (top-down bitmaps have a negative height).

Anything else (TIFF, GIF, unknown bytes) is refused as a camera frame format: image_transport's ``compressed``
plugin writes JPEG or PNG, ``compressedDepth`` PNG.

A JPEG's cost is not bounded by its pixels alone: a progressive JPEG is decoded once per scan, and a 290 KB file
of 6000 scans over 4096 x 4096 pixels takes a minute (libjpeg-turbo's ``-maxscans`` exists for this). So its
start-of-scan markers are counted, over the whole file, and more than ``MAX_JPEG_SCANS`` are refused. In
entropy-coded data every 0xFF is followed by a stuffed 0x00 or a restart marker, so FF DA is a scan (or sits in
metadata, such as an EXIF thumbnail's few scans); a progressive encoder writes about ten.

The walk reads at most ``MAX_JPEG_SEGMENTS`` segments and refuses
bytes between segments (beyond ``MAX_JPEG_FILL_BYTES`` fill bytes), so the check costs microseconds however the
bytes are crafted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regionadapt_ros.core.errors import MessageConversionError

COMPRESSED = "sensor_msgs/CompressedImage"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_JPEG_SEGMENTS = 512
MAX_JPEG_FILL_BYTES = 64
MAX_JPEG_SCANS = 100
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7: no length field
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9


@dataclass(frozen=True)
class EncodedSize:
    """What the header of an encoded image says: ``codec`` ("png", "jpeg", "webp", "bmp"), ``width``, ``height``."""

    codec: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _refuse(problem: str, field: str = "data") -> MessageConversionError:
    return MessageConversionError(COMPRESSED, field, problem)


def _png(data: bytes) -> EncodedSize:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _refuse("PNG without an IHDR chunk first (truncated or corrupt)")
    return EncodedSize("png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))


def _jpeg(data: memoryview) -> EncodedSize:
    pos, n = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos < n and data[pos] != 0xFF:
            raise _refuse(f"JPEG corrupt: no segment marker at offset {pos}")
        fill = 0
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
            fill += 1
            if fill > MAX_JPEG_FILL_BYTES:
                raise _refuse(f"JPEG corrupt: more than {MAX_JPEG_FILL_BYTES} fill bytes at offset {pos}")
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            raise _refuse("JPEG with no frame header (SOF) before its first scan")
        if pos + 2 > n:
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise _refuse(f"JPEG segment 0x{marker:02X} has length {length} (< 2): corrupt")
        if marker in _JPEG_SOF:
            if pos + 7 > n:
                break
            height = int.from_bytes(data[pos + 3:pos + 5], "big")
            width = int.from_bytes(data[pos + 5:pos + 7], "big")
            if height == 0:
                raise _refuse("JPEG frame height 0 (set later by a DNL segment) is not supported")
            scans = _jpeg_scans(data)
            if scans > MAX_JPEG_SCANS:
                raise _refuse(f"JPEG with {scans} scans (at most {MAX_JPEG_SCANS}): each scan is decoded over the "
                              "whole image, so this many would take a decoder far longer than a frame")
            return EncodedSize("jpeg", width, height)
        pos += length
    else:
        raise _refuse(f"JPEG with more than {MAX_JPEG_SEGMENTS} segments before its frame header")
    raise _refuse("JPEG truncated before its frame header (SOF)")


def _jpeg_scans(data: memoryview) -> int:
    """Start-of-scan markers (FF DA) in the whole stream; C speed, no copy."""
    arr = np.frombuffer(data, np.uint8)
    marks = np.flatnonzero(arr[:-1] == 0xFF)
    return int(np.count_nonzero(arr[marks + 1] == _JPEG_SOS))


def _webp(data: bytes) -> EncodedSize:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return EncodedSize("webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return EncodedSize("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return EncodedSize("webp", int.from_bytes(data[26:28], "little") & 0x3FFF,
                           int.from_bytes(data[28:30], "little") & 0x3FFF)
    raise _refuse("WebP without a readable VP8X / VP8L / VP8 header (truncated or corrupt)")


def _bmp(data: bytes) -> EncodedSize:
    if len(data) < 26:
        raise _refuse("BMP truncated before its size fields")
    header_size = int.from_bytes(data[14:18], "little")
    if header_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return EncodedSize("bmp", int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little"))
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    return EncodedSize("bmp", abs(width), abs(height))


def encoded_size(data: bytes | bytearray | memoryview | np.ndarray) -> EncodedSize:
    """Codec and dimensions an encoded image declares (see the module docstring); MessageConversionError (field
    ``data``) for a format that is not a camera frame format or a header that is truncated or corrupt."""
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) or data.format != "B" else data
    head = bytes(view[:64])
    if head.startswith(PNG_SIGNATURE):
        return _png(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(view)  # no copy: the walk jumps from segment to segment
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head[:2] == b"BM":
        return _bmp(head)
    shown = head[:8].hex(" ") if head else "nothing"
    raise _refuse(f"is not a PNG, JPEG, WebP or BMP image (first bytes: {shown})")


def check_decoded_size(data: bytes | bytearray | memoryview | np.ndarray, max_pixels: int) -> EncodedSize:
    """``encoded_size`` of ``data``, refused (MessageConversionError) when it declares no pixels or more than
    ``max_pixels``; nothing is decoded."""
    size = encoded_size(data)
    if size.width <= 0 or size.height <= 0:
        raise _refuse(f"{size.codec.upper()} header declares {size.width}x{size.height} pixels (empty image)")
    if size.pixels > max_pixels:
        raise _refuse(f"{size.codec.upper()} header declares {size.width}x{size.height} = {size.pixels:,} pixels, "
                      f"more than the limit of {max_pixels:,} (max_image_pixels); refused before decoding")
    return size
