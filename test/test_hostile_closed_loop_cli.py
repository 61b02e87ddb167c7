"""`regionadapt score` and `regionadapt drive` against hostile recordings, route files and options: every bad input
gets a one-line error naming the file and the problem (exit 1), or is skipped and counted in the score's notes;
nothing is silently scored from values that are not numbers, and nothing reads a file without bound."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_line_refusal
from rosbags.rosbag2 import Writer

from regionadapt_ros.cli import main
from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.scoring.carla_bag import route_extras, score_bag
from regionadapt_ros.scoring.route import ROUTE_MAX_BYTES, load_route

ODOM = "/carla/ego_vehicle/odometry"
REPO_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
STORE = msgconv.rosbags_typestore()
T = STORE.types


def odometry(t: float, x: float, y: float = 0.0, speed: float = 5.0, qw: float = 1.0):
    sec = int(math.floor(t))
    stamp = T["builtin_interfaces/msg/Time"](sec, int(round((t - sec) * 1e9)))
    pose = T["geometry_msgs/msg/Pose"](T["geometry_msgs/msg/Point"](x, y, 0.0),
                                        T["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.0, qw))
    twist = T["geometry_msgs/msg/Twist"](T["geometry_msgs/msg/Vector3"](speed, 0.0, 0.0),
                                          T["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0))
    return T["nav_msgs/msg/Odometry"](T["std_msgs/msg/Header"](stamp, "map"), "ego_vehicle",
                                      T["geometry_msgs/msg/PoseWithCovariance"](pose, np.zeros(36)),
                                      T["geometry_msgs/msg/TwistWithCovariance"](twist, np.zeros(36)))


def write_bag(path: Path, messages: list[tuple[str, float, object, str]]) -> Path:
    """``messages``: (topic, log time [s], message, type), written in the order given."""
    with Writer(path, version=8) as writer:
        connections = {}
        for topic, t, msg, msgtype in messages:
            key = (topic, msgtype)
            if key not in connections:
                connections[key] = writer.add_connection(topic, msgtype, typestore=STORE)
            writer.write(connections[key], int(round(t * 1e9)), STORE.serialize_cdr(msg, msgtype))
    return path


def drive(n: int = 201, overrides: dict | None = None) -> list[tuple[str, float, object, str]]:
    """A straight drive along x at 5 m/s, 10 Hz; ``overrides``: {index: odometry message} replacements."""
    overrides = overrides or {}
    out = []
    for i in range(n):
        t = 1.0 + 0.1 * i
        out.append((ODOM, t, overrides.get(i, odometry(t, 0.5 * i)), "nav_msgs/msg/Odometry"))
    return out


@pytest.fixture()
def route(tmp_path: Path) -> Path:
    path = tmp_path / "route.csv"
    path.write_text("x,y\n" + "".join(f"{x},0\n" for x in range(0, 101, 5)))
    return path


def score_cli(capsys, bag: Path, route_file: Path, *extra: str) -> tuple[int, str]:
    code = main(["score", str(bag), "--route", str(route_file), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_clean_drive_scores_perfect(tmp_path, route):
    result = score_bag(write_bag(tmp_path / "bag", drive()), load_route(route))
    # scoring ends when the route is completed (the last few ticks are not read)
    assert result.score.status == "Perfect" and 190 <= result.odometry_messages <= 201
    assert not [n for n in result.notes if "skipped" in n]


@pytest.mark.parametrize("bad", [
    odometry(5.0, math.nan), odometry(5.0, 20.0, y=math.inf), odometry(5.0, 20.0, speed=math.nan),
    odometry(5.0, 20.0, qw=math.nan), odometry(5.0, 20.0, qw=0.0)])
def test_non_finite_odometry_is_skipped_and_counted(tmp_path, route, bad):
    """A NaN position would project anywhere on the route (a NaN distance compares false with every limit);
    the message is skipped, counted, and the rest scores as if it had never been recorded."""
    hostile = score_bag(write_bag(tmp_path / "bad", drive(overrides={40: bad})), load_route(route), route_id="r")
    without = drive()
    del without[40]
    clean = score_bag(write_bag(tmp_path / "clean", without), load_route(route), route_id="r")
    assert ("1 odometry message(s) with non-finite pose, orientation or speed (or a speed beyond any car's) "
            "skipped") in hostile.notes
    assert hostile.score.as_dict() == clean.score.as_dict()
    assert hostile.odometry_messages == clean.odometry_messages


def test_odometry_stamped_back_in_time_or_repeated_is_skipped(tmp_path, route):
    messages = drive()
    messages[100] = (ODOM, messages[100][1], odometry(2.0, 50.0), "nav_msgs/msg/Odometry")  # 9 s back
    messages[150] = (ODOM, messages[150][1], odometry(1.0 + 0.1 * 149, 75.0), "nav_msgs/msg/Odometry")  # again
    result = score_bag(write_bag(tmp_path / "bag", messages), load_route(route))
    assert "2 odometry message(s) stamped at or before the previous one skipped" in result.notes
    assert result.score.status == "Perfect"


def test_only_unusable_odometry_is_an_error(tmp_path, route):
    bag = write_bag(tmp_path / "bag", drive(3, {i: odometry(1.0 + 0.1 * i, math.nan) for i in range(3)}))
    with pytest.raises(DataError, match=r"has no usable messages \(3 odometry message\(s\) with non-finite"):
        score_bag(bag, load_route(route))


def test_odometry_of_another_type_is_named(tmp_path, route, capsys):
    text = T["std_msgs/msg/String"]
    bag = write_bag(tmp_path / "bag", [(ODOM, 1.0 + i, text("x"), "std_msgs/msg/String") for i in range(3)])
    code, out = score_cli(capsys, bag, route)
    assert code == 1
    assert out.strip() == (f"regionadapt score: error: {bag}: {ODOM} is std_msgs/msg/String, not "
                           "nav_msgs/msg/Odometry")


def test_an_event_topic_of_another_type_is_left_out_with_a_note(tmp_path, route):
    text = T["std_msgs/msg/String"]
    messages = [*drive(), ("/carla/ego_vehicle/collision", 5.05, text("boom"), "std_msgs/msg/String")]
    messages.sort(key=lambda m: m[1])
    result = score_bag(write_bag(tmp_path / "bag", messages), load_route(route))
    assert result.collisions_seen == 0 and result.score.status == "Perfect"
    assert ("/carla/ego_vehicle/collision is std_msgs/msg/String, not carla_msgs/msg/CarlaCollisionEvent: not read"
            in result.notes)


def collision_event(t: float, other: int):
    sec = int(math.floor(t))
    stamp = T["builtin_interfaces/msg/Time"](sec, int(round((t - sec) * 1e9)))
    vector = T["geometry_msgs/msg/Vector3"](1.0, 0.0, 0.0)
    return T["carla_msgs/msg/CarlaCollisionEvent"](T["std_msgs/msg/Header"](stamp, "ego_vehicle"), other, vector)


def test_a_huge_finite_speed_is_skipped_and_unstamped_collisions_are_not_counted(tmp_path, route):
    messages = drive(overrides={50: odometry(6.0, 25.0, speed=1e300)})
    collision = "/carla/ego_vehicle/collision"
    # a 4 s scrape against actor 7, every message unstamped: the same-actor rule needs the stamps
    messages += [(collision, 8.0 + 0.1 * k, collision_event(0.0, 7), "carla_msgs/msg/CarlaCollisionEvent")
                 for k in range(40)]
    messages += [(collision, 15.05, collision_event(15.05, 0), "carla_msgs/msg/CarlaCollisionEvent")]
    messages.sort(key=lambda m: m[1])
    result = score_bag(write_bag(tmp_path / "bag", messages), load_route(route))
    assert ("1 odometry message(s) with non-finite pose, orientation or speed (or a speed beyond any car's) "
            "skipped") in result.notes
    assert "40 collision message(s) with a zero header stamp timed by the ego's latest odometry" in result.notes
    assert any("actor 0 (the map) counted as static layout" in note for note in result.notes)
    # the 4 s scrape against actor 7 counts once (as a vehicle: no actor list), the layout contact once
    assert sorted(e.kind for e in result.score.events) == sorted([lb.COLLISION_VEHICLE, lb.COLLISION_LAYOUT])
    assert "stop signs not scored: neither the bridge's topics nor the route carry them" in result.notes


def test_a_light_whose_trigger_volume_has_no_length_is_not_scored(tmp_path, route):
    """The leaderboard samples stop points over +-0.9 of the volume's extent: none for a volume of no length."""
    vec = T["geometry_msgs/msg/Vector3"]
    pose = T["geometry_msgs/msg/Pose"](T["geometry_msgs/msg/Point"](50.0, 0.0, 0.0),
                                        T["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.7071068, 0.7071068))

    def info(light_id: int, length: float):
        box = T["carla_msgs/msg/CarlaBoundingBox"](vec(0.0, 0.0, 0.0), vec(length, 1.0, 2.0))
        return T["carla_msgs/msg/CarlaTrafficLightInfo"](light_id, pose, box)

    def red(light_id: int):
        return T["carla_msgs/msg/CarlaTrafficLightStatusList"](
            [T["carla_msgs/msg/CarlaTrafficLightStatus"](light_id, 0)])  # 0: RED

    for light_id, length, infractions in ((1, 4.0, 1), (2, 0.0, 0)):
        messages = [("/carla/traffic_lights/info", 0.5, T["carla_msgs/msg/CarlaTrafficLightInfoList"](
            [info(light_id, length)]), "carla_msgs/msg/CarlaTrafficLightInfoList")]
        messages += [("/carla/traffic_lights/status", 0.95 + 0.1 * i, red(light_id),
                      "carla_msgs/msg/CarlaTrafficLightStatusList") for i in range(201)]
        messages += drive()
        messages.sort(key=lambda m: m[1])
        result = score_bag(write_bag(tmp_path / f"bag{light_id}", messages), load_route(route))
        assert [e.kind for e in result.score.events].count(lb.RED_LIGHT) == infractions, result.score.events
        flat = "1 traffic light(s) with a trigger volume of no length: not scored, as by the leaderboard"
        assert (flat in result.notes) is (length == 0.0)


def test_route_keypoints_far_apart_are_noted_as_chords(tmp_path, route):
    bag = write_bag(tmp_path / "bag", drive())
    sparse = tmp_path / "keypoints.csv"
    sparse.write_text("x,y\n0,0\n100,0\n")  # leaderboard XML keypoints are 100-450 m apart
    assert any("route points up to 100 m apart are joined by straight lines" in note
               for note in score_bag(bag, load_route(sparse)).notes)
    assert not any("joined by straight lines" in note for note in score_bag(bag, load_route(route)).notes)


# ---------------------------------------------------------------------------------------------- route files
ENTITY_BOMB = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
               + "".join(f'<!ENTITY {n} "{("&" + p + ";") * 10}">' for p, n in zip("abcdefg", "bcdefgh", strict=True))
               + ']><route><waypoints><position x="&h;" y="0"/><position x="1" y="0"/></waypoints></route>')


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("r.xml", "<route><waypoints><position x='1' y='2'", "not a route file: ParseError: unclosed token"),
    ("bomb.xml", ENTITY_BOMB, "not a route file: ParseError"),
    ("r.csv", b"x,y\n\xff\xfe,0\n", "is not UTF-8 text (byte 0xff at offset 4)"),
    ("r.json", '{"points": [[0, 0], [100, 0]], "points": [[0, 0], [1, 0]]}', "duplicate key 'points'"),
    ("r.json", '{"points": [[0, 0], [NaN, 0], [100, 0]]}', "NaN is not a JSON number"),
    ("r.json", "[1, 2]", 'a JSON route is an object with "points", not a list'),
    ("r.json", '{"points": [[0, 0], [100, 0]], "speed_limit_kph": "fast"}',
     "speed_limit_kph must be a number or a list of numbers, got str"),
    ("r.json", '{"points": [[0, 0], [100, 0]], "speed_limit_kph": [50]}', "1 speed limits for 2 route points"),
    ("r.csv", "x,y\n0,0\n1e308,0\n1e308,1e308\n", "the route is inf m long, more than 1000 km"),
    ("r.csv", "x,y\n0,0\n", "a route needs at least two (x, y) points"),
    ("r.csv", "lat,lon\n1,2\n3,4\n", "a CSV route needs a header with x and y columns"),
    ("r.csv", "x,y,x\n0,0,5\n100,0,5\n", "column(s) x appear more than once in the header"),
    ("r.csv", "x,y,speed_limit_kph\n", "a route needs at least two (x, y) points"),
    ("r.csv", "x,y,speed_limit_kph\n0,0,50\n100,0\n", "line 3: 2 cell(s), the header has 3"),
    ("r.csv", "x,y,speed_limit_kph\n0,0,inf\n100,0,inf\n", "speed limits must be one positive, finite value"),
    ("r.json", '{"points": [[true, false], [100, 0]]}', "points: true is not a number"),
    ("r.json", '{"points": [["0", 0], [100, 0]]}', 'points: "0" is not a number'),
    ("r.json", '{"points": [0, 100]}', "points: expected a list, found 0"),
    ("r.json", '{"points": [[0, 0], [100, 0]], "speed_limit_kph": ["50", "50"]}',
     'speed_limit_kph: "50" is not a number'),
])
def test_a_bad_route_file_is_one_line_naming_it(tmp_path, capsys, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    bag = write_bag(tmp_path / "bag", drive(5))
    code, out = score_cli(capsys, bag, path)
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"regionadapt score: error: {path}: ") and problem in out, out


