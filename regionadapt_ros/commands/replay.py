"""``regionadapt replay BAG``: a rosbag2 (or ROS 1 bag) through the driving stack without ROS 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regionadapt_ros.commands.argtypes import number


def replay_rate(text: str) -> float:
    """argparse type: 0 (as fast as possible) or a pace of 0.001x to 1000x real time (a rate of 1e-300 would
    sleep past the platform's time_t)."""
    value = number(float, 0.0, 1000.0)(text)
    if 0.0 < value < 0.001:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (as fast as possible) or in [0.001, 1000]")
    return value


def add_replay_options(p: argparse.ArgumentParser) -> None:
    from regionadapt_ros.commands.geofence import add_resolver_options
    from regionadapt_ros.paths import config_dir

    cfg = config_dir()
    p.add_argument("--regions-config", default=str(cfg / "regions.yaml"), help="regions.yaml (bundles and rules)")
    p.add_argument("--geofences", default=str(cfg / "geofences.geojson"), help="GeoJSON geofence file")
    p.add_argument("--bundle-dir", help="override regions.yaml's bundle_dir")
    p.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "torch", "tensorrt"))
    p.add_argument("--command-type", default="ackermann", choices=("ackermann", "carla", "twist"))
    p.add_argument("--json", "--summary-json", dest="summary_json", metavar="PATH",
                   help="write the run's summary as JSON here (--summary-json: old name)")
    p.add_argument("--rate", type=replay_rate, default=0.0,
                   help="pace the replay at this multiple of real time, 0.001 to 1000 (0 = as fast as possible)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-emergency-brake", action="store_true",
                   help="the collision-risk guard only records what it would have braked (the driving node's "
                        "emergency_brake:=false)")
    add_resolver_options(p)
    lidar = p.add_argument_group("lidar")
    lidar.add_argument("--lidar-extrinsic", type=float, nargs=6, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                       help="the lidar's pose in the vehicle frame [m, rad], for clouds whose frame /tf_static "
                            "does not connect to base_link")
    vehicle = p.add_argument_group("vehicle (the driving node's vehicle.* parameters)")
    vehicle.add_argument("--wheelbase", type=float, metavar="M", help="wheelbase in metres (default 2.7)")
    vehicle.add_argument("--max-steering-angle", type=float, metavar="RAD",
                         help="steering limit at the road wheels (default 0.5 rad); with --wheelbase it bounds "
                         "the turn a measured yaw rate may imply (tighter ones are refused as gyro faults)")
    lidar.add_argument("--vehicle-frame", metavar="FRAME",
                       help="the vehicle frame clouds are brought into and the outputs are stamped with (default "
                            "base_link, the driving node's frame_id; the CARLA bridge's is the role name, e.g. "
                            "ego_vehicle)")
    lidar.add_argument("--ground-z", type=float, metavar="M",
                       help="height of the road in the vehicle frame (default -1.7, what the BEV grid assumes; "
                            "0 for a base_link on the road)")
    lidar.add_argument("--lidar-max-age", type=float, metavar="S",
                       help="a sweep serves a frame stamped within this many seconds of it (default 0.15)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a rosbag2 (sqlite3 or MCAP) or ROS 1 bag through the driving stack",
                       description="Replays BAG through the same logic as the nodes, in bag time, and says what "
                                   "happened: region switches, swaps, failed loads, frames without lidar and why.")
    p.add_argument("bag", help="rosbag2 directory, .mcap/.db3 file, or ROS 1 .bag")
    p.add_argument("--out", help="output directory (default: replay_<bag name>): bag/ and report/ go there")
    topics = p.add_argument_group("topics (default: the usual name if the bag has it, else the bag's only topic "
                                  "of the type; \"\" ignores an input)")
    topics.add_argument("--camera-topic", help="sensor_msgs/Image or CompressedImage (default /camera/image)")
    topics.add_argument("--lidar-topic", help="sensor_msgs/PointCloud2 (default /lidar/points)")
    topics.add_argument("--gnss-topic", help="sensor_msgs/NavSatFix (default /gnss/fix)")
    topics.add_argument("--odom-topic", help="nav_msgs/Odometry (default /odom)")
    topics.add_argument("--speed-topic", help="std_msgs/Float32 speed, e.g. CARLA's speedometer (default: the only "
                                              "Float32 topic named *speed*)")
    topics.add_argument("--twist-topic", help="geometry_msgs/TwistStamped in the vehicle frame, a vehicle interface's "
                                              "twist (default /vehicle/twist, else the only TwistStamped topic named "
                                              "*twist*); read when the bag has no odometry or speed")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="output bag storage")
    p.add_argument("--no-report", action="store_true", help="no HTML report (the summary is still printed)")
    p.add_argument("--loop", type=number(int, 1), default=1, metavar="N",
                   help="replay N times; the clock jumps back at each restart as with ros2 bag play --loop")
    add_replay_options(p)
    p.set_defaults(func=_replay)


