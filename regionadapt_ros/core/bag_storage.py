"""Opening a bag with the ``rosbags`` library, and the checks on it that the library itself does not make.

Every command that reads a bag (replay, score, the rosbag import, a geofence check of a recorded track, ``bag
info``) opens it through ``open_bag``, so a hostile, mislabelled or unfinished bag is handled the same way
everywhere. Refused, each with its fix: a FIFO or a device in its directory, a decompression bomb
(``core.bag_inflation``), a message-compressed storage file without the ``metadata.yaml`` that says so, a SQLite
bag whose write-ahead log holds messages the reader would not see, an MCAP cut short, a ROS 1 bag without its
index. Read: a directory without ``metadata.yaml`` (its storage files, merged by time). ``bag_extent`` takes
times and counts from the storage where ``metadata.yaml`` disagrees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.bag_inflation import (
    MAX_UNIT_BYTES,
    bag_metadata,
    check_bag_inflation,
    checked_bag_metadata,
    ros1_is_unindexed,
    storage_files,
)
from regionadapt_ros.core.bag_recovery import (
    ROS_PROFILE,
    interruptible,
    mcap_is_cut,
    mcap_overrun,
    raise_interrupt,
)
from regionadapt_ros.core.safe_read import ErrorFactory, human_bytes

ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
# metadata.yaml custom_data key (rosbag2's per-bag key/value strings) in which the project's writers say whether
# the recording ran to its end: "complete", or "interrupted (why)" for one stopped by Ctrl-C or an error.
RECORDING_STATE_KEY = "regionadapt.recording"


def open_bag(path: str | Path, typestore: Any, error: ErrorFactory) -> Any:
    """An opened ``rosbags.highlevel.AnyReader`` on ``path`` (a rosbag2 directory, a bare ``.mcap`` / ``.db3``,
    or a ROS 1 ``.bag``); the caller closes it. Anything that cannot be read is ``error(path, problem)``."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise error(path, "bag path does not exist")
    safe_read.check_regular_tree(path, error=error)  # a FIFO would block the bag reader for ever
    refuse_unmerged_wal(path, error)
    paths = [path]
    if path.is_dir() and not (path / "metadata.yaml").exists():
        # A recorder that did not close the bag wrote no metadata.yaml; its storage files still describe
        # themselves (topics, types, times), and the reader merges several by time, as `ros2 bag reindex`
        # would index them. bag_extent says so in its note.
        paths = unlisted_storage(path)
        if not paths:
            raise error(path, "not a rosbag2 directory: no metadata.yaml and no .mcap or .db3 file in it")
        prefixes = {_split_prefix(p) for p in paths}
        if len(paths) > 1 and (None in prefixes or len(prefixes) > 1):
            # several recordings side by side are not one bag: merged by time they would interleave
            raise error(path, f"has no metadata.yaml, and its storage files ({', '.join(p.name for p in paths)}) "
                              "are not the splits of one recording (NAME_0, NAME_1, ...): give one file, or run "
                              "`ros2 bag reindex` on a directory that holds one recording")
    if path.is_dir() and (path / "metadata.yaml").exists():
        checked_bag_metadata(path, error)
    for part in paths:
        check_bag_inflation(part, error)
    refuse_malformed_rows(path, error)
    try:
        reader = AnyReader(paths, default_typestore=typestore)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable metadata / storage
        if path.suffix == ".bag" and ros1_is_unindexed(path):
            raise error(path, "is a ROS 1 bag without its index (a recording that was not closed): "
                              "`rosbag reindex` it first (ROS 1)") from exc
        cut = [p for p in _storage_candidates(path) if mcap_is_cut(p)]
        if cut:
            whole = "; put the copy in its place to read the whole directory" if path.is_dir() else ""
            raise error(path, f"{cut[0].name} ends before its MCAP footer (a recording that was not closed, or a "
                              f"copy cut short): `regionadapt bag recover {cut[0]} --out COPY.mcap` writes a "
                              f"readable copy of what it holds{whole}") from exc
        overruns = [(p, o) for p in _storage_candidates(path) if (o := mcap_overrun(p))]
        if overruns:
            part, (offset, length, size) = overruns[0]
            where = "" if part == path else f"{part.name}: "
            raise error(path, f"{where}the MCAP record at byte {offset} declares {human_bytes(length)}, past "
                              f"the end of the {human_bytes(size)} file: the file is damaged") from exc
        profiles = [(p, f) for p in _storage_candidates(path) if p.suffix == ".mcap" and (f := mcap_profile(p))
                    not in (None, ROS_PROFILE)]
        if profiles:
            part, profile = profiles[0]
            where = "its" if part == path else f"{part.name}'s"
            raise error(path, f"{where} MCAP profile is {safe_read.shown_name(profile, 40)}, not {ROS_PROFILE!r}: it "
                              "is not a ROS 2 recording. `regionadapt bag recover "
                              f"{part} --out COPY.mcap --ros-only` writes a ROS 2 copy of its ROS 2 channels") from exc
        foreign = [(p, c) for p in _storage_candidates(path) if p.suffix == ".mcap" and (c := non_ros_channels(p))]
        if foreign:
            part, channels = foreign[0]
            shown = ", ".join(f"{safe_read.printable_name(topic)} ({encoding})" for topic, encoding in channels[:5])
            more = f" and {len(channels) - 5} more" if len(channels) > 5 else ""
            where = "it" if part == path else part.name
            raise error(path, f"{where} has channels that are not ROS 2 messages: {shown}{more}; the ROS 2 bag "
                              "reader cannot open a file with them. `regionadapt bag recover "
                              f"{part} --out COPY.mcap --ros-only` writes a copy of the ROS 2 channels") from exc
        if isinstance(exc, MemoryError):
            # rosbags allocates what a record's length field says before it reads the record
            detail = "a record in it declares more bytes than memory holds: the file is damaged"
        else:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise error(path, f"cannot open as a rosbag2 (sqlite3 or MCAP) or a ROS 1 bag ({detail})") from exc
    try:
        _check_connections(reader, path, error)
        for part in paths:
            refuse_message_compressed_file(part, error, shown=path)
    except BaseException:
        with contextlib.suppress(Exception):  # a reader of damaged metadata may fail to close as well
            reader.close()
        raise
    return reader


