"""Bundle weights → the names the TensorRT refitter expects, checked against the real exported ONNX graphs.

TensorRT names the weights of an ONNX-parsed network after the ONNX initializers, so these tests export the
real models with ``models.export``, read the graph with ``onnx``, and check the mapping and its refusals
(wrong shape, unknown or unrefittable name, non-finite values) before any engine would be touched.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import perturbed_weights
from onnx import numpy_helper

from regionadapt_ros.inference.backend import INPUT_SHAPES, BackendError
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.refit import (
    RefitError,
    fill_missing,
    graph_initializers,
    initializer_values,
    map_weight_names,
    onnx_structure_sha256,
    onnx_with_weights,
    plan_refit,
)
from regionadapt_ros.inference.torch_backend import TorchBackend
from regionadapt_ros.models import decision, perception
from regionadapt_ros.models.export import export_onnx_bytes
from regionadapt_ros.models.registry import MODEL_NAMES, build_model, named_weights

HEADS = {"perception": perception.HEAD_PREFIXES, "decision": decision.HEAD_PREFIXES}


@pytest.fixture(scope="module")
def graphs() -> dict[str, bytes]:
    return {name: export_onnx_bytes(name) for name in MODEL_NAMES}


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_bundle_weight_maps_to_an_initializer_of_the_same_shape(graphs, model_name: str) -> None:
    graph = onnx.load_from_string(graphs[model_name])
    onnx_shapes = {init.name: tuple(init.dims) for init in graph.graph.initializer}
    weights = named_weights(build_model(model_name))
    mapping = map_weight_names(model_name, weights, graph_initializers(graph))
    assert set(mapping) == set(weights)
    for name, target in mapping.items():
        assert onnx_shapes[target] == weights[name].shape, name

    plan = plan_refit(model_name, weights, graph_initializers(graph))
    assert set(plan.from_bundle) == set(mapping.values()) and plan.from_base == ()
    for target, value in plan.weights.items():
        assert value.flags["C_CONTIGUOUS"] and value.dtype == np.float32
        assert value.shape == onnx_shapes[target]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_a_delta_subset_maps_to_a_subset_and_the_rest_keeps_base_values(graphs, model_name: str) -> None:
    full = perturbed_weights(model_name, seed=5)
    subset = {k: v for k, v in full.items() if k.startswith(HEADS[model_name])}
    assert 0 < len(subset) < len(full)
    initializers = graph_initializers(graphs[model_name])
    base = initializer_values(graphs[model_name])

    plan = plan_refit(model_name, subset, initializers)
    assert set(plan.from_bundle) == set(subset) and set(plan.weights) == set(subset)

    with_base = plan_refit(model_name, subset, initializers, base_values=base)
    assert set(with_base.from_bundle) == set(subset)
    assert set(with_base.from_base) == set(initializers) - set(subset)
    for name in with_base.from_base:
        np.testing.assert_array_equal(with_base.weights[name], base[name])
    for name in subset:
        np.testing.assert_array_equal(with_base.weights[name], subset[name])

    # Only the engine's refittable names are set from the base.
    refittable = set(list(initializers)[: len(initializers) // 2]) | set(subset)
    limited = plan_refit(model_name, subset, initializers, base_values=base, refittable_names=refittable)
    assert set(limited.weights) == refittable


def test_wrong_shape_is_refused_naming_the_weight(graphs) -> None:
    weights = perturbed_weights("decision", seed=3)
    weights["head.weight"] = np.zeros((3, 64), np.float32)
    with pytest.raises(RefitError) as err:
        plan_refit("decision", weights, graph_initializers(graphs["decision"]))
    assert err.value.weight == "head.weight"
    assert "decision: cannot refit: weight head.weight: shape (3, 64) != ONNX initializer 'head.weight' shape " \
           "(2, 64)" in str(err.value)
    assert isinstance(err.value, BackendError)  # what prepare raises: the swap manager keeps serving


def test_unknown_name_is_refused_naming_the_weight(graphs) -> None:
    weights = perturbed_weights("decision", seed=3)
    weights["head2.weight"] = np.zeros((2, 64), np.float32)
    with pytest.raises(RefitError) as err:
        plan_refit("decision", weights, graph_initializers(graphs["decision"]))
    assert err.value.weight == "head2.weight"
    assert "head2.weight: has no ONNX initializer of that name" in str(err.value)


def test_non_finite_and_non_float_weights_are_refused(graphs) -> None:
    initializers = graph_initializers(graphs["decision"])
    weights = perturbed_weights("decision", seed=3)
    weights["body.0.bias"] = weights["body.0.bias"].copy()
    weights["body.0.bias"][4] = np.nan
    with pytest.raises(RefitError, match=r"body.0.bias: has non-finite values"):
        plan_refit("decision", weights, initializers)
    weights = perturbed_weights("decision", seed=3)
    weights["head.bias"] = np.array([1, 2], dtype=np.int64)
    with pytest.raises(RefitError, match=r"head.bias: dtype int64 cannot replace initializer 'head.bias' of dtype "
                                         r"float32"):
        plan_refit("decision", weights, initializers)


def test_all_offending_weights_are_listed(graphs) -> None:
    weights = perturbed_weights("decision", seed=3)
    weights["head.weight"] = np.zeros((1, 1), np.float32)
    weights["head.bias"] = np.zeros((5,), np.float32)
    with pytest.raises(RefitError) as err:
        plan_refit("decision", weights, graph_initializers(graphs["decision"]))
    assert len(err.value.problems) == 2
    assert "head.weight" in str(err.value) and "head.bias" in str(err.value)


def test_weight_the_engine_cannot_refit_is_refused(graphs) -> None:
    initializers = graph_initializers(graphs["decision"])
    weights = perturbed_weights("decision", seed=3)
    refittable = set(initializers) - {"adapter.up.weight"}
    with pytest.raises(RefitError, match=r"adapter.up.weight: initializer 'adapter.up.weight' is not refittable in "
                                         r"this engine"):
        plan_refit("decision", weights, initializers, refittable_names=refittable)


def test_renames_and_wrapper_prefix_are_followed(graphs) -> None:
    initializers = graph_initializers(graphs["decision"])
    assert map_weight_names("decision", ["model.head.bias"], {"model.model.head.bias": initializers["head.bias"]}) \
        == {"model.head.bias": "model.model.head.bias"}
    assert map_weight_names("decision", ["out_bias"], initializers, renames={"out_bias": "head.bias"}) == {
        "out_bias": "head.bias"}


def test_missing_weights_reported_by_the_refitter_are_filled_from_the_base_or_refused(graphs) -> None:
    initializers = graph_initializers(graphs["decision"])
    base = initializer_values(graphs["decision"])
    subset = {"head.weight": perturbed_weights("decision", seed=4)["head.weight"]}
    plan = plan_refit("decision", subset, initializers)
    filled = fill_missing(plan, ["head.weight", "head.bias"], base, initializers)
    np.testing.assert_array_equal(filled["head.weight"], subset["head.weight"])
    np.testing.assert_array_equal(filled["head.bias"], base["head.bias"])
    with pytest.raises(RefitError, match=r"trt_fused_scale: TensorRT requires it for this refit, but it is neither"):
        fill_missing(plan, ["trt_fused_scale"], base, initializers)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_region_onnx_carries_the_weights_and_runs_like_pytorch(graphs, model_name: str) -> None:
    weights = perturbed_weights(model_name, seed=9)
    region = onnx_with_weights(graphs[model_name], weights, model_name)
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(region).graph.initializer}
    for name, value in weights.items():
        np.testing.assert_array_equal(stored[name], value)
    assert region == onnx_with_weights(export_onnx_bytes(model_name), weights, model_name)  # content-addressable

    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES[model_name].items()}
    ort_out = OnnxRuntimeBackend({model_name: region}).prepare(model_name, {}).run(feeds)
    torch_out = TorchBackend().prepare(model_name, weights).run(feeds)
    for key in torch_out:
        np.testing.assert_allclose(ort_out[key], torch_out[key], rtol=1e-4, atol=1e-4)


def test_structure_hash_ignores_weight_values_but_not_the_architecture(graphs) -> None:
    perception_a = onnx_with_weights(graphs["perception"], perturbed_weights("perception", 1), "perception")
    perception_b = onnx_with_weights(graphs["perception"], perturbed_weights("perception", 2), "perception")
    assert perception_a != perception_b
    assert onnx_structure_sha256(perception_a) == onnx_structure_sha256(perception_b)
    assert onnx_structure_sha256(perception_a) != onnx_structure_sha256(graphs["decision"])


def test_region_onnx_with_a_wrong_shape_is_refused(graphs) -> None:
    weights = perturbed_weights("decision", seed=3)
    weights["adapter.down.weight"] = np.zeros((16, 65), np.float32)
    with pytest.raises(RefitError, match=r"adapter.down.weight: shape \(16, 65\) != ONNX initializer"):
        onnx_with_weights(graphs["decision"], weights, "decision")
