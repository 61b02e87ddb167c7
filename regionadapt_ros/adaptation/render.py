"""Camera renderer (OpenCV) and spinning-lidar simulator of a ``Scene``.

Camera: a pinhole camera CAMERA_HEIGHT_M above the ground on the ego, pitched PITCH_DEG down, HFOV_DEG wide,
rendered directly at any requested size (the model's 96x160 for training, e.g. 192x320 for recorded drives).
The world is drawn back to front: sky and distant scenery (skyline, tree line or mountains), the ground
(road, sidewalks / shoulders, markings, stop lines, cross streets) projected from the road frame, then the
upright things (buildings, rock walls, guardrails, vehicles, rocks, poles, traffic lights) sorted by depth.
Traffic lights are drawn no smaller than a few pixels of the 96x160 image so that their state stays
learnable. At night the image is darkened except for a headlight cone, lamps (traffic lights, tail and brake
lights, oncoming headlights, sodium street lamps, windows) are drawn afterwards with a glow, and sensor noise
(gaussian and salt-and-pepper) is added.

Lidar: LIDAR_BEAMS rings from -25° to +5° elevation, LIDAR_AZ_STEP_DEG apart in azimuth (360°), mounted at
the vehicle-frame origin, LIDAR_HEIGHT_M above the ground. Each ray hits the nearest of: the ground plane
(intensity from a top-down material map of the road), vertical walls (buildings, rock walls), guardrails and
boxes (vehicles, rocks). Output is an organised (rings x columns, 4) float32 cloud [x, y, z, intensity 0..1];
rays without a return are NaN (x, y, z) with intensity 0, so the cloud is not dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from regionadapt_ros.adaptation.regions import RGB, RegionSpec
from regionadapt_ros.adaptation.scene import (
    CAMERA_HEIGHT_M,
    LIDAR_HEIGHT_M,
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    Facade,
    RoadGeometry,
    Scene,
    Vehicle,
)
from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W

HFOV_DEG = 90.0
PITCH_DEG = 3.0
LIDAR_BEAMS = 32
LIDAR_ELEVATION_DEG = (-25.0, 5.0)
LIDAR_AZ_STEP_DEG = 0.8
LIDAR_MAX_RANGE_M = 100.0

_SHIFT = 4  # sub-pixel bits of cv2 drawing coordinates
_ONE = 1 << _SHIFT
_NEAR_M = 0.3  # camera near plane
_Z_GROUND = -LIDAR_HEIGHT_M
_RED_LAMP: RGB = (255, 45, 35)
_TL_HOUSING_M = (0.5, 1.3)  # short and long side of a three-lamp housing
_TL_MIN_SHORT_PX = 2.6  # minimum short side at the 96x160 model size (scaled with the image width)

# Ground materials: lidar intensity 0..1.
_I_ASPHALT, _I_MARKING, _I_SIDEWALK, _I_GRASS, _I_GRAVEL = 0.10, 0.60, 0.30, 0.18, 0.22
_I_VEHICLE, _I_ROCK, _I_GUARDRAIL, _I_BUILDING, _I_ROCKWALL = 0.35, 0.20, 0.55, 0.30, 0.22


@dataclass(frozen=True)
class DrawnBox:
    """An object as drawn in the image, in pixels (x0, y0 top-left; x1, y1 bottom-right, exclusive-ish).

    kind: "tl_housing", "vehicle", "rock"; info carries kind-specific facts (for lights: horizontal, state,
    lit_index, governs_ego, facing_ego).
    """

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    depth: float
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


class Camera:
    """Pinhole camera of the ego at a given image size (pixel centres at integer coordinates)."""

    def __init__(self, height: int, width: int, hfov_deg: float = HFOV_DEG, pitch_deg: float = PITCH_DEG) -> None:
        self.height = int(height)
        self.width = int(width)
        self.f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
        self.cx = 0.5 * (width - 1)
        self.cy = 0.5 * (height - 1)
        self.cp = math.cos(math.radians(pitch_deg))
        self.sp = math.sin(math.radians(pitch_deg))
        self.z0 = CAMERA_HEIGHT_M - LIDAR_HEIGHT_M  # camera height in the vehicle frame
        self.scale = width / IMAGE_W  # pixel sizes are specified at the model's size
        self.horizon_v = self.cy - self.f * self.sp / self.cp

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vehicle-frame points → (u, v, depth); depth <= 0 is behind the camera."""
        dz = z - self.z0
        depth = x * self.cp - dz * self.sp
        yc = -x * self.sp - dz * self.cp
        inv = self.f / np.maximum(depth, 1e-6)
        return self.cx - y * inv, self.cy + yc * inv, depth


