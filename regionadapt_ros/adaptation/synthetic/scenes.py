"""Independent labelled scenes drawn from a region's distributions, and samples rendered from them."""

from __future__ import annotations

import math
import zlib

import numpy as np

from regionadapt_ros.adaptation.regions import RGB, RegionSpec, get_region
from regionadapt_ros.adaptation.render import render_camera, simulate_lidar
from regionadapt_ros.adaptation.scene import (
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    CurvatureProfile,
    Facade,
    Guardrail,
    LaneLayout,
    Look,
    Scene,
    TrafficLight,
    Vehicle,
    scene_labels,
    target_speed,
)
from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W

_CAR_COLOURS: tuple[RGB, ...] = (
    (200, 30, 35),
    (30, 60, 150),
    (225, 225, 225),
    (20, 20, 24),
    (120, 125, 130),
    (180, 180, 185),
    (40, 110, 60),
    (210, 170, 40),
    (90, 40, 30),
    (60, 150, 190),
)


_TRUCK_COLOURS: tuple[RGB, ...] = ((235, 235, 235), (200, 60, 40), (60, 80, 140), (160, 160, 150))


# Bumped whenever a change makes the same (region, seed, index) give a different sample; datasets record it in
# meta.json ("generator": {"version": ...}) so that a cached dataset from an older generator can be recognised.
GENERATOR_VERSION = 3


def _jittered(colour: RGB, rng: np.random.Generator, lo: float, hi: float, per_channel: float = 0.0) -> RGB:
    """A colour scaled by one random factor in [lo, hi) (and per channel by 1 ± per_channel), clipped to 255."""
    factor = rng.uniform(lo, hi)
    r, g, b = (int(min(255.0, c * factor * rng.uniform(1.0 - per_channel, 1.0 + per_channel))) for c in colour)
    return (r, g, b)


def _region_code(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def sample_rng(seed: int, region: str, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of (region, seed)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _region_code(region), int(index)]))


# --------------------------------------------------------------------------------------------------------
# Scene sampling


def random_profile(spec: RegionSpec, rng: np.random.Generator, s_from: float, s_to: float) -> tuple[list, list]:
    """Curvature knots (stations, curvatures) covering [s_from, s_to]: constant segments with linear transitions."""
    stations: list[float] = []
    curvatures: list[float] = []
    s = s_from - rng.uniform(0.0, spec.segment_length_range[1])
    while s < s_to:
        s = _append_segment(spec, rng, s, stations, curvatures)
    return stations, curvatures


def _append_segment(spec: RegionSpec, rng: np.random.Generator, s: float, stations: list, curvatures: list) -> float:
    length = rng.uniform(*spec.segment_length_range)
    if rng.random() < spec.curve_straight_prob:
        k = 0.0
    else:
        lo, hi = spec.curve_abs_range
        k = math.exp(rng.uniform(math.log(lo), math.log(hi))) * (1.0 if rng.random() < 0.5 else -1.0)
    transition = min(0.25 * length, 12.0)
    stations.extend((s + 0.5 * transition, s + length - 0.5 * transition))
    curvatures.extend((k, k))
    return s + length


def _vehicle(rng: np.random.Generator, spec: RegionSpec, s: float, lat: float, heading: float, speed: float) -> Vehicle:
    if rng.random() < spec.truck_prob:
        length, width, height = rng.uniform(7.0, 12.0), rng.uniform(2.4, 2.55), rng.uniform(3.0, 3.8)
        colour = _TRUCK_COLOURS[rng.integers(len(_TRUCK_COLOURS))]
        kind = "truck"
    else:
        length, width, height = rng.uniform(4.0, 4.9), rng.uniform(1.72, 1.92), rng.uniform(1.4, 1.65)
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
        kind = "car"
    return Vehicle(kind, s + 0.5 * length, lat, length, width, height, heading, speed, 0.0, colour)


def _rock(rng: np.random.Generator, spec: RegionSpec, s: float, lat: float) -> Vehicle:
    size = rng.uniform(0.5, 1.4)
    return Vehicle(
        "rock",
        s,
        lat,
        size * rng.uniform(0.8, 1.3),
        size * rng.uniform(0.8, 1.3),
        size * rng.uniform(0.5, 0.9),
        rng.uniform(-0.5, 0.5),
        0.0,
        0.0,
        _jittered(spec.palette.rock, rng, 0.85, 1.1, 0.05),
        int(rng.integers(1 << 30)),
    )


