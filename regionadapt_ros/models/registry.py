"""Model names, construction, and the named-weight view that bundles, backends and the refitter share.

A model's weights are exchanged as ``dict[str, np.ndarray]`` keyed by ``state_dict`` names (float32), which
is what safetensors stores and what the ONNX export keeps as initializer names.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from regionadapt_ros.models.decision import DecisionNet
from regionadapt_ros.models.perception import PerceptionNet

MODEL_NAMES = ("perception", "decision")

# BatchNorm's step counter is training bookkeeping, not a weight: it is not in the exported graph, not in a
# bundle, and not part of the architecture fingerprint.
_NOT_WEIGHTS = ("num_batches_tracked",)


def _is_weight(name: str) -> bool:
    return not name.endswith(_NOT_WEIGHTS)

NamedWeights = dict[str, np.ndarray]


def build_model(name: str, region_dim: int = 0) -> nn.Module:
    """A freshly initialised network by name ("perception" or "decision"), in eval mode."""
    if name == "perception":
        model: nn.Module = PerceptionNet(region_dim)
    elif name == "decision":
        model = DecisionNet(region_dim)
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    return model.eval()


def named_weights(model: nn.Module) -> NamedWeights:
    """Every persistent tensor of ``model`` as a contiguous float32 numpy array (a copy)."""
    return {k: v.detach().cpu().contiguous().numpy().copy() for k, v in model.state_dict().items() if _is_weight(k)}


def architecture(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """name → (shape, dtype) of every persistent tensor: the input of ``core.bundle.fingerprint``."""
    return {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()
            if _is_weight(k)}


def load_named_weights(model: nn.Module, weights: NamedWeights) -> nn.Module:
    """Copy ``weights`` into ``model`` (strict: every tensor, same shapes)."""
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if _is_weight(k)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"weights do not fit {type(model).__name__}: missing {missing[:5]}, "
                           f"unexpected {list(result.unexpected_keys)[:5]}")
    for k, v in state.items():  # load_state_dict(strict=False) skips nothing else, but check shapes loudly
        if tuple(v.shape) != tuple(model.state_dict()[k].shape):
            raise RuntimeError(f"{k}: shape {tuple(v.shape)} does not fit {tuple(model.state_dict()[k].shape)}")
    return model


def reference_architectures() -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """The architecture of both serving models (region_dim = 0)."""
    return {name: architecture(build_model(name)) for name in MODEL_NAMES}
