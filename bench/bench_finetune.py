"""Fine-tuning cost on this machine's CPU cores, measured in one run:

- fine-tuning wall time per region with the recipe's method (goal <= 5 minutes per region for head/adapter/LoRA);
- training samples per second per method (head, adapter, lora, full) on the same data;
- torchrun with 2 processes vs 1 on the same fine-tune (ratio of wall times).
Uses the recipe's cached datasets (.cache/train/data, from `make bundles`) when present, else generates them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regionadapt_ros.adaptation.dataset import build_region_dataset
from regionadapt_ros.adaptation.recipe import HOME_REGION, REGION_ORDER, Recipe
from regionadapt_ros.adaptation.regions import get_region
from regionadapt_ros.adaptation.train import Trainer
from regionadapt_ros.adaptation.workflow import base_weights_of, finetune, load_split
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.models.registry import build_model, named_weights, reference_architectures


def main() -> None:
    recipe = Recipe()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ft_"))
    data_root = REPO / ".cache" / "train" / "data"
    base_bundle = REPO / "bundles" / "base"
    if not (base_bundle / "manifest.json").exists():
        base = {m: named_weights(build_model(m)) for m in ("perception", "decision")}
        base_bundle = bundle_io.write_bundle(tmp / "base", "base", 1, base, "full", None, reference_architectures(),
                                             {})
    datasets = {}
    for region in REGION_ORDER:
        path = data_root / region
        if not (path / "meta.json").exists():
            path = tmp / "data" / region
            build_region_dataset(region, recipe.region_samples, recipe.seed + 2000, path, workers=2, progress=False)
        datasets[region] = path

    print(f"cores: {os.cpu_count()}, torch threads: default")
    for region in REGION_ORDER:
        if region == HOME_REGION:
            continue  # served by the base model
        cfg = replace(recipe.finetune_config, method=recipe.methods[region], progress=False)
        if cfg.method == "full":
            cfg = replace(cfg, lr=recipe.full_lr)
        t = time.perf_counter()
        finetune(region, datasets[region], base_bundle, tmp / "out" / region, cfg, get_region(region).primary_metric,
                 force=True)
        print(f"fine-tune {region:12s} ({cfg.method}, {cfg.epochs} epochs max): {time.perf_counter() - t:.1f} s")

    base, _ = base_weights_of(base_bundle)
    train, val = load_split(datasets["highway"], "train"), load_split(datasets["highway"], "val")
    rates = {}
    for method in ("head", "adapter", "lora", "full"):
        cfg = replace(recipe.finetune_config, method=method, epochs=2, patience=10, progress=False)
        t = time.perf_counter()
        Trainer(cfg, base).fit(train, val)
        rates[method] = 2 * len(train) / (time.perf_counter() - t)
        print(f"samples/s {method:8s}: {rates[method]:.0f} (2 epochs of {len(train)}, stems cached unless full)")

    torchrun = Path(sys.executable).with_name("torchrun")
    walls = {}
    for n in (1, 2):
        cmd = [str(torchrun), "--standalone", f"--nproc_per_node={n}", "-m", "regionadapt_ros.cli", "finetune",
               str(datasets["highway"]), "--base", str(base_bundle), "--out", str(tmp / f"ddp{n}"), "--method",
               "full", "--epochs", "1", "--no-progress", "--force"]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // n)),
                   REGIONADAPT_DDP_CPU="1")
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls[n] = time.perf_counter() - t
    print(f"torchrun full fine-tune, 1 epoch: 1 process {walls[1]:.1f} s, 2 processes {walls[2]:.1f} s")
    print(f"RATIO torchrun 2 processes / 1 process wall time: {walls[2] / walls[1]:.2f}")


if __name__ == "__main__":
    main()
