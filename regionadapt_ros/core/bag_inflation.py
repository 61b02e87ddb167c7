"""Decompression bombs in a bag, found before the bag reader inflates anything.

The ``rosbags`` reader decompresses without a bound: a zstd message of a ``--compression-mode message`` bag, a
whole storage file of a ``--compression-mode file`` bag (into a temporary directory), an MCAP chunk (zstd or
lz4), a ROS 1 bag chunk (bz2 or lz4). A few kilobytes of a hostile file inflate to tens of gigabytes there (zstd
reaches a ratio of about 30 000 on repeated bytes), and the process is killed for memory or fills the disk
before a line is said. An MCAP chunk's declared size does not help: the reader compares it only after
inflating.

``check_bag_inflation`` walks what the reader would inflate and inflates it here piece by piece (16 MiB at a
time, kept nowhere), refusing the bag at the first unit past its limit. That costs one more decompression pass
over the compressed parts of a bag (zstd inflates at about 1 GB/s; an uncompressed bag is only walked, with
seeks). A unit that is damaged rather than oversized is left to the reader, which reports it in its own words.
"""

from __future__ import annotations

import bz2
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from regionadapt_ros.core import safe_read, strict_parse
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.safe_read import ErrorFactory, human_bytes

MAX_UNIT_BYTES = 1 << 30
"""One message or one chunk, inflated. A 4K RGB image is 25 MiB and a 128-beam lidar sweep about 13 MiB; a
recorder's chunk is about 1 MiB. A gigabyte is far above any of them and still fits in memory."""
TEMP_MARGIN_BYTES = 1 << 30
"""Free space left in the temporary directory after a ``--compression-mode file`` bag is inflated into it."""
PIECE_BYTES = 16 << 20
METADATA_MAX_BYTES = 16 << 20
MCAP_MAGIC = b"\x89MCAP0\r\n"
ROS1_MAGIC = b"#ROSBAG V2.0\n"
_MCAP_CHUNK = 0x06
_MCAP_FOOTER = 0x02
_MCAP_MESSAGE = 0x05


class _OversizedError(Exception):
    """A unit inflates past its limit (internal: turned into the caller's error with the bag's name)."""


def _zstd() -> Any:
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd  # the module rosbags itself uses before 3.14
    return zstd


def _decompressor(codec: str) -> Callable[[], Any] | None:
    if codec == "zstd":
        return _zstd().ZstdDecompressor
    if codec == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor
    if codec == "bz2":
        return bz2.BZ2Decompressor
    return None


def inflated_size(data: bytes, codec: str, limit: int) -> int | None:
    """How many bytes ``data`` inflates to with ``codec`` ("zstd", "lz4", "bz2"; one or more concatenated
    frames, as the readers accept), or None as soon as that passes ``limit``. Damaged data ends the count where
    it becomes unreadable: the reader reports it."""
    make = _decompressor(codec)
    if make is None:
        return len(data)
    total = 0
    rest = memoryview(data)
    while len(rest):
        decompressor = make()
        try:
            out = decompressor.decompress(rest, PIECE_BYTES)
            total += len(out)
            while not decompressor.eof and not decompressor.needs_input and total <= limit:
                out = decompressor.decompress(b"", PIECE_BYTES)
                if not out:
                    break
                total += len(out)
        except Exception:  # damaged, not oversized: codecs raise their own error types
            return total
        if total > limit:
            return None
        if not decompressor.eof:
            return total  # a truncated frame
        rest = memoryview(decompressor.unused_data or b"")
    return total


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


@dataclass(frozen=True)
class McapRecordHead:
    """A top-level MCAP record's opcode and length, where it starts, and whether that length runs past the end
    of the file (a length field can hold any 64-bit value: a damaged one is more than ``seek`` takes)."""

    offset: int
    opcode: int
    length: int
    past_end: bool


