"""The TensorRT backend on a real GPU: engines built from the exported ONNX agree with PyTorch, refitting
applies a region's weights, the cache self-heals, and hot swaps through HotSwapManager refit between frames.

Skipped (with the reason) where ``tensorrt`` is not importable or there is no CUDA GPU; runs unchanged where
both are present. The decision logic around TensorRT is tested everywhere by test_engine_cache.py,
test_refit_mapping.py and test_backend_selection.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import perturbed_weights

trt = pytest.importorskip("tensorrt", reason="tensorrt is not importable: the TensorRT backend runs where it is")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU (torch.cuda.is_available() is False): TensorRT needs one")

from regionadapt_ros.inference.backend import INPUT_SHAPES  # noqa: E402
from regionadapt_ros.inference.refit import RefitError  # noqa: E402
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights  # noqa: E402
from regionadapt_ros.inference.tensorrt_backend import TensorRTBackend  # noqa: E402
from regionadapt_ros.inference.torch_backend import TorchBackend  # noqa: E402
from regionadapt_ros.models.registry import MODEL_NAMES  # noqa: E402

# FP32 engines are built with TF32 disabled, so they agree with PyTorch FP32 to rounding.
FP32_TOL = {"rtol": 1e-3, "atol": 1e-4}
FP16_TOL = {"rtol": 5e-2, "atol": 5e-2}
SEEDS = {"base": 1, "highway": 2, "mountain": 3, "left_hand": 4}


def feeds(model_name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES[model_name].items()}
    if "speed" in out:
        out["speed"] = np.abs(out["speed"]) * 10.0
    return out


def reference(model_name: str, weights, inputs) -> dict[str, np.ndarray]:
    return TorchBackend("cpu").prepare(model_name, weights).run(inputs)


def assert_close(actual: dict, expected: dict, tol: dict) -> None:
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], err_msg=key, **tol)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_fp32_engine_from_the_exported_onnx_matches_pytorch(cache_dir: Path, model_name: str) -> None:
    weights = perturbed_weights(model_name, SEEDS["highway"])
    backend = TensorRTBackend(cache_dir, precision="fp32", refittable=False)
    runner = backend.prepare(model_name, weights)
    assert runner.prepare_stats["path"] == "build+deserialize"
    assert_close(runner.run(feeds(model_name)), reference(model_name, weights, feeds(model_name)), FP32_TOL)
    runner.close()

    again = TensorRTBackend(cache_dir, precision="fp32", refittable=False).prepare(model_name, weights)
    assert again.prepare_stats["path"] == "deserialize"
    assert again.prepare_stats["engine"]["reason"] == "cached engine matches"
    assert_close(again.run(feeds(model_name, 1)), reference(model_name, weights, feeds(model_name, 1)), FP32_TOL)


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_refit_with_a_regions_weights_matches_pytorch(cache_dir: Path, model_name: str) -> None:
    backend = TensorRTBackend(cache_dir, precision="fp32", refittable=True)
    for region in ("base", "highway", "mountain"):
        weights = perturbed_weights(model_name, SEEDS[region])
        runner = backend.prepare(model_name, weights)
        stats = runner.prepare_stats
        assert stats["path"] == "refit" and stats["refit_s"] > 0 and stats["deserialize_s"] > 0
        assert_close(runner.run(feeds(model_name)), reference(model_name, weights, feeds(model_name)), FP32_TOL)
        runner.close()


def test_fp16_refit_engine_is_close_to_pytorch(cache_dir: Path) -> None:
    backend = TensorRTBackend(cache_dir, precision="fp16", refittable=True)
    for region in ("base", "left_hand"):
        weights = perturbed_weights("decision", SEEDS[region])
        runner = backend.prepare("decision", weights)
        assert_close(runner.run(feeds("decision")), reference("decision", weights, feeds("decision")), FP16_TOL)


def test_run_torch_keeps_data_on_the_gpu_and_matches_run(cache_dir: Path) -> None:
    backend = TensorRTBackend(cache_dir, precision="fp32", refittable=True)
    runner = backend.prepare("perception", perturbed_weights("perception", SEEDS["base"]))
    host = runner.run(feeds("perception"))
    device_in = {k: torch.from_numpy(v).cuda() for k, v in feeds("perception").items()}
    device_out = runner.run_torch(device_in)
    assert all(t.is_cuda for t in device_out.values())
    assert_close({k: v.cpu().numpy() for k, v in device_out.items()}, host, {"rtol": 1e-6, "atol": 1e-6})


def test_refit_with_a_wrong_shape_is_refused_and_the_serving_runner_is_untouched(cache_dir: Path) -> None:
    backend = TensorRTBackend(cache_dir, precision="fp32", refittable=True)
    serving = backend.prepare("decision", perturbed_weights("decision", SEEDS["base"]))
    before = serving.run(feeds("decision"))
    bad = perturbed_weights("decision", SEEDS["highway"])
    bad["head.weight"] = np.zeros((3, 64), np.float32)
    with pytest.raises(RefitError, match=r"head.weight: shape \(3, 64\)"):
        backend.prepare("decision", bad)
    np.testing.assert_array_equal(serving.run(feeds("decision"))["control"], before["control"])


def test_corrupt_cached_engine_is_rebuilt(tmp_path: Path) -> None:
    weights = perturbed_weights("decision", SEEDS["base"])
    TensorRTBackend(tmp_path, precision="fp32", refittable=True).prepare("decision", weights)
    plan = next(tmp_path.glob("decision-refit.fp32.refit.engine"))
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    backend = TensorRTBackend(tmp_path, precision="fp32", refittable=True)
    runner = backend.prepare("decision", weights)
    outcome = backend.engine_outcomes["decision"]
    assert outcome.action == "built" and "corrupt engine file" in outcome.reason
    assert_close(runner.run(feeds("decision")), reference("decision", weights, feeds("decision")), FP32_TOL)


def test_int8_engine_builds_with_the_entropy_calibrator(tmp_path: Path) -> None:
    frames = [feeds("decision", seed) for seed in range(16)]
    backend = TensorRTBackend(tmp_path, precision="int8", refittable=False,
                              calibration_frames={"decision": frames})
    weights = perturbed_weights("decision", SEEDS["base"])
    out = backend.prepare("decision", weights).run(feeds("decision"))
    assert out["control"].shape == (1, 2) and np.all(np.isfinite(out["control"]))
    assert (tmp_path / "decision.int8-calibration.cache").is_file()


def test_dla_core_when_the_device_has_one(tmp_path: Path) -> None:
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    if builder.num_DLA_cores == 0:
        pytest.skip("this GPU has no DLA core (Jetson AGX Orin/Xavier have)")
    backend = TensorRTBackend(tmp_path, precision="fp16", refittable=False, dla_core=0)
    weights = perturbed_weights("decision", SEEDS["base"])
    out = backend.prepare("decision", weights).run(feeds("decision"))
    assert np.all(np.isfinite(out["control"]))


def test_hot_swaps_refit_between_frames(cache_dir: Path) -> None:
    """Serve perception + decision while regions are refitted on the loader thread and switched between
    frames: every refit step starts after a frame has ended and no frame begins while it runs (the driver
    lets the loader use each gap, so this holds on any machine; timings are bench/bench_gpu.py's)."""
    backend = TensorRTBackend(cache_dir, precision="fp16", refittable=True)

    def loader(region: str) -> LoadedWeights:
        return LoadedWeights(region, f"{region}@v1", {m: perturbed_weights(m, SEEDS[region]) for m in MODEL_NAMES})

    mgr = HotSwapManager(backend, loader)
    mgr.initialize("base")
    mgr.loader_steps.clear()
    route = ["highway", "mountain", "left_hand", "base"]
    inputs = feeds("perception")
    speed = np.full((1, 1), 10.0, np.float32)
    computed = 0
    for frame in range(120):
        if frame % 30 == 10:
            mgr.request(route[frame // 30])
        ws = mgr.begin_frame()
        perception = ws.runners["perception"].run(inputs)
        control = ws.runners["decision"].run({"features": perception["features"], "speed": speed})["control"]
        assert mgr.serving is ws
        mgr.end_frame()
        assert mgr.settle_gap(120)
        assert np.all(np.isfinite(control))
        computed += 1
    mgr.shutdown()
    assert computed == 120
    assert mgr.swaps == 4, mgr.status()
    steps = [s for s in mgr.loader_steps if s.in_process]
    assert steps and all(not s.in_frame_at_start and s.frames_begun_at_end == s.frames_begun_at_start
                         for s in steps), steps
