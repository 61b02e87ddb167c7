"""Checks on a rosbag2 opened by the ``rosbags`` library that the library itself does not make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regionadapt_ros.core.safe_read import ErrorFactory

ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"


def refuse_message_compressed_file(reader: Any, path: str | Path, error: ErrorFactory) -> None:
    """A bag recorded with ``ros2 bag record --compression-mode message`` stores every message as a zstd frame,
    and only its ``metadata.yaml`` says so. Opened as a bare ``.mcap`` / ``.db3`` file, the reader hands out the
    compressed bytes, and every message would fail to decode one by one: refuse it up front, naming the fix.
    A bag directory is read with its metadata and decompressed by the reader."""
    path = Path(path)
    if path.is_dir():
        return
    for _, _, raw in reader.messages():
        if bytes(raw[:4]) == ZSTD_FRAME_MAGIC:  # a CDR message starts with its encapsulation header instead
            raise error(path, "its messages are zstd-compressed (recorded with --compression-mode message, which "
                              "only the bag's metadata.yaml says): open the bag directory instead of the file")
        return
