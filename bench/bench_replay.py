"""Replay and demo, measured in one run (CPU):

- replay speed vs real time for the demo drive (goal >= 3x);
- end-to-end latency message-in → command-out p50/p99 in the replay runner;
- demo wall time cold (renders the drive into an empty cache) vs warm (reuses it).
Needs the shipped bundles in bundles/ (or `make bundles`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo(cache: Path, summary: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "regionadapt_ros.cli", "demo", "--cache", str(cache), "--summary-json",
                    str(summary), "--no-progress"], check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        cache = Path(tmp)
        cold = demo(cache, cache / "cold.json")
        warm = demo(cache, cache / "warm.json")
        s = json.loads((cache / "warm.json").read_text())
    print(f"demo drive: {s['duration_s']:.1f} s of bag, {s['frames']} frames, regions {' → '.join(s['regions'])}, "
          f"{s['swaps']} swaps, {s['frames_missed']} frames missed")
    print(f"replay wall time {s['wall_s']:.1f} s")
    print(f"RATIO replay speed vs real time (goal >= 3): {s['speed_vs_real_time']:.2f}")
    print(f"end-to-end latency message-in → command-out: p50 {s['latency_ms_p50']:.2f} ms, "
          f"p99 {s['latency_ms_p99']:.2f} ms")
    for stage, v in s["stage_latency_ms"].items():
        print(f"  {stage:14s} p50 {v['p50']:.3f} ms  p99 {v['p99']:.3f} ms")
    print(f"demo wall time cold {cold:.1f} s, warm {warm:.1f} s (goals: cold <= 300 s, warm <= 60 s)")
    print(f"RATIO demo cold / warm: {cold / warm:.2f}")


if __name__ == "__main__":
    main()
