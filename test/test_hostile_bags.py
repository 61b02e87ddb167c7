"""Decompression bombs in a bag: refused by every command that reads bags, before the bag reader inflates them,
with a line naming the bag and the part that would inflate; legitimately compressed bags still read.

A bomb here is a few kilobytes that inflate past a gigabyte. Unit-level cases use a small limit so that they
inflate megabytes; the command-level cases use the real limit, and a lying bomb is refused after inflating
one 16 MiB piece of it."""

from __future__ import annotations

import itertools
import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from rosbags.rosbag2 import CompressionMode, StoragePlugin, Writer
from test_recorded_bag_variants import replay, write_camera_bag, write_drive
from test_replay_user_bags import fences

from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_inflation import MAX_UNIT_BYTES, check_bag_inflation, inflated_size, mcap_records
from regionadapt_ros.core.bag_recovery import mcap_overrun
from regionadapt_ros.core.errors import DataError

MiB = 1 << 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bundle_factory import write_bundle_set

    root = tmp_path_factory.mktemp("hostile_bags")
    bundles = write_bundle_set(root, signed=False, regions=("highway",))
    return {"root": root, "yaml": bundles["yaml"], "fences": fences(root / "fences.geojson")}


def zstd_of_zeros(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed piece by piece (never ``size`` bytes in memory)."""
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    compressor = zstd.ZstdCompressor()
    piece = bytes(16 * MiB)
    out = [compressor.compress(piece[: min(len(piece), size - done)]) for done in range(0, size, len(piece))]
    return b"".join(out) + compressor.flush()


def mcap_record(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def mcap_with_chunk(path: Path, data: bytes, compression: str, declared: int) -> Path:
    """An MCAP file whose one chunk holds ``data`` compressed with ``compression``, declaring ``declared``
    bytes inflated (the framing of the MCAP specification: magic, records of opcode + length, footer)."""
    header = mcap_record(0x01, struct.pack("<I", 4) + b"ros2" + struct.pack("<I", 0))
    name = compression.encode()
    chunk = mcap_record(0x06, struct.pack("<QQQI", 0, 1, declared, 0) + struct.pack("<I", len(name)) + name
                        + struct.pack("<Q", len(data)) + data)
    footer = mcap_record(0x02, struct.pack("<QQI", 0, 0, 0))
    path.write_bytes(b"\x89MCAP0\r\n" + header + chunk + footer + b"\x89MCAP0\r\n")
    return path


def ros1_with_chunk(path: Path, data: bytes, compression: str, declared: int) -> Path:
    """A ROS 1 bag (format 2.0) whose one chunk record holds ``data``: fields op=0x05, compression, size."""
    def field(name: bytes, value: bytes) -> bytes:
        return struct.pack("<I", len(name) + 1 + len(value)) + name + b"=" + value

    fields = field(b"op", b"\x05") + field(b"compression", compression.encode()) + field(
        b"size", struct.pack("<I", declared))
    path.write_bytes(b"#ROSBAG V2.0\n" + struct.pack("<I", len(fields)) + fields + struct.pack("<I", len(data))
                     + data)
    return path


def message_compressed_sqlite_bag(path: Path, store: Any, types: Any) -> Path:
    return write_camera_bag(path, store, types, storage="sqlite3", mode=CompressionMode.MESSAGE)


def replace_message(bag: Path, row: int, data: bytes) -> None:
    db = next(bag.glob("*.db3"))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE messages SET data = ? WHERE id = ?", (data, row))


def every_command(setup: dict[str, Path], bag: Path, tmp_path: Path) -> list[list[str]]:
    tmp_path.mkdir(exist_ok=True)
    route = tmp_path / "route.csv"
    route.write_text("x,y\n0,0\n100,0\n")
    return [["replay", str(bag), "--out", str(tmp_path / "out"), "--regions-config", str(setup["yaml"]),
             "--geofences", str(setup["fences"]), "--no-progress", "--no-report"],
            ["score", str(bag), "--route", str(route)],
            ["data", "import", "rosbag", str(bag), "--region", "x", "--out", str(tmp_path / "ds"), "--no-progress"],
            ["geofence", "check", str(fences(tmp_path / "f.geojson")), "--track", str(bag)]]


# ------------------------------------------------------------------------------------------------ the counter
def test_inflated_size_counts_every_frame_and_stops_past_the_limit():
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    import bz2

    import lz4.frame

    two_frames = zstd.compress(b"a" * 1000) + zstd.compress(b"b" * 2000)
    assert inflated_size(two_frames, "zstd", 10_000) == 3000
    assert inflated_size(two_frames, "zstd", 2999) is None
    assert inflated_size(two_frames[:-4], "zstd", 10_000) < 3000    # truncated: counted as far as it reads
    assert inflated_size(b"not zstd at all", "zstd", 10) == 0        # damaged: left to the reader
    for codec, data in (("lz4", lz4.frame.compress(bytes(8 * MiB))), ("bz2", bz2.compress(bytes(8 * MiB)))):
        assert inflated_size(data, codec, 9 * MiB) == 8 * MiB
        assert inflated_size(data, codec, 1 * MiB) is None
        assert inflated_size(data + data, codec, 17 * MiB) == 16 * MiB


# ------------------------------------------------------------------------------------------------ MCAP chunks
@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_an_mcap_chunk_inflating_past_what_it_declares_is_refused(tmp_path, codec):
    import lz4.frame

    data = zstd_of_zeros(8 * MiB) if codec == "zstd" else lz4.frame.compress(bytes(8 * MiB))
    bomb = mcap_with_chunk(tmp_path / "bomb.mcap", data, codec, declared=100)
    with pytest.raises(DataError, match=rf"bomb\.mcap: MCAP chunk at byte 29 \({codec}\) inflates past the "
                                        r"100 B it declares \(a decompression bomb"):
        check_bag_inflation(bomb, DataError)
    honest = mcap_with_chunk(tmp_path / "honest.mcap", data, codec, declared=8 * MiB)
    check_bag_inflation(honest, DataError)
    with pytest.raises(DataError, match=r"declares 8\.0 MiB inflated, more than the 1\.0 MiB a chunk may hold"):
        check_bag_inflation(honest, DataError, unit_limit=MiB)


def test_an_mcap_message_record_larger_than_a_message_may_be_is_refused_before_it_is_read(tmp_path):
    """A top-level message record (an unchunked MCAP) is read whole by the reader: its length is checked."""
    header = mcap_record(0x01, struct.pack("<I", 4) + b"ros2" + struct.pack("<I", 0))
    message = struct.pack("<BQ", 0x05, 3 << 30) + struct.pack("<HIQQ", 1, 0, 0, 0)  # claims 3 GiB, holds 22 B
    bag = tmp_path / "unchunked.mcap"
    bag.write_bytes(b"\x89MCAP0\r\n" + header + message)
    with pytest.raises(DataError, match=r"unchunked\.mcap: MCAP message at byte 29 declares 3\.0 GiB, more than "
                                        r"the 1\.0 GiB a message may hold"):
        check_bag_inflation(bag, DataError)
    check_bag_inflation(bag, DataError, unit_limit=4 << 30)


@pytest.mark.parametrize("record", ["schema", "chunk"])
def test_an_mcap_record_length_past_any_file_is_refused_by_every_command_in_one_line(setup, tmp_path, capsys,
                                                                                     record):
    """A damaged length field can hold any 64-bit value: more than a file offset can be. The walk stops there
    (the reader then refuses the file) instead of failing inside ``seek``, and the refusal names the record."""
    header = mcap_record(0x01, struct.pack("<I", 4) + b"ros2" + struct.pack("<I", 0))
    if record == "schema":
        damaged = struct.pack("<BQ", 0x03, 0xF000_0000_0000_0000) + struct.pack("<HI", 1, 4) + b"cdr "
    else:  # a chunk whose compressed size fits its record but whose record runs past 2**63
        damaged = (struct.pack("<BQ", 0x06, (1 << 64) - 1) + struct.pack("<QQQI", 0, 1, 10, 0)
                   + struct.pack("<I", 0) + struct.pack("<Q", 10) + bytes(10))
    footer = mcap_record(0x02, struct.pack("<QQI", 0, 0, 0))
    bag = tmp_path / "damaged.mcap"
    bag.write_bytes(b"\x89MCAP0\r\n" + header + damaged + footer + b"\x89MCAP0\r\n")
    check_bag_inflation(bag, DataError)   # nothing oversized it could read: left to the reader
    for argv in every_command(setup, bag, tmp_path):
        capsys.readouterr()
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err
        assert f"{bag}: the MCAP record at byte 29 declares " in err, (argv[0], err)
        assert "past the end of the" in err and "the file is damaged" in err
        assert len(err.strip().splitlines()) == 1, err


def test_the_mcap_record_walk_covers_a_recorded_file_end_to_end_and_stops_at_a_damaged_length(store, types,
                                                                                             tmp_path):
    """The one top-level walk the inflation check and the damage report share (``mcap_records``)."""
    bag = write_camera_bag(tmp_path / "bag", store, types, mode=CompressionMode.STORAGE, seed=1) / "bag.mcap"
    with bag.open("rb") as stream:
        records = list(mcap_records(stream))
    assert records[0].opcode == 0x01 and records[-1].opcode == 0x02 and 0x06 in {r.opcode for r in records}
    assert not any(r.past_end for r in records)
    for before, after in itertools.pairwise(records):
        assert after.offset == before.offset + 9 + before.length  # contiguous: nothing skipped or re-read
    assert records[-1].offset + 9 + records[-1].length == bag.stat().st_size - 8  # then the closing magic
    assert mcap_overrun(bag) is None

    damaged = tmp_path / "damaged.mcap"
    header = mcap_record(0x01, struct.pack("<I", 4) + b"ros2" + struct.pack("<I", 0))
    damaged.write_bytes(b"\x89MCAP0\r\n" + header + struct.pack("<BQ", 0x03, 1 << 40) + bytes(20)
                        + b"\x89MCAP0\r\n")
    with damaged.open("rb") as stream:
        records = list(mcap_records(stream))
    assert [(r.offset, r.opcode, r.past_end) for r in records] == [(8, 0x01, False), (29, 0x03, True)]
    assert mcap_overrun(damaged) == (29, 1 << 40, damaged.stat().st_size)


def test_a_recorded_mcap_with_compressed_chunks_is_walked_and_replays(setup, store, types, tmp_path):
    """rosbags' own zstd chunk compression (as ``ros2 bag record`` with the mcap zstd presets): every chunk is
    checked against what it declares, and the bag replays."""
    bag = write_camera_bag(tmp_path / "bag", store, types, mode=CompressionMode.STORAGE, seed=1)
    check_bag_inflation(bag, DataError)
    with pytest.raises(DataError, match=r"bag: bag\.mcap: MCAP chunk at byte \d+ declares"):
        check_bag_inflation(bag, DataError, unit_limit=1000)   # the chunks are found, not skipped
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 10


def test_an_mcap_chunk_bomb_is_refused_by_every_command(setup, tmp_path, capsys):
    bomb = mcap_with_chunk(tmp_path / "drive.mcap", zstd_of_zeros(MAX_UNIT_BYTES + 64 * MiB), "zstd",
                           declared=4096)
    assert bomb.stat().st_size < 100_000
    for argv in every_command(setup, bomb, tmp_path):
        capsys.readouterr()
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err
        assert f"{bomb}: MCAP chunk at byte 29 (zstd) inflates past the 4096 B it declares" in err, argv[0]
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------------ rosbag2 modes
def test_a_message_compressed_bag_with_a_bomb_message_is_refused_naming_the_message(setup, store, types, tmp_path,
                                                                                     capsys):
    bag = message_compressed_sqlite_bag(tmp_path / "bag", store, types)
    check_bag_inflation(bag, DataError)
    code, summary = replay(setup, bag, tmp_path / "ok")
    assert code == 0 and summary["frames"] == 10
    replace_message(bag, 4, zstd_of_zeros(MAX_UNIT_BYTES + MiB))
    for argv in every_command(setup, bag, tmp_path)[:3]:
        capsys.readouterr()
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err
        assert (f"{bag}: bag.db3: the /camera/image message at log time 1000300000000 ns inflates past 1.0 GiB"
                in err), argv[0]


def test_a_file_compressed_bag_is_refused_when_it_would_not_fit_where_the_reader_inflates_it(
        setup, store, types, tmp_path):
    bag = write_camera_bag(tmp_path / "bag", store, types, storage="sqlite3", mode=CompressionMode.FILE, seed=2)
    check_bag_inflation(bag, DataError)
    with pytest.raises(DataError, match=r"bag: its storage files are zstd-compressed \(--compression-mode file\) "
                                        r"and inflate to more than 1000 B"):
        check_bag_inflation(bag, DataError, storage_limit=1000)
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 10


def test_a_file_compressed_mcap_is_checked_chunk_by_chunk_once_inflated(tmp_path):
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    inner = mcap_with_chunk(tmp_path / "inner.mcap", zstd_of_zeros(8 * MiB), "zstd", declared=10)
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "bag_0.mcap.zstd").write_bytes(zstd.compress(inner.read_bytes()))
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": {
        "version": 8, "storage_identifier": "mcap", "relative_file_paths": ["bag_0.mcap.zstd"],
        "compression_mode": "FILE", "compression_format": "zstd"}}))
    with pytest.raises(DataError, match=r"bag_0\.mcap\.zstd \(inflated\): MCAP chunk at byte 29 \(zstd\) inflates "
                                        r"past the 10 B it declares"):
        check_bag_inflation(bag, DataError)


# ------------------------------------------------------------------------------------------------ ROS 1
@pytest.mark.parametrize("codec", ["bz2", "lz4"])
def test_a_ros1_chunk_bomb_is_refused(setup, tmp_path, capsys, codec):
    import bz2

    import lz4.frame

    compress = bz2.compress if codec == "bz2" else lz4.frame.compress
    bomb = ros1_with_chunk(tmp_path / "drive.bag", compress(bytes(8 * MiB)), codec, declared=1000)
    with pytest.raises(DataError, match=rf"drive\.bag: ROS 1 chunk at byte 13 \({codec}\) inflates past 1000 B"):
        check_bag_inflation(bomb, DataError)
    capsys.readouterr()
    assert main(every_command(setup, bomb, tmp_path)[0]) == 1
    assert "ROS 1 chunk at byte 13" in capsys.readouterr().err


@pytest.mark.parametrize("codec", ["bz2", "lz4"])
def test_a_compressed_ros1_bag_written_by_a_recorder_passes_the_check_and_replays(setup, store, types, tmp_path,
                                                                                   codec):
    from rosbags.convert.converter import convert
    from rosbags.typesys import Stores, get_typestore

    from regionadapt_ros.core.bag_inflation import _ros1_chunks

    bag = tmp_path / "drive.bag"
    convert([write_drive(tmp_path / "src", store, types)], bag, "sqlite3", 2, codec, "file", store,
            get_typestore(Stores.ROS1_NOETIC), [], [], [], [])
    with bag.open("rb") as stream:
        chunks = list(_ros1_chunks(stream))
    assert chunks and {c[1] for c in chunks} == {codec}
    check_bag_inflation(bag, DataError)
    with pytest.raises(DataError, match=r"ROS 1 chunk at byte \d+"):
        check_bag_inflation(bag, DataError, unit_limit=1000)
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 20


# ------------------------------------------------------------------------------------------------ links
def test_a_looping_link_in_a_bag_directory_is_passed_over_and_one_as_its_storage_is_refused(setup, store, types,
                                                                                          tmp_path, capsys):
    bag = write_drive(tmp_path / "bag", store, types)
    (bag / "notes.txt").symlink_to("notes.txt")          # loops: os.stat raises ELOOP
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 20
    storage = next(bag.glob("*.mcap"))
    storage.unlink()
    storage.symlink_to(storage.name)
    capsys.readouterr()
    assert main(every_command(setup, bag, tmp_path / "again")[0]) == 1
    err = capsys.readouterr().err
    assert f"{bag}: cannot open" in err and "missing" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ cut short
def cut_copy(bag: Path, dst: Path, keep: float) -> Path:
    """The bag's MCAP file cut to ``keep`` of its length, as a recorder killed mid-drive leaves it."""
    data = next(bag.glob("*.mcap")).read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_a_cut_mcap_is_refused_naming_the_recovery_and_the_recovered_copy_replays(setup, store, types, tmp_path,
                                                                                  capsys):
    from rosbags.highlevel import AnyReader

    from regionadapt_ros.core.bag_recovery import mcap_is_cut, recover_mcap

    bag = write_drive(tmp_path / "bag", store, types, seconds=30.0)
    whole = next(bag.glob("*.mcap"))
    cut = cut_copy(bag, tmp_path / "drive.mcap", 0.6)
    assert mcap_is_cut(cut) and not mcap_is_cut(whole)
    for argv in every_command(setup, cut, tmp_path / "cmds"):
        capsys.readouterr()
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err
        assert (f"{cut}: drive.mcap ends before its MCAP footer (a recording that was not closed, or a copy cut "
                f"short): `regionadapt bag recover {cut} --out COPY.mcap`") in err, argv[0]
    copy = tmp_path / "copy.mcap"
    capsys.readouterr()
    assert main(["bag", "recover", str(cut), "--out", str(copy), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{cut} ends early" in out
    # Every message of every chunk before the cut, in order, byte for byte
    with AnyReader([whole], default_typestore=store) as original, AnyReader([copy], default_typestore=store) as got:
        expected = [(c.topic, ns, bytes(raw)) for c, ns, raw in original.messages()]
        recovered = [(c.topic, ns, bytes(raw)) for c, ns, raw in got.messages()]
    assert 0 < len(recovered) < len(expected) and recovered == expected[: len(recovered)]
    assert f"wrote {copy}: {len(recovered)} messages" in out
    code, summary = replay(setup, copy, tmp_path / "out")
    assert code == 0 and summary["frames"] == len(recovered) // 3
    # A complete file is copied whole and said to be complete; an existing --out is never overwritten
    result = recover_mcap(whole, tmp_path / "whole.mcap", DataError)
    assert result.complete and result.message_count == len(expected)
    with pytest.raises(DataError, match="already exists"):
        recover_mcap(cut, copy, DataError)
    with pytest.raises(DataError, match="not an MCAP file"):
        recover_mcap(setup["fences"], tmp_path / "x.mcap", DataError)
    header_only = cut_copy(bag, tmp_path / "header_only.mcap", 0.001)
    with pytest.raises(DataError, match="holds no complete message before byte"):
        recover_mcap(header_only, tmp_path / "y.mcap", DataError)
    assert not (tmp_path / "y.mcap").exists() and not list(tmp_path.glob(".*.recovering"))


def test_a_split_recording_without_metadata_reads_as_one_bag_in_every_command(setup, store, types, tmp_path,
                                                                               capsys):
    """A recorder that did not close a split bag leaves bag_0.mcap, bag_1.mcap, ... and no metadata.yaml: the
    files are read as one bag (merged by time), and the summary says why."""
    import shutil

    from test_import_rosbag import write_drive_bag

    bag = tmp_path / "drive"
    bag.mkdir()
    for part, t0 in enumerate((1000.0, 1002.0)):  # the recorder's splits, one after the other
        written = write_drive(tmp_path / f"split{part}", store, types, seconds=2.0, t0=t0)
        shutil.copyfile(next(written.glob("*.mcap")), bag / f"drive_{part}.mcap")
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 40 and summary["duration_s"] == pytest.approx(3.9, abs=1e-3)
    assert any(n.startswith("metadata.yaml is missing (a recording that was not closed writes none): its storage "
                            "files (drive_0.mcap, drive_1.mcap) are read as one bag") for n in summary["notes"])
    capsys.readouterr()
    assert main(["geofence", "check", str(setup["fences"]), "--track", str(bag), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["track"]["fixes"] == 40
    # the import reads it too (a drive with commands, written as one file, then its metadata.yaml removed)
    drive = write_drive_bag(tmp_path / "importable", storage="mcap")
    (drive.path / "metadata.yaml").unlink()
    result_code = main(["data", "import", "rosbag", str(drive.path), "--region", "x", "--out", str(tmp_path / "ds"),
                        "--no-progress"])
    assert result_code == 0 and "note: metadata.yaml is missing" in capsys.readouterr().out
    # a message-compressed file is still refused when its metadata.yaml is gone
    compressed = write_camera_bag(tmp_path / "compressed", store, types, mode=CompressionMode.MESSAGE)
    (compressed / "metadata.yaml").unlink()
    assert main(every_command(setup, compressed, tmp_path / "cmds")[0]) == 1
    err = capsys.readouterr().err
    assert f"{compressed}: compressed.mcap: its messages are zstd-compressed" in err and "has none" in err
    # the last split cut short, as a killed recorder leaves it: refused, recovered, put in its place, read
    last = bag / "drive_1.mcap"
    long_split = write_drive(tmp_path / "long_split", store, types, seconds=30.0, t0=1002.0)  # several chunks
    data = next(long_split.glob("*.mcap")).read_bytes()
    last.write_bytes(data[: len(data) * 3 // 4])
    assert main(every_command(setup, bag, tmp_path / "cmds-cut")[0]) == 1
    assert ("drive_1.mcap ends before its MCAP footer" in (err := capsys.readouterr().err)
            and "put the copy in its place to read the whole directory" in err)
    assert main(["bag", "recover", str(last), "--out", str(tmp_path / "drive_1.mcap"), "--no-progress"]) == 0
    capsys.readouterr()
    shutil.move(tmp_path / "drive_1.mcap", last)
    code, summary = replay(setup, bag, tmp_path / "out-recovered")
    assert code == 0 and 20 < summary["frames"] < 20 + 300
    # two recordings side by side are not one bag
    side_by_side = tmp_path / "recordings"
    side_by_side.mkdir()
    for name in ("monday", "tuesday"):
        shutil.copyfile(bag / "drive_0.mcap", side_by_side / f"{name}.mcap")
    assert main(every_command(setup, side_by_side, tmp_path / "cmds3")[0]) == 1
    assert ("has no metadata.yaml, and its storage files (monday.mcap, tuesday.mcap) are not the splits of one "
            "recording (NAME_0, NAME_1, ...): give one file") in capsys.readouterr().err
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(bag / "drive_0.mcap", alone / "monday.mcap")   # one file of any name is one recording
    code, summary = replay(setup, alone, tmp_path / "out-alone")
    assert code == 0 and summary["frames"] == 20
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(every_command(setup, empty, tmp_path / "cmds2")[0]) == 1
    assert "no metadata.yaml and no .mcap or .db3 file in it" in capsys.readouterr().err


def test_bag_info_says_what_the_product_reads(setup, store, types, tmp_path, capsys):
    bag = write_drive(tmp_path / "bag", store, types)
    capsys.readouterr()
    assert main(["bag", "info", str(bag), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["storage"] == "mcap" and info["messages"] == 60 and info["duration_s"] == pytest.approx(1.9, abs=1e-6)
    assert {t["topic"]: t["messages"] for t in info["topics"]} == {"/camera/image": 20, "/gnss/fix": 20, "/odom": 20}
    assert info["replay_roles"] == {"camera": "/camera/image", "lidar": None, "gnss": "/gnss/fix", "odom": "/odom",
                                    "speed": None, "twist": None}
    odometry_only = tmp_path / "odom_only"
    with Writer(odometry_only, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        writer.write(conn, 10**9, store.serialize_cdr(msgconv.build_odometry(types, 1.0, 1.0), "nav_msgs/msg/Odometry"))
    assert main(["bag", "info", str(odometry_only), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["messages"] == 1 and info["replay_roles"]["camera"] is None
    assert any(n.startswith("replay would refuse it:") and "no camera topic" in n for n in info["notes"])
    bomb = mcap_with_chunk(tmp_path / "bomb.mcap", zstd_of_zeros(8 * MiB), "zstd", declared=10)
    assert main(["bag", "info", str(bomb)]) == 1
    assert "inflates past the 10 B it declares" in capsys.readouterr().err


def test_a_damaged_file_compressed_bag_is_left_to_the_reader_to_refuse(setup, tmp_path, capsys):
    """Not a bomb, not zstd at all: the check passes it on and the reader's own error is said in one line."""
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "bag_0.mcap.zstd").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4)
    (bag / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": {
        "version": 8, "storage_identifier": "mcap", "relative_file_paths": ["bag_0.mcap.zstd"],
        "compression_mode": "FILE", "compression_format": "zstd"}}))
    check_bag_inflation(bag, DataError)
    assert main(every_command(setup, bag, tmp_path / "cmds")[0]) == 1
    err = capsys.readouterr().err
    assert f"{bag}: cannot open as a rosbag2" in err and len(err.strip().splitlines()) == 1


def test_a_ros1_bag_without_its_index_is_refused_naming_rosbag_reindex(setup, store, types, tmp_path, capsys):
    from rosbags.convert.converter import convert
    from rosbags.typesys import Stores, get_typestore

    from regionadapt_ros.core.bag_inflation import ros1_is_unindexed

    bag = tmp_path / "drive.bag"
    convert([write_drive(tmp_path / "src", store, types)], bag, "sqlite3", 2, None, "file", store,
            get_typestore(Stores.ROS1_NOETIC), [], [], [], [])
    assert not ros1_is_unindexed(bag)
    data = bytearray(bag.read_bytes())
    at = data.index(b"index_pos=") + len(b"index_pos=")
    data[at: at + 8] = bytes(8)          # what the recorder writes first, and fills in when it closes the bag
    bag.write_bytes(bytes(data))
    assert ros1_is_unindexed(bag)
    capsys.readouterr()
    assert main(every_command(setup, bag, tmp_path / "cmds")[0]) == 1
    err = capsys.readouterr().err
    assert f"{bag}: is a ROS 1 bag without its index (a recording that was not closed): `rosbag reindex`" in err


# ------------------------------------------------------------------------------------------------ SQLite WAL
def crashed_wal_bag(src: Path, dst: Path) -> Path:
    """The bag ``src`` (sqlite3) as a recorder in write-ahead-log mode (rosbag2's ``resilient`` preset) leaves
    it when killed: its second half, 2 s later, still only in ``NAME.db3-wal``. The files are copied while the
    writer holds them open, which is the state the kill leaves on disk."""
    import shutil

    db = next(src.glob("*.db3"))
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        con.execute("PRAGMA wal_autocheckpoint = 0")
        rows = con.execute("SELECT topic_id, timestamp, data FROM messages").fetchall()
        con.executemany("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                        [(topic, ns + 2 * 10**9, data) for topic, ns, data in rows])
        con.commit()
        dst.mkdir()
        for path in src.iterdir():
            shutil.copyfile(path, dst / path.name)
    finally:
        con.close()
    return dst


def test_a_sqlite_bag_with_an_unmerged_write_ahead_log_is_refused_and_recovered(setup, store, types, tmp_path,
                                                                                 capsys):
    import hashlib

    from rosbags.highlevel import AnyReader

    bag = crashed_wal_bag(write_drive(tmp_path / "src", store, types, storage="sqlite3"), tmp_path / "crashed")
    db, wal = bag / "src.db3", bag / "src.db3-wal"
    assert wal.stat().st_size > 0
    with AnyReader([bag], default_typestore=store) as reader:   # what rosbags alone makes of it: half, silently
        assert sum(1 for _ in reader.messages()) == 60
    for path in (bag, db):
        for argv in every_command(setup, path, tmp_path / f"cmds-{path.name}"):
            capsys.readouterr()
            assert main(argv) == 1, argv[0]
            err = capsys.readouterr().err
            assert (f"{path}: src.db3-wal holds " in err and "the bag reader would miss the messages in it: "
                    f"`regionadapt bag recover {db} --out COPY.db3`" in err), (argv[0], err)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (db, wal)}
    copy = tmp_path / "copy.db3"
    assert main(["bag", "recover", str(db), "--out", str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"{db} had a write-ahead log, merged into the copy" in out and f"wrote {copy}: 120 messages" in out
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (db, wal)} == before  # source untouched
    assert not copy.with_name(copy.name + "-wal").exists()
    code, summary = replay(setup, copy, tmp_path / "out")
    assert code == 0 and summary["frames"] == 40


def test_sqlite_recovery_refuses_what_is_not_a_rosbag2_database(tmp_path):
    from regionadapt_ros.core.bag_recovery import recover_sqlite

    fake = tmp_path / "fake.db3"
    fake.write_bytes(b"not a database" * 100)
    with pytest.raises(DataError, match=r"fake\.db3: not a rosbag2 SQLite database"):
        recover_sqlite(fake, tmp_path / "copy.db3", DataError)
    other = tmp_path / "other.db3"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(DataError, match=r"other\.db3: not a rosbag2 SQLite database \(no such table"):
        recover_sqlite(other, tmp_path / "copy.db3", DataError)
    assert not (tmp_path / "copy.db3").exists() and not list(tmp_path.glob(".*.recovering"))
