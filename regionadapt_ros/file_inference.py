"""A bundle (or a base + delta) run on image files, with an optional lidar sweep per image: every output of
both networks per image, and the image with the outputs drawn on it.

Frames go through what serves them on the vehicle: the image is decoded as a compressed camera frame is
(``core.msgconv``) and preprocessed by ``core.preprocess.image_tensor``; a sweep is read as ``data import
frames`` reads one (``.npy`` (N, 3|4), or ``.bin`` float32 records as KITTI's, or nuScenes' with
``bin_fields=5``), brought into the vehicle frame (``core.frames``: an extrinsic and the road height) and
gridded by ``core.preprocess.bev_grid``; the models run on one of the serving backends. Without a sweep an
image runs camera-only, as on the vehicle when the lidar is down (an all-zero grid).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.contracts import BEV, TL_CLASSES
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.core.frames import CloudFrames, RigidTransform

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LIDAR_SUFFIXES = (".bin", ".npy")
# In an annotated/ folder a run writes: the next run may replace the folder as a whole (any other is refused).
ANNOTATED_MARKER = ".regionadapt-infer"
COLUMNS = ("image", "lidar", "lidar_points", "tl_state", "tl_confidence", *(f"tl_p_{c}" for c in TL_CLASSES),
           "lane_offset", "heading_error", "curvature", "obstacle_distance", "free_space", "steering", "accel")


@dataclass
class InferenceItem:
    image: Path
    name: str                 # the image's path relative to the input it was found in (names the outputs)
    lidar: Path | None = None


@dataclass
class InferenceRun:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)   # why inputs were left out → count
    backend: str = ""


def collect_inputs(inputs: Sequence[str | Path], lidar_dir: str | Path | None, exclude: Sequence[Path] = ()
                   ) -> tuple[list[InferenceItem], dict[str, int]]:
    """Image files and the images under folders (recursively, sorted), each with its sweep from ``lidar_dir``
    (``<relative path>.bin|.npy`` or ``<stem>.bin|.npy``). DataError for a missing input or ambiguous sweep.
    ``exclude``: folders never searched (the run's output folder, whose annotated images are not inputs)."""
    exclude = [Path(e).absolute() for e in exclude]
    items: list[InferenceItem] = []
    # no_sweep: images that ran camera-only because --lidar has no sweep for them
    skipped = {"not_images": 0, "not_regular": 0, "unreadable_folders": 0, "no_sweep": 0}
    for raw in inputs:
        path = Path(raw)
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(path, f"not an image ({'/'.join(IMAGE_SUFFIXES)})")
            items.append(InferenceItem(path, path.name))
        elif path.is_dir():
            for p, state in _walk(path, skipped, exclude):
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped["not_images"] += int(state == "file")
                elif state == "file":
                    items.append(InferenceItem(p, str(p.relative_to(path))))
                else:  # a FIFO, a device, a broken or looping link named like an image: counted, never opened
                    skipped["not_regular"] += 1
        else:
            state, what = safe_read.file_state(path)
            raise DataError(path, "no such image file or folder" if state == "missing"
                            else f"is {what}, not an image file or folder")
    if not items:
        raise DataError(", ".join(map(str, inputs)), f"no images ({'/'.join(IMAGE_SUFFIXES)}) found")
    uses = Counter(i.name for i in items)  # one pass: a folder may hold tens of thousands of images
    dup = next((name for name, n in uses.items() if n > 1), None)
    if dup is not None:
        raise DataError(dup, "two inputs have the same name; give folders or files with distinct names")
    if lidar_dir is not None:
        lidar_root = Path(lidar_dir)
        if not lidar_root.is_dir():
            state, what = safe_read.file_state(lidar_root)
            raise DataError(lidar_root, "lidar folder does not exist" if state == "missing"
                            else f"is {what}, not a folder of sweeps")
        served: dict[Path, str] = {}  # sweep → the image it serves
        for item in items:
            rel = Path(item.name).with_suffix("")
            # The sweep at the image's own relative path wins; only without one is a sweep of the bare name
            # looked for (a lidar folder that mirrors the image folder has both day/a.bin and a.bin).
            present = _sweeps_at(lidar_root, rel, item.name)
            if not present and rel.parent != Path("."):
                present = _sweeps_at(lidar_root, Path(rel.name), item.name)
            if len(present) > 1:
                raise DataError(lidar_root, f"both {_relative(present[0], lidar_root)} and "
                                            f"{_relative(present[1], lidar_root)} match {item.name}; keep one")
            item.lidar = present[0] if present else None
            if item.lidar is None:
                skipped["no_sweep"] += 1
            if item.lidar is not None:
                if item.lidar in served:
                    raise DataError(item.lidar, f"is the sweep of both {served[item.lidar]} and {item.name} (sweeps "
                                                "are matched by name without the suffix): give each image a distinct "
                                                "name")
                served[item.lidar] = item.name
    return items, skipped


def _sweeps_at(lidar_root: Path, rel: Path, image: str) -> list[Path]:
    """The sweep files ``lidar_root/rel.<suffix>`` there are (the suffix in lower or upper case, as images'
    suffixes are matched); DataError for an entry there that is not a regular file."""
    present: dict[tuple[int, int], Path] = {}  # by (device, inode): on a case-insensitive file system (exFAT,
    # vfat, macOS) a.bin and a.BIN are one file, not two sweeps
    for suffix in dict.fromkeys(s for lower in LIDAR_SUFFIXES for s in (lower, lower.upper())):
        candidate = lidar_root / f"{rel}{suffix}"
        state, what = safe_read.file_state(candidate)
        if state == "other":  # the sweep was meant: running the image camera-only would hide that
            raise DataError(candidate, f"is {what}, not a regular file (the sweep of {image})")
        if state == "file":
            info = candidate.stat()
            present.setdefault((info.st_dev, info.st_ino), candidate)
    return list(present.values())


def _relative(path: Path, root: Path) -> str:
    return safe_read.printable_name(str(path.relative_to(root)))


def _walk(folder: Path, skipped: dict[str, int], exclude: Sequence[Path] = ()) -> list[tuple[Path, str]]:
    """Every entry under ``folder`` that is not a directory (hidden ones left out), sorted, with its
    ``safe_read.file_state``; links to folders are not followed (as ``Path.rglob``). A subfolder that cannot
    be listed is counted in ``skipped["unreadable_folders"]``, not passed over in silence. Folders in
    ``exclude`` (absolute; the run's own --out) are not entered."""
    def unreadable(_exc: OSError) -> None:
        skipped["unreadable_folders"] += 1

    found = []
    # os.walk lists FIFOs, devices and links that do not resolve among the files, links to folders among dirs
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".") and Path(root, d).absolute() not in exclude]
        found += [(p, safe_read.file_state(p)[0]) for p in (Path(root, n) for n in files if not n.startswith("."))]
    return sorted(found)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max()
    e = np.exp(z)
    return e / e.sum()


