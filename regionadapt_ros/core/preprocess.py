"""Sensor arrays → model input arrays (numpy/OpenCV, vectorised). Used identically by the serving pipeline
and by dataset building, so training and serving see the same inputs."""

from __future__ import annotations

import cv2
import numpy as np

from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_MEAN, IMAGE_STD, IMAGE_W, BevSpec

_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32)
_INV_STD = 1.0 / np.asarray(IMAGE_STD, dtype=np.float32)
_OCC_NORM = 1.0 / np.log1p(16.0)


def resize_rgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any size → (IMAGE_H, IMAGE_W, 3) uint8 RGB (area interpolation when shrinking)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.shape[0] == IMAGE_H and rgb.shape[1] == IMAGE_W:
        return rgb
    interp = cv2.INTER_AREA if rgb.shape[0] > IMAGE_H else cv2.INTER_LINEAR
    return cv2.resize(rgb, (IMAGE_W, IMAGE_H), interpolation=interp)


def normalise_rgb(small: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(..., IMAGE_H, IMAGE_W, 3) uint8 → (..., 3, IMAGE_H, IMAGE_W) float32, normalised."""
    x = small.astype(np.float32) * (1.0 / 255.0)
    x -= _MEAN
    x *= _INV_STD
    x = np.moveaxis(x, -1, -3)
    if out is not None:
        out[...] = x
        return out
    return np.ascontiguousarray(x)


def image_tensor(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (1, 3, IMAGE_H, IMAGE_W) float32 model input."""
    return normalise_rgb(resize_rgb(rgb))[None]


# The full-scale intensity of the 8-bit drivers (Velodyne, Livox, RoboSense, Hesai): 0..255. CARLA, KITTI and the
# synthetic world give reflectance 0..1, which is what the BEV grid holds.
EIGHT_BIT_FULL_SCALE = 255.0


class IntensityScale:
    """What a lidar's intensity value means as reflectance 0..1: the value divided by ``full_scale``.

    A sensor keeps one scale: deciding it per sweep let one bright return in a 0..1 sweep (or a dark 0..255
    sweep) change the meaning of every other point. ``full_scale`` None decides it once, from the first sweep
    with a finite intensity: any value above 1 means the 8-bit scale, else 0..1; later sweeps keep it
    (``decided_by`` says which). Values beyond the scale are clipped to 1.
    """

    def __init__(self, full_scale: float | None = None) -> None:
        if full_scale is not None and (isinstance(full_scale, bool) or not isinstance(full_scale, (int, float))
                                       or not (np.isfinite(full_scale) and full_scale > 0)):
            raise ValueError(f"full_scale must be a positive number or None, got {full_scale!r}")
        self.full_scale: float | None = None if full_scale is None else float(full_scale)
        self.decided_by = "configured" if full_scale is not None else "undecided"

    def normalise(self, intensity: np.ndarray) -> np.ndarray:
        """Intensities → reflectance in [0, 1] (NaN → 0)."""
        if self.full_scale is None:
            finite = intensity[np.isfinite(intensity)]
            if not finite.size or float(finite.max()) <= 0.0:
                # an all-NaN or all-dark channel (a sensor warming up): nothing to decide the scale from yet
                return np.nan_to_num(np.clip(intensity, 0.0, 1.0))
            self.full_scale = EIGHT_BIT_FULL_SCALE if float(finite.max()) > 1.0 else 1.0
            self.decided_by = "first sweep"
        scaled = intensity if self.full_scale == 1.0 else intensity * np.float32(1.0 / self.full_scale)
        return np.nan_to_num(np.clip(scaled, 0.0, 1.0))


def bev_grid(points: np.ndarray, spec: BevSpec = BEV, intensity: IntensityScale | None = None) -> np.ndarray:
    """(N, 3+) float32 points [x, y, z, (intensity)] in the vehicle frame → (C, rows, cols) float32 grid.

    Points outside the grid or not finite are ignored; an empty cloud gives an all-zero grid. ``intensity``: the
    sensor's scale, kept across its sweeps (default: a fresh one, decided by this sweep alone).
    """
    rows, cols = spec.rows, spec.cols
    grid = np.zeros((spec.channels, rows, cols), dtype=np.float32)
    if points.size == 0:
        return grid
    pts = np.asarray(points, dtype=np.float32)
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    # A coordinate near float32's range overflows to inf here, and inf or NaN fails the bounds below: the point
    # is off the grid, which is all numpy's warning would say.
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.floor((spec.x_max - x) / spec.cell)
        c = np.floor((spec.y_max - y) / spec.cell)
    keep = finite & (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    if not keep.any():
        return grid
    flat = (r[keep].astype(np.int64) * cols + c[keep].astype(np.int64))
    n_cells = rows * cols
    count = np.bincount(flat, minlength=n_cells).astype(np.float32)
    grid[0] = (np.log1p(count) * _OCC_NORM).reshape(rows, cols)
    height = np.clip((z[keep] - spec.z_ground) / spec.z_range, 0.0, 1.0)
    hmax = np.zeros(n_cells, dtype=np.float32)
    np.maximum.at(hmax, flat, height)
    grid[1] = hmax.reshape(rows, cols)
    if pts.shape[1] >= 4:
        inten = (intensity or IntensityScale()).normalise(pts[keep, 3])
        isum = np.bincount(flat, weights=inten, minlength=n_cells).astype(np.float32)
        grid[2] = (isum / np.maximum(count, 1.0)).reshape(rows, cols)
    np.clip(grid[0], 0.0, 1.0, out=grid[0])
    return grid
