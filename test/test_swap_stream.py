"""The core promise over many swaps, checked on the mechanism and not on a clock: a frame stream keeps being served
while real signed bundles are swapped 100 times through the loader process; every loader step in this process
runs between frames, the switch happens at a frame boundary, each frame is computed with exactly one bundle for
both models, at most two weight sets are resident, and memory does not grow with swaps.

The driver lets the loader use each gap between two frames (``settle_gap``) before it starts the next frame, so
the interleaving is the same on an idle and on a loaded machine; how long frames take is measured in
bench/bench_swap.py, never asserted here."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from bundle_factory import write_bundle_set

from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.inference.backend import INPUT_SHAPES
from regionadapt_ros.inference.loading import bundle_loader
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager

SWAPS = int(os.environ.get("SWAP_STREAM_SWAPS", "100"))
FRAMES_PER_SWAP = 4
# Allowed RSS growth between swap 10 and the last swap. One leaked weight set (two ONNX Runtime sessions and
# their arenas) or one unreleased shared weights block is several MB, so a leak per swap over 90 swaps would
# exceed this many times over, while allocator noise stays well below it.
RSS_TOLERANCE_MB = 24.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def make_backend(name: str):
    if name == "onnxruntime":
        return OnnxRuntimeBackend(intra_op_threads=1)
    import torch

    if not torch.cuda.is_available():
        pytest.skip("PyTorch CUDA backend: no CUDA GPU on this machine")
    from regionadapt_ros.inference.torch_backend import TorchBackend

    return TorchBackend("cuda", cuda_graphs=name == "torch-cuda-graphs")


def gpu_mb() -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch-cuda-graphs", "torch-cuda"])
def test_a_hundred_swaps_keep_every_promise(tmp_path, backend_name):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads RSS from /proc")
    backend = make_backend(backend_name)
    s = write_bundle_set(tmp_path)
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store))
    assert mgr.source.describe().startswith("loader process")
    mgr.initialize("base")
    mgr.loader_steps.clear()

    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal(v).astype(np.float32) for k, v in INPUT_SHAPES["perception"].items()}
    speed = np.full((1, 1), 12.0, np.float32)
    reference = {}
    for region, weights in s["weights"].items():  # what each bundle must produce on this input
        p = backend.prepare("perception", weights["perception"])
        d = backend.prepare("decision", weights["decision"])
        reference[region] = d.run({"features": p.run(inputs)["features"], "speed": speed})["control"]
        p.close()
        d.close()
    cycle = ["highway", "mountain", "left_hand", "base"]
    # On a GPU, cuDNN's TF32 convolutions round more; the bundles must still be told apart at that tolerance.
    atol = 1e-5 if backend_name == "onnxruntime" else 1e-3
    for a in cycle:
        for b in cycle:
            if a != b:
                assert np.abs(reference[a] - reference[b]).max() > 10 * atol, (a, b)

    mixed, served, most_resident = 0, [], 0
    rss_at: dict[int, float] = {}
    gpu_at: dict[int, float] = {}
    switch_frames: list[tuple[int, bool]] = []  # (frames after active_region, prefetched)
    frame = 0

    def serve_one() -> str:
        nonlocal mixed, most_resident, frame
        ws = mgr.begin_frame()
        feats = ws.runners["perception"].run(inputs)["features"]
        control = ws.runners["decision"].run({"features": feats, "speed": speed})["control"]
        assert mgr.serving is ws  # nothing switched while the frame was computed
        most_resident = max(most_resident, mgr.resident_sets())
        mgr.end_frame()
        frame += 1
        if not np.allclose(control, reference[ws.region], atol=atol):
            mixed += 1
        served.append(ws.region)
        assert mgr.settle_gap(120)
        return ws.region

    for k in range(SWAPS):
        target = cycle[k % len(cycle)]
        prefetched = k % 2 == 0
        if prefetched:  # the hint comes a few frames before active_region, as from the resolver
            mgr.hint(target)
            while mgr.staged is None or mgr.staged.region != target:
                serve_one()
                assert not mgr.failures, mgr.failures
        mgr.request(target)
        waited = 0
        while serve_one() != target:
            waited += 1
            assert not mgr.failures, mgr.failures
        switch_frames.append((waited, prefetched))
        for _ in range(FRAMES_PER_SWAP):
            assert serve_one() == target
        if k + 1 in (10, SWAPS):
            assert mgr.wait_idle(120)
            gc.collect()
            rss_at[k + 1], gpu_at[k + 1] = rss_mb(), gpu_mb()
    mgr.shutdown()

    assert mgr.swaps == SWAPS and mgr.failed_loads == 0
    assert mixed == 0, f"{mixed} of {frame} frames were not computed with exactly one bundle"
    assert most_resident <= 2
    assert set(served) == set(cycle)
    # a prefetched region is switched to at the first frame after active_region
    assert all(waited == 0 for waited, prefetched in switch_frames if prefetched)
    steps = list(mgr.loader_steps)
    local = [st for st in steps if st.in_process]
    assert {st.name for st in local} == {"receive", "prepare perception", "prepare decision", "warm up", "free"}
    assert all(not st.in_process for st in steps if st.name == "load")  # read and verified in the other process
    for st in local:
        assert not st.in_frame_at_start and st.frames_begun_at_end == st.frames_begun_at_start, st
    assert rss_at[SWAPS] <= rss_at[10] + RSS_TOLERANCE_MB, rss_at
    assert gpu_at[SWAPS] <= gpu_at[10] + 1.0, gpu_at
