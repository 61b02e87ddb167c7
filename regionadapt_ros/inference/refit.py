"""Bundle weights → TensorRT refitter weights, validated against the exported ONNX graph before any engine is
touched. No tensorrt import (uses ``onnx``), so every rule here is tested without a GPU.

Why the names line up: ``models.export`` keeps the ``state_dict`` names as ONNX initializer names, and
TensorRT's ONNX parser names the weights of the network it builds after those initializers
(``INetworkDefinition.set_weights_name``), so ``Refitter.set_named_weights(name, ...)`` addresses a bundle
tensor by its own name and in the ONNX layout (a Gemm weight stays (out, in); the parser expresses
``transB`` as a matrix-multiply operation, not by permuting the weights).

Rules (``plan_refit``):
- every bundle weight must map to an initializer (``renames`` for exporters that rename), of the same shape,
  finite, and castable to the initializer's dtype; the error names the weight and the problem;
- when the engine's refittable names are known (``Refitter.get_all_weights()``), a bundle weight the engine
  cannot refit is an error (its new value would silently be ignored);
- weights not in the bundle keep the base values: every other refittable initializer is set from the base
  graph's values, so the result does not depend on which export of the graph the engine was built from;
- refittable names that are not initializers (constants TensorRT created itself) are left as built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionadapt_ros.core import safe_read
from regionadapt_ros.inference.backend import BackendError

NamedArrays = Mapping[str, np.ndarray]
OnnxSource = bytes | str | Path  # serialized model, or a path to one; an onnx.ModelProto is accepted too

_MAX_LISTED = 5
MAX_ONNX_BYTES = 2 << 30  # protobuf cannot parse a message of 2 GiB or more


class RefitError(BackendError):
    """Weights refused for refitting. ``weight`` names the first offending weight, ``problems`` lists
    "name: problem" for all of them."""

    def __init__(self, model_name: str, problems: list[tuple[str, str]]) -> None:
        self.model_name = model_name
        self.weight = problems[0][0]
        self.problems = [f"{name}: {problem}" for name, problem in problems]
        listed = "; ".join(self.problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        super().__init__(f"{model_name}: cannot refit: weight {listed}{more}")


@dataclass(frozen=True)
class InitializerSpec:
    """An ONNX initializer as the refitter sees it: name, shape and numpy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class RefitPlan:
    """What to hand to ``Refitter.set_named_weights``: refitter name → C-contiguous array of the
    initializer's dtype and shape. ``from_bundle``/``from_base`` say where each value came from."""

    model_name: str
    weights: dict[str, np.ndarray]
    from_bundle: tuple[str, ...]
    from_base: tuple[str, ...]
    name_map: dict[str, str]  # bundle weight name → refitter name


def _load_model(src: object):
    import onnx

    if isinstance(src, onnx.ModelProto):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        return onnx.load_from_string(bytes(src))
    return onnx.load(str(src))


def graph_initializers(onnx_model: object) -> dict[str, InitializerSpec]:
    """Initializer name → spec, read from an ONNX model (bytes, path or ModelProto)."""
    from onnx import helper

    model = _load_model(onnx_model)
    specs = {}
    for init in model.graph.initializer:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        specs[init.name] = InitializerSpec(init.name, tuple(int(d) for d in init.dims), dtype)
    return specs


def initializer_values(onnx_model: object) -> dict[str, np.ndarray]:
    """Initializer name → value (the base weights the graph carries)."""
    from onnx import numpy_helper

    model = _load_model(onnx_model)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def map_weight_names(model_name: str, weight_names: Iterable[str], initializers: Mapping[str, InitializerSpec],
                     renames: Mapping[str, str] | None = None) -> dict[str, str]:
    """bundle weight name → refitter (ONNX initializer) name; RefitError naming every unknown weight.

    Identity where the initializer exists; ``renames`` (bundle name → initializer name) covers exporters
    that rename; a ``model.`` prefix left by a wrapper module is accepted as a fallback.
    """
    renames = renames or {}
    mapping: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for name in weight_names:
        candidates = [renames[name]] if name in renames else [name, f"model.{name}"]
        target = next((c for c in candidates if c in initializers), None)
        if target is None:
            problems.append((name, "has no ONNX initializer of that name in the exported graph, so the "
                                   "refitter cannot address it"))
        else:
            mapping[name] = target
    if problems:
        raise RefitError(model_name, problems)
    return mapping