@lru_cache(maxsize=16)
def _camera(height: int, width: int) -> Camera:
    return Camera(height, width)


def _fixed(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixel coordinates → int32 cv2 coordinates with _SHIFT fractional bits (clipped to stay in int range)."""
    pts = np.stack((u, v), axis=-1) * _ONE
    np.clip(pts, -1e7, 1e7, out=pts)
    return pts.astype(np.int32)


def _shade(colour: RGB, factor: float) -> RGB:
    r, g, b = (int(min(255.0, max(0.0, c * factor))) for c in colour)
    return (r, g, b)


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


@lru_cache(maxsize=16)
def _headlight_gain(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float32 brightness added by the ego's low beams: a cone on the road ahead."""
    cam = _camera(height, width)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xc = (u - cam.cx) / cam.f
    yc = (v - cam.cy) / cam.f
    dx = cam.cp - yc * cam.sp
    dz = -cam.sp - yc * cam.cp
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dz < -1e-6, CAMERA_HEIGHT_M / -dz, np.inf)
    ground = np.isfinite(t)
    x = np.where(ground, t * dx, 1e6)
    y = np.where(ground, -t * xc, 0.0)
    beam = np.exp(-((y / (0.28 * x + 1.0)) ** 2)) * np.clip((x - 1.5) / 5.0, 0, 1) * np.clip((55.0 - x) / 40.0, 0, 1)
    # Light scattered from the beam onto everything in front (vehicles, poles) fades above the horizon.
    spill = (
        0.25
        * np.exp(-(((u - cam.cx) / (0.35 * width)) ** 2))
        * np.clip((v - cam.horizon_v + 0.1 * height) / height, 0, 1)
    )
    gain = np.maximum(beam, spill).astype(np.float32)
    gain = cv2.GaussianBlur(gain, (0, 0), 0.02 * width)
    return gain[:, :, None]


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """2·size standard-normal float32 values; a sample's sensor noise is a random window of it (cheaper than
    drawing fresh gaussian noise for every image, and just as unpredictable to a model)."""
    return np.random.default_rng(0x5EED).standard_normal(2 * size, dtype=np.float32)


@dataclass
class _Emissive:
    u: float
    v: float
    radius: float  # core radius [px]
    colour: RGB
    glow: float  # glow strength (0 = none)
    depth: float


@dataclass
class _Canvas:
    img: np.ndarray
    cam: Camera
    night: bool
    emissive: list[_Emissive] = field(default_factory=list)
    occluders: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # x0,y0,x1,y1,depth
    drawn: list[DrawnBox] | None = None


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


# Upright primitives are (depth, draw function) pairs sorted far to near.


