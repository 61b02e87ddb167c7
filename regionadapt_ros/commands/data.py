"""``regionadapt data``: generate synthetic regional datasets, import recorded data, inspect datasets.

    regionadapt data generate --region R --n N --seed S --out DIR [--workers 2]
    regionadapt data import rosbag BAG --out DIR --region R [--camera-topic T] [--lidar-topic T | --no-lidar]
        [--speed-topic T] [--command-topic T] [--command-source command|odometry] [--max-dt S]
        [--max-lidar-age S] [--time-source header|log] [--wheelbase M] [--max-steering-angle RAD] [--every N]
        [--split-block S] [--seed S]
    regionadapt data import frames DIR --out DIR --region R [--seed S]
    regionadapt data import image-folder DIR --out DIR --region R [--seed S]
    regionadapt data info DIR [--json]

Every command writes one dataset directory (adaptation/dataset.py) that ``regionadapt train-base`` and
``regionadapt finetune`` read. The import formats are documented in docs/data_formats.md. A bad input is
refused with the file and the problem before anything is written (exit status 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from regionadapt_ros.commands.argtypes import number, seed_arg


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data", help="generate, import and inspect regional datasets",
        description="Regional datasets: synthetic generation, import of rosbag2 drives, labelled frames and "
                    "traffic-light image folders (docs/data_formats.md), and a summary of a dataset.")
    parser.set_defaults(func=lambda args: _print_help(parser))
    data_sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    generate = data_sub.add_parser("generate", help="render a synthetic dataset of one region")
    generate.add_argument("--region", required=True, help="synthetic region (urban_day, urban_night, highway, "
                                                          "mountain, left_hand)")
    generate.add_argument("--n", type=int, required=True, help="number of samples")
    generate.add_argument("--seed", type=seed_arg, default=0, help="generator seed, also the split seed (default 0)")
    generate.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset directory to write")
    generate.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    _add_progress(generate)
    generate.set_defaults(func=_generate)

    importer = data_sub.add_parser("import", help="import recorded data as a dataset",
                                   description="Import recorded data (docs/data_formats.md).")
    importer.set_defaults(func=lambda args: _print_help(importer))
    kinds = importer.add_subparsers(dest="import_kind", metavar="KIND")

    bag = kinds.add_parser("rosbag", help="a rosbag2 drive → imitation-learning samples (steering, accel, speed)",
                           description="Every camera frame with a lidar sweep, speed and command close enough in "
                                       "time becomes a sample; the others are skipped and counted.")
    bag.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    _add_output(bag)
    topics = bag.add_argument_group("topics (default: the bag's only topic of a fitting type)")
    topics.add_argument("--camera-topic", help="sensor_msgs/Image or sensor_msgs/CompressedImage")
    topics.add_argument("--lidar-topic", help="sensor_msgs/PointCloud2 (optional)")
    topics.add_argument("--no-lidar", action="store_true", help="ignore lidar: BEV grids are zeros")
    topics.add_argument("--lidar-extrinsic", type=float, nargs=6, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                        help="the lidar's pose in the vehicle frame [m, rad], for clouds whose frame the bag's "
                             "/tf_static does not connect to the vehicle frame (as the driving node's parameter)")
    topics.add_argument("--ground-z", type=float, default=None, metavar="M",
                        help="height of the road in the vehicle frame (default -1.7, what the BEV grid assumes; 0 "
                             "for a REP 105 base_link on the road), as the driving node's ground_z_m")
    topics.add_argument("--vehicle-frame", default="base_link", metavar="FRAME",
                        help="the vehicle frame clouds are brought into (default base_link; the CARLA bridge's "
                             "is the role name, e.g. ego_vehicle)")
    topics.add_argument("--speed-topic", help="nav_msgs/Odometry, geometry_msgs/TwistStamped (vehicle frame) or "
                                              "std_msgs/Float32 [m/s]")
    topics.add_argument("--command-topic", help="ackermann_msgs/AckermannDriveStamped, "
                                                "carla_msgs/CarlaEgoVehicleControl or geometry_msgs/Twist")
    topics.add_argument("--command-source", choices=("command", "odometry"), default="command",
                        help="labels from the command topic (default) or derived from odometry")
    matching = bag.add_argument_group("matching")
    matching.add_argument("--max-dt", type=float, default=0.1, metavar="S",
                          help="largest speed/command time difference to the image stamp (default 0.1 s)")
    matching.add_argument("--max-lidar-age", type=float, default=0.1, metavar="S",
                          help="largest lidar sweep time difference to the image stamp (default 0.1 s)")
    matching.add_argument("--time-source", choices=("header", "log"), default="header",
                          help="match on header stamps (default) or on the recording times")
    matching.add_argument("--every", type=int, default=1, metavar="N", help="keep every N-th matched frame")
    vehicle = bag.add_argument_group("vehicle (commands derived from CARLA control, Twist or odometry)")
    vehicle.add_argument("--wheelbase", type=float, metavar="M", help="wheelbase in metres (default 2.7)")
    vehicle.add_argument("--max-steering-angle", type=float, metavar="RAD",
                         help="road-wheel angle of CARLA steer = ±1 (default 0.5 rad; 1.22 for a CARLA control "
                         "topic, CARLA's default vehicles); with --wheelbase it bounds "
                         "the turn a measured yaw rate may imply (tighter ones are refused as gyro faults)")
    vehicle.add_argument("--accel-window", type=float, default=0.5, metavar="S",
                         help="smoothing window of d(speed)/dt for --command-source odometry (default 0.5 s)")
    vehicle.add_argument("--min-steer-speed", type=float, default=1.0, metavar="MPS",
                         help="below this speed steering from yaw rate is not labelled (default 1 m/s)")
    bag.add_argument("--split-block", type=number(float, 0.001, 1e6), default=10.0, metavar="S",
                     help="the split keeps blocks of this many seconds together (default 10 s)")
    bag.add_argument("--seed", type=seed_arg, default=0, help="split seed (default 0)")
    _add_progress(bag)
    bag.set_defaults(func=_import_rosbag)

    frames = kinds.add_parser("frames", help="images/ + optional lidar/ + labels.csv or labels.jsonl",
                              description="A labelled-frames directory: any subset of the label names; what is "
                                          "not labelled is not trained.")
    frames.add_argument("dir", type=Path, help="labelled-frames directory")
    _add_output(frames)
    frames.add_argument("--seed", type=seed_arg, default=0, help="split seed when no split column is given (default 0)")
    _add_progress(frames)
    frames.set_defaults(func=_import_frames)

    folder = kinds.add_parser("image-folder", help="<class>/*.png|jpg by traffic-light state → tl_state only",
                              description="Sub-folders none, red, yellow, green hold the images of that state; "
                                          "inside train|training, val|validation, test|testing folders they give "
                                          "the split (a split not given is carved from train). Images may be "
                                          "symbolic links.")
    folder.add_argument("dir", type=Path, help="image folder")
    _add_output(folder)
    folder.add_argument("--seed", type=seed_arg, default=0, help="split seed without split folders (default 0)")
    _add_progress(folder)
    folder.set_defaults(func=_import_image_folder)

    info = data_sub.add_parser("info", help="sample count, labelled fraction per label, splits")
    info.add_argument("dir", type=Path, help="dataset directory")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=_info)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="dataset directory to write (replaced atomically if it exists)")
    parser.add_argument("--region", required=True, help="region id the dataset belongs to")


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ------------------------------------------------------------------------------------------------ handlers
def _generate(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.dataset import build_region_dataset
    from regionadapt_ros.adaptation.regions import REGIONS
    from regionadapt_ros.core.errors import ConfigError

    if args.region not in REGIONS:
        raise ConfigError("--region", f"{args.region!r} is not a synthetic region; one of {', '.join(REGIONS)}")
    if args.n < 1:
        raise ConfigError("--n", f"must be a positive number of samples, got {args.n}")
    if args.workers < 1:
        raise ConfigError("--workers", f"must be at least 1, got {args.workers}")
    ds = build_region_dataset(args.region, args.n, args.seed, args.out, workers=args.workers,
                              progress=not args.no_progress)
    print(f"{ds.n} synthetic samples of {ds.region} (seed {args.seed}) written to {ds.path}")
    _print_splits(ds)
    return 0


def _import_rosbag(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.dataset import check_dataset_output
    from regionadapt_ros.adaptation.importers.rosbag import RosbagImportConfig, import_rosbag, with_vehicle

    check_dataset_output(args.out)  # before a frame is read
    config = RosbagImportConfig(
        camera_topic=args.camera_topic, lidar_topic=args.lidar_topic, use_lidar=not args.no_lidar,
        speed_topic=args.speed_topic, command_topic=args.command_topic, command_source=args.command_source,
        max_dt_s=args.max_dt, max_lidar_age_s=args.max_lidar_age, time_source=args.time_source,
        accel_window_s=args.accel_window, min_steer_speed_mps=args.min_steer_speed, every=args.every,
        split_block_s=args.split_block, seed=args.seed, vehicle_frame=args.vehicle_frame,
        lidar_extrinsic=tuple(args.lidar_extrinsic) if args.lidar_extrinsic else None,
        **({"ground_z_m": args.ground_z} if args.ground_z is not None else {}),
    )
    config = with_vehicle(config, args.wheelbase, args.max_steering_angle)
    result = import_rosbag(args.bag, args.out, args.region, config, progress=not args.no_progress)
    topics = result.meta["topics"]
    print(f"imported {args.bag}: " + ", ".join(f"{role} {t['topic']}" for role, t in topics.items() if t))
    print(result.summary())
    for note in result.meta.get("bag_notes", []):
        print(f"  note: {note}")
    return 0


def _import_frames(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.dataset import check_dataset_output
    from regionadapt_ros.adaptation.importers import import_labelled_frames

    check_dataset_output(args.out)  # before a frame is read
    result = import_labelled_frames(args.dir, args.out, args.region, seed=args.seed, progress=not args.no_progress)
    print(result.summary())
    return 0


def _import_image_folder(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.dataset import RegionDataset, check_dataset_output
    from regionadapt_ros.adaptation.importers import import_image_folder
    from regionadapt_ros.core.contracts import TL_CLASSES

    check_dataset_output(args.out)  # before a frame is read
    result = import_image_folder(args.dir, args.out, args.region, seed=args.seed, progress=not args.no_progress)
    per_class = result.meta["counts"]["per_class"]
    print(result.summary())
    print("  per class: " + ", ".join(f"{k} {per_class.get(k, 0)}" for k in TL_CLASSES))
    ds = RegionDataset.open(result.path)
    print("  splits: " + ", ".join(f"{name} {len(ds.split(name))}" for name in ("train", "val", "test"))
          + f" ({result.meta['split']})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.dataset import RegionDataset

    summary = dataset_info(RegionDataset.open(args.dir))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(f"dataset   {summary['path']}")
    print(f"region    {summary['region']}  (source {summary['source']}, created {summary['created']})")
    lidar = {True: "yes", False: "no (BEV grids are zeros)", None: "not recorded"}[summary["has_lidar"]]
    print(f"samples   {summary['n']}   lidar: {lidar}")
    print("splits    " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    print(f"{'label':18s} {'labelled':>9s} {'fraction':>9s}  {'min':>9s} {'mean':>9s} {'max':>9s}")
    for name, entry in summary["labels"].items():
        if entry["labelled"]:
            stats = f"{entry['min']:9.3f} {entry['mean']:9.3f} {entry['max']:9.3f}"
        else:
            stats = f"{'-':>9s} {'-':>9s} {'-':>9s}"
        print(f"{name:18s} {entry['labelled']:9d} {entry['fraction']:9.1%}  {stats}")
    if summary["tl_classes"]:
        print("tl_state  " + ", ".join(f"{k} {v}" for k, v in summary["tl_classes"].items()))
    counts = summary.get("import_counts")
    if counts:
        print(f"import    {json.dumps(counts, sort_keys=True)}")
    return 0


def dataset_info(ds: Any) -> dict[str, Any]:
    """Summary of an opened RegionDataset: counts, splits, per label the labelled count and fraction (and
    min/mean/max of the labelled values), the traffic-light class histogram and the importer's counts."""
    import numpy as np

    from regionadapt_ros.core.contracts import LABELS, TL_CLASSES

    labels = np.asarray(ds.labels, dtype=np.float32)
    n = ds.n
    per_label: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(LABELS):
        column = labels[:, k]
        labelled = column[~np.isnan(column)]
        entry: dict[str, Any] = {"labelled": int(labelled.size), "fraction": labelled.size / n if n else 0.0}
        if labelled.size:
            entry.update(min=float(labelled.min()), mean=float(labelled.mean()), max=float(labelled.max()))
        per_label[name] = entry
    tl = labels[:, LABELS.index("tl_state")]
    tl = tl[~np.isnan(tl)].astype(np.int64)
    tl_classes = {name: int((tl == i).sum()) for i, name in enumerate(TL_CLASSES)} if tl.size else {}
    meta = ds.meta
    return {
        "path": str(ds.path), "region": ds.region, "source": meta.get("source"), "created": meta.get("created"),
        "n": n, "has_lidar": meta.get("has_lidar"),
        "splits": {name: int(len(ds.split(name))) for name in ("train", "val", "test")},
        "labels": per_label, "tl_classes": tl_classes, "import_counts": meta.get("counts"),
    }


def _print_splits(ds: Any) -> None:
    print("splits: " + ", ".join(f"{name} {len(ds.split(name))}" for name in ("train", "val", "test")))
