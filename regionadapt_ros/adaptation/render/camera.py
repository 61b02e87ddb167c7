"""``render_camera``: a scene drawn back to front into an RGB image."""

from __future__ import annotations

import numpy as np

from regionadapt_ros.adaptation.render.common import DrawnBox, _camera, _Canvas
from regionadapt_ros.adaptation.render.ground import _background, _draw_ground, _silhouette
from regionadapt_ros.adaptation.render.props import (
    _apply_lighting,
    _facade_prims,
    _guardrail_prims,
    _light_prims,
    _street_lamp_prims,
    _vehicle_prims,
)
from regionadapt_ros.adaptation.scene import (
    Scene,
)
from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W


def render_camera(
    scene: Scene, size: tuple[int, int] = (IMAGE_H, IMAGE_W), drawn: list[DrawnBox] | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB forward-camera image of the scene at ``size`` = (H, W).

    When ``drawn`` is a list, the boxes of the drawn traffic lights, vehicles and rocks are appended to it.
    """
    height, width = size
    cam = _camera(int(height), int(width))
    pal = scene.region.palette
    img = _background((pal.sky_top, pal.sky_horizon, pal.terrain), cam.height, cam.width).copy()
    canvas = _Canvas(img, cam, scene.region.night, drawn=drawn)
    geom = scene.geometry
    _silhouette(canvas, scene)
    _draw_ground(canvas, scene)
    prims: list = []
    _facade_prims(canvas, scene, geom, prims)
    _guardrail_prims(canvas, scene, geom, prims)
    _street_lamp_prims(canvas, scene, geom, prims)
    _vehicle_prims(canvas, scene, geom, prims)
    _light_prims(canvas, scene, geom, prims)
    prims.sort(key=lambda p: -p[0])
    for _, draw in prims:
        draw()
    return _apply_lighting(canvas, scene)
