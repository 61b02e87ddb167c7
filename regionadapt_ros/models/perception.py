"""Perception network: camera image + lidar BEV grid → traffic light, lane geometry, obstacle, features."""

from __future__ import annotations

import torch
from torch import nn

from regionadapt_ros.core.contracts import BEV, FEATURE_DIM, IMAGE_H, IMAGE_W, OBSTACLE_MAX_M, TL_CLASSES
from regionadapt_ros.models.adapter import Adapter

# Lane outputs are predicted on a unit scale and multiplied here so that the exported graph emits physical
# units: offset [m], heading error [rad], curvature [1/m].
LANE_SCALE = (1.0, 0.2, 0.05)


def _conv(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    """Conv → BatchNorm → ReLU. BatchNorm makes the from-scratch CNN train reliably on small regional data;
    in eval mode (serving, ONNX export) it is a fixed affine map that ONNX Runtime and TensorRT fold away."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class PerceptionNet(nn.Module):
    """Two-branch CNN with late fusion.

    Inputs:
        image: (B, 3, IMAGE_H=96, IMAGE_W=160) float32, normalised RGB (core.preprocess.image_tensor)
        bev:   (B, 3, 64, 64) float32 lidar grid (core.preprocess.bev_grid)
        region (optional, only when ``region_dim`` > 0): (B, region_dim) one-hot region id, used by the
               single global model that is compared against per-region fine-tuning.
    Outputs (a dict, and in this order in ONNX):
        tl_logits: (B, 4)  logits over TL_CLASSES
        lane:      (B, 3)  lateral offset [m], heading error [rad], curvature [1/m]
        obstacle:  (B, 2)  distance to the nearest obstacle in the ego lane [m, 0..60], free-space fraction
        features:  (B, FEATURE_DIM=64) input of the decision network

    Parameter groups used by fine-tuning: ``image_trunk``, ``bev_trunk``, ``fusion`` (the backbone),
    ``adapter``, and the heads ``tl_head``, ``lane_head``, ``obstacle_head``, ``feature_head``.
    """

    def __init__(self, region_dim: int = 0) -> None:
        super().__init__()
        self.region_dim = region_dim
        # 96x160 → 48x80 → 24x40 → 12x20 → 6x10 → 6x10 (the last block keeps the resolution: traffic lights
        # are a few pixels wide and their position in the picture matters)
        self.image_trunk = nn.Sequential(
            _conv(3, 24, 5, 2),
            _conv(24, 32, 3, 2),
            _conv(32, 48, 3, 2),
            _conv(48, 64, 3, 2),
            _conv(64, 64, 3, 1),
            nn.Flatten(),
            nn.Linear(64 * 6 * 10, 128),
            nn.ReLU(inplace=True),
        )
        # 64x64 → 32x32 → 16x16 → 8x8
        self.bev_trunk = nn.Sequential(
            _conv(BEV.channels, 16, 3, 2),
            _conv(16, 32, 3, 2),
            _conv(32, 32, 3, 2),
            nn.Flatten(),
            nn.Linear(32 * (BEV.rows // 8) * (BEV.cols // 8), 64),
            nn.ReLU(inplace=True),
        )
        self.fusion = nn.Sequential(nn.Linear(128 + 64 + region_dim, 128), nn.ReLU(inplace=True))
        self.adapter = Adapter(128, 16)
        self.tl_head = nn.Linear(128, len(TL_CLASSES))
        self.lane_head = nn.Linear(128, 3)
        self.obstacle_head = nn.Linear(128, 2)
        self.feature_head = nn.Sequential(nn.Linear(128, FEATURE_DIM), nn.ReLU(inplace=True))
        # Non-persistent: output scaling is part of the architecture, not of the weights a bundle carries.
        self.register_buffer("lane_scale", torch.tensor(LANE_SCALE).reshape(1, 3), persistent=False)
        self.register_buffer("obstacle_scale", torch.tensor([OBSTACLE_MAX_M, 1.0]).reshape(1, 2), persistent=False)

    # The convolutional stems end at the Flatten of each trunk: index 6 of image_trunk, 4 of bev_trunk.
    IMAGE_STEM_END = 6
    BEV_STEM_END = 4

    def stem_features(self, image: torch.Tensor, bev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolutional stems only: (B, 3840) image and (B, 2048) BEV features. Fine-tuning methods that
        freeze the stems compute these once per sample instead of once per step."""
        return self.image_trunk[: self.IMAGE_STEM_END](image), self.bev_trunk[: self.BEV_STEM_END](bev)

    def forward(
        self, image: torch.Tensor, bev: torch.Tensor, region: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        return self.from_stem_features(*self.stem_features(image, bev), region)

    def from_stem_features(
        self, image_stem: torch.Tensor, bev_stem: torch.Tensor, region: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The rest of the network from ``stem_features`` outputs; same outputs as ``forward``."""
        parts = [self.image_trunk[self.IMAGE_STEM_END:](image_stem), self.bev_trunk[self.BEV_STEM_END:](bev_stem)]
        if self.region_dim:
            if region is None:
                raise ValueError("this PerceptionNet was built with region_dim > 0 and needs a region input")
            parts.append(region)
        h = self.adapter(self.fusion(torch.cat(parts, dim=1)))
        return {
            "tl_logits": self.tl_head(h),
            "lane": self.lane_head(h) * self.lane_scale,
            "obstacle": torch.sigmoid(self.obstacle_head(h)) * self.obstacle_scale,
            "features": self.feature_head(h),
        }

    @staticmethod
    def example_inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randn(batch, 3, IMAGE_H, IMAGE_W), torch.rand(batch, BEV.channels, BEV.rows, BEV.cols))


HEAD_PREFIXES = ("tl_head.", "lane_head.", "obstacle_head.", "feature_head.")
ADAPTER_PREFIXES = ("adapter.",)
