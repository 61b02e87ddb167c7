"""``regionadapt infer BUNDLE INPUT...``: a bundle (or base + delta) on image files or folders → every output as
CSV and JSON, plus each image with its outputs drawn on it (file_inference.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from regionadapt_ros.commands.argtypes import number
    from regionadapt_ros.core.msgconv.vehicle import MAX_PLAUSIBLE_SPEED_MPS

    p = sub.add_parser("infer", help="run a bundle on image files or folders (optional lidar per image)",
                       description="Runs the bundle's perception and decision models on every image (folders are "
                                   "searched recursively), as the vehicle would serve them; writes outputs.csv, "
                                   "outputs.json and annotated/ images into --out.")
    p.add_argument("bundle", type=Path, help="bundle directory (a delta bundle needs --base)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files (.png/.jpg) or folders")
    p.add_argument("--base", type=Path, metavar="BASE_BUNDLE", help="the base bundle a delta bundle resolves on")
    p.add_argument("--key", action="append", default=[], type=Path, metavar="PUB",
                   help="trusted public key PEM (repeatable): the bundle and its base must be signed by one of them, "
                        "as on a vehicle with trusted keys")
    p.add_argument("--out", type=Path, help="output directory (default: infer_<bundle name>)")
    p.add_argument("--lidar", type=Path, metavar="DIR",
                   help="sweeps named after the images: <name>.bin (KITTI float32 x,y,z,intensity) or .npy (N,3|4); "
                        "an image without one runs camera-only")
    p.add_argument("--bin-fields", type=number(int, 4, 64), default=4, metavar="N",
                   help="float32 values per .bin point (4: KITTI; 5: nuScenes .pcd.bin)")
    p.add_argument("--lidar-extrinsic", type=float, nargs=6, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                   help="the lidar's pose in the vehicle frame [m, rad] (nuScenes LIDAR_TOP: 0.94 0 1.84 0 0 "
                        "-1.5708 with --ground-z 0)")
    p.add_argument("--ground-z", type=float, default=-1.7, metavar="M",
                   help="height of the road in the vehicle frame (default -1.7, what the BEV grid assumes)")
    p.add_argument("--speed", type=number(float, 0.0, MAX_PLAUSIBLE_SPEED_MPS), default=0.0, metavar="MPS",
                   help="ego speed input of the decision model [m/s]")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "auto", "tensorrt"))
    p.add_argument("--no-annotate", action="store_true", help="do not write annotated images")
    p.add_argument("--json", dest="json_out", nargs="?", const="-", metavar="PATH",
                   help="the outputs as JSON on stdout instead of the table (or also into PATH)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_infer)


def _infer(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.workflow import read_serving_bundle, serving_weights_of
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.core.frames import parse_extrinsic
    from regionadapt_ros.file_inference import collect_inputs, run_files, write_outputs

    loaded = read_serving_bundle(args.bundle, args.key)  # read once: its delta-ness, then its weights
    base = None
    if loaded.is_delta:
        if args.base is None:
            raise ConfigError("--base", f"{args.bundle} is a delta bundle ({loaded.bundle_id}); give the base bundle "
                                        "it was fine-tuned from with --base")
        base = serving_weights_of(args.base, trusted_keys=args.key)
    weights = {k: dict(v) for k, v in loaded.resolve(base).items()}
    out = args.out or Path(f"infer_{args.bundle.resolve().name}")
    items, skipped = collect_inputs(args.inputs, args.lidar, exclude=[out])  # its annotated images are no input
    _check_outputs(args, out)  # before any image runs: a long run must not end by refusing, or overwrite inputs
    run = run_files(weights, items, args.backend, args.speed, out, not args.no_annotate,
                    parse_extrinsic(args.lidar_extrinsic, "--lidar-extrinsic"), args.ground_z, args.bin_fields,
                    progress=not args.no_progress)
    run.skipped = skipped
    csv_path, json_path = write_outputs(run, out)
    if args.json_out == "-":
        print(json.dumps({"bundle": loaded.bundle_id, "backend": run.backend, "skipped": run.skipped,
                          "outputs": run.rows}, indent=2))
        return 0
    print(f"{loaded.bundle_id} on {len(run.rows)} image(s), {run.backend}")
    width = max(len("image"), *(len(_shown(r["image"])) for r in run.rows))
    print(f"{'image':<{width}}  {'light':>12s} {'lane m':>7s} {'head rad':>8s} {'obst m':>6s} {'free':>5s} "
          f"{'steer':>7s} {'accel':>6s}  lidar")
    for r in run.rows:
        light = f"{r['tl_state']} {r['tl_confidence']:.0%}"
        lidar = f"{r['lidar_points']} pts" if r["lidar"] else "none"
        print(f"{_shown(r['image']):<{width}}  {light:>12s} {r['lane_offset']:+7.2f} {r['heading_error']:+8.3f} "
              f"{r['obstacle_distance']:6.1f} {r['free_space']:5.0%} {r['steering']:+7.3f} {r['accel']:+6.2f}  "
              f"{lidar}")
    if skipped.get("not_images"):
        print(f"{skipped['not_images']} file(s) in the folders are not images and were left out")
    if skipped.get("not_regular"):
        print(f"{skipped['not_regular']} entr(ies) named like images are not regular files (FIFOs, devices, links "
              "that do not resolve) and were left out unopened")
    if skipped.get("unreadable_folders"):
        print(f"{skipped['unreadable_folders']} folder(s) could not be listed (permissions?) and were left out")
    if skipped.get("no_sweep"):
        print(f"{skipped['no_sweep']} image(s) have no sweep in {_shown(str(args.lidar))} and ran camera-only")
    print(f"outputs: {csv_path}, {json_path}" + ("" if args.no_annotate else f"; annotated: {out / 'annotated'}"))
    if args.json_out:
        Path(args.json_out).write_text(json_path.read_text())
    return 0


def _shown(path: str) -> str:
    """A file's name for the terminal: bytes that are not UTF-8 and characters that are not printable (a newline
    would forge a row of the table) are shown escaped."""
    from regionadapt_ros.core.safe_read import printable_name

    return printable_name(Path(path).name)


def _check_outputs(args: argparse.Namespace, out: Path) -> None:
    """``--out`` and ``--json PATH`` can take the outputs: ``--out`` not inside an input folder or the bundle
    (the annotated images would be inputs of the next run), no input inside what the run replaces, and a
    ``--json`` file that is none of the inputs (``--json`` takes an optional value: ``--json a.png b.png``
    reads a.png as the file)."""
    from regionadapt_ros.commands.output_paths import check_file_output, check_output_dir, resolved_path
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.file_inference import IMAGE_SUFFIXES, check_annotated_replaceable

    bundles = [args.bundle, *([args.base] if args.base else [])]
    sources = [*args.inputs, *([args.lidar] if args.lidar else []), *bundles]
    check_output_dir("--out", out, bundles)  # inside an input folder is fine: the search passes over it
    written = [out / "annotated", out / "outputs.csv", out / "outputs.json"]
    resolved = [resolved_path(p) for p in written]
    for source in sources:
        real = resolved_path(source)
        inside = next((w for w, r in zip(written, resolved, strict=True) if real == r or r in real.parents), None)
        if inside is not None:
            raise ConfigError("--out", f"{out}: the run replaces {inside}, and the input {source} is there")
    check_annotated_replaceable(out / "annotated")
    if args.json_out not in (None, "-"):
        target = Path(args.json_out)
        if target.suffix.lower() in IMAGE_SUFFIXES:
            raise ConfigError("--json", f"{target} names an image: give a .json file, or put --json after the "
                                        "inputs")
        # a .json beside the images is no input (only images are read); the images, the bundles and what the
        # run writes are protected
        files = [p for p in (*args.inputs, *([args.lidar] if args.lidar else [])) if not Path(p).is_dir()]
        check_file_output("--json", target, [*files, *bundles, out / "annotated"])
