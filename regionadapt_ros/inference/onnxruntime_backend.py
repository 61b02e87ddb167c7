"""ONNX Runtime backend (CPU by default).

One ONNX graph per model is exported once; a region's weights are written into a copy of that graph and a new
session is created from it, so a swap never re-exports the model.

- ``SessionOptions.add_initializer`` would avoid the copy, but with full graph optimisation ONNX Runtime
  pre-packs convolution weights (NCHWc) from the graph's original initializers and silently ignores the
  override for them (seen with onnxruntime 1.31); a test pins the result against PyTorch.
- Rebuilding the graph with protobuf (``CopyFrom`` + ``SerializeToString``) holds the GIL for tens of
  milliseconds and stalls the serving thread. Instead, ``GraphTemplate`` serializes the graph once with a
  unique filler in every initializer's ``raw_data`` and remembers where each one lies; writing a region's
  weights is then a bytes copy plus one ``memcpy`` per tensor.
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

        from regionadapt_ros.inference.refit import onnx_bytes

        data = onnx_bytes(src)  # bounded, regular files only
        template = GraphTemplate(onnx.load_from_string(data))
        self._graphs[model_name] = template
        self._init_names[model_name] = set(template.shapes)

    def _graph(self, model_name: str) -> GraphTemplate:
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
            data = graph.with_weights(weights)
            session = ort.InferenceSession(data, sess_options=opts, providers=self.providers)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{model_name}: ONNX Runtime could not create a session: {exc}") from exc
        return OrtRunner(model_name, session)

    def describe(self) -> str:
        return f"onnxruntime {self._ort.__version__} ({', '.join(self.providers)})"



class GraphTemplate:
    """A serialized ONNX graph whose float32 initializers can be replaced by offset, without protobuf."""

    def __init__(self, model) -> None:
        from onnx import TensorProto, numpy_helper

        fillers: dict[str, bytes] = {}
        self.defaults: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        rng = np.random.default_rng(0x5EED)
        for init in model.graph.initializer:
            if init.data_type != TensorProto.FLOAT:
                continue
            arr = np.ascontiguousarray(numpy_helper.to_array(init), dtype=np.float32)
            self.defaults[init.name] = arr
            self.shapes[init.name] = tuple(arr.shape)
            # 8 random bytes repeated: unique per tensor, found by a plain search in the serialized graph
            filler = (rng.bytes(8) * (arr.nbytes // 8 + 1))[: arr.nbytes]
            fillers[init.name] = filler
            init.ClearField("float_data")
            init.raw_data = filler
        self.data = model.SerializeToString()
        self.offsets: dict[str, int] = {}
        for name, filler in fillers.items():
            if len(filler) < 8:
                continue  # scalars: left to their defaults below
            pos = self.data.find(filler)
            if pos < 0 or self.data.find(filler, pos + 1) >= 0:
                raise BackendError(f"initializer {name!r}: cannot locate its bytes in the serialized graph")
            self.offsets[name] = pos
        missing = [n for n in fillers if n not in self.offsets]
        if missing:
            raise BackendError(f"initializers too small to address by offset: {', '.join(missing)}")

    def with_weights(self, weights: NamedWeights) -> bytes:
        """The serialized graph with ``weights`` (and the defaults for tensors not given)."""
        buf = bytearray(self.data)
        view = memoryview(buf)
        for name, offset in self.offsets.items():
            arr = weights.get(name)
            if arr is None:
                arr = self.defaults[name]
            elif tuple(arr.shape) != self.shapes[name]:
                raise BackendError(
                    f"initializer {name!r}: weight shape {tuple(arr.shape)} != graph shape {self.shapes[name]}"
                )
            src = np.ascontiguousarray(arr, dtype=np.float32)
            view[offset:offset + src.nbytes] = src.view(np.uint8).reshape(-1)
        return bytes(buf)
