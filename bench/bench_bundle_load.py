"""Bundle loading cost, measured side by side in one run on bundles of the real networks' architecture.

Baseline: reading every file's bytes and hashing them (the least any verified load must do). Compared with it:
parsing the safetensors alone, ``read_bundle`` (manifest, hashes, parse, architecture and finiteness checks),
``read_bundle`` + ``resolve`` of a full bundle, and of a LoRA delta resolved on the base (which also hashes
the base weights to check the delta was built on them). Prints medians and ratios to the baseline.

    .venv/bin/python bench/bench_bundle_load.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors.numpy as safetensors_np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.core import bundle as bundle_io


def _architectures() -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    try:
        from regionadapt_ros.models.registry import reference_architectures

        return reference_architectures()
    except ImportError:  # without torch: a synthetic stand-in of similar size
        return {"perception": {f"layer{i}.weight": ((128, 768), "float32") for i in range(4)},
                "decision": {"body.weight": ((128, 65), "float32"), "head.weight": ((2, 128), "float32")}}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm the page cache and imports
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    shapes = _architectures()
    rng = np.random.default_rng(0)
    base = {m: {n: (rng.standard_normal(s) * 0.05).astype(d) if d.startswith("float") else np.zeros(s, d)
                for n, (s, d) in named.items()} for m, named in shapes.items()}
    rank = 4
    lora: dict[str, dict[str, np.ndarray]] = {}
    for model, named in shapes.items():
        lora[model] = {}
        for name, (shape, dtype) in named.items():
            if len(shape) >= 2 and dtype.startswith("float"):
                lora[model][name + ".lora_A"] = rng.standard_normal((rank, int(np.prod(shape[1:])))).astype(dtype)
                lora[model][name + ".lora_B"] = np.zeros((shape[0], rank), dtype)

    with tempfile.TemporaryDirectory() as tmp:
        full_path = bundle_io.write_bundle(Path(tmp) / "base", "base", 1, base, "full", None, shapes, {})
        delta_path = bundle_io.write_bundle(Path(tmp) / "lora", "highway", 1, lora, "lora",
                                            bundle_io.models_hash(base), shapes, {},
                                            lora={m: {"alpha": 8.0, "rank": rank} for m in shapes})
        files = sorted(p for p in full_path.iterdir() if p.name.endswith(".safetensors"))
        size_mb = sum(p.stat().st_size for p in files) / 1e6

        def read_and_hash() -> None:
            for path in files:
                hashlib.sha256(path.read_bytes()).hexdigest()

        def parse_only() -> None:
            for path in files:
                safetensors_np.load_file(str(path))

        cases = [
            ("read + sha256 of the weight files (baseline)", read_and_hash),
            ("safetensors parse only (no hash, no checks)", parse_only),
            ("read_bundle, full bundle", lambda: bundle_io.read_bundle(full_path, shapes)),
            ("read_bundle + resolve, full bundle", lambda: bundle_io.read_bundle(full_path, shapes).resolve()),
            ("read_bundle + resolve, LoRA delta on the base",
             lambda: bundle_io.read_bundle(delta_path, shapes).resolve(base)),
        ]
        results = [(label, _median_ms(fn, args.repeats)) for label, fn in cases]

    print(f"bundle of {sum(len(v) for v in shapes.values())} tensors, {size_mb:.2f} MB of weights; "
          f"median of {args.repeats} runs")
    baseline = results[0][1]
    for label, ms in results:
        print(f"  {label:48s} {ms:8.2f} ms   x{ms / baseline:5.2f}")


if __name__ == "__main__":
    main()
