"""``simulate_lidar``: the spinning lidar's organised cloud of a scene (ground, walls, guardrails, boxes)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from regionadapt_ros.adaptation.regions import RegionSpec
from regionadapt_ros.adaptation.render.common import (
    _I_BUILDING,
    _I_GRASS,
    _I_GUARDRAIL,
    _I_ROCK,
    _I_ROCKWALL,
    _I_SIDEWALK,
    _I_VEHICLE,
    _SHIFT,
    _Z_GROUND,
    LIDAR_AZ_STEP_DEG,
    LIDAR_BEAMS,
    LIDAR_ELEVATION_DEG,
    LIDAR_MAX_RANGE_M,
    _fixed,
    _noise_bank,
)
from regionadapt_ros.adaptation.render.ground import _scene_ground
from regionadapt_ros.adaptation.render.props import _facade_segments, _vehicle_points
from regionadapt_ros.adaptation.scene import (
    LIDAR_HEIGHT_M,
    RoadGeometry,
    Scene,
)

# --------------------------------------------------------------------------------------------------------
# Lidar

_N_COLS = round(360.0 / LIDAR_AZ_STEP_DEG)


_AZ_STEP = 2.0 * math.pi / _N_COLS


_ELEV = np.radians(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], LIDAR_BEAMS))


_AZ = -math.pi + (np.arange(_N_COLS) + 0.5) * _AZ_STEP


_TAN_EL = np.tan(_ELEV)[:, None]


_COS_EL = np.cos(_ELEV)[:, None]


_MAP_CELL = 0.4


_MAP_HALF = 56.0


_MAP_N = round(2 * _MAP_HALF / _MAP_CELL)


def _ground_rays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray: slant range to the flat ground (inf when none within range) and its map cell index."""
    down = _ELEV < 0
    horiz = np.where(down, LIDAR_HEIGHT_M / np.tan(np.where(down, -_ELEV, 1.0)), np.inf)
    slant = np.where(down, LIDAR_HEIGHT_M / np.sin(np.where(down, -_ELEV, 1.0)), np.inf)
    slant = np.where(slant <= LIDAR_MAX_RANGE_M, slant, np.inf)
    r = np.broadcast_to(np.where(np.isfinite(horiz), horiz, 0.0)[:, None], (LIDAR_BEAMS, _N_COLS))
    x = r * np.cos(_AZ)[None, :]
    y = r * np.sin(_AZ)[None, :]
    row = np.clip(((_MAP_HALF - x) / _MAP_CELL).astype(np.int64), 0, _MAP_N - 1)
    col = np.clip(((_MAP_HALF - y) / _MAP_CELL).astype(np.int64), 0, _MAP_N - 1)
    slant_full = np.broadcast_to(slant[:, None], (LIDAR_BEAMS, _N_COLS)).copy()
    return slant_full, row * _MAP_N + col, np.broadcast_to(np.isfinite(slant)[:, None], slant_full.shape)


_GROUND_SLANT, _GROUND_CELL, _GROUND_HIT = _ground_rays()


_GROUND_Z4 = np.full(4, _Z_GROUND)


_DIR = np.stack(
    (
        np.cos(_ELEV)[:, None] * np.cos(_AZ)[None, :],
        np.cos(_ELEV)[:, None] * np.sin(_AZ)[None, :],
        np.broadcast_to(np.sin(_ELEV)[:, None], (LIDAR_BEAMS, _N_COLS)),
    ),
    axis=-1,
).astype(np.float32)


