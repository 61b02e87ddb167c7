"""Helpers shared by the driving-session and node tests: region bundles of the real networks (seeded random
weights) with a regions.yaml, and sensor messages built with the product's own builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from conftest import perturbed_weights

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core import msgconv

REGION_SEEDS = {"base": 11, "highway": 12, "urban_day": 13}
RULES = {"base": {"speed_limit_kph": 50, "driving_side": "right"},
         "highway": {"speed_limit_kph": 110, "driving_side": "right"},
         "urban_day": {"speed_limit_kph": 30, "driving_side": "right"}}


def write_region_bundles(root: Path, regions: tuple[str, ...] = ("base", "highway")) -> Path:
    """Full-weight bundles of both networks for ``regions`` under ``root/bundles`` and ``root/regions.yaml``
    mapping them (default region "base"); returns the regions.yaml path."""
    from regionadapt_ros.models.registry import reference_architectures

    architectures = reference_architectures()
    for region in regions:
        models = {m: perturbed_weights(m, REGION_SEEDS[region]) for m in ("perception", "decision")}
        bundle_io.write_bundle(root / "bundles" / region, region, 1, models, "full", None, architectures,
                               {"primary": "mae", "value": 0.5})
    doc = {"default_region": "base", "bundle_dir": "bundles", "require_signatures": False, "trusted_keys": [],
           "allow_rollback": False,
           "regions": {r: {"bundle": r, "rules": RULES[r]} for r in regions}}
    path = root / "regions.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def camera_image(types: Any, stamp_s: float, encoding: str = "rgb8", width: int = 160, height: int = 96,
                 seed: int = 0) -> Any:
    """A sensor_msgs/Image of a plausible road scene (grey road, sky, lane marks) in ``encoding``."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2] = (120, 160, 220)
    rgb[height // 2:] = (90, 90, 90)
    rgb[height // 2:, width // 2 - 2: width // 2 + 2] = 250
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-8, 8, rgb.shape), 0, 255).astype(np.uint8)
    if encoding == "rgb8":
        data = rgb
    elif encoding == "bgra8":
        data = np.concatenate([rgb[:, :, ::-1], np.full((height, width, 1), 255, np.uint8)], axis=2)
    else:
        raise ValueError(encoding)
    return msgconv.build_image(types, np.ascontiguousarray(data), encoding, stamp_s, "camera")


def lidar_cloud(types: Any, stamp_s: float, n_points: int = 400, seed: int = 0) -> Any:
    """A sensor_msgs/PointCloud2 (x, y, z, intensity FLOAT32) of ground points and a car-sized box ahead."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(0, 40, n_points), rng.uniform(-10, 10, n_points), np.full(n_points, -1.6),
                   rng.uniform(0, 1, n_points)]
    box = np.c_[rng.uniform(15, 17, 50), rng.uniform(-1, 1, 50), rng.uniform(-1.5, 0.0, 50), np.ones(50)]
    return msgconv.build_pointcloud2(types, np.vstack([ground, box]), ("x", "y", "z", "intensity"), stamp_s, "lidar")