def run_files(weights: dict[str, dict[str, np.ndarray]], items: Sequence[InferenceItem], backend_name: str = "torch",
              speed: float = 0.0, out_dir: Path | None = None, annotate: bool = True,
              extrinsic: RigidTransform | None = None, ground_z_m: float = BEV.z_ground, bin_fields: int = 4,
              progress: bool = True) -> InferenceRun:
    """Run the pair on every item; rows in COLUMNS order (NaN lidar columns without a sweep). With ``out_dir``
    and ``annotate``, write ``out_dir/annotated/<name>.png``."""
    from tqdm import tqdm

    from regionadapt_ros.adaptation.importers.common import decode_image_file, read_lidar_file
    from regionadapt_ros.core.msgconv import MAX_PLAUSIBLE_SPEED_MPS
    from regionadapt_ros.core.preprocess import IntensityScale, bev_grid, image_tensor
    from regionadapt_ros.inference.selection import select_backend

    if not (math.isfinite(speed) and 0.0 <= speed <= MAX_PLAUSIBLE_SPEED_MPS):
        raise DataError("--speed", f"must be a speed in [0, {MAX_PLAUSIBLE_SPEED_MPS:g}] m/s, got {speed}")
    backend, why = select_backend(backend_name)
    runners = {m: backend.prepare(m, w) for m, w in weights.items()}
    frames = CloudFrames(extrinsic=extrinsic, ground_z_m=ground_z_m)
    run = InferenceRun(backend=f"{backend.describe()} ({why})")
    empty_bev = np.zeros((1, BEV.channels, BEV.rows, BEV.cols), np.float32)
    intensity = IntensityScale()  # the folder's sweeps come from one sensor: one scale for all of them
    targets = annotated_names(items)
    # Annotated images go to a staging folder that replaces annotated/ only when every image was served: a
    # failed run leaves the previous run's outputs as they were, not a mix of the two.
    staging = None
    if out_dir is not None:
        check_annotated_replaceable(out_dir / "annotated")
    if out_dir is not None and annotate:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".annotated.partial-", dir=out_dir))
        (staging / ANNOTATED_MARKER).touch()
    try:
        for item, target_name in tqdm(list(zip(items, targets, strict=True)), desc="infer", disable=not progress,
                                      unit="image", leave=False):
            rgb = decode_image_file(item.image)
            bev, n_points = empty_bev, None
            if item.lidar is not None:
                points = read_lidar_file(item.lidar, bin_fields=bin_fields)
                finite = np.isfinite(points[:, :3]).all(axis=1)
                if len(points) and not finite.any():
                    # as on the vehicle (msgconv.lidar_sweep_points): an empty grid would read as a clear road
                    raise DataError(item.lidar, f"none of its {len(points)} points has a finite x, y, z "
                                                "(as float32)")
                points, _ = frames.to_vehicle(points[finite], "" if extrinsic is None else "sensor")
                bev, n_points = bev_grid(points, intensity=intensity)[None], int(len(points))
            p = runners["perception"].run({"image": image_tensor(rgb), "bev": bev})
            d = runners["decision"].run({"features": p["features"], "speed": np.array([[speed]], np.float32)})
            probs = softmax(p["tl_logits"][0].astype(np.float64))
            k = int(np.argmax(probs))
            lane, obstacle, control = p["lane"][0], p["obstacle"][0], d["control"][0]
            row: dict[str, Any] = {
                "image": str(item.image), "lidar": str(item.lidar) if item.lidar else "",
                "lidar_points": n_points if n_points is not None else "", "tl_state": TL_CLASSES[k],
                "tl_confidence": float(probs[k]), **{f"tl_p_{c}": float(probs[i]) for i, c in enumerate(TL_CLASSES)},
                "lane_offset": float(lane[0]), "heading_error": float(lane[1]), "curvature": float(lane[2]),
                "obstacle_distance": float(obstacle[0]), "free_space": float(obstacle[1]),
                "steering": float(control[0]), "accel": float(control[1]),
            }
            run.rows.append(row)
            if staging is not None:
                write_annotated(rgb, row, staging / target_name)
        if out_dir is not None:
            final = out_dir / "annotated"
            check_annotated_replaceable(final)  # again: it may have changed during the run
            if staging is not None:
                if final.is_symlink():
                    final.unlink()  # the link, never what it points at
                elif final.exists():
                    shutil.rmtree(final)  # an earlier run's (it has the marker) or empty
                staging.rename(final)
                staging = None
            elif not final.is_symlink() and (final / ANNOTATED_MARKER).is_file():
                shutil.rmtree(final)  # an earlier run's images would sit beside a table that is not theirs
    finally:
        for runner in runners.values():
            runner.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if frames.extrinsic is not None:
        frames.used.setdefault("sensor", "lidar_extrinsic")
    return run


