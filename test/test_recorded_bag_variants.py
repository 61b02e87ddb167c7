"""Bags as real recorders write them, through ``replay``, ``score`` and ``data import rosbag``: the variants a
Humble or Jazzy ``ros2 bag record`` or a recording next to the CARLA bridge produce (a topic recorded with two
types, a custom message the project has no definition for, odometry in another frame than the map, messages
the bag cannot decode, a metadata.yaml a killed recorder or a hand edit left stale) are read correctly or
refused with a line that names the bag and the problem. Every bag is written here with rosbags."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from test_replay_user_bags import LAT0, fences, lon_at

from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv

CUSTOM_TYPE = "my_vehicle_msgs/msg/WheelTicks"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bundle_factory import write_bundle_set

    root = tmp_path_factory.mktemp("recorded_bags")
    bundles = write_bundle_set(root, signed=False, regions=("highway",))
    return {"root": root, "yaml": bundles["yaml"], "fences": fences(root / "fences.geojson")}


def write_drive(path: Path, store: Any, types: Any, *, storage: str = "mcap", seconds: float = 2.0,
                extra: Callable[[Writer], Callable[[int, float, int], None]] | None = None,
                t0: float = 1000.0) -> Path:
    """10 Hz odometry, GNSS and camera frames from ``t0`` [s]; ``extra(writer)`` adds connections and returns
    what writes their messages at each step (index, time [s], log time [ns])."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    rng = np.random.default_rng(0)
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        odom = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        fix = writer.add_connection("/gnss/fix", "sensor_msgs/msg/NavSatFix", typestore=store)
        cam = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        more = extra(writer) if extra is not None else None
        for i in range(int(seconds * 10)):
            t = t0 + 0.1 * i
            ns = int(t * 1e9)
            writer.write(odom, ns, store.serialize_cdr(msgconv.build_odometry(types, 20.0, t),
                                                       "nav_msgs/msg/Odometry"))
            gnss = msgconv.build_navsatfix(types, LAT0, lon_at(2.0 * i), 10.0, t, h_std_m=1.0)
            writer.write(fix, ns, store.serialize_cdr(gnss, "sensor_msgs/msg/NavSatFix"))
            img = msgconv.build_image(types, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "rgb8", t, "cam")
            writer.write(cam, ns + 10, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
            if more is not None:
                more(i, t, ns)
    return path


def write_camera_bag(path: Path, store: Any, types: Any, *, storage: str = "mcap",
                     mode: CompressionMode = CompressionMode.NONE, seed: int = 0) -> Path:
    """Ten 10 Hz camera frames of noise, written with ``mode`` zstd compression (message, file or MCAP chunks)."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    rng = np.random.default_rng(seed)
    writer = Writer(path, version=9, storage_plugin=plugin)
    if mode != CompressionMode.NONE:
        writer.set_compression(mode, CompressionFormat.ZSTD)
    with writer:
        cam = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        for i in range(10):
            img = msgconv.build_image(types, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "rgb8",
                                      1000.0 + 0.1 * i, "cam")
            writer.write(cam, int((1000.0 + 0.1 * i) * 1e9), store.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


def replay(setup: dict[str, Path], bag: Path, out: Path) -> tuple[int, dict[str, Any] | None]:
    summary = out.with_suffix(".json")
    code = main(["replay", str(bag), "--out", str(out), "--regions-config", str(setup["yaml"]), "--geofences",
                 str(setup["fences"]), "--json", str(summary), "--no-progress", "--no-report"])
    return code, (json.loads(summary.read_text()) if summary.exists() else None)


# ------------------------------------------------------------------------------------------------ replay
def test_an_undecodable_message_in_a_bag_without_tf_static_is_counted(setup, store, types, tmp_path, capsys):
    """Without /tf_static the replay must not read the whole bag up front: one camera message whose bytes do
    not parse is counted as a missed frame, as the main loop counts it, not the end of the run."""
    def broken_frame(writer: Writer) -> Callable[[int, float, int], None]:
        cam = next(c for c in writer.connections if c.topic == "/camera/image")

        def write(i: int, t: float, ns: int) -> None:
            if i == 5:  # a CDR header, then a string length far past the end
                writer.write(cam, ns + 20, b"\x00\x01\x00\x00\xff\xff\xff\x7f")
        return write

    bag = write_drive(tmp_path / "bag", store, types, extra=broken_frame)
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0, capsys.readouterr().err
    assert summary["warnings"]["undecodable_message"] == 1
    assert summary["frames_missed"] == 1


HUMBLE_SQLITE_SCHEMA = """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
INSERT INTO schema VALUES (3, 'humble');
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                      data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
"""


def as_humble_sqlite(bag: Path) -> Path:
    """A sqlite3 bag as Humble's recorder writes it: metadata version 5 (no type hashes, no ros_distro) and a
    database of schema 3, without the message definitions Jazzy stores."""
    meta_path = bag / "metadata.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    info = meta["rosbag2_bagfile_information"]
    info["version"] = 5
    info.pop("ros_distro", None)
    info.pop("custom_data", None)
    for topic in info["topics_with_message_count"]:
        topic["topic_metadata"].pop("type_description_hash", None)
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    db = bag / info["relative_file_paths"][0]
    with sqlite3.connect(db) as jazzy:
        topics = jazzy.execute("SELECT id, name, type, serialization_format, offered_qos_profiles FROM topics"
                               ).fetchall()
        messages = jazzy.execute("SELECT id, topic_id, timestamp, data FROM messages").fetchall()
    db.unlink()
    humble = sqlite3.connect(db)
    humble.executescript(HUMBLE_SQLITE_SCHEMA)
    humble.executemany("INSERT INTO topics VALUES (?, ?, ?, ?, ?)", topics)
    humble.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", messages)
    humble.commit()
    humble.close()
    return bag


def wheel_ticks(writer: Writer) -> Callable[[int, float, int], None]:
    """A topic of a vehicle's own message type, which the project has no definition for."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg("std_msgs/Header header\nint32[4] ticks\n", CUSTOM_TYPE))
    conn = writer.add_connection("/vehicle/wheel_ticks", CUSTOM_TYPE, typestore=store)
    ticks, header, time = (store.types[name] for name in (CUSTOM_TYPE, "std_msgs/msg/Header",
                                                          "builtin_interfaces/msg/Time"))

    def write(i: int, t: float, ns: int) -> None:
        msg = ticks(header=header(stamp=time(sec=int(t), nanosec=0), frame_id="base_link"),
                    ticks=np.full(4, i, dtype=np.int32))
        writer.write(conn, ns + 5, store.serialize_cdr(msg, CUSTOM_TYPE))
    return write


@pytest.mark.parametrize("variant", ["humble_sqlite3", "jazzy_sqlite3", "mcap"])
def test_a_topic_of_a_custom_type_replays(setup, store, types, tmp_path, capsys, variant):
    """Jazzy's sqlite3 and every MCAP bag carry the custom type's definition: the topic is copied into the
    output bag. A Humble sqlite3 bag carries none: the replay runs and says the topic was left out."""
    bag = write_drive(tmp_path / "bag", store, types, storage="mcap" if variant == "mcap" else "sqlite3",
                      extra=wheel_ticks)
    if variant == "humble_sqlite3":
        as_humble_sqlite(bag)
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0, capsys.readouterr().err
    assert summary["frames"] == 20 and summary["frames_missed"] == 0
    with AnyReader([tmp_path / "out" / "bag"]) as reader:
        copied = {c.topic: c.msgcount for c in reader.connections}
    assert copied["/camera/image"] == 20
    if variant == "humble_sqlite3":
        assert "/vehicle/wheel_ticks" not in copied
        assert any(n.startswith(f"/vehicle/wheel_ticks ({CUSTOM_TYPE}) not copied") for n in summary["notes"])
    else:
        assert copied["/vehicle/wheel_ticks"] == 20


def a_second_type_on(topic: str, store: Any, types: Any) -> Callable[[Writer], Callable[[int, float, int], None]]:
    """``topic`` recorded a second time with std_msgs/String (two recordings merged into one bag)."""
    def extra(writer: Writer) -> Callable[[int, float, int], None]:
        conn = writer.add_connection(topic, "std_msgs/msg/String", typestore=store)

        def write(i: int, t: float, ns: int) -> None:
            writer.write(conn, ns + 20, store.serialize_cdr(msgconv.build_string(types, "not a sensor message"),
                                                            "std_msgs/msg/String"))
        return write
    return extra


@pytest.mark.parametrize(("topic", "own_type"), [("/camera/image", "sensor_msgs/msg/Image"),
                                                  ("/odom", "nav_msgs/msg/Odometry")])
def test_a_topic_recorded_with_two_types_reads_the_roles_type_and_copies_both(setup, store, types, tmp_path, capsys,
                                                                              topic, own_type):
    bag = write_drive(tmp_path / "bag", store, types, extra=a_second_type_on(topic, store, types))
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0, capsys.readouterr().err
    assert summary["frames"] == 20 and summary["frames_missed"] == 0
    assert not summary["warnings"].get("bad_image") and not summary["warnings"].get("bad_odometry")
    assert any(n.startswith(f"{topic} is also recorded as std_msgs/msg/String") for n in summary["notes"])
    with AnyReader([tmp_path / "out" / "bag"]) as reader:
        copied = [c for c in reader.connections if c.topic == topic]
        assert sorted((c.msgtype, c.msgcount) for c in copied) == sorted([("std_msgs/msg/String", 20),
                                                                          (own_type, 20)])
        for conn, _, raw in reader.messages(connections=copied):  # every copied message decodes as its type
            reader.deserialize(raw, conn.msgtype)


# ------------------------------------------------------------------------------------------------ import
@pytest.mark.parametrize("topic", ["/camera/image", "/odom"])
def test_the_rosbag_import_reads_the_roles_type_of_a_topic_recorded_with_two(store, types, tmp_path, topic):
    from regionadapt_ros.adaptation.importers import RosbagImportConfig, import_rosbag

    bag = write_drive(tmp_path / "bag", store, types, seconds=4.0, extra=a_second_type_on(topic, store, types))
    cfg = RosbagImportConfig(use_lidar=False, command_source="odometry")
    result = import_rosbag(bag, tmp_path / "ds", "two_types", cfg, progress=False)
    assert result.n == 40
    meta_topics = result.meta["topics"]
    assert meta_topics["camera"] == {"topic": "/camera/image", "type": "sensor_msgs/msg/Image", "messages": 40}
    assert meta_topics["speed"] == {"topic": "/odom", "type": "nav_msgs/msg/Odometry", "messages": 40}


# ------------------------------------------------------------------------------------------------ score
def write_carla_drive(path: Path, store: Any, types: Any, *, frame: str = "map", stamped: bool = True) -> Path:
    """The ego's odometry as the CARLA bridge records it at 20 Hz, 10 m/s along x for 100 m."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        odom = writer.add_connection("/carla/ego_vehicle/odometry", "nav_msgs/msg/Odometry", typestore=store)
        for i in range(240):
            t = 500.0 + 0.05 * i
            x = min(100.0, 0.5 * i)
            msg = msgconv.build_odometry(types, 10.0 if x < 100.0 else 0.0, t if stamped else 0.0, frame,
                                         "ego_vehicle", x, 0.0, 0.0)
            writer.write(odom, int(t * 1e9), store.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
    return path


@pytest.mark.parametrize(("frame", "stamped", "error"), [
    ("odom", True, "240 odometry message(s) in frame 'odom', not 'map'"),
    ("map", False, "240 odometry message(s) with a zero header stamp skipped"),
])
def test_score_refuses_odometry_it_cannot_place_on_the_route(store, types, tmp_path, capsys, frame, stamped, error):
    """Odometry in another frame than the route's map frame, or without stamps, would be scored as if it were a
    drive along the route (a perfect or a failed score that means nothing): it is refused, naming why."""
    route = tmp_path / "route.csv"
    route.write_text("x,y\n" + "".join(f"{x},0.0\n" for x in range(0, 101, 5)))
    good = write_carla_drive(tmp_path / "good", store, types)
    assert main(["score", str(good), "--route", str(route)]) == 0
    assert "route completion 1.000" in capsys.readouterr().out
    bag = write_carla_drive(tmp_path / "bag", store, types, frame=frame, stamped=stamped)
    assert main(["score", str(bag), "--route", str(route)]) == 1
    err = capsys.readouterr().err
    assert "/carla/ego_vehicle/odometry has no usable messages" in err and error in err


# ------------------------------------------------------------------------------------------------ compression
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_message_compressed_storage_file_given_alone_is_refused_naming_the_fix(setup, store, types, tmp_path,
                                                                                capsys, storage):
    """``--compression-mode message``: the directory replays (its metadata.yaml says how to decompress); its
    storage file alone would hand out compressed bytes, so every command refuses it with the fix."""
    bag = write_camera_bag(tmp_path / "bag", store, types, storage=storage, mode=CompressionMode.MESSAGE)
    code, summary = replay(setup, bag, tmp_path / "out")
    assert code == 0 and summary["frames"] == 10 and not summary["warnings"].get("undecodable_message")
    single = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    route = tmp_path / "route.csv"
    route.write_text("x,y\n0,0\n100,0\n")
    for argv in (["replay", str(single), "--out", str(tmp_path / "out2"), "--regions-config", str(setup["yaml"]),
                  "--geofences", str(setup["fences"]), "--no-progress", "--no-report"],
                 ["score", str(single), "--route", str(route)],
                 ["data", "import", "rosbag", str(single), "--region", "x", "--out", str(tmp_path / "ds"),
                  "--no-progress"]):
        capsys.readouterr()
        assert main(argv) == 1, argv[0]
        err = capsys.readouterr().err
        assert f"{single}: its messages are zstd-compressed" in err and "open the bag directory" in err


# ------------------------------------------------------------------------------------------------ stale metadata
def stale_metadata(bag: Path, how: str) -> None:
    """Rewrite ``metadata.yaml`` as one written before the recording's messages ("killed": no messages, no
    duration) or as a hand edit leaves it ("edited": a start 1000 s later, a count off by one)."""
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    if how == "killed":
        info["message_count"] = 0
        info["duration"]["nanoseconds"] = 0
        for topic in info["topics_with_message_count"]:
            topic["message_count"] = 0
    else:
        info["starting_time"]["nanoseconds_since_epoch"] += 1000 * 10**9
        info["topics_with_message_count"][0]["message_count"] += 1
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))


@pytest.mark.parametrize("how", ["killed", "edited"])
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_with_stale_metadata_replays_on_the_storages_own_times_and_says_so(setup, store, types, tmp_path,
                                                                                 how, storage):
    bag = write_drive(tmp_path / "bag", store, types, storage=storage, seconds=3.0)
    code, good = replay(setup, bag, tmp_path / "good")
    assert code == 0 and not any("stale" in n for n in good["notes"])
    stale_metadata(bag, how)
    code, summary = replay(setup, bag, tmp_path / "stale")
    assert code == 0
    for key in ("frames", "duration_s", "t_offset_s", "missed_frames", "late_frames", "region_switches"):
        assert summary.get(key) == good.get(key), key
    assert summary["t_offset_s"] == pytest.approx(1000.0)
    said = "no messages" if how == "killed" else "91 messages over 2.900 s"
    assert any(n.startswith(f"metadata.yaml is stale: it says {said}, the storage holds 90 messages over 2.900 s")
               for n in summary["notes"]), summary["notes"]


def test_the_rosbag_import_counts_what_the_storage_holds_when_metadata_says_nothing(tmp_path, capsys):
    from test_import_rosbag import write_drive_bag

    bag = write_drive_bag(tmp_path / "bag", storage="mcap")
    stale_metadata(bag.path, "killed")
    assert main(["data", "import", "rosbag", str(bag.path), "--region", "x", "--out", str(tmp_path / "ds"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "note: metadata.yaml is stale: it says no messages" in out
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["topics"]["camera"]["messages"] == 40 and meta["bag_notes"]


def test_bag_extent_of_a_consistent_bag_is_what_the_reader_says(store, types, tmp_path):
    from regionadapt_ros.core.bag_storage import bag_extent, open_bag
    from regionadapt_ros.core.errors import DataError

    bag = write_drive(tmp_path / "bag", store, types, seconds=1.0)
    reader = open_bag(bag, store, DataError)
    try:
        extent = bag_extent(reader, bag)
        assert extent.note is None and (extent.start_ns, extent.end_ns) == (reader.start_time, reader.end_time)
        assert extent.message_count == 30 and extent.count_of(reader.connections) == 30
        assert extent.counts[("/camera/image", "sensor_msgs/msg/Image")] == 10
    finally:
        reader.close()
