"""The backend interface.

A backend turns (model name, named weights) into a ``ModelRunner``: a ready-to-run instance owning its own
copy of the weights (a torch module, an ONNX Runtime session, a TensorRT execution context). Preparing a runner
never touches another runner, so the next region's weights are prepared and warmed up off the serving thread
while the serving runner keeps running; switching is a reference swap (see ``inference.swap``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping

import numpy as np

from regionadapt_ros.core.contracts import (
    BEV,
    DECISION_INPUTS,
    DECISION_OUTPUTS,
    FEATURE_DIM,
    IMAGE_H,
    IMAGE_W,
    PERCEPTION_INPUTS,
    PERCEPTION_OUTPUTS,
)
from regionadapt_ros.core.errors import RegionAdaptError

NamedWeights = Mapping[str, np.ndarray]

IO = {
    "perception": (PERCEPTION_INPUTS, PERCEPTION_OUTPUTS),
    "decision": (DECISION_INPUTS, DECISION_OUTPUTS),
}

INPUT_SHAPES = {
    "perception": {"image": (1, 3, IMAGE_H, IMAGE_W), "bev": (1, BEV.channels, BEV.rows, BEV.cols)},
    "decision": {"features": (1, FEATURE_DIM), "speed": (1, 1)},
}


class BackendError(RegionAdaptError, RuntimeError):
    """A runner could not be prepared or run (missing library, bad weights, device problem): what a user acts on
    (install TensorRT, pick another --backend), so the CLI reports it in one line rather than as a defect."""


class ModelRunner(abc.ABC):
    """One model with one set of weights, ready to run. Not thread-safe: one caller at a time."""

    model_name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named float32 inputs → named float32 outputs (numpy, host memory)."""

    def warmup(self, iterations: int = 3, rng_seed: int = 0) -> dict[str, np.ndarray]:
        """Run on deterministic synthetic inputs (allocations, kernel selection, lazy init happen here and not
        on the first real frame). Returns the last outputs; raises BackendError if any is not finite."""
        rng = np.random.default_rng(rng_seed)
        feeds = {
            n: rng.standard_normal(s).astype(np.float32) for n, s in INPUT_SHAPES[self.model_name].items()
        }
        if "speed" in feeds:
            feeds["speed"] = np.abs(feeds["speed"]) * 10.0
        out: dict[str, np.ndarray] = {}
        for _ in range(max(1, iterations)):
            out = self.run(feeds)
        bad = [k for k, v in out.items() if not np.all(np.isfinite(v))]
        if bad:
            raise BackendError(f"{self.model_name}: non-finite warm-up output in {', '.join(bad)}")
        return out

    def close(self) -> None:
        """Free what the runner holds (device memory, sessions). Idempotent."""

    def __del__(self) -> None:  # a dropped runner must not keep device memory alive
        try:
            self.close()
        except Exception:
            pass


class InferenceBackend(abc.ABC):
    """Factory of runners for one execution provider."""

    name: str = "abstract"

    @abc.abstractmethod
    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        """Build a runner holding ``weights`` (full named weights of the model's architecture).

        Slow (allocation, session or engine creation): call it off the serving thread.
        """

    def loader_stages(self) -> Mapping[str, Callable[[NamedWeights], bytes]]:
        """{model name: picklable callable} run in the loader process on each resolved weight set, whose bytes
        ``prepare_staged`` turns into a runner: work moved off the serving process (it must not need a device,
        torch or this backend object). Default: none, ``prepare`` does everything."""
        return {}

    def prepare_staged(self, model_name: str, weights: NamedWeights, staged: bytes | memoryview) -> ModelRunner:
        """A runner from what ``loader_stages()[model_name]`` produced for ``weights``. Default: ``prepare``."""
        return self.prepare(model_name, weights)

    def describe(self) -> str:
        """Human-readable backend and device, for logs and diagnostics."""
        return self.name
