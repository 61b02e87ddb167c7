"""The ROS-less replay runner on real rosbag2 files: round trip, report, and every bad input of the issue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import write_bundle_set
from risk_support import ScriptedObstacleBackend, approach
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from regionadapt_ros.adaptation.demo_drive import write_demo_drive
from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.control import VehicleLimits
from regionadapt_ros.replay import ReplayConfig, ReplayRunner

ROUTE = (("highway", 3.0), ("mountain", 6.0), ("left_hand", 3.0))


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    bundles = write_bundle_set(root, signed=True)
    d = write_demo_drive(root / "bag", root / "fences.geojson", route=ROUTE, progress=False, image_size=(96, 160))
    return {"root": root, "yaml": bundles["yaml"], "bag": d.bag, "fences": d.geofences, "frames": d.frames}


def replay(drive, bag, out, *extra):
    summary = out / "summary.json"
    code = main(["replay", str(bag), "--out", str(out), "--regions-config", str(drive["yaml"]), "--geofences",
                 str(drive["fences"]), "--summary-json", str(summary), "--no-progress", *extra])
    return code, (json.loads(summary.read_text()) if summary.exists() else None)


def topic_counts(bag: Path) -> dict[str, int]:
    with AnyReader([bag], default_typestore=msgconv.rosbags_typestore()) as reader:
        return {c.topic: c.msgcount for c in reader.connections}


def test_replay_round_trip(drive, tmp_path):
    code, s = replay(drive, drive["bag"], tmp_path / "run")
    assert code == 0
    assert s["frames"] == drive["frames"] and s["dropped_frames"] == 0  # "late" frames are timing: bench/
    assert s["commands"] >= s["frames"]
    assert s["regions"] == [r for r, _ in ROUTE]
    assert s["swaps"] == len(ROUTE)  # base → highway at start, then two crossings
    assert s["region_changes"] == len(ROUTE) - 1 and s["prefetched_changes"] == s["region_changes"]
    assert [e["acquisition"] for e in s["swap_events"]] == [True] + [False] * (len(ROUTE) - 1)
    assert 0 < s["latency_ms_p50"] <= s["latency_ms_p99"]
    report = Path(s["report"])
    assert report.is_file() and "route.png" in report.read_text()
    for png in ("route.png", "commands.png", "latency.png"):
        assert (report.parent / png).stat().st_size > 5000
    counts = topic_counts(Path(s["out_bag"]))
    inputs = topic_counts(drive["bag"])
    for topic, n in inputs.items():
        assert counts[topic] == n  # every input message is in the output bag
    assert counts["/control/command"] == s["commands"]
    assert counts["/regionadapt/active_region"] >= len(ROUTE)
    assert counts["/diagnostics"] >= 2 * int(s["duration_s"])
    assert counts["/perception/traffic_light"] == s["frames"]
    # the collision risk: one message per frame, its plot and its counts in the report
    assert counts["/perception/risk"] == s["frames"]
    assert (report.parent / "risk.png").stat().st_size > 5000 and "Collision risk" in report.read_text()
    assert {"emergency_brakes", "risk_warn_frames", "min_ttc_s", "brake_episodes"} <= set(s)


def test_output_bag_commands_are_ackermann_with_image_stamps(drive, tmp_path):
    _code, s = replay(drive, drive["bag"], tmp_path / "run")
    store = msgconv.rosbags_typestore()
    with AnyReader([Path(s["out_bag"])], default_typestore=store) as reader:
        images = [c for c in reader.connections if c.topic == "/camera/image"]
        cmds = [c for c in reader.connections if c.topic == "/control/command"]
        assert cmds[0].msgtype == "ackermann_msgs/msg/AckermannDriveStamped"
        image_stamps = {msgconv.stamp_to_s(reader.deserialize(raw, c.msgtype).header)
                        for c, _, raw in reader.messages(images)}
        cmd_stamps = [msgconv.stamp_to_s(reader.deserialize(raw, c.msgtype).header)
                      for c, _, raw in reader.messages(cmds)]
    # one command per frame carries that frame's image stamp (stop commands from the timer may share a stamp)
    assert len(image_stamps & set(cmd_stamps)) == s["frames"] == len(image_stamps)


def test_carla_command_type(drive, tmp_path):
    code, s = replay(drive, drive["bag"], tmp_path / "run", "--command-type", "carla")
    assert code == 0
    with AnyReader([Path(s["out_bag"])], default_typestore=msgconv.rosbags_typestore()) as reader:
        cmds = [c for c in reader.connections if c.topic == "/control/command"]
        assert cmds[0].msgtype == "carla_msgs/msg/CarlaEgoVehicleControl"


@pytest.mark.parametrize("guard", [True, False])
def test_an_approaching_obstacle_is_braked_for_and_marked_in_the_bag_and_the_report(drive, tmp_path, guard):
    # the obstacle ahead is scripted: nothing for 2 s, then 20 m closing at 5 m/s (gone once reached)
    backend = ScriptedObstacleBackend(approach(20, 20.0, 5.0, 10.0))
    out = tmp_path / "run"
    cfg = ReplayConfig(regions_file=drive["yaml"], geofence_file=drive["fences"], out_bag=out / "bag",
                       report_dir=out / "report", progress=False, emergency_brake=guard)
    s = ReplayRunner(cfg, backend=backend).run(drive["bag"])
    assert s.frames == drive["frames"]
    assert (s.emergency_brakes, s.suppressed_emergency_brakes) == ((1, 0) if guard else (0, 1))
    assert s.risk_warn_frames > 0 and s.risk_brake_frames > 0 and s.min_ttc_s < 1.2
    (episode,) = s.brake_episodes
    assert episode["applied"] is guard and episode["reason"].startswith("TTC")
    assert episode["frames"] == s.risk_brake_frames == (s.emergency_brake_frames if guard else episode["frames"])
    page = Path(s.report).read_text()
    assert ("override" if guard else "recorded (guard off)") in page and html_escaped(episode["reason"]) in page
    # in the bag: perception/risk at level 2 exactly on the frames whose commands brake as hard as allowed
    store = msgconv.rosbags_typestore()
    with AnyReader([Path(s.out_bag)], default_typestore=store) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        risk = {msgconv.stamp_to_s(m.header): m.vector for m in (
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([by_topic["/perception/risk"]]))}
        commands = {msgconv.stamp_to_s(m.header): m.drive for m in (
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages([by_topic["/control/command"]]))}
    braking = sorted(t for t, v in risk.items() if v.z == 2.0)
    assert len(braking) == s.risk_brake_frames and risk[braking[0]].x <= 1.2
    full = VehicleLimits().max_decel
    hard = sorted(t for t, d in commands.items() if abs(abs(d.acceleration) - full) < 1e-6)
    assert (hard == braking) if guard else not (set(hard) & set(braking))


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


# ------------------------------------------------------------------------------------------ bad input
def small_bag(path: Path, stamps: list[float], log_times: list[float] | None = None, camera_type: str = "image",
              with_camera: bool = True) -> Path:
    """A bag of small camera frames (+ odometry) with the given header stamps and log times."""
    store = msgconv.rosbags_typestore()
    types = msgconv.rosbags_types(store)
    log_times = log_times or stamps
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    rng = np.random.default_rng(0)
    with writer:
        odom = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        cam = None
        if with_camera:
            msgtype = "sensor_msgs/msg/Image" if camera_type == "image" else "std_msgs/msg/String"
            cam = writer.add_connection("/camera/image", msgtype, typestore=store)
        for stamp, log in zip(stamps, log_times, strict=True):
            ns = int(log * 1e9)
            writer.write(odom, ns, store.serialize_cdr(msgconv.build_odometry(types, 5.0, stamp),
                                                       "nav_msgs/msg/Odometry"))
            if cam is not None:
                if camera_type == "image":
                    msg = msgconv.build_image(types, rng.integers(0, 255, (48, 80, 3), dtype=np.uint8), "rgb8",
                                              stamp, "cam")
                    writer.write(cam, ns, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
                else:
                    writer.write(cam, ns, store.serialize_cdr(msgconv.build_string(types, "x"),
                                                              "std_msgs/msg/String"))
    return path


def test_missing_bag_path(drive, tmp_path, capsys):
    code, _ = replay(drive, tmp_path / "nope", tmp_path / "run")
    assert code == 1
    err = capsys.readouterr().err
    assert "nope: bag path does not exist" in err and "Traceback" not in err


def test_truncated_bag(drive, tmp_path, capsys):
    bag = small_bag(tmp_path / "bag", [100.0 + 0.1 * i for i in range(40)])
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    code, _ = replay(drive, bag, tmp_path / "run")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{bag}: {mcap.name} ends before its MCAP footer" in err and "regionadapt bag recover" in err


def test_bag_without_camera_topic(drive, tmp_path, capsys):
    bag = small_bag(tmp_path / "bag", [1.0, 1.1], with_camera=False)
    code, _ = replay(drive, bag, tmp_path / "run")
    err = capsys.readouterr().err
    assert code == 1 and "no camera topic (sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage" in err
    assert "--camera-topic" in err and "/odom (nav_msgs/msg/Odometry)" in err


def test_unknown_message_type_on_configured_topic(drive, tmp_path, capsys):
    bag = small_bag(tmp_path / "bag", [1.0, 1.1], camera_type="string")
    code, _ = replay(drive, bag, tmp_path / "run")
    err = capsys.readouterr().err
    assert code == 1 and "'/camera/image' has type std_msgs/msg/String" in err


def test_timestamps_going_backwards(drive, tmp_path):
    stamps = [100.0 + 0.1 * i for i in range(20)] + [99.0 + 0.1 * i for i in range(20)]  # header stamps restart
    logs = [100.0 + 0.1 * i for i in range(40)]                                         # log time moves on
    code, s = replay(drive, small_bag(tmp_path / "bag", stamps, logs), tmp_path / "run")
    assert code == 0
    assert s["frames"] == 40 and s["dropped_frames"] == 0 and s["commands"] >= 40
    assert s["clock_jumps"] >= 1


def test_looped_bag_clock_jump_resets_watchdogs(drive, tmp_path):
    stamps = [100.0 + 0.1 * i for i in range(30)]
    # played three times: the clock (and the stamps) jump back 3 s at each restart
    code, s = replay(drive, small_bag(tmp_path / "bag", stamps), tmp_path / "run", "--loop", "3")
    assert code == 0
    assert s["frames"] == 90 and s["dropped_frames"] == 0
    # one stop before the very first frame (no camera yet), none caused by the jump
    assert s["stop_commands"] <= 1
    assert s["clock_jumps"] >= 1


def test_a_bag_holding_the_outputs_already_is_replayed_with_its_own_kept_beside(drive, tmp_path):
    """A bag recorded on the vehicle (or a replay's output) holds /control/command and the region topics: the
    replay writes its own, and keeps the recorded ones under /recorded for comparison."""
    assert replay(drive, drive["bag"], tmp_path / "run1")[0] == 0
    recorded = topic_counts(tmp_path / "run1" / "bag")
    code, again = replay(drive, tmp_path / "run1" / "bag", tmp_path / "run2")
    assert code == 0, again
    counts = topic_counts(tmp_path / "run2" / "bag")
    assert counts["/recorded/control/command"] == recorded["/control/command"]
    assert counts["/control/command"] == again["commands"]
    assert any("/control/command recorded in the bag is copied as /recorded/control/command" in n
               for n in again["notes"])
    # a replay of that replay: the first recording stays apart from the second
    code, third = replay(drive, tmp_path / "run2" / "bag", tmp_path / "run3")
    assert code == 0, third
    counts3 = topic_counts(tmp_path / "run3" / "bag")
    assert counts3["/recorded/control/command"] == recorded["/control/command"]
    assert counts3["/recorded/recorded/control/command"] == counts["/control/command"]


def test_a_looped_replay_is_paced_over_every_loop(drive, tmp_path):
    """At --rate 1 two loops of a 3 s bag take about 6 s of wall time, and the summary's duration is 6 s: the
    pacing compared each loop's own (restarting) time with the wall time since the start."""
    clock = [0.0]
    bag = small_bag(tmp_path / "bag", [100.0 + 0.1 * i for i in range(30)])
    cfg = ReplayConfig(regions_file=drive["yaml"], geofence_file=drive["fences"], rate=1.0, loops=2,
                       progress=False)
    summary = ReplayRunner(cfg, wall_clock=lambda: clock[0],
                           sleep=lambda s: clock.__setitem__(0, clock[0] + s)).run(bag)
    assert summary.duration_s == pytest.approx(2 * 2.9, abs=0.01)
    assert clock[0] == pytest.approx(summary.duration_s, abs=0.2)  # slept through both loops


def test_a_replay_stopped_by_ctrl_c_leaves_an_output_bag_that_says_it_was_interrupted(drive, tmp_path, capsys):
    from regionadapt_ros.core.bag_storage import recording_state

    def ctrl_c_at_frame_10(frame: int) -> None:
        if frame == 10:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    cfg = ReplayConfig(regions_file=drive["yaml"], geofence_file=drive["fences"], out_bag=out / "bag",
                       report_dir=out / "report", progress=False)
    with pytest.raises(KeyboardInterrupt):
        ReplayRunner(cfg, backend=ScriptedObstacleBackend(ctrl_c_at_frame_10)).run(drive["bag"])
    assert recording_state(out / "bag") == "interrupted (Ctrl-C)"
    counts = topic_counts(out / "bag")  # readable, and holds what was replayed before the stop
    assert 0 < counts["/perception/traffic_light"] < drive["frames"]
    capsys.readouterr()
    assert main(["bag", "info", str(out / "bag")]) == 0
    assert "recording: interrupted (Ctrl-C)" in capsys.readouterr().out
    code, s = replay(drive, drive["bag"], tmp_path / "whole")
    assert code == 0 and recording_state(Path(s["out_bag"])) == "complete"