def run_replay(args: argparse.Namespace, bag: Path, out_dir: Path, topics: dict[str, str | None]):
    from regionadapt_ros.commands.geofence import resolver_overrides
    from regionadapt_ros.replay import ReplayConfig, ReplayRunner

    resolver = resolver_overrides(args)  # --accept-unknown-status included
    driving = {}
    if getattr(args, "lidar_extrinsic", None):
        driving["lidar_extrinsic"] = tuple(args.lidar_extrinsic)
    if getattr(args, "vehicle_frame", None):
        driving["frame_id"] = args.vehicle_frame
    vehicle = {name: value for name, value in (("wheelbase", getattr(args, "wheelbase", None)),
                                               ("max_steering_angle", getattr(args, "max_steering_angle", None)))
               if value is not None}
    if vehicle:
        from regionadapt_ros.core.control import VehicleLimits

        driving["limits"] = VehicleLimits.from_dict(vehicle, "vehicle options")
    if getattr(args, "ground_z", None) is not None:
        driving["ground_z_m"] = args.ground_z
    if getattr(args, "lidar_max_age", None) is not None:
        driving["lidar_max_age_s"] = args.lidar_max_age
    cfg = ReplayConfig(
        regions_file=Path(args.regions_config), geofence_file=Path(args.geofences),
        bundle_dir=Path(args.bundle_dir) if args.bundle_dir else None, backend=args.backend,
        command_type=args.command_type, out_bag=out_dir / "bag",
        report_dir=None if getattr(args, "no_report", False) else out_dir / "report",
        storage=getattr(args, "storage", "mcap"), rate=args.rate, loops=getattr(args, "loop", 1),
        progress=not args.no_progress, emergency_brake=not getattr(args, "no_emergency_brake", False),
        resolver=resolver, repair=getattr(args, "repair", False), driving=driving, **topics,
    )
    return ReplayRunner(cfg).run(bag)


def _t(seconds: float) -> str:
    return f"t={seconds:.1f} s"