def mcap_profile(path: Path) -> str | None:
    """The profile an MCAP file's header names, or None where the header cannot be read."""
    from mcap.reader import make_reader

    try:
        with path.open("rb") as stream:
            return str(make_reader(stream).get_header().profile)
    except Exception:  # a damaged header: what it is damaged by is said elsewhere
        return None


def non_ros_channels(path: Path) -> list[tuple[str, str]]:
    """(topic, schema encoding / message encoding) of each channel of an MCAP file that the ROS 2 readers cannot
    decode (a Foxglove recording mixes JSON and protobuf channels in), from its summary or, without one, its
    records; [] when there is none or the file cannot be read that far."""
    from mcap.reader import make_reader

    from regionadapt_ros.core.bag_recovery import is_ros_channel

    try:
        with path.open("rb") as stream:
            summary = make_reader(stream).get_summary()
            if summary is not None:
                schemas, channels = summary.schemas, summary.channels.values()
            else:
                from mcap.records import Channel, Schema
                from mcap.stream_reader import StreamReader

                stream.seek(0)
                schemas, found = {}, []
                for record in StreamReader(stream, record_size_limit=MAX_UNIT_BYTES).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        found.append(record)
                channels = found
    except Exception:  # a damaged file: what it is damaged by is said elsewhere
        return []
    out = []
    for channel in channels:
        schema = schemas.get(channel.schema_id)
        encoding = schema.encoding if schema is not None else None
        if not is_ros_channel(channel.message_encoding, encoding):
            out.append((channel.topic, f"{encoding or 'no schema'} / {channel.message_encoding}"))
    return out