@pytest.mark.parametrize(("extras", "problem"), [
    ({"scenarios": [{"bogus": 1}]}, "a scenario needs exactly name, s_start, s_end, timeout_s; missing name"),
    ({"scenarios": {"name": "x"}}, "scenarios must be a list, got dict"),
    ({"scenarios": [{"name": "x", "s_start": 10, "s_end": 5, "timeout_s": 3}]}, "needs 0 <= s_start < s_end"),
    ({"scenarios": [{"name": "x", "s_start": 0, "s_end": 5, "timeout_s": 0}]}, "timeout_s must be > 0"),
    ({"criteria": "fast"}, "criteria must be an object of criteria values, got str"),
    ({"criteria": {"min_timeout_s": -5}}, "min_timeout_s must be >= 0, got -5"),
    ({"criteria": {"timeout_route_percent": 0}}, "timeout_route_percent must be > 0"),
    ({"criteria": {"min_speed_checkpoints": 2.5}}, "min_speed_checkpoints must be an integer >= 1"),
    ({"criteria": {"completion_percentage": 150}}, "completion_percentage is a percentage (<= 100)"),
    ({"criteria": {"warp_speed": 9}}, "unknown criteria: warp_speed"),
    ({"route_id": 7}, "route_id must be a string, got int"),
])
def test_bad_scenarios_and_criteria_in_a_route_json_are_refused(tmp_path, capsys, extras, problem):
    path = tmp_path / "route.json"
    path.write_text(json.dumps({"points": [[0, 0], [100, 0]], **extras}))
    with pytest.raises(DataError, match="not a route file"):
        route_extras(path)
    code, out = score_cli(capsys, write_bag(tmp_path / "bag", drive(5)), path)
    assert code == 1 and problem in out and len(out.strip().splitlines()) == 1, out


