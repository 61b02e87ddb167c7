"""Inference backends side by side in one run: perception + decision latency, swap cost, frames missed.

1. Frame latency (host arrays in → perception outputs and control on the host), p50 / p99 over the same
   inputs, per backend: TensorRT FP16, TensorRT FP32, PyTorch CUDA eager, PyTorch CUDA with a CUDA graph,
   ONNX Runtime CPU, PyTorch CPU eager. Ratios are to ONNX Runtime CPU (the backend every machine has).
2. Swap cost on TensorRT: refit a standby engine vs deserialize a cached per-region engine vs rebuild it.
3. Frames missed per swap at 30 Hz: HotSwapManager serving at 30 Hz while regions are prepared in the
   background and switched between frames (a frame is missed when it cannot start within one period of its
   tick), with frame latency p99 during swaps vs steady state.

Backends this machine cannot run print a "skipped: ..." line. Absolute GPU numbers only mean something from a
GPU run.

    .venv/bin/python bench/bench_gpu.py [--frames 300] [--swaps 4] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.inference.backend import INPUT_SHAPES, BackendError, InferenceBackend
from regionadapt_ros.inference.selection import probe_platform
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights
from regionadapt_ros.models.registry import MODEL_NAMES, build_model, named_weights

REGIONS = ("base", "highway", "mountain", "left_hand", "urban_night")
Frame = Callable[[], dict[str, np.ndarray]]


def region_weights(seed: int) -> dict[str, dict[str, np.ndarray]]:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = {}
    for name in MODEL_NAMES:
        weights = named_weights(build_model(name))
        out[name] = {k: (v + rng.normal(0.0, 0.02, v.shape)).astype(np.float32) for k, v in weights.items()}
    return out


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES["perception"].items()}


SPEED = np.full((1, 1), 12.0, np.float32)


def runner_frame(backend: InferenceBackend, weights) -> Frame:
    perception = backend.prepare("perception", weights["perception"])
    decision = backend.prepare("decision", weights["decision"])
    feeds = inputs()

    def frame() -> dict[str, np.ndarray]:
        out = perception.run(feeds)
        out.update(decision.run({"features": out["features"], "speed": SPEED}))
        return out

    return frame


def latency_ms(frame: Frame, frames: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        frame()
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        frame()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def swap_run(backend: InferenceBackend, swaps: int) -> dict[str, float]:
    """Serve at 30 Hz through HotSwapManager, requesting a new region every second."""
    cache = {r: region_weights(i + 1) for i, r in enumerate(REGIONS)}

    def loader(region: str) -> LoadedWeights:
        return LoadedWeights(region, f"{region}@v1", cache[region])

    mgr = HotSwapManager(backend, loader)
    mgr.initialize("base")
    period = 1.0 / 30.0
    feeds = inputs()
    frames = 30 * (swaps + 1)
    missed = 0
    steady, during = [], []
    route = [REGIONS[1 + i % (len(REGIONS) - 1)] for i in range(swaps)]
    t0 = time.perf_counter()
    for i in range(frames):
        tick = t0 + i * period
        while (now := time.perf_counter()) < tick:
            time.sleep(min(0.002, tick - now))
        start = time.perf_counter()
        if start - tick > period:
            missed += 1
        if i % 30 == 5 and i // 30 < swaps:
            mgr.request(route[i // 30])
        swapping = mgr.status()["state"] != "idle"
        ws = mgr.begin_frame()
        out = ws.runners["perception"].run(feeds)
        ws.runners["decision"].run({"features": out["features"], "speed": SPEED})
        mgr.end_frame()
        (during if swapping else steady).append((time.perf_counter() - start) * 1e3)
    mgr.wait_idle(60)
    prepare_s = [r.ready_t - r.load_start_t for r in mgr.history if r.ready_t and r.load_start_t]
    result = {"swaps": float(mgr.swaps), "missed": float(missed), "frames": float(frames),
              "steady_p99": pct(steady, 99) if steady else float("nan"),
              "during_p99": pct(during, 99) if during else float("nan"),
              "prepare_ms": statistics.median(prepare_s) * 1e3 if prepare_s else float("nan")}
    mgr.shutdown()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--swaps", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()

    info = probe_platform()
    gpu = info.has_cuda
    trt_ok = info.has_tensorrt and gpu
    print(f"platform: GPU {info.cuda_device or 'none'} ({info.compute_capability or info.cuda_error}); "
          f"TensorRT {info.tensorrt_version or 'none (' + str(info.tensorrt_error) + ')'}")
    no_gpu = f"skipped: no GPU ({info.cuda_error})"
    no_trt = no_gpu if not gpu else f"skipped: tensorrt not importable ({info.tensorrt_error})"
    weights = region_weights(1)
    tmp = tempfile.TemporaryDirectory(prefix="regionadapt-engines-")
    cache_dir = args.cache_dir or Path(tmp.name)

    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    from regionadapt_ros.inference.torch_backend import TorchBackend

    candidates: list[tuple[str, Callable[[], Frame] | None, str]] = [
        ("TensorRT FP16", (lambda: runner_frame(_trt(cache_dir, "fp16", True), weights)) if trt_ok else None, no_trt),
        ("TensorRT FP32", (lambda: runner_frame(_trt(cache_dir, "fp32", True), weights)) if trt_ok else None, no_trt),
        ("PyTorch CUDA eager", (lambda: runner_frame(TorchBackend("cuda", cuda_graphs=False), weights)) if gpu
         else None, no_gpu),
        ("PyTorch CUDA graphs", (lambda: runner_frame(TorchBackend("cuda"), weights)) if gpu else None, no_gpu),
        ("ONNX Runtime CPU", lambda: runner_frame(OnnxRuntimeBackend(), weights), ""),
        ("PyTorch CPU eager", lambda: runner_frame(TorchBackend("cpu"), weights), ""),
    ]
    print(f"\n1. perception + decision frame latency, {args.frames} frames (ms; ratio = p50 / ONNX Runtime CPU p50)")
    results: dict[str, list[float]] = {}
    for label, make, why in candidates:
        if make is None:
            print(f"  {label:20s} {why}")
            continue
        try:
            results[label] = latency_ms(make(), args.frames)
        except BackendError as exc:
            print(f"  {label:20s} skipped: {exc}")
    base = statistics.median(results["ONNX Runtime CPU"])
    for label, values in results.items():
        p50 = statistics.median(values)
        print(f"  {label:20s} p50 {p50:8.3f}  p99 {pct(values, 99):8.3f}  ratio {p50 / base:6.3f}")

    print("\n2. TensorRT swap cost (perception + decision, ms)")
    if trt_ok:
        _swap_costs(cache_dir)
    else:
        print(f"  refit / deserialize / rebuild: {no_trt}")

    print(f"\n3. frames missed per swap at 30 Hz, {args.swaps} swaps")
    swap_backends: list[tuple[str, Callable[[], InferenceBackend] | None, str]] = [
        ("TensorRT FP16 refit", (lambda: _trt(cache_dir, "fp16", True)) if trt_ok else None, no_trt),
        ("PyTorch CUDA graphs", (lambda: TorchBackend("cuda")) if gpu else None, no_gpu),
        ("PyTorch CUDA eager", (lambda: TorchBackend("cuda", cuda_graphs=False)) if gpu else None, no_gpu),
        ("ONNX Runtime CPU", OnnxRuntimeBackend, ""),
    ]
    for label, make, why in swap_backends:
        if make is None:
            print(f"  {label:20s} {why}")
            continue
        r = swap_run(make(), args.swaps)
        per_swap = r["missed"] / r["swaps"] if r["swaps"] else float("nan")
        print(f"  {label:20s} swaps {int(r['swaps'])}/{args.swaps}, missed {int(r['missed'])}/{int(r['frames'])} "
              f"frames ({per_swap:.2f} per swap); frame p99 during swap {r['during_p99']:.2f} ms vs steady "
              f"{r['steady_p99']:.2f} ms (×{r['during_p99'] / r['steady_p99']:.2f}); background prepare "
              f"{r['prepare_ms']:.1f} ms")
    tmp.cleanup()
    return 0


def _trt(cache_dir: Path, precision: str, refittable: bool):
    from regionadapt_ros.inference.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(cache_dir, precision=precision, refittable=refittable)


def _swap_costs(cache_dir: Path) -> None:
    from regionadapt_ros.inference.engine_cache import BuildOptions
    from regionadapt_ros.inference.refit import onnx_with_weights
    from regionadapt_ros.inference.tensorrt_backend import build_serialized_engine
    from regionadapt_ros.models.export import export_onnx_bytes

    refit_backend = _trt(cache_dir, "fp16", True)
    region_backend = _trt(cache_dir, "fp16", False)
    rows = {"refit (deserialize standby + refit)": [], "deserialize cached per-region engine": [],
            "rebuild per-region engine": []}
    parts = {"deserialize_s": [], "refit_s": []}
    for seed in (1, 2, 3):
        weights = region_weights(seed)
        for name in MODEL_NAMES:
            refit_backend.prepare(name, weights[name])  # first call per model may build: not timed
            region_backend.prepare(name, weights[name])
        total = 0.0
        for name in MODEL_NAMES:
            stats = refit_backend.prepare(name, weights[name]).prepare_stats
            total += stats["prepare_s"]
            for key in parts:
                parts[key].append(stats[key] * 1e3)
        rows["refit (deserialize standby + refit)"].append(total * 1e3)
        total = 0.0
        for name in MODEL_NAMES:
            total += region_backend.prepare(name, weights[name]).prepare_stats["prepare_s"]
        rows["deserialize cached per-region engine"].append(total * 1e3)
        total = 0.0
        for name in MODEL_NAMES:
            onnx = onnx_with_weights(export_onnx_bytes(name), weights[name], name)
            t0 = time.perf_counter()
            build_serialized_engine(onnx, name, BuildOptions(precision="fp16"))
            total += time.perf_counter() - t0
        rows["rebuild per-region engine"].append(total * 1e3)
    base = statistics.median(rows["refit (deserialize standby + refit)"])
    for label, values in rows.items():
        med = statistics.median(values)
        print(f"  {label:38s} median {med:10.1f} ms  ratio to refit {med / base:8.2f}")
    print(f"  (refit path split per model: deserialize {statistics.median(parts['deserialize_s']):.2f} ms, "
          f"refit {statistics.median(parts['refit_s']):.2f} ms)")


if __name__ == "__main__":
    sys.exit(main())
