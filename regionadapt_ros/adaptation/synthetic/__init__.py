"""Synthetic regional driving data: independent labelled samples for training, and temporally coherent drives
for recorded demos.

Samples: every sample is an independent scene drawn from the region's distributions (``sample_scene``),
rendered by the camera renderer at the model size and by the lidar simulator, reduced to the model's BEV grid,
and labelled with the scene's truth and the expert's command. Sample ``i`` of (region, seed) depends only on
(seed, region, i), so the output is identical whatever the number of workers.

Drives: ``DriveGenerator`` keeps a world along an endless road (curvature, lanes, traffic lights that cycle,
vehicles that drive and stop at lights, buildings, rocks, guardrails) and moves the ego with a kinematic
bicycle model driven by the expert's commands, yielding one ``DriveFrame`` per tick.

Modules: ``scenes`` (independent scenes and samples), ``generation`` (datasets of samples, in worker processes),
``drive`` (``DriveGenerator``, the coherent world).
"""

from regionadapt_ros.adaptation.synthetic.drive import DriveFrame, DriveGenerator
from regionadapt_ros.adaptation.synthetic.generation import ARRAY_NAMES, CHUNK, generate_into, generate_samples
from regionadapt_ros.adaptation.synthetic.scenes import (
    GENERATOR_VERSION,
    random_profile,
    render_sample,
    sample_rng,
    sample_scene,
)

__all__ = [
    "ARRAY_NAMES",
    "CHUNK",
    "GENERATOR_VERSION",
    "DriveFrame",
    "DriveGenerator",
    "generate_into",
    "generate_samples",
    "random_profile",
    "render_sample",
    "sample_rng",
    "sample_scene",
]