def test_route_files_that_never_end_or_block_are_refused_unread(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", drive(5))
    fifo = tmp_path / "route.csv"
    os.mkfifo(fifo)  # opening it would block until a writer came
    code, out = score_cli(capsys, bag, fifo)
    assert code == 1 and "is a FIFO (named pipe), not a regular file" in out
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:  # sparse: no disk used, refused by its size before a byte is read
        f.truncate(ROUTE_MAX_BYTES + 1)
    code, out = score_cli(capsys, bag, huge)
    assert code == 1 and str(huge) in out and "MiB" in out, out
    if Path("/dev/zero").exists():
        code, out = score_cli(capsys, bag, Path("/dev/zero"))
        assert code == 1 and "is a character device" in out
    code, out = score_cli(capsys, bag, tmp_path / "missing.csv")
    assert code == 1 and "cannot read the route: no such file" in out


@pytest.mark.parametrize("option", ["--min-timeout", "--blocked-time", "--lane-width", "--speed-limit-kph"])
@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf"])
def test_score_options_must_be_positive_numbers(tmp_path, route, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(tmp_path / "bag"), "--route", str(route), option, value])
    assert exit_info.value.code == 2
    assert "must be a finite number > 0" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "problem"), [
    (["--routes", "0"], "argument --routes: '0' must be an integer in [1, 10000]"),
    (["--routes", "many"], "argument --routes: 'many' is not an integer"),
    (["--hz", "0"], "argument --hz: '0' must be a number in [1, 100]"),
    (["--hz", "nan"], "argument --hz: 'nan' must be a number in [1, 100]"),
    (["--hz", "1e5"], "argument --hz: '1e5' must be a number in [1, 100]"),
    (["--length", "-5"], "argument --length: '-5' must be a number in [10, 20000]"),
    (["--length", "0.5"], "argument --length: '0.5' must be a number in [10, 20000]"),
    (["--length", "1e12"], "argument --length: '1e12' must be a number in [10, 20000]"),
])
def test_drive_options_out_of_range_are_argument_errors(tmp_path, capsys, args, problem):
    with pytest.raises(SystemExit) as exit_info:
        main(["drive", "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2 and problem in capsys.readouterr().err


@pytest.mark.parametrize(("args", "problem"), [
    (["--region", "atlantis"], "--region: unknown region 'atlantis'; known regions: highway, left_hand, "
                               "mountain, urban_day, urban_night"),
    (["--bundle", "garbage"], "--bundle: expected REGION=DIR, got 'garbage'"),
    (["--bundle", "=x"], "--bundle: expected REGION=DIR, got '=x'"),
    (["--bundle", "urban_day=/nonexistent/bundle"], "--bundle: urban_day: bundle directory /nonexistent/bundle does "
                                                    "not exist"),
])
def test_drive_refuses_unknown_regions_and_bundles_before_driving(tmp_path, capsys, args, problem):
    out = tmp_path / "out"
    assert main(["drive", "--out", str(out), *args]) == 1
    text = capsys.readouterr()
    assert text.err.strip() == f"regionadapt drive: error: {problem}" and not out.exists()


_BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9) if b else ', '.join(['x'] * 9)}]\n"
                for a, b in zip("abcdefgh", ["", *"abcdefg"], strict=True))


