"""Synthetic data generation throughput: samples/s (camera 96x160 + lidar sweep + BEV grid + labels) with one
worker and with two, measured side by side in one run, and their ratio.

Wall-clock samples/s is what a user gets; it depends on what else the machine runs. Samples per CPU-second
(this process and its worker processes together) shows whether the workers themselves stay as fast as one
process; when wall-clock scaling falls short of it, the workers were waiting for a core.

    .venv/bin/python bench/bench_datagen.py [--n 1500] [--region urban_day] [--all-regions]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.adaptation.regions import REGIONS
from regionadapt_ros.adaptation.synthetic import generate_samples


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(region: str, n: int, workers: int, seed: int) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU-second)."""
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    generate_samples(region, n, seed, workers=workers, progress=False)
    return n / (time.perf_counter() - wall0), n / max(_cpu_seconds() - cpu0, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="samples per measurement")
    parser.add_argument("--region", default="urban_day", choices=sorted(REGIONS))
    parser.add_argument("--all-regions", action="store_true", help="also measure every region with one worker")
    args = parser.parse_args()

    generate_samples(args.region, 8, 0, workers=1, progress=False)  # warm caches (backgrounds, ray tables)
    one, one_cpu = measure(args.region, args.n, 1, seed=1)
    two, two_cpu = measure(args.region, args.n, 2, seed=1)  # same samples: output does not depend on workers
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"region {args.region}, {args.n} samples at 96x160 incl. lidar + BEV")
    print(f"  ({os.cpu_count()} CPUs, load average {load:.1f} at the end)")
    print(f"  1 worker : {one:7.1f} samples/s   {one_cpu:7.1f} samples/CPU-s")
    print(f"  2 workers: {two:7.1f} samples/s   {two_cpu:7.1f} samples/CPU-s (process start-up included)")
    print(f"  ratio 2/1: {two / one:5.2f} wall-clock, {two_cpu / one_cpu:5.2f} per CPU-second")
    if args.all_regions:
        for region in REGIONS:
            wall, cpu = measure(region, max(args.n // 3, 50), 1, seed=2)
            print(f"  {region:12s} 1 worker: {wall:7.1f} samples/s   {cpu:7.1f} samples/CPU-s")


if __name__ == "__main__":
    main()
