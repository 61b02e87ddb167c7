"""``regionadapt demo``: the main job on the embedded default (CPU, no ROS 2).

A synthetic drive across five regions is rendered into a rosbag2 (cached), with geofences that match it, and
replayed through the whole stack — region resolution from GNSS, prefetch and hot swap of the signed regional
bundles, perception, decision, control — exactly as ``regionadapt replay`` does. The regional bundles are the
ones in bundles/ (made by ``regionadapt train-all``); if they are missing they are trained first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

DRIVE_VERSION = 2  # bump when the demo drive's content changes, to invalidate caches


def register(sub: argparse._SubParsersAction) -> None:
    from regionadapt_ros.commands.replay import add_replay_options

    p = sub.add_parser("demo", help="a multi-region drive through the whole stack on CPU (cached after the first run)")
    p.add_argument("--cache", help="cache directory (default: $REGIONADAPT_CACHE or .cache/ in the source tree)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    add_replay_options(p)
    p.set_defaults(func=_demo, geofences=None)


def _bundles_ready(regions_yaml: Path, bundle_dir: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(regions_yaml.read_text())
    missing = []
    for region, entry in data.get("regions", {}).items():
        if not (bundle_dir / entry.get("bundle", region) / "manifest.json").exists():
            missing.append(region)
    return missing


def _drive(cache: Path, seed: int, storage: str) -> tuple[Path, Path, bool]:
    from regionadapt_ros.adaptation.demo_drive import DEMO_ROUTE, write_demo_drive

    key = hashlib.sha256(json.dumps([DRIVE_VERSION, DEMO_ROUTE, seed, storage]).encode()).hexdigest()[:12]
    root = cache / f"drive-{key}"
    bag, fences = root / "bag", root / "geofences.geojson"
    if (root / "complete").exists():
        return bag, fences, True
    shutil.rmtree(root, ignore_errors=True)
    tmp = cache / f".drive-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_demo_drive(tmp / "bag", tmp / "geofences.geojson", seed=seed, storage=storage, progress=True)
    (tmp / "complete").write_text("ok\n")
    tmp.rename(root)
    return bag, fences, False


def _demo(args: argparse.Namespace) -> int:
    from regionadapt_ros.commands.replay import print_summary, run_replay, write_summary
    from regionadapt_ros.paths import bundles_dir, cache_dir

    t0 = time.perf_counter()
    cache = Path(args.cache) if args.cache else cache_dir() / "demo"
    cache.mkdir(parents=True, exist_ok=True)
    regions_yaml = Path(args.regions_config)
    bundle_dir = Path(args.bundle_dir) if args.bundle_dir else bundles_dir()
    args.bundle_dir = str(bundle_dir)

    missing = _bundles_ready(regions_yaml, bundle_dir)
    if missing:
        from regionadapt_ros.adaptation.recipe import run

        print(f"regional bundles missing ({', '.join(missing)}): training them with the recipe "
              "(regionadapt train-all); this happens once")
        run(cache_dir() / "train", bundle_dir, None)

    bag, fences, cached = _drive(cache, args.seed, args.storage)
    print(f"demo drive: {bag} ({'cached' if cached else 'rendered'})")
    args.geofences = str(fences)
    run_dir = cache / "last-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    summary = run_replay(args, bag, run_dir, {})
    print_summary(summary)
    write_summary(args.summary_json, summary)
    print(f"demo wall time: {time.perf_counter() - t0:.1f} s")
    return 0