def _check_connections(reader: Any, path: Path, error: ErrorFactory) -> None:
    """Every connection the reader lists has a text topic and type and a whole message count: the reader takes
    them as the storage (a SQLite ``topics`` row) or ``metadata.yaml`` says, without checking their types."""
    for c in reader.connections:
        topic, msgtype, count = c.topic, c.msgtype, getattr(c, "msgcount", 0)
        if not isinstance(topic, str) or not topic:
            raise error(path, f"a topic whose name is {safe_read.shown_name(str(topic), 60)}, not text: the bag's "
                              "topic list (its metadata.yaml or storage) is damaged")
        if not isinstance(msgtype, str) or not msgtype:
            raise error(path, f"topic {safe_read.shown_name(topic, 80)} has the message type "
                              f"{safe_read.shown_name(str(msgtype), 60)}, not a type name: the bag's topic list is "
                              "damaged")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise error(path, f"topic {safe_read.shown_name(topic, 80)} has the message count "
                              f"{safe_read.shown_name(str(count), 40)}, not a whole number: the bag's topic list is "
                              "damaged")


def recovery_hint(path: str | Path) -> str:
    """For a bag whose messages failed to read part-way: how to get a copy of what can be read ("" when no
    storage file of it is one `bag recover` copies record by record)."""
    try:
        mcaps = [p for p in _storage_candidates(Path(path)) if p.suffix == ".mcap"]
    except OSError:
        return ""
    if not mcaps:
        return ""
    return (f"; `regionadapt bag recover {mcaps[0]} --out COPY.mcap` copies every record that can be read, "
            "leaving out the damaged ones")


def _split_prefix(path: Path) -> str | None:
    """``NAME`` of a recorder's split file ``NAME_<n>.<ext>``, or None for any other name."""
    stem, _, number = path.stem.rpartition("_")
    return f"{stem}{path.suffix}" if stem and number.isdigit() else None


def unlisted_storage(path: Path) -> list[Path]:
    """The storage files of a bag directory without ``metadata.yaml``, in recording order (``bag_2`` before
    ``bag_10``)."""
    def order(p: Path) -> tuple[str, int, str]:
        stem, _, number = p.stem.rpartition("_")
        return (stem, int(number), p.name) if number.isdigit() else (p.stem, -1, p.name)

    return sorted((p for p in path.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file()), key=order)


