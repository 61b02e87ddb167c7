"""Bags damaged inside (a chunk, a row, a topic entry, the metadata), not only cut short: every command refuses
them in one line naming the file, and `bag recover` never leaves a copy behind when it refuses, never runs what
a hostile database schema holds, and says what it could not copy."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import pytest
import yaml
from cli_checks import one_line_refusal
from rosbags.rosbag2 import CompressionMode
from test_hostile_bags import every_command, setup  # noqa: F401  (a fixture)
from test_recorded_bag_variants import replay, write_camera_bag, write_drive

from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_inflation import MCAP_MAGIC, check_bag_inflation, mcap_records
from regionadapt_ros.core.bag_recovery import recover_mcap
from regionadapt_ros.core.bag_storage import recovery_hint
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.core.safe_read import one_line


def chunk_payload(path: Path, index: int = 0) -> int:
    """Byte offset of the (compressed) records of the MCAP file's chunk number ``index``."""
    with path.open("rb") as stream:
        chunk = [r for r in mcap_records(stream) if r.opcode == 0x06][index]
    with path.open("rb") as stream:
        stream.seek(chunk.offset + 9 + 28)
        name_len = struct.unpack("<I", stream.read(4))[0]
    return chunk.offset + 9 + 32 + name_len + 8


def test_a_bare_mcap_whose_first_chunk_does_not_inflate_is_refused_by_every_command(setup, store, types,  # noqa: F811
                                                                                     tmp_path, capsys):
    bag = write_camera_bag(tmp_path / "bag", store, types, mode=CompressionMode.STORAGE)
    src = next(bag.glob("*.mcap"))
    data = bytearray(src.read_bytes())
    at = chunk_payload(src)
    assert data[at:at + 4] == b"\x28\xb5\x2f\xfd"  # the zstd frame's magic
    data[at:at + 4] = bytes(4)
    bare = tmp_path / "damaged.mcap"
    bare.write_bytes(bytes(data))
    for argv in [["bag", "info", str(bare)], *every_command(setup, bare, tmp_path / "cmd")]:
        err = one_line_refusal(capsys, argv)
        assert f"{bare}: cannot read its first message (ZstdError: " in err and "the file is damaged" in err


@pytest.mark.parametrize(("sql", "message"), [
    ("UPDATE messages SET data = 'text'", "15 message row(s), the first with id 1, have a timestamp that is not"),
    ("UPDATE messages SET data = 42", "or data that is not bytes (rosbag2 writes neither)"),
    ("UPDATE topics SET type = x'00ff'", "has the message type \"b'\\\\x00\\\\xff'\", not a type name"),
    ("UPDATE topics SET name = x'ff'", "a topic whose name is \"b'\\\\xff'\", not text"),
])
def test_a_bare_db3_with_rows_of_the_wrong_type_is_one_line(store, types, tmp_path, capsys, sql, message):
    bag = write_drive(tmp_path / "drive", store, types, storage="sqlite3", seconds=0.5)
    db = tmp_path / "drive.db3"
    shutil.copy(next(bag.glob("*.db3")), db)
    with sqlite3.connect(db) as con:
        con.execute(sql)
    err = one_line_refusal(capsys, ["bag", "info", str(db)])
    assert f"{db}: " in err and message in err, err


def mutate_metadata(bag: Path, change) -> None:
    doc = yaml.safe_load((bag / "metadata.yaml").read_text())
    change(doc["rosbag2_bagfile_information"])
    (bag / "metadata.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize(("change", "message"), [
    (lambda info: info["topics_with_message_count"][0].update(message_count="x"),
     "has the message count 'x', not a whole number"),
    (lambda info: info["topics_with_message_count"][0]["topic_metadata"].update(name=None),
     "a topic whose name is 'None', not text"),
    (lambda info: info.update(files="str"), "metadata.yaml: its files is a str, not a list"),
])
def test_a_metadata_yaml_with_fields_of_the_wrong_type_is_one_line_in_every_command(setup, store, types,  # noqa: F811
                                                                                    tmp_path, capsys, change,
                                                                                    message):
    bag = write_drive(tmp_path / "drive", store, types, seconds=0.5)
    mutate_metadata(bag, change)
    for argv in [["bag", "info", str(bag)], *every_command(setup, bag, tmp_path / "cmd")]:
        assert message in one_line_refusal(capsys, argv), argv