def mcap_records(stream: BinaryIO) -> Iterator[McapRecordHead]:
    """Each top-level record of an MCAP stream, up to and including the footer, with the stream at the record's
    body while the caller holds it. The walk ends at the footer, at the first record that runs past the end of
    the stream (yielded with ``past_end``), or quietly at anything that is not MCAP framing."""
    if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        return
    end = stream.seek(0, 2)  # read once: the end does not move while the walk runs
    stream.seek(len(MCAP_MAGIC), 0)
    while True:
        offset = stream.tell()
        head = _read_exact(stream, 9)
        if head is None:
            return
        opcode, length = head[0], struct.unpack_from("<Q", head, 1)[0]
        past_end = offset + 9 + length > end
        yield McapRecordHead(offset, opcode, length, past_end)
        if past_end or opcode == _MCAP_FOOTER:
            return
        stream.seek(offset + 9 + length, 0)


def _mcap_units(stream: BinaryIO) -> Iterator[tuple[int, str, str, int, int]]:
    """(record offset, "chunk" or "message", compression, declared inflated size, stored size) of each chunk
    and each top-level message record of an MCAP stream (the reader reads either whole), leaving the stream at
    a chunk's compressed bytes. Stops quietly at anything that is not MCAP framing: the reader refuses that."""
    for record in mcap_records(stream):
        if record.opcode == _MCAP_MESSAGE:
            yield record.offset, "message", "", record.length, record.length
        if record.opcode != _MCAP_CHUNK:
            continue
        fixed = _read_exact(stream, 8 + 8 + 8 + 4 + 4)
        if fixed is None:
            return
        _, _, declared, _, name_len = struct.unpack("<QQQII", fixed)
        if name_len > 255:
            return
        name = _read_exact(stream, name_len)
        size = _read_exact(stream, 8)
        if name is None or size is None:
            return
        compressed = struct.unpack("<Q", size)[0]
        if 8 + 8 + 8 + 4 + 4 + name_len + 8 + compressed > record.length:
            return
        yield record.offset, "chunk", name.decode("latin-1"), declared, compressed


def _check_mcap(stream: BinaryIO, limit: int, where: str) -> None:
    for offset, kind, codec, declared, stored in _mcap_units(stream):
        if stored > limit or declared > limit:
            what = f"{human_bytes(declared)} inflated" if kind == "chunk" and declared > limit else human_bytes(stored)
            raise _OversizedError(f"{where}MCAP {kind} at byte {offset} declares {what}, more than the "
                                  f"{human_bytes(limit)} a {kind} may hold")
        if kind == "chunk" and codec and _decompressor(codec) is not None:
            data = _read_exact(stream, stored)
            if data is None:
                return
            if inflated_size(data, codec, declared) is None:
                raise _OversizedError(f"{where}MCAP chunk at byte {offset} ({codec}) inflates past the "
                                      f"{human_bytes(declared)} it declares")


def _ros1_chunks(stream: BinaryIO) -> Iterator[tuple[int, str, int, int]]:
    """(record offset, compression, declared inflated size, data size) of each chunk record of a ROS 1 bag,
    leaving the stream at the chunk's data."""
    for offset, fields, data_len in _ros1_records(stream):
        if fields.get(b"op") == b"\x05" and len(fields.get(b"size", b"")) == 4:
            codec = fields.get(b"compression", b"none").decode("latin-1")
            yield offset, codec, struct.unpack("<I", fields[b"size"])[0], data_len


