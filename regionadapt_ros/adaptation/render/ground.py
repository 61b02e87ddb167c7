"""The ground in the camera: road, sidewalks or shoulders, markings, stop lines and cross streets projected from the
road frame, and the distant background."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from regionadapt_ros.adaptation.regions import RGB
from regionadapt_ros.adaptation.render.common import (
    _I_ASPHALT,
    _I_GRAVEL,
    _I_MARKING,
    _I_SIDEWALK,
    _NEAR_M,
    _SHIFT,
    _Z_GROUND,
    _camera,
    _Canvas,
    _fixed,
    _shade,
)
from regionadapt_ros.adaptation.scene import (
    RoadGeometry,
    Scene,
)

# --------------------------------------------------------------------------------------------------------
# Ground layers shared by the camera and the lidar's ground-material map


@dataclass(frozen=True)
class _Band:
    """A ground band between two laterals (and optionally two stations)."""

    colour: RGB
    intensity: float
    lat_a: float
    lat_b: float
    s_a: float = -1e9
    s_b: float = 1e9
    dashed: bool = False


def _ground_bands(scene: Scene) -> list[_Band]:
    """Ground bands in drawing order: surfaces first, then markings (narrow bands) on top."""
    region, lay = scene.region, scene.layout
    pal = region.palette
    side = lay.side
    w = lay.lane_width
    lo, hi = lay.road_bounds
    bands: list[_Band] = []
    if region.scenery == "urban":
        bands.append(_Band(pal.roadside, _I_SIDEWALK, hi, hi + region.roadside_m))
        bands.append(_Band(pal.roadside, _I_SIDEWALK, lo - region.roadside_m, lo))
        bands.append(_Band(pal.road, _I_ASPHALT, lo, hi))
    elif region.scenery == "highway":
        outer = lay.ego_edge + side * region.roadside_m
        bands.append(_Band(pal.road, _I_ASPHALT, min(outer, -side * 1.0), max(outer, -side * 1.0)))
        far_a, far_b = -side * 4.0, -side * (4.0 + 2 * w + 1.5)
        bands.append(_Band(pal.roadside, _I_ASPHALT, min(far_a, far_b), max(far_a, far_b)))
    else:
        bands.append(_Band(pal.roadside, _I_GRAVEL, lo - region.roadside_m, hi + region.roadside_m))
        bands.append(_Band(pal.road, _I_ASPHALT, lo, hi))
    # Cross streets and stop lines at intersections.
    for light in scene.lights:
        if light.governs_ego:
            bands.append(_Band(pal.road, _I_ASPHALT, lo - 40.0, hi + 40.0, light.stop_s + 1.0, light.stop_s + 12.0))
            a, b = 0.0, lay.ego_edge
            bands.append(_Band(pal.lane_marking, _I_MARKING, min(a, b), max(a, b), light.stop_s - 0.45, light.stop_s))
    half = 0.075
    for i in range(1, lay.lanes_ego):
        c = side * i * w
        bands.append(_Band(pal.lane_marking, _I_MARKING, c - half, c + half, dashed=True))
    for i in range(1, lay.lanes_oncoming):
        c = -side * i * w
        bands.append(_Band(pal.lane_marking, _I_MARKING, c - half, c + half, dashed=True))
    if lay.lanes_oncoming > 0:
        if region.centre_line == "double":
            for c in (-0.12, 0.12):
                bands.append(_Band(pal.centre_marking, _I_MARKING, c - half, c + half))
        else:
            bands.append(_Band(pal.centre_marking, _I_MARKING, -half, half, dashed=region.centre_line == "dashed"))
    else:
        c = side * 0.15
        bands.append(_Band(pal.centre_marking, _I_MARKING, c - half, c + half))
    if region.scenery != "urban":
        for edge in (lay.ego_edge, lay.oncoming_edge):
            if edge != 0.0:
                c = edge - math.copysign(0.2, edge)
                bands.append(_Band(pal.lane_marking, _I_MARKING, c - half, c + half))
    return bands


def _band_quads(
    geom: RoadGeometry, bands: list[_Band], stations: np.ndarray, dash: tuple[float, float], dash_phase: float
) -> list[np.ndarray]:
    """Per band, (M, 4, 2) vehicle-frame xy corners of the quads covering it between consecutive stations (or
    of its dashes). All bands are evaluated with one call of the road geometry."""
    s_parts, lat_parts, counts = [], [], []
    for band in bands:
        s_lo, s_hi = max(stations[0], band.s_a), min(stations[-1], band.s_b)
        sa = sb = np.empty(0)
        if s_hi > s_lo:
            if band.dashed:
                period = dash[0] + dash[1]
                k0 = math.floor((s_lo + dash_phase) / period) - 1
                k1 = math.ceil((s_hi + dash_phase) / period) + 1
                starts = np.arange(k0, k1) * period - dash_phase
                sa = np.clip(starts, s_lo, s_hi)
                sb = np.clip(starts + dash[0], s_lo, s_hi)
                keep = sb - sa > 0.05
                sa, sb = sa[keep], sb[keep]
            else:
                inner = stations[(stations > s_lo) & (stations < s_hi)]
                st = np.concatenate(([s_lo], inner, [s_hi]))
                sa, sb = st[:-1], st[1:]
        s_parts.append(np.stack((sa, sa, sb, sb), axis=1))
        lat_parts.append(np.broadcast_to(np.array([band.lat_a, band.lat_b, band.lat_b, band.lat_a]), (sa.size, 4)))
        counts.append(sa.size)
    if not counts or sum(counts) == 0:
        return [np.empty((0, 4, 2)) for _ in bands]
    x, y = geom.points(np.concatenate(s_parts), np.concatenate(lat_parts))
    xy = np.stack((x, y), axis=-1)
    return np.split(xy, np.cumsum(counts)[:-1])


# Camera stations: dense near the camera, sparse far away (where a metre is a fraction of a pixel).
_CAM_STATIONS = 0.3 * 1.12 ** np.arange(0, 57)


_CAM_STATIONS = _CAM_STATIONS[_CAM_STATIONS < 168.0]


# Ground quads serve both the camera (ahead) and the lidar's material map (all around, within ~56 m).
_GROUND_STATIONS = np.concatenate((np.arange(-60.0, 0.0, 3.0), _CAM_STATIONS))


def _scene_ground(scene: Scene) -> tuple[list[_Band], list[np.ndarray]]:
    """The scene's ground bands and their quads (vehicle-frame xy), computed once per scene."""
    cached = scene.render_cache.get("ground")
    if cached is None:
        bands = _ground_bands(scene)
        quads = _band_quads(scene.geometry, bands, _GROUND_STATIONS, scene.region.dash_m, scene.dash_phase)
        cached = scene.render_cache["ground"] = (bands, quads)
    return cached


