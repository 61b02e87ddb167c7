"""A readable copy of a bag its recorder did not close: an MCAP file that ends early, or a SQLite bag whose
latest messages are still in its write-ahead log.

A recorder killed before it closed its bag (power cut, ``kill -9``, a full disk) leaves an MCAP file without its
summary and footer, and a copy cut short does the same. The ``rosbags`` reader refuses such a file as a whole
("File end magic is invalid") although every chunk before the cut is intact. ``recover_mcap`` reads the file
front to back with the ``mcap`` library's stream reader and writes every schema, channel, message, metadata and
attachment record it reaches into a new, complete MCAP (zstd chunks, with summary), stopping at the first record
the cut left incomplete. Chunk CRCs are checked; a damaged record whose length still says where the next one
starts is left out and reading goes on after it (in a cut file too), and a closed file's summary declares the
channels of messages whose own declaration was in a damaged chunk. The copy reads wherever a bag does (replay,
score, import).

The decompression-bomb check (``core.bag_inflation``) runs on the source first: the stream reader inflates
chunks without a bound of its own.

A SQLite bag recorded in write-ahead-log mode (rosbag2's ``resilient`` preset) keeps its latest messages in
``NAME.db3-wal`` until it is closed; the ``rosbags`` reader opens the database immutable and does not see them.
``recover_sqlite`` copies the database and its log next to the output, merges the log into the copy with the
standard library's SQLite (a checkpoint, then the copy back in rollback-journal mode), checks the copy's
integrity, and moves it into place. The source is never written to.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.bag_inflation import (
    MAX_UNIT_BYTES,
    MCAP_MAGIC,
    McapRecordHead,
    check_bag_inflation,
    mcap_records,
)
from regionadapt_ros.core.safe_read import ErrorFactory

_LOG = logging.getLogger("regionadapt_ros.bag")


@dataclass(frozen=True)
class RecoveredBag:
    """What ``recover_mcap`` copied: messages per topic, the log-time range (ns) of the messages, the bytes of
    the source it read up to the first incomplete record, and whether the source was complete after all."""

    path: Path
    messages: dict[str, int]
    start_ns: int | None
    end_ns: int | None
    read_bytes: int
    source_bytes: int
    complete: bool
    # a closed MCAP: the byte offsets of the records that could not be read and were skipped (the last one is
    # where the copy ends when the file's framing gives no way past it)
    damaged: tuple[int, ...] = ()
    # a closed MCAP: the message count its summary states (None without one), against which the copy is told
    summary_messages: int | None = None
    # messages on a channel that neither the records read nor the summary declare (left out)
    orphan_messages: int = 0
    # bytes after the footer (two files joined end to end): not read
    trailing_bytes: int = 0
    # with ``ros_only``: messages per topic of the channels that are not ROS 2 messages (left out)
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(self.messages.values())


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _note_leftovers(dst: Path) -> None:
    """Say where a killed earlier run left its work (a copy as large as the bag): this run cannot tell it
    is not someone's, so it removes nothing."""
    left = sorted(dst.parent.glob(f".{glob.escape(dst.name)}.*.recovering"))
    if left:
        _LOG.warning("%d work file(s) of an earlier recover that was stopped are beside %s (%s): remove them if no "
                     "recover is running", len(left), dst.name, ", ".join(p.name for p in left[:3]))


def _work_file(dst: Path) -> Path:
    """A new, empty file beside ``dst`` that this run alone owns (O_EXCL, unique name): a fixed name could be the
    source itself, someone's file or a link planted there."""
    _note_leftovers(dst)
    handle, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".recovering", dir=dst.parent)
    os.close(handle)
    return Path(name)


def _source_and_copy(src: str | Path, dst: str | Path, suffix: str, error: ErrorFactory) -> tuple[Path, Path]:
    """The source, a regular file (never a directory, a FIFO or a device), and the copy, which must not exist."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise error(src, "does not exist")
    safe_read.check_regular_tree(src, error=error)
    if src.is_dir():
        raise error(src, f"is a directory: give the {suffix} file inside it")
    if dst.exists() or dst.is_symlink():
        raise error(dst, "already exists; choose another --out")
    if any(dst.absolute() == src.absolute().with_name(src.name + tail) for tail in SQLITE_SIDE_FILES):
        # the source's own write-ahead log or journal: every reader would take the copy for the source's log
        raise error(dst, f"is where {src.name}'s SQLite log lives; choose another --out")
    return src, dst


def mcap_is_cut(path: str | Path) -> bool:
    """True for a file that starts as an MCAP and does not end with the MCAP magic (no footer: cut short)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(len(MCAP_MAGIC))
            stream.seek(max(0, size - len(MCAP_MAGIC)))
            tail = stream.read(len(MCAP_MAGIC))
    except OSError:
        return False
    return head == MCAP_MAGIC and (size < 2 * len(MCAP_MAGIC) or tail != MCAP_MAGIC)


