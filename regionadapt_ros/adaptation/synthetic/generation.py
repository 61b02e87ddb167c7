"""Datasets of independent samples, generated in chunks by worker processes (identical output for any number of
workers)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionadapt_ros.adaptation.regions import RegionSpec, get_region
from regionadapt_ros.adaptation.synthetic.scenes import render_sample
from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABELS
from regionadapt_ros.core.preprocess import IntensityScale, bev_grid

SYNTHETIC_INTENSITY = IntensityScale(1.0)  # the synthetic lidar gives reflectance 0..1 (a fixed scale: stateless)

CHUNK = 32  # samples per work item


# --------------------------------------------------------------------------------------------------------
# Parallel generation into arrays


ARRAY_NAMES = ("images", "bev", "labels")


def _array_layout(n: int, image_size: tuple[int, int]) -> list[tuple[tuple[int, ...], type]]:
    """(shape, dtype) of the images, bev and labels arrays of ``n`` samples."""
    return [
        ((n, int(image_size[0]), int(image_size[1]), 3), np.uint8),
        ((n, BEV.channels, BEV.rows, BEV.cols), np.float16),
        ((n, len(LABELS)), np.float32),
    ]


@dataclass(frozen=True)
class _Job:
    """Samples [start, stop) of (region, seed), written into the .npy files at ``paths`` (images, bev, labels)."""

    region: str
    seed: int
    image_size: tuple[int, int]
    paths: tuple[str, ...]
    start: int
    stop: int


def _fill(out: list[np.ndarray], region: str, seed: int, image_size: tuple[int, int], start: int, stop: int) -> int:
    """Render samples [start, stop) into rows [start, stop) of the images, bev and labels arrays ``out``."""
    images, bev, labels = out
    spec = get_region(region)
    for i in range(start, stop):
        image, points, lab, _ = render_sample(spec, seed, i, image_size)
        images[i] = image
        bev[i] = bev_grid(points, intensity=SYNTHETIC_INTENSITY)
        labels[i] = lab
    return stop - start


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would only contend


def _run_job(job: _Job) -> int:
    # Shared file mappings: the parent sees the rows through the page cache; no msync per job (it would wait for
    # the disk every CHUNK samples).
    out = [np.load(p, mmap_mode="r+", allow_pickle=False) for p in job.paths]
    return _fill(out, job.region, job.seed, job.image_size, job.start, job.stop)


def generate_into(
    region: str | RegionSpec,
    n: int,
    seed: int,
    paths: Sequence[str | Path],
    image_size: tuple[int, int] = (IMAGE_H, IMAGE_W),
    workers: int = 2,
    progress: bool = True,
) -> None:
    """Generate ``n`` samples into three new .npy files at ``paths``: images uint8 (n, H, W, 3), bev float16
    (n, C, rows, cols), labels float32 (n, len(LABELS)). Workers write through memory maps, so memory does not
    grow with n; the files are identical whatever the number of workers."""
    spec = get_region(region)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(paths) != len(ARRAY_NAMES):
        raise ValueError(f"expected {len(ARRAY_NAMES)} paths ({', '.join(ARRAY_NAMES)}), got {len(paths)}")
    for path, (shape, dtype) in zip(paths, _array_layout(n, image_size), strict=True):
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    size = (int(image_size[0]), int(image_size[1]))
    str_paths = tuple(str(p) for p in paths)
    jobs = [_Job(spec.name, int(seed), size, str_paths, a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    from tqdm import tqdm

    with tqdm(total=n, desc=f"generate {spec.name}", unit="sample", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            _worker_init()
            for job in jobs:
                bar.update(_run_job(job))
            return
        from concurrent.futures import as_completed

        from regionadapt_ros.core.process_pool import process_pool

        with process_pool(min(workers, len(jobs)), _worker_init) as pool:
            futures = [pool.submit(_run_job, job) for job in jobs]
            for fut in as_completed(futures):
                bar.update(fut.result())


def generate_samples(
    region: str | RegionSpec,
    n: int,
    seed: int,
    image_size: tuple[int, int] = (IMAGE_H, IMAGE_W),
    workers: int = 2,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``n`` labelled samples of a region as in-memory arrays:
    ``images`` (n, H, W, 3) uint8 RGB, ``bev`` (n, C, rows, cols) float16 (core.preprocess.bev_grid of the
    simulated sweep), ``labels`` (n, len(LABELS)) float32 in LABELS order. Sample i depends only on
    (seed, region, i): the arrays are identical whatever ``workers`` is."""
    spec = get_region(region)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if workers <= 1 or n <= CHUNK:
        from tqdm import tqdm

        out = [np.empty(shape, dtype) for shape, dtype in _array_layout(n, image_size)]
        with tqdm(total=n, desc=f"generate {spec.name}", unit="sample", disable=not progress) as bar:
            for a in range(0, n, CHUNK):
                bar.update(_fill(out, spec.name, int(seed), image_size, a, min(a + CHUNK, n)))
        return dict(zip(ARRAY_NAMES, out, strict=True))
    with tempfile.TemporaryDirectory(prefix="regionadapt-gen-") as tmp:
        paths = [Path(tmp) / f"{name}.npy" for name in ARRAY_NAMES]
        generate_into(spec, n, seed, paths, image_size, workers, progress)
        return {name: np.array(np.load(p, mmap_mode="r", allow_pickle=False))
                for name, p in zip(ARRAY_NAMES, paths, strict=True)}
