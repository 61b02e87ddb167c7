"""Synthetic regional driving data: independent labelled samples for training, and temporally coherent drives
for recorded demos.

Samples: every sample is an independent scene drawn from the region's distributions (``sample_scene``),
rendered by the camera renderer at the model size and by the lidar simulator, reduced to the model's BEV grid,
and labelled with the scene's truth and the expert's command. Sample ``i`` of (region, seed) depends only on
(seed, region, i), so the output is identical whatever the number of workers.

Drives: ``DriveGenerator`` keeps a world along an endless road (curvature, lanes, traffic lights that cycle,
vehicles that drive and stop at lights, buildings, rocks, guardrails) and moves the ego with a kinematic
bicycle model driven by the expert's commands, yielding one ``DriveFrame`` per tick.
"""

from __future__ import annotations

import math
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionadapt_ros.adaptation.regions import RGB, RegionSpec, get_region
from regionadapt_ros.adaptation.render import render_camera, simulate_lidar
from regionadapt_ros.adaptation.scene import (
    STOP_LINE_MARGIN_M,
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    WHEELBASE_M,
    CurvatureProfile,
    Facade,
    Guardrail,
    LaneLayout,
    Look,
    Scene,
    TrafficLight,
    Vehicle,
    light_requires_stop,
    longitudinal_accel,
    scene_labels,
    target_speed,
)
from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABELS
from regionadapt_ros.core.preprocess import bev_grid

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
GENERATOR_VERSION = 2
CHUNK = 32  # samples per work item
_DRIVE_STREAM = 0x5D0F  # separates the drive generator's random stream from the samples'


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


# --------------------------------------------------------------------------------------------------------
# Parallel generation into arrays


ARRAY_NAMES = ("images", "bev", "labels")


def _array_layout(n: int, image_size: tuple[int, int]) -> list[tuple[tuple[int, ...], type]]:
    """(shape, dtype) of the images, bev and labels arrays of ``n`` samples."""
    return [
        ((n, int(image_size[0]), int(image_size[1]), 3), np.uint8),
        ((n, BEV.channels, BEV.rows, BEV.cols), np.float16),
        ((n, len(LABELS)), np.float32),
    ]


@dataclass(frozen=True)
class _Job:
    """Samples [start, stop) of (region, seed), written into the .npy files at ``paths`` (images, bev, labels)."""

    region: str
    seed: int
    image_size: tuple[int, int]
    paths: tuple[str, ...]
    start: int
    stop: int


def _fill(out: list[np.ndarray], region: str, seed: int, image_size: tuple[int, int], start: int, stop: int) -> int:
    """Render samples [start, stop) into rows [start, stop) of the images, bev and labels arrays ``out``."""
    images, bev, labels = out
    spec = get_region(region)
    for i in range(start, stop):
        image, points, lab, _ = render_sample(spec, seed, i, image_size)
        images[i] = image
        bev[i] = bev_grid(points)
        labels[i] = lab
    return stop - start


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would only contend


def _run_job(job: _Job) -> int:
    # Shared file mappings: the parent sees the rows through the page cache; no msync per job (it would wait for
    # the disk every CHUNK samples).
    out = [np.load(p, mmap_mode="r+") for p in job.paths]
    return _fill(out, job.region, job.seed, job.image_size, job.start, job.stop)