def _ros1_records(stream: BinaryIO) -> Iterator[tuple[int, dict[bytes, bytes], int]]:
    """(record offset, header fields, data length) of each record of a ROS 1 bag (format 2.0), leaving the
    stream at the record's data."""
    if stream.read(len(ROS1_MAGIC)) != ROS1_MAGIC:
        return
    end = stream.seek(0, 2)  # a header length is checked against it before it is read (up to 4 GiB)
    stream.seek(len(ROS1_MAGIC), 0)
    while True:
        offset = stream.tell()
        raw = _read_exact(stream, 4)
        if raw is None:
            return
        header_len = struct.unpack("<I", raw)[0]
        if offset + 4 + header_len > end:
            return  # damaged or cut: the reader refuses the file
        header = _read_exact(stream, header_len)
        raw = _read_exact(stream, 4)
        if header is None or raw is None:
            return
        data_len = struct.unpack("<I", raw)[0]
        fields: dict[bytes, bytes] = {}
        pos = 0
        while pos + 4 <= len(header):
            field_len = struct.unpack_from("<I", header, pos)[0]
            name, _, value = header[pos + 4: pos + 4 + field_len].partition(b"=")
            fields[name] = value
            pos += 4 + field_len
        start = stream.tell()
        yield offset, fields, data_len
        stream.seek(start + data_len, 0)


def ros1_is_unindexed(path: str | Path) -> bool:
    """True for a ROS 1 bag whose bag header says it has no index (a recorder that did not close it)."""
    try:
        with Path(path).open("rb") as stream:
            for _, fields, _ in _ros1_records(stream):
                index_pos = fields.get(b"index_pos", b"")
                return fields.get(b"op") == b"\x03" and len(index_pos) == 8 and \
                    struct.unpack("<Q", index_pos)[0] == 0
    except OSError:
        return False
    return False


def _check_ros1(stream: BinaryIO, limit: int, where: str) -> None:
    for offset, codec, declared, size in _ros1_chunks(stream):
        if max(declared, size) > limit:
            raise _OversizedError(f"{where}ROS 1 chunk at byte {offset} declares {human_bytes(max(declared, size))}, "
                                  f"more than the {human_bytes(limit)} a chunk may hold")
        if codec == "none":
            continue
        data = _read_exact(stream, size)
        if data is None:
            return
        if inflated_size(data, codec, declared) is None:
            raise _OversizedError(f"{where}ROS 1 chunk at byte {offset} ({codec}) inflates past "
                                  f"{human_bytes(declared)}")


def _stream_inflated_size(path: Path, limit: int) -> int | None:
    """Bytes a zstd-compressed file inflates to, or None past ``limit``; streamed, nothing kept."""
    total = 0
    try:
        with _zstd().open(path, "rb") as stream:
            while piece := stream.read(PIECE_BYTES):
                total += len(piece)
                if total > limit:
                    return None
    except Exception:  # damaged: the reader says so when it inflates the file
        return total
    return total


def bag_metadata(bag: Path) -> dict[str, Any] | None:
    """``rosbag2_bagfile_information`` of a rosbag2 directory, or None where it cannot be read (read as
    ``checked_bag_metadata`` reads it; ``open_bag`` refuses what this passes over)."""
    try:
        return checked_bag_metadata(bag, ConfigError)
    except Exception:  # a missing or unreadable metadata.yaml is open_bag's to report
        return None


def checked_bag_metadata(bag: Path, error: ErrorFactory) -> dict[str, Any]:
    """``rosbag2_bagfile_information`` of a rosbag2 directory that has a ``metadata.yaml``, or ``error(bag, ...)``
    saying why it cannot be read. The bag's checks read the file this way, so one they cannot read is refused
    rather than passed over (the reader, which parses it on its own, would go on without them)."""
    path = bag / "metadata.yaml"
    raw = safe_read.read_bytes(path, max_bytes=METADATA_MAX_BYTES, error=error)

    def refused(source: object, problem: str) -> Exception:
        return error(source, f"is not YAML rosbag2 writes ({safe_read.one_line(problem, 200)})")

    # strictly: an alias bomb of 1.7 KB expands to gigabytes, and yaml-cpp (rosbag2's writer) writes no aliases,
    # tags or duplicate keys
    doc = strict_parse.loads_yaml(raw, path, error=refused)
    info = doc.get("rosbag2_bagfile_information") if isinstance(doc, dict) else None
    if not isinstance(info, dict):
        raise error(path, "has no rosbag2_bagfile_information mapping: not a rosbag2 bag's metadata")
    for key in ("relative_file_paths", "files", "topics_with_message_count"):
        if info.get(key) is not None and not isinstance(info[key], list):
            raise error(path, f"its {key} is a {type(info[key]).__name__}, not a list: the metadata is damaged")
    # the reader opens each listed file by its name inside the bag: one listed twice is read twice
    names = [PurePath(str(name)).name for name in info.get("relative_file_paths") or []]
    twice = next((name for name, n in Counter(names).items() if n > 1), None)
    if twice is not None:
        raise error(path, f"its relative_file_paths name {safe_read.printable_name(twice)} more than once: every "
                          "message in it would be read as many times; the metadata is damaged")
    return info