def _vertical_quads(
    geom: RoadGeometry, s_a: np.ndarray, s_b: np.ndarray, lat: float, z_lo: float, z_hi: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, 4) x, y, z of vertical quads standing on the road-frame line at ``lat`` between s_a and s_b."""
    s = np.stack((s_a, s_b, s_b, s_a), axis=1)
    x, y = geom.points(s, lat)
    z_hi = np.broadcast_to(np.asarray(z_hi, dtype=np.float64).reshape(-1, 1), (s.shape[0], 1))[:, 0]
    z = np.stack((np.full_like(s_a, z_lo), np.full_like(s_a, z_lo), z_hi, z_hi), axis=1)
    return x, y, z


def _hash01(seed: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) from integer (seed, j) pairs (stable across frames)."""
    x = (seed.astype(np.uint64) * np.uint64(0x9E3779B1) + j.astype(np.uint64) * np.uint64(0x85EBCA77)) & np.uint64(
        0xFFFFFFFF
    )
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(12)
    return (x & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def _facade_segments(facades: list[Facade], s_lo: float, s_hi: float) -> dict[str, np.ndarray]:
    """Facades cut into segments at fixed offsets from their start (so the cuts, rock-wall outline and shading
    stay put as the ego moves), clipped to [s_lo, s_hi]. Returns arrays per segment: fid, sa, sb, lat, ha, hb
    (heights at both ends), shade."""
    f_s0 = np.array([f.s0 for f in facades])
    f_s1 = np.array([f.s1 for f in facades])
    rock = np.array([f.kind == "rock_wall" for f in facades])
    step = np.where(rock, 3.0, 8.0)
    n = np.maximum(np.ceil((f_s1 - f_s0) / step).astype(np.int64), 1)
    fid = np.repeat(np.arange(len(facades)), n)
    j = np.arange(fid.size) - np.repeat(np.cumsum(n) - n, n)
    sa = f_s0[fid] + j * step[fid]
    sb = np.minimum(sa + step[fid], f_s1[fid])
    keep = (sb > s_lo) & (sa < s_hi)
    fid, j, sa, sb = fid[keep], j[keep], np.maximum(sa[keep], s_lo), np.minimum(sb[keep], s_hi)
    seeds = np.array([f.seed for f in facades], dtype=np.int64)[fid]
    height = np.array([f.height for f in facades])[fid]
    is_rock = rock[fid]
    ha = np.where(is_rock, height * (0.65 + 0.35 * _hash01(seeds, j)), height)
    hb = np.where(is_rock, height * (0.65 + 0.35 * _hash01(seeds, j + 1)), height)
    shade = np.where(is_rock, 0.8 + 0.3 * _hash01(seeds + 17, j), 1.0)
    lat = np.array([f.lat for f in facades])[fid]
    return {"fid": fid, "sa": sa, "sb": sb, "lat": lat, "ha": ha, "hb": hb, "shade": shade}


def _facade_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    facades = [f for f in scene.facades if f.s1 > 0.5 and f.s0 < 160.0]
    if not facades:
        return
    seg = _facade_segments(facades, 0.5, 160.0)
    if seg["fid"].size == 0:
        return
    sa, sb, lat = seg["sa"], seg["sb"], seg["lat"]
    x, y = geom.points(np.stack((sa, sb, sb, sa), axis=1), lat[:, None])
    z = _Z_GROUND + np.stack((np.zeros_like(sa), np.zeros_like(sa), seg["hb"], seg["ha"]), axis=1)
    u, v, d = cam.project(x, y, z)
    ok = (d > _NEAR_M).all(axis=1)
    fid, shade = seg["fid"][ok], seg["shade"][ok]
    u, v, d = u[ok], v[ok], d[ok]
    pts = _fixed(u, v)
    # Near end walls of blocks that start ahead of the camera.
    ends = [i for i, f in enumerate(facades) if f.s0 > 0.5]
    end_pts: dict[int, np.ndarray] = {}
    if ends:
        es = np.array([facades[i].s0 for i in ends])[:, None].repeat(4, axis=1)
        el = np.array([[facades[i].lat, facades[i].lat + facades[i].depth] for i in ends])
        elat = np.stack((el[:, 0], el[:, 1], el[:, 1], el[:, 0]), axis=1)
        eh = np.array([facades[i].height if facades[i].kind == "building" else 0.65 * facades[i].height for i in ends])
        ez = _Z_GROUND + np.stack((np.zeros_like(eh), np.zeros_like(eh), eh, eh), axis=1)
        ex, ey = geom.points(es, elat)
        eu, ev, ed = cam.project(ex, ey, ez)
        efix = _fixed(eu, ev)
        for k, i in enumerate(ends):
            if (ed[k] > _NEAR_M).all():
                end_pts[i] = efix[k]
    # Windows of buildings: 1.5 m x 1.7 m, on floors 3.2 m apart, every 3 m along the face.
    win_pts: dict[int, list] = {}
    lit: dict[int, list[_Emissive]] = {}
    bld = [i for i, f in enumerate(facades) if f.kind == "building"]
    if bld:
        nf = np.array([max(int((facades[i].height - 2.0) // 3.2), 0) for i in bld])
        nc = np.array([max(int((facades[i].s1 - facades[i].s0 - 2.5) // 3.0), 0) for i in bld])
        cnt = nf * nc
        if cnt.sum() > 0:
            wf = np.repeat(np.arange(len(bld)), cnt)
            k = np.arange(wf.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            floor_i, col_i = k // nc[wf], k % nc[wf]
            fac_idx = np.array(bld)[wf]
            ws0 = np.array([facades[i].s0 for i in bld])[wf] + 1.0 + 3.0 * col_i
            keep = (ws0 > 0.5) & (ws0 < 70.0)
            wf, k, floor_i, fac_idx, ws0 = wf[keep], k[keep], floor_i[keep], fac_idx[keep], ws0[keep]
            if ws0.size:
                wlat = np.array([facades[i].lat - math.copysign(0.05, facades[i].lat) for i in bld])[wf]
                wz0 = _Z_GROUND + 1.0 + 3.2 * floor_i
                wx, wy = geom.points(np.stack((ws0, ws0 + 1.5, ws0 + 1.5, ws0), 1), wlat[:, None])
                wu, wv, wd = cam.project(wx, wy, np.stack((wz0, wz0, wz0 + 1.7, wz0 + 1.7), 1))
                okw = (wd > _NEAR_M).all(axis=1)
                wfix = _fixed(wu[okw], wv[okw])
                fac_ok = fac_idx[okw]
                wb = np.searchsorted(fac_ok, np.arange(len(facades) + 1))
                for i in np.unique(fac_ok):
                    win_pts[int(i)] = list(wfix[wb[i] : wb[i + 1]])
                if canvas.night:
                    seeds = np.array([facades[i].seed for i in bld], dtype=np.int64)[wf]
                    on = okw & (_hash01(seeds, k) < 0.2)
                    for m in np.nonzero(on)[0]:
                        dd = float(wd[m].mean())
                        lit.setdefault(int(fac_idx[m]), []).append(
                            _Emissive(
                                float(wu[m].mean()), float(wv[m].mean()), 0.45 * cam.f / dd, (255, 205, 130), 0.0, dd
                            )
                        )
    bounds = np.searchsorted(fid, np.arange(len(facades) + 1))
    for i, fac in enumerate(facades):
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            continue
        depth = float(d[a:b].mean())
        box = (float(u[a:b].min()), float(v[a:b].min()), float(u[a:b].max()), float(v[a:b].max()), depth)
        if fac.kind == "rock_wall":
            levels = np.digitize(shade[a:b], (0.9, 1.0))
            groups = [(list(pts[a:b][levels == q]), _shade(fac.colour, (0.85, 0.95, 1.05)[q])) for q in range(3)]
        else:
            groups = [(list(pts[a:b]), fac.colour)]

        end, windows, lamps = end_pts.get(i), win_pts.get(i), lit.get(i)

        def draw(groups=groups, end=end, windows=windows, colour=fac.colour, lamps=lamps, box=box) -> None:
            if end is not None:
                cv2.fillConvexPoly(canvas.img, end, _shade(colour, 0.7), cv2.LINE_8, _SHIFT)
            for quads, c in groups:
                if quads:
                    cv2.fillPoly(canvas.img, quads, c, cv2.LINE_8, _SHIFT)
            if windows:
                cv2.fillPoly(canvas.img, windows, _shade(colour, 0.45), cv2.LINE_8, _SHIFT)
            if lamps:
                canvas.emissive.extend(lamps)
            canvas.occluders.append(box)

        prims.append((depth, draw))


def _guardrail_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    for rail in scene.guardrails:
        st = _CAM_STATIONS[(max(rail.s0, 0.3) <= _CAM_STATIONS) & (rail.s1 >= _CAM_STATIONS)]
        if st.size < 2:
            continue
        x, y, z = _vertical_quads(geom, st[:-1], st[1:], rail.lat, _Z_GROUND + 0.45, _Z_GROUND + 0.8)
        u, v, d = cam.project(x, y, z)
        ok = (d > _NEAR_M).all(axis=1)
        u, v, d = u[ok], v[ok], d[ok]
        # Posts every few metres below the rail.
        xp, yp, zp = _vertical_quads(geom, st[:-1], st[:-1] + 0.15, rail.lat, _Z_GROUND, _Z_GROUND + 0.45)
        up, vp, dp = cam.project(xp, yp, zp)
        okp = (dp > _NEAR_M).all(axis=1)
        up, vp, dp = up[okp], vp[okp], dp[okp]
        chunk = 6
        for i in range(0, u.shape[0], chunk):
            ru, rv, rd = u[i : i + chunk], v[i : i + chunk], d[i : i + chunk]
            quads = list(_fixed(ru, rv))
            sel = (dp.mean(1) >= rd.min()) & (dp.mean(1) <= rd.max())
            posts = list(_fixed(up[sel], vp[sel]))

            def draw(quads=quads, posts=posts) -> None:
                if posts:
                    cv2.fillPoly(canvas.img, posts, (90, 90, 92), cv2.LINE_8, _SHIFT)
                cv2.fillPoly(canvas.img, quads, (175, 178, 182), cv2.LINE_AA, _SHIFT)

            prims.append((float(rd.mean()), draw))


# Box corners: bottom rear-right, rear-left, front-left, front-right, then the same on top (vehicle's own frame:
# x forward, y left). Faces as corner indices with the face's name.
_CORNER_X = np.array([-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0])
_CORNER_Y = np.array([-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
_CORNER_Z = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
_BOX_FACES = (
    ((0, 1, 5, 4), "rear"),
    ((2, 3, 7, 6), "front"),
    ((1, 2, 6, 5), "left"),
    ((3, 0, 4, 7), "right"),
    ((4, 5, 6, 7), "top"),
)
_BOX_FACE_IDX = np.array([idx for idx, _ in _BOX_FACES])
_FACE_SHADE = {"rear": 1.0, "front": 1.0, "left": 0.72, "right": 0.72, "top": 1.15}
# End-face details (lateral as a fraction of the half width): rear / front window, left and right lamps.
_WINDOW_Y = np.array([-0.85, 0.85, 0.85, -0.85])
_LAMP_Y = np.array([-0.98, -0.7, -0.7, -0.98, 0.7, 0.98, 0.98, 0.7])


def _vehicle_points(geom: RoadGeometry, vehicles: list[Vehicle]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 20) vehicle-frame x, y, z per box: the 8 corners, then on the end the ego sees (the rear, or the front
    of an oncoming vehicle) the window quad (4 points) and the two lamp quads (4 + 4)."""
    s = np.array([v.s for v in vehicles])
    half_l = 0.5 * np.array([v.length for v in vehicles])[:, None]
    half_w = 0.5 * np.array([v.width for v in vehicles])[:, None]
    height = np.array([v.height for v in vehicles])[:, None]
    car = np.array([v.kind == "car" for v in vehicles])[:, None]
    end_x = np.where(np.array([v.oncoming for v in vehicles])[:, None], 1.0, -1.0) * (half_l + 0.02)
    cx, cy = geom.points(s, np.array([v.lat for v in vehicles]))
    yaw = geom.heading(s) + np.array([v.heading for v in vehicles])
    n = len(vehicles)
    lx = np.concatenate((half_l * _CORNER_X, np.broadcast_to(end_x, (n, 12))), axis=1)
    ly = np.concatenate((half_w * _CORNER_Y, half_w * _WINDOW_Y, half_w * _LAMP_Y), axis=1)
    lamp_lo, lamp_hi = np.where(car, 0.55, 0.5), np.where(car, 0.72, 0.75)
    lamp_z = np.concatenate((lamp_lo, lamp_lo, lamp_hi, lamp_hi), axis=1)
    lz = np.concatenate((height * _CORNER_Z, height * np.array([0.62, 0.62, 0.92, 0.92]), lamp_z, lamp_z), axis=1)
    c, sn = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return cx[:, None] + c * lx - sn * ly, cy[:, None] + sn * lx + c * ly, _Z_GROUND + lz


def _vehicle_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    vehicles = [v for v in scene.vehicles if v.rear_s > -2.0 and v.s < 170.0]
    if not vehicles:
        return
    x, y, z = _vehicle_points(geom, vehicles)
    u, v, d = cam.project(x, y, z)
    fixed = _fixed(u, v)
    corners = np.stack((x[:, :8], y[:, :8], z[:, :8]), axis=-1)
    face_centres = corners[:, _BOX_FACE_IDX].mean(axis=2)
    outward = face_centres - corners.mean(axis=1)[:, None, :]
    facing = np.einsum("nfi,nfi->nf", outward, face_centres - np.array([0.0, 0.0, cam.z0])) < 0.0
    for i, veh in enumerate(vehicles):
        if (d[i, :8] <= _NEAR_M).any():
            continue
        depth = float(d[i, :8].mean())
        bbox = (float(u[i, :8].min()), float(v[i, :8].min()), float(u[i, :8].max()), float(v[i, :8].max()))
        if veh.kind == "rock":
            jit = np.random.default_rng(veh.shape_seed).uniform(0.75, 1.1, 8)
            ui, vi = u[i, :8], v[i, :8]
            ju = ui.mean() + (ui - ui.mean()) * jit
            jv = vi.mean() + (vi - vi.mean()) * jit
            hull = cv2.convexHull(_fixed(ju, jv))
            top = cv2.convexHull(_fixed(ju[4:], jv[4:]))

            def draw_rock(hull=hull, top=top, colour=veh.colour, bbox=bbox, depth=depth) -> None:
                cv2.fillConvexPoly(canvas.img, hull, _shade(colour, 0.75), cv2.LINE_AA, _SHIFT)
                cv2.fillConvexPoly(canvas.img, top, colour, cv2.LINE_AA, _SHIFT)
                canvas.occluders.append((*bbox, depth))

            prims.append((depth, draw_rock))
            if canvas.drawn is not None:
                canvas.drawn.append(DrawnBox("rock", *bbox, depth))
            continue
        faces = [(fixed[i, list(idx)], name) for (idx, name), f in zip(_BOX_FACES, facing[i], strict=True) if f]
        detail = []  # (quad, colour) drawn over the visible end face
        lamps: list[_Emissive] = []
        rear = not veh.oncoming
        if facing[i, 0 if rear else 1]:
            if veh.kind == "car":
                detail.append((fixed[i, 8:12], (35, 40, 48)))
            if rear:
                colour = (255, 40, 40) if veh.braking else (140, 20, 22)
                glow = 1.0 if veh.braking else 0.45
            else:
                colour, glow = (255, 250, 225), 2.5
            for a in (12, 16):
                detail.append((fixed[i, a : a + 4], colour))
                if canvas.night or (rear and veh.braking):
                    uq, vq = u[i, a : a + 4], v[i, a : a + 4]
                    r = max(0.5 * float(np.hypot(uq[1] - uq[0], vq[1] - vq[0])), 0.6 * cam.scale)
                    lamps.append(_Emissive(float(uq.mean()), float(vq.mean()), r, colour, glow, depth))

        def draw_vehicle(faces=faces, detail=detail, lamps=lamps, colour=veh.colour, bbox=bbox, depth=depth) -> None:
            for quad, name in faces:
                cv2.fillConvexPoly(canvas.img, quad, _shade(colour, _FACE_SHADE[name]), cv2.LINE_AA, _SHIFT)
            for quad, c in detail:
                cv2.fillConvexPoly(canvas.img, quad, c, cv2.LINE_AA, _SHIFT)
            canvas.occluders.append((*bbox, depth))
            canvas.emissive.extend(lamps)

        prims.append((depth, draw_vehicle))
        if canvas.drawn is not None:
            canvas.drawn.append(DrawnBox("vehicle", *bbox, depth, {"kind": veh.kind, "oncoming": veh.oncoming}))


def _pole_quad(cam: Camera, u: np.ndarray, v: np.ndarray, depth: float, width_m: float) -> np.ndarray:
    """Fixed-point quad of a pole between the projected bottom (u[0], v[0]) and top (u[1], v[1])."""
    half = max(0.5 * width_m * cam.f / depth, 0.4 * cam.scale)
    return _fixed(np.array([u[0] - half, u[0] + half, u[1] + half, u[1] - half]), np.array([v[0], v[0], v[1], v[1]]))


def _light_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    lights = [light for light in scene.lights if light.housing_s > 1.0]
    if not lights:
        return
    # Per light: housing centre, pole bottom, pole top, mast-arm ends at the pole and at the housing.
    s = np.repeat([light.housing_s for light in lights], 5)
    lat = np.array([[lt.housing_lat, lt.pole_lat, lt.pole_lat, lt.pole_lat, lt.housing_lat] for lt in lights])
    arm = np.array([abs(lt.pole_lat - lt.housing_lat) > 0.5 for lt in lights])
    hh = np.array([lt.housing_height for lt in lights])
    pole_top = np.where(arm, hh, hh - 0.65)
    z = _Z_GROUND + np.stack((hh, np.zeros_like(hh), pole_top, hh + 0.35, hh + 0.35), axis=1)
    x, y = geom.points(s, lat.ravel())
    u, v, d = cam.project(x.reshape(-1, 5), y.reshape(-1, 5), z)
    for i, light in enumerate(lights):
        depth = float(d[i, 0])
        if depth <= 1.0:
            continue
        u0, v0 = float(u[i, 0]), float(v[i, 0])
        short_px = max(_TL_HOUSING_M[0] * cam.f / depth, _TL_MIN_SHORT_PX * cam.scale)
        long_px = short_px * _TL_HOUSING_M[1] / _TL_HOUSING_M[0]
        w_px, h_px = (long_px, short_px) if light.horizontal else (short_px, long_px)
        box = (u0 - 0.5 * w_px, v0 - 0.5 * h_px, u0 + 0.5 * w_px, v0 + 0.5 * h_px)
        pole = _pole_quad(cam, u[i, 1:3], v[i, 1:3], depth, 0.18) if (d[i, 1:3] > _NEAR_M).all() else None
        arm_quad = None
        if arm[i] and (d[i, 3:5] > _NEAR_M).all():
            t = max(0.12 * cam.f / depth, 0.35 * cam.scale)
            au, av = u[i, 3:5], v[i, 3:5]
            arm_quad = _fixed(
                np.array([au[0], au[1], au[1], au[0]]), np.array([av[0] - t, av[1] - t, av[1] + t, av[0] + t])
            )
        lamps: list[tuple[float, float, float, RGB, bool]] = []  # u, v, radius, colour, lit
        lit_index = -1
        states = light.lamp_states()
        box_panel = None
        if light.facing_ego:
            r = 0.3 * short_px
            for k, st in enumerate(states):
                off = (k - 1) * long_px / 3.0
                lu, lv = (u0 + off, v0) if light.horizontal else (u0, v0 + off)
                colour = {TL_RED: _RED_LAMP, TL_YELLOW: light.yellow_colour, TL_GREEN: light.go_colour}[st]
                on = st == light.state
                if on:
                    lit_index = k
                lamps.append((lu, lv, r, colour if on else _shade(colour, 0.16), on))
            if light.arrow_panel and light.state == TL_RED:
                # Arrow panel under the main housing: left and right turn arrows lit, straight arrow dark.
                pv = v0 + h_px * 0.5 + 0.45 * short_px
                for k, on in enumerate((True, False, True)):
                    off = (k - 1) * long_px / 3.0
                    lamps.append((u0 + off, pv, 0.28 * short_px, light.go_colour if on else (30, 40, 40), on))
                box_panel = (u0 - 0.5 * w_px, v0 + 0.5 * h_px, u0 + 0.5 * w_px, pv + 0.4 * short_px)
        housing_colour = (38, 38, 40) if light.facing_ego else (60, 62, 64)

        def draw_light(
            pole=pole, arm_quad=arm_quad, boxes=(box, box_panel), lamps=lamps, colour=housing_colour, depth=depth
        ) -> None:
            for quad in (pole, arm_quad):
                if quad is not None:
                    cv2.fillConvexPoly(canvas.img, quad, (70, 72, 75), cv2.LINE_AA, _SHIFT)
            for b in boxes:
                if b is not None:
                    p0 = (int(b[0] * _ONE), int(b[1] * _ONE))
                    p1 = (int(b[2] * _ONE), int(b[3] * _ONE))
                    cv2.rectangle(canvas.img, p0, p1, colour, -1, cv2.LINE_AA, _SHIFT)
            for lu, lv, r, c, on in lamps:
                if on:
                    canvas.emissive.append(_Emissive(lu, lv, r, c, 1.6, depth))
                centre = (int(lu * _ONE), int(lv * _ONE))
                cv2.circle(canvas.img, centre, int(max(r, 0.5) * _ONE), c, -1, cv2.LINE_AA, _SHIFT)

        prims.append((depth, draw_light))
        if canvas.drawn is not None:
            info = {
                "horizontal": light.horizontal,
                "state": light.state,
                "lit_index": lit_index,
                "lamp_states": states,
                "governs_ego": light.governs_ego,
                "facing_ego": light.facing_ego,
            }
            canvas.drawn.append(DrawnBox("tl_housing", *box, depth, info))


def _street_lamp_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    lamps = [(s, lat) for s, lat in scene.street_lamps if 2.0 <= s <= 120.0]
    if not lamps:
        return
    # Per lamp: pole bottom, pole top, and the lamp head on an arm over the road.
    s = np.repeat([s for s, _ in lamps], 3)
    lat = np.array([[lat, lat, lat - math.copysign(1.5, lat)] for _, lat in lamps]).ravel()
    x, y = geom.points(s, lat)
    z = _Z_GROUND + np.broadcast_to(np.array([0.0, 7.5, 7.3]), (len(lamps), 3))
    u, v, d = cam.project(x.reshape(-1, 3), y.reshape(-1, 3), z)
    for i in range(len(lamps)):
        if (d[i] <= _NEAR_M).any():
            continue
        depth = float(d[i, 2])
        pole = _pole_quad(cam, u[i, :2], v[i, :2], float(d[i, :2].mean()), 0.2)
        head = (float(u[i, 2]), float(v[i, 2]), max(0.25 * cam.f / depth, 0.5 * cam.scale), depth)

        def draw(pole=pole, head=head) -> None:
            cv2.fillConvexPoly(canvas.img, pole, (85, 88, 92), cv2.LINE_AA, _SHIFT)
            hu, hv, r, dh = head
            colour = (255, 175, 70) if canvas.night else (110, 112, 115)
            centre, axes = (int(hu * _ONE), int(hv * _ONE)), (int(r * _ONE), int(0.5 * r * _ONE))
            cv2.ellipse(canvas.img, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)
            if canvas.night:
                canvas.emissive.append(_Emissive(hu, hv, r, colour, 1.0, dh))

        prims.append((depth, draw))


def _apply_lighting(canvas: _Canvas, scene: Scene) -> np.ndarray:
    img = canvas.img
    look = scene.look
    if canvas.night:
        gain = (0.2 + 0.95 * _headlight_gain(canvas.cam.height, canvas.cam.width)) * look.exposure
        out = img.astype(np.float32) * gain
    else:
        out = img.astype(np.float32) * (np.asarray(look.tint, dtype=np.float32) * look.exposure)
    # Emissive lamps: glow (blurred) added, then the lamp cores drawn over, unless something nearer hides them.
    if canvas.emissive:
        cores = np.zeros_like(img)
        any_glow = False
        for em in canvas.emissive:
            if any(
                x0 <= em.u <= x1 and y0 <= em.v <= y1 and d < em.depth - 1.0 for x0, y0, x1, y1, d in canvas.occluders
            ):
                continue
            r = max(em.radius, 0.5 * canvas.cam.scale)
            centre = (int(em.u * _ONE), int(em.v * _ONE))
            if em.glow > 0.0 and (canvas.night or em.glow >= 1.0):
                any_glow = True
                cv2.circle(
                    cores, centre, int(r * (1.0 + em.glow) * _ONE), _shade(em.colour, 0.55), -1, cv2.LINE_AA, _SHIFT
                )
            cv2.circle(cores, centre, int(r * _ONE), em.colour, -1, cv2.LINE_AA, _SHIFT)
        if any_glow:
            sigma = (1.4 if canvas.night else 0.7) * canvas.cam.scale
            glow = cv2.GaussianBlur(cores, (0, 0), sigma).astype(np.float32)
            out += glow * (1.6 if canvas.night else 0.6)
        np.maximum(out, cores.astype(np.float32), out=out)
    rng = np.random.default_rng(look.noise_seed)
    sigma = 6.0 if canvas.night else 2.0
    size = out.size
    start = int(rng.integers(0, size))
    out += _noise_bank(size)[start : start + size].reshape(out.shape) * sigma
    np.clip(out, 0.0, 255.0, out=out)
    res = out.astype(np.uint8)
    if canvas.night:
        salt = rng.random(out.shape[:2], dtype=np.float32)
        res[salt < 0.002] = 255
        res[salt > 0.998] = 0
    return res


def render_camera(
    scene: Scene, size: tuple[int, int] = (IMAGE_H, IMAGE_W), drawn: list[DrawnBox] | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB forward-camera image of the scene at ``size`` = (H, W).

    When ``drawn`` is a list, the boxes of the drawn traffic lights, vehicles and rocks are appended to it.
    """
    height, width = size
    cam = _camera(int(height), int(width))
    pal = scene.region.palette
    img = _background((pal.sky_top, pal.sky_horizon, pal.terrain), cam.height, cam.width).copy()
    canvas = _Canvas(img, cam, scene.region.night, drawn=drawn)
    geom = scene.geometry
    _silhouette(canvas, scene)
    _draw_ground(canvas, scene)
    prims: list = []
    _facade_prims(canvas, scene, geom, prims)
    _guardrail_prims(canvas, scene, geom, prims)
    _street_lamp_prims(canvas, scene, geom, prims)
    _vehicle_prims(canvas, scene, geom, prims)
    _light_prims(canvas, scene, geom, prims)
    prims.sort(key=lambda p: -p[0])
    for _, draw in prims:
        draw()
    return _apply_lighting(canvas, scene)


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

    st = np.arange(-50.0, 100.0, 3.0)
    for rail in scene.guardrails:
        s = st[(st >= rail.s0) & (st <= rail.s1)]
        if s.size >= 2:
            p0, p1 = _chain(geom, s, rail.lat)
            n = p0.shape[0]
            _hit_walls(
                best, inten, p0, p1, np.full(n, _Z_GROUND + 0.35), np.full(n, _Z_GROUND + 0.8), np.full(n, _I_GUARDRAIL)
            )
    facades = [f for f in scene.facades if f.s1 > -60.0 and f.s0 < 110.0]
    if facades:
        seg = _facade_segments(facades, -60.0, 110.0)
        x0, y0 = geom.points(seg["sa"], seg["lat"])
        x1, y1 = geom.points(seg["sb"], seg["lat"])
        # End walls of each block, from the face away from the road.
        ends = np.array([[f.s0, f.s1] for f in facades]).ravel()
        elat = np.repeat([f.lat for f in facades], 2)
        edep = np.repeat([f.depth for f in facades], 2)
        ex0, ey0 = geom.points(ends, elat)
        ex1, ey1 = geom.points(ends, elat + edep)
        p0 = np.concatenate((np.stack((x0, y0), 1), np.stack((ex0, ey0), 1)))
        p1 = np.concatenate((np.stack((x1, y1), 1), np.stack((ex1, ey1), 1)))
        f_h = np.array([f.height for f in facades])
        z_hi = _Z_GROUND + np.concatenate((0.5 * (seg["ha"] + seg["hb"]), np.repeat(f_h, 2)))
        f_int = np.array([_I_BUILDING if f.kind == "building" else _I_ROCKWALL for f in facades])
        value = np.concatenate((f_int[seg["fid"]], np.repeat(f_int, 2)))
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