def print_summary(summary) -> None:
    """What happened, for people: times since the bag's start, rounded numbers, only what there is."""
    from regionadapt_ros.core.safe_read import printable_text

    s = summary
    print(f"bag: {s.bag} ({s.duration_s:.1f} s)")
    # topic names and notes quote the bag's own text: escaped (a newline or an ANSI escape in a topic name)
    print(printable_text("topics: " + ", ".join(f"{role} {topic}" for role, topic in s.topics.items() if topic)))
    for note in s.notes:
        print(printable_text(f"  {note}"))
    print(f"frames: {s.frames} ({s.frames_missed} missed), commands: {s.commands} ({s.stop_commands} stop)")
    if s.camera_only_frames:
        print(f"frames without lidar: {s.camera_only_frames} (camera-only, speed capped):")
        for reason, n in sorted(s.camera_only_reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {n} × {reason}")
        for example in [e for e in s.camera_only_examples if e["why"] not in s.camera_only_reasons][:6]:
            print(f"    e.g. {_t(example['t'])}: {example['why']}")
    for frame, how in sorted(s.lidar_frames.items()):
        if how.startswith("unknown"):
            print(f"lidar frame {frame!r}: no transform to the vehicle frame, clouds used as they are (give it on "
                  "/tf_static or with --lidar-extrinsic, or name the vehicle frame with --vehicle-frame)")
        elif how != "vehicle frame":
            print(f"lidar frame {frame!r}: into the vehicle frame with {how}")
    if s.gnss_fixes == 0:
        print("region switches: none (no GNSS in this bag: the default region served throughout)")
    elif s.region_switches:
        print("region switches:")
        for sw in s.region_switches:
            served = "" if sw["frames_served"] else " (no frame served in it)"
            print(f"  {_t(sw['t'])}: {sw['from']} → {sw['to']}{served}")
    else:
        print(f"region switches: none ({s.gnss_fixes} GNSS fixes)")
    path = [sw["to"] for sw in s.region_switches]
    start = s.region_switches[0]["from"] if s.region_switches else (s.regions[0] if s.regions else None)
    crossed = [r for r in [start, *path] if r]
    print(f"regions crossed: {' → '.join(crossed) or 'none'}; swaps: {s.swaps}")
    if s.region_changes:
        print(f"region changes prefetched (weights staged by a next_region hint before the crossing): "
              f"{s.prefetched_changes} of {s.region_changes}")
    unread = s.warnings.get("messages_unread", 0)
    if unread:
        print(f"warning: {unread} messages the bag's storage counts could not be read (a damaged chunk?); "
              "`regionadapt bag recover FILE.mcap --out COPY.mcap` copies every record that can be read")
    held = s.warnings.get("gnss_unknown_status_held", 0)
    if held:
        print(f"warning: {held} GNSS fixes had status -2 (STATUS_UNKNOWN: the driver does not set it) and were not "
              "used for the region; pass --accept-unknown-status if the driver's positions are good")
    if s.failed_load_events:
        print(f"failed loads: {s.failed_loads}")
        for f in s.failed_load_events:
            print(f"  {_t(f['t'])}: {f['region']}: {f['reason']}")
    if s.latency_ms_p50 == s.latency_ms_p50:  # not NaN: some frame ran
        print(f"latency per frame: p50 {s.latency_ms_p50:.2f} ms, p99 {s.latency_ms_p99:.2f} ms; "
              f"replay speed {s.speed_vs_real_time:.1f}x real time")
    ttc = "none" if s.min_ttc_s is None else f"{s.min_ttc_s:.2f} s"
    print(f"collision risk: {s.risk_warn_frames} frames at warn, {s.emergency_brakes} emergency-brake overrides "
          f"({s.emergency_brake_frames} frames, {s.suppressed_emergency_brakes} recorded with the guard off); "
          f"lowest TTC {ttc}")
    if s.out_bag:
        print(f"output bag: {s.out_bag}")
    if s.report:
        print(f"report: {s.report}")


def write_summary(path: str | None, summary) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary.as_dict(), indent=2, default=str) + "\n")


def _replay(args: argparse.Namespace) -> int:
    from regionadapt_ros.commands.output_paths import check_file_output, check_output_dir
    from regionadapt_ros.core.errors import DataError

    bag = Path(args.bag)
    name = bag.name
    for suffix in (".mcap", ".db3", ".bag"):
        name = name.removesuffix(suffix)
    out_dir = Path(args.out) if args.out else Path(f"replay_{name}")
    check_output_dir("--out", out_dir, inputs=[bag])
    if (out_dir / "bag").exists():
        raise DataError(out_dir / "bag", "output bag already exists; choose another --out")
    if not args.no_report:
        check_output_dir("--out", out_dir / "report")  # a file there would fail the run only at its end
    check_file_output("--json", args.summary_json, protected=[bag, out_dir / "bag", out_dir / "report",
                                                              args.regions_config, args.geofences, args.bundle_dir])
    topics = {"camera_topic": args.camera_topic, "lidar_topic": args.lidar_topic, "gnss_topic": args.gnss_topic,
              "odom_topic": args.odom_topic, "speed_topic": args.speed_topic, "twist_topic": args.twist_topic}
    summary = run_replay(args, bag, out_dir, topics)
    print_summary(summary)
    write_summary(args.summary_json, summary)
    return 0
