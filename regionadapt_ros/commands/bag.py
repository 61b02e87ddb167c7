"""``regionadapt bag``: what the product sees in a recording, and a readable copy of one cut short.

    regionadapt bag info BAG [--json]
    regionadapt bag recover FILE.mcap --out COPY.mcap [--no-progress]
    regionadapt bag recover FILE.db3 --out COPY.db3

``info`` opens BAG as replay, score and the import do (the same checks: regular files only, no decompression
bomb, no message-compressed file without its metadata) and prints its storage, its time range and message
counts as its storage files hold them (and whether ``metadata.yaml`` says otherwise), and which topic each of
replay's roles would read. ``recover`` makes a readable copy of a bag its recorder did not close: every complete
record of an MCAP file that ends early, or a SQLite bag with its write-ahead log merged; see
``core/bag_recovery.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bag", help="inspect a recording; recover an MCAP file cut short",
                                   description="Recordings as the product reads them.")
    parser.set_defaults(func=lambda args: _print_help(parser))
    actions = parser.add_subparsers(dest="bag_command", metavar="ACTION")

    info = actions.add_parser("info", help="storage, time range, counts and the topics replay would read",
                              description="Open BAG as replay does and say what it holds.")
    info.add_argument("bag", type=Path, help="rosbag2 directory, .mcap / .db3 file, or ROS 1 .bag")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=_info)

    recover = actions.add_parser(
        "recover", help="write a readable copy of a bag its recorder did not close (.mcap or .db3)",
        description="An .mcap whose recorder did not close it (no summary, no footer): copy every complete record "
                    "into a new, complete MCAP; the chunk the cut went through is lost. A .db3 with a write-ahead "
                    "log (NAME.db3-wal) beside it: copy it with the log merged. The source is not written to.")
    recover.add_argument("file", type=Path, help="the .mcap or .db3 file")
    recover.add_argument("--out", type=Path, required=True, help="the copy to write (must not exist)")
    recover.add_argument("--ros-only", action="store_true",
                         help="leave out the channels that are not ROS 2 messages (JSON, protobuf, ...: a Foxglove "
                              "recording mixes them in), which the ROS 2 bag readers cannot open a file with")
    recover.add_argument("--no-progress", action="store_true", help="no progress bar")
    recover.set_defaults(func=_recover)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _info(args: argparse.Namespace) -> int:
    from regionadapt_ros.core import msgconv
    from regionadapt_ros.core.bag_storage import bag_extent, open_bag, recording_state
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.replay_topics import TopicChoice, choose_topics

    reader = open_bag(args.bag, msgconv.rosbags_typestore(), DataError)
    try:
        extent = bag_extent(reader, args.bag)
        try:
            choice = choose_topics(args.bag, list(reader.connections), {})
        except DataError as exc:  # no camera, or several: what replay would say, not a reason to say nothing
            choice = TopicChoice(notes=[f"replay would refuse it: {exc}"])
        info = {
            "bag": str(args.bag),
            "storage": _storage_of(reader, args.bag),
            "compression": getattr(reader.readers[0], "compression_mode", None) if reader.is2 else None,
            "start_s": extent.start_ns / 1e9 if extent.message_count else None,
            "duration_s": (extent.end_ns - extent.start_ns) / 1e9 if extent.message_count else 0.0,
            "messages": extent.message_count,
            "topics": [{"topic": topic, "type": msgtype, "messages": count}
                       for (topic, msgtype), count in sorted(extent.counts.items())],
            "replay_roles": {role: choice.topic(role) for role in ("camera", "lidar", "gnss", "odom", "speed",
                                                                           "twist")},
            "notes": choice.notes + ([extent.note] if extent.note else []),
            "recording": recording_state(args.bag),  # how a bag this project wrote ended; None for others
        }
    finally:
        reader.close()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    _show(f"bag:      {info['bag']} ({info['storage']}"
          + (f", {info['compression']}-compressed" if info["compression"] else "") + ")")
    if info["start_s"] is None:
        _show("messages: none")
    else:
        _show(f"messages: {info['messages']} over {info['duration_s']:.3f} s from t={info['start_s']:.3f} s")
    for t in info["topics"]:
        _show(f"  {t['topic']} ({t['type']}): {t['messages']}")
    if info["recording"] is not None:
        _show(f"recording: {info['recording']}")
    _show("replay reads: " + ", ".join(f"{role} {topic or '-'}" for role, topic in info["replay_roles"].items()))
    for note in info["notes"]:
        _show(f"  note: {note}")
    return 0


def _storage_of(reader: Any, path: Path) -> str:
    if not reader.is2:
        return "ROS 1 bag"
    if path.is_file():
        return "sqlite3" if path.suffix == ".db3" else "mcap"
    from regionadapt_ros.core.bag_inflation import bag_metadata

    info = bag_metadata(path) or {}
    return str(info.get("storage_identifier") or "rosbag2")


def _recover(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from regionadapt_ros.core.bag_recovery import recover_mcap, recover_sqlite
    from regionadapt_ros.core.errors import DataError

    if args.file.suffix == ".db3":
        if args.ros_only:
            raise DataError("--ros-only", "a .db3 bag holds ROS 2 messages only; the option is for .mcap files")
        result = recover_sqlite(args.file, args.out, DataError)
        state = "was closed" if result.complete else "had a write-ahead log, merged into the copy"
        _show(f"{args.file} {state}")
        _print_recovered(result)
        return 0
    size = args.file.stat().st_size if args.file.is_file() else 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"recover {args.file.name}", leave=False,
              disable=args.no_progress) as bar:
        def progress(done: int) -> None:
            bar.update(max(0, done - bar.n))

        result = recover_mcap(args.file, args.out, DataError, progress, ros_only=args.ros_only)
    if result.damaged:
        where = ", ".join(str(offset) for offset in result.damaged)
        ended = result.read_bytes < result.source_bytes and result.read_bytes in result.damaged
        rest = ("the records before the last are copied, the rest of the file is lost" if ended
                else "every other record is copied")
        state = (f"is damaged: the record(s) at byte {where} of {result.source_bytes} cannot be read and are left "
                 f"out; {rest}")
    elif result.complete:
        state = "was complete"
    elif result.trailing_bytes:
        state = (f"ends at its footer with {result.trailing_bytes} B after it that no reader reaches (two files "
                 "joined?); the records up to the footer are copied")
    elif result.summary_messages is not None and result.summary_messages != result.message_count:
        state = (f"is damaged: its summary counts {result.summary_messages} messages, {result.message_count} could "
                 "be read and are copied")
    elif result.read_bytes >= result.source_bytes:
        state = f"ends without its footer after a whole record ({result.source_bytes} B, all read)"
    else:
        state = f"ends early: read {result.read_bytes} of {result.source_bytes} B"
    if result.damaged and not result.complete and not ended:
        state += f"; the file also ends early (read {result.read_bytes} of {result.source_bytes} B), the rest is lost"
    if result.left_out:
        state += "; left out as not ROS 2 messages: " + ", ".join(f"{t} ({n})" for t, n in result.left_out.items())
    if result.orphan_messages:
        state += (f"; {result.orphan_messages} message(s) on a channel that nothing in the file declares are left "
                  "out")
    _show(f"{args.file} {state}")
    _print_recovered(result)
    return 0


def _show(text: str) -> None:
    """Print a line that may quote a bag's own text (topic and type names, notes): escaped, so a topic named
    with a newline or an ANSI escape cannot forge a line or recolour the terminal."""
    from regionadapt_ros.core.safe_read import printable_text

    print(printable_text(text))


def _print_recovered(result: Any) -> None:
    span = (result.end_ns - result.start_ns) / 1e9 if result.start_ns is not None else 0.0
    _show(f"wrote {result.path}: {result.message_count} messages over {span:.3f} s")
    for topic, count in result.messages.items():
        _show(f"  {topic}: {count}")