@pytest.mark.parametrize(("text", "problem"), [
    ("default_region: base\nregions:\n  base: {bundle: base}\n  urban_day: 5\n",
     "region 'urban_day' must be a mapping {bundle, rules}"),
    ("default_region: base\nregions:\n  base: {bundle: base}\n  base: {bundle: other}\n",
     "not valid YAML: duplicate key 'base'"),
    (_BOMB + "default_region: base\nregions: {base: {bundle: base}}\n", "not valid YAML: alias *a is not accepted"),
    ("default_region: base\nregions: {base: {bundle: base}}\ntrusted_keys: keys/fleet.pem\n",
     "trusted_keys must be a list of public-key PEM paths"),
    ("default_region: base\nregions: {base: {bundle: nothere}}\n", "region 'base': bundle directory"),
    ("default_region: base\nregions: {base: {bundle: base}}\nbundle_dir: [1]\n", "bundle_dir must be a path string"),
])
def test_drive_reads_its_regions_file_as_strictly_as_the_vehicle(tmp_path, capsys, text, problem):
    # drive serves a copy of the regions file; the copy is never what a refusal names, and the file is read with
    # the vehicle's rules (no duplicate keys, no aliases) rather than expanded first
    regions = tmp_path / "regions.yaml"
    regions.write_text(text)
    out = tmp_path / "out"
    args = ["drive", "--out", str(out), "--no-bag", "--length", "10", "--regions-config", str(regions)]
    if "bundle_dir" not in text:
        args += ["--bundle-dir", str(REPO_BUNDLES)]
    err = one_line_refusal(capsys, args)
    assert err.startswith(f"regionadapt drive: error: {regions}: ") and problem in err, err
    assert not out.exists()