def test_a_metadata_yaml_too_large_to_check_is_refused_not_passed_over(store, types, tmp_path, capsys):
    """The bag's checks (the decompression-bomb check among them) read metadata.yaml up to 16 MiB; a larger one
    used to switch them off while the reader went on to read it."""
    bag = write_drive(tmp_path / "drive", store, types, seconds=0.5)
    with (bag / "metadata.yaml").open("a") as handle:
        handle.write("#" + "x" * (17 << 20) + "\n")
    err = one_line_refusal(capsys, ["bag", "info", str(bag)])
    assert f"{bag / 'metadata.yaml'}: is 17.0 MiB, more than the limit of 16.0 MiB" in err
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: [\n")
    err = one_line_refusal(capsys, ["bag", "info", str(bag)])
    assert f"{bag / 'metadata.yaml'}: is not YAML rosbag2 writes (not valid YAML" in err


def test_recover_refuses_a_db3_whose_tables_are_views_without_running_them(store, types, tmp_path, capsys):
    """A recursive view never returns: it is refused by its kind. A folder where an earlier version kept its
    work does not block the run and is left alone (it could be anyone's); the run's own work folder goes."""
    bag = write_drive(tmp_path / "drive", store, types, storage="sqlite3", seconds=0.5)
    db = tmp_path / "view.db3"
    shutil.copy(next(bag.glob("*.db3")), db)
    with sqlite3.connect(db) as con:
        con.executescript("ALTER TABLE topics RENAME TO t2; CREATE VIEW topics AS WITH RECURSIVE r(x) AS "
                          "(SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x AS id, 'n' AS name, "
                          "'std_msgs/msg/String' AS type, 'cdr' AS serialization_format, '' AS offered_qos_profiles, "
                          "'' AS type_description_hash FROM r")
    out = tmp_path / "copy.db3"
    (tmp_path / ".copy.db3.recovering").mkdir()
    (tmp_path / ".copy.db3.recovering" / "notes.txt").write_text("someone's")
    err = one_line_refusal(capsys, ["bag", "recover", str(db), "--out", str(out)])
    assert f"{db}: its 'topics' is a view, not the table rosbag2 writes: refused without running it" in err
    assert not out.exists() and (tmp_path / ".copy.db3.recovering" / "notes.txt").read_text() == "someone's"
    assert sorted(p.name for p in tmp_path.glob(".copy.db3*")) == [".copy.db3.recovering"]


def test_recover_refuses_a_db3_with_text_timestamps_and_leaves_no_copy(store, types, tmp_path, capsys):
    bag = write_drive(tmp_path / "drive", store, types, storage="sqlite3", seconds=0.5)
    db = tmp_path / "text.db3"
    shutil.copy(next(bag.glob("*.db3")), db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE messages SET timestamp = 'abc'")
    out = tmp_path / "copy.db3"
    err = one_line_refusal(capsys, ["bag", "recover", str(db), "--out", str(out)])
    assert "a message timestamp that is not an integer: the database is damaged, nothing written" in err
    assert not out.exists()


def test_recover_of_a_closed_mcap_damaged_inside_says_where_the_copy_ends(store, types, tmp_path, capsys):
    """The file has its footer, but a record in it cannot be read: what comes before is copied, and the command
    says where it stopped instead of calling the file complete."""
    bag = write_drive(tmp_path / "drive", store, types, seconds=12.0)  # more than one 1 MiB chunk
    src = next(bag.glob("*.mcap"))
    with src.open("rb") as stream:
        chunks = [r for r in mcap_records(stream) if r.opcode == 0x06]
    data = bytearray(src.read_bytes())
    assert len(chunks) > 1
    second = chunks[1]
    struct.pack_into("<B", data, second.offset, 0xFE)  # an opcode no one defines, in the middle of the file
    struct.pack_into("<Q", data, second.offset + 1, 1 << 40)
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    result = recover_mcap(damaged, tmp_path / "copy.mcap", DataError)
    assert result.damaged == (second.offset,) and not result.complete  # its length gives no way past it
    assert 0 < result.message_count < 360
    capsys.readouterr()
    assert main(["bag", "recover", str(damaged), "--out", str(tmp_path / "copy2.mcap"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (f"is damaged: the record(s) at byte {second.offset} of {len(data)} cannot be read and are left out; "
            "the records before the last are copied, the rest of the file is lost") in printed
    assert main(["bag", "info", str(tmp_path / "copy2.mcap")]) == 0


def small_chunk_mcap(path: Path, messages: int = 60) -> Path:
    """An MCAP of zstd chunks of about 1 kB, written with the mcap library (a recorder's layout, smaller)."""
    from mcap.writer import CompressionType, Writer

    with path.open("wb") as handle:
        writer = Writer(handle, chunk_size=1024, compression=CompressionType.ZSTD)
        writer.start("ros2", "test")
        schema = writer.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        channel = writer.register_channel("/chatter", "cdr", schema)
        for i in range(messages):
            writer.add_message(channel, 1_000_000_000 + i * 100_000_000, bytes(range(256)) * 2 + bytes([i]),
                               1_000_000_000 + i * 100_000_000)
        writer.finish()
    return path


def test_recover_skips_a_damaged_chunk_whose_length_is_sound_and_copies_the_rest(tmp_path, capsys):
    src = small_chunk_mcap(tmp_path / "chunks.mcap")
    with src.open("rb") as stream:
        chunks = [r for r in mcap_records(stream) if r.opcode == 0x06]
    assert len(chunks) > 4
    data = bytearray(src.read_bytes())
    at = chunk_payload(src, 2)  # the third chunk's zstd frame
    assert data[at:at + 4] == b"\x28\xb5\x2f\xfd"
    data[at:at + 4] = bytes(4)
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    result = recover_mcap(damaged, tmp_path / "copy.mcap", DataError)
    assert result.damaged == (chunks[2].offset,) and not result.complete
    lost = 60 - result.message_count
    assert 0 < lost <= 2 * (60 // len(chunks))  # one chunk's messages, not everything after it
    capsys.readouterr()
    assert main(["bag", "recover", str(damaged), "--out", str(tmp_path / "copy2.mcap"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"the record(s) at byte {chunks[2].offset} of {len(data)} cannot be read and are left out; every other " \
           "record is copied" in printed
    assert main(["bag", "info", str(tmp_path / "copy2.mcap")]) == 0


def test_recover_says_when_the_copy_holds_fewer_messages_than_the_summary_counts(store, types, tmp_path, capsys):
    """Damage inside a chunk can end the chunk's records without an error from the reader: the count the
    file's summary states is what shows it."""
    bag = write_drive(tmp_path / "drive", store, types, seconds=12.0)
    src = next(bag.glob("*.mcap"))
    data = bytearray(src.read_bytes())
    struct.pack_into("<Q", data, chunk_payload(src, 1) + 1, 1 << 40)  # the second chunk's first record's length
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["bag", "recover", str(damaged), "--out", str(tmp_path / "copy.mcap"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "is damaged: its summary counts 360 messages, " in printed and "was complete" not in printed


def test_a_ros1_header_length_past_the_file_is_not_read(tmp_path):
    """A 4 GiB header length is checked against the file before anything that long is read."""
    import subprocess
    import sys

    bag = tmp_path / "damaged.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n" + struct.pack("<I", 0xFFFF_FFFF) + bytes(64))
    child = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.RLIM_INFINITY)); "
             "from regionadapt_ros.core.bag_inflation import check_bag_inflation; "
             "from regionadapt_ros.core.errors import DataError; check_bag_inflation(sys.argv[1], DataError)")
    result = subprocess.run([sys.executable, "-c", child, str(bag)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_bag_inflation(bag, DataError)


def test_an_error_that_spans_lines_or_kilobytes_prints_as_one_bounded_line():
    assert one_line("could not parse:\n'MSG: x'\n  27\n") == "could not parse: 'MSG: x' 27"
    long = "a" * 5000 + " end"
    shown = one_line(long)
    assert len(shown) < 1100 and shown.endswith("end (5004 characters in all)")


def test_replay_of_a_bag_damaged_part_way_counts_what_it_could_not_read(setup, store, types, tmp_path,  # noqa: F811
                                                                        capsys):
    bag = write_drive(tmp_path / "drive", store, types, seconds=12.0)
    src = next(bag.glob("*.mcap"))
    data = bytearray(src.read_bytes())
    payload = chunk_payload(src, 1)
    data[payload:payload + 64] = bytes(range(64))  # the second chunk's records: garbage, its framing intact
    src.write_bytes(bytes(data))
    capsys.readouterr()
    code, summary = replay(setup, bag, tmp_path / "out")
    assert "messages the bag's storage counts could not be read" in capsys.readouterr().out
    assert code == 0  # the reader ends the chunk's records without an error: the count says what was lost
    readable = recover_mcap(src, tmp_path / "copy.mcap", DataError).message_count
    assert 0 < readable < 360 and summary["warnings"]["messages_unread"] == 360 - readable
    # what a replay that fails part-way adds to its refusal
    assert f"`regionadapt bag recover {src} --out COPY.mcap` copies every record" in recovery_hint(bag)
    sqlite_bag = write_drive(tmp_path / "sqlite", store, types, storage="sqlite3", seconds=0.5)
    assert recovery_hint(sqlite_bag) == ""


def test_the_record_a_read_failed_in_is_the_last_one_starting_before_the_reader():
    from regionadapt_ros.core.bag_inflation import McapRecordHead
    from regionadapt_ros.core.bag_recovery import _enclosing_record

    heads = [McapRecordHead(8, 0x01, 20, False), McapRecordHead(37, 0x06, 100, False),
             McapRecordHead(146, 0x06, 1 << 40, True)]
    assert _enclosing_record(heads, 60) == (37, 146)     # inside the chunk: past it
    assert _enclosing_record(heads, 146) == (37, 146)    # at its end: the chunk it finished reading
    assert _enclosing_record(heads, 150) == (146, None)  # a length past the file: no way past it
    assert _enclosing_record(heads, 4) == (4, None)      # before any record


def test_recover_never_writes_over_its_input_a_planted_link_or_the_inputs_log(store, types, tmp_path, capsys):
    bag = write_drive(tmp_path / "drive", store, types, storage="mcap", seconds=0.5)
    src = tmp_path / ".c2.mcap.recovering"  # the work file's old fixed name for --out c2.mcap
    shutil.copy(next(bag.glob("*.mcap")), src)
    original = src.read_bytes()
    assert main(["bag", "recover", str(src), "--out", str(tmp_path / "c2.mcap")]) == 0
    assert src.read_bytes() == original and (tmp_path / "c2.mcap").is_file()
    important = tmp_path / "important.txt"
    important.write_text("keep")
    (tmp_path / ".c3.mcap.recovering").symlink_to(important)
    assert main(["bag", "recover", str(src), "--out", str(tmp_path / "c3.mcap")]) == 0
    assert important.read_text() == "keep"
    db_bag = write_drive(tmp_path / "sql", store, types, storage="sqlite3", seconds=0.5)
    db = next(db_bag.glob("*.db3"))
    err = one_line_refusal(capsys, ["bag", "recover", str(db), "--out", str(db.with_name(db.name + "-wal"))])
    assert "is where" in err and "SQLite log lives" in err
    assert not db.with_name(db.name + "-wal").exists()
    capsys.readouterr()
    assert main(["bag", "info", str(db)]) == 0


def test_an_alias_bomb_in_metadata_yaml_is_refused_before_it_expands(store, types, tmp_path, capsys):
    bag = write_drive(tmp_path / "drive", store, types, seconds=0.5)
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    doc = yaml.safe_load((bag / "metadata.yaml").read_text())
    doc["rosbag2_bagfile_information"]["compression_mode"] = "BOMB"
    text = "\n".join(lines) + "\n" + yaml.safe_dump(doc).replace("compression_mode: BOMB", "compression_mode: *a9")
    (bag / "metadata.yaml").write_text(text)
    err = one_line_refusal(capsys, ["bag", "info", str(bag)])
    assert "metadata.yaml: is not YAML rosbag2 writes" in err and "alias *a0 is not accepted" in err


def test_a_topic_named_with_a_newline_or_an_ansi_escape_cannot_forge_output_lines(store, types, tmp_path, capsys):
    forged = "/x\nreplay reads: camera /fake\x1b[31m"

    def extra(writer):
        conn = writer.add_connection(forged, "std_msgs/msg/String", typestore=store)
        return lambda i, t, ns: writer.write(conn, ns, store.serialize_cdr(msgconv.build_string(types, "s"),
                                                                          "std_msgs/msg/String"))

    bag = write_drive(tmp_path / "drive", store, types, seconds=0.5, extra=extra)
    capsys.readouterr()
    assert main(["bag", "info", str(bag)]) == 0
    assert main(["bag", "recover", str(next(bag.glob("*.mcap"))), "--out", str(tmp_path / "c.mcap"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "/x\\nreplay reads: camera /fake\\x1b[31m" in out and "\x1b" not in out
    assert [line for line in out.splitlines() if line.startswith("replay reads:")] == [
        "replay reads: camera /camera/image, lidar -, gnss /gnss/fix, odom /odom, speed -, twist -"]


@pytest.mark.parametrize("edit", ["UPDATE messages SET timestamp = timestamp + 0.5",
                                  "UPDATE messages SET timestamp = -5 WHERE id = 7",
                                  "UPDATE messages SET data = 'text' WHERE id = 3",
                                  "UPDATE messages SET topic_id = 99 WHERE id = 4"])
def test_sqlite_rows_rosbag2_never_writes_are_refused_by_name_not_an_internal_error(store, types, tmp_path, capsys,
                                                                                      edit):
    bag = write_drive(tmp_path / "drive", store, types, storage="sqlite3", seconds=0.5)
    db = tmp_path / "edited.db3"
    shutil.copy(next(bag.glob("*.db3")), db)
    with sqlite3.connect(db) as con:
        con.execute(edit)
    for argv in (["replay", str(db), "--out", str(tmp_path / "r"), "--no-progress", "--no-report"],
                 ["bag", "info", str(db)]):
        err = one_line_refusal(capsys, argv)
        assert f"{db}: " in err and "message row(s), the first with id" in err and "internal error" not in err


def test_a_bag_path_that_is_a_looping_link_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "loop").symlink_to("loop")
    err = one_line_refusal(capsys, ["replay", str(tmp_path / "loop"), "--out", str(tmp_path / "x")])
    assert "internal error" not in err and "loop" in err


@pytest.mark.parametrize("listed", [["NAME", "NAME"], ["NAME", "./NAME"]])
def test_a_storage_file_listed_twice_in_metadata_yaml_is_refused_not_read_twice(store, types, tmp_path, capsys,
                                                                                listed):
    bag = write_drive(tmp_path / "drive", store, types, seconds=0.5)
    name = next(bag.glob("*.mcap")).name
    mutate_metadata(bag, lambda info: info.update(relative_file_paths=[n.replace("NAME", name) for n in listed]))
    err = one_line_refusal(capsys, ["bag", "info", str(bag)])
    assert f"relative_file_paths name {name} more than once" in err


def small_mcap(path: Path, n: int = 40, chunk_size: int = 300, late_topic_from: int | None = None,
               compression: str = "zstd") -> Path:
    """``n`` std_msgs/String messages in small chunks (zstd or none) with CRCs, written by the mcap library as
    rosbag2's MCAP plugin writes them; from message ``late_topic_from`` on, every other one is on a second
    topic."""
    from mcap.writer import CompressionType, Writer

    store = msgconv.rosbags_typestore()
    with path.open("wb") as handle:
        writer = Writer(handle, chunk_size=chunk_size, compression=CompressionType[compression.upper()])
        writer.start("ros2", "test")
        schema = writer.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        first = writer.register_channel("/a", "cdr", schema)
        second = None
        for i in range(n):
            channel = first
            if late_topic_from is not None and i >= late_topic_from and i % 2:
                second = second if second is not None else writer.register_channel("/b", "cdr", schema)
                channel = second
            raw = store.serialize_cdr(store.types["std_msgs/msg/String"](data=f"m{i} " + "x" * 40),
                                      "std_msgs/msg/String")
            writer.add_message(channel, 10**9 + i * 10**8, raw, 10**9 + i * 10**8, sequence=i)
        writer.finish()
    return path


def flipped(src: Path, out: Path, chunk: int, where: str) -> Path:
    """``src`` with chunk ``chunk`` damaged: its zstd magic zeroed ("magic"), or one bit of its records flipped
    ("bit", in an uncompressed chunk: every record still parses, to wrong bytes, which only the CRC tells)."""
    data = bytearray(src.read_bytes())
    at = chunk_payload(src, chunk)
    if where == "magic":
        data[at:at + 4] = bytes(4)
    else:
        data[at + 40] ^= 0x01  # inside the first message's data (its record header is 31 bytes)
    out.write_bytes(bytes(data))
    return out


def test_recover_leaves_out_a_chunk_whose_crc_fails_instead_of_copying_it_as_good(tmp_path, capsys):
    src = small_mcap(tmp_path / "c.mcap", compression="none")
    with src.open("rb") as stream:
        chunks = len([r for r in mcap_records(stream) if r.opcode == 0x06])
    damaged = flipped(src, tmp_path / "bit.mcap", 3, "bit")
    assert main(["bag", "recover", str(damaged), "--out", str(tmp_path / "copy.mcap"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "is damaged: the record(s) at byte" in out and "was complete" not in out
    from rosbags.highlevel import AnyReader

    with AnyReader([src]) as original, AnyReader([tmp_path / "copy.mcap"]) as got:
        expected = {(ns, bytes(raw)) for _, ns, raw in original.messages()}
        copied = [(ns, bytes(raw)) for _, ns, raw in got.messages()]
    # every copied message is one of the original's, byte for byte, and the damaged chunk's are missing
    assert set(copied) <= expected and 40 - 40 // chunks - 2 <= len(copied) < 40


def test_recover_copies_messages_whose_channel_was_declared_in_a_damaged_chunk(tmp_path, capsys):
    # /a is declared in the first chunk, /b in the chunk of message 13: whichever chunk is damaged, the summary
    # still declares both, so only the damaged chunk's own messages are missing
    src = small_mcap(tmp_path / "late.mcap", late_topic_from=12)
    with src.open("rb") as stream:
        chunks = len([r for r in mcap_records(stream) if r.opcode == 0x06])
    for k in range(chunks):
        damaged = flipped(src, tmp_path / f"d{k}.mcap", k, "magic")
        assert main(["bag", "recover", str(damaged), "--out", str(tmp_path / f"c{k}.mcap"), "--no-progress"]) == 0
        lines = capsys.readouterr().out.splitlines()
        counts = {t: int(n) for t, n in (line.strip().split(": ") for line in lines if line.startswith("  /"))}
        per_chunk = 40 // chunks + 2
        assert counts.get("/a", 0) + counts.get("/b", 0) >= 40 - per_chunk, (k, counts)
        assert counts.get("/b", 0) >= 14 - per_chunk, (k, counts)


def test_recover_says_what_lies_after_the_footer_of_two_joined_files(tmp_path, capsys):
    one = small_mcap(tmp_path / "one.mcap", n=10)
    joined = tmp_path / "joined.mcap"
    joined.write_bytes(one.read_bytes() * 2)
    assert main(["bag", "recover", str(joined), "--out", str(tmp_path / "c.mcap"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"ends at its footer with {one.stat().st_size} B after it that no reader reaches" in out
    assert "/a: 10" in out


def test_recover_reads_past_a_damaged_chunk_of_a_file_that_is_also_cut(tmp_path, capsys):
    src = small_mcap(tmp_path / "c.mcap")
    damaged = flipped(src, tmp_path / "d.mcap", 1, "magic")
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(damaged.read_bytes()[: int(damaged.stat().st_size * 0.7)])
    assert main(["bag", "recover", str(cut), "--out", str(tmp_path / "copy.mcap"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    copied = int(next(line for line in out.splitlines() if line.startswith("  /a: ")).split(": ")[1])
    assert copied >= 15, out  # the chunks after the damaged one, up to the cut; before: the first chunk alone
    assert "the record(s) at byte" in out


@pytest.mark.parametrize("encoding", ["jsonschema", "protobuf"])
def test_a_mcap_with_channels_that_are_not_ros_messages_names_them_and_recover_keeps_the_ros_ones(
        tmp_path, capsys, encoding):
    from mcap.writer import Writer

    store = msgconv.rosbags_typestore()
    mixed = tmp_path / "mixed.mcap"
    with mixed.open("wb") as handle:
        writer = Writer(handle)
        writer.start("ros2", "foxglove-like")
        ros = writer.register_channel("/a", "cdr", writer.register_schema("std_msgs/msg/String", "ros2msg",
                                                                          b"string data"))
        other = writer.register_channel("/log", "json" if encoding == "jsonschema" else "protobuf",
                                        writer.register_schema("foxglove.Log", encoding, b"{}"))
        for i in range(6):
            raw = store.serialize_cdr(store.types["std_msgs/msg/String"](data=f"m{i}"), "std_msgs/msg/String")
            writer.add_message(ros, 10**9 + i * 10**8, raw, 10**9 + i * 10**8)
            writer.add_message(other, 10**9 + i * 10**8, b'{"x": 1}', 10**9 + i * 10**8)
        writer.finish()
    err = one_line_refusal(capsys, ["bag", "info", str(mixed)])
    assert f"{mixed}: it has channels that are not ROS 2 messages: /log ({encoding} /" in err
    assert "--ros-only` writes a copy of the ROS 2 channels" in err
    copy = tmp_path / "copy.mcap"
    assert main(["bag", "recover", str(mixed), "--out", str(copy), "--ros-only", "--no-progress"]) == 0
    assert "left out as not ROS 2 messages: /log (6)" in capsys.readouterr().out
    assert main(["bag", "info", str(copy)]) == 0
    assert "/a (std_msgs/msg/String): 6" in capsys.readouterr().out


def test_a_bag_without_a_single_camera_frame_is_refused_not_replayed_as_zero_frames(store, types, tmp_path, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer

    empty = tmp_path / "empty"
    with Writer(empty, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
    err = one_line_refusal(capsys, ["replay", str(empty), "--out", str(tmp_path / "r"), "--no-progress"])
    assert f"{empty}: holds no message on /camera/image: no frame to replay" in err
    assert not (tmp_path / "r").exists()


def test_recover_refuses_a_channel_id_declared_twice_as_two_channels(tmp_path, capsys):
    from mcap.data_stream import RecordBuilder
    from mcap.records import Channel, DataEnd, Footer, Header, Message, Schema

    store = msgconv.rosbags_typestore()
    raw = store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String")
    builder = RecordBuilder()
    for record in (Header(profile="ros2", library="test"),
                   Schema(id=1, name="std_msgs/msg/String", encoding="ros2msg", data=b"string data"),
                   Channel(id=1, schema_id=1, topic="/a", message_encoding="cdr", metadata={}),
                   Message(channel_id=1, sequence=0, log_time=10**9, publish_time=10**9, data=raw),
                   Channel(id=1, schema_id=1, topic="/b", message_encoding="cdr", metadata={}),  # the id again
                   Message(channel_id=1, sequence=1, log_time=2 * 10**9, publish_time=2 * 10**9, data=raw),
                   DataEnd(data_section_crc=0), Footer(summary_start=0, summary_offset_start=0, summary_crc=0)):
        record.write(builder)
    src = tmp_path / "dup.mcap"
    src.write_bytes(MCAP_MAGIC + builder.end() + MCAP_MAGIC)
    err = one_line_refusal(capsys, ["bag", "recover", str(src), "--out", str(tmp_path / "c.mcap"), "--no-progress"])
    assert "channel id 1 is declared twice, as '/a' and '/b'" in err and not (tmp_path / "c.mcap").exists()


def test_ctrl_c_stops_a_long_sqlite_query_as_ctrl_c_not_as_a_damaged_database():
    import _thread
    import threading

    from regionadapt_ros.core.bag_recovery import interruptible, raise_interrupt

    con = sqlite3.connect(":memory:")
    interruptible(con)
    timer = threading.Timer(0.3, _thread.interrupt_main)  # as a terminal's Ctrl-C reaches the main thread
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                con.execute("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r LIMIT 300000000) "
                            "SELECT count(*) FROM r").fetchone()
            except sqlite3.Error as exc:  # sqlite3 drops the KeyboardInterrupt and says "interrupted"
                raise_interrupt(exc)
                raise
    finally:
        timer.cancel()
        con.close()


def test_ros_only_copies_open_for_the_ros_reader_whatever_the_profile_and_keep_idl_channels(tmp_path, capsys):
    from mcap.writer import Writer

    store = msgconv.rosbags_typestore()
    raw = store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String")
    src = tmp_path / "mixed.mcap"
    forged = "/log\nregionadapt: ACCEPTED\x1b[32m"
    with src.open("wb") as handle:
        writer = Writer(handle)
        writer.start("", "a recorder of no profile")
        msg = writer.register_channel("/a", "cdr", writer.register_schema("std_msgs/msg/String", "ros2msg",
                                                                          b"string data"))
        idl = writer.register_channel("/b", "cdr", writer.register_schema(
            "std_msgs/msg/String", "omgidl", b"module std_msgs { module msg { struct String { string data; }; }; };"))
        other = writer.register_channel(forged, "json", writer.register_schema("Log", "jsonschema", b"{}"))
        for i in range(3):
            for channel, data in ((msg, raw), (idl, raw), (other, b"{}")):
                writer.add_message(channel, 10**9 + i, data, 10**9 + i)
        writer.finish()
    err = one_line_refusal(capsys, ["bag", "info", str(src)])
    assert "its MCAP profile is '', not 'ros2'" in err and "--ros-only" in err
    copy = tmp_path / "copy.mcap"
    assert main(["bag", "recover", str(src), "--out", str(copy), "--ros-only", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "/log\\nregionadapt: ACCEPTED\\x1b[32m (3)" in out and "\x1b" not in out
    assert main(["bag", "info", str(copy)]) == 0
    info = capsys.readouterr().out
    assert "/a (std_msgs/msg/String): 3" in info and "/b (std_msgs/msg/String): 3" in info


def test_recover_of_a_damaged_file_that_is_also_cut_says_both(tmp_path, capsys):
    src = small_mcap(tmp_path / "c.mcap")
    damaged = flipped(src, tmp_path / "d.mcap", 1, "magic")
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(damaged.read_bytes()[: int(damaged.stat().st_size * 0.45)])
    assert main(["bag", "recover", str(cut), "--out", str(tmp_path / "copy.mcap"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the record(s) at byte" in out and "the file also ends early (read" in out


def test_recover_says_where_a_killed_run_left_its_work_and_removes_nothing(tmp_path, caplog):
    src = small_mcap(tmp_path / "c.mcap", n=10)
    left = tmp_path / ".copy.mcap.abc123.recovering"
    left.write_bytes(b"half a copy")
    assert main(["bag", "recover", str(src), "--out", str(tmp_path / "copy.mcap"), "--no-progress"]) == 0
    assert any("work file(s) of an earlier recover" in r.getMessage() and left.name in r.getMessage()
               for r in caplog.records)
    assert left.read_bytes() == b"half a copy"
