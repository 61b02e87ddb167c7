"""Residual bottleneck adapter.

Both networks always contain their adapters so that an adapter fine-tune changes tensor values only, never
the architecture: a base model has zero up-projections (the adapter is then an exact identity), and every
region bundle, whatever its fine-tuning method, fits the same ONNX graph and the same TensorRT engine.
"""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """x + up(relu(down(x))).

    Shapes: x (B, dim) → (B, dim). ``up`` starts at zero, so a fresh adapter is the identity.
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))
