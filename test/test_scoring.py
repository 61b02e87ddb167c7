"""The driving score: the CARLA leaderboard 2.0 arithmetic against hand-computed cases, and every criterion of
the per-tick scorer on hand-made trajectories along a straight route."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.scoring.criteria import CriteriaConfig, EgoState, RouteScorer, Scenario, StopLine
from regionadapt_ros.scoring.route import RoutePath, load_route


def ev(kind: str, value: float | None = None) -> lb.InfractionEvent:
    return lb.InfractionEvent(kind, 0.0, "", value)


# ------------------------------------------------------------------------------------------ arithmetic
@pytest.mark.parametrize(("kind", "coefficient"), [
    (lb.COLLISION_PEDESTRIAN, 0.50), (lb.COLLISION_VEHICLE, 0.60), (lb.COLLISION_LAYOUT, 0.65),
    (lb.RED_LIGHT, 0.70), (lb.STOP_SIGN, 0.80), (lb.SCENARIO_TIMEOUT, 0.70), (lb.YIELD_EMERGENCY, 0.70)])
def test_each_fixed_coefficient(kind, coefficient):
    assert lb.infraction_penalty([ev(kind)]) == pytest.approx(coefficient)
    assert lb.infraction_penalty([ev(kind), ev(kind)]) == pytest.approx(coefficient ** 2)


def test_percentage_penalties_as_the_leaderboard_computes_them():
    # outside route lanes [0, 'increases']: 1 - (1 - 0) * 25 / 100
    assert lb.infraction_penalty([ev(lb.OUTSIDE_ROUTE_LANES, 25.0)]) == pytest.approx(0.75)
    # minimum speed [0.7, 'decreases']: 1 - (1 - 0.7) * (1 - 60 / 100) = 0.88
    assert lb.infraction_penalty([ev(lb.MIN_SPEED, 60.0)]) == pytest.approx(0.88)
    assert lb.infraction_penalty([ev(lb.MIN_SPEED, 100.0)]) == pytest.approx(1.0)
    assert lb.infraction_penalty([ev(lb.MIN_SPEED, 0.0)]) == pytest.approx(0.7)


def test_route_ending_events_only_cut_completion():
    for kind in lb.ROUTE_ENDING:
        assert lb.infraction_penalty([ev(kind)]) == 1.0


def test_driving_score_is_completion_times_penalty_hand_computed():
    events = [ev(lb.COLLISION_VEHICLE), ev(lb.RED_LIGHT), ev(lb.OUTSIDE_ROUTE_LANES, 10.0), ev(lb.MIN_SPEED, 50.0),
              ev(lb.ROUTE_DEVIATION)]
    score = lb.route_score("r", 500.0, 80.0, events, 42.0)
    penalty = 0.6 * 0.7 * 0.9 * 0.85
    assert score.infraction_penalty == pytest.approx(penalty)
    assert score.route_completion == pytest.approx(0.8)
    assert score.driving_score == pytest.approx(0.8 * penalty)
    assert score.status == "Failed - Agent deviated from the route"
    assert score.km_driven == pytest.approx(0.4)


def test_status_perfect_completed_failed():
    assert lb.route_score("r", 100.0, 100.0, [], 1.0).status == "Perfect"
    assert lb.route_score("r", 100.0, 100.0, [ev(lb.RED_LIGHT)], 1.0).status == "Completed"
    assert lb.route_score("r", 100.0, 40.0, [ev(lb.VEHICLE_BLOCKED)], 1.0).status == "Failed - Agent got blocked"
    assert lb.route_score("r", 100.0, 40.0, [ev(lb.ROUTE_TIMEOUT)], 1.0).status == "Failed - Agent timed out"


def test_bad_events_and_scores_are_refused():
    with pytest.raises(ValueError, match="unknown infraction"):
        lb.InfractionEvent("speeding", 0.0)
    with pytest.raises(ValueError, match="percentage"):
        lb.InfractionEvent(lb.OUTSIDE_ROUTE_LANES, 0.0)
    with pytest.raises(ValueError, match="percentage"):
        lb.InfractionEvent(lb.MIN_SPEED, 0.0, value=math.nan)
    with pytest.raises(ValueError, match="route completion"):
        lb.route_score("r", 100.0, 120.0, [], 1.0)
    with pytest.raises(ValueError, match="length"):
        lb.route_score("r", 0.0, 50.0, [], 1.0)


def test_aggregate_means_and_infractions_per_km_driven():
    a = lb.route_score("a", 1000.0, 100.0, [ev(lb.COLLISION_VEHICLE)], 60.0)  # DS 0.6, 1 km
    b = lb.route_score("b", 1000.0, 50.0, [ev(lb.RED_LIGHT), ev(lb.RED_LIGHT), ev(lb.VEHICLE_BLOCKED)], 60.0)
    agg = lb.aggregate([a, b])
    assert agg["driving_score"] == pytest.approx((0.6 + 0.5 * 0.49) / 2)
    assert agg["route_completion"] == pytest.approx(0.75)
    assert agg["km_driven"] == pytest.approx(1.5)
    assert agg["infractions_per_km"][lb.COLLISION_VEHICLE] == pytest.approx(1 / 1.5)
    assert agg["infractions_per_km"][lb.RED_LIGHT] == pytest.approx(2 / 1.5)
    assert agg["infractions_per_km"][lb.VEHICLE_BLOCKED] == pytest.approx(1 / 1.5)
    lo, hi = agg["driving_score_ci"]
    assert lo <= agg["driving_score"] <= hi and lo < hi
    assert lb.aggregate([a, b]) == agg  # seeded bootstrap: reproducible


def test_bootstrap_interval_narrows_with_more_routes():
    rng = np.random.default_rng(0)
    few = rng.uniform(0, 1, 10)
    many = rng.uniform(0, 1, 200)
    w_few = np.diff(lb.bootstrap_ci(few))[0]
    w_many = np.diff(lb.bootstrap_ci(many))[0]
    assert w_many < w_few
    diff = lb.paired_difference([0.9, 0.8, 1.0], [0.5, 0.6, 0.4])
    assert diff["mean"] == pytest.approx(0.4) and diff["ci"][0] > 0


# ------------------------------------------------------------------------------------------ criteria
CFG = CriteriaConfig(min_timeout_s=30.0, blocked_time_s=10.0)


def straight(length: float = 200.0, limit_kph: float = 36.0) -> RoutePath:
    xs = np.arange(0.0, length + 1.0, 1.0)
    return RoutePath(np.stack((xs, np.zeros_like(xs)), axis=1), (-1.75, 1.75), np.full(xs.size, limit_kph / 3.6))


def drive(scorer: RouteScorer, xs, ys=0.0, speed: float = 10.0, dt: float = 0.1, t0: float = 0.0, yaw: float = 0.0,
          lights=None, traffic=None) -> float:
    t = t0
    ys = np.broadcast_to(np.asarray(ys, float), np.shape(xs))
    for x, y in zip(xs, ys, strict=True):
        scorer.step(EgoState(t, float(x), float(y), yaw, speed), lights, traffic)
        t += dt
        if scorer.done:
            break
    return t


def test_route_completion_partial_and_full():
    s = RouteScorer(straight(), config=CFG)
    drive(s, np.arange(0.0, 100.0, 1.0))
    assert s.completion_percent == pytest.approx(49.5, abs=0.6)
    assert not s.done
    drive(s, np.arange(100.0, 200.5, 1.0), t0=10.0)
    assert s.done and s.ended == "completed"
    score = s.finish()
    assert score.route_completion == 1.0 and score.status == "Perfect" and score.driving_score == 1.0


def test_completion_needs_to_be_near_the_end():
    # 99.5 % along the route but 20 m beside it: not completed (and not deviated either)
    s = RouteScorer(straight(), config=CFG)
    drive(s, np.arange(0.0, 199.5, 1.0), ys=np.concatenate((np.zeros(180), np.full(20, 20.0))))
    assert s.ended is None
    assert s.completion_percent < 100.0


def test_outside_route_lanes_percentage():
    s = RouteScorer(straight(), config=CFG)
    # first half 2.5 m left of the line: more than 1.75 + 0.5 outside the lanes; second half in the lane
    xs = np.arange(0.0, 200.0, 1.0)
    drive(s, xs, ys=np.where(xs < 100.0, 2.5, 0.0))
    score = s.finish()
    outside = [e for e in score.events if e.kind == lb.OUTSIDE_ROUTE_LANES]
    assert len(outside) == 1
    assert outside[0].value == pytest.approx(50.0, abs=1.5)
    assert score.infraction_penalty == pytest.approx(1 - outside[0].value / 100)
    # within the 0.5 m allowance: nothing
    s2 = RouteScorer(straight(), config=CFG)
    drive(s2, xs, ys=2.2)
    assert not [e for e in s2.finish().events if e.kind == lb.OUTSIDE_ROUTE_LANES]


def test_collisions_classified_and_filtered_as_the_leaderboard_does():
    s = RouteScorer(straight(), config=CFG)
    drive(s, [10.0])
    assert s.collision(1.0, 7, "vehicle.tesla.model3").kind == lb.COLLISION_VEHICLE
    assert s.collision(1.1, 7, "vehicle.tesla.model3") is None  # same actor within 5 s
    drive(s, [20.0], t0=2.0)
    assert s.collision(2.0, 8, "walker.pedestrian.0001").kind == lb.COLLISION_PEDESTRIAN
    assert s.collision(2.1, 0, "static.guardrail") is None  # within 5 m of the last collision
    drive(s, [30.0], t0=3.0)
    assert s.collision(3.0, 0, "static.guardrail").kind == lb.COLLISION_LAYOUT
    drive(s, [40.0], t0=4.0)
    assert s.collision(4.0, 9, "traffic.traffic_light").kind == lb.COLLISION_LAYOUT
    drive(s, [50.0], t0=5.0)
    assert s.collision(5.0, 10, "sensor.other.collision") is None  # not a counted type
    drive(s, [60.0], speed=0.05, t0=6.0)
    assert s.collision(6.0, 11, "vehicle.audi.a2") is None  # standing still: not the ego's fault
    drive(s, [70.0], t0=20.0)
    assert s.collision(20.0, 7, "vehicle.tesla.model3").kind == lb.COLLISION_VEHICLE  # same actor, 19 s later
    kinds = [e.kind for e in s.finish().events]
    assert kinds.count(lb.COLLISION_VEHICLE) == 2 and kinds.count(lb.COLLISION_LAYOUT) == 2
    assert kinds.count(lb.COLLISION_PEDESTRIAN) == 1


def stop_line_at(x: float, light_id: int = 1) -> StopLine:
    return StopLine(light_id, (x, -1.9), (x, 1.9))


@pytest.mark.parametrize("speed", [5.0, 30.0])
def test_red_light_infraction_when_the_tail_crosses_on_red(speed):
    s = RouteScorer(straight(), stop_lines=[stop_line_at(100.0)], config=CFG)
    step = speed * 0.1  # 10 Hz: at 30 m/s the tail jumps 3 m per tick, further than the leaderboard's segment
    t = drive(s, np.arange(0.0, 80.0, step), speed=speed, lights={1: "green"})  # from the route's start
    drive(s, np.arange(80.0, 120.0, step), speed=speed, t0=t, lights={1: "red"})
    events = [e for e in s.finish().events if e.kind == lb.RED_LIGHT]
    assert len(events) == 1  # once per light
    s2 = RouteScorer(straight(), stop_lines=[stop_line_at(100.0)], config=CFG)
    drive(s2, np.arange(0.0, 120.0, step), speed=speed, lights={1: "green"})
    assert not [e for e in s2.finish().events if e.kind == lb.RED_LIGHT]


def test_stopping_with_the_nose_over_the_line_is_no_infraction():
    cfg = CFG
    s = RouteScorer(straight(), stop_lines=[stop_line_at(100.0)], config=cfg)
    # the centre stops 1 m past the line: the tail (0.8 * 2.45 m behind) has not crossed
    t = drive(s, np.arange(0.0, 60.0, 1.0), lights={1: "green"})  # from the route's start
    t = drive(s, np.arange(60.0, 101.0, 1.0), t0=t, lights={1: "red"})
    drive(s, [101.0] * 20, speed=0.0, t0=t, lights={1: "red"})
    score = s.finish()
    assert not [e for e in score.events if e.kind == lb.RED_LIGHT]
    assert score.extras["red_light_stops"] == 1
    assert score.extras["time_to_stop_s"] == pytest.approx(4.1, abs=0.11)  # from 60 m before the line


def test_minimum_speed_checkpoints():
    s = RouteScorer(straight(), config=CFG)
    drive(s, np.arange(0.0, 196.0, 0.5), speed=5.0, traffic=[10.0])
    score = s.finish()
    values = score.extras["min_speed_checkpoints"]
    assert values == [50.0, 50.0, 50.0, 50.0]
    assert score.infraction_penalty == pytest.approx(0.85 ** 4)
    # as fast as the traffic, or no traffic at all: no infraction
    s2 = RouteScorer(straight(), config=CFG)
    drive(s2, np.arange(0.0, 196.0, 1.0), speed=10.0)
    assert s2.finish().extras["min_speed_checkpoints"] == [100.0] * 4


def test_route_deviation_ends_the_route():
    s = RouteScorer(straight(), config=CFG)
    drive(s, [0.0, 10.0, 20.0, 20.0], ys=[0.0, 0.0, 0.0, 31.0])
    assert s.ended == lb.ROUTE_DEVIATION
    score = s.finish()
    assert score.status == "Failed - Agent deviated from the route"
    assert score.route_completion == pytest.approx(0.1, abs=0.01)


def test_blocked_ends_the_route():
    s = RouteScorer(straight(), config=CFG)
    t = drive(s, np.arange(0.0, 50.0, 1.0))
    drive(s, [50.0] * 200, speed=0.0, t0=t)
    assert s.ended == lb.VEHICLE_BLOCKED
    assert s.finish().duration_s == pytest.approx(t + 10.0, abs=0.2)


def test_route_timeout_grows_with_progress():
    # 30 s to start with, + 1 s per metre at 10 % of 36 km/h (1 m/s): 50 m of progress buys 50 s more
    s = RouteScorer(straight(), config=CFG)
    t = drive(s, np.arange(0.0, 50.0, 1.0), speed=1.0)
    # circle in place (moving, not blocked) until the time runs out
    drive(s, [50.0] * 1000, speed=1.0, t0=t)
    assert s.ended == lb.ROUTE_TIMEOUT
    assert s.finish().duration_s == pytest.approx(30.0 + 49.5, abs=0.7)


def test_scenario_timeout():
    s = RouteScorer(straight(), scenarios=[Scenario("junction", 40.0, 60.0, 5.0)], config=CFG)
    t = drive(s, np.arange(0.0, 45.0, 1.0))
    drive(s, [45.0] * 80, speed=0.5, t0=t)  # crawling inside the scenario for 8 s
    events = [e for e in s.finish().events if e.kind == lb.SCENARIO_TIMEOUT]
    assert len(events) == 1
    fast = RouteScorer(straight(), scenarios=[Scenario("junction", 40.0, 60.0, 5.0)], config=CFG)
    drive(fast, np.arange(0.0, 100.0, 1.0))
    assert not [e for e in fast.finish().events if e.kind == lb.SCENARIO_TIMEOUT]


def test_speeding_extra_is_reported_not_penalised():
    s = RouteScorer(straight(limit_kph=36.0), config=CFG)  # 10 m/s
    xs = np.arange(0.0, 196.0, 1.0)
    drive(s, xs[:100], speed=12.0)
    drive(s, xs[100:], speed=9.0, t0=10.0)
    score = s.finish()
    assert score.extras["speeding_events"] == 1
    assert score.extras["speeding_percent"] == pytest.approx(100 * 12 * 99 / (12 * 99 + 9 * 96 + 9 * 0.0), rel=0.05)
    assert score.infraction_penalty == 1.0


def test_lane_invasions_counted_by_kind():
    s = RouteScorer(straight(), config=CFG)
    drive(s, [0.0])
    s.lane_invasion(0.1, [1])
    s.lane_invasion(0.2, [2, 3])
    assert s.finish().extras["lane_crossings"] == {"solid": 2, "broken": 1, "other": 0}


def test_a_leaderboard_file_of_several_routes_needs_the_route_id(tmp_path):
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.scoring.route import leaderboard_route_ids

    def route(rid: str, y_end: float) -> str:
        return (f'<route id="{rid}" town="Town12"><weathers/><waypoints><position x="0" y="0" z="0"/>'
                f'<position x="0" y="{y_end}" z="0"/></waypoints><scenarios/></route>')

    path = tmp_path / "routes_training.xml"
    path.write_text("<routes>" + route("0", 30) + route("17", 80) + route("3", 50) + "</routes>")
    assert leaderboard_route_ids(path.read_text()) == ["0", "17", "3"]
    with pytest.raises(DataError, match=r"holds 3 routes \(ids '0', '17', '3'\).*--route-id") as exc:
        load_route(path)
    assert exc.value.path == str(path)
    assert load_route(path, route_id="17").end[1] == pytest.approx(-80.0)
    assert load_route(path, route_id="3").end[1] == pytest.approx(-50.0)
    with pytest.raises(DataError, match="no route with id '4'"):
        load_route(path, route_id="4")
    path.write_text("<routes>" + route("5", 30) + route("5", 80) + "</routes>")
    with pytest.raises(DataError, match="2 routes have id '5'"):
        load_route(path, route_id="5")
    (tmp_path / "r.csv").write_text("x,y\n0,0\n10,0\n")
    with pytest.raises(DataError, match="picks one route of a leaderboard routes XML"):
        load_route(tmp_path / "r.csv", route_id="0")


def test_route_files(tmp_path):
    (tmp_path / "r.csv").write_text("x,y,speed_limit_kph\n0,0,50\n10,0,50\n20,5,50\n")
    route = load_route(tmp_path / "r.csv")
    assert route.length == pytest.approx(10 + math.hypot(10, 5))
    assert route.speed_limit_at(0.0) == pytest.approx(50 / 3.6)
    assert np.max(np.diff(route.cumulative)) <= 2.0 + 1e-9  # resampled
    (tmp_path / "r.xml").write_text('<routes><route id="0" town="Town12"><waypoints>'
                                    '<position x="0" y="0" z="0"/><position x="0" y="30" z="0"/>'
                                    '</waypoints></route></routes>')
    xml = load_route(tmp_path / "r.xml", lane_width_m=3.0)
    assert xml.end[1] == pytest.approx(-30.0)  # CARLA's y to the right becomes ROS's y to the left
    assert xml.lane_bounds == (-1.5, 1.5)
    from regionadapt_ros.core.errors import DataError

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="x and y"):
        load_route(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="cannot read"):
        load_route(tmp_path / "missing.json")


def test_a_drive_is_credited_only_with_what_it_drives_along_the_route():
    """Run backwards from the route's end, a drive gains no route completion (it scored "Perfect" after one tick
    when it was matched anywhere); a recording that starts 50 m along a 100 m route is matched there and
    credited with the 50 m it drives."""
    backwards = RouteScorer(straight(100.0), config=CFG)
    drive(backwards, np.arange(100.0, 0.0, -1.0), yaw=math.pi)
    score = backwards.finish()
    assert score.route_completion == 0.0 and backwards.ended != "completed" and score.driving_score == 0.0
    late = RouteScorer(straight(100.0), config=CFG)
    drive(late, np.arange(50.0, 101.0, 1.0))
    score = late.finish()
    assert late.ended == "completed" and score.route_completion == pytest.approx(0.5, abs=0.01)
    assert score.status == "Failed" and score.extras["start_station_m"] == pytest.approx(50.0, abs=0.5)
    # a route that doubles back: drifting 1.8 m towards the return leg does not jump ahead onto it
    xs = np.arange(0.0, 30.0, 0.5)
    u_turn = RoutePath(np.array([[0.0, 0.0], [30.0, 0.0], [30.0, 3.5], [0.0, 3.5]]), (-1.75, 1.75))
    s = RouteScorer(u_turn, config=CFG)
    drive(s, xs[:12])  # to x = 5.5
    s.step(EgoState(1.2, 6.0, 1.8, 0.0, 10.0))
    assert s.completion_percent < 15.0  # about 6 m of 63.5 m, not the 58 m of the station on the return leg


def test_a_light_that_turns_red_after_the_tail_crossed_is_no_infraction():
    """10 m/s at 10 Hz, line at x = 48, red from when the centre is at 52: the leaderboard's tail segment then
    spans 48.55-50.04 m, past the line; the tail crossed while the light was green."""
    s = RouteScorer(straight(), stop_lines=[stop_line_at(48.0)], config=CFG)
    for i in range(0, 60):
        s.step(EgoState(1.0 + 0.1 * i, float(i), 0.0, 0.0, 10.0), {1: "green" if i < 52 else "red"})
    assert not [e for e in s.finish().events if e.kind == lb.RED_LIGHT]
    # red a tick before the tail reaches the line: still the sweep that catches a fast car
    fast = RouteScorer(straight(), stop_lines=[stop_line_at(100.0)], config=CFG)
    t = drive(fast, np.arange(0.0, 90.0, 3.0), speed=30.0, lights={1: "green"})
    drive(fast, np.arange(90.0, 120.0, 3.0), speed=30.0, t0=t, lights={1: "red"})
    assert len([e for e in fast.finish().events if e.kind == lb.RED_LIGHT]) == 1


def test_a_leaderboard_xml_is_read_in_the_encoding_its_declaration_names(tmp_path):
    from regionadapt_ros.core.errors import DataError

    body = ('<routes><route id="Gärtnerstraße" town="Town10HD"><waypoints><position x="0" y="0" z="0"/>'
            '<position x="40" y="0" z="0"/></waypoints></route></routes>')
    latin = tmp_path / "latin1.xml"
    latin.write_bytes(b'<?xml version="1.0" encoding="ISO-8859-1"?>' + body.encode("latin-1"))
    assert load_route(latin, route_id="Gärtnerstraße").end[0] == pytest.approx(40.0)
    utf8_bom = tmp_path / "bom.xml"
    utf8_bom.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert load_route(utf8_bom, route_id="Gärtnerstraße").end[0] == pytest.approx(40.0)
    # Latin-1 bytes that do not say so are not well-formed UTF-8 XML: refused, not misread.
    undeclared = tmp_path / "undeclared.xml"
    undeclared.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataError, match="not a route file: ParseError"):
        load_route(undeclared, route_id="Gärtnerstraße")
