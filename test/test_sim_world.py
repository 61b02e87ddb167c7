"""The closed-loop world: its map frame agrees with the generator's own motion, a seed fixes the road whoever
drives, the ego runs into things and stops, and lane markings crossed are reported."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regionadapt_ros.adaptation.scene import expert_control
from regionadapt_ros.sim.course import Course, RouteSpec, region_routes
from regionadapt_ros.sim.world import EGO_CENTRE_AHEAD_M, ClosedLoopWorld, boxes_overlap


def test_map_frame_pose_follows_the_generators_motion():
    world = ClosedLoopWorld("mountain", 3, 200.0)
    for _ in range(120):
        world.apply(*expert_control(world.scene()))
    pose = world.pose
    # the generator integrates x, y, yaw in Cartesian coordinates; the world maps (S, d, psi) through the
    # reference line: both describe the same motion
    assert math.hypot(pose.x - world.x, pose.y - world.y) < 0.10
    assert abs((pose.yaw - world.yaw + math.pi) % (2 * math.pi) - math.pi) < 0.02
    assert math.hypot(pose.centre_x - pose.x, pose.centre_y - pose.y) == pytest.approx(EGO_CENTRE_AHEAD_M)


def test_route_starts_at_the_ego_lane_centre_and_has_the_route_length():
    world = ClosedLoopWorld("urban_day", 1, 250.0, start_offset=0.0, start_heading=0.0)
    route = world.route_path()
    assert route.points[0] == pytest.approx([world.pose.x, world.pose.y], abs=1e-6)
    assert route.length == pytest.approx(250.0, rel=0.02)  # the lane centre, not the reference line
    lo, hi = route.lane_bounds
    assert lo < 0 < hi and hi - lo == pytest.approx(world.layout.lanes_ego * world.layout.lane_width)


def test_a_seed_fixes_the_road_and_the_lights_whoever_drives():
    a = ClosedLoopWorld("urban_night", 7, 300.0)
    b = ClosedLoopWorld("urban_night", 7, 300.0)
    for _ in range(60):
        a.apply(*expert_control(a.scene()))
        b.apply(0.02, -0.5)  # a different driver
    assert [(s.p0, s.p1) for s in a.stop_lines()] == [(s.p0, s.p1) for s in b.stop_lines()]
    assert a.light_phases() == b.light_phases()
    assert a.light_states() == b.light_states()
    assert np.array_equal(a.route_path().points, b.route_path().points)
    other = ClosedLoopWorld("urban_night", 8, 300.0)
    assert a.light_phases() != other.light_phases()


def test_running_into_a_rock_stops_the_ego():
    world = ClosedLoopWorld("highway", 2, 200.0, start_speed=10.0, start_offset=0.0, start_heading=0.0)
    world.place_static("rock", 12.0, world.layout.ego_lane_centre)
    hits = []
    for _ in range(30):
        hits = world.apply(0.0, 0.0)
        if hits:
            break
    assert hits and hits[0].type_id == "static.prop.rock" and hits[0].other_id > 0
    assert world.v == 0.0
    station = world.S
    world.apply(0.0, 0.0)  # standing still, nothing moves it into the rock
    assert abs(world.S - station) < 1e-9


def test_steering_off_the_road_hits_the_guardrail_and_crosses_markings():
    world = ClosedLoopWorld("highway", 4, 300.0, start_speed=15.0, start_offset=0.0, start_heading=0.0)
    crossed, hits = [], []
    for _ in range(60):
        before = world.d
        hits = world.apply(-0.05, 0.0)  # steer right, towards the outer edge and its guardrail
        crossed += world.lane_markings_crossed(before, world.d)
        if hits:
            break
    assert hits and hits[0].type_id == "static.guardrail" and hits[0].other_id == 0
    assert 2 in crossed  # the solid outer edge line


def test_boxes_overlap_separating_axes():
    square = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], float)
    shift = np.array([1.0, 0.0])
    assert boxes_overlap(square, square + 1.5 * shift)
    assert not boxes_overlap(square, square + 2.5 * shift)
    diamond = np.array([[0, 1.5], [1.5, 0], [0, -1.5], [-1.5, 0]], float)
    assert not boxes_overlap(square, diamond + 2.9 * shift)  # its tip stops at x = 1.4
    assert boxes_overlap(square, diamond + 2.4 * shift)  # its tip reaches into the square


def test_course_chains_segments_and_moves_the_ego_into_the_next():
    spec = RouteSpec("two", (("urban_day", 60.0), ("highway", 80.0)), seed=3)
    course = Course(spec)
    route = course.path
    assert route.length == pytest.approx(sum(w.route_path().length for w in course.worlds), rel=1e-6)
    # the second segment starts where the first one's route ends
    assert course.worlds[1].route_path().points[0] == pytest.approx(course.worlds[0].route_path().points[-1],
                                                                    abs=1e-6)
    before = course.pose
    for _ in range(200):
        assert course.region == "urban_day"
        before = course.pose
        course.apply(*expert_control(course.world.scene()))
        if course.region != "urban_day":
            break
    assert course.region == "highway"
    # the ego's map-frame position is continuous across the boundary, and it is on the route
    after = course.pose
    assert math.hypot(after.x - before.x, after.y - before.y) < 0.1 * 16 + 0.5
    s_route, lateral, _ = route.project(after.centre_x, after.centre_y)
    assert abs(lateral) < 1.0 and s_route == pytest.approx(course.worlds[0].route_path().length, abs=5.0)


def test_route_specs_are_checked():
    with pytest.raises(ValueError, match="length"):
        RouteSpec("x", (("urban_day", 0.0),), 0)
    with pytest.raises(ValueError, match="segment"):
        RouteSpec("x", (), 0)
    assert [r.seed for r in region_routes("highway", 3, 10)] == [10, 11, 12]


def test_the_expert_stops_its_front_before_the_stop_line_of_a_red_light():
    """The expert stops with its front bumper before the line, where its camera still sees the light."""
    from regionadapt_ros.adaptation.scene import EGO_FRONT_M, obstacle_distance

    for seed in range(1000, 1020):
        world = ClosedLoopWorld("urban_day", seed, 300.0)
        lights = world.light_stations()
        for _ in range(400):
            scene = world.scene()
            world.apply(*expert_control(scene))
            queued = obstacle_distance(scene) < 20.0  # waiting behind a car waiting at the light
            stopped_at = [s for s in lights.values() if world.v < 0.05 and 0 < s - world.S < 15.0 and not queued]
            if stopped_at:
                front_to_line = stopped_at[0] - (world.S + EGO_FRONT_M)
                assert 0.0 < front_to_line < 2.0
                return
    pytest.fail("no stop at a red light in 20 routes")
