"""Decision network: perception features + ego speed → steering and longitudinal acceleration."""

from __future__ import annotations

import torch
from torch import nn

from regionadapt_ros.core.contracts import FEATURE_DIM
from regionadapt_ros.models.adapter import Adapter

SPEED_NORM = 30.0  # m/s; keeps the speed input near unit scale
STEER_MAX = 0.5    # rad; tanh output scale, the vehicle limits clamp further downstream
ACCEL_SCALE = 3.0  # m/s^2 per unit output


class DecisionNet(nn.Module):
    """MLP policy imitating the region's expert driver.

    Inputs:
        features: (B, FEATURE_DIM=64) from PerceptionNet
        speed:    (B, 1) ego speed [m/s]
        region (optional, only when ``region_dim`` > 0): (B, region_dim) one-hot region id
    Output:
        control: (B, 2) steering angle [rad, + = left, |.| ≤ 0.5], longitudinal acceleration [m/s^2]

    Parameter groups: ``body`` (backbone), ``adapter``, ``head``.
    """

    def __init__(self, region_dim: int = 0) -> None:
        super().__init__()
        self.region_dim = region_dim
        self.body = nn.Sequential(
            nn.Linear(FEATURE_DIM + 1 + region_dim, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
        )
        self.adapter = Adapter(64, 16)
        self.head = nn.Linear(64, 2)

    def forward(
        self, features: torch.Tensor, speed: torch.Tensor, region: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        parts = [features, speed / SPEED_NORM]
        if self.region_dim:
            if region is None:
                raise ValueError("this DecisionNet was built with region_dim > 0 and needs a region input")
            parts.append(region)
        raw = self.head(self.adapter(self.body(torch.cat(parts, dim=1))))
        steering = torch.tanh(raw[:, :1]) * STEER_MAX
        accel = raw[:, 1:2] * ACCEL_SCALE
        return {"control": torch.cat([steering, accel], dim=1)}

    @staticmethod
    def example_inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.rand(batch, FEATURE_DIM), torch.rand(batch, 1) * 30.0)


HEAD_PREFIXES = ("head.",)
ADAPTER_PREFIXES = ("adapter.",)