def _ground_intensity(scene: Scene) -> np.ndarray:
    """(rings, columns) float32 intensity of the ground under every ray, from a top-down material map of the
    road drawn around the lidar (row = -x, column = -y)."""
    base = {"urban": _I_SIDEWALK, "highway": _I_GRASS, "mountain": _I_GRASS}[scene.region.scenery]
    grid = np.full((_MAP_N, _MAP_N), round(base * 255), dtype=np.uint8)
    bands, all_quads = _scene_ground(scene)
    for band, quads in zip(bands, all_quads, strict=True):
        if quads.shape[0] == 0:
            continue
        col = (_MAP_HALF - quads[..., 1]) / _MAP_CELL
        row = (_MAP_HALF - quads[..., 0]) / _MAP_CELL
        cv2.fillPoly(grid, list(_fixed(col, row)), round(band.intensity * 255), cv2.LINE_8, _SHIFT)
    return grid.reshape(-1)[_GROUND_CELL].astype(np.float32) * (1.0 / 255.0)


def _raster_segments(p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal distance from the lidar to 2-D segments along each azimuth column they span.

    p0, p1: (M, 2) segment ends (x, y). Returns (columns, ranges, segment index), one entry per (segment,
    column) pair.
    """
    a0 = np.arctan2(p0[:, 1], p0[:, 0])
    a1 = np.arctan2(p1[:, 1], p1[:, 0])
    da = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
    lo = np.minimum(a0, a0 + da)
    hi = np.maximum(a0, a0 + da)
    c_lo = np.ceil((lo + np.pi) / _AZ_STEP - 0.5).astype(np.int64)
    c_hi = np.floor((hi + np.pi) / _AZ_STEP - 0.5).astype(np.int64)
    counts = np.maximum(c_hi - c_lo + 1, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, np.empty(0), empty
    seg = np.repeat(np.arange(p0.shape[0]), counts)
    starts = np.cumsum(counts) - counts
    c = c_lo[seg] + (np.arange(total) - starts[seg])
    az = -np.pi + (c + 0.5) * _AZ_STEP
    e = p1 - p0
    num = p0[seg, 0] * e[seg, 1] - p0[seg, 1] * e[seg, 0]
    den = np.cos(az) * e[seg, 1] - np.sin(az) * e[seg, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    ok = np.isfinite(r) & (r > 0.3)
    return c[ok] % _N_COLS, r[ok], seg[ok]


def _hit_walls(
    best: np.ndarray,
    inten: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    z_lo: np.ndarray,
    z_hi: np.ndarray,
    seg_intensity: np.ndarray,
) -> None:
    """Update the nearest slant range / intensity per ray with vertical walls standing on 2-D segments."""
    cols, r, seg = _raster_segments(p0, p1)
    if cols.size == 0:
        return
    order = np.lexsort((r, cols))
    cols, r, seg = cols[order], r[order], seg[order]
    first = np.ones(cols.size, dtype=bool)
    first[1:] = cols[1:] != cols[:-1]
    cols, r, seg = cols[first], r[first], seg[first]
    z = r[None, :] * _TAN_EL
    slant = r[None, :] / _COS_EL
    hit = (z >= z_lo[seg][None, :]) & (z <= z_hi[seg][None, :]) & (slant < best[:, cols])
    if not hit.any():
        return
    sub_best = best[:, cols]
    sub_int = inten[:, cols]
    sub_best[hit] = np.broadcast_to(slant, hit.shape)[hit]
    sub_int[hit] = np.broadcast_to(seg_intensity[seg][None, :], hit.shape)[hit]
    best[:, cols] = sub_best
    inten[:, cols] = sub_int


def _chain(geom: RoadGeometry, stations: np.ndarray, lat: float) -> tuple[np.ndarray, np.ndarray]:
    x, y = geom.points(stations, lat)
    pts = np.stack((x, y), axis=1)
    return pts[:-1], pts[1:]


def simulate_lidar(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(LIDAR_BEAMS * columns, 4) float32 organised point cloud [x, y, z, intensity] of the scene; rays without
    a return have NaN x, y, z and intensity 0. Noise (range, intensity, dropout) comes from ``rng``."""
    geom = scene.geometry
    region: RegionSpec = scene.region
    best = np.where(_GROUND_HIT, _GROUND_SLANT, np.inf)
    ground_int = _ground_intensity(scene)
    inten = np.where(_GROUND_HIT, ground_int, 0.0)

    s_lo, s_hi = geom.scenery_range
    st = np.arange(-50.0, 100.0, 3.0)
    for rail in scene.guardrails:
        s = st[(st >= max(rail.s0, s_lo)) & (st <= min(rail.s1, s_hi))]
        if s.size >= 2:
            p0, p1 = _chain(geom, s, rail.lat)
            n = p0.shape[0]
            _hit_walls(
                best, inten, p0, p1, np.full(n, _Z_GROUND + 0.35), np.full(n, _Z_GROUND + 0.8), np.full(n, _I_GUARDRAIL)
            )
    f_lo, f_hi = max(-60.0, s_lo), min(110.0, s_hi)
    facades = [f for f in scene.facades if f.s1 > f_lo and f.s0 < f_hi]
    if facades:
        seg = _facade_segments(facades, f_lo, f_hi)
        x0, y0 = geom.points(seg["sa"], seg["lat"])
        x1, y1 = geom.points(seg["sb"], seg["lat"])
        # End walls of each block, from the face away from the road (those inside the visible stretch).
        ends = np.array([[f.s0, f.s1] for f in facades]).ravel()
        shown = (ends >= f_lo) & (ends <= f_hi)
        ends = ends[shown]
        elat = np.repeat([f.lat for f in facades], 2)[shown]
        edep = np.repeat([f.depth for f in facades], 2)[shown]
        ex0, ey0 = geom.points(ends, elat)
        ex1, ey1 = geom.points(ends, elat + edep)
        p0 = np.concatenate((np.stack((x0, y0), 1), np.stack((ex0, ey0), 1)))
        p1 = np.concatenate((np.stack((x1, y1), 1), np.stack((ex1, ey1), 1)))
        f_h = np.array([f.height for f in facades])
        z_hi = _Z_GROUND + np.concatenate((0.5 * (seg["ha"] + seg["hb"]), np.repeat(f_h, 2)[shown]))
        f_int = np.array([_I_BUILDING if f.kind == "building" else _I_ROCKWALL for f in facades])
        value = np.concatenate((f_int[seg["fid"]], np.repeat(f_int, 2)[shown]))
        _hit_walls(best, inten, p0, p1, np.full(z_hi.size, _Z_GROUND), z_hi, value)
    boxes = [veh for veh in scene.vehicles if abs(veh.s) <= 110.0]
    if boxes:
        x, y, _ = _vehicle_points(geom, boxes)
        for i, veh in enumerate(boxes):
            # Each box separately, so that a taller box behind a lower one is still hit above it.
            pts = np.stack((x[i, :4], y[i, :4]), axis=1)
            value = _I_ROCK if veh.kind == "rock" else _I_VEHICLE
            top = _Z_GROUND + veh.height
            _hit_walls(best, inten, pts, np.roll(pts, -1, axis=0), _GROUND_Z4, np.full(4, top), np.full(4, value))

    hit = np.isfinite(best)
    n_rays = best.size
    start = int(rng.integers(0, 2 * n_rays))
    noise = _noise_bank(2 * n_rays)[start : start + 2 * n_rays].reshape(2, *best.shape)
    best = best + noise[0] * region.lidar_range_noise_m
    hit &= (best > 0.5) & (best <= LIDAR_MAX_RANGE_M)
    hit &= rng.random(best.shape, dtype=np.float32) >= region.lidar_dropout
    pts = np.empty((LIDAR_BEAMS, _N_COLS, 4), dtype=np.float32)
    np.multiply(_DIR, np.where(hit, best, np.nan).astype(np.float32)[..., None], out=pts[..., :3])
    noisy = np.clip(inten + noise[1] * 0.02, 0.0, 1.0)
    pts[..., 3] = np.where(hit, noisy, 0.0)
    return pts.reshape(-1, 4)