def storage_files(bag: Path, info: dict[str, Any]) -> list[Path]:
    """The storage files a rosbag2 directory's metadata lists that are there."""
    names = info.get("relative_file_paths") or []
    if not isinstance(names, list):
        return []
    # as the reader resolves them: the name only, inside the bag directory
    return [p for p in (bag / PurePath(str(name)).name for name in names) if p.is_file()]


def _check_message_frames(storage: Path, limit: int) -> None:
    """Each message of a ``--compression-mode message`` storage file is a zstd frame."""
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(storage)
        reader.open()
    except Exception:  # the reader reports it when the bag itself is opened
        return
    try:
        for conn, ns, raw in reader.messages():
            if inflated_size(raw, "zstd", limit) is None:
                raise _OversizedError(f"{storage.name}: the {conn.topic} message at log time {ns} ns inflates "
                                      f"past {human_bytes(limit)}")
    finally:
        reader.close()


def check_bag_inflation(path: str | Path, error: ErrorFactory, *, unit_limit: int = MAX_UNIT_BYTES,
                        storage_limit: int | None = None) -> None:
    """Refuse the bag at ``path`` (a rosbag2 directory, a bare ``.mcap`` / ``.db3``, a ROS 1 ``.bag``) with
    ``error(path, problem)`` when a unit the reader inflates (a message, a chunk) passes ``unit_limit`` or, for
    a ``--compression-mode file`` bag, its storage files together pass ``storage_limit`` (default: the free
    space of the temporary directory, less a margin). Call it after the path's entries are known to be
    regular files (``safe_read.check_regular_tree``)."""
    path = Path(path)
    try:
        if path.is_file():
            with path.open("rb") as stream:
                if path.suffix == ".bag":
                    _check_ros1(stream, unit_limit, "")
                else:
                    _check_mcap(stream, unit_limit, "")
            return
        info = bag_metadata(path)
        if info is None:
            return
        mode = str(info.get("compression_mode") or "").lower()
        files = storage_files(path, info)
        if mode == "file":
            if storage_limit is None:
                storage_limit = max(0, shutil.disk_usage(tempfile.gettempdir()).free - TEMP_MARGIN_BYTES)
            left = storage_limit
            for storage in files:
                size = _stream_inflated_size(storage, left)
                if size is None:
                    raise error(path, f"its storage files are zstd-compressed (--compression-mode file) and "
                                      f"inflate to more than {human_bytes(storage_limit)}, the space the reader "
                                      f"may fill in {tempfile.gettempdir()}: refused before inflating them")
                left -= size
            for storage in files:
                try:
                    with _zstd().open(storage, "rb") as stream:
                        _check_mcap(stream, unit_limit, f"{storage.name} (inflated): ")
                except _OversizedError:
                    raise
                except Exception:  # damaged: the reader says so when it inflates the file
                    continue
            return
        for storage in files:
            with storage.open("rb") as stream:
                _check_mcap(stream, unit_limit, f"{storage.name}: ")
            if mode == "message":
                _check_message_frames(storage, unit_limit)
    except _OversizedError as exc:
        raise error(path, f"{exc} (a decompression bomb or a damaged file): refused before the reader "
                          "reads it") from None
