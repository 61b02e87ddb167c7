"""``regionadapt replay BAG``: a rosbag2 through the driving stack without ROS 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _non_negative(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 1")
    return value


def add_replay_options(p: argparse.ArgumentParser) -> None:
    from regionadapt_ros.paths import config_dir

    cfg = config_dir()
    p.add_argument("--regions-config", default=str(cfg / "regions.yaml"), help="regions.yaml (bundles and rules)")
    p.add_argument("--geofences", default=str(cfg / "geofences.geojson"), help="GeoJSON geofence file")
    p.add_argument("--bundle-dir", help="override regions.yaml's bundle_dir")
    p.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "torch", "tensorrt"))
    p.add_argument("--command-type", default="ackermann", choices=("ackermann", "carla", "twist"))
    p.add_argument("--summary-json", help="write the run's summary as JSON here")
    p.add_argument("--rate", type=_non_negative, default=0.0,
                   help="pace the replay at this multiple of real time (0 = as fast as possible)")
    p.add_argument("--accept-unknown-status", action="store_true",
                   help="use GNSS fixes with NavSatStatus STATUS_UNKNOWN (-2, not set by the driver: Jazzy's "
                        "default, the CARLA bridge's fixes) for the region; by default they are held, as the message "
                        "defines")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-emergency-brake", action="store_true",
                   help="the collision-risk guard only records what it would have braked (the driving node's "
                        "emergency_brake:=false)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a rosbag2 (sqlite3 or MCAP) through the driving stack, no ROS 2")
    p.add_argument("bag", help="rosbag2 directory or .mcap file")
    p.add_argument("--out", help="output directory (default: replay_<bag name>): bag/ and report/ go there")
    p.add_argument("--camera-topic", default="/camera/image")
    p.add_argument("--lidar-topic", default="/lidar/points")
    p.add_argument("--gnss-topic", default="/gnss/fix")
    p.add_argument("--odom-topic", default="/odom")
    p.add_argument("--speed-topic", default=None, help="std_msgs/Float32 speed (e.g. CARLA's speedometer)")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="output bag storage")
    p.add_argument("--loop", type=_at_least_one, default=1, metavar="N",
                   help="replay N times; the clock jumps back at each restart as with ros2 bag play --loop")
    add_replay_options(p)
    p.set_defaults(func=_replay)


def run_replay(args: argparse.Namespace, bag: Path, out_dir: Path, topics: dict[str, str | None]):
    from regionadapt_ros.replay import ReplayConfig, ReplayRunner

    cfg = ReplayConfig(
        regions_file=Path(args.regions_config), geofence_file=Path(args.geofences),
        bundle_dir=Path(args.bundle_dir) if args.bundle_dir else None, backend=args.backend,
        command_type=args.command_type, out_bag=out_dir / "bag", report_dir=out_dir / "report",
        storage=getattr(args, "storage", "mcap"), rate=args.rate, loops=getattr(args, "loop", 1),
        progress=not args.no_progress, emergency_brake=not getattr(args, "no_emergency_brake", False),
        resolver={"accept_unknown_status": True} if getattr(args, "accept_unknown_status", False) else {},
        **topics,
    )
    return ReplayRunner(cfg).run(bag)


def print_summary(summary) -> None:
    print(f"frames: {summary.frames} ({summary.frames_missed} missed), commands: {summary.commands} "
          f"({summary.stop_commands} stop)")
    print(f"regions crossed: {' → '.join(summary.regions)}; swaps: {summary.swaps}")
    print(f"latency per frame: p50 {summary.latency_ms_p50:.2f} ms, p99 {summary.latency_ms_p99:.2f} ms; "
          f"replay speed {summary.speed_vs_real_time:.1f}x real time")
    ttc = "none" if summary.min_ttc_s is None else f"{summary.min_ttc_s:.2f} s"
    print(f"collision risk: {summary.risk_warn_frames} frames at warn, {summary.emergency_brakes} emergency-brake "
          f"overrides ({summary.emergency_brake_frames} frames, {summary.suppressed_emergency_brakes} recorded with "
          f"the guard off); lowest TTC {ttc}")
    held = summary.warnings.get("gnss_unknown_status_held", 0)
    if held:
        print(f"warning: {held} GNSS fixes had status -2 (STATUS_UNKNOWN: the driver does not set it) and were not "
              "used for the region; pass --accept-unknown-status if the driver's positions are good")
    print(f"output bag: {summary.out_bag}")
    print(f"report: {summary.report}")


def write_summary(path: str | None, summary) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary.as_dict(), indent=2, default=str) + "\n")


def _replay(args: argparse.Namespace) -> int:
    from regionadapt_ros.core.errors import DataError

    bag = Path(args.bag)
    out_dir = Path(args.out) if args.out else Path(f"replay_{bag.name.replace('.mcap', '')}")
    if (out_dir / "bag").exists():
        raise DataError(out_dir / "bag", "output bag already exists; choose another --out")
    topics = {"camera_topic": args.camera_topic, "lidar_topic": args.lidar_topic or None,
              "gnss_topic": args.gnss_topic or None, "odom_topic": args.odom_topic or None,
              "speed_topic": args.speed_topic or None}
    summary = run_replay(args, bag, out_dir, topics)
    print_summary(summary)
    write_summary(args.summary_json, summary)
    return 0
