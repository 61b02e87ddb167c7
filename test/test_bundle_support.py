"""Helpers shared by the bundle, signing and bundle-store tests: small architectures and random weights.

The architectures mimic the real networks' tensor kinds (a conv stem, an adapter pair, a linear head, an
integer buffer) but are small, so that bundles are written and read in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import bundle as bundle_io

PERCEPTION_SHAPES: dict[str, tuple[tuple[int, ...], str]] = {
    "stem.weight": ((8, 3, 3, 3), "float32"),
    "stem.bias": ((8,), "float32"),
    "bn.running_mean": ((8,), "float32"),
    "bn.num_batches_tracked": ((), "int64"),
    "adapter.down.weight": ((2, 8), "float32"),
    "adapter.up.weight": ((8, 2), "float32"),
    "head.weight": ((3, 8), "float32"),
    "head.bias": ((3,), "float32"),
}
DECISION_SHAPES: dict[str, tuple[tuple[int, ...], str]] = {
    "fc1.weight": ((16, 9), "float32"),
    "fc1.bias": ((16,), "float32"),
    "out.weight": ((2, 16), "float32"),
    "out.bias": ((2,), "float32"),
}
SHAPES = {"perception": PERCEPTION_SHAPES, "decision": DECISION_SHAPES}


def architectures() -> dict[str, dict[str, Any]]:
    return {name: bundle_io.fingerprint(shapes) for name, shapes in SHAPES.items()}


def random_weights(seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Full weights of both models, every float tensor different for different seeds."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for model, shapes in SHAPES.items():
        out[model] = {}
        for name, (shape, dtype) in shapes.items():
            if dtype == "int64":
                out[model][name] = np.array(rng.integers(0, 1000), dtype=np.int64).reshape(shape)
            else:
                out[model][name] = rng.standard_normal(shape).astype(dtype)
    return out


def write_base(path: Path, seed: int = 0, version: int = 1) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A base bundle of full weights; returns (path, weights)."""
    weights = random_weights(seed)
    bundle_io.write_bundle(path, "base", version, weights, "full", None, architectures(),
                           {"primary": "mae", "value": 0.5})
    return path, weights


def write_head_delta(path: Path, base_weights: dict[str, dict[str, np.ndarray]], region: str = "highway",
                     version: int = 1, seed: int = 1) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A subset bundle holding new perception head tensors and a full decision model; returns (path, stored)."""
    rng = np.random.default_rng(seed)
    stored = {
        "perception": {"head.weight": rng.standard_normal((3, 8)).astype(np.float32),
                       "head.bias": rng.standard_normal(3).astype(np.float32)},
        "decision": random_weights(seed)["decision"],
    }
    bundle_io.write_bundle(path, region, version, stored, {"perception": "subset", "decision": "full"},
                           bundle_io.models_hash(base_weights), architectures(),
                           {"primary": "mae", "base": 0.5, "finetuned": 0.4})
    return path, stored


def rewrite_manifest(bundle_dir: Path, change: Any) -> None:
    """Load manifest.json, apply ``change(manifest)`` and write it back (to simulate tampering)."""
    path = bundle_dir / bundle_io.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def replace_file_and_hash(bundle_dir: Path, name: str, data: bytes) -> None:
    """Replace a bundle file and fix its sha256 in the manifest (an unsigned bundle edited consistently), so
    that checks after the size and hash checks are reached."""
    import hashlib

    (bundle_dir / name).write_bytes(data)

    def fix(manifest: dict[str, Any]) -> None:
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
        manifest["sizes"][name] = len(data)

    rewrite_manifest(bundle_dir, fix)
