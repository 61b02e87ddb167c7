"""Real region bundles of the real architecture for tests: safetensors files, manifests, ed25519 signatures and
a regions.yaml, written with the project's own bundle code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from conftest import perturbed_weights

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.signing import generate_keypair
from regionadapt_ros.models.registry import reference_architectures

RULES = {
    "base": {"speed_limit_kph": 50, "driving_side": "right"},
    "highway": {"speed_limit_kph": 110, "driving_side": "right"},
    "mountain": {"speed_limit_kph": 60, "driving_side": "right"},
    "left_hand": {"speed_limit_kph": 40, "driving_side": "left"},
}


def write_bundle_set(root: Path, signed: bool = True, regions=("highway", "mountain", "left_hand"),
                     require_signatures: bool | None = None) -> dict:
    """bundles/{base,highway(subset),mountain(lora),left_hand(full)} + regions.yaml (+ keys).

    Returns {"yaml": path, "bundle_dir": path, "weights": {region: full weights}, "private_key": path|None}.
    """
    arch = reference_architectures()
    bundle_dir = root / "bundles"
    base = {m: perturbed_weights(m, 1) for m in ("perception", "decision")}
    bundle_io.write_bundle(bundle_dir / "base", "base", 1, base, "full", None, arch, {"kind": "base"})
    base_hash = bundle_io.models_hash(base)
    full = {"base": base}
    for i, region in enumerate(regions):
        seed = 10 + i
        if region == "highway":  # head + adapter subset
            rng = np.random.default_rng(seed)
            delta = {m: {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in base[m].items()
                         if k.startswith(("adapter.", "head.", "tl_head.", "lane_head.", "feature_head."))}
                     for m in base}
            bundle_io.write_bundle(bundle_dir / region, region, 1, delta, "subset", base_hash, arch, {})
            full[region] = {m: {**base[m], **delta[m]} for m in base}
        elif region == "mountain":  # LoRA factors on two dense layers
            rng = np.random.default_rng(seed)
            delta, resolved = {}, {}
            for m, target in (("perception", "fusion.0.weight"), ("decision", "body.0.weight")):
                w = base[m][target]
                a = rng.normal(0, 0.1, (4, w.shape[1])).astype(np.float32)
                b = rng.normal(0, 0.1, (w.shape[0], 4)).astype(np.float32)
                delta[m] = {f"{target}.lora_A": a, f"{target}.lora_B": b}
                resolved[m] = {**base[m], target: (w + (8.0 / 4) * b @ a).astype(np.float32)}
            bundle_io.write_bundle(bundle_dir / region, region, 1, delta, "lora", base_hash, arch, {},
                                   lora={m: {"rank": 4, "alpha": 8.0} for m in delta})
            full[region] = resolved
        else:
            weights = {m: perturbed_weights(m, seed) for m in base}
            bundle_io.write_bundle(bundle_dir / region, region, 1, weights, "full", base_hash, arch, {})
            full[region] = weights
    key = None
    cfg = {
        "default_region": "base", "bundle_dir": "bundles", "allow_rollback": False,
        "require_signatures": bool(signed if require_signatures is None else require_signatures),
        "trusted_keys": [],
        "regions": {r: {"bundle": r, "rules": RULES.get(r, RULES["base"])} for r in ("base", *regions)},
    }
    if signed:
        priv, pub, _ = generate_keypair(root / "keys", "fleet")
        key = priv
        for region in ("base", *regions):
            bundle_io.sign_bundle(bundle_dir / region, priv)
        cfg["trusted_keys"] = [str(pub)]
    path = root / "regions.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return {"yaml": path, "bundle_dir": bundle_dir, "weights": full, "private_key": key}
