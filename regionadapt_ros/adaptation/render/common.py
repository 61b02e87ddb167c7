"""What the camera and the lidar share: the pinhole camera, sensor constants, lidar materials and drawing primitives."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from regionadapt_ros.adaptation.regions import RGB
from regionadapt_ros.adaptation.scene import (
    CAMERA_HEIGHT_M,
    LIDAR_HEIGHT_M,
)
from regionadapt_ros.core.contracts import IMAGE_W

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


def _hash01(seed: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) from integer (seed, j) pairs (stable across frames)."""
    x = (seed.astype(np.uint64) * np.uint64(0x9E3779B1) + j.astype(np.uint64) * np.uint64(0x85EBCA77)) & np.uint64(
        0xFFFFFFFF
    )
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(12)
    return (x & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)
