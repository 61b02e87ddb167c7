"""Hot swap at 30 Hz, measured in one run (CPU, ONNX Runtime), with real signed bundles on disk.

Prints:
- frames missed per swap at 30 Hz (goal 0);
- p99 frame latency in the second around a swap / steady-state p99 (goal <= 1.25);
- time from active_region to the first frame on the new weights, with a prefetch hint (goal <= one frame
  period, 33 ms) and without.
The region lookup benchmark (STRtree vs a loop over 1,000 fences) is bench/bench_region_lookup.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import yaml

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.core.signing import generate_keypair
from regionadapt_ros.inference.backend import INPUT_SHAPES
from regionadapt_ros.inference.loading import bundle_loader
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager
from regionadapt_ros.models.registry import build_model, named_weights, reference_architectures

PERIOD = 1 / 30
REGIONS = ("base", "r1", "r2", "r3")
SWAPS = int(os.environ.get("BENCH_SWAPS", "24"))


def write_bundles(root: Path) -> Path:
    arch = reference_architectures()
    priv, pub, _ = generate_keypair(root / "keys", "bench")
    base_hash = None
    for i, region in enumerate(REGIONS):
        torch.manual_seed(i)
        weights = {m: named_weights(build_model(m)) for m in ("perception", "decision")}
        bundle_io.write_bundle(root / region, region, 1, weights, "full", base_hash, arch, {})
        bundle_io.sign_bundle(root / region, priv)
        if base_hash is None:
            base_hash = bundle_io.models_hash(weights)
    cfg = {"default_region": "base", "bundle_dir": ".", "require_signatures": True, "trusted_keys": [str(pub)],
           "regions": {r: {"bundle": r, "rules": {"speed_limit_kph": 50, "driving_side": "right"}}
                       for r in REGIONS}}
    (root / "regions.yaml").write_text(yaml.safe_dump(cfg))
    return root / "regions.yaml"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench_swap_"))
    store = BundleStore.from_yaml(write_bundles(root), allow_rollback=True)
    mgr = HotSwapManager(OnnxRuntimeBackend(intra_op_threads=1), bundle_loader(store))
    mgr.initialize("base")
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES["perception"].items()}
    speed = np.full((1, 1), 10.0, np.float32)

    def frame() -> float:
        t = time.perf_counter()
        ws = mgr.begin_frame()
        f = ws.runners["perception"].run(feeds)["features"]
        ws.runners["decision"].run({"features": f, "speed": speed})
        mgr.end_frame()
        return (time.perf_counter() - t) * 1000

    steady, around, first_frames, missed_total = [], [], [], 0
    request_to_first = {True: [], False: []}
    n_frames = int((8 + 2 * SWAPS) / PERIOD)  # 8 s steady, then one swap every 2 s
    swap_at = {int((8 + 2 * k) / PERIOD): k for k in range(SWAPS)}
    pending: tuple[float, bool] | None = None
    region_i = 0
    window = set()
    t0 = time.perf_counter()
    for i in range(n_frames):
        slot = t0 + i * PERIOD
        now = time.perf_counter()
        if now < slot:
            time.sleep(slot - now)
        k = swap_at.get(i)
        prefetch = k is not None and k % 2 == 0
        if k is not None:
            region_i = (region_i + 1) % len(REGIONS)
            mgr.request(REGIONS[region_i])  # even-numbered swaps had their hint 0.5 s earlier
            pending = (time.perf_counter(), prefetch)
            window.update(range(i - 15, i + 15))
        nxt = swap_at.get(i + 15)
        if nxt is not None and nxt % 2 == 0:
            mgr.hint(REGIONS[(region_i + 1) % len(REGIONS)])
            window.update(range(i, i + 30))
        before = mgr.swaps
        ms = frame()
        if mgr.swaps > before:
            first_frames.append(ms)
        if pending is not None and mgr.swaps > before:
            request_to_first[pending[1]].append((time.perf_counter() - pending[0]) * 1000)
            pending = None
        if time.perf_counter() > slot + PERIOD:
            missed_total += 1
        if i < int(8 / PERIOD):
            steady.append(ms)
        elif i in window:
            around.append(ms)
    mgr.shutdown()

    p99_steady = float(np.percentile(steady, 99))
    p99_around = float(np.percentile(around, 99))
    print(f"swaps: {mgr.swaps} (failed loads: {mgr.failed_loads}); frames: {n_frames} at 30 Hz")
    print(f"frame latency steady p50/p99: {np.percentile(steady, 50):.3f} / {p99_steady:.3f} ms")
    print(f"frame latency within ±0.5 s of a swap or prefetch p50/p99: {np.percentile(around, 50):.3f} / "
          f"{p99_around:.3f} ms")
    print(f"latency of the frame that switched: p50 {np.percentile(first_frames, 50):.3f} ms, "
          f"max {max(first_frames):.3f} ms")
    print(f"largest 5 steady: {np.round(sorted(steady)[-5:], 2)}, around swaps: {np.round(sorted(around)[-5:], 2)}")
    for pre, values in request_to_first.items():
        if values:
            print(f"active_region → first frame on new weights, {'with' if pre else 'without'} prefetch: "
                  f"median {np.median(values):.1f} ms, max {max(values):.1f} ms (n={len(values)})")
    print(f"RATIO frames missed per swap (goal 0): {missed_total / max(1, mgr.swaps):.3f}")
    print(f"RATIO p99 around swaps / steady p99 (goal <= 1.25): {p99_around / p99_steady:.3f}")
    if request_to_first[True]:
        print(f"RATIO prefetched active_region→first frame / frame period (goal <= 1): "
              f"{max(request_to_first[True]) / (PERIOD * 1000):.3f}")


if __name__ == "__main__":
    main()
