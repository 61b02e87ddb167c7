"""Backend selection with injected platform probes: every combination of (tensorrt importable, CUDA GPU
present) for every backend name, and the reason strings that go to the log and diagnostics."""

from __future__ import annotations

import pytest
import torch

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.inference.backend import BackendError, InferenceBackend
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.selection import PlatformProbe, probe_platform, select_backend
from regionadapt_ros.inference.torch_backend import TorchBackend

TRT_AND_GPU = PlatformProbe("10.3.0", None, "Orin", "8.7")
GPU_ONLY = PlatformProbe(None, "ModuleNotFoundError: No module named 'tensorrt'", "RTX 4090", "8.9")
TRT_ONLY = PlatformProbe("10.3.0", None, None, None, "torch.cuda.is_available() is False")
NEITHER = PlatformProbe(None, "ModuleNotFoundError: No module named 'tensorrt'", None, None,
                        "torch.cuda.is_available() is False")


class Made(InferenceBackend):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = kind

    def prepare(self, model_name, weights):  # pragma: no cover - never prepared here
        raise NotImplementedError


def fake_factories(tensorrt_fails: bool = False) -> tuple[dict, list[str]]:
    calls: list[str] = []

    def tensorrt() -> InferenceBackend:
        calls.append("tensorrt")
        if tensorrt_fails:
            raise BackendError("TensorRT backend needs a CUDA GPU: libnvinfer.so.10 not found")
        return Made("tensorrt")

    def torch_factory(device: str) -> InferenceBackend:
        calls.append(f"torch:{device}")
        return Made(f"torch:{device}")

    def ort() -> InferenceBackend:
        calls.append("onnxruntime")
        return Made("onnxruntime")

    return {"tensorrt": tensorrt, "torch": torch_factory, "onnxruntime": ort}, calls


@pytest.mark.parametrize(
    ("probe", "kind", "reason"),
    [
        (TRT_AND_GPU, "tensorrt", "auto: TensorRT 10.3.0 on Orin, compute capability 8.7"),
        (GPU_ONLY, "torch:cuda", "auto: PyTorch on CUDA (RTX 4090, compute capability 8.9): tensorrt not importable "
                                 "(ModuleNotFoundError: No module named 'tensorrt')"),
        (TRT_ONLY, "onnxruntime", "auto: ONNX Runtime on CPU: tensorrt 10.3.0 imports but there is no CUDA GPU "
                                  "(torch.cuda.is_available() is False)"),
        (NEITHER, "onnxruntime", "auto: ONNX Runtime on CPU: no CUDA GPU (torch.cuda.is_available() is False) and "
                                 "tensorrt not importable (ModuleNotFoundError: No module named 'tensorrt')"),
    ],
    ids=["trt+gpu", "gpu-only", "trt-only", "neither"],
)
def test_auto_picks_by_what_the_platform_offers(probe: PlatformProbe, kind: str, reason: str) -> None:
    factories, calls = fake_factories()
    backend, why = select_backend("auto", probe=lambda: probe, factories=factories)
    assert backend.kind == kind and calls == [kind]
    assert why == reason


def test_auto_falls_back_to_pytorch_cuda_when_tensorrt_fails_to_start() -> None:
    factories, calls = fake_factories(tensorrt_fails=True)
    backend, why = select_backend("auto", probe=lambda: TRT_AND_GPU, factories=factories)
    assert backend.kind == "torch:cuda" and calls == ["tensorrt", "torch:cuda"]
    assert why.startswith("auto: PyTorch on CUDA (Orin, compute capability 8.7): TensorRT 10.3.0 failed to start")
    assert "libnvinfer.so.10 not found" in why


