"""Camera renderer (OpenCV) and spinning-lidar simulator of a ``Scene``.

Camera: a pinhole camera CAMERA_HEIGHT_M above the ground on the ego, pitched PITCH_DEG down, HFOV_DEG wide,
rendered directly at any requested size (the model's 96x160 for training, e.g. 192x320 for recorded drives).
The world is drawn back to front: sky and distant scenery (skyline, tree line or mountains), the ground
(road, sidewalks / shoulders, markings, stop lines, cross streets) projected from the road frame, then the
upright things (buildings, rock walls, guardrails, vehicles, rocks, poles, traffic lights) sorted by depth.
Traffic lights are drawn no smaller than a few pixels of the 96x160 image so that their state stays
learnable. At night the image is darkened except for a headlight cone, lamps (traffic lights, tail and brake
lights, oncoming headlights, sodium street lamps, windows) are drawn afterwards with a glow, and sensor noise
(gaussian and salt-and-pepper) is added.

Lidar: LIDAR_BEAMS rings from -25° to +5° elevation, LIDAR_AZ_STEP_DEG apart in azimuth (360°), mounted at
the vehicle-frame origin, LIDAR_HEIGHT_M above the ground. Each ray hits the nearest of: the ground plane
(intensity from a top-down material map of the road), vertical walls (buildings, rock walls), guardrails and
boxes (vehicles, rocks). Output is an organised (rings x columns, 4) float32 cloud [x, y, z, intensity 0..1];
rays without a return are NaN (x, y, z) with intensity 0, so the cloud is not dense.

Modules: ``common`` (camera model, sensor constants, drawing primitives), ``ground`` (road, markings and
background), ``props`` (the upright things and night lighting), ``camera`` (``render_camera``), ``lidar``
(``simulate_lidar``).
"""

from regionadapt_ros.adaptation.render.camera import render_camera
from regionadapt_ros.adaptation.render.common import (
    HFOV_DEG,
    LIDAR_AZ_STEP_DEG,
    LIDAR_BEAMS,
    LIDAR_ELEVATION_DEG,
    LIDAR_MAX_RANGE_M,
    PITCH_DEG,
    Camera,
    DrawnBox,
)
from regionadapt_ros.adaptation.render.lidar import simulate_lidar

__all__ = [
    "HFOV_DEG",
    "LIDAR_AZ_STEP_DEG",
    "LIDAR_BEAMS",
    "LIDAR_ELEVATION_DEG",
    "LIDAR_MAX_RANGE_M",
    "PITCH_DEG",
    "Camera",
    "DrawnBox",
    "render_camera",
    "simulate_lidar",
]
