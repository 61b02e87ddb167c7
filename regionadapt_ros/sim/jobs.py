"""Many closed-loop routes on several processes: a job is one agent driving a list of routes, in a worker
process of its own (spawned: a clean interpreter, one thread for ONNX Runtime and OpenCV, as many workers as
cores), and comes back as plain dictionaries (``RouteResult.as_dict``). Results are the same whatever the
number of workers: every route depends only on its spec and the agent.

``AgentSpec`` says who drives: ``"expert"``, or the product with the bundles of ``regions_file`` where
``bundles`` ({region: bundle directory}) overrides which bundle serves a region, and ``driving_overrides``
replaces fields of the ``DrivingConfig`` (a hook for comparing session settings, e.g. a guard on and off).
A job may also collect on-policy states (``collect_dir``): every ``collect_stride``-th tick's camera image,
BEV grid and the expert's labels of that state, saved as one .npz per route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.sim.course import RouteSpec

_LOG = logging.getLogger("regionadapt_ros.sim")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    kind: str = "product"  # "product" or "expert"
    bundles: Mapping[str, str] = field(default_factory=dict)
    driving_overrides: Mapping[str, Any] = field(default_factory=dict)
    expert_noise: tuple[float, float] = (0.0, 0.0)  # the expert's executed-command noise (steer, accel std)


@dataclass(frozen=True)
class Job:
    agent: AgentSpec
    routes: tuple[RouteSpec, ...]
    regions_file: str
    bundle_dir: str
    collect_dir: str | None = None
    collect_stride: int = 2
    tag: str = ""


def make_agent(spec: AgentSpec, regions_file: str | Path, bundle_dir: str | Path, threads: int = 1,
               regions: Sequence[str] | None = None):
    from regionadapt_ros.sim.agents import ExpertAgent, ProductAgent

    if spec.kind == "expert":
        return ExpertAgent(spec.expert_noise, spec.name)
    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend

    return ProductAgent(spec.name, regions_file, bundle_dir=bundle_dir, bundles=dict(spec.bundles),
                        driving_overrides=dict(spec.driving_overrides),
                        backend=OnnxRuntimeBackend(intra_op_threads=threads), regions=regions)


class _Collector:
    """on_tick hook keeping every ``stride``-th state: image (96, 160, 3) uint8, BEV grid float16, labels."""

    def __init__(self, stride: int) -> None:
        self.stride = max(1, int(stride))
        self.k = 0
        self.images: list[np.ndarray] = []
        self.bev: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def __call__(self, obs, pose, cmd) -> None:
        from regionadapt_ros.adaptation.scene import scene_labels
        from regionadapt_ros.core.preprocess import IntensityScale, bev_grid, resize_rgb

        if self.k % self.stride == 0:
            self.images.append(resize_rgb(obs.rgb))
            # the world's lidar gives reflectance 0..1
            self.bev.append(bev_grid(obs.points, intensity=IntensityScale(1.0)).astype(np.float16))
            self.labels.append(scene_labels(obs.scene))
        self.k += 1

    def save(self, path: Path) -> int:
        if not self.labels:
            return 0
        np.savez(path, images=np.stack(self.images), bev=np.stack(self.bev), labels=np.stack(self.labels))
        return len(self.labels)


def run_job(job: Job) -> list[dict[str, Any]]:
    """Drive the job's routes; one dict per route (``RouteResult.as_dict`` plus ``collected`` samples)."""
    from regionadapt_ros.sim.runner import RunOptions, run_route

    agent = make_agent(job.agent, job.regions_file, job.bundle_dir,
                       regions=sorted({r for spec in job.routes for r in spec.regions}))
    out = []
    try:
        for spec in job.routes:
            collector = _Collector(job.collect_stride) if job.collect_dir else None
            result = run_route(spec, agent, RunOptions(on_tick=collector))
            row = result.as_dict()
            row["tag"] = job.tag
            if collector is not None:
                path = Path(job.collect_dir) / f"{spec.route_id}.npz"
                row["collected"] = collector.save(path)
                row["collected_path"] = str(path) if row["collected"] else None
            out.append(row)
    finally:
        agent.close()
    return out


def _worker_init() -> None:
    import os

    import cv2

    os.environ["OMP_NUM_THREADS"] = "1"
    cv2.setNumThreads(1)
    logging.getLogger("regionadapt_ros").setLevel(logging.WARNING)


def run_jobs(jobs: Sequence[Job], workers: int = 2, progress: bool = True,
             on_result: Callable[[Job, list[dict[str, Any]]], None] | None = None) -> list[list[dict[str, Any]]]:
    """Run ``jobs`` (results in job order) on ``workers`` processes (1: in this process)."""
    from tqdm import tqdm

    results: list[list[dict[str, Any]] | None] = [None] * len(jobs)
    total = sum(len(j.routes) for j in jobs)
    with tqdm(total=total, desc="closed-loop routes", unit="route", disable=not progress, leave=False) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i] = run_job(job)
                bar.update(len(job.routes))
                if on_result is not None:
                    on_result(job, results[i])
        else:
            from concurrent.futures import as_completed

            from regionadapt_ros.core.process_pool import process_pool

            with process_pool(min(workers, len(jobs)), _worker_init) as pool:
                futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    bar.update(len(jobs[i].routes))
                    if on_result is not None:
                        on_result(jobs[i], results[i])
    return [r or [] for r in results]


def chunks(routes: Sequence[RouteSpec], size: int) -> list[tuple[RouteSpec, ...]]:
    """Routes in consecutive groups of ``size`` (jobs small enough to balance two workers)."""
    size = max(1, int(size))
    return [tuple(routes[i:i + size]) for i in range(0, len(routes), size)]
