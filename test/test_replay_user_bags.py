"""Replaying a user's own bag: the topics are found when there is one of a kind, the resolver takes the options
``geofence check`` takes, and the run says what happened (region switches, failed loads, frames without lidar
and why, GNSS or none), in bag-relative, rounded time. Bags are written here with rosbags (MCAP, and ROS 1
through rosbags' own converter)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from bundle_factory import write_bundle_set
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv

LAT0, LON0 = 37.0, -122.0
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(LAT0))


def lon_at(x_m: float) -> float:
    return LON0 + x_m / M_PER_DEG_LON


def fences(path: Path, bowtie: bool = False) -> Path:
    """One "highway" fence starting 100 m east of the start (a self-intersecting bow tie with ``bowtie``)."""
    x0, x1 = lon_at(100.0), lon_at(2000.0)
    y0, y1 = LAT0 - 0.01, LAT0 + 0.01
    ring = [[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]] if bowtie else \
        [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"region": "highway", "priority": 10},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


def write_bag(path: Path, store, types, *, seconds: float = 6.0, speed: float = 30.0,
              camera_until: float | None = None,
              camera_topics=("/camera/image",), gnss: bool = True, lidar: list[tuple[float, float]] | None = None,
              lidar_frame: str = "base_link", tf_static: bool = False, t0: float = 1000.0,
              lidar_ahead_m: float = 1.0, yaw_rate: float = 0.0) -> Path:
    """10 Hz: odometry at ``speed`` m/s east, GNSS fixes, camera frames (until ``camera_until``); ``lidar`` (log time,
    stamp) pairs of sweeps holding a box 20 m ahead; ``tf_static`` the nuScenes-like LIDAR_TOP transform, the lidar
    ``lidar_ahead_m`` ahead of base_link."""
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    rng = np.random.default_rng(0)
    with writer:
        odom = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        fix = writer.add_connection("/gnss/fix", "sensor_msgs/msg/NavSatFix", typestore=store) if gnss else None
        cams = [writer.add_connection(t, "sensor_msgs/msg/Image", typestore=store) for t in camera_topics]
        cloud = writer.add_connection("/lidar/points", "sensor_msgs/msg/PointCloud2", typestore=store) if lidar \
            else None
        if tf_static:
            tf = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store)
            ts = types("geometry_msgs/msg/TransformStamped")(
                header=msgconv.build_header(types, t0, "base_link"), child_frame_id="LIDAR_TOP",
                transform=types("geometry_msgs/msg/Transform")(
                    translation=msgconv.build_vector3(types, lidar_ahead_m, 0.0, 0.0),
                    # LIDAR_TOP: x right, y forward → base_link x forward, y left: a yaw of -90°
                    rotation=types("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=-math.sqrt(0.5),
                                                                    w=math.sqrt(0.5))))
            writer.write(tf, int(t0 * 1e9) + 5, store.serialize_cdr(types("tf2_msgs/msg/TFMessage")(transforms=[ts]),
                                                                     "tf2_msgs/msg/TFMessage"))
        for i in range(int(seconds * 10)):
            t = t0 + 0.1 * i
            ns = int(t * 1e9)
            writer.write(odom, ns, store.serialize_cdr(msgconv.build_odometry(types, speed, t, yaw_rate=yaw_rate),
                                                       "nav_msgs/msg/Odometry"))
            if fix is not None:
                msg = msgconv.build_navsatfix(types, LAT0, lon_at(speed * 0.1 * i), 10.0, t, h_std_m=1.0)
                writer.write(fix, ns, store.serialize_cdr(msg, "sensor_msgs/msg/NavSatFix"))
            if camera_until is None or t - t0 < camera_until:
                for cam in cams:
                    img = msgconv.build_image(types, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "rgb8", t,
                                              "cam")
                    writer.write(cam, ns + 10, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
        for log_t, stamp in lidar or []:
            box = np.array([[0.0, 20.0, -1.0, 0.5]] * 10, np.float32) if lidar_frame == "LIDAR_TOP" else \
                np.array([[20.0, 0.0, -1.0, 0.5]] * 10, np.float32)
            msg = msgconv.build_pointcloud2(types, box, ("x", "y", "z", "intensity"), t0 + stamp, lidar_frame)
            writer.write(cloud, int((t0 + log_t) * 1e9), store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_bags")
    bundles = write_bundle_set(root, signed=False, regions=("highway",))
    return {"root": root, "yaml": bundles["yaml"], "fences": fences(root / "fences.geojson")}


def replay(setup, bag: Path, out: Path, *extra: str, fence_file: Path | None = None, report: bool = False):
    summary = out / "summary.json"
    code = main(["replay", str(bag), "--out", str(out), "--regions-config", str(setup["yaml"]), "--geofences",
                 str(fence_file or setup["fences"]), "--json", str(summary), "--no-progress",
                 *([] if report else ["--no-report"]), *extra])
    return code, (json.loads(summary.read_text()) if summary.exists() else None)


def test_a_switch_with_no_frame_served_is_reported_and_times_are_bag_relative(setup, store, types, tmp_path,
                                                                              capsys):
    bag = write_bag(tmp_path / "bag", store, types, camera_until=2.0)  # the camera stops before the crossing
    code, s = replay(setup, bag, tmp_path / "run")
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert [(w["from"], w["to"], w["frames_served"]) for w in s["region_switches"]] == [("base", "highway", 0)]
    t_switch = s["region_switches"][0]["t"]
    assert 3.0 < t_switch < 5.5           # seconds since the bag's start, not 1e9-scale stamps
    assert "(no frame served in it)" in out and "regions crossed: base → highway" in out
    # rounded for people: no float in the summary has more than 3 decimals
    floats = [v for v in _walk(s) if isinstance(v, float)]
    assert floats and all(round(v, 3) == v for v in floats)
    assert "report: None" not in out and "e+09" not in out
    # the resolver takes geofence check's options: 200 m inside the fence before switching never happens here
    _, wide = replay(setup, bag, tmp_path / "wide", "--enter-margin", "200")
    assert wide["region_switches"] == []


def _walk(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def test_repair_is_offered_and_taken(setup, store, types, tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", store, types, seconds=3.0)
    bad = fences(tmp_path / "bowtie.geojson", bowtie=True)
    code, _ = replay(setup, bag, tmp_path / "a", fence_file=bad)
    err = capsys.readouterr().err
    assert code == 1 and "--repair" in err and "Traceback" not in err
    code, s = replay(setup, bag, tmp_path / "b", "--repair", fence_file=bad)
    assert code == 0 and s["frames"] == 30 and s["report"] is None


def test_the_only_camera_topic_is_found_and_two_are_refused(setup, store, types, tmp_path, capsys):
    bag = write_bag(tmp_path / "one", store, types, seconds=2.0, camera_topics=("/front/rgb",))
    code, s = replay(setup, bag, tmp_path / "a")
    out = capsys.readouterr().out
    assert code == 0 and s["topics"]["camera"] == "/front/rgb" and s["frames"] == 20
    assert "camera: /front/rgb (the bag's only sensor_msgs/msg/Image topic)" in out
    assert "lidar: none in the bag" in out

    bag = write_bag(tmp_path / "two", store, types, seconds=2.0, camera_topics=("/front/rgb", "/rear/rgb"))
    code, _ = replay(setup, bag, tmp_path / "b")
    err = capsys.readouterr().err
    assert code == 1 and "several camera topics of type sensor_msgs/msg/Image: /front/rgb, /rear/rgb" in err
    code, s = replay(setup, bag, tmp_path / "c", "--camera-topic", "/rear/rgb")
    assert code == 0 and s["topics"]["camera"] == "/rear/rgb"


def test_frames_without_lidar_say_why(setup, store, types, tmp_path, capsys):
    # the sweep for the frame at t=1.0 is stamped 1.02 but recorded after the image; the frame at 2.0 has none
    bag = write_bag(tmp_path / "bag", store, types, seconds=2.1, lidar=[(1.05, 1.02)])
    code, s = replay(setup, bag, tmp_path / "run", "--gnss-topic", "", report=True)
    out = capsys.readouterr().out
    assert code == 0
    assert s["camera_only_frames"] == s["frames"] - 1           # only the frame at 1.1 s had the sweep
    assert s["camera_only_reasons"] == {
        "no lidar sweep received yet": 9,
        "its sweep was recorded after the image (the bag is in receive order; the frame could not wait)": 2,
        "nearest sweep more than 0.15 s (lidar_max_age_s) from the image": 9,
    }
    assert {"t": 1.0, "why": "its sweep (stamped +0.020 s from the image) was recorded after it"} in \
        s["camera_only_examples"]
    assert "frames without lidar:" in out and "recorded after the image" in out
    assert "region switches: none (no GNSS in this bag" in out
    html = (Path(s["report"])).read_text()
    assert "no GNSS in this bag" in html and "Frames without lidar" in html


def test_failed_loads_are_reported_with_their_reason(setup, store, types, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(setup["root"] / "bundles", root / "bundles")
    (root / "bundles" / "highway" / "perception.safetensors").write_bytes(b"not a safetensors file")
    cfg = yaml.safe_load(setup["yaml"].read_text())
    (root / "regions.yaml").write_text(yaml.safe_dump(cfg))
    bag = write_bag(tmp_path / "bag", store, types)
    summary = tmp_path / "run" / "s.json"
    code = main(["replay", str(bag), "--out", str(tmp_path / "run"), "--regions-config", str(root / "regions.yaml"),
                 "--geofences", str(setup["fences"]), "--json", str(summary), "--no-progress", "--no-report"])
    out = capsys.readouterr().out
    s = json.loads(summary.read_text())
    assert code == 0 and s["failed_loads"] >= 1
    event = s["failed_load_events"][0]
    assert event["region"] == "highway" and "perception.safetensors" in event["reason"]
    assert "failed loads:" in out and "highway:" in out
    assert s["region_switches"][0]["to"] == "highway" and set(s["regions"]) == {"base"}


def test_clouds_in_the_sensor_frame_come_into_the_vehicle_frame_from_tf_static(setup, store, types, tmp_path,
                                                                              capsys):
    sweeps = [(0.1 * i + 0.01, 0.1 * i) for i in range(10)]
    bag = write_bag(tmp_path / "tf", store, types, seconds=1.0, lidar=sweeps, lidar_frame="LIDAR_TOP",
                    tf_static=True, gnss=False)
    code, s = replay(setup, bag, tmp_path / "a")
    out = capsys.readouterr().out
    assert code == 0 and s["lidar_frames"] == {"LIDAR_TOP": "/tf_static"}
    assert "lidar_frame_unknown" not in s["warnings"]
    assert "lidar frame 'LIDAR_TOP': into the vehicle frame with /tf_static" in out

    bag = write_bag(tmp_path / "no_tf", store, types, seconds=1.0, lidar=sweeps, lidar_frame="LIDAR_TOP",
                    gnss=False)
    code, s = replay(setup, bag, tmp_path / "b")
    out = capsys.readouterr().out
    assert code == 0 and s["lidar_frames"] == {"LIDAR_TOP": "unknown: used as it is"}
    assert s["warnings"]["lidar_frame_unknown"] == 1          # reported once, not per sweep
    assert "lidar frame 'LIDAR_TOP': no transform to the vehicle frame" in out

    code, s = replay(setup, bag, tmp_path / "c", "--lidar-extrinsic", "1", "0", "0", "0", "0", "-1.5707963")
    assert code == 0 and s["lidar_frames"] == {"LIDAR_TOP": "lidar_extrinsic"}
    # A bag whose vehicle frame is not base_link (the CARLA bridge's is the role name): named, its clouds are
    # the vehicle's.
    code, s = replay(setup, bag, tmp_path / "d", "--vehicle-frame", "LIDAR_TOP")
    assert code == 0 and s["lidar_frames"] == {"LIDAR_TOP": "vehicle frame"}
    assert "lidar_frame_unknown" not in s["warnings"]


def test_the_vehicle_s_steering_limit_bounds_the_yaw_rates_replay_takes(setup, store, types, tmp_path, capsys):
    # 0.8 rad/s at 2 m/s is a 2.5 m radius: a gyro fault for the default car (0.5 rad lock, 3.3 m with slip), a
    # reading for one that steers 0.7 rad (2.1 m).
    bag = write_bag(tmp_path / "tight", store, types, seconds=1.0, speed=2.0, yaw_rate=0.8, gnss=False)
    code, s = replay(setup, bag, tmp_path / "a")
    assert code == 0 and s["warnings"]["bad_yaw_rate"] == 10
    code, s = replay(setup, bag, tmp_path / "b", "--max-steering-angle", "0.7")
    assert code == 0 and "bad_yaw_rate" not in s["warnings"]
    assert replay(setup, bag, tmp_path / "c", "--max-steering-angle", "1.6")[0] == 1
    assert "max_steering_angle must be below pi/2" in capsys.readouterr().err


def test_the_import_takes_the_lidar_extrinsic_and_the_vehicle_frame_as_replay_does(setup, store, types, tmp_path,
                                                                                   capsys):
    sweeps = [(0.1 * i + 0.02, 0.1 * i + 0.02) for i in range(30)]
    bag = write_bag(tmp_path / "no_tf", store, types, seconds=3.0, lidar=sweeps, lidar_frame="LIDAR_TOP",
                    gnss=False)
    common = ["data", "import", "rosbag", str(bag), "--region", "r", "--command-source", "odometry", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a"), "--lidar-extrinsic", "1", "0", "0", "0", "0",
                 "-1.5707963"]) == 0
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["lidar_frames"] == {"LIDAR_TOP": "lidar_extrinsic"}
    assert "lidar frame 'LIDAR_TOP': into 'base_link' with lidar_extrinsic" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "b"), "--vehicle-frame", "LIDAR_TOP"]) == 0
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["lidar_frames"] == {"LIDAR_TOP": "vehicle frame"}
    assert main([*common, "--out", str(tmp_path / "c"), "--lidar-extrinsic", "100", "0", "0", "0", "0", "0"]) == 1
    assert "--lidar-extrinsic: puts the sensor 100 m from the vehicle frame's origin" in capsys.readouterr().err


def ros1_copy(bag: Path, dst: Path, store) -> Path:
    from rosbags.convert.converter import convert
    from rosbags.typesys import Stores, get_typestore

    convert([bag], dst, "sqlite3", 2, None, "file", store, get_typestore(Stores.ROS1_NOETIC), [], [], [], [])
    return dst


def test_a_ros1_bag_replays_into_a_rosbag2_output(setup, store, types, tmp_path):
    bag = ros1_copy(write_bag(tmp_path / "b2", store, types), tmp_path / "drive.bag", store)
    code, s = replay(setup, bag, tmp_path / "run")
    assert code == 0 and s["frames"] == 60 and s["region_switches"][0]["to"] == "highway"
    with AnyReader([Path(s["out_bag"])], default_typestore=msgconv.rosbags_typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        images = [c for c in reader.connections if c.topic == "/camera/image"]
        first = next(reader.messages(images))
        assert reader.deserialize(first[2], first[0].msgtype).width == 80   # re-serialised as CDR
    assert counts["/camera/image"] == 60 and counts["/control/command"] == s["commands"]


def test_geofence_check_reads_a_ros1_track_and_refuses_binary_csv(setup, store, types, tmp_path, capsys):
    bag = ros1_copy(write_bag(tmp_path / "b2", store, types), tmp_path / "track.bag", store)
    assert main(["geofence", "check", str(setup["fences"]), "--track", str(bag), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["track"]["fixes"] == 60 and [s["to"] for s in report["switches"]] == ["highway"]

    shutil.copy(bag, tmp_path / "track.csv")
    assert main(["geofence", "check", str(setup["fences"]), "--track", str(tmp_path / "track.csv")]) == 1
    err = capsys.readouterr().err
    assert "is a ROS 1 bag: name it *.bag" in err and "Traceback" not in err
    (tmp_path / "junk.csv").write_bytes(bytes(range(256)) * 4)
    assert main(["geofence", "check", str(setup["fences"]), "--track", str(tmp_path / "junk.csv")]) == 1
    err = capsys.readouterr().err
    assert ("is not a text CSV track" in err or "is not UTF-8 text" in err) and "UnicodeDecodeError" not in err
    assert "Traceback" not in err


def write_speed_bag(path: Path, store, types, topics: dict[str, tuple[str, float]], seconds: float = 1.5,
                    t0: float = 1000.0) -> Path:
    """10 Hz camera frames and, per entry of ``topics`` (topic → (type, speed)), one speed message per frame."""
    builders = {"nav_msgs/msg/Odometry": lambda v, t: msgconv.build_odometry(types, v, t),
                "std_msgs/msg/Float32": lambda v, t: msgconv.build_float32(types, v),
                "geometry_msgs/msg/TwistStamped": lambda v, t: msgconv.build_twist_stamped(types, v, 0.0, t)}
    rng = np.random.default_rng(0)
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image", "sensor_msgs/msg/Image", typestore=store)
        conns = {topic: (writer.add_connection(topic, msgtype, typestore=store), msgtype, v)
                 for topic, (msgtype, v) in topics.items()}
        for i in range(int(seconds * 10)):
            t = t0 + 0.1 * i
            for conn, msgtype, v in conns.values():
                writer.write(conn, int(t * 1e9), store.serialize_cdr(builders[msgtype](v, t), msgtype))
            img = msgconv.build_image(types, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "rgb8", t, "cam")
            writer.write(cam, int(t * 1e9) + 10, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
    return path


def _sensors_values(out: Path) -> dict[str, str]:
    with AnyReader([out / "bag"]) as reader:
        conns = [c for c in reader.connections if c.topic == "/diagnostics"]
        last = None
        for conn, _, raw in reader.messages(connections=conns):
            for status in reader.deserialize(raw, conn.msgtype).status:
                if status.name.endswith(": sensors"):
                    last = {kv.key: kv.value for kv in status.values}
    assert last is not None
    return last


ODOM, FLOAT32, TWIST = "nav_msgs/msg/Odometry", "std_msgs/msg/Float32", "geometry_msgs/msg/TwistStamped"


@pytest.mark.parametrize(("topics", "extra", "source", "speed"), [
    # A vehicle interface's twist, where the bag has neither odometry nor a speed; a TwistStamped command beside
    # it is not taken for the speed.
    ({"/vehicle/twist": (TWIST, 30.0), "/cmd_vel": (TWIST, 40.0)}, (), "twist", "30.00"),
    ({"/can/twist": (TWIST, 31.0)}, (), "twist", "31.00"),
    # Odometry wins over the others, as the node's default speed_source; the others are not read.
    ({"/odom": (ODOM, 10.0), "/vehicle/speed": (FLOAT32, 20.0), "/vehicle/twist": (TWIST, 30.0)}, (), "odom",
     "10.00"),
    ({"/vehicle/speed": (FLOAT32, 20.0), "/vehicle/twist": (TWIST, 30.0)}, (), "speed", "20.00"),
    # A topic named by its option wins.
    ({"/odom": (ODOM, 10.0), "/vehicle/twist": (TWIST, 30.0)}, ("--twist-topic", "/vehicle/twist"), "twist",
     "30.00"),
    ({"/odom": (ODOM, 10.0), "/vehicle/speed": (FLOAT32, 20.0)}, ("--speed-topic", "/vehicle/speed"), "speed",
     "20.00"),
])
def test_the_speed_comes_from_one_source_as_on_the_vehicle(setup, store, types, tmp_path, capsys, topics, extra,
                                                           source, speed):
    bag = write_speed_bag(tmp_path / "bag", store, types, topics)
    code, s = replay(setup, bag, tmp_path / "run", *extra)
    assert code == 0, capsys.readouterr().err
    values = _sensors_values(tmp_path / "run")
    assert (values["speed_source"], values["speed_mps"]) == (source, speed)
    assert s["frames"] == 15


def test_a_twist_command_alone_is_not_taken_for_the_speed(setup, store, types, tmp_path, capsys):
    bag = write_speed_bag(tmp_path / "bag", store, types, {"/cmd_vel": (TWIST, 40.0)})
    code, _ = replay(setup, bag, tmp_path / "run")
    err = capsys.readouterr().err
    assert code == 0, err
    assert _sensors_values(tmp_path / "run")["speed_mps"] == "none"
    assert main(["bag", "info", str(bag), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["replay_roles"]["twist"] is None and info["replay_roles"]["odom"] is None