def _overlaps(vehicles: list[Vehicle], v: Vehicle) -> bool:
    for o in vehicles:
        if abs(o.lat - v.lat) < 0.5 * (o.width + v.width) + 0.3 and abs(o.s - v.s) < 0.5 * (o.length + v.length) + 2.0:
            return True
    return False


def _light(
    spec: RegionSpec, lay: LaneLayout, rng: np.random.Generator, stop_s: float, state: int, governs: bool
) -> TrafficLight:
    overhead = rng.random() < spec.tl_overhead_prob
    kerb = lay.ego_edge + lay.side * 0.7
    housing_s = stop_s + rng.uniform(*spec.tl_beyond_stop_line_m)
    if overhead:
        housing_lat = 0.5 * lay.ego_edge + rng.normal(0.0, 0.3)
        height = rng.uniform(5.0, 5.6)
    else:
        housing_lat = kerb
        height = rng.uniform(3.2, 3.9)
    return TrafficLight(
        stop_s=stop_s,
        state=state,
        housing_s=housing_s,
        housing_lat=housing_lat,
        housing_height=height,
        pole_lat=kerb,
        horizontal=bool(rng.random() < spec.tl_horizontal_prob),
        red_on_right=spec.tl_red_on_right,
        facing_ego=True,
        governs_ego=governs,
        arrow_panel=bool(state == TL_RED and rng.random() < spec.tl_arrow_panel_prob),
        go_colour=spec.tl_go_colour,
        yellow_colour=spec.tl_yellow_colour,
    )


def _back_light(spec: RegionSpec, lay: LaneLayout, rng: np.random.Generator, s: float) -> TrafficLight:
    """The light of the opposite direction, on the far side of the road, seen from behind."""
    lat = lay.oncoming_edge - lay.side * 0.7 if lay.lanes_oncoming else -lay.side * 2.0
    return TrafficLight(
        stop_s=s,
        state=TL_RED,
        housing_s=s,
        housing_lat=lat,
        housing_height=rng.uniform(3.2, 3.9),
        pole_lat=lat,
        horizontal=bool(rng.random() < spec.tl_horizontal_prob),
        red_on_right=spec.tl_red_on_right,
        facing_ego=False,
        governs_ego=False,
    )


def _buildings(
    spec: RegionSpec,
    rng: np.random.Generator,
    lat_edge: float,
    sign: float,
    s_from: float,
    s_to: float,
    gaps: list[tuple[float, float]],
) -> list[Facade]:
    """Blocks of buildings along one side of the road between two stations, leaving the cross streets free."""
    palette = spec.palette.buildings
    # Draw the random numbers in batches (one call per quantity) rather than per building: much faster.
    n_max = int((s_to - s_from) / 10.0) + 3
    lengths = rng.uniform(10.0, 35.0, n_max)
    spacing = np.where(rng.random(n_max) < 0.4, rng.uniform(1.0, 8.0, n_max), 0.0)
    colour_idx = rng.integers(len(palette), size=n_max)
    factors = rng.uniform(0.85, 1.12, n_max)[:, None] * rng.uniform(0.97, 1.03, (n_max, 3))
    setbacks = spec.roadside_m + rng.uniform(0.0, 2.0, n_max)
    heights = rng.uniform(6.0, 28.0, n_max)
    seeds = rng.integers(1 << 30, size=n_max)
    out = []
    s = s_from - float(rng.uniform(0.0, 20.0))
    for i in range(n_max):
        if s >= s_to:
            break
        s0, s1 = s, s + float(lengths[i])
        s = s1 + float(spacing[i])
        if any(s0 < b and s1 > a for a, b in gaps):
            continue
        r, g, b = (int(min(255.0, c * f)) for c, f in zip(palette[colour_idx[i]], factors[i], strict=True))
        lat = lat_edge + sign * float(setbacks[i])
        out.append(Facade(s0, s1, lat, sign * 15.0, float(heights[i]), (r, g, b), seed=int(seeds[i])))
    return out


