"""Routes of several regions: the road is continuous across a join, a route keeps clear of itself, and the
geofences let the region manager switch where the road changes (sim/course.py, sim/geo.py)."""

from __future__ import annotations

import numpy as np
import pytest

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.region_resolver import ResolverConfig
from regionadapt_ros.region_session import RegionSession
from regionadapt_ros.sim.course import (
    DEMO_COURSE,
    JOIN_STRAIGHT_M,
    MIN_CLEARANCE_M,
    Course,
    RouteSpec,
    route_clearance,
)
from regionadapt_ros.sim.geo import switch_lead_m, to_lat_lon, write_course_geofences
from regionadapt_ros.sim.world import JOIN_EASE_M, ClosedLoopWorld


def _curvature(world: ClosedLoopWorld, stations: np.ndarray) -> np.ndarray:
    return np.interp(stations, np.asarray(world.world.knots_station), np.asarray(world.world.knots_k))


def test_straighten_from_eases_the_curvature_to_zero_and_keeps_the_road_before():
    plain = ClosedLoopWorld("mountain", 7, 170.0)
    straight = ClosedLoopWorld("mountain", 7, 170.0, straight_end_m=JOIN_STRAIGHT_M)
    start = 170.0 - JOIN_STRAIGHT_M
    assert np.abs(_curvature(plain, np.arange(start, 260.0))).max() > 0.0  # the seed's road bends there
    assert np.abs(_curvature(straight, np.arange(start, 400.0))).max() == 0.0
    before = np.arange(0.0, start - JOIN_EASE_M, 0.5)
    np.testing.assert_array_equal(_curvature(straight, before), _curvature(plain, before))
    ease = np.arange(start - JOIN_EASE_M, start, 0.5)
    assert np.all(np.abs(_curvature(straight, ease)) <= np.abs(_curvature(plain, ease[:1])) + 1e-12)
    # the route, lights and roadside are made from the straightened road: the route line ends straight
    pts = straight.route_path().points
    heading = np.arctan2(*np.diff(pts[-int(JOIN_STRAIGHT_M):], axis=0).T[::-1])
    assert np.ptp(np.unwrap(heading)) < 1e-6


@pytest.mark.parametrize("seed", [0, 5])
def test_the_road_is_straight_on_both_sides_of_every_join(seed):
    course = Course(RouteSpec("c", DEMO_COURSE, seed))
    for before, after in zip(course.worlds, course.worlds[1:], strict=False):
        end = before.length_m
        assert np.abs(_curvature(before, np.arange(end - JOIN_STRAIGHT_M, end + 50.0))).max() == 0.0
        assert np.abs(_curvature(after, np.arange(0.0, 30.0))).max() == 0.0
    assert np.abs(_curvature(course.worlds[-1], np.arange(0.0, 30.0))).max() == 0.0


def test_a_single_region_route_is_the_seeds_road():
    """The regional comparison's routes (one region each) are the worlds their seeds make: no run-out, no
    other road drawn, so its numbers stay reproducible from the seeds."""
    course = Course(RouteSpec("r", (("mountain", 300.0),), 1003))
    alone = ClosedLoopWorld("mountain", 1003, 300.0)
    np.testing.assert_array_equal(course.path.points, alone.route_path().points)


def test_demo_courses_keep_clear_of_themselves():
    """A mountain's hairpins turn the road back; the course draws other roads of the region where the seed's
    would bring the route back over itself (seeds 5, 15 and 19 cross their own route with the seeds' roads)."""
    clearances = {}
    for seed in range(20):
        course = Course(RouteSpec("c", DEMO_COURSE, seed))
        clearances[seed] = route_clearance([w.route_path().points for w in course.worlds])
        assert course.path.length == pytest.approx(sum(length for _, length in DEMO_COURSE), rel=0.01)
    assert min(clearances.values()) >= MIN_CLEARANCE_M, clearances


def test_a_course_is_the_same_every_time_it_is_built():
    a, b = (Course(RouteSpec("c", DEMO_COURSE, 19)) for _ in range(2))
    np.testing.assert_array_equal(a.path.points, b.path.points)


def _fix(types, x: float, y: float, t: float):
    lat, lon = to_lat_lon(x, y)
    return msgconv.build_navsatfix(types, lat, lon, 20.0, t, h_std_m=1.5, frame_id="gnss")


def test_the_region_manager_switches_where_the_road_changes(tmp_path):
    """Along the course at each region's speed limit, with the region manager's own hysteresis, every switch
    lands at the join where the next region's road begins (within one fix's travel): the fences lead the join
    by the switching distance, so neither region's model drives the other's road."""
    course = Course(RouteSpec("c", DEMO_COURSE, 0))
    config = ResolverConfig()
    fences = write_course_geofences(tmp_path / "fences.geojson", course, config)
    session = RegionSession.from_file(fences, "base", config)
    types = msgconv.rosbags_types(msgconv.rosbags_typestore())
    pts = course.path.points
    station = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))))
    joins = course.offsets[1:]
    switches: list[tuple[str, float]] = []
    s, t, hz = 0.0, 0.0, 10.0
    while s < station[-1] - 1.0:
        segment = int(np.searchsorted(course.offsets, s, side="right")) - 1
        speed = course.worlds[segment].spec.speed_limit_mps
        x, y = float(np.interp(s, station, pts[:, 0])), float(np.interp(s, station, pts[:, 1]))
        update = session.on_fix(_fix(types, x, y, t), t)
        if update.active_region_changed:
            switches.append((update.active_region_changed, s))
        s += speed / hz
        t += 1.0 / hz
    assert [r for r, _ in switches] == [r for r, _ in DEMO_COURSE]
    for (region, at), join, before in zip(switches[1:], joins, course.worlds[:-1], strict=True):
        step = before.spec.speed_limit_mps / hz
        assert abs(at - join) <= step + 1.0, (region, at, join)


def test_switch_lead_is_the_hysteresis_distance():
    config = ResolverConfig(enter_margin_m=10.0, exit_margin_m=5.0, confirm_s=0.5)
    assert switch_lead_m(config, 20.0) == pytest.approx(20.0)
    assert switch_lead_m(ResolverConfig(enter_margin_m=2.0, exit_margin_m=6.0, confirm_s=0.0), 30.0) == 6.0
    assert switch_lead_m(config, 0.0) == 10.0  # standing still: the margin alone