@pytest.mark.parametrize(
    ("name", "probe", "kind", "reason"),
    [
        ("tensorrt", TRT_AND_GPU, "tensorrt", "requested: TensorRT 10.3.0 on Orin, compute capability 8.7"),
        ("torch", TRT_AND_GPU, "torch:cuda", "requested: PyTorch on CUDA (Orin, compute capability 8.7)"),
        ("torch", GPU_ONLY, "torch:cuda", "requested: PyTorch on CUDA (RTX 4090, compute capability 8.9)"),
        ("torch", TRT_ONLY, "torch:cpu", "requested: PyTorch on CPU (no CUDA GPU: torch.cuda.is_available() is "
                                         "False)"),
        ("torch", NEITHER, "torch:cpu", "requested: PyTorch on CPU (no CUDA GPU: torch.cuda.is_available() is "
                                        "False)"),
        ("onnxruntime", TRT_AND_GPU, "onnxruntime", "requested: ONNX Runtime on CPU"),
        ("onnxruntime", GPU_ONLY, "onnxruntime", "requested: ONNX Runtime on CPU"),
        ("onnxruntime", TRT_ONLY, "onnxruntime", "requested: ONNX Runtime on CPU"),
        ("onnxruntime", NEITHER, "onnxruntime", "requested: ONNX Runtime on CPU"),
    ],
)
def test_explicit_names_are_honoured(name: str, probe: PlatformProbe, kind: str, reason: str) -> None:
    factories, calls = fake_factories()
    backend, why = select_backend(name, probe=lambda: probe, factories=factories)
    assert backend.kind == kind and calls == [kind] and why == reason


@pytest.mark.parametrize(
    ("probe", "problem"),
    [
        (GPU_ONLY, "backend 'tensorrt' requested but tensorrt is not importable (ModuleNotFoundError: No module "
                   "named 'tensorrt')"),
        (TRT_ONLY, "backend 'tensorrt' requested but there is no CUDA GPU (torch.cuda.is_available() is False)"),
        (NEITHER, "backend 'tensorrt' requested but tensorrt is not importable"),
    ],
)
def test_explicit_tensorrt_that_cannot_run_is_refused(probe: PlatformProbe, problem: str) -> None:
    factories, calls = fake_factories()
    with pytest.raises(BackendError) as err:
        select_backend("tensorrt", probe=lambda: probe, factories=factories)
    assert problem in str(err.value) and calls == []


def test_explicit_tensorrt_that_fails_to_start_is_not_replaced() -> None:
    factories, _ = fake_factories(tensorrt_fails=True)
    with pytest.raises(BackendError, match=r"libnvinfer\.so\.10 not found"):
        select_backend("tensorrt", probe=lambda: TRT_AND_GPU, factories=factories)


def test_unknown_backend_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        select_backend("tflite", probe=lambda: NEITHER)
    assert str(err.value) == "backend: 'tflite' is not one of auto, tensorrt, torch, onnxruntime"


def test_default_factories_build_the_real_cpu_backends() -> None:
    backend, why = select_backend("auto", probe=lambda: NEITHER)
    assert isinstance(backend, OnnxRuntimeBackend) and why.startswith("auto: ONNX Runtime on CPU")
    backend, why = select_backend("torch", probe=lambda: NEITHER)
    assert isinstance(backend, TorchBackend) and backend.device.type == "cpu"


def test_real_probe_describes_this_machine() -> None:
    info = probe_platform()
    assert info.has_cuda == torch.cuda.is_available()
    try:
        import tensorrt
    except ImportError:
        assert info.tensorrt_version is None and "tensorrt" in (info.tensorrt_error or "")
    else:
        assert info.tensorrt_version == tensorrt.__version__
    if not info.has_cuda:
        assert info.cuda_error == "torch.cuda.is_available() is False"


def test_tensorrt_backend_without_tensorrt_or_gpu_says_what_is_missing() -> None:
    from regionadapt_ros.inference.tensorrt_backend import TensorRTBackend

    info = probe_platform()
    if info.has_tensorrt and info.has_cuda:
        pytest.skip("tensorrt and a GPU are present: test_tensorrt_gpu.py covers the real backend")
    with pytest.raises(BackendError) as err:
        TensorRTBackend()
    expected = "tensorrt is not importable" if not info.has_tensorrt else "needs a CUDA GPU"
    assert expected in str(err.value)