def _storage_candidates(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    info = bag_metadata(path)
    return storage_files(path, info) if info else unlisted_storage(path)


def refuse_unmerged_wal(path: str | Path, error: ErrorFactory) -> None:
    """A SQLite bag recorded in write-ahead-log mode (``--storage-preset-profile resilient``) keeps its latest
    messages in ``NAME.db3-wal`` until the recorder closes it. rosbags opens the database immutable, so it reads
    without that file and would miss those messages without a word: refuse the bag while the file is there,
    naming the command that merges it into a copy."""
    for storage in _storage_candidates(Path(path)):
        wal = storage.with_name(storage.name + "-wal")
        if storage.suffix == ".db3" and wal.is_file() and wal.stat().st_size > 0:
            raise error(path, f"{wal.name} holds {human_bytes(wal.stat().st_size)} of the database that are not in "
                              f"{storage.name} yet (a recording in write-ahead-log mode that was not closed, or is "
                              f"still running), and the bag reader would miss the messages in it: "
                              f"`regionadapt bag recover {storage} --out COPY.db3` writes a copy with them merged")


def refuse_malformed_rows(path: str | Path, error: ErrorFactory) -> None:
    """A SQLite bag's ``messages`` rows as rosbag2 writes them: an integer timestamp of nanoseconds >= 0 and a
    blob of data. SQLite types values per row, so a damaged or hand-edited database can hold a REAL, a negative
    or a NULL there, which the reader hands on and which fail deep inside whatever reads them, and a row may
    name a topic id the topics table lacks, which the reader passes over. One pass over the row headers
    (``typeof`` reads no blob: about a second for 4 million rows), stopped by Ctrl-C."""
    import sqlite3

    for storage in _storage_candidates(Path(path)):
        if storage.suffix != ".db3" or not storage.is_file():
            continue
        try:
            con = sqlite3.connect(f"{storage.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error:
            continue  # the reader says what is wrong with it
        try:
            interruptible(con)
            kinds = dict(con.execute("SELECT name, type FROM sqlite_master WHERE name IN ('messages', 'topics')")
                         .fetchall())
            if kinds != {"messages": "table", "topics": "table"}:
                continue  # a table missing, or a view (never run): the reader and `bag recover` refuse those
            bad = con.execute("SELECT count(*), min(id) FROM messages WHERE typeof(timestamp) != 'integer' "
                              "OR timestamp < 0 OR typeof(data) != 'blob'").fetchone()
            # a row of no topic is passed over by the reader without a count
            orphans = con.execute("SELECT count(*), min(id) FROM messages WHERE topic_id NOT IN "
                                  "(SELECT id FROM topics)").fetchone()
        except sqlite3.Error as exc:
            raise_interrupt(exc)
            continue  # a damaged table or a renamed column: the reader says so when it reads
        finally:
            con.close()
        where = "" if storage == Path(path) else f"{storage.name}: "
        if orphans and orphans[0]:
            raise error(path, f"{where}{orphans[0]} message row(s), the first with id {orphans[1]}, name a topic id "
                              "that the topics table does not hold (the reader would leave them out without a "
                              "word): the database is damaged or was edited")
        if bad and bad[0]:
            raise error(path, f"{where}{bad[0]} message row(s), the first with id {bad[1]}, have a "
                              "timestamp that is not a whole number of nanoseconds >= 0 or data that is not bytes "
                              "(rosbag2 writes neither): the database is damaged or was edited")


def refuse_message_compressed_file(path: Path, error: ErrorFactory, shown: Path | None = None) -> None:
    """A bag recorded with ``ros2 bag record --compression-mode message`` stores every message as a zstd frame,
    and only its ``metadata.yaml`` says so. Read as a bare ``.mcap`` / ``.db3`` file, the reader hands out the
    compressed bytes, and every message would fail to decode one by one: refuse it up front, naming the fix
    (``error(shown or path, ...)``). A bag directory with its metadata is decompressed by the reader."""
    from rosbags.rosbag2 import Reader

    if path.is_dir() or path.suffix not in (".mcap", ".db3"):
        return
    try:
        with Reader(path) as reader:
            first = next(iter(reader.messages()), None)
    except Exception as exc:  # a damaged chunk or row: the reader's own types (ReaderError, zstd, lz4, sqlite)
        raise error(shown or path, f"{path.name + ': ' if shown not in (None, path) else ''}cannot read its first "
                                   f"message ({type(exc).__name__}: {exc}): the file is damaged") from None
    if first is None:
        return
    raw = first[2]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise error(shown or path, f"its first message's data is {type(raw).__name__}, not bytes: the file is damaged")
    if bytes(raw[:4]) == ZSTD_FRAME_MAGIC:  # a CDR message starts with its encapsulation header instead
        if shown is not None and shown != path:  # a directory without metadata.yaml
            raise error(shown, f"{path.name}: its messages are zstd-compressed (recorded with --compression-mode "
                               "message, which only the bag's metadata.yaml says, and this directory has none)")
        raise error(path, "its messages are zstd-compressed (recorded with --compression-mode message, which only "
                          "the bag's metadata.yaml says): open the bag directory instead of the file")


@dataclass(frozen=True)
class BagExtent:
    """When a bag's messages start and end (log time, ns; ``end_ns`` one past the last) and how many there are
    per (topic, message type). ``note`` says why these are not what the bag's ``metadata.yaml`` says."""

    start_ns: int
    end_ns: int
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    note: str | None = None

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def count_of(self, connections: Iterable[Any]) -> int:
        """Messages on these connections (several connections of one topic and type count once)."""
        return sum(self.counts.get(key, 0) for key in {(c.topic, c.msgtype) for c in connections})

    def describe(self) -> str:
        if not self.message_count:
            return "no messages"
        return f"{self.message_count} messages over {(self.end_ns - self.start_ns) / 1e9:.3f} s"


def _counts(connections: Iterable[Any]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for c in connections:
        counts[c.topic, c.msgtype] = counts.get((c.topic, c.msgtype), 0) + int(c.msgcount)
    return counts


def bag_extent(reader: Any, path: str | Path) -> BagExtent:
    """The extent of the bag ``reader`` has open, from its storage files' own indexes.

    For a rosbag2 directory the reader reports what ``metadata.yaml`` says, and that file can be stale: written
    before the recording's last messages, or left as it was when the bag was cut, merged or edited by hand.
    Each storage file is opened alone (its MCAP summary or its SQLite index; a scan of an MCAP without a
    summary, which the reader makes on open anyway) and, where they disagree, the storage's numbers are used
    and ``note`` says so. A ``--compression-mode file`` bag cannot be checked without inflating it again: its
    metadata is trusted. A directory without ``metadata.yaml`` is read as its storage files, and said so."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    said = BagExtent(int(reader.start_time), int(reader.end_time), _counts(reader.connections))
    if path.is_dir() and not (path / "metadata.yaml").exists():
        names = ", ".join(p.name for p in unlisted_storage(path))
        return replace(said, note=f"metadata.yaml is missing (a recording that was not closed writes none): its "
                                  f"storage files ({names}) are read as one bag, merged by time; `ros2 bag "
                                  "reindex` writes the file")
    info = bag_metadata(path) if path.is_dir() else None
    if info is None or str(info.get("compression_mode") or "").lower() == "file":
        return said
    start, end, counts = 2**63 - 1, 0, {}
    for storage in storage_files(path, info):
        try:
            with Reader(storage) as alone:
                if alone.message_count:
                    start, end = min(start, int(alone.start_time)), max(end, int(alone.end_time))
                for key, n in _counts(alone.connections).items():
                    counts[key] = counts.get(key, 0) + n
        except Exception:  # a storage file the reader cannot open alone: what the metadata says stands
            return said
    stored = BagExtent(start, end, counts)  # no message: (2**63 - 1, 0), as the reader says of an empty bag
    nonzero = [{k: n for k, n in extent.counts.items() if n} for extent in (said, stored)]
    if (stored.start_ns, stored.end_ns) == (said.start_ns, said.end_ns) and nonzero[0] == nonzero[1]:
        return said
    return replace(stored, note=f"metadata.yaml is stale: it says {said.describe()}, the storage holds "
                                f"{stored.describe()} (a recording that was not closed cleanly, or a file changed "
                                f"since; `ros2 bag reindex` rewrites it); the storage's times and counts are used")


def mark_recording(writer: Any, failure: BaseException | None) -> None:
    """Record in ``writer``'s custom_data whether the recording ran to its end (call before ``close``): a bag
    cut short by Ctrl-C or an error stays readable, and its readers can tell it from a finished drive."""
    if failure is None:
        state = "complete"
    elif isinstance(failure, KeyboardInterrupt):
        state = "interrupted (Ctrl-C)"
    else:
        state = f"interrupted ({safe_read.one_line(str(failure) or type(failure).__name__, 200)})"
    writer.set_custom_data(RECORDING_STATE_KEY, state)


def recording_state(bag: str | Path) -> str | None:
    """What the project's writer recorded of how ``bag``'s recording ended ("complete", "interrupted (...)"), or
    None for a bag it did not write (or one that has no readable metadata.yaml)."""
    bag = Path(bag)
    info = bag_metadata(bag) if bag.is_dir() else None
    custom = (info or {}).get("custom_data")
    state = custom.get(RECORDING_STATE_KEY) if isinstance(custom, dict) else None
    return safe_read.one_line(state, 300) if isinstance(state, str) else None
