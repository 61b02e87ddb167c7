"""``regionadapt demo``: the main job on the embedded default (CPU, no ROS 2).

A synthetic drive across five regions is rendered into a rosbag2 (cached), with geofences that match it, and
replayed through the whole stack — region resolution from GNSS, prefetch and hot swap of the signed regional
bundles, perception, decision, control — exactly as ``regionadapt replay`` does. With ``--closed-loop`` the
models drive the five-region course themselves (``sim``): the command moves the car, and the run is scored as
the CARLA leaderboard scores routes. The regional bundles are the ones in bundles/ (made by
``regionadapt train-all``); if they are missing they are trained first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from regionadapt_ros.commands.argtypes import seed_arg

# bump when the demo drive's content changes, to invalidate caches (3: clouds in base_link, parked cars kept ahead)
DRIVE_VERSION = 3


def register(sub: argparse._SubParsersAction) -> None:
    from regionadapt_ros.commands.replay import add_replay_options

    p = sub.add_parser("demo", help="a multi-region drive through the whole stack on CPU (cached after the first run)")
    p.add_argument("--cache", help="cache directory (default: $REGIONADAPT_CACHE or .cache/ in the source tree)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--closed-loop", action="store_true",
                   help="the models drive the five-region course themselves (closed loop, scored as the CARLA "
                        "leaderboard scores routes) instead of replaying the expert's recorded drive")
    add_replay_options(p)
    p.set_defaults(func=_demo, geofences=None)


def _bundles_ready(regions_yaml: Path, bundle_dir: Path) -> list[str]:
    from regionadapt_ros.core.bundle_store import BundleStore

    # The same validation the replay will apply, before a missing bundle could start a training run.
    store = BundleStore.load(regions_yaml, bundle_dir=bundle_dir, require_bundles=False)
    return [region for region in store.regions if not (store.bundle_path(region) / "manifest.json").exists()]


def _fresh_run_dir(path: Path, ours: tuple[str, ...]) -> Path:
    """``path`` emptied for a new run, when it holds only what an earlier run wrote (``ours``): a --cache given
    as a folder of other files must not lose them."""
    from regionadapt_ros.core.errors import ConfigError

    if path.exists():
        if not path.is_dir():
            raise ConfigError(path, "is not a directory; give --cache a folder of its own")
        foreign = sorted(p.name for p in path.iterdir()
                         if p.name not in ours and not (p.name.startswith("demo-") and p.suffix == ".png"))
        if foreign:
            raise ConfigError(path, f"holds files an earlier demo run did not write ({', '.join(foreign[:3])}); "
                                    "give --cache a folder of its own")
        shutil.rmtree(path)
    return path


def _drive(cache: Path, seed: int, storage: str, progress: bool = True) -> tuple[Path, Path, bool]:
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
    write_demo_drive(tmp / "bag", tmp / "geofences.geojson", seed=seed, storage=storage, progress=progress)
    (tmp / "complete").write_text("ok\n")
    tmp.rename(root)
    return bag, fences, False


def _demo(args: argparse.Namespace) -> int:
    from regionadapt_ros.commands.replay import print_summary, run_replay, write_summary
    from regionadapt_ros.core.errors import ConfigError, DataError
    from regionadapt_ros.paths import bundles_dir, cache_dir

    if args.geofences is not None:
        raise ConfigError("--geofences", "the demo drives its own course, with geofences drawn for it: a geofence "
                                         "file does not apply (regionadapt replay BAG --geofences FILE replays a "
                                         "drive of your own)")
    t0 = time.perf_counter()
    cache = Path(args.cache) if args.cache else cache_dir() / "demo"
    cache.mkdir(parents=True, exist_ok=True)
    regions_yaml = Path(args.regions_config)
    bundle_dir = Path(args.bundle_dir) if args.bundle_dir else bundles_dir()
    args.bundle_dir = str(bundle_dir)
    from regionadapt_ros.commands.output_paths import check_file_output

    # before the drive: the summary must not land on an input or on what the demo writes (its cache)
    check_file_output("--summary-json", args.summary_json, protected=[regions_yaml, bundle_dir, cache])

    missing = _bundles_ready(regions_yaml, bundle_dir)
    if missing:
        from regionadapt_ros.adaptation.recipe import run

        print(f"regional bundles missing ({', '.join(missing)}): training them with the recipe "
              "(regionadapt train-all); this happens once")
        run(cache_dir() / "train", bundle_dir, None)

    if args.closed_loop:
        return _closed_loop(args, cache, t0)
    bag, fences, cached = _drive(cache, args.seed, args.storage, progress=not args.no_progress)
    print(f"demo drive: {bag} ({'cached' if cached else 'rendered'})")
    args.geofences = str(fences)
    run_dir = _fresh_run_dir(cache / "last-run", ("bag", "report"))
    try:
        summary = run_replay(args, bag, run_dir, {})
    except DataError as exc:
        if not cached or not str(exc).startswith(str(bag)):
            raise
        # the cache's own drive is damaged (a disk error, an interrupted copy): it is the demo's to redo, not
        # the user's to recover
        print(f"the cached demo drive is damaged ({exc.problem}): rendering it again")
        shutil.rmtree(bag.parent)
        bag, fences, _ = _drive(cache, args.seed, args.storage, progress=not args.no_progress)
        args.geofences = str(fences)
        run_dir = _fresh_run_dir(cache / "last-run", ("bag", "report"))
        summary = run_replay(args, bag, run_dir, {})
    print_summary(summary)
    write_summary(args.summary_json, summary)
    print(f"demo wall time: {time.perf_counter() - t0:.1f} s")
    return 0


def _closed_loop(args: argparse.Namespace, cache: Path, t0: float) -> int:
    """The five-region course driven by the regional models: GNSS against geofences that match the course,
    prefetch and hot swap at the boundaries, the command moving the car; a bag, a report and a summary."""
    from regionadapt_ros.commands.geofence import resolver_overrides
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.sim.agents import ProductAgent
    from regionadapt_ros.sim.course import DEMO_COURSE, Course, RouteSpec
    from regionadapt_ros.sim.geo import write_course_geofences
    from regionadapt_ros.sim.report import write_report
    from regionadapt_ros.sim.runner import RunOptions, run_route

    # What applies to a closed loop is passed on; what cannot is refused rather than ignored.
    if args.rate:
        raise ConfigError("--rate", "the closed loop runs as fast as it can (it is its own clock); --rate paces a "
                                    "replay")
    if args.lidar_extrinsic or args.ground_z is not None:
        raise ConfigError("--lidar-extrinsic" if args.lidar_extrinsic else "--ground-z",
                          "the simulated lidar publishes in the vehicle frame, with the road where the grid expects "
                          "it; these options are for a bag of your own")
    driving = {"command_type": args.command_type, "emergency_brake": not args.no_emergency_brake}
    if args.lidar_max_age is not None:
        driving["lidar_max_age_s"] = args.lidar_max_age
    run_dir = _fresh_run_dir(cache / "closed-loop", ("geofences.geojson", "run", "report.md", "report.json"))
    spec = RouteSpec(f"demo-{args.seed}", DEMO_COURSE, args.seed)
    course = Course(spec)
    fences = write_course_geofences(run_dir / "geofences.geojson", course)
    agent = ProductAgent("regional", args.regions_config, bundle_dir=args.bundle_dir, geofence_file=fences,
                         backend=args.backend, driving_overrides=driving, resolver=resolver_overrides(args) or None)
    try:
        result = run_route(spec, agent, RunOptions(record_dir=run_dir / "run", storage=args.storage, gnss=True,
                                                   progress=not args.no_progress), course)
    finally:
        agent.close()
    write_report([result], run_dir)
    summary = closed_loop_summary(result, run_dir)
    s = result.score
    stats = result.agent_stats
    print(f"closed loop: {' → '.join(spec.regions)} ({spec.length_m:.0f} m), the regional models driving")
    print(f"driving score {s.driving_score:.3f}  route completion {s.route_completion:.3f}  infraction penalty "
          f"{s.infraction_penalty:.3f}  ({s.status})")
    counts = {k: v for k, v in s.counts().items() if v}
    print(f"infractions: {', '.join(f'{k} {v}' for k, v in counts.items()) or 'none'}")
    print(f"regions served: {' → '.join(stats.get('regions', []))}; swaps: {len(stats.get('swaps', []))}; "
          f"missed frames: {summary['frames_missed']} of {summary['frames']}")
    print(f"region changes prefetched before the vehicle reached the fence: {summary['prefetched_changes']} of "
          f"{summary['region_changes']}; emergency-brake overrides: {summary['emergency_brakes']}")
    print(f"latency per frame: p50 {summary['latency_ms_p50']:.2f} ms, p99 {summary['latency_ms_p99']:.2f} ms; "
          f"{result.real_time_factor:.1f}x real time")
    print(f"output bag: {result.bag}")
    print(f"report: {run_dir / 'report.md'}")
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"demo wall time: {time.perf_counter() - t0:.1f} s")
    return 0


def closed_loop_summary(result, run_dir: Path) -> dict:
    """Every key of the replay summary (``ReplaySummary``) for a closed-loop run, so that what reads one reads
    the other, plus driving_score, route_completion, infraction_penalty, status and the infraction counts. Keys
    a closed loop has no counterpart for (bag topics, GNSS fixes, ...) keep the replay summary's defaults."""
    from dataclasses import MISSING, fields

    from regionadapt_ros.replay import ReplaySummary

    stats = result.agent_stats
    s = result.score
    # the first swap is the acquisition of the start region, not a change
    changes = [w for w in stats.get("swaps", []) if w.get("from") is not None and not w.get("startup")]
    guard = stats.get("emergency_brake", {})
    defaults = {f.name: f.default if f.default is not MISSING else
                f.default_factory() if f.default_factory is not MISSING else None for f in fields(ReplaySummary)}
    missed = int(stats.get("dropped_frames", 0)) + int(stats.get("late_frames", 0))
    per_region = [{"region": r, "frames": c["frames"], "missed": c["late"]}
                  for r, c in stats.get("per_region", {}).items()]
    # times as the replay summary gives them: seconds since the start (t_offset_s), the start being the
    # acquisition of the first region
    swaps = stats.get("swaps", [])
    t0 = float(swaps[0]["t"]) if swaps else 0.0
    swap_events = [{**w, "t": round(float(w["t"]) - t0, 3)} for w in swaps]
    switches = [{"t": w["t"], "from": w["from"], "to": w["to"], "prefetched": bool(w.get("prefetched"))}
                for w in swap_events if w.get("from") is not None and not w.get("startup")]
    return defaults | {
        "region_changes": len(changes), "prefetched_changes": sum(bool(w.get("prefetched")) for w in changes),
        "emergency_brakes": int(guard.get("overrides", 0)),
        "emergency_brake_frames": int(guard.get("override_frames", 0)),
        "suppressed_emergency_brakes": int(guard.get("suppressed", 0)),
        "bag": None, "frames": int(stats.get("frames", 0)) + int(stats.get("dropped_frames", 0)),
        "frames_missed": missed, "commands": result.ticks, "stop_commands": int(stats.get("stop_commands", 0)),
        "regions": list(stats.get("regions", [])), "swaps": len(stats.get("swaps", [])),
        "latency_ms_p50": stats.get("latency_ms_p50"), "latency_ms_p99": stats.get("latency_ms_p99"),
        "duration_s": result.sim_s, "wall_s": result.wall_s, "speed_vs_real_time": result.real_time_factor,
        "report": str(run_dir / "report.md"), "out_bag": result.bag,
        "dropped_frames": int(stats.get("dropped_frames", 0)), "failed_loads": int(stats.get("failed_loads", 0)),
        "clock_jumps": int(stats.get("clock_jumps", 0)), "warnings": stats.get("warnings", {}),
        "per_region": per_region, "swap_events": swap_events, "t_offset_s": t0, "region_switches": switches,
        "gnss_fixes": int(stats.get("gnss_fixes", 0)),
        "stage_latency_ms": stats.get("stage_latency_ms", {}),
        "driving_score": s.driving_score, "route_completion": s.route_completion,
        "infraction_penalty": s.infraction_penalty, "status": s.status,
        "infractions": {k: v for k, v in s.counts().items() if v},
    }
