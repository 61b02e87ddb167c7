"""ONNX export of the serving networks (single file, named inputs/outputs, dynamic batch).

Initializer names in the exported graph are the ``state_dict`` names wherever the exporter keeps a parameter
as-is; ``initializer_map`` reports, for every named weight, which initializer holds it, so that ONNX Runtime
can override initializers and the TensorRT refitter can address weights by name.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from regionadapt_ros.core.contracts import DECISION_INPUTS, DECISION_OUTPUTS, PERCEPTION_INPUTS, PERCEPTION_OUTPUTS
from regionadapt_ros.models.registry import NamedWeights, build_model, load_named_weights, named_weights

OPSET = 17

IO_NAMES = {
    "perception": (PERCEPTION_INPUTS, PERCEPTION_OUTPUTS),
    "decision": (DECISION_INPUTS, DECISION_OUTPUTS),
}


class _TupleOutputs(nn.Module):
    """Returns the model's output dict as a tuple in contract order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*inputs)
        return tuple(out[n] for n in self.output_names)


def export_onnx_bytes(name: str, weights: NamedWeights | None = None) -> bytes:
    """Export model ``name`` (with ``weights`` if given) to a single-file ONNX model, returned as bytes.

    Every weight becomes its own initializer named like its ``state_dict`` entry. The exporter merges
    initializers with identical contents (zero biases, BatchNorm's initial statistics, a base model's zero
    adapter) into one and links the others with Identity nodes, which would make them unaddressable; so the
    graph is traced with distinct placeholder values and the real values are written in afterwards.
    """
    model = build_model(name)
    real = named_weights(model) if weights is None else {k: np.asarray(v) for k, v in weights.items()}
    load_named_weights(model, _distinct_placeholders(real))
    input_names, output_names = IO_NAMES[name]
    wrapped = _TupleOutputs(model, output_names).eval()
    example = model.example_inputs(1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            example,
            buffer,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)},
            opset_version=OPSET,
            # PRESERVE keeps BatchNormalization nodes (in eval mode): EVAL would fold them into the
            # convolutions and their parameters would no longer be addressable by name.
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            dynamo=False,
        )
    data = buffer.getvalue()
    onnx_model = onnx.load_from_string(data)
    _strip_wrapper_prefix(onnx_model)
    for init in onnx_model.graph.initializer:
        if init.name in real:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(real[init.name]), init.name))
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def _distinct_placeholders(weights: NamedWeights) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for k, v in weights.items():
        # positive values keep BatchNorm variances valid; distinct per tensor by construction
        out[k] = (rng.random(v.shape) + 0.5).astype(v.dtype) if v.dtype.kind == "f" else v
    return out


def export_onnx(name: str, path: str | Path, weights: NamedWeights | None = None) -> Path:
    from regionadapt_ros.core.bundle.writing import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a file of this run's own, renamed into place: a fixed NAME.tmp could be a link planted to another file
    atomic_write_bytes(path, export_onnx_bytes(name, weights))
    return path


def _strip_wrapper_prefix(model: onnx.ModelProto) -> None:
    """Initializers are exported as ``model.<name>`` because of the tuple wrapper; give them their
    state_dict names back so that bundle tensor names address them directly."""
    renames = {}
    for init in model.graph.initializer:
        if init.name.startswith("model."):
            renames[init.name] = init.name[len("model."):]
    if not renames:
        return
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in model.graph.node:
        for i, inp in enumerate(node.input):
            if inp in renames:
                node.input[i] = renames[inp]


def initializer_map(onnx_model: onnx.ModelProto, weights: NamedWeights) -> dict[str, str]:
    """weight name → ONNX initializer name, for every weight stored as an initializer of the same shape.

    Raises ValueError naming the weights the graph does not hold, because a weight that cannot be addressed
    cannot be swapped.
    """
    inits = {i.name: tuple(i.dims) for i in onnx_model.graph.initializer}
    mapping: dict[str, str] = {}
    missing = []
    for name, arr in weights.items():
        if name in inits and inits[name] == tuple(arr.shape):
            mapping[name] = name
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"ONNX graph has no initializer of the right shape for: {', '.join(sorted(missing))}")
    return mapping


def onnx_initializers(onnx_model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx_model.graph.initializer}