def test_a_leaderboard_routes_file_is_scored_on_the_route_the_id_names(tmp_path, capsys):
    # The bag drives 100 m along +x. Route "7" is that road; route "2" runs the other way, along CARLA's y.
    def route(rid: str, along_x: bool) -> str:
        points = "".join(f'<position x="{d if along_x else 0}" y="{0 if along_x else d}" z="0"/>'
                         for d in range(0, 101, 5))
        return f'<route id="{rid}" town="Town12"><waypoints>{points}</waypoints></route>'

    routes = tmp_path / "routes_devtest.xml"
    routes.write_text("<routes>" + route("2", along_x=False) + route("7", along_x=True) + "</routes>")
    bag = write_bag(tmp_path / "bag", drive())
    code, out = score_cli(capsys, bag, routes)
    assert code == 1 and "holds 2 routes (ids '2', '7')" in out and "--route-id" in out
    code, out = score_cli(capsys, bag, routes, "--route-id", "7", "--json", str(tmp_path / "s.json"))
    assert code == 0 and "route completion 1.000" in out, out
    assert json.loads((tmp_path / "s.json").read_text())["score"]["route_id"] == "7"
    code, out = score_cli(capsys, bag, routes, "--route-id", "2")
    assert code == 0 and "route completion 1.000" not in out
    code, out = score_cli(capsys, bag, routes, "--route-id", "9")
    assert code == 1 and "no route with id '9'" in out and len(out.strip().splitlines()) == 1


