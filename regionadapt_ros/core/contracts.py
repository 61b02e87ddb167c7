"""The models' input/output contract, shared by preprocessing, the networks, the backends, the data
generator and the bundles. Changing a number here changes the architecture fingerprint of every bundle."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Camera input of the perception network: RGB, resized to (IMAGE_H, IMAGE_W), scaled to [0, 1] then
# normalised with IMAGE_MEAN / IMAGE_STD per channel. Tensor layout (1, 3, IMAGE_H, IMAGE_W), float32.
IMAGE_H = 96
IMAGE_W = 160
IMAGE_MEAN = (0.45, 0.45, 0.45)
IMAGE_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class BevSpec:
    """Lidar bird's-eye-view grid in the vehicle frame (x forward, y left, z up, metres).

    Grid row 0 is the far edge (x = x_max), column 0 is the left edge (y = y_max), so that the grid looks
    like a top-down picture with the vehicle at the bottom centre.
    Channels: 0 = log-occupancy (log1p(count) / log1p(16)), 1 = max height above ground, normalised by
    z_range and clipped to [0, 1], 2 = mean intensity (intensity assumed in [0, 1] or [0, 255], scaled to [0, 1]).
    """

    x_min: float = 0.0
    x_max: float = 51.2
    y_min: float = -25.6
    y_max: float = 25.6
    cell: float = 0.8
    z_ground: float = -1.7
    z_range: float = 3.0
    channels: int = 3

    @property
    def rows(self) -> int:
        return round((self.x_max - self.x_min) / self.cell)

    @property
    def cols(self) -> int:
        return round((self.y_max - self.y_min) / self.cell)


BEV = BevSpec()

# Traffic-light classes, index = class id in labels and logits.
TL_CLASSES = ("none", "red", "yellow", "green")

# Perception outputs (tensor names are the ONNX output names):
#   tl_logits (1, 4)  traffic-light state logits, order TL_CLASSES
#   lane      (1, 3)  lateral offset [m, + = vehicle left of lane centre], heading error [rad, + = pointing
#                     left of the lane direction], curvature [1/m, + = road bends left]
#   obstacle  (1, 2)  distance to the nearest obstacle in the ego lane [m, capped at OBSTACLE_MAX_M], and
#                     free-space fraction of the ego corridor up to OBSTACLE_MAX_M [0..1]
#   features  (1, FEATURE_DIM) the feature vector the decision network consumes
OBSTACLE_MAX_M = 60.0
FEATURE_DIM = 64
PERCEPTION_INPUTS = ("image", "bev")
PERCEPTION_OUTPUTS = ("tl_logits", "lane", "obstacle", "features")

# Decision network: inputs features (1, FEATURE_DIM) and speed (1, 1) [m/s];
# output control (1, 2) = steering angle [rad, + = left] and longitudinal acceleration [m/s^2].
DECISION_INPUTS = ("features", "speed")
DECISION_OUTPUTS = ("control",)

# Label names used by datasets and evaluation (one value per sample; NaN = not labelled).
LABELS = (
    "tl_state",          # int class id in TL_CLASSES
    "lane_offset",       # m
    "heading_error",     # rad
    "curvature",         # 1/m
    "obstacle_distance",  # m, OBSTACLE_MAX_M when nothing is ahead
    "free_space",        # 0..1
    "steering",          # rad, expert command
    "accel",             # m/s^2, expert command
    "speed",             # m/s, ego speed (an input, always present)
)
# Bounds no real vehicle's labels leave (steering within a quarter turn, speed within 360 km/h, ...): a value
# beyond them is a wrong unit (degrees, km/h, millimetres) or a float32 overflow, not a driving situation. The
# importers refuse it per cell, and a dataset holding it is refused when it is opened.
LABEL_PLAUSIBLE_RANGE = {
    "lane_offset": (-50.0, 50.0), "heading_error": (-math.pi, math.pi), "curvature": (-1.0, 1.0),
    "steering": (-math.pi / 2, math.pi / 2), "accel": (-30.0, 30.0), "speed": (-100.0, 100.0),
    "obstacle_distance": (0.0, OBSTACLE_MAX_M), "free_space": (0.0, 1.0),
}
