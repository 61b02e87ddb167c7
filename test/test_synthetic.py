"""Synthetic regional data: determinism, region rules in the labels, the expert driver, the renderer's traffic
lights, the lidar simulator and drives."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from regionadapt_ros.adaptation.regions import REGIONS, get_region
from regionadapt_ros.adaptation.render import DrawnBox, render_camera, simulate_lidar
from regionadapt_ros.adaptation.scene import (
    STEER_LIMIT_RAD,
    STOP_LINE_MARGIN_M,
    TL_GREEN,
    TL_NONE,
    TL_RED,
    CurvatureProfile,
    LaneLayout,
    Scene,
    TrafficLight,
    Vehicle,
    expert_control,
    scene_labels,
    stop_accel,
    target_speed,
)
from regionadapt_ros.adaptation.synthetic import DriveGenerator, generate_samples, sample_rng, sample_scene
from regionadapt_ros.core.contracts import BEV, LABELS, OBSTACLE_MAX_M
from regionadapt_ros.core.preprocess import bev_grid

TL = LABELS.index("tl_state")
ACCEL = LABELS.index("accel")
STEER = LABELS.index("steering")


def straight_scene(region: str = "urban_day", speed: float = 10.0, **kw) -> Scene:
    spec = get_region(region)
    layout = LaneLayout(spec.lane_width_m, 1, 1 if spec.oncoming_lanes else 0, 0, spec.driving_side)
    defaults = {"ego_lat": layout.ego_lane_centre, "ego_heading": 0.0}
    defaults.update(kw)
    return Scene(spec, CurvatureProfile.straight(), layout, speed=speed, **defaults)


def red_light(stop_s: float, state: int = TL_RED, **kw) -> TrafficLight:
    base = {
        "housing_s": stop_s + 2.0,
        "housing_lat": -4.5,
        "housing_height": 3.5,
        "pole_lat": -4.5,
        "horizontal": False,
    }
    base.update(kw)
    return TrafficLight(stop_s=stop_s, state=state, **base)


# --- regions -------------------------------------------------------------------------------------------


def test_unknown_region_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown region 'atlantis'") as exc:
        get_region("atlantis")
    for name in REGIONS:
        assert name in str(exc.value)


def test_every_region_names_a_known_primary_metric():
    assert {"urban_day", "urban_night", "highway", "mountain", "left_hand"} <= set(REGIONS)
    for spec in REGIONS.values():
        assert isinstance(spec.primary_metric_higher_is_better, bool)


# --- determinism ---------------------------------------------------------------------------------------


def test_same_seed_gives_identical_samples_and_another_seed_differs():
    a = generate_samples("mountain", 12, seed=3, workers=1, progress=False)
    b = generate_samples("mountain", 12, seed=3, workers=1, progress=False)
    c = generate_samples("mountain", 12, seed=4, workers=1, progress=False)
    for key in ("images", "bev", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["images"], c["images"])
    assert a["images"].shape == (12, 96, 160, 3) and a["images"].dtype == np.uint8
    assert a["bev"].shape == (12, BEV.channels, BEV.rows, BEV.cols) and a["bev"].dtype == np.float16
    assert a["labels"].shape == (12, len(LABELS)) and a["labels"].dtype == np.float32


def test_worker_count_does_not_change_the_output():
    one = generate_samples("urban_night", 70, seed=11, workers=1, progress=False)
    two = generate_samples("urban_night", 70, seed=11, workers=2, progress=False)
    for key in ("images", "bev", "labels"):
        np.testing.assert_array_equal(one[key], two[key])


# --- labels per region ---------------------------------------------------------------------------------


def _scenes(region: str, n: int) -> list[Scene]:
    return [sample_scene(region, sample_rng(21, region, i)) for i in range(n)]


def test_traffic_light_label_distribution_follows_the_region():
    highway = np.array([scene_labels(s)[TL] for s in _scenes("highway", 150)])
    assert (highway == TL_NONE).all()
    for region in ("urban_day", "urban_night", "left_hand"):
        tl = np.array([scene_labels(s)[TL] for s in _scenes(region, 300)]).astype(int)
        counts = np.bincount(tl, minlength=4)
        assert (counts > 0.08 * tl.size).all(), (region, counts)


def test_labels_are_finite_and_in_range_in_every_region():
    for region in REGIONS:
        labels = np.stack([scene_labels(s) for s in _scenes(region, 80)])
        assert np.isfinite(labels).all()
        assert (np.abs(labels[:, STEER]) <= STEER_LIMIT_RAD).all()
        assert ((labels[:, ACCEL] >= -6.0) & (labels[:, ACCEL] <= 3.0)).all()
        dist = labels[:, LABELS.index("obstacle_distance")]
        assert ((dist >= 0) & (dist <= OBSTACLE_MAX_M)).all()
        free = labels[:, LABELS.index("free_space")]
        assert ((free >= 0) & (free <= 1)).all()


def test_mountain_roads_bend_more_and_highway_drives_faster_than_urban():
    def col(region: str, name: str) -> np.ndarray:
        return np.array([scene_labels(s)[LABELS.index(name)] for s in _scenes(region, 150)])

    assert np.mean(np.abs(col("mountain", "curvature"))) > 2.5 * np.mean(np.abs(col("urban_day", "curvature")))
    assert np.median(col("highway", "speed")) > 1.5 * np.median(col("urban_day", "speed"))


# --- renderer: traffic lights --------------------------------------------------------------------------


def _light_boxes(region: str, n: int) -> list[DrawnBox]:
    boxes: list[DrawnBox] = []
    for scene in _scenes(region, n):
        drawn: list[DrawnBox] = []
        render_camera(scene, (96, 160), drawn=drawn)
        boxes += [b for b in drawn if b.kind == "tl_housing" and b.info["facing_ego"] and b.info["governs_ego"]]
    return boxes


def test_left_hand_lights_are_horizontal_with_red_at_the_right_end():
    boxes = _light_boxes("left_hand", 60)
    assert len(boxes) >= 10
    for box in boxes:
        assert box.width > 1.5 * box.height
        assert box.info["lamp_states"][2] == TL_RED
        if box.info["state"] == TL_RED:
            assert box.info["lit_index"] == 2


def test_urban_day_lights_are_mostly_vertical_with_red_on_top_and_visible():
    boxes = _light_boxes("urban_day", 60)
    vertical = [b for b in boxes if b.height > 1.5 * b.width]
    assert len(vertical) >= 0.7 * len(boxes) >= 7
    for box in vertical:
        assert box.info["lamp_states"][0] == TL_RED
        assert box.height >= 6.0  # never below a few pixels at the model size
        if box.depth >= 12.0:  # a light right above the car may leave the top of the picture; farther, never
            assert box.x0 >= 0 and box.x1 <= 160 and box.y0 >= 0 and box.y1 <= 96
    # the samples also hold lights close up, as a driver passes them on the way to its stop line
    assert any(b.depth < 8.0 for b in boxes)


def test_night_is_darker_but_the_lit_lamp_still_glows():
    scene = straight_scene(lights=[red_light(25.0)])
    night = dataclasses.replace(scene, region=get_region("urban_night"))
    drawn: list[DrawnBox] = []
    day_img = render_camera(scene, (192, 320))
    night_img = render_camera(night, (192, 320), drawn=drawn)
    assert night_img.mean() < 0.5 * day_img.mean()
    (box,) = [b for b in drawn if b.kind == "tl_housing"]
    # The lit lamp is the top one: look at the top third of the housing.
    top = night_img[int(box.y0) : int(box.y0 + box.height / 3) + 1, int(box.x0) : int(box.x1) + 1]
    red, green, _ = np.median(top.reshape(-1, 3).astype(int), axis=0)
    assert red > 150 and red > green + 60


def test_renderer_draws_at_any_requested_size():
    scene = sample_scene("highway", sample_rng(0, "highway", 0))
    assert render_camera(scene, (192, 320)).shape == (192, 320, 3)
    assert render_camera(scene, (50, 80)).shape == (50, 80, 3)


# --- expert driver -------------------------------------------------------------------------------------


def test_expert_brakes_near_a_red_light_and_not_for_green():
    red = straight_scene(speed=10.0, lights=[red_light(20.0)])
    green = straight_scene(speed=10.0, lights=[red_light(20.0, TL_GREEN)])
    assert expert_control(red)[1] < -1.0
    assert expert_control(green)[1] >= 0.0


def test_expert_stops_before_the_stop_line():
    region = get_region("urban_day")
    v, x, dt = 13.9, 0.0, 0.05
    line = 45.0
    for _ in range(1000):
        a = max(stop_accel(region, v, line - STOP_LINE_MARGIN_M - x), -6.0)
        v = max(0.0, v + a * dt)
        x += v * dt
    assert v < 0.05
    assert line - 1.5 < x < line


def test_highway_target_speed_is_higher_than_urban():
    straight = CurvatureProfile.straight()
    assert target_speed(get_region("highway"), straight) > 2.0 * target_speed(get_region("urban_day"), straight)


def test_mountain_drives_slower_than_urban_in_the_same_tight_curve():
    curve = CurvatureProfile(np.array([0.0, 1.0]), np.array([0.03, 0.03]))
    mountain = target_speed(get_region("mountain"), curve)
    urban = target_speed(get_region("urban_day"), curve)
    assert mountain < urban
    assert mountain == pytest.approx(math.sqrt(get_region("mountain").curve_lat_accel_mps2 / 0.03), rel=1e-6)


def test_same_perception_different_speed_limit_changes_accel():
    urban = expert_control(straight_scene("urban_day", speed=12.5))[1]
    left_hand = expert_control(straight_scene("left_hand", speed=12.5))[1]  # 40 km/h there
    assert urban > 0.0 > left_hand


def test_steering_corrects_offset_and_follows_curves_on_either_side_of_the_road():
    for region in ("urban_day", "left_hand"):
        centre = straight_scene(region).layout.ego_lane_centre
        left_of_lane = straight_scene(region, ego_lat=centre + 0.5)
        assert expert_control(left_of_lane)[0] < 0.0
        pointing_left = straight_scene(region, ego_heading=0.05)
        assert expert_control(pointing_left)[0] < 0.0
        bend_left = dataclasses.replace(
            straight_scene(region), profile=CurvatureProfile(np.array([0.0, 1.0]), np.array([0.02, 0.02]))
        )
        assert expert_control(bend_left)[0] == pytest.approx(math.atan(2.7 * 0.02), abs=1e-6)


def test_expert_follows_a_lead_and_brakes_for_an_obstacle():
    lead = Vehicle("car", s=14.0, lat=-1.875, length=4.5, width=1.8, height=1.5, speed=25.0)
    close = straight_scene("highway", speed=25.0, vehicles=[lead])
    assert expert_control(close)[1] < -0.5
    far = straight_scene("highway", speed=25.0, vehicles=[dataclasses.replace(lead, s=80.0)])
    assert expert_control(far)[1] > 0.0
    rock = Vehicle("rock", s=20.0, lat=-1.5, length=1.0, width=1.0, height=0.8)
    blocked = straight_scene("mountain", speed=10.0, vehicles=[rock])
    assert expert_control(blocked)[1] < -1.0
    assert scene_labels(blocked)[LABELS.index("obstacle_distance")] == pytest.approx(19.5)


# --- lidar ---------------------------------------------------------------------------------------------


def test_lidar_has_no_return_rays_and_sees_an_obstacle_at_its_distance():
    car = Vehicle("car", s=22.25, lat=-1.625, length=4.5, width=1.8, height=1.5)  # rear face 20 m ahead
    scene = straight_scene(vehicles=[car])
    points = simulate_lidar(scene, np.random.default_rng(0))
    assert points.dtype == np.float32 and points.shape[1] == 4
    assert 8000 <= points.shape[0] <= 20000
    no_return = np.isnan(points[:, 0])
    assert 0.05 < no_return.mean() < 0.9  # upward rays, dropouts
    pts = points[~no_return]
    on_car = pts[(np.abs(pts[:, 1]) < 0.8) & (pts[:, 2] > -1.4)]  # the ego is centred in the car's lane
    assert on_car.shape[0] > 20
    assert np.min(on_car[:, 0]) == pytest.approx(20.0, abs=0.3)

    grid = bev_grid(points)
    centre_cols = slice(BEV.cols // 2 - 3, BEV.cols // 2)  # y from -2.4 m to 0
    tall = np.nonzero(grid[1, :, centre_cols].max(axis=1) > 0.3)[0]
    nearest_row = tall.max()  # rows count down from the far edge
    x_near = BEV.x_max - (nearest_row + 1) * BEV.cell
    assert x_near == pytest.approx(20.0, abs=BEV.cell)

    empty = bev_grid(simulate_lidar(straight_scene(), np.random.default_rng(0)))
    assert empty[1, :, centre_cols].max() < 0.3


# --- drives --------------------------------------------------------------------------------------------


def test_drive_frames_are_temporally_coherent_and_reproducible():
    frames = list(DriveGenerator("urban_day", seed=5, hz=10.0, image_size=(48, 80)).frames(30))
    again = list(DriveGenerator("urban_day", seed=5, hz=10.0, image_size=(48, 80)).frames(3))
    np.testing.assert_array_equal(frames[2].rgb, again[2].rgb)
    assert frames[0].rgb.shape == (48, 80, 3)
    for prev, cur in itertools.pairwise(frames):
        assert cur.t - prev.t == pytest.approx(0.1)
        assert abs(cur.speed - prev.speed) <= 0.1 * 6.0 + 1e-6
        moved = math.hypot(cur.pose[0] - prev.pose[0], cur.pose[1] - prev.pose[1])
        assert moved == pytest.approx(0.5 * (prev.speed + cur.speed) * 0.1, abs=0.05)
        assert abs(cur.labels[LABELS.index("lane_offset")] - prev.labels[LABELS.index("lane_offset")]) < 0.15
        assert np.isnan(cur.points[:, 0]).any()
        # The expert's command is what drove the ego from prev to cur.
        assert cur.speed == pytest.approx(max(0.0, prev.speed + prev.expert_control[1] * 0.1), abs=1e-6)
    # Neighbouring frames look alike; frames 3 s apart much less so.
    near = np.mean([np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() for a, b in itertools.pairwise(frames[:5])])
    far = np.abs(frames[0].rgb.astype(int) - frames[-1].rgb.astype(int)).mean()
    assert near < far


def test_a_drive_stops_at_a_red_light_and_moves_on_when_it_turns_green():
    gen = DriveGenerator("urban_day", seed=1, hz=5.0, image_size=(24, 40))
    states = []
    for frame in gen.frames(170):
        states.append((int(frame.labels[TL]), frame.speed))
    stopped_at_red = [v for tl, v in states if tl == TL_RED and v < 0.05]
    assert stopped_at_red, "the ego never waited at a red light"
    last_red = max(i for i, (tl, v) in enumerate(states) if tl == TL_RED and v < 0.05)
    assert max(v for _, v in states[last_red:]) > 5.0


# --- scenery beyond a hairpin ---------------------------------------------------------------------------


def test_scenery_is_cut_where_the_road_has_turned_back():
    """The road is a flat curve, so a hairpin's far side can lie across the road ahead: a rock wall there came
    back as lidar returns standing in the ego's lane. Scenery past SCENERY_MAX_TURN_RAD of turn is not
    rendered; on a straight road nothing is cut."""
    from regionadapt_ros.adaptation.scene import SCENERY_MAX_TURN_RAD, Facade, RoadGeometry

    bend = CurvatureProfile(np.array([0.0, 1.0]), np.array([0.05, 0.05]))
    lo, hi = RoadGeometry(bend, 0.0, 0.0).scenery_range
    assert hi == pytest.approx(SCENERY_MAX_TURN_RAD / 0.05, abs=0.5)
    assert lo == pytest.approx(-SCENERY_MAX_TURN_RAD / 0.05, abs=0.5)
    straight = RoadGeometry(CurvatureProfile.straight(), 0.0, 0.0)
    assert straight.scenery_range == (straight.s_min, straight.s_max)

    far_wall = Facade(60.0, 100.0, -6.0, -8.0, 12.0, (120, 110, 100), "rock_wall", seed=3)
    for profile, cut in ((bend, True), (CurvatureProfile.straight(), False)):
        without = dataclasses.replace(straight_scene("mountain"), profile=profile)
        with_wall = dataclasses.replace(without, facades=[far_wall])
        same_lidar = np.array_equal(simulate_lidar(without, np.random.default_rng(0)),
                                    simulate_lidar(with_wall, np.random.default_rng(0)), equal_nan=True)
        same_camera = np.array_equal(render_camera(without, (96, 160)), render_camera(with_wall, (96, 160)))
        assert same_lidar == cut and same_camera == cut