def check_annotated_replaceable(folder: Path) -> None:
    """``folder`` (``--out``'s annotated/) may be replaced by a run: absent, an empty folder, a link (itself
    removed, never its target) or an earlier run's folder (it holds ``ANNOTATED_MARKER``); DataError for anything
    else, which is someone's files."""
    if folder.is_symlink() or not folder.exists():
        return
    if not folder.is_dir():
        raise DataError(folder, "exists and is not the annotated/ folder of an earlier run; move it or give "
                                "another --out")
    if (folder / ANNOTATED_MARKER).is_file() or not any(folder.iterdir()):
        return
    raise DataError(folder, "holds files that no earlier `regionadapt infer` run wrote (the run replaces "
                            "annotated/ as a whole); move them or give another --out")


def annotated_names(items: Sequence[InferenceItem]) -> list[str]:
    """The annotated image of each item: its name as a .png, or, where two items would share that (``a.png``
    and ``a.jpg``), its whole name with .png added (``a.jpg.png``); a name still taken (``a.png.png`` is also an
    input) gets ``~2``, ``~3``... before .png, and a file name past the file system's 255 bytes is cut and given
    a digest of the whole, so no image overwrites another and none fails to be written."""
    plain = [str(Path(item.name).with_suffix(".png")) for item in items]
    uses = Counter(plain)  # one pass: a folder may hold tens of thousands of images
    shared = {name for name, n in uses.items() if n > 1}
    wanted = [_short_enough(f"{item.name}.png" if name in shared else name)
              for item, name in zip(items, plain, strict=True)]
    pending = set(wanted)
    given: set[str] = set()
    names: list[str] = []
    for name in wanted:
        if name in given:  # an earlier item has it: the next free "~k"
            k = 2
            while (candidate := _short_enough(f"{name[:-len('.png')]}~{k}.png")) in given or candidate in pending:
                k += 1
            name = candidate
        given.add(name)
        names.append(name)
    return names


