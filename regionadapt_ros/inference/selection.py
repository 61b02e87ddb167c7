"""Backend selection: which inference backend serves, and why (the reason goes to the log and diagnostics).

"auto" picks, in order:
1. TensorRT, when ``tensorrt`` imports AND a CUDA GPU is present;
2. PyTorch on CUDA, when a CUDA GPU is present (TensorRT missing, or it failed to start);
3. ONNX Runtime on CPU otherwise.
An explicit name is honoured or refused with a BackendError saying what is missing; "torch" runs on CUDA
when there is a GPU and on the CPU otherwise.

The platform probe and the backend factories are injectable, so every combination is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.inference.backend import BackendError, InferenceBackend

BACKEND_NAMES = ("auto", "tensorrt", "torch", "onnxruntime")


@dataclass(frozen=True)
class PlatformProbe:
    """What this machine offers. ``tensorrt_version`` is None when ``import tensorrt`` fails (then
    ``tensorrt_error`` says why); ``cuda_device`` is None without a usable CUDA GPU (``cuda_error`` says
    why)."""

    tensorrt_version: str | None
    tensorrt_error: str | None
    cuda_device: str | None
    compute_capability: str | None = None
    cuda_error: str | None = None

    @property
    def has_tensorrt(self) -> bool:
        return self.tensorrt_version is not None

    @property
    def has_cuda(self) -> bool:
        return self.cuda_device is not None


def probe_platform() -> PlatformProbe:
    """Probe the real machine: import tensorrt, ask torch for a CUDA device."""
    trt_version = trt_error = None
    try:
        import tensorrt

        trt_version = str(getattr(tensorrt, "__version__", "unknown version"))
    except Exception as exc:  # ImportError, or a broken install raising OSError on its shared libraries
        trt_error = f"{type(exc).__name__}: {exc}"
    device = capability = cuda_error = None
    try:
        import torch

        if torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
            major, minor = torch.cuda.get_device_capability(0)
            capability = f"{major}.{minor}"
        else:
            cuda_error = "torch.cuda.is_available() is False"
    except Exception as exc:
        cuda_error = f"{type(exc).__name__}: {exc}"
    return PlatformProbe(trt_version, trt_error, device, capability, cuda_error)


BackendFactories = Mapping[str, Callable[..., InferenceBackend]]


def default_factories(tensorrt_options: Mapping[str, Any] | None = None,
                      onnx_models: Mapping[str, bytes | str | Path] | None = None) -> dict[str, Callable[..., Any]]:
    """name → factory: "tensorrt"() , "torch"(device), "onnxruntime"(). Imports happen when called."""
    options = dict(tensorrt_options or {})

    def tensorrt_factory() -> InferenceBackend:
        from regionadapt_ros.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(onnx_models=onnx_models, **options)

    def torch_factory(device: str) -> InferenceBackend:
        from regionadapt_ros.inference.torch_backend import TorchBackend

        return TorchBackend(device)

    def ort_factory() -> InferenceBackend:
        from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_models)

    return {"tensorrt": tensorrt_factory, "torch": torch_factory, "onnxruntime": ort_factory}


def _gpu_text(probe: PlatformProbe) -> str:
    cc = f", compute capability {probe.compute_capability}" if probe.compute_capability else ""
    return f"{probe.cuda_device}{cc}"


def select_backend(name: str = "auto", probe: Callable[[], PlatformProbe] = probe_platform, *,
                   factories: BackendFactories | None = None, tensorrt_options: Mapping[str, Any] | None = None,
                   onnx_models: Mapping[str, bytes | str | Path] | None = None) -> tuple[InferenceBackend, str]:
    """(backend, reason) for ``name`` in "auto" | "tensorrt" | "torch" | "onnxruntime".

    ``tensorrt_options`` are keyword arguments of ``TensorRTBackend`` (cache, precision, refittable, ...).
    ConfigError for an unknown name; BackendError when an explicitly requested backend cannot run here.
    """
    if name not in BACKEND_NAMES:
        raise ConfigError("backend", f"{name!r} is not one of {', '.join(BACKEND_NAMES)}")
    made = dict(default_factories(tensorrt_options, onnx_models))
    made.update(factories or {})
    info = probe()

    if name == "tensorrt":
        if not info.has_tensorrt:
            raise BackendError(f"backend 'tensorrt' requested but tensorrt is not importable ({info.tensorrt_error})")
        if not info.has_cuda:
            raise BackendError(f"backend 'tensorrt' requested but there is no CUDA GPU ({info.cuda_error})")
        backend = made["tensorrt"]()
        return backend, f"requested: TensorRT {info.tensorrt_version} on {_gpu_text(info)}"
    if name == "torch":
        if info.has_cuda:
            return made["torch"]("cuda"), f"requested: PyTorch on CUDA ({_gpu_text(info)})"
        return made["torch"]("cpu"), f"requested: PyTorch on CPU (no CUDA GPU: {info.cuda_error})"
    if name == "onnxruntime":
        return made["onnxruntime"](), "requested: ONNX Runtime on CPU"

    # auto
    if info.has_cuda:
        why_not_trt = f"tensorrt not importable ({info.tensorrt_error})"
        if info.has_tensorrt:
            try:
                backend = made["tensorrt"]()
                return backend, f"auto: TensorRT {info.tensorrt_version} on {_gpu_text(info)}"
            except BackendError as exc:
                why_not_trt = f"TensorRT {info.tensorrt_version} failed to start ({exc})"
        return made["torch"]("cuda"), f"auto: PyTorch on CUDA ({_gpu_text(info)}): {why_not_trt}"
    if info.has_tensorrt:
        why = f"tensorrt {info.tensorrt_version} imports but there is no CUDA GPU ({info.cuda_error})"
    else:
        why = f"no CUDA GPU ({info.cuda_error}) and tensorrt not importable ({info.tensorrt_error})"
    return made["onnxruntime"](), f"auto: ONNX Runtime on CPU: {why}"
