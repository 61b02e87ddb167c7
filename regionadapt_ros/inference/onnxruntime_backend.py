"""ONNX Runtime backend (CPU by default).

One ONNX graph per model is exported once; a region's weights are written into a copy of that graph's
initializers and a new session is created from it, so a swap never re-exports the model.
``SessionOptions.add_initializer`` would avoid the copy, but with full graph optimisation ONNX Runtime
pre-packs convolution weights (NCHWc) from the graph's original initializers and silently ignores the
override for them (seen with onnxruntime 1.31); a test pins the result against PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from regionadapt_ros.inference.backend import IO, BackendError, InferenceBackend, ModelRunner, NamedWeights


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a hard dependency on CPU installs
        raise BackendError("onnxruntime is not installed: pip install onnxruntime") from exc
    return onnxruntime


class OrtRunner(ModelRunner):
    def __init__(self, model_name: str, session) -> None:
        self.model_name = model_name
        self.input_names, self.output_names = IO[model_name]
        self.session = session

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        feeds = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in self.input_names}
        outs = self.session.run(list(self.output_names), feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self.session = None


class OnnxRuntimeBackend(InferenceBackend):
    """``onnx_models``: model name → ONNX bytes or path (the graph; its initializers are the defaults)."""

    name = "onnxruntime"

    def __init__(
        self,
        onnx_models: Mapping[str, bytes | str | Path] | None = None,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        self._ort = _ort()
        self.providers = providers or ["CPUExecutionProvider"]
        self.intra_op_threads = intra_op_threads
        self._graphs: dict[str, bytes] = {}
        self._init_names: dict[str, set[str]] = {}
        for name, src in (onnx_models or {}).items():
            self.set_graph(name, src)

    def set_graph(self, model_name: str, src: bytes | str | Path) -> None:
        import onnx

        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        model = onnx.load_from_string(data)
        self._graphs[model_name] = model
        self._init_names[model_name] = {i.name for i in model.graph.initializer}

    def _graph(self, model_name: str):
        if model_name not in self._graphs:
            # No graph given: export the reference architecture (same graph for every region).
            from regionadapt_ros.models.export import export_onnx_bytes

            self.set_graph(model_name, export_onnx_bytes(model_name))
        return self._graphs[model_name]

    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        ort = self._ort
        graph = self._graph(model_name)
        known = self._init_names[model_name]
        unknown = sorted(set(weights) - known)
        if unknown:
            raise BackendError(f"{model_name}: ONNX graph has no initializer named {', '.join(unknown[:5])}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            data = _with_initializers(graph, weights)
            session = ort.InferenceSession(data, sess_options=opts, providers=self.providers)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{model_name}: ONNX Runtime could not create a session: {exc}") from exc
        return OrtRunner(model_name, session)

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)})"


def _with_initializers(graph, weights: NamedWeights) -> bytes:
    """Serialized copy of ``graph`` whose initializers named in ``weights`` hold the given values."""
    from onnx import numpy_helper

    model = type(graph)()
    model.CopyFrom(graph)
    for init in model.graph.initializer:
        if init.name in weights:
            arr = np.ascontiguousarray(weights[init.name], dtype=np.float32)
            if tuple(arr.shape) != tuple(init.dims):
                raise BackendError(
                    f"initializer {init.name!r}: weight shape {tuple(arr.shape)} != graph shape {tuple(init.dims)}"
                )
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return model.SerializeToString()
