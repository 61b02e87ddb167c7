"""A backend for collision-risk tests: the real networks on ONNX Runtime, with the perception head's obstacle
distance (and optionally the decision's acceleration) replaced frame by frame by a script, so that a test
decides what the obstacle ahead does and what the model asks for. Warm-up runs are not frames: they pass
through unchanged and do not advance the script."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from regionadapt_ros.inference.backend import InferenceBackend, ModelRunner
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend


class ScriptedObstacleBackend(InferenceBackend):
    """``distance(frame)`` [m] (None: the network's own value) replaces ``obstacle[0, 0]`` of the perception
    output of frame ``frame`` (0, 1, ... counting real perception runs); ``accel`` [m/s^2] (None: the network's)
    replaces the decision's acceleration on every frame; ``lane`` (lateral offset, heading error, curvature;
    None: the network's) replaces the perceived lane on every frame. ``inner``: the backend doing the work (share
    one across tests: it keeps the exported graphs)."""

    name = "scripted-obstacle"

    def __init__(self, distance: Callable[[int], float | None], accel: float | None = None,
                 inner: InferenceBackend | None = None, lane: tuple[float, float, float] | None = None) -> None:
        self.inner = inner or OnnxRuntimeBackend()
        self.distance = distance
        self.accel = accel
        self.lane = lane
        self.frames = 0

    def prepare(self, model_name: str, weights) -> ModelRunner:
        inner = self.inner.prepare(model_name, weights)
        backend = self

        class Runner(ModelRunner):
            def __init__(self) -> None:
                self.model_name, self.input_names, self.output_names = (
                    inner.model_name, inner.input_names, inner.output_names)

            def warmup(self, iterations: int = 3, rng_seed: int = 0) -> dict[str, np.ndarray]:
                return inner.warmup(iterations, rng_seed)

            def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                out = dict(inner.run(inputs))
                if model_name == "perception":
                    value = backend.distance(backend.frames)
                    backend.frames += 1
                    if value is not None:
                        out["obstacle"] = out["obstacle"].copy()
                        out["obstacle"][0, 0] = value
                    if backend.lane is not None:
                        out["lane"] = np.asarray([backend.lane], np.float32)
                elif backend.accel is not None:
                    out["control"] = out["control"].copy()
                    out["control"][0, 1] = backend.accel
                return out

            def close(self) -> None:
                inner.close()

        return Runner()


def approach(start_frame: int, start_m: float, closing_mps: float, hz: float,
             clear_m: float = 60.0) -> Callable[[int], float]:
    """Nothing ahead (``clear_m``) before ``start_frame``, then an obstacle from ``start_m`` closing at
    ``closing_mps``; once it would be reached, nothing ahead again (it left the lane)."""

    def distance(frame: int) -> float:
        if frame < start_frame:
            return clear_m
        d = start_m - closing_mps * (frame - start_frame) / hz
        return d if d > 0.5 else clear_m

    return distance
