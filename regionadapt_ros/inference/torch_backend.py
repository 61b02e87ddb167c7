"""PyTorch backend: the reference implementation (CPU, and CUDA where available)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from regionadapt_ros.inference.backend import IO, BackendError, InferenceBackend, ModelRunner, NamedWeights
from regionadapt_ros.models.registry import build_model, load_named_weights


class TorchRunner(ModelRunner):
    def __init__(self, model_name: str, module: torch.nn.Module, device: torch.device) -> None:
        self.model_name = model_name
        self.input_names, self.output_names = IO[model_name]
        self.module = module
        self.device = device

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.module is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=np.float32)) for n in self.input_names]
        if self.device.type != "cpu":
            args = [a.to(self.device, non_blocking=True) for a in args]
        out = self.module(*args)
        return {n: out[n].detach().cpu().numpy() for n in self.output_names}

    def close(self) -> None:
        self.module = None


class TorchBackend(InferenceBackend):
    """Runs the PyTorch modules eagerly. ``device`` is "cpu", "cuda" or "cuda:N"."""

    name = "torch"

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch backend: device {device!r} requested but CUDA is not available")
        self.device = torch.device(device)
        if threads:
            torch.set_num_threads(threads)

    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        module = build_model(model_name)
        try:
            load_named_weights(module, dict(weights))
        except RuntimeError as exc:
            raise BackendError(f"{model_name}: weights do not fit the architecture: {exc}") from exc
        module = module.to(self.device).eval()
        return TorchRunner(model_name, module, self.device)

    def describe(self) -> str:
        if self.device.type == "cuda":
            return f"torch cuda ({torch.cuda.get_device_name(self.device)})"
        return f"torch cpu ({torch.get_num_threads()} threads)"
