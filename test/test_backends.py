"""ONNX Runtime and PyTorch backends agree, and preparing new weights never touches the serving runner."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import perturbed_weights

from regionadapt_ros.inference.backend import INPUT_SHAPES, BackendError
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.torch_backend import TorchBackend


def _inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES[name].items()}


@pytest.fixture(scope="module")
def backends():
    return TorchBackend(), OnnxRuntimeBackend()


@pytest.mark.parametrize("name", ["perception", "decision"])
def test_backends_agree_on_region_weights(backends, name):
    torch_b, ort_b = backends
    w = perturbed_weights(name, seed=11)
    a = torch_b.prepare(name, w).run(_inputs(name))
    b = ort_b.prepare(name, w).run(_inputs(name))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=1e-4)


def test_ort_weight_override_changes_every_layer(backends):
    """Every weight is applied, convolutions included (ORT pre-packs conv weights; see the backend)."""
    _, ort_b = backends
    base = perturbed_weights("perception", seed=1)
    ref = TorchBackend().prepare("perception", base).run(_inputs("perception"))
    for layer in ("image_trunk.0.0.weight", "bev_trunk.2.0.weight", "tl_head.bias"):
        changed = dict(base)
        changed[layer] = changed[layer] * 1.5
        got = ort_b.prepare("perception", changed).run(_inputs("perception"))
        want = TorchBackend().prepare("perception", changed).run(_inputs("perception"))
        np.testing.assert_allclose(got["tl_logits"], want["tl_logits"], atol=1e-4, rtol=1e-4)
        assert not np.allclose(got["tl_logits"], ref["tl_logits"])


@pytest.mark.parametrize("which", [0, 1])
def test_preparing_new_weights_does_not_touch_serving_runner(backends, which):
    backend = backends[which]
    serving = backend.prepare("decision", perturbed_weights("decision", seed=1))
    before = serving.run(_inputs("decision"))
    backend.prepare("decision", perturbed_weights("decision", seed=2)).warmup()
    after = serving.run(_inputs("decision"))
    np.testing.assert_array_equal(before["control"], after["control"])


@pytest.mark.parametrize("which", [0, 1])
def test_wrong_shape_is_refused(backends, which):
    w = perturbed_weights("decision", seed=1)
    w["head.weight"] = np.zeros((3, 64), np.float32)
    with pytest.raises(BackendError, match=r"head\.weight"):
        backends[which].prepare("decision", w)


def test_unknown_weight_name_is_refused(backends):
    w = perturbed_weights("decision", seed=1)
    w["head.extra"] = np.zeros((2,), np.float32)
    with pytest.raises(BackendError, match=r"head\.extra"):
        backends[1].prepare("decision", w)


@pytest.mark.parametrize("which", [0, 1])
def test_non_finite_warmup_is_refused(backends, which):
    w = perturbed_weights("decision", seed=1)
    w["head.bias"] = np.array([np.nan, 0.0], np.float32)
    runner = backends[which].prepare("decision", w)
    with pytest.raises(BackendError, match="non-finite"):
        runner.warmup()


def test_closed_runner_refuses_to_run(backends):
    runner = backends[1].prepare("decision", perturbed_weights("decision", seed=1))
    runner.close()
    with pytest.raises(BackendError, match="closed"):
        runner.run(_inputs("decision"))