def mcap_overrun(path: str | Path) -> tuple[int, int, int] | None:
    """(record offset, declared length, file size) of the first top-level MCAP record whose length runs past
    the end of the file, or None. A length field can hold any 64-bit value; the reader then fails with
    whatever its read or seek raises, which names neither the record nor the damage."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            for record in mcap_records(stream):
                # a header in the closing magic's bytes is not a record: the file lacks its footer
                if record.past_end and record.offset + 9 <= size - len(MCAP_MAGIC):
                    return record.offset, record.length, size
    except OSError:
        return None
    return None


def _enclosing_record(heads: list[McapRecordHead], position: int) -> tuple[int, int | None]:
    """The top-level record a read failed in (the last one starting before ``position``, where the reader
    stood): its offset, and where the record after it starts (None when its length runs past the file, so
    nothing after it can be found)."""
    index = bisect.bisect_left(heads, position, key=lambda head: head.offset) - 1
    if index < 0:
        return position, None
    head = heads[index]
    return head.offset, None if head.past_end else head.offset + 9 + head.length


# What the ROS 2 bag reader (rosbags, as rosbag2's MCAP plugin) opens: CDR messages whose schema is a ROS 2
# .msg or IDL definition, or none ("" or no schema: the type is then known by name only).
ROS_SCHEMA_ENCODINGS = ("ros2msg", "ros2idl", "omgidl", "")
ROS_MESSAGE_ENCODING = "cdr"
ROS_PROFILE = "ros2"


def is_ros_channel(message_encoding: str, schema_encoding: str | None) -> bool:
    """True for a channel the ROS 2 reader can open (a Foxglove JSON or protobuf channel is not)."""
    return message_encoding == ROS_MESSAGE_ENCODING and (schema_encoding is None
                                                         or schema_encoding in ROS_SCHEMA_ENCODINGS)


def recover_mcap(src: str | Path, dst: str | Path, error: ErrorFactory,
                 progress: Callable[[int], None] | None = None, *, ros_only: bool = False) -> RecoveredBag:
    """Copy what ``src`` holds into a new MCAP at ``dst`` (which must not exist). ``progress(bytes_read)`` is
    called as the source is read. ``ros_only``: leave out the channels that are not ROS 2 messages (JSON,
    protobuf...), which make the whole file unreadable to the ROS 2 readers; they are counted in
    ``RecoveredBag.left_out``. ``error(path, problem)`` for a source that is not an MCAP, or holds nothing
    before its cut; ``dst`` is then left absent."""
    from mcap.records import Attachment, Channel, Header, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    src, dst = _source_and_copy(src, dst, ".mcap", error)
    with src.open("rb") as stream:
        if stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise error(src, "not an MCAP file (it does not start with the MCAP magic)")
    check_bag_inflation(src, error)
    size = src.stat().st_size
    complete = not mcap_is_cut(src)
    schemas: dict[int, int] = {}
    channels: dict[int, int] = {}
    topics: dict[int, str] = {}
    counts: dict[str, int] = {}
    start = end = None
    read = len(MCAP_MAGIC)
    damaged: list[int] = []  # a closed file: the byte offsets of the top-level records that could not be read
    heads: list[McapRecordHead] | None = None  # the file's top-level records, walked at the first damage
    last_resume: int | None = None
    orphans = 0
    seen_channels: dict[int, tuple[str, str, int]] = {}
    schema_encodings: dict[int, str] = {}
    foreign: dict[int, str] = {}  # with ros_only: channel id → topic of the channels left out
    left_out: dict[str, int] = {}
    # A closed file's summary declares every schema and channel: messages whose channel was declared in a
    # damaged chunk are still copied under it.
    declared_schemas, declared_channels = _summary_declarations(src) if complete else ({}, {})
    tmp = _work_file(dst)
    try:
        with src.open("rb") as stream, tmp.open("wb") as out:
            writer = Writer(out)
            started = False
            # CRCs checked: a chunk with damaged data is left out and reported, not copied with a fresh CRC
            reader = StreamReader(stream, record_size_limit=MAX_UNIT_BYTES, validate_crcs=True)
            records = reader.records
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception:  # McapError, struct.error, ...: whatever the cut or the damage breaks
                    # Skip the top-level record the failure is in, if its own length still says where the next
                    # one starts inside the file, and read on from there; the record a cut left incomplete runs
                    # past the end, and nothing after it can be read.
                    if heads is None:
                        with src.open("rb") as walk:
                            heads = list(mcap_records(walk))
                    failed_at, resume = _enclosing_record(heads, stream.tell())
                    if resume is not None and resume == last_resume:
                        failed_at, resume = resume, None  # it failed before reading a byte of where it resumed
                    if resume is None and not complete:
                        read = failed_at  # the cut: the record it left incomplete, and nothing after it
                        break
                    if failed_at not in damaged:
                        damaged.append(failed_at)
                    if resume is None:  # no way past it
                        read = failed_at
                        break
                    stream.seek(resume)
                    read = last_resume = resume
                    records = StreamReader(stream, skip_magic=True, record_size_limit=MAX_UNIT_BYTES,
                                           validate_crcs=True).records
                    continue
                read = stream.tell()
                if progress is not None:
                    progress(read)
                if isinstance(record, Header):
                    # with ros_only the copy is for the ROS 2 reader, which opens the "ros2" profile alone
                    writer.start(ROS_PROFILE if ros_only else record.profile, record.library)
                    started = True
                    continue
                if not started:
                    writer.start("ros2", "regionadapt bag recover")
                    started = True
                if isinstance(record, Schema):
                    schema_encodings[record.id] = record.encoding
                    schemas[record.id] = writer.register_schema(record.name, record.encoding, record.data)
                elif isinstance(record, Channel):
                    if ros_only and not is_ros_channel(record.message_encoding,
                                                       schema_encodings.get(record.schema_id)):
                        foreign[record.id] = record.topic
                    elif record.id in seen_channels and seen_channels[record.id] != _channel_key(record):
                        # MCAP ids are unique: whose messages follow cannot be told, and copying them under the
                        # first declaration would mislabel them
                        raise error(src, f"channel id {record.id} is declared twice, as "
                                         f"{safe_read.shown_name(seen_channels[record.id][0], 60)} and "
                                         f"{safe_read.shown_name(record.topic, 60)}: its messages cannot be told "
                                         "apart; nothing written")
                    elif record.id not in channels:
                        seen_channels[record.id] = _channel_key(record)
                        channels[record.id] = writer.register_channel(
                            record.topic, record.message_encoding, schemas.get(record.schema_id, 0),
                            dict(record.metadata))
                        topics[record.id] = record.topic
                elif isinstance(record, Message):
                    if record.channel_id in foreign:
                        topic = foreign[record.channel_id]
                        left_out[topic] = left_out.get(topic, 0) + 1
                        continue
                    if record.channel_id not in channels and record.channel_id in declared_channels:
                        declared = declared_channels[record.channel_id]
                        declared_schema = declared_schemas.get(declared.schema_id)
                        if ros_only and not is_ros_channel(declared.message_encoding, getattr(
                                declared_schema, "encoding", None)):
                            foreign[declared.id] = declared.topic
                            left_out[declared.topic] = left_out.get(declared.topic, 0) + 1
                            continue
                        if declared.schema_id not in schemas and declared_schema is not None:
                            schemas[declared_schema.id] = writer.register_schema(
                                declared_schema.name, declared_schema.encoding, declared_schema.data)
                        channels[declared.id] = writer.register_channel(
                            declared.topic, declared.message_encoding, schemas.get(declared.schema_id, 0),
                            dict(declared.metadata))
                        topics[declared.id] = declared.topic
                    if record.channel_id not in channels:
                        orphans += 1
                        continue
                    writer.add_message(channels[record.channel_id], record.log_time, record.data,
                                       record.publish_time, record.sequence)
                    topic = topics[record.channel_id]
                    counts[topic] = counts.get(topic, 0) + 1
                    start = record.log_time if start is None else min(start, record.log_time)
                    end = record.log_time if end is None else max(end, record.log_time)
                elif isinstance(record, Metadata):
                    writer.add_metadata(record.name, dict(record.metadata))
                elif isinstance(record, Attachment):
                    writer.add_attachment(record.create_time, record.log_time, record.name, record.media_type,
                                          record.data)
            if not started:
                writer.start("ros2", "regionadapt bag recover")
            writer.finish()
        if not counts:
            raise error(src, f"holds no complete message before byte {read} of {size}: nothing to recover")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    stated = _summary_message_count(src) if complete else None
    if left_out and stated is not None:
        stated -= sum(left_out.values())  # the summary counts the channels left out on purpose too
    # past the footer and its closing magic: another file joined on, which the reader never reaches
    trailing = max(0, size - read - len(MCAP_MAGIC)) if complete and not damaged else 0
    whole = complete and not damaged and not orphans and not trailing \
        and (stated is None or stated == sum(counts.values()))
    return RecoveredBag(dst, dict(sorted(counts.items())), start, end, read, size, whole, tuple(damaged), stated,
                        orphans, trailing, dict(sorted(left_out.items())))


def _channel_key(channel: Any) -> tuple[str, str, int]:
    return str(channel.topic), str(channel.message_encoding), int(channel.schema_id)


def _summary_declarations(src: Path) -> tuple[dict[int, Any], dict[int, Any]]:
    """({id: Schema}, {id: Channel}) a closed MCAP's summary declares; empty where it has none or it cannot be
    read."""
    from mcap.reader import make_reader

    try:
        with src.open("rb") as stream:
            summary = make_reader(stream).get_summary()
    except Exception:  # a damaged summary: only the records read declare anything
        return {}, {}
    if summary is None:
        return {}, {}
    return dict(summary.schemas), dict(summary.channels)


def _summary_message_count(src: Path) -> int | None:
    """The message count a closed MCAP's summary states, or None (no summary, or one that cannot be read). The
    stream reader can pass over damage inside a chunk without a word; this is what the copy is checked against."""
    from mcap.reader import make_reader

    try:
        with src.open("rb") as stream:
            summary = make_reader(stream).get_summary()
        statistics = summary.statistics if summary is not None else None
        return int(statistics.message_count) if statistics is not None else None
    except Exception:  # a damaged summary: nothing to check against
        return None


def interruptible(con: sqlite3.Connection) -> None:
    """Let Ctrl-C stop ``con``'s long queries (a scan of a multi-GB table, a query over a hostile schema): Python
    code runs every 100k SQLite steps, where the signal's KeyboardInterrupt is raised; sqlite3 drops it and aborts
    the query as "interrupted", which ``raise_interrupt`` turns back into KeyboardInterrupt."""
    con.set_progress_handler(lambda: 0, 100_000)


def raise_interrupt(exc: sqlite3.Error) -> None:
    """KeyboardInterrupt for a query aborted by Ctrl-C (see ``interruptible``); nothing for other errors."""
    if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
        raise KeyboardInterrupt from None


def _refuse_views(con: sqlite3.Connection, src: Path, error: ErrorFactory) -> None:
    """rosbag2 writes ``messages`` and ``topics`` as tables. A view in their place runs whatever query the file
    holds (a recursive one never ends), and ``trusted_schema = OFF`` does not stop views."""
    kinds = dict(con.execute("SELECT name, type FROM sqlite_master WHERE name IN ('messages', 'topics')").fetchall())
    for name in ("messages", "topics"):
        if kinds.get(name, "table") != "table":
            raise error(src, f"its {name!r} is a {kinds[name]}, not the table rosbag2 writes: refused without "
                             "running it, nothing written")


def recover_sqlite(src: str | Path, dst: str | Path, error: ErrorFactory) -> RecoveredBag:
    """Copy the SQLite bag ``src`` (a ``.db3``) with its write-ahead log merged into ``dst`` (which must not
    exist). ``error(path, problem)`` for a source that is not a rosbag2 SQLite database or is damaged; ``dst``
    is then left absent."""
    src, dst = _source_and_copy(src, dst, ".db3", error)
    wal = src.with_name(src.name + "-wal")
    if wal.exists():
        safe_read.check_regular_tree(wal, error=error)
    # a folder this run alone owns (unique name): a fixed one could hold the source or someone's files
    _note_leftovers(dst)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".recovering", dir=dst.parent))
    try:
        copy = work / dst.name
        shutil.copyfile(src, copy)
        complete = not (wal.is_file() and wal.stat().st_size > 0)
        if not complete:
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        try:
            con = sqlite3.connect(copy)
            interruptible(con)
            try:
                con.execute("PRAGMA trusted_schema = OFF")  # run nothing the file's schema defines
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.execute("PRAGMA journal_mode = DELETE")
                check = con.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    damage = safe_read.one_line(str(check[0]), 300) if check else "no answer"
                    raise error(src, f"the database is damaged ({damage}): nothing written")
                _refuse_views(con, src, error)
                rows = con.execute("SELECT topics.name, count(*), min(messages.timestamp), max(messages.timestamp) "
                                   "FROM messages JOIN topics ON messages.topic_id = topics.id "
                                   "GROUP BY topics.name ORDER BY topics.name").fetchall()
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise_interrupt(exc)
            raise error(src, f"not a rosbag2 SQLite database ({exc}): nothing written") from None
        # checked before the copy takes its place: a refusal leaves nothing at dst
        if not all(isinstance(name, str) and type(lo) is int and type(hi) is int for name, _, lo, hi in rows):
            raise error(src, "a topic name that is not text or a message timestamp that is not an integer: the "
                             "database is damaged, nothing written")
        os.replace(copy, dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = {name: int(n) for name, n, _, _ in rows}
    starts = [lo for _, _, lo, _ in rows]
    ends = [hi for _, _, _, hi in rows]
    size = src.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
    return RecoveredBag(dst, counts, min(starts) if starts else None, max(ends) if ends else None, size, size,
                        complete)