# --------------------------------------------------------------------------------------------------------
# Camera


@lru_cache(maxsize=32)
def _background(palette_key: tuple, height: int, width: int) -> np.ndarray:
    """Sky gradient above the horizon and terrain below, (H, W, 3) uint8 RGB."""
    sky_top, sky_horizon, terrain = (np.asarray(c, dtype=np.float32) for c in palette_key)
    cam = _camera(height, width)
    rows = np.arange(height, dtype=np.float32)[:, None]
    hv = cam.horizon_v
    t_sky = np.clip(rows / max(hv, 1.0), 0.0, 1.0)
    sky = sky_top * (1.0 - t_sky) + sky_horizon * t_sky
    t_ground = np.clip((rows - hv) / max(height - hv, 1.0), 0.0, 1.0)
    ground = terrain * (0.8 + 0.3 * t_ground)
    col = np.where(rows < hv, sky, ground)
    img = np.broadcast_to(col[:, None, :], (height, width, 3))
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))


def _silhouette(canvas: _Canvas, scene: Scene) -> None:
    """Distant scenery as an elevation profile over world azimuth, so that it turns with the ego's yaw."""
    cam, region = canvas.cam, scene.region
    rng = np.random.default_rng(scene.look.silhouette_seed)
    u = np.linspace(-1.0, cam.width, max(cam.width // 4, 8) + 1)
    alpha = np.arctan((cam.cx - u) / cam.f)  # + = left of forward
    az = scene.world_yaw + alpha
    if region.scenery == "mountain":
        k = np.arange(1, 9)
        amp = rng.uniform(0.3, 1.0, k.size) * np.radians(5.0) / k**0.7
        phase = rng.uniform(0, 2 * np.pi, k.size)
        elev = np.radians(6.0) + (amp[None, :] * np.sin(k[None, :] * az[:, None] * 2 + phase)).sum(axis=1)
        elev = np.clip(elev, np.radians(1.0), np.radians(18.0))
        layers = [(elev, region.palette.far_scenery), (0.45 * elev, _shade(region.palette.terrain, 0.8))]
    elif region.scenery == "highway":
        k = np.arange(6, 40)
        amp = rng.uniform(0.2, 1.0, k.size) * np.radians(0.35) / np.sqrt(k / 6)
        phase = rng.uniform(0, 2 * np.pi, k.size)
        elev = np.radians(1.1) + (amp[None, :] * np.sin(k[None, :] * az[:, None] + phase)).sum(axis=1)
        layers = [(np.clip(elev, np.radians(0.2), None), region.palette.far_scenery)]
    else:
        heights = rng.uniform(np.radians(2.0), np.radians(9.0), 120)
        idx = np.floor((az % (2 * np.pi)) / (2 * np.pi) * 120).astype(np.int64) % 120
        layers = [(heights[idx], region.palette.far_scenery)]
    for elev, colour in layers:
        x = np.cos(elev) * np.cos(alpha)
        y = np.cos(elev) * np.sin(alpha)
        z = cam.z0 + np.sin(elev)
        uu, vv, _ = cam.project(x, y, z)
        poly = np.concatenate(
            (np.stack((uu, vv), axis=1), [[uu[-1], cam.horizon_v + 1.0], [uu[0], cam.horizon_v + 1.0]])
        )
        cv2.fillPoly(canvas.img, [_fixed(poly[:, 0], poly[:, 1])], colour, cv2.LINE_8, _SHIFT)


def _draw_ground(canvas: _Canvas, scene: Scene) -> None:
    cam = canvas.cam
    bands, all_quads = _scene_ground(scene)
    for band, quads in zip(bands, all_quads, strict=True):
        if quads.shape[0] == 0:
            continue
        u, v, d = cam.project(quads[..., 0], quads[..., 1], _Z_GROUND)
        ok = (d > _NEAR_M).all(axis=1)
        if not ok.any():
            continue
        pts = _fixed(u[ok], v[ok])
        line = cv2.LINE_AA if band.intensity == _I_MARKING else cv2.LINE_8
        cv2.fillPoly(canvas.img, list(pts), band.colour, line, _SHIFT)
