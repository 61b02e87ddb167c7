"""The closed loop end to end: the expert drives as well as the score allows, a model that always steers left
leaves the lane and scores low, a recorded run rescored from its bag gives the same score, routes across
regions hot-swap bundles at geofences, the global model's folded bundles compute what it computes, and
on-policy states are collected with the expert's labels."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.bag_storage import recording_state
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.models.registry import reference_architectures
from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.sim.agents import ExpertAgent, ProductAgent
from regionadapt_ros.sim.course import SIM_CRITERIA, Course, RouteSpec, region_routes
from regionadapt_ros.sim.runner import RunOptions, run_route


@pytest.fixture(scope="module")
def regions_yaml(repo_root):
    return repo_root / "config" / "regions.yaml"


@pytest.fixture(scope="module")
def bundle_dir(repo_root):
    return repo_root / "bundles"


# short time limits: a driver that goes nowhere ends its route after a few seconds
QUICK = replace(SIM_CRITERIA, min_timeout_s=8.0, blocked_time_s=4.0)


def constant_bundle(out, bundle_dir, steer: float, accel: float):
    """A full bundle: the shipped base's perception, a decision head that ignores its input and always outputs
    (steer, accel)."""
    base = bundle_io.read_bundle(bundle_dir / "base", reference_architectures()).resolve()
    models = {m: {k: np.array(v) for k, v in w.items()} for m, w in base.items()}
    head = models["decision"]
    head["head.weight"] = np.zeros_like(head["head.weight"])
    head["head.bias"] = np.array([math.atanh(steer / 0.5), accel / 3.0], np.float32)
    bundle_io.write_bundle(out, "urban_day", 1, models, "full", None, reference_architectures(), {"test": True})
    return out


@pytest.mark.parametrize("region", ["urban_day", "urban_night", "highway", "mountain", "left_hand"])
def test_the_expert_drives_with_a_driving_score_of_at_least_095(region):
    scores = [run_route(spec, ExpertAgent()).score for spec in region_routes(region, 3, 1000, length_m=180.0)]
    assert np.mean([s.driving_score for s in scores]) >= 0.95
    assert all(s.route_completion == 1.0 for s in scores)
    assert not any(e.kind in (lb.COLLISION_VEHICLE, lb.COLLISION_LAYOUT, lb.RED_LIGHT) for s in scores
                   for e in s.events)


def test_a_model_that_always_steers_left_leaves_the_lane_and_scores_low(tmp_path, regions_yaml, bundle_dir):
    left = constant_bundle(tmp_path / "left", bundle_dir, steer=0.3, accel=1.0)
    agent = ProductAgent("left", regions_yaml, bundle_dir=bundle_dir, bundles={"urban_day": str(left)},
                         backend=OnnxRuntimeBackend(intra_op_threads=1))
    try:
        result = run_route(region_routes("urban_day", 1, 1000, length_m=100.0, criteria=QUICK)[0], agent)
    finally:
        agent.close()
    score = result.score
    assert score.driving_score < 0.3
    assert score.route_completion < 0.5
    kinds = {e.kind for e in score.events}
    assert lb.OUTSIDE_ROUTE_LANES in kinds or lb.ROUTE_DEVIATION in kinds
    assert result.agent_stats["frames"] == result.ticks  # every tick went through the product's frame path


def test_recorded_run_rescored_from_its_bag_gives_the_same_score(tmp_path, regions_yaml, bundle_dir):
    from regionadapt_ros.scoring.carla_bag import route_extras, score_bag
    from regionadapt_ros.scoring.route import load_route

    # a model that drives straight on into whatever comes: off a curving road, into things
    straight = constant_bundle(tmp_path / "straight", bundle_dir, steer=0.0, accel=1.5)
    agent = ProductAgent("straight", regions_yaml, bundle_dir=bundle_dir, bundles={"urban_day": str(straight)},
                         backend=OnnxRuntimeBackend(intra_op_threads=1))
    spec = region_routes("urban_day", 1, 1004, length_m=120.0, criteria=QUICK)[0]
    try:
        live = run_route(spec, agent, RunOptions(record_dir=tmp_path / "run", record_sensors=False))
    finally:
        agent.close()
    route_file = tmp_path / "run" / "route.json"
    scenarios, criteria, route_id = route_extras(route_file)
    again = score_bag(tmp_path / "run" / "bag", load_route(route_file), criteria=criteria, scenarios=scenarios,
                      route_id=route_id)
    assert live.score.events, "the straight driver should commit infractions here"
    assert again.score.as_dict() == live.score.as_dict()
    assert again.odometry_messages == live.ticks
    # the infractions are in the bag as messages too
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / "run" / "bag"]) as reader:
        conns = [c for c in reader.connections if c.topic == "/regionadapt/infractions"]
        kinds = {json.loads(reader.deserialize(raw, c.msgtype).data)["kind"]
                 for c, _, raw in reader.messages(connections=conns)}
    assert kinds == {e.kind for e in live.score.events}


def test_expert_bag_rescored_with_sensors_and_lights(tmp_path):
    from regionadapt_ros.scoring.carla_bag import route_extras, score_bag
    from regionadapt_ros.scoring.route import load_route

    spec = region_routes("urban_night", 1, 1003, length_m=200.0)[0]
    live = run_route(spec, ExpertAgent(), RunOptions(record_dir=tmp_path / "run"))
    scenarios, criteria, route_id = route_extras(tmp_path / "run" / "route.json")
    again = score_bag(tmp_path / "run" / "bag", load_route(tmp_path / "run" / "route.json"), criteria=criteria,
                      scenarios=scenarios, route_id=route_id)
    assert again.score.as_dict() == live.score.as_dict()
    # lights, actor list and traffic speeds were all recorded: only what no bag carries is noted
    assert again.notes == ["stop signs not scored: neither the bridge's topics nor the route carry them"]
    assert recording_state(tmp_path / "run" / "bag") == "complete"


def test_a_drive_stopped_by_ctrl_c_leaves_a_readable_bag_that_says_it_was_interrupted(tmp_path):
    from regionadapt_ros.scoring.carla_bag import route_extras, score_bag
    from regionadapt_ros.scoring.route import load_route

    ticks = []

    def ctrl_c_at_tick_30(obs, pose, cmd):
        ticks.append(pose)
        if len(ticks) == 30:
            raise KeyboardInterrupt

    spec = region_routes("urban_day", 1, 1004, length_m=200.0)[0]
    with pytest.raises(KeyboardInterrupt):
        run_route(spec, ExpertAgent(), RunOptions(record_dir=tmp_path / "run", record_sensors=False,
                                                  on_tick=ctrl_c_at_tick_30))
    bag = tmp_path / "run" / "bag"
    assert recording_state(bag) == "interrupted (Ctrl-C)"
    scenarios, criteria, route_id = route_extras(tmp_path / "run" / "route.json")
    partial = score_bag(bag, load_route(tmp_path / "run" / "route.json"), criteria=criteria, scenarios=scenarios,
                        route_id=route_id)
    assert partial.odometry_messages >= 29 and 0 < partial.score.route_completion < 0.5
    assert "the recording was interrupted (Ctrl-C): the route is scored as far as it was driven" in partial.notes


def test_a_route_across_regions_hot_swaps_at_the_geofences(tmp_path, regions_yaml, bundle_dir):
    from regionadapt_ros.sim.geo import write_route_geofences

    spec = RouteSpec("across", (("urban_day", 60.0), ("highway", 120.0), ("left_hand", 60.0)), seed=5)
    course = Course(spec)
    fences = write_route_geofences(tmp_path / "fences.geojson",
                                   [(w.spec.name, w.route_path().points) for w in course.worlds])
    agent = ProductAgent("regional", regions_yaml, bundle_dir=bundle_dir, geofence_file=fences,
                         backend=OnnxRuntimeBackend(intra_op_threads=1))
    try:
        result = run_route(spec, agent, RunOptions(gnss=True), course)
    finally:
        agent.close()
    stats = result.agent_stats
    assert stats["regions"][:2] == ["urban_day", "highway"]
    assert [s["to"] for s in stats["swaps"]][:2] == ["urban_day", "highway"]
    assert stats["failed_loads"] == 0 and stats["dropped_frames"] == 0


def test_folded_global_bundle_computes_what_the_global_model_computes():
    import torch

    from regionadapt_ros.adaptation.global_model import fold_region
    from regionadapt_ros.models.registry import build_model, load_named_weights, named_weights

    torch.manual_seed(0)
    dim = 5
    glob = {m: build_model(m, dim) for m in ("perception", "decision")}
    for model in glob.values():
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)  # the adapters' zero up-projections too
    weights = {m: named_weights(model) for m, model in glob.items()}
    image, bev = torch.randn(2, 3, 96, 160), torch.rand(2, 3, 64, 64)
    speed = torch.tensor([[3.0], [12.0]])
    for r in (0, 3):
        onehot = torch.nn.functional.one_hot(torch.tensor([r, r]), dim).float()
        with torch.no_grad():
            p = glob["perception"](image, bev, onehot)
            d = glob["decision"](p["features"], speed, onehot)
        folded = fold_region(weights, r, dim)
        per = load_named_weights(build_model("perception"), folded["perception"])
        dec = load_named_weights(build_model("decision"), folded["decision"])
        with torch.no_grad():
            p2 = per(image, bev)
            d2 = dec(p2["features"], speed)
        for k in p:
            assert torch.allclose(p[k], p2[k], atol=1e-5)
        assert torch.allclose(d["control"], d2["control"], atol=1e-5)
    with pytest.raises(ValueError, match="region index"):
        fold_region(weights, 5, dim)


def test_on_policy_states_are_collected_with_the_experts_labels(tmp_path, regions_yaml, bundle_dir):
    from regionadapt_ros.adaptation.dataset import RegionDataset
    from regionadapt_ros.sim.dagger import DaggerConfig, collect_round
    from regionadapt_ros.sim.jobs import AgentSpec

    cfg = DaggerConfig(rounds=1, routes_per_round=2, stride=3, workers=1, chunk=3, length_m=150.0,
                       expert_routes=1)
    rows, data = collect_round("highway", AgentSpec("expert", kind="expert"), 0, tmp_path, regions_yaml, bundle_dir,
                               cfg, progress=False)
    assert [r["tag"] for r in rows] == ["policy", "policy", "expert"] and data is not None
    # the noisy expert executes something else than the clean expert: another path
    assert rows[2]["agent"] == "expert (noisy)"
    ds = RegionDataset.open(data)
    assert ds.meta["source"] == "closed_loop" and ds.meta["region"] == "highway"
    assert len(ds) == sum(r["collected"] for r in rows) == sum(math.ceil(r["ticks"] / 3) for r in rows)
    # split by route: the last route is the test split
    assert len(ds.split("test")) == rows[-1]["collected"]
    speed = ds.labels[:, list(ds.meta["label_names"]).index("speed")]
    assert np.all(speed > 5.0)  # highway speeds: these are the states the driver visited


def test_errors_raised_in_worker_processes_reach_the_parent_as_themselves():
    import pickle

    from regionadapt_ros.core.errors import BundleError, ConfigError, DataError, MessageConversionError

    for error in (ConfigError("regions.yaml", "no bundle"), DataError("bag", "truncated"),
                  BundleError("manifest.json", "bad hash"), MessageConversionError("Image", "step", "too small")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert again.__dict__ == error.__dict__


def test_evaluation_regions_file_maps_bundles_and_keeps_the_shipped_ones_untouched(tmp_path, regions_yaml, bundle_dir):
    import yaml

    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.sim.agents import regions_file_for

    out = regions_file_for(regions_yaml, {"highway": str(bundle_dir / "base")}, bundle_dir, tmp_path,
                           keep=["highway"])
    doc = yaml.safe_load(out.read_text())
    assert set(doc["regions"]) == {"base", "highway"}  # the default and base regions always stay
    assert doc["regions"]["highway"]["bundle"] == str(bundle_dir / "base")
    assert doc["regions"]["highway"]["rules"]["speed_limit_kph"] == 110  # the vehicle's rules, not the bundle's
    assert doc["state_file"].startswith(str(tmp_path)) and doc["allow_rollback"] is True
    with pytest.raises(ConfigError, match="not in the regions file"):
        regions_file_for(regions_yaml, {"atlantis": "x"}, bundle_dir, tmp_path)


def test_driving_session_settings_can_be_overridden_per_agent(regions_yaml, bundle_dir):
    from regionadapt_ros.core.errors import ConfigError

    agent = ProductAgent("capped", regions_yaml, bundle_dir=bundle_dir, regions=["highway"],
                         driving_overrides={"degraded_max_speed": 3.0, "camera_timeout_s": 0.3},
                         backend=OnnxRuntimeBackend(intra_op_threads=1))
    try:
        assert agent.session.config.degraded_max_speed == 3.0 and agent.session.config.camera_timeout_s == 0.3
    finally:
        agent.close()
    with pytest.raises(ConfigError, match="driving_overrides"):
        ProductAgent("bad", regions_yaml, bundle_dir=bundle_dir, driving_overrides={"warp_drive": True})


def test_the_bag_holds_the_command_type_the_session_publishes(tmp_path, regions_yaml, bundle_dir):
    from rosbags.highlevel import AnyReader

    agent = ProductAgent("carla", regions_yaml, bundle_dir=bundle_dir, regions=["highway"],
                         driving_overrides={"command_type": "carla"}, backend=OnnxRuntimeBackend(intra_op_threads=1))
    try:
        result = run_route(region_routes("highway", 1, 7, length_m=60.0)[0], agent,
                           RunOptions(record_dir=tmp_path / "run", record_sensors=False))
    finally:
        agent.close()
    with AnyReader([tmp_path / "run" / "bag"]) as reader:
        (conn,) = [c for c in reader.connections if c.topic == "/control/command"]
        assert conn.msgtype == "carla_msgs/msg/CarlaEgoVehicleControl"
        msgs = [reader.deserialize(raw, conn.msgtype) for _, _, raw in reader.messages(connections=[conn])]
    assert len(msgs) == result.ticks and all(0.0 <= m.throttle <= 1.0 for m in msgs)


def test_drive_and_score_commands(tmp_path, capsys):
    from regionadapt_ros.cli import main

    out = tmp_path / "drive"
    assert main(["drive", "--region", "mountain", "--agent", "expert", "--routes", "2", "--seed", "3",
                 "--length", "80", "--no-sensors", "--out", str(out), "--summary-json", str(tmp_path / "s.json")]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["route_id"] for r in report["routes"]] == ["mountain-3", "mountain-4"]
    assert (out / "report.md").exists() and (out / "mountain-3.png").exists()
    # what the numbers were computed on: a closed loop reproduces bit for bit only on the same CPU and libraries
    import numpy
    import onnxruntime

    environment = report["environment"]
    assert environment["libraries"]["numpy"] == numpy.__version__
    assert environment["libraries"]["onnxruntime"] == onnxruntime.__version__
    assert environment["machine"] and environment["cpu_count"] >= 1 and isinstance(environment["cpu"], str)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["driving_score"] == pytest.approx(np.mean([r["score"]["driving_score"] for r in report["routes"]]))
    capsys.readouterr()
    assert main(["score", str(out / "mountain-3" / "bag"), "--route", str(out / "mountain-3" / "route.json"),
                 "--json", str(tmp_path / "score.json")]) == 0
    printed = capsys.readouterr().out
    assert "driving score" in printed
    scored = json.loads((tmp_path / "score.json").read_text())["score"]
    assert scored == report["routes"][0]["score"]
    # a bag without the ego's odometry is refused with the topics it has
    assert main(["score", str(out / "mountain-3" / "bag"), "--route", str(out / "mountain-3" / "route.json"),
                 "--role-name", "hero"]) == 1
    assert "/carla/hero/odometry" in capsys.readouterr().err


def test_the_emergency_brake_guard_is_counted_per_route_on_and_off(tmp_path, regions_yaml, bundle_dir):
    """The closed-loop rows with the guard on and off drive the same route; each route reports what the guard
    did (on: overrides) or would have done (off: suppressed), and with it off nothing is ever overridden."""
    from regionadapt_ros.adaptation.closed_loop_recipe import guard_markdown
    from regionadapt_ros.adaptation.recipe import GUARD_OFF_ROW, Recipe
    from regionadapt_ros.sim.evaluation import agent_summary

    assert Recipe().closed_loop_variants == {GUARD_OFF_ROW: {"emergency_brake": False}}
    straight = constant_bundle(tmp_path / "straight", bundle_dir, steer=0.0, accel=1.5)
    # on this seed the straight driver closes on a vehicle the perception sees in time for the guard
    spec = region_routes("urban_day", 1, 1004, length_m=120.0, criteria=QUICK)[0]
    rows = {}
    for name, on in (("regional", True), (GUARD_OFF_ROW, False)):
        agent = ProductAgent(name, regions_yaml, bundle_dir=bundle_dir, bundles={"urban_day": str(straight)},
                             driving_overrides={"emergency_brake": on}, backend=OnnxRuntimeBackend(intra_op_threads=1))
        try:
            result = run_route(spec, agent)
        finally:
            agent.close()
        rows[name] = result.as_dict() | {"seed": spec.seed}
    on, off = (rows[n]["agent_stats"]["emergency_brake"] for n in ("regional", GUARD_OFF_ROW))
    assert on["suppressed"] == 0 and off["overrides"] == 0 and off["override_frames"] == 0
    assert on["overrides"] + off["suppressed"] > 0, "a car driving straight on into things should alarm the guard"
    entry = {"region": "urban_day", "regional": agent_summary([rows["regional"]]),
             GUARD_OFF_ROW: agent_summary([rows[GUARD_OFF_ROW]])}
    table = guard_markdown({"regions": [entry]})
    assert "| urban_day | on |" in table and "| urban_day | off |" in table
    assert f"| {on['overrides']} ({on['override_frames']}) |" in table


def test_demo_closed_loop_drives_the_course_and_summarises_like_a_replay(tmp_path, capsys):
    """`regionadapt demo --closed-loop`: the regional models drive the five-region course from the shipped
    bundles, hot-swapping at the fences (every change prefetched), and the summary JSON has every key a
    replay summary has plus the score."""
    from dataclasses import fields

    from regionadapt_ros.cli import main
    from regionadapt_ros.replay import ReplaySummary

    out = tmp_path / "summary.json"
    assert main(["demo", "--closed-loop", "--cache", str(tmp_path / "cache"), "--json", str(out),
                 "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert {f.name for f in fields(ReplaySummary)} <= set(doc)
    # the shipped regional models drive the whole course: every region served, in the course's order (a
    # specialist left in charge on the next region's road, or a route over itself, ends it early)
    assert doc["route_completion"] == 1.0 and doc["driving_score"] >= 0.8
    assert doc["regions"] == ["urban_day", "urban_night", "mountain", "highway", "left_hand"]
    assert doc["frames"] == doc["commands"]
    assert doc["region_changes"] == len(doc["regions"]) - 1 >= 1
    changes = [w for w in doc["swap_events"] if not w["startup"]]
    assert doc["region_changes"] == len(changes)
    # every crossing prefetched, the last one too: there the fix that enters left_hand also predicts the
    # default region beyond it, and that hint must not evict the prefetched left_hand set
    assert doc["prefetched_changes"] == sum(w["prefetched"] for w in changes) == doc["region_changes"]
    # times and counts mean what the replay summary's do: seconds since the start, the switches, the fixes
    assert doc["swap_events"][0]["t"] == 0.0 and doc["t_offset_s"] > 1e9
    assert all(0.0 <= w["t"] <= doc["duration_s"] for w in doc["swap_events"])
    assert [(w["from"], w["to"]) for w in doc["region_switches"]] == list(zip(doc["regions"], doc["regions"][1:],
                                                                            strict=False))
    assert doc["gnss_fixes"] >= doc["frames"] // 2
    printed = capsys.readouterr().out
    assert "driving score" in printed and "region changes prefetched" in printed