def generate_into(
    region: str | RegionSpec,
    n: int,
    seed: int,
    paths: Sequence[str | Path],
    image_size: tuple[int, int] = (IMAGE_H, IMAGE_W),
    workers: int = 2,
    progress: bool = True,
) -> None:
    """Generate ``n`` samples into three new .npy files at ``paths``: images uint8 (n, H, W, 3), bev float16
    (n, C, rows, cols), labels float32 (n, len(LABELS)). Workers write through memory maps, so memory does not
    grow with n; the files are identical whatever the number of workers."""
    spec = get_region(region)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(paths) != len(ARRAY_NAMES):
        raise ValueError(f"expected {len(ARRAY_NAMES)} paths ({', '.join(ARRAY_NAMES)}), got {len(paths)}")
    for path, (shape, dtype) in zip(paths, _array_layout(n, image_size), strict=True):
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    size = (int(image_size[0]), int(image_size[1]))
    str_paths = tuple(str(p) for p in paths)
    jobs = [_Job(spec.name, int(seed), size, str_paths, a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    from tqdm import tqdm

    with tqdm(total=n, desc=f"generate {spec.name}", unit="sample", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            _worker_init()
            for job in jobs:
                bar.update(_run_job(job))
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: a clean interpreter per worker, safe whatever threads (torch, OpenCV) the parent runs; a worker
        # that dies makes the executor fail instead of hanging.
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init) as pool:
            futures = [pool.submit(_run_job, job) for job in jobs]
            for fut in as_completed(futures):
                bar.update(fut.result())


def generate_samples(
    region: str | RegionSpec,
    n: int,
    seed: int,
    image_size: tuple[int, int] = (IMAGE_H, IMAGE_W),
    workers: int = 2,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``n`` labelled samples of a region as in-memory arrays:
    ``images`` (n, H, W, 3) uint8 RGB, ``bev`` (n, C, rows, cols) float16 (core.preprocess.bev_grid of the
    simulated sweep), ``labels`` (n, len(LABELS)) float32 in LABELS order. Sample i depends only on
    (seed, region, i): the arrays are identical whatever ``workers`` is."""
    spec = get_region(region)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers <= 1 or n <= CHUNK:
        from tqdm import tqdm

        out = [np.empty(shape, dtype) for shape, dtype in _array_layout(n, image_size)]
        with tqdm(total=n, desc=f"generate {spec.name}", unit="sample", disable=not progress) as bar:
            for a in range(0, n, CHUNK):
                bar.update(_fill(out, spec.name, int(seed), image_size, a, min(a + CHUNK, n)))
        return dict(zip(ARRAY_NAMES, out, strict=True))
    with tempfile.TemporaryDirectory(prefix="regionadapt-gen-") as tmp:
        paths = [Path(tmp) / f"{name}.npy" for name in ARRAY_NAMES]
        generate_into(spec, n, seed, paths, image_size, workers, progress)
        return {name: np.array(np.load(p, mmap_mode="r")) for name, p in zip(ARRAY_NAMES, paths, strict=True)}


# --------------------------------------------------------------------------------------------------------
# Drives


@dataclass
class DriveFrame:
    """One tick of a drive. ``points`` is the lidar sweep (N, 4) [x, y, z, intensity] with NaN rows for rays
    without a return; ``labels`` follow LABELS; ``expert_control`` = (steering rad, accel m/s^2) commanded at
    this frame; ``pose`` = (x m, y m, yaw rad) of the ego in the drive's local world frame."""

    t: float
    rgb: np.ndarray
    points: np.ndarray
    speed: float
    labels: np.ndarray
    expert_control: tuple[float, float]
    pose: tuple[float, float, float]
    region: str


@dataclass
class _WorldLight:
    stop_station: float
    light: TrafficLight  # stop_s/housing_s relative to stop_station (stations as offsets)
    phase: float
    green_s: float
    yellow_s: float
    red_s: float

    def state(self, t: float) -> int:
        cycle = self.green_s + self.yellow_s + self.red_s
        x = (t + self.phase) % cycle
        if x < self.green_s:
            return TL_GREEN
        if x < self.green_s + self.yellow_s:
            return TL_YELLOW
        return TL_RED


@dataclass
class _WorldVehicle:
    vehicle: Vehicle  # s = world station of the centre
    desired_speed: float
    lane_key: tuple[str, int]  # ("ego"|"oncoming"|"parked"|"rock", lane)


@dataclass
class _World:
    knots_station: list[float] = field(default_factory=list)
    knots_k: list[float] = field(default_factory=list)
    built_to: float = -100.0
    lights: list[_WorldLight] = field(default_factory=list)
    vehicles: list[_WorldVehicle] = field(default_factory=list)
    facades: list[Facade] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    lamps: list[tuple[float, float]] = field(default_factory=list)


class DriveGenerator:
    """An endless, temporally coherent drive through one region.

    Each ``step()`` (or iteration) renders the current instant, records the expert's command, then advances
    the world by 1/hz seconds: the ego follows a kinematic bicycle model (wheelbase WHEELBASE_M) with the
    expert's steering and acceleration (plus small actuation noise and heading disturbances), traffic lights
    cycle green → yellow → red, other vehicles drive, follow and stop at lights, and the road, buildings,
    rocks and guardrails are extended ahead as the ego advances.
    """

    _BUILD_AHEAD = 260.0  # m of road kept built ahead of the ego

    def __init__(
        self,
        region: str | RegionSpec,
        seed: int,
        hz: float = 10.0,
        image_size: tuple[int, int] = (192, 320),
        start_speed: float | None = None,
        start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
        t0: float = 0.0,
    ) -> None:
        if hz <= 0:
            raise ValueError(f"hz must be > 0, got {hz}")
        self.spec = get_region(region)
        self.hz = float(hz)
        self.dt = 1.0 / self.hz
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.rng = np.random.default_rng(
            np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _region_code(self.spec.name), _DRIVE_STREAM])
        )
        spec = self.spec
        lanes = int(self.rng.choice(spec.lanes_per_direction))
        self.layout = LaneLayout(
            spec.lane_width_m,
            lanes,
            lanes if spec.oncoming_lanes else 0,
            int(self.rng.integers(lanes)),
            spec.driving_side,
        )
        self.valley_side = 1 if self.rng.random() < 0.5 else -1
        self.t = float(t0)
        self.S = 0.0
        self.d = self.layout.ego_lane_centre + float(self.rng.normal(0.0, 0.3))
        self.psi = float(self.rng.normal(0.0, 0.02))
        self.v = float(start_speed) if start_speed is not None else 0.7 * spec.speed_limit_mps
        self.x, self.y, self.yaw = (float(c) for c in start_pose)
        self.road_yaw = self.yaw - self.psi
        self.look = _look(spec, self.rng)
        self.world = _World()
        self._gaps: list[tuple[float, float]] = []  # cross streets (no buildings there)
        # A straight start so the ego begins settled.
        self.world.knots_station += [-100.0, 30.0]
        self.world.knots_k += [0.0, 0.0]
        self.world.built_to = 30.0
        self._extend(self.S + self._BUILD_AHEAD)
        self._build_roadside(-80.0, 30.0)

    # -- world building --------------------------------------------------------------------------------

    def _extend(self, to: float) -> None:
        w = self.world
        start = w.built_to
        while w.built_to < to:
            w.built_to = _append_segment(self.spec, self.rng, w.built_to, w.knots_station, w.knots_k)
        if start > 30.0 or w.built_to > 30.0:
            self._populate(max(start, 30.0), w.built_to)

    def _populate(self, a: float, b: float) -> None:
        """Lights, parked cars, rocks and lamps between world stations a and b, and buildings beside them."""
        spec, rng, lay = self.spec, self.rng, self.layout
        gaps = []
        if spec.tl_prob > 0:
            last = self.world.lights[-1].stop_station if self.world.lights else 0.0
            s = max(a, last + 120.0) + rng.uniform(0.0, 120.0)
            while s < b:
                light = _light(spec, lay, rng, 0.0, TL_GREEN, True)
                light.arrow_panel = rng.random() < spec.tl_arrow_panel_prob
                self.world.lights.append(
                    _WorldLight(
                        s, light, float(rng.uniform(0.0, 40.0)), rng.uniform(10.0, 16.0), 3.0, rng.uniform(8.0, 12.0)
                    )
                )
                gaps.append((s - 3.0, s + 15.0))
                s += rng.uniform(140.0, 320.0)
        lo, hi = lay.road_bounds
        for _ in range(int(rng.poisson(spec.parked_cars_mean * (b - a) / 60.0))):
            kerb = hi + 1.0 if rng.random() < 0.5 else lo - 1.0
            veh = _vehicle(rng, spec, float(rng.uniform(a, b)), kerb, 0.0, 0.0)
            if veh.kind == "car":
                self.world.vehicles.append(_WorldVehicle(veh, 0.0, ("parked", 0)))
        if spec.rock_prob > 0:
            for _ in range(int(rng.poisson(spec.rock_prob * 2.0 * (b - a) / 100.0))):
                # Rocks in a drive lie off the ego lane (the expert does not steer around obstacles).
                lane_lo, lane_hi = lay.ego_lane_bounds
                choices = [x for x in np.linspace(lo - 0.5, hi + 0.5, 12) if x < lane_lo - 0.9 or x > lane_hi + 0.9]
                if choices:
                    rock = _rock(rng, spec, float(rng.uniform(a, b)), float(choices[rng.integers(len(choices))]))
                    self.world.vehicles.append(_WorldVehicle(rock, 0.0, ("rock", 0)))
        self._gaps += gaps
        self._build_roadside(a, b)

    def _build_roadside(self, a: float, b: float) -> None:
        facades, rails, lamps = _roadside(self.spec, self.layout, self.rng, a, b, self._gaps, self.valley_side)
        self.world.facades += facades
        self.world.guardrails += rails
        self.world.lamps += lamps

    def _spawn_traffic(self, rng: np.random.Generator | None = None) -> None:
        """New vehicles ahead in the ego's lanes and oncoming, drawn from ``rng`` (default: the world's)."""
        spec, lay = self.spec, self.layout
        rng = rng if rng is not None else self.rng
        moving = [wv for wv in self.world.vehicles if wv.lane_key[0] in ("ego", "oncoming")]
        for lane in range(lay.lanes_ego):
            ahead = [wv for wv in moving if wv.lane_key == ("ego", lane) and wv.vehicle.s > self.S]
            p_spawn = (spec.lead_prob if lane == lay.ego_lane else 0.5 * spec.other_vehicles_mean) * self.dt / 4.0
            if not any(wv.vehicle.s - self.S < 160.0 for wv in ahead) and rng.random() < p_spawn:
                desired = spec.speed_limit_mps * rng.uniform(0.65, 0.95)
                veh = _vehicle(rng, spec, self.S + rng.uniform(90.0, 150.0), lay.lane_centre(lane), 0.0, desired)
                self.world.vehicles.append(_WorldVehicle(veh, desired, ("ego", lane)))
        for lane in range(lay.lanes_oncoming):
            p_spawn = 0.5 * spec.other_vehicles_mean * self.dt / 3.0
            if rng.random() < p_spawn:
                speed = spec.speed_limit_mps * rng.uniform(0.6, 1.0)
                veh = _vehicle(rng, spec, self.S + 165.0, lay.oncoming_lane_centre(lane), math.pi, speed)
                self.world.vehicles.append(_WorldVehicle(veh, speed, ("oncoming", lane)))

    # -- snapshot ----------------------------------------------------------------------------------------

    def _light_states(self) -> list[tuple[_WorldLight, int]]:
        return [(wl, wl.state(self.t)) for wl in self.world.lights]

    def scene(self) -> Scene:
        """The current instant as a Scene (stations relative to the ego)."""
        w, S = self.world, self.S
        profile = CurvatureProfile(np.asarray(w.knots_station) - S, np.asarray(w.knots_k))
        lights = []
        for wl, state in self._light_states():
            rel = wl.stop_station - S
            if -20.0 < rel < 170.0:
                src = wl.light
                lights.append(
                    TrafficLight(
                        stop_s=rel,
                        state=state,
                        housing_s=rel + src.housing_s,
                        housing_lat=src.housing_lat,
                        housing_height=src.housing_height,
                        pole_lat=src.pole_lat,
                        horizontal=src.horizontal,
                        red_on_right=src.red_on_right,
                        facing_ego=True,
                        governs_ego=True,
                        arrow_panel=src.arrow_panel and state == TL_RED,
                        go_colour=src.go_colour,
                        yellow_colour=src.yellow_colour,
                    )
                )
        vehicles = []
        for wv in w.vehicles:
            rel = wv.vehicle.s - S
            if -60.0 < rel < 170.0:
                v = wv.vehicle
                vehicles.append(
                    Vehicle(
                        v.kind,
                        rel,
                        v.lat,
                        v.length,
                        v.width,
                        v.height,
                        v.heading,
                        v.speed,
                        v.accel,
                        v.colour,
                        v.shape_seed,
                    )
                )
        facades = [
            Facade(f.s0 - S, f.s1 - S, f.lat, f.depth, f.height, f.colour, f.kind, f.seed)
            for f in w.facades
            if f.s1 - S > -60.0 and f.s0 - S < 170.0
        ]
        rails = [Guardrail(g.lat, g.s0 - S, g.s1 - S) for g in w.guardrails if g.s1 - S > -60.0 and g.s0 - S < 170.0]
        lamps = [(s - S, lat) for s, lat in w.lamps if -20.0 < s - S < 170.0]
        return Scene(
            region=self.spec,
            profile=profile,
            layout=self.layout,
            ego_lat=self.d,
            ego_heading=self.psi,
            speed=self.v,
            vehicles=vehicles,
            lights=lights,
            facades=facades,
            guardrails=rails,
            street_lamps=lamps,
            dash_phase=S,
            world_yaw=self.yaw,
            look=self.look,
        )

    # -- dynamics ----------------------------------------------------------------------------------------

    def _move_traffic(self, dt: float) -> None:
        spec = self.spec
        states = self._light_states()
        knots_s = np.asarray(self.world.knots_station)
        knots_k = np.asarray(self.world.knots_k)
        by_lane: dict[tuple[str, int], list[_WorldVehicle]] = {}
        for wv in self.world.vehicles:
            by_lane.setdefault(wv.lane_key, []).append(wv)
        for key, group in by_lane.items():
            if key[0] == "oncoming":
                for wv in group:
                    wv.vehicle.s -= wv.vehicle.speed * dt
                continue
            if key[0] != "ego":
                continue
            group.sort(key=lambda wv: wv.vehicle.s)
            for i, wv in enumerate(group):
                veh = wv.vehicle
                leads = []
                if i + 1 < len(group):
                    nxt = group[i + 1].vehicle
                    leads.append((nxt.rear_s - veh.front_s, nxt.speed))
                stops = []
                for wl, state in states:
                    dist = wl.stop_station - veh.front_s
                    if 0.0 < dist < 80.0:
                        probe = TrafficLight(dist, state, 0, 0, 0, 0, False)
                        if light_requires_stop(spec, probe, veh.speed):
                            stops.append(dist - STOP_LINE_MARGIN_M)
                # Other drivers slow down for curves too (same lateral-acceleration budget as the expert).
                ahead = CurvatureProfile(knots_s - veh.s, knots_k)
                v_target = min(wv.desired_speed, target_speed(spec, ahead))
                accel = longitudinal_accel(spec, veh.speed, v_target, leads, stops)
                veh.accel = accel
                veh.speed = max(0.0, veh.speed + accel * dt)
                veh.s += veh.speed * dt
        # Moving traffic far ahead is forgotten; parked cars and rocks stay until the ego has passed them (they
        # may have been built further ahead than the moving traffic is kept).
        self.world.vehicles = [
            wv for wv in self.world.vehicles
            if wv.vehicle.s - self.S > -80.0
            and (wv.vehicle.s - self.S < self._BUILD_AHEAD + 20.0 or wv.lane_key[0] in ("parked", "rock"))
        ]

    def _move_ego(self, steer: float, accel: float, dt: float, rng: np.random.Generator | None = None) -> None:
        """Advance the kinematic bicycle by ``dt`` with steering angle ``steer`` [rad] and ``accel`` [m/s^2];
        the heading disturbance is drawn from ``rng`` (default: the world's)."""
        w = self.world
        n_sub = 4
        h = dt / n_sub
        ks = np.asarray(w.knots_station)
        kk = np.asarray(w.knots_k)
        for _ in range(n_sub):
            k = float(np.interp(self.S, ks, kk))
            s_dot = self.v * math.cos(self.psi) / max(1.0 - k * self.d, 0.2)
            yaw_rate = self.v * math.tan(steer) / WHEELBASE_M
            self.d += self.v * math.sin(self.psi) * h
            self.psi += (yaw_rate - k * s_dot) * h
            self.S += s_dot * h
            self.road_yaw += k * s_dot * h
            self.yaw = self.road_yaw + self.psi
            self.x += self.v * math.cos(self.yaw) * h
            self.y += self.v * math.sin(self.yaw) * h
            self.v = max(0.0, self.v + accel * h)
        # Wind, camber and road roughness (while moving): the expert has to keep correcting.
        self.psi += float((rng if rng is not None else self.rng).normal(0.0, 0.004)) * min(1.0, self.v / 5.0)

    def step(self) -> DriveFrame:
        """Render and label the current instant, then advance the world by one tick."""
        scene = self.scene()
        labels = scene_labels(scene)
        steer = float(labels[LABELS.index("steering")])
        accel = float(labels[LABELS.index("accel")])
        rgb = render_camera(scene, self.image_size)
        points = simulate_lidar(scene, self.rng)
        frame = DriveFrame(
            t=self.t,
            rgb=rgb,
            points=points,
            speed=self.v,
            labels=labels,
            expert_control=(steer, accel),
            pose=(self.x, self.y, self.yaw),
            region=self.spec.name,
        )
        applied_steer = steer + float(self.rng.normal(0.0, 0.003))
        self._move_ego(applied_steer, accel, self.dt)
        self._move_traffic(self.dt)
        self._spawn_traffic()
        self._extend(self.S + self._BUILD_AHEAD)
        self._forget_behind()
        self.t += self.dt
        return frame

    def _forget_behind(self) -> None:
        w, S = self.world, self.S
        keep = [i for i, s in enumerate(w.knots_station) if s > S - 150.0]
        if keep and keep[0] > 2:
            cut = keep[0] - 2
            del w.knots_station[:cut], w.knots_k[:cut]
        w.lights = [wl for wl in w.lights if wl.stop_station - S > -40.0]
        w.facades = [f for f in w.facades if f.s1 - S > -80.0]
        w.guardrails = [g for g in w.guardrails if g.s1 - S > -80.0]
        w.lamps = [lp for lp in w.lamps if lp[0] - S > -40.0]
        self._gaps = [g for g in self._gaps if g[1] - S > -80.0]

    def __iter__(self) -> Iterator[DriveFrame]:
        while True:
            yield self.step()

    def frames(self, n: int) -> Iterator[DriveFrame]:
        """The next ``n`` frames."""
        for _ in range(n):
            yield self.step()
