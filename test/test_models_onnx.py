"""The networks' contract and their ONNX export (ONNX Runtime output equals PyTorch within 1e-4)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import perturbed_weights

from regionadapt_ros.core.contracts import BEV, FEATURE_DIM, IMAGE_H, IMAGE_W, OBSTACLE_MAX_M
from regionadapt_ros.models.export import IO_NAMES, export_onnx, initializer_map
from regionadapt_ros.models.registry import build_model, load_named_weights, named_weights


def test_perception_output_shapes_and_ranges():
    net = build_model("perception")
    image, bev = torch.randn(4, 3, IMAGE_H, IMAGE_W), torch.rand(4, BEV.channels, BEV.rows, BEV.cols)
    out = net(image, bev)
    assert out["tl_logits"].shape == (4, 4)
    assert out["lane"].shape == (4, 3)
    assert out["obstacle"].shape == (4, 2)
    assert out["features"].shape == (4, FEATURE_DIM)
    assert torch.all(out["obstacle"][:, 0] >= 0) and torch.all(out["obstacle"][:, 0] <= OBSTACLE_MAX_M)
    assert torch.all(out["obstacle"][:, 1] <= 1.0)


def test_decision_steering_is_bounded():
    net = build_model("decision")
    out = net(torch.randn(8, FEATURE_DIM) * 100, torch.rand(8, 1) * 40)["control"]
    assert out.shape == (8, 2)
    assert torch.all(out[:, 0].abs() <= 0.5)


def test_base_adapters_are_identity():
    """A fresh adapter must not change the network: adapter bundles rely on it."""
    net = build_model("decision")
    x = torch.randn(3, 64)
    assert torch.equal(net.adapter(x), x)


def test_region_input_variant_requires_region():
    net = build_model("perception", region_dim=5)
    image, bev = net.example_inputs(2)
    with pytest.raises(ValueError, match="region"):
        net(image, bev)
    assert net(image, bev, torch.eye(5)[:2])["features"].shape == (2, FEATURE_DIM)


@pytest.mark.parametrize("name", ["perception", "decision"])
def test_onnx_matches_pytorch(tmp_path, name):
    weights = perturbed_weights(name, seed=3)
    path = export_onnx(name, tmp_path / f"{name}.onnx", weights)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inputs, outputs = IO_NAMES[name]
    assert [i.name for i in model.graph.input] == list(inputs)
    assert [o.name for o in model.graph.output] == list(outputs)
    # every weight is addressable by its state_dict name (what ORT overrides and TensorRT refits)
    assert set(initializer_map(model, weights)) == set(weights)

    net = load_named_weights(build_model(name), weights)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        torch.manual_seed(batch)
        example = [t.repeat(batch, *([1] * (t.dim() - 1))) + torch.randn(batch, *t.shape[1:])
                   for t in net.example_inputs(1)]
        with torch.no_grad():
            ref = net(*example)
        got = sess.run(list(outputs), {n: t.numpy() for n, t in zip(inputs, example, strict=True)})
        for out_name, value in zip(outputs, got, strict=True):
            np.testing.assert_allclose(value, ref[out_name].numpy(), atol=1e-4, rtol=1e-4)


def test_named_weights_roundtrip():
    w = perturbed_weights("decision", seed=1)
    net = load_named_weights(build_model("decision"), w)
    back = named_weights(net)
    assert set(back) == set(w)
    for k in w:
        np.testing.assert_array_equal(back[k], w[k])
