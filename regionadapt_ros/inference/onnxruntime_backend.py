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
from typing import Any

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
        for name, src in (onnx_models or {}).items():
            self.set_graph(name, src)

    def set_graph(self, model_name: str, src: bytes | str | Path) -> None:
        import onnx

        from regionadapt_ros.inference.refit import onnx_bytes

        data = onnx_bytes(src)  # bounded, regular files only
        template = GraphTemplate(onnx.load_from_string(data))
        self._graphs[model_name] = template

    def _graph(self, model_name: str) -> GraphTemplate:
        if model_name not in self._graphs:
            # No graph given: export the reference architecture (same graph for every region).
            from regionadapt_ros.models.export import export_onnx_bytes

            self.set_graph(model_name, export_onnx_bytes(model_name))
        return self._graphs[model_name]

    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        data = self._graph(model_name).with_weights(weights, model_name)
        return self._session(model_name, data, optimised=False)

    def loader_stages(self) -> dict[str, OrtGraphStage]:
        """Per model: write the region's weights into the graph and let ONNX Runtime optimise it, in the loader
        process; the serving process then creates its session from the optimised graph without optimising
        again (half the session's creation time, measured: 16 → 8 ms for the perception model)."""
        from regionadapt_ros.models.registry import MODEL_NAMES

        return {name: OrtGraphStage(model_name=name, template=self._graph(name), providers=list(self.providers))
                for name in MODEL_NAMES}

    def prepare_staged(self, model_name: str, weights: NamedWeights, staged: bytes | memoryview) -> ModelRunner:
        return self._session(model_name, bytes(staged), optimised=True)

    def _session(self, model_name: str, data: bytes, optimised: bool) -> OrtRunner:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if optimised:  # optimised offline by the same ONNX Runtime on this machine (OrtGraphStage)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=self.providers)
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

    # Travels to the loader process (inference.spawn_spec) as its parts, never re-parsed there.
    spawnable = True

    def spawn_config(self) -> dict[str, Any]:
        return {"data": self.data, "defaults": self.defaults, "shapes": self.shapes, "offsets": self.offsets}

    @classmethod
    def from_spawn_config(cls, config: Mapping[str, Any]) -> GraphTemplate:
        template = cls.__new__(cls)
        template.data = bytes(config["data"])
        template.defaults = dict(config["defaults"])
        template.shapes = {name: tuple(shape) for name, shape in config["shapes"].items()}
        template.offsets = {name: int(pos) for name, pos in config["offsets"].items()}
        for name, pos in template.offsets.items():  # with_weights writes there: each tensor inside the graph
            shape = template.shapes.get(name)
            if shape is None or name not in template.defaults \
                    or not 0 <= pos <= len(template.data) - int(np.prod(shape)) * 4:
                raise BackendError(f"initializer {name!r}: no shape or default, or its offset {pos} lies outside "
                                   f"the {len(template.data)}-byte graph")
        return template

    def with_weights(self, weights: NamedWeights, model_name: str = "model") -> bytes:
        """The serialized graph with ``weights`` (and the defaults for tensors not given); BackendError for a
        tensor the graph does not have or whose shape differs."""
        unknown = sorted(set(weights) - set(self.shapes))
        if unknown:
            raise BackendError(f"{model_name}: ONNX graph has no initializer named {', '.join(unknown[:5])}")
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


class OrtGraphStage:
    """The ONNX Runtime backend's work in the loader process (``InferenceBackend.loader_stages``): the region's
    weights written into the graph, which ONNX Runtime then optimises at full level and serialises
    (``SessionOptions.optimized_model_filepath``). The result is specific to this ONNX Runtime version and
    this CPU (layout transforms), which is fine: the loader process runs both, beside the serving process."""

    def __init__(self, model_name: str, template: GraphTemplate, providers: list[str]) -> None:
        self.model_name = model_name
        self.template = template
        self.providers = providers

    spawnable = True  # runs in the loader process (inference.spawn_spec)

    def spawn_config(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "template": self.template, "providers": list(self.providers)}

    @classmethod
    def from_spawn_config(cls, config: Mapping[str, Any]) -> OrtGraphStage:
        return cls(model_name=str(config["model_name"]), template=config["template"],
                   providers=[str(p) for p in config["providers"]])

    def __call__(self, weights: NamedWeights) -> bytes:
        import tempfile

        ort = _ort()
        data = self.template.with_weights(weights, self.model_name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Pre-packed weights are not part of the saved graph: skip packing them here (-15 % of this stage).
        opts.add_session_config_entry("session.disable_prepacking", "1")
        with tempfile.TemporaryDirectory(prefix="regionadapt-ort-") as tmp:
            target = Path(tmp) / f"{self.model_name}.onnx"
            opts.optimized_model_filepath = str(target)
            try:
                ort.InferenceSession(data, sess_options=opts, providers=self.providers)
                return target.read_bytes()
            except Exception as exc:
                raise BackendError(f"{self.model_name}: ONNX Runtime could not optimise the graph: {exc}") from exc