def _roadside(
    spec: RegionSpec,
    lay: LaneLayout,
    rng: np.random.Generator,
    s_from: float,
    s_to: float,
    gaps: list[tuple[float, float]],
    valley_side: int,
) -> tuple[list[Facade], list[Guardrail], list[tuple[float, float]]]:
    """Buildings / rock walls, guardrails and street lamps between two stations."""
    lo, hi = lay.road_bounds
    facades: list[Facade] = []
    rails: list[Guardrail] = []
    lamps: list[tuple[float, float]] = []
    if spec.scenery == "urban":
        facades += _buildings(spec, rng, hi, 1.0, s_from, s_to, gaps)
        facades += _buildings(spec, rng, lo, -1.0, s_from, s_to, gaps)
    if spec.street_lamps:
        s = s_from + rng.uniform(0.0, 30.0)
        kerb = hi + 0.5 if rng.random() < 0.5 else lo - 0.5
        while s < s_to:
            lamps.append((s, kerb))
            s += rng.uniform(25.0, 35.0)
    if spec.guardrails == "both":
        rails.append(Guardrail(lay.ego_edge + lay.side * (spec.roadside_m + 0.4), s_from, s_to))
        rails.append(Guardrail(-lay.side * 1.6, s_from, s_to))
    elif spec.guardrails == "valley":
        valley_edge = hi if valley_side > 0 else lo
        wall_edge = lo if valley_side > 0 else hi
        rails.append(Guardrail(valley_edge + valley_side * (spec.roadside_m + 0.3), s_from, s_to))
        s = s_from
        while s < s_to:
            length = rng.uniform(20.0, 60.0)
            colour = _jittered(spec.palette.rock, rng, 0.8, 1.1)
            facades.append(
                Facade(
                    s,
                    s + length,
                    wall_edge - valley_side * (spec.roadside_m + rng.uniform(0.4, 1.5)),
                    -valley_side * 8.0,
                    rng.uniform(6.0, 22.0),
                    colour,
                    "rock_wall",
                    seed=int(rng.integers(1 << 30)),
                )
            )
            s += length
    return facades, rails, lamps


def _look(spec: RegionSpec, rng: np.random.Generator) -> Look:
    if spec.night:
        return Look(
            float(rng.uniform(0.8, 1.25)), (1.0, 1.0, 1.0), int(rng.integers(1 << 31)), int(rng.integers(1 << 31))
        )
    r, g, b = (float(t) for t in rng.uniform(0.92, 1.08, 3))
    return Look(float(rng.uniform(0.8, 1.15)), (r, g, b), int(rng.integers(1 << 31)), int(rng.integers(1 << 31)))