def plan_refit(model_name: str, weights: NamedArrays, initializers: Mapping[str, InitializerSpec],
               base_values: NamedArrays | None = None, refittable_names: Collection[str] | None = None,
               renames: Mapping[str, str] | None = None) -> RefitPlan:
    """Validate ``weights`` (a full set or a delta subset, by bundle name) and build the refit plan.

    ``initializers``: from ``graph_initializers`` of the graph the engine was built from.
    ``base_values``: that graph's initializer values (``initializer_values``); refittable initializers not
    in ``weights`` are set from them. ``refittable_names``: ``Refitter.get_all_weights()`` when an engine
    is at hand; None = every initializer is taken as refittable (validation before any engine exists).
    Raises RefitError naming the weights that are unknown, of the wrong shape or dtype, not finite, or not
    refittable in the engine. Nothing is modified: a refused plan leaves every engine as it was.
    """
    name_map = map_weight_names(model_name, weights, initializers, renames)
    refittable = set(refittable_names) if refittable_names is not None else set(initializers)
    problems: list[tuple[str, str]] = []
    planned: dict[str, np.ndarray] = {}
    for name, target in name_map.items():
        spec = initializers[target]
        arr = np.asarray(weights[name])
        if tuple(arr.shape) != spec.shape:
            problems.append((name, f"shape {tuple(arr.shape)} != ONNX initializer {target!r} shape {spec.shape}"))
            continue
        if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f") != (spec.dtype.kind == "f"):
            problems.append((name, f"dtype {arr.dtype} cannot replace initializer {target!r} of dtype {spec.dtype}"))
            continue
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            problems.append((name, "has non-finite values (NaN or inf)"))
            continue
        if target not in refittable:
            problems.append((name, f"initializer {target!r} is not refittable in this engine (TensorRT folded it "
                                   "into a constant); build a per-region engine instead"))
            continue
        if target in planned:
            problems.append((name, f"maps to initializer {target!r}, which another weight already maps to"))
            continue
        planned[target] = np.ascontiguousarray(arr, dtype=spec.dtype)
    if problems:
        raise RefitError(model_name, problems)
    from_bundle = tuple(sorted(planned))
    from_base: list[str] = []
    if base_values is not None:
        for target in sorted(refittable - set(planned)):
            if target in base_values and target in initializers:
                spec = initializers[target]
                planned[target] = np.ascontiguousarray(base_values[target], dtype=spec.dtype)
                from_base.append(target)
    return RefitPlan(model_name, planned, from_bundle, tuple(from_base), name_map)


def fill_missing(plan: RefitPlan, missing: Iterable[str], base_values: NamedArrays,
                 initializers: Mapping[str, InitializerSpec]) -> dict[str, np.ndarray]:
    """Values for the names ``Refitter.get_missing_weights()`` still reports after the plan was set (weights
    TensorRT combined with planned ones): from the plan if there, else the base graph. RefitError naming the
    ones neither has — the refit must not go ahead then."""
    out: dict[str, np.ndarray] = {}
    problems: list[tuple[str, str]] = []
    for name in missing:
        if name in plan.weights:
            out[name] = plan.weights[name]
        elif name in base_values and name in initializers:
            out[name] = np.ascontiguousarray(base_values[name], dtype=initializers[name].dtype)
        else:
            problems.append((name or "<unnamed>", "TensorRT requires it for this refit, but it is neither in the "
                                                  "bundle nor an initializer of the base graph"))
    if problems:
        raise RefitError(plan.model_name, problems)
    return out


# --------------------------------------------------------------------------------------------- graphs


def onnx_with_weights(graph: object, weights: NamedArrays, model_name: str = "model",
                      renames: Mapping[str, str] | None = None) -> bytes:
    """Serialized copy of ``graph`` whose initializers hold ``weights`` (validated as by ``plan_refit``):
    the region's ONNX, from which a per-region engine is built. Deterministic: the same graph and weights
    give the same bytes, so its sha256 addresses the region's engine in the cache."""
    from onnx import numpy_helper

    model = _load_model(graph)
    copy = type(model)()
    copy.CopyFrom(model)
    initializers = graph_initializers(copy)
    plan = plan_refit(model_name, weights, initializers, renames=renames)
    for init in copy.graph.initializer:
        if init.name in plan.weights:
            init.CopyFrom(numpy_helper.from_array(plan.weights[init.name], init.name))
    return copy.SerializeToString()


def onnx_structure_sha256(graph: object) -> str:
    """sha256 of the graph with initializer *values* removed (names, dtypes and shapes kept): equal for every
    set of weights of one architecture, so one refittable engine is cached per architecture."""
    model = _load_model(graph)
    copy = type(model)()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        for field_name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                           "string_data", "external_data"):
            init.ClearField(field_name)
    return hashlib.sha256(copy.SerializeToString()).hexdigest()


def onnx_bytes(src: OnnxSource) -> bytes:
    """The serialized model from bytes or a path."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    try:  # regular files only, bounded: a FIFO or /dev/zero given as a model must not hang or flood the reader
        return safe_read.read_bytes(src, max_bytes=MAX_ONNX_BYTES, error=_onnx_file_error)
    except FileNotFoundError:
        raise BackendError(f"{src}: ONNX model not found") from None


def _onnx_file_error(path: object, problem: str) -> BackendError:
    return BackendError(f"{path}: ONNX model {problem}")
