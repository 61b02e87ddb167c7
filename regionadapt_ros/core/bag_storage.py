"""Opening a bag with the ``rosbags`` library, and the checks on it that the library itself does not make.

Every command that reads a bag (replay, score, the rosbag import, a geofence check of a recorded track) opens it
through ``open_bag``, so a hostile or mislabelled bag is refused the same way everywhere: a FIFO or a device in
its directory, a decompression bomb (``core.bag_inflation``), and a message-compressed storage file handed over
without the ``metadata.yaml`` that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.bag_inflation import check_bag_inflation
from regionadapt_ros.core.safe_read import ErrorFactory

ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"


def open_bag(path: str | Path, typestore: Any, error: ErrorFactory) -> Any:
    """An opened ``rosbags.highlevel.AnyReader`` on ``path`` (a rosbag2 directory, a bare ``.mcap`` / ``.db3``,
    or a ROS 1 ``.bag``); the caller closes it. Anything that cannot be read is ``error(path, problem)``."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise error(path, "bag path does not exist")
    safe_read.check_regular_tree(path, error=error)  # a FIFO would block the bag reader for ever
    check_bag_inflation(path, error)
    try:
        reader = AnyReader([path], default_typestore=typestore)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable metadata / storage
        raise error(path, f"cannot open as a rosbag2 (sqlite3 or MCAP) or a ROS 1 bag "
                          f"({type(exc).__name__}: {exc})") from exc
    try:
        refuse_message_compressed_file(reader, path, error)
    except BaseException:
        reader.close()
        raise
    return reader


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