def _short_enough(name: str) -> str:
    """``name`` (a relative path ending in .png) with a last component of at most 255 bytes: one too long keeps
    its first 180 bytes and a digest of the whole name."""
    import hashlib

    path = Path(name)
    raw = os.fsencode(path.name)
    if len(raw) <= 255:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return str(path.with_name(f"{os.fsdecode(raw[:180])}-{digest}.png"))


def write_outputs(run: InferenceRun, out_dir: Path) -> tuple[Path, Path]:
    """``outputs.csv`` (COLUMNS) and ``outputs.json`` ({"backend", "skipped", "outputs": rows})."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "outputs.csv", out_dir / "outputs.json"
    # surrogateescape: a file name that is not UTF-8 is written back as the bytes it was read as
    with csv_path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in run.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    json_path.write_text(json.dumps({"backend": run.backend, "skipped": run.skipped, "outputs": run.rows},
                                    indent=2) + "\n")
    return csv_path, json_path


_TL_BGR = {"none": (200, 200, 200), "red": (40, 40, 230), "yellow": (30, 200, 240), "green": (60, 200, 40)}


def write_annotated(rgb: np.ndarray, row: dict[str, Any], path: Path) -> Path:
    """The image with the outputs drawn on it: a panel of values, the traffic-light state as a coloured lamp,
    the lane offset as a marker on a ruler at the bottom and the steering as an arrow."""
    import cv2

    img = np.ascontiguousarray(rgb[:, :, ::-1])
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 700.0)
    thick = max(1, int(round(2 * scale)))
    lines = [
        f"light {row['tl_state']} ({row['tl_confidence']:.0%})",
        f"lane offset {row['lane_offset']:+.2f} m  heading {row['heading_error']:+.3f} rad",
        f"curvature {row['curvature']:+.4f} 1/m",
        f"obstacle {row['obstacle_distance']:.1f} m  free {row['free_space']:.0%}",
        f"steering {row['steering']:+.3f} rad  accel {row['accel']:+.2f} m/s2",
        "lidar: " + (f"{row['lidar_points']} points" if row["lidar"] else "none (camera-only)"),
    ]
    line_h = int(26 * scale)
    panel_w = int(max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)[0][0] for t in lines)
                  + 50 * scale)
    overlay = img.copy()
    cv2.rectangle(overlay, (0, 0), (min(w - 1, panel_w), line_h * len(lines) + int(12 * scale)), (0, 0, 0), -1)
    img = cv2.addWeighted(overlay, 0.55, img, 0.45, 0)
    for i, text in enumerate(lines):
        y = int((i + 1) * line_h)
        cv2.putText(img, text, (int(36 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    cv2.circle(img, (int(16 * scale), int(line_h * 0.7)), int(9 * scale), _TL_BGR[row["tl_state"]], -1)
    # lane ruler: ±2 m across the bottom centre; the marker shows where the lane centre is seen
    cx, base_y = w // 2, h - int(20 * scale)
    half = int(w * 0.3)
    cv2.line(img, (cx - half, base_y), (cx + half, base_y), (255, 255, 255), thick)
    offset_px = int(np.clip(-row["lane_offset"] / 2.0, -1, 1) * half)  # + offset = vehicle left of the centre
    cv2.circle(img, (cx + offset_px, base_y), int(7 * scale), (0, 220, 255), -1)
    # steering arrow (+ = left)
    length = int(h * 0.25)
    angle = float(np.clip(row["steering"], -0.5, 0.5)) * 2.0
    tip = (int(cx - length * math.sin(angle)), int(base_y - length * math.cos(angle)))
    cv2.arrowedLine(img, (cx, base_y), tip, (255, 120, 0), thick + 1, tipLength=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encoded here and written by Python: cv2.imwrite crashes the process (SIGSEGV) on a path with a name that is
    # not UTF-8 (a lone surrogate once decoded).
    ok, encoded = cv2.imencode(".png", img)
    if not ok:
        raise DataError(path, "cannot encode the annotated image")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise DataError(path, f"cannot write the annotated image: {exc.strerror or exc}") from None
    return path
