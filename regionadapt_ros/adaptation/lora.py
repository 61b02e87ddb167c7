"""LoRA factors for ``nn.Linear`` layers, injected for fine-tuning and exported as bundle deltas.

A bundle of kind "lora" stores, for an adapted weight ``X.weight``, the factors ``X.weight.lora_A`` (r, in) and
``X.weight.lora_B`` (out, r); loading resolves ``W' = W + (alpha / r) * B @ A`` (core.bundle), so serving runs
the plain architecture and every backend (and the TensorRT refitter) sees ordinary dense weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Linear layers that LoRA adapts, per model (state_dict names without ".weight").
LORA_TARGETS = {
    "perception": ("image_trunk.6", "bev_trunk.4", "fusion.0"),
    "decision": ("body.0", "body.2"),
}


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x @ A^T @ B^T, base frozen.

    Shapes: x (B, in) → (B, out); A (r, in) small random, B (out, r) zero, so training starts at the base.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for p in self.base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * self.lora_B @ self.lora_A


def _get_parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    parts = path.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p) if not p.isdigit() else parent[int(p)]
    return parent, parts[-1]


def inject_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Replace each target Linear of ``model`` by a LoRALinear wrapping it; returns path → wrapper."""
    wrappers = {}
    for path in targets:
        parent, last = _get_parent(model, path)
        base = parent[int(last)] if last.isdigit() else getattr(parent, last)
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA target {path} is {type(base).__name__}, not nn.Linear")
        wrapper = LoRALinear(base, rank, alpha)
        if last.isdigit():
            parent[int(last)] = wrapper
        else:
            setattr(parent, last, wrapper)
        wrappers[path] = wrapper
    return wrappers


def remove_lora(model: nn.Module, wrappers: dict[str, LoRALinear]) -> None:
    """Merge the factors into the base Linear layers and put them back (the plain architecture again)."""
    for path, wrapper in wrappers.items():
        with torch.no_grad():
            wrapper.base.weight.copy_(wrapper.merged_weight())
        parent, last = _get_parent(model, path)
        if last.isdigit():
            parent[int(last)] = wrapper.base
        else:
            setattr(parent, last, wrapper.base)
