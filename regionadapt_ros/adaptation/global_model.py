"""The global region-conditioned model, served through the same product path as every bundle.

The global model gets the region as a one-hot input concatenated to the perception network's fusion layer
input and to the decision network's first layer input. For a fixed region r that input is constant, so the
columns of those two weight matrices that multiply it only add ``W[:, offset + r]`` to the layer's bias:
dropping the columns and adding them to the bias gives a network of the serving architecture (region_dim 0)
that computes exactly what the global model computes for region r. ``fold_region`` does that, and
``write_global_bundles`` writes one full bundle per region, so the global model drives through
``DrivingSession`` like the regional bundles and the base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from regionadapt_ros.core.contracts import FEATURE_DIM

# (model, weight name of the layer that takes the region input, number of inputs before the region one-hot)
REGION_INPUT_LAYERS = (("perception", "fusion.0", 128 + 64), ("decision", "body.0", FEATURE_DIM + 1))

Weights = dict[str, dict[str, np.ndarray]]


def fold_region(weights: Mapping[str, Mapping[str, np.ndarray]], region_index: int, region_dim: int) -> Weights:
    """Serving-architecture weights equal to the global model conditioned on region ``region_index``."""
    if not 0 <= region_index < region_dim:
        raise ValueError(f"region index {region_index} outside the global model's {region_dim} regions")
    out = {m: {k: np.array(v, np.float32, copy=True) for k, v in w.items()} for m, w in weights.items()}
    for model, layer, n_inputs in REGION_INPUT_LAYERS:
        w = out[model][f"{layer}.weight"]
        if w.shape[1] != n_inputs + region_dim:
            raise ValueError(f"{model}.{layer}.weight has {w.shape[1]} inputs, expected {n_inputs} + {region_dim}")
        out[model][f"{layer}.bias"] = out[model][f"{layer}.bias"] + w[:, n_inputs + region_index]
        out[model][f"{layer}.weight"] = np.ascontiguousarray(w[:, :n_inputs])
    return out


def write_global_bundles(weights: Mapping[str, Mapping[str, np.ndarray]], regions: Sequence[str],
                         region_order: Sequence[str], out_dir: str | Path, metrics: Mapping[str, object] | None = None
                         ) -> dict[str, Path]:
    """One full bundle ``out_dir/<region>`` per region of the folded global model; {region: bundle dir}."""
    from regionadapt_ros import __version__
    from regionadapt_ros.core import bundle as bundle_io
    from regionadapt_ros.models.registry import reference_architectures

    arch = reference_architectures()
    out = {}
    for region in regions:
        folded = fold_region(weights, list(region_order).index(region), len(region_order))
        path = Path(out_dir) / region
        bundle_io.write_bundle(path, region, 1, folded, "full", None, arch,
                               {"kind": "global", "region_index": list(region_order).index(region),
                                **dict(metrics or {})},
                               created_by=f"regionadapt_ros {__version__}", overwrite=True)
        out[region] = path
    return out
