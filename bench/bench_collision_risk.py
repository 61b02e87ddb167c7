"""Cost of the collision-risk estimate and the emergency-braking guard per frame, against the bare model forward,
measured side by side (interleaved) in one run on the CPU.

Prints the median time of one ``CollisionRiskEstimator.update`` + ``EmergencyBrakeGuard.decide`` on a noisy
tracked obstacle at 10, 20 and 30 Hz (the window holds 10, 20, 30 samples), each run right after a bare
perception + decision forward (ONNX Runtime, batch 1) as in a frame, the forward's median, and their ratio: the
share of a frame's model time the guard adds.

    .venv/bin/python bench/bench_collision_risk.py      (BENCH_REPEATS=N to change the repeats, default 2000)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from regionadapt_ros.core.collision_risk import CollisionRiskEstimator
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard
from regionadapt_ros.core.preprocess import bev_grid, image_tensor
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend

REPEATS = int(os.environ.get("BENCH_REPEATS", "2000"))


def risk_step(hz: float):
    """A function running one frame of the estimate + guard on a noisy obstacle approaching at 5 m/s."""
    estimator, guard = CollisionRiskEstimator(), EmergencyBrakeGuard()
    rng = np.random.default_rng(int(hz))
    noise = rng.normal(0.0, 0.5, 4096)
    k = [0]

    def step() -> None:
        i = k[0]
        k[0] += 1
        t = i / hz
        distance = 50.0 - 5.0 * (t % 8.0) + noise[i % noise.size]  # restarts every 8 s: tracked most of the time
        guard.decide(estimator.update(t, distance, 10.0))

    return step


def main() -> None:
    import torch

    from regionadapt_ros.models.registry import build_model, named_weights

    torch.manual_seed(0)
    backend = OnnxRuntimeBackend()
    runners = {m: backend.prepare(m, named_weights(build_model(m))) for m in ("perception", "decision")}
    rng = np.random.default_rng(0)
    image = image_tensor(rng.integers(0, 255, (192, 320, 3), dtype=np.uint8))
    bev = bev_grid(np.c_[rng.uniform(0, 50, (20000, 2)), rng.uniform(-1.8, 1.0, (20000, 2))].astype(np.float32))[None]
    speed = np.asarray([[10.0]], np.float32)

    def forward() -> None:
        features = runners["perception"].run({"image": image, "bev": bev})["features"]
        runners["decision"].run({"features": features, "speed": speed})

    # Each risk step runs right after a forward, where it runs in a frame (after a forward the CPU caches are
    # the model's, and ONNX Runtime's worker threads may still be spinning).
    steps = {hz: risk_step(hz) for hz in (10.0, 20.0, 30.0)}
    for _ in range(200):
        forward()
        for step in steps.values():
            step()
    forward_s: list[float] = []
    step_s: dict[float, list[float]] = {hz: [] for hz in steps}
    for _ in range(REPEATS):
        for hz, step in steps.items():
            t0 = time.perf_counter()
            forward()
            t1 = time.perf_counter()
            step()
            t2 = time.perf_counter()
            forward_s.append(t1 - t0)
            step_s[hz].append(t2 - t1)
    forward_us = float(np.median(forward_s)) * 1e6
    print(f"repeats: {REPEATS}")
    print(f"bare forward (ONNX Runtime, perception+decision): {forward_us:.1f} us")
    for hz, values in step_s.items():
        us = float(np.median(values)) * 1e6
        print(f"risk estimate + guard at {hz:g} Hz, right after a forward: {us:.1f} us; RATIO to the bare forward: "
              f"{us / forward_us:.3f}")


if __name__ == "__main__":
    main()