def sample_scene(spec: RegionSpec | str, rng: np.random.Generator) -> Scene:
    """An independent scene of the region: road, ego perturbation and speed, lights, traffic, obstacles."""
    spec = get_region(spec)
    lanes = int(rng.choice(spec.lanes_per_direction))
    lay = LaneLayout(
        spec.lane_width_m, lanes, lanes if spec.oncoming_lanes else 0, int(rng.integers(lanes)), spec.driving_side
    )
    knots_s, knots_k = random_profile(spec, rng, -70.0, 190.0)
    profile = CurvatureProfile(np.asarray(knots_s), np.asarray(knots_k))
    half = 0.5 * lay.lane_width - 0.25
    offset = float(np.clip(rng.normal(0.0, spec.offset_std_m), -half, half))
    heading = float(np.clip(rng.normal(0.0, spec.heading_std_rad), -3 * spec.heading_std_rad, 3 * spec.heading_std_rad))
    v_target = target_speed(spec, profile)
    lo_v, hi_v = spec.speed_range_mps
    if rng.random() < 0.6:
        speed = float(np.clip(v_target * rng.uniform(0.7, 1.1), lo_v, hi_v))
    else:
        speed = float(rng.uniform(lo_v, hi_v))

    lights: list[TrafficLight] = []
    gaps: list[tuple[float, float]] = []
    if rng.random() < spec.tl_prob:
        stop_s = float(rng.uniform(*spec.tl_distance_range_m))
        state = int(rng.choice([TL_RED, TL_YELLOW, TL_GREEN], p=spec.tl_state_probs))
        lights.append(_light(spec, lay, rng, stop_s, state, True))
        gaps.append((stop_s - 3.0, stop_s + 15.0))
        if rng.random() < 0.5:
            lights.append(_back_light(spec, lay, rng, stop_s + 13.0))
    if spec.tl_prob > 0 and rng.random() < spec.tl_distractor_prob:
        if rng.random() < 0.5:
            # A governing light beyond the labelled range: drawn, but the label is "none".
            stop_s = float(rng.uniform(68.0, 100.0))
            state = int(rng.choice([TL_RED, TL_YELLOW, TL_GREEN], p=spec.tl_state_probs))
            if not lights:
                lights.append(_light(spec, lay, rng, stop_s, state, True))
                gaps.append((stop_s - 3.0, stop_s + 15.0))
        else:
            lights.append(_back_light(spec, lay, rng, float(rng.uniform(12.0, 50.0))))

    vehicles: list[Vehicle] = []
    lo_r, hi_r = lay.road_bounds
    if rng.random() < spec.lead_prob:
        gap = float(rng.uniform(*spec.lead_gap_range_m))
        lead_speed = max(0.0, speed + rng.normal(0.0, spec.lead_rel_speed_std_mps))
        if (
            lights
            and lights[0].governs_ego
            and lights[0].state == TL_RED
            and gap < lights[0].stop_s
            and rng.random() < 0.5
        ):
            lead_speed = 0.0  # queued at the red light
        lead = _vehicle(rng, spec, gap, lay.ego_lane_centre + rng.normal(0.0, 0.2), 0.0, lead_speed)
        # A lead that is slower than the ego is braking: its brake lights are the visible cue of the relative
        # speed the expert reacts to.
        lead.accel = float(rng.uniform(-3.0, -1.0)) if lead_speed < speed - 1.0 else float(rng.normal(0.0, 0.2))
        vehicles.append(lead)
    for _ in range(int(rng.poisson(spec.other_vehicles_mean))):
        lanes_choice = [(lay.lane_centre(i), 0.0) for i in range(lay.lanes_ego) if i != lay.ego_lane]
        lanes_choice += [(lay.oncoming_lane_centre(i), math.pi) for i in range(lay.lanes_oncoming)]
        if not lanes_choice:
            break
        lat, heading_v = lanes_choice[rng.integers(len(lanes_choice))]
        v_other = max(0.0, spec.speed_limit_mps * rng.uniform(0.6, 1.05))
        veh = _vehicle(rng, spec, float(rng.uniform(3.0, 90.0)), lat + rng.normal(0.0, 0.2), heading_v, v_other)
        if not _overlaps(vehicles, veh):
            vehicles.append(veh)
    for _ in range(int(rng.poisson(spec.parked_cars_mean))):
        kerb = hi_r + 1.0 if rng.random() < 0.5 else lo_r - 1.0
        veh = _vehicle(rng, spec, float(rng.uniform(4.0, 60.0)), kerb, 0.0, 0.0)
        if veh.kind == "car" and not _overlaps(vehicles, veh):
            vehicles.append(veh)
    if rng.random() < spec.rock_prob:
        if rng.random() < spec.rock_in_lane_prob:
            rock = _rock(rng, spec, float(rng.uniform(6.0, 60.0)), lay.ego_lane_centre + rng.uniform(-1.0, 1.0))
            if not _overlaps(vehicles, rock):
                vehicles.append(rock)
        for _ in range(int(rng.integers(0, 4))):
            lat = float(rng.uniform(lo_r - 0.5, hi_r + 0.5))
            rock = _rock(rng, spec, float(rng.uniform(5.0, 80.0)), lat)
            if not _overlaps(vehicles, rock):
                vehicles.append(rock)

    valley_side = 1 if rng.random() < 0.5 else -1
    facades, rails, lamps = _roadside(spec, lay, rng, -60.0, 170.0, gaps, valley_side)
    return Scene(
        region=spec,
        profile=profile,
        layout=lay,
        ego_lat=lay.ego_lane_centre + offset,
        ego_heading=heading,
        speed=speed,
        vehicles=vehicles,
        lights=lights,
        facades=facades,
        guardrails=rails,
        street_lamps=lamps,
        dash_phase=float(rng.uniform(0.0, 100.0)),
        world_yaw=float(rng.uniform(0.0, 2.0 * math.pi)),
        look=_look(spec, rng),
    )


def render_sample(
    spec: RegionSpec | str, seed: int, index: int, image_size: tuple[int, int] = (IMAGE_H, IMAGE_W)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Scene]:
    """Sample ``index`` of (region, seed): (image (H, W, 3) uint8, points (N, 4) float32 with NaNs,
    labels (len(LABELS),) float32, scene)."""
    spec = get_region(spec)
    rng = sample_rng(seed, spec.name, index)
    scene = sample_scene(spec, rng)
    image = render_camera(scene, image_size)
    points = simulate_lidar(scene, rng)
    return image, points, scene_labels(scene), scene
