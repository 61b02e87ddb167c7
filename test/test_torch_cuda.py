"""The PyTorch CUDA backend (eager and CUDA graphs): same outputs as the CPU reference, the frame pipeline and a
hot swap on the GPU. Skipped with the reason where there is no CUDA GPU; runs unchanged where there is one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import perturbed_weights
from test_pipeline import frame, loader

from regionadapt_ros.core.control import ControlMapper, VehicleLimits
from regionadapt_ros.inference.backend import INPUT_SHAPES
from regionadapt_ros.inference.swap import HotSwapManager
from regionadapt_ros.inference.torch_backend import TorchBackend
from regionadapt_ros.pipeline import FramePipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch CUDA backend: no CUDA GPU here")

# cuDNN may use TF32 for convolutions: looser than the CPU backends' 1e-4, far tighter than a wrong weight
ATOL = 2e-3


def feeds(model_name: str, seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {n: rng.standard_normal((batch, *s[1:])).astype(np.float32) for n, s in INPUT_SHAPES[model_name].items()}
    if "speed" in out:
        out["speed"] = np.abs(out["speed"]) * 10
    return out


@pytest.mark.parametrize("graphs", [True, False], ids=["cuda-graphs", "eager"])
@pytest.mark.parametrize("model_name", ["perception", "decision"])
def test_cuda_runner_matches_the_cpu_reference_frame_after_frame(model_name, graphs):
    weights = perturbed_weights(model_name, 3)
    cpu = TorchBackend("cpu").prepare(model_name, weights)
    gpu = TorchBackend("cuda", cuda_graphs=graphs).prepare(model_name, weights)
    assert (gpu.graph is not None) == graphs
    for seed in range(3):  # a replayed graph must follow new inputs, not repeat the captured ones
        want, got = cpu.run(feeds(model_name, seed)), gpu.run(feeds(model_name, seed))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=ATOL, err_msg=f"{model_name}.{name}")
    gpu.close()


def test_another_batch_size_runs_eagerly_next_to_the_graph():
    weights = perturbed_weights("decision", 4)
    cpu, gpu = TorchBackend("cpu").prepare("decision", weights), TorchBackend("cuda").prepare("decision", weights)
    x = feeds("decision", 7, batch=5)
    np.testing.assert_allclose(gpu.run(x)["control"], cpu.run(x)["control"], atol=ATOL)


def test_run_torch_keeps_data_on_the_gpu_and_matches_run():
    weights = perturbed_weights("perception", 5)
    runner = TorchBackend("cuda").prepare("perception", weights)
    host = feeds("perception", 1)
    out = runner.run_torch({k: torch.from_numpy(v).cuda() for k, v in host.items()})
    assert all(t.is_cuda for t in out.values())
    first = {k: v.cpu().numpy() for k, v in out.items()}
    runner.run(feeds("perception", 2))  # the copies handed out are not the static buffers
    for name, value in runner.run(host).items():
        np.testing.assert_allclose(first[name], value, atol=1e-5)
        np.testing.assert_allclose(out[name].cpu().numpy(), value, atol=1e-5)


def test_frame_pipeline_on_cuda_matches_the_cpu_pipeline_and_swaps():
    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend

    pipes = {}
    for name, backend in (("cpu", OnnxRuntimeBackend()), ("cuda", TorchBackend("cuda"))):
        mgr = HotSwapManager(backend, loader)
        mgr.initialize("base")
        pipes[name] = FramePipeline(mgr, ControlMapper(VehicleLimits()))
    for i in range(6):
        if i == 3:
            for p in pipes.values():
                p.swap.request("highway")
                assert p.swap.wait_idle(60)
        res = {k: p.process(frame(i * 0.1)) for k, p in pipes.items()}
        assert res["cuda"].bundle_id == res["cpu"].bundle_id == ("base@v1" if i < 3 else "highway@v1")
        assert res["cuda"].raw_control == pytest.approx(res["cpu"].raw_control, abs=ATOL)
    for p in pipes.values():
        p.swap.shutdown()
