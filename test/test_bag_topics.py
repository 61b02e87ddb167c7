"""One rule for which of a bag's topics plays a role, followed by ``replay`` and ``data import rosbag`` alike:
a named topic, else the usual name, else the only topic of the role's preferred type; a too-common type only
on a topic named for the role; several candidates refused with the list. The bags are real rosbag2 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from test_import_rosbag import T0, write_drive_bag

from regionadapt_ros.adaptation.importers.rosbag import RosbagImportConfig, import_rosbag
from regionadapt_ros.adaptation.importers.rosbag.topics import ROLES as IMPORT_ROLES
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_topics import BagTopics
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.replay_topics import ROLES as REPLAY_ROLES
from regionadapt_ros.replay_topics import choose_topics


def bag_of(path: Path, topics: dict[str, str]) -> list:
    """A bag with one message on each topic (topic → type), and its connections as rosbags reads them."""
    store = msgconv.rosbags_typestore()
    types = msgconv.rosbags_types(store)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, msgtype in topics.items():
            conn = writer.add_connection(topic, msgtype, typestore=store)
            msg = {"sensor_msgs/msg/Image": lambda: msgconv.build_image(types, np.zeros((4, 4, 3), np.uint8), "rgb8",
                                                                         T0),
                   "std_msgs/msg/Float32": lambda: msgconv.build_float32(types, 1.0),
                   "nav_msgs/msg/Odometry": lambda: msgconv.build_odometry(types, 1.0, T0),
                   TWIST_STAMPED: lambda: msgconv.build_twist_stamped(types, 1.0, 0.0, T0),
                   "std_msgs/msg/String": lambda: msgconv.build_string(types, "x")}[msgtype]()
            writer.write(conn, int(T0 * 1e9), store.serialize_cdr(msg, msgtype))
    with AnyReader([path], default_typestore=store) as reader:
        return list(reader.connections)


IMAGE = "sensor_msgs/msg/Image"
FLOAT32 = "std_msgs/msg/Float32"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"


@pytest.mark.parametrize(("topics", "camera", "how"), [
    ({"/camera/image": IMAGE, "/camera/rear": IMAGE}, "/camera/image", "default"),
    ({"/front/rgb": IMAGE, "/odom": "nav_msgs/msg/Odometry"}, "/front/rgb", "only"),
])
def test_replay_and_import_choose_the_same_camera(tmp_path, topics, camera, how):
    conns = bag_of(tmp_path / "bag", topics)
    for roles in (REPLAY_ROLES, IMPORT_ROLES):
        chosen = BagTopics.of(tmp_path / "bag", conns).choose(roles["camera"], None, required=True)
        assert (chosen.topic, chosen.how) == (camera, how)
    assert choose_topics(tmp_path / "bag", conns, {"camera": None}).topic("camera") == camera


def test_several_candidates_and_no_usual_name_are_refused_with_the_list_by_both(tmp_path):
    conns = bag_of(tmp_path / "bag", {"/front/rgb": IMAGE, "/rear/rgb": IMAGE})
    for roles in (REPLAY_ROLES, IMPORT_ROLES):
        with pytest.raises(DataError, match=r"several camera topics of type sensor_msgs/msg/Image: /front/rgb, "
                                            r"/rear/rgb; choose one with --camera-topic"):
            BagTopics.of(tmp_path / "bag", conns).choose(roles["camera"], None, required=True)


def test_a_float32_is_the_speed_only_on_a_topic_named_for_it(tmp_path):
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, "/perception/obstacle_distance": FLOAT32,
                                      "/vehicle/speed": FLOAT32})
    for roles in (REPLAY_ROLES, IMPORT_ROLES):
        topics = BagTopics.of(tmp_path / "bag", conns)
        assert topics.choose(roles["speed"], None).topic == "/vehicle/speed"
    only_other = bag_of(tmp_path / "other", {"/camera/image": IMAGE, "/perception/obstacle_distance": FLOAT32})
    with pytest.raises(DataError, match=r"no speed topic \(nav_msgs/msg/Odometry or std_msgs/msg/Float32 or "
                                        r"geometry_msgs/msg/TwistStamped; default '/odom', or name it with "
                                        r"--speed-topic\); "
                                        r"the bag has: /camera/image"):
        BagTopics.of(tmp_path / "other", only_other).choose(IMPORT_ROLES["speed"], None, required=True)
    named = BagTopics.of(tmp_path / "other", only_other).choose(IMPORT_ROLES["speed"],
                                                                "/perception/obstacle_distance")
    assert (named.topic, named.how) == ("/perception/obstacle_distance", "requested")  # a user may insist


@pytest.mark.parametrize("command", ["/twist_cmd", "/vehicle/cmd_twist", "/control/target_twist",
                                     "/vehicle/speed_command", "/planning/desired_speed"])
def test_a_command_named_twist_or_speed_is_not_the_speed(tmp_path, command):
    # Autoware.AI's /twist_cmd is a TwistStamped command; a set point is not the vehicle's speed either.
    msgtype = FLOAT32 if "speed" in command else TWIST_STAMPED
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, command: msgtype})
    for role in ("speed", "twist"):
        assert BagTopics.of(tmp_path / "bag", conns).choose(REPLAY_ROLES[role], None) is None
    with pytest.raises(DataError, match="no speed topic"):
        BagTopics.of(tmp_path / "bag", conns).choose(IMPORT_ROLES["speed"], None, required=True)
    # Beside another topic so named, it is one of several: a stack may name another command plainly
    # (Autoware.AI's /twist_raw beside /twist_cmd), so the other is not taken by itself.
    other = "/vehicle/speed" if msgtype == FLOAT32 else "/twist_raw"
    conns = bag_of(tmp_path / "both", {"/camera/image": IMAGE, command: msgtype, other: msgtype})
    with pytest.raises(DataError, match=rf"several speed topics of type {msgtype}: .*{other}"):
        BagTopics.of(tmp_path / "both", conns).choose(IMPORT_ROLES["speed"], None, required=True)
    # The replay's twist role has the vehicle interface's usual name: there it is chosen by name.
    conns = bag_of(tmp_path / "dbw", {"/camera/image": IMAGE, "/vehicle/twist_cmd": TWIST_STAMPED,
                                      "/vehicle/twist": TWIST_STAMPED})
    assert choose_topics(tmp_path / "dbw", conns, {}).topic("twist") == "/vehicle/twist"


def _import_speed(path: Path, conns: list, **config) -> str:
    from regionadapt_ros.adaptation.importers.rosbag.importer import _speed_topic
    from regionadapt_ros.core.bag_storage import BagExtent

    topics = BagTopics.of(path, conns)
    return _speed_topic(topics, BagExtent(0, 0), RosbagImportConfig(**config)).topic


@pytest.mark.parametrize(("topics", "source", "topic"), [
    ({"/vehicle/speed": FLOAT32, "/vehicle/twist": TWIST_STAMPED}, "speed", "/vehicle/speed"),
    ({"/vehicle/speed": FLOAT32, "/vehicle/twist": TWIST_STAMPED, "/odom": "nav_msgs/msg/Odometry"}, "odom", "/odom"),
    # Dataspeed's dbw: the twist by its usual name, beside its command
    ({"/vehicle/twist": TWIST_STAMPED, "/vehicle/twist_cmd": TWIST_STAMPED}, "twist", "/vehicle/twist"),
])
def test_replay_and_import_read_the_same_speed_of_a_bag_with_several(tmp_path, topics, source, topic):
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, **topics})
    replay = choose_topics(tmp_path / "bag", conns, {})
    assert (replay.speed_source, replay.topic(source)) == (source, topic)
    assert _import_speed(tmp_path / "bag", conns) == topic


@pytest.mark.parametrize("others", [
    {"/a/twist": TWIST_STAMPED, "/b/twist": TWIST_STAMPED},
    {"/vehicle/speed": FLOAT32, "/vehicle/speed_cmd": FLOAT32},
    {"/vehicle/twist": FLOAT32},  # the usual twist name recorded with another type
])
def test_a_speed_input_the_import_does_not_read_cannot_refuse_the_bag(tmp_path, others):
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, "/odom": "nav_msgs/msg/Odometry", **others})
    assert _import_speed(tmp_path / "bag", conns) == "/odom"


def test_the_imports_refusals_name_its_own_option(tmp_path):
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, "/a/odometry": "nav_msgs/msg/Odometry",
                                      "/b/odometry": "nav_msgs/msg/Odometry"})
    with pytest.raises(DataError, match=r"several speed topics of type nav_msgs/msg/Odometry: /a/odometry, "
                                        r"/b/odometry; choose one with --speed-topic"):
        _import_speed(tmp_path / "bag", conns)


def test_commands_derived_from_odometry_take_the_speed_that_has_a_yaw_rate(tmp_path):
    conns = bag_of(tmp_path / "bag", {"/camera/image": IMAGE, "/vehicle/speed": FLOAT32,
                                      "/vehicle/twist": TWIST_STAMPED})
    assert _import_speed(tmp_path / "bag", conns, command_source="odometry") == "/vehicle/twist"
    only_float = bag_of(tmp_path / "float", {"/camera/image": IMAGE, "/vehicle/speed": FLOAT32})
    with pytest.raises(DataError, match=r"no speed topic \(nav_msgs/msg/Odometry or geometry_msgs/msg/TwistStamped"):
        _import_speed(tmp_path / "float", only_float, command_source="odometry")


def test_a_named_topic_of_another_type_is_refused_naming_both(tmp_path):
    conns = bag_of(tmp_path / "bag", {"/camera/image": "std_msgs/msg/String"})
    with pytest.raises(DataError, match=r"camera topic '/camera/image' has type std_msgs/msg/String, expected "
                                        r"sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage; name the camera "
                                        r"topic with --camera-topic"):
        BagTopics.of(tmp_path / "bag", conns).choose(IMPORT_ROLES["camera"], None, required=True)
    with pytest.raises(DataError, match=r"no camera topic '/cam' \(--camera-topic\); the bag has: /camera/image "
                                        r"\(std_msgs/msg/String\)"):
        BagTopics.of(tmp_path / "bag", conns).choose(IMPORT_ROLES["camera"], "/cam", required=True)
    assert BagTopics.of(tmp_path / "bag", conns).choose(IMPORT_ROLES["lidar"], "") is None  # disabled


def test_the_import_no_longer_takes_any_float32_for_the_speed(tmp_path):
    """A drive whose speed is a Float32 on a topic not named for it: refused, where the import used to read
    whatever Float32 the bag held as the speed; named, it imports."""
    bag = write_drive_bag(tmp_path / "bag", camera="compressed", speed="float32", command="carla", lidar=False)
    import_rosbag(bag.path, tmp_path / "ds", "r", progress=False)      # /carla/ego/speedometer: named for it
    renamed = tmp_path / "renamed"
    store = msgconv.rosbags_typestore()
    with AnyReader([bag.path], default_typestore=store) as reader, \
            Writer(renamed, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        out = {c.id: writer.add_connection("/carla/ego/gauge" if c.topic == "/carla/ego/speedometer" else c.topic,
                                           c.msgtype, typestore=store) for c in reader.connections}
        for conn, ns, raw in reader.messages():
            writer.write(out[conn.id], ns, raw)
    with pytest.raises(DataError, match=r"no speed topic \(nav_msgs/msg/Odometry or "
                                        r"std_msgs/msg/Float32 or geometry_msgs/msg/TwistStamped"):
        import_rosbag(renamed, tmp_path / "ds2", "r", progress=False)
    result = import_rosbag(renamed, tmp_path / "ds3", "r", RosbagImportConfig(speed_topic="/carla/ego/gauge"),
                           progress=False)
    assert result.meta["topics"]["speed"]["topic"] == "/carla/ego/gauge"
    assert "camera: /camera/image/compressed (the bag's only sensor_msgs/msg/CompressedImage topic)" in \
        result.meta["bag_notes"]