def test_a_long_csv_route_is_read_without_a_dict_per_row(tmp_path):
    import tracemalloc

    path = tmp_path / "long.csv"
    path.write_text("x,y\n" + "".join(f"{0.5 * k},0\n" for k in range(200_000)))  # 3 MB, 100 km
    tracemalloc.start()
    try:
        route = load_route(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert route.length == pytest.approx(99_999.5)
    assert peak < 64 << 20, peak  # a dict per row held about 160 MB here


def test_a_collision_message_recorded_with_another_definition_is_skipped_and_counted(tmp_path, route):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    custom = get_typestore(Stores.ROS2_HUMBLE)
    custom.register(get_types_from_msg("std_msgs/Header header\nfloat64 other_actor_id\n"
                                       "geometry_msgs/Vector3 normal_impulse\n", "carla_msgs/msg/CarlaCollisionEvent"))
    event_type = custom.types["carla_msgs/msg/CarlaCollisionEvent"]
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:
        odom = writer.add_connection(ODOM, "nav_msgs/msg/Odometry", typestore=STORE)
        hits = writer.add_connection("/carla/ego_vehicle/collision", "carla_msgs/msg/CarlaCollisionEvent",
                                     typestore=custom)
        for _, t, msg, msgtype in drive():
            writer.write(odom, int(round(t * 1e9)), STORE.serialize_cdr(msg, msgtype))
        for k, other in enumerate((math.nan, 1e30, -1.0)):
            t = 5.05 + k
            header = custom.types["std_msgs/msg/Header"](
                custom.types["builtin_interfaces/msg/Time"](int(t), int(round((t - int(t)) * 1e9))), "ego_vehicle")
            event = event_type(header, other, custom.types["geometry_msgs/msg/Vector3"](1.0, 0.0, 0.0))
            writer.write(hits, int(round(t * 1e9)), custom.serialize_cdr(event, "carla_msgs/msg/CarlaCollisionEvent"))
    result = score_bag(bag, load_route(route))
    assert result.collisions_seen == 0 and result.score.status == "Perfect"
    assert any(note.startswith("3 collision message(s) whose other_actor_id is not a uint32") for note in result.notes)


def test_summary_files_cannot_land_on_a_bag_and_outputs_are_checked_before_a_run(tmp_path, capsys, route):
    bag = write_bag(tmp_path / "bag", drive())
    code = main(["score", str(bag), "--route", str(route), "--json", str(bag / "metadata.yaml")])
    assert code == 1 and "is inside" in capsys.readouterr().err
    assert (bag / "metadata.yaml").read_text().startswith("rosbag2_bagfile_information")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, needle in (
        (["drive", "--region", "highway", "--length", "20", "--out", str(afile)], "exists and is not a directory"),
        (["drive", "--region", "highway", "--length", "20", "--out", str(tmp_path / "d"), "--summary-json",
          str(tmp_path / "d" / "highway-0" / "bag" / "metadata.yaml")], "is inside"),
        (["replay", str(bag), "--out", str(bag / "nested"), "--no-progress"], "is inside the input"),
        (["replay", str(bag), "--out", str(tmp_path / "r"), "--json", str(bag / "metadata.yaml"), "--no-progress"],
         "is inside"),
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
    assert (bag / "metadata.yaml").read_text().startswith("rosbag2_bagfile_information")


def test_drive_refuses_a_route_whose_region_it_cannot_serve_and_writes_no_bag(tmp_path, capsys):
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    code = main(["drive", "--region", "highway", "--length", "20", "--out", str(out),
                 "--bundle", f"highway={repo / 'bundles' / 'mountain'}"])
    err = capsys.readouterr().err
    assert code == 1 and "route highway-0: region 'highway' cannot be served" in err
    assert "it would be driven by base" in err
    assert not (out / "highway-0" / "bag").exists()
    # the region's own bundle serves it: the route is driven (and its set is swapped in at the first frame)
    assert main(["drive", "--region", "highway", "--length", "20", "--no-bag", "--out", str(tmp_path / "ok")]) == 0
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["routes"][0]["agent_stats"]["regions"] == ["highway"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--course", "demo", "--region", "highway"], "--course: the demo course has its own regions and length"),
    (["--course", "demo", "--length", "10"], "--course: the demo course has its own regions and length"),
    (["--agent", "expert", "--backend", "torch"], "--agent: the expert drives without models"),
    (["--seed", "4294967295", "--routes", "2"], "the last must be at most 4294967295"),
])
def test_drive_refuses_options_that_contradict_each_other(tmp_path, capsys, argv, needle):
    assert main(["drive", *argv, "--no-bag", "--out", str(tmp_path / "d")]) == 1
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_bag_recorded_from_partway_along_the_route_is_credited_with_what_it_drove(tmp_path, route):
    late = [(topic, t, msg, kind) for topic, t, msg, kind in drive() if t >= 11.0]  # from x = 50 of 100 m
    result = score_bag(write_bag(tmp_path / "bag", late), load_route(route))
    assert result.score.route_completion == pytest.approx(0.5, abs=0.02)
    assert any(note.startswith("the bag starts 50 m along the route") for note in result.notes)
