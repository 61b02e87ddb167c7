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


def bev_grid(points: np.ndarray, spec: BevSpec = BEV) -> np.ndarray:
    """(N, 3+) float32 points [x, y, z, (intensity)] in the vehicle frame → (C, rows, cols) float32 grid.

    Points outside the grid or not finite are ignored; an empty cloud gives an all-zero grid.
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
        inten = pts[keep, 3]
        finite_inten = inten[np.isfinite(inten)]  # an all-NaN channel: no scale to infer, and no warning
        if finite_inten.size and float(finite_inten.max()) > 1.0:
            inten = inten * (1.0 / 255.0)
        inten = np.nan_to_num(np.clip(inten, 0.0, 1.0))
        isum = np.bincount(flat, weights=inten, minlength=n_cells).astype(np.float32)
        grid[2] = (isum / np.maximum(count, 1.0)).reshape(rows, cols)
    np.clip(grid[0], 0.0, 1.0, out=grid[0])
    return grid
