"""Closed-loop simulation speed: simulated time / wall time at 10 Hz with the camera (96×160) and the lidar
rendered every tick and both models (ONNX Runtime, one thread) driving through ``DrivingSession``; one route per
region, the regional bundles of bundles/. Also the share of a tick each part takes, and the same routes
driven by the expert (no models, no sensors rendered) for comparison. Goal: ≥ 3× real time.

Usage: .venv/bin/python bench/bench_closed_loop.py [--routes N] [--length M]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.sim import course as course_mod
from regionadapt_ros.sim import world as world_mod
from regionadapt_ros.sim.agents import ExpertAgent, ProductAgent
from regionadapt_ros.sim.runner import run_route

REGIONS = ("urban_day", "urban_night", "highway", "mountain", "left_hand")


class _Timed:
    """Wraps a function and adds its wall time to a counter."""

    def __init__(self, fn, key: str, totals: dict[str, float]) -> None:
        self.fn, self.key, self.totals = fn, key, totals

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.totals[self.key] = self.totals.get(self.key, 0.0) + time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=1, help="routes per region")
    ap.add_argument("--length", type=float, default=200.0, help="route length [m]")
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    totals: dict[str, float] = {}
    world_mod.render_camera = _Timed(world_mod.render_camera, "camera", totals)
    world_mod.simulate_lidar = _Timed(world_mod.simulate_lidar, "lidar", totals)
    agent = ProductAgent("regional", REPO / "config" / "regions.yaml", bundle_dir=REPO / "bundles",
                         backend=OnnxRuntimeBackend(intra_op_threads=1))
    agent.act = _Timed(agent.act, "product (messages in → command)", totals)
    sim_s = wall_s = 0.0
    ticks = 0
    expert_sim = expert_wall = 0.0
    for region in REGIONS:
        for spec in course_mod.region_routes(region, args.routes, 2000, args.length):
            r = run_route(spec, agent)
            sim_s += r.sim_s
            wall_s += r.wall_s
            ticks += r.ticks
            e = run_route(spec, ExpertAgent())
            expert_sim += e.sim_s
            expert_wall += e.wall_s
            print(f"{spec.route_id}: {r.sim_s:.1f} s simulated in {r.wall_s:.1f} s ({r.real_time_factor:.1f}x), "
                  f"DS {r.score.driving_score:.3f}; expert {e.real_time_factor:.1f}x")
    agent.close()
    print(f"\nproduct driving, camera + lidar + both models at 10 Hz: {sim_s / wall_s:.2f}x real time "
          f"({ticks} ticks, {1000 * wall_s / ticks:.1f} ms per tick; goal >= 3x)")
    print(f"expert driving, nothing rendered: {expert_sim / expert_wall:.2f}x real time")
    rest = wall_s - sum(v for k, v in totals.items())
    for key, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {key:34s} {1000 * value / ticks:6.2f} ms per tick ({100 * value / wall_s:4.1f} %)")
    print(f"  {'world, scoring, messages, rest':34s} {1000 * rest / ticks:6.2f} ms per tick "
          f"({100 * rest / wall_s:4.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
