"""Import hand-labelled camera frames: a labelled-frames directory, or an image folder sorted by traffic-light
class. The formats are documented in docs/data_formats.md.

Labelled-frames directory::

    DIR/images/<name>.png|.jpg        camera frames, any size (resized as the serving pipeline resizes them)
    DIR/lidar/<stem>.npy|.bin         optional: one sweep per frame, same stem as the image
    DIR/labels.csv | labels.jsonl     one row per frame: ``image`` plus any subset of core.contracts.LABELS
                                      (and an optional ``split`` column: train / val / test)

Image folder::

    DIR/<class>/<name>.png|.jpg       class in core.contracts.TL_CLASSES → a traffic-light-only dataset
    DIR/<split>/<class>/<name>.png    the same with the user's split: train|training, val|validation,
                                      test|testing (a split not given is carved from train)

Images (and lidar sweeps) may be symbolic links to files anywhere; a name in a label file may not leave
images/.

Everything is validated before anything is written: the label file (columns, values, that every named image
exists, duplicates), the split, the lidar files, then every image and sweep is decoded; the dataset directory
is written only when all of it passed. Each refusal is a DataError naming the file (and line) and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.dataset import BEV_SHAPE, MIN_SAMPLES, SPLITS, split_indices, write_dataset
from regionadapt_ros.adaptation.importers.common import (
    IMAGE_SUFFIXES,
    LABEL_INDEX,
    LIDAR_SUFFIXES,
    ImportResult,
    check_output,
    check_region,
    empty_labels,
    read_lidar_file,
    read_rgb_file,
)
from regionadapt_ros.core import safe_read, strict_parse
from regionadapt_ros.core.contracts import (
    IMAGE_H,
    IMAGE_W,
    LABEL_PLAUSIBLE_RANGE,
    LABELS,
    OBSTACLE_MAX_M,
    TL_CLASSES,
)
from regionadapt_ros.core.errors import DataError

LABEL_FILES = ("labels.csv", "labels.jsonl")
MAX_LABEL_FILE_BYTES = 256 << 20
IMAGE_COLUMN = "image"
SPLIT_COLUMN = "split"
# Spellings of an empty cell (pandas writes NaN as "" or "nan"); "none" is a traffic-light class, not one of them.
_MISSING_TEXT = ("", "nan", "na", "null")
_TL_LIST = ", ".join(TL_CLASSES)


@dataclass
class LabelRow:
    """One labelled frame: where it was declared (1-based line), the image path, its LABELS values (NaN = not
    labelled), and the split it was assigned to (None = the default split)."""

    line: int
    image: Path
    values: np.ndarray
    split: str | None


# ------------------------------------------------------------------------------------------------ values
# obstacle_distance and free_space have their own messages below (clipped to OBSTACLE_MAX_M; a fraction)
PLAUSIBLE_RANGE = {**LABEL_PLAUSIBLE_RANGE, "obstacle_distance": (-math.inf, 1e6), "free_space": (-math.inf, math.inf)}
_UNITS = {"lane_offset": "metres", "heading_error": "radians", "curvature": "1/m", "steering": "radians",
          "accel": "m/s^2", "speed": "m/s", "obstacle_distance": "metres"}
def parse_label_value(name: str, raw: Any, where: str, label_file: Path) -> tuple[float, bool]:
    """One cell → (value, clipped). ``where`` is "line N" for the message. Missing → NaN. ``tl_state`` takes a
    class name of TL_CLASSES (any case) or its id; the others take finite numbers in their unit
    (core.contracts.LABELS); ``obstacle_distance`` beyond OBSTACLE_MAX_M is clipped to it (nothing ahead
    within range)."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _MISSING_TEXT):
        return math.nan, False
    if name == "tl_state":
        return _tl_state(raw, where, label_file), False
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise DataError(label_file, f"{where}: {name} {raw!r} is not a number")
    value = _number(raw)
    if value is None:
        raise DataError(label_file, f"{where}: {name} {raw!r} is not a number")
    if not math.isfinite(value):
        raise DataError(label_file, f"{where}: {name} {raw!r} is not a finite number")
    low, high = PLAUSIBLE_RANGE.get(name, (-math.inf, math.inf))
    if not low <= value <= high:
        # Wide bounds: no real vehicle is outside them, but a wrong unit (steering in degrees, speed in km/h
        # beyond 360, a value in millimetres) or an overflow of the dataset's float32 is.
        raise DataError(label_file, f"{where}: {name} {raw!r} is outside {low:g}..{high:g} "
                                    f"({_UNITS.get(name, '')}): a wrong unit?")
    if name == "free_space" and not 0.0 <= value <= 1.0:
        raise DataError(label_file, f"{where}: free_space {raw!r} must be a fraction in 0..1")
    if name == "obstacle_distance":
        if value < 0.0:
            raise DataError(label_file, f"{where}: obstacle_distance {raw!r} must not be negative (metres)")
        if value > OBSTACLE_MAX_M:
            return OBSTACLE_MAX_M, True
    return value, False


# A number as a spreadsheet or a CSV writer writes it. Python's float() takes more: "1_5" (15), Arabic-Indic
# and full-width digits, which no label file means as numbers.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
                     re.IGNORECASE | re.ASCII)
_CLASS_ID = re.compile(r"[0-9]+(?:\.0*)?", re.ASCII)  # "2", or "2.0" as pandas writes a float column


def _number(raw: str | int | float) -> float | None:
    """``raw`` as a float, or None when it is text that is not a plain decimal number."""
    if not isinstance(raw, str):
        return float(raw)
    text = raw.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _tl_state(raw: Any, where: str, label_file: Path) -> float:
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in TL_CLASSES:
            return float(TL_CLASSES.index(text))
        # a class id is written as digits ("2", "2.0"), not as any text float() would take ("2e0", "２")
        number = float(text) if _CLASS_ID.fullmatch(text) else math.nan
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        number = float(raw)
    else:
        number = math.nan
    if number.is_integer() and 0 <= number < len(TL_CLASSES):
        return number
    raise DataError(label_file, f"{where}: tl_state {raw!r} is not one of {_TL_LIST} "
                                f"(or a class id 0..{len(TL_CLASSES) - 1})")


# ------------------------------------------------------------------------------------------------ label files
def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from _csv_rows(path, reader)
    except csv.Error as exc:  # a cell over csv's field limit (128 KiB), a NUL byte, an unclosed quote at the end
        raise DataError(path, f"line {reader.line_num}: not a CSV row ({exc})") from None


def _csv_rows(path: Path, reader: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    header = next(reader, None)
    if header is None:
        raise DataError(path, "is empty: expected a header row naming the columns (image, labels...)")
    columns = [c.strip() for c in header]
    _check_columns(path, columns, "line 1: column")
    if IMAGE_COLUMN not in columns:
        raise DataError(path, f"line 1: no {IMAGE_COLUMN!r} column naming each frame's file in images/")
    if not set(columns) & set(LABELS):
        raise DataError(path, f"no label column: nothing is labelled (add any of {', '.join(LABELS)})")
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(columns):
            raise DataError(path, f"line {line}: {len(row)} cells, but the header names {len(columns)} columns")
        yield line, dict(zip(columns, row, strict=True))


def _jsonl_records(path: Path, content: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # split on newlines only: str.splitlines would also cut at U+2028 and the like inside a JSON string
    for line, text in enumerate(content.split("\n"), start=1):
        if not text.strip():
            continue
        record = strict_parse.loads_json(  # duplicate keys, NaN, deep nesting refused, naming the line
            text, path, error=lambda source, problem, line=line: DataError(source, f"line {line}: {problem}"))
        if not isinstance(record, dict):
            raise DataError(path, f"line {line}: must be a JSON object like "
                                  '{"image": "frame_0001.png", "tl_state": "red"}')
        _check_columns(path, list(record), f"line {line}: key")
        yield line, record


def _check_columns(path: Path, columns: list[str], what: str) -> None:
    known = (IMAGE_COLUMN, SPLIT_COLUMN, *LABELS)
    seen: set[str] = set()
    for column in columns:
        if column not in known:
            raise DataError(path, f"{what} {safe_read.shown_name(column, 80)} is not a label name; use "
                                  f"{IMAGE_COLUMN}, {SPLIT_COLUMN} or any of {', '.join(LABELS)}")
        if column in seen:
            raise DataError(path, f"{what} {column!r} appears twice")
        seen.add(column)


def find_label_file(frames_dir: Path) -> Path:
    """``labels.csv`` or ``labels.jsonl`` of a labelled-frames directory; DataError if none or both."""
    present = []
    for name in LABEL_FILES:
        state, what = safe_read.file_state(frames_dir / name)
        if state == "other":
            raise DataError(frames_dir / name, f"is {what}, not a regular file")
        if state == "file":
            present.append(frames_dir / name)
    if not present:
        raise DataError(frames_dir, f"no {' or '.join(LABEL_FILES)}: nothing is labelled (an image folder sorted "
                                    "by traffic-light class is imported with `data import image-folder`)")
    if len(present) > 1:
        raise DataError(frames_dir, f"holds both {' and '.join(LABEL_FILES)}; keep one")
    return present[0]


def read_label_file(path: Path, images_dir: Path) -> tuple[list[LabelRow], dict[str, int], set[Path]]:
    """Parse and check a label file: known columns, valid values, every image present in ``images_dir`` and
    named once. Rows with no label at all are dropped (counted as ``rows_without_labels``). Returns the rows
    in file order, counters, and every image the file names (resolved paths). DataError naming the file and
    line otherwise."""
    # Bounded before it is opened: a regular file of at most MAX_LABEL_FILE_BYTES (a FIFO would block the open).
    # Decoded whole, so that a file that is not UTF-8 (Latin-1, Excel's UTF-16 "Unicode text") is one line
    # naming the first undecodable byte.
    text = safe_read.read_text(path, max_bytes=MAX_LABEL_FILE_BYTES, error=DataError)
    records = _jsonl_records(path, text) if path.suffix == ".jsonl" else _csv_records(path, text)
    rows: list[LabelRow] = []
    first_line: dict[Path, int] = {}
    counts = {"rows": 0, "rows_without_labels": 0, "obstacle_distance_clipped": 0}
    images_root = Path(os.path.abspath(images_dir))
    for line, record in records:
        where = f"line {line}"
        counts["rows"] += 1
        name = record.get(IMAGE_COLUMN)
        if not isinstance(name, str) or not name.strip():
            raise DataError(path, f"{where}: no {IMAGE_COLUMN!r} file name")
        name = name.strip()
        shown = safe_read.shown_name(name)
        # The name may not leave images/ (checked on the path as written, so "../x" is refused), but the file
        # may be a symbolic link to anywhere: datasets are often assembled from links into a shared store.
        image = Path(os.path.abspath(images_root / name))
        if images_root not in image.parents:
            raise DataError(path, f"{where}: image {shown} is outside images/")
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(path, f"{where}: image {shown} is not a {'/'.join(IMAGE_SUFFIXES)} file")
        state, what = safe_read.file_state(image)
        if state == "missing":
            raise DataError(path, f"{where}: image {shown} not found in images/")
        if state == "other":
            raise DataError(path, f"{where}: image {shown} in images/ is {what}, not a regular file")
        if image in first_line:
            raise DataError(path, f"{where}: image {shown} is already labelled on line {first_line[image]}")
        first_line[image] = line
        values = np.full(len(LABELS), np.nan, dtype=np.float32)
        for label in LABELS:
            value, clipped = parse_label_value(label, record.get(label), where, path)
            values[LABEL_INDEX[label]] = value
            counts["obstacle_distance_clipped"] += int(clipped)
        split = record.get(SPLIT_COLUMN)
        if isinstance(split, str):
            split = split.strip().lower() or None
        if split is not None and split not in SPLITS:
            raise DataError(path, f"{where}: split {record.get(SPLIT_COLUMN)!r} is not one of {', '.join(SPLITS)}")
        if np.isnan(values).all():
            counts["rows_without_labels"] += 1
            continue
        rows.append(LabelRow(line, image, values, split))
    if not rows:
        why = "the file has no rows" if counts["rows"] == 0 else "every label cell is empty"
        raise DataError(path, f"no labels at all: {why}")
    return rows, counts, set(first_line)


def _explicit_splits(path: Path, rows: list[LabelRow]) -> dict[str, list[int]] | None:
    """The ``split`` column as index lists, None when no row gives one; every row must give one if any does."""
    given = [r for r in rows if r.split is not None]
    if not given:
        return None
    if len(given) != len(rows):
        missing = next(r for r in rows if r.split is None)
        raise DataError(path, f"line {missing.line}: no split, but other rows have one; give every labelled "
                              "row a split or none")
    splits = {name: [i for i, r in enumerate(rows) if r.split == name] for name in SPLITS}
    for name, idx in splits.items():
        if not idx:
            raise DataError(path, f"split {name!r} has no labelled row; each of {', '.join(SPLITS)} needs one")
    return splits


def _check_enough(source: Path, out_dir: Path, n: int, seed: int) -> None:
    try:
        split_indices(n, seed)
    except ValueError as exc:
        raise DataError(source, f"{exc} (train, val and test each need a sample); nothing written to {out_dir}"
                        ) from None


# ------------------------------------------------------------------------------------------------ lidar
def _lidar_files(frames_dir: Path, rows: list[LabelRow]) -> list[Path] | None:
    """The sweep of every labelled frame when ``lidar/`` exists (None otherwise); DataError naming the frame
    whose sweep is missing or ambiguous."""
    lidar_dir = frames_dir / "lidar"
    if not lidar_dir.is_dir():
        if os.path.lexists(lidar_dir):
            _, what = safe_read.file_state(lidar_dir)
            raise DataError(lidar_dir, f"is {what or 'a regular file'}, not the folder of sweeps")
        return None
    files = []
    served: dict[Path, LabelRow] = {}
    for row in rows:
        present = []
        for candidate in (lidar_dir / f"{row.image.stem}{s}" for s in LIDAR_SUFFIXES):
            state, what = safe_read.file_state(candidate)
            if state == "other":
                raise DataError(candidate, f"is {what}, not a regular file (the sweep of {row.image.name!r})")
            if state == "file":
                present.append(candidate)
        if not present:
            raise DataError(lidar_dir, f"no {row.image.stem}.npy or {row.image.stem}.bin for image "
                                       f"{row.image.name!r}: when lidar/ exists every labelled frame needs its sweep")
        if len(present) > 1:
            raise DataError(lidar_dir, f"both {present[0].name} and {present[1].name}; keep one")
        # Sweeps are matched by the image's stem: two images with one stem (sub/f.png and f.png, f.png and
        # f.jpg) would silently share one sweep.
        other = served.get(present[0])
        if other is not None:
            first, second = (os.path.relpath(r.image, frames_dir / "images") for r in (other, row))
            raise DataError(present[0], f"is the sweep of two images, {first!r} (line {other.line}) and {second!r} "
                                        f"(line {row.line}): sweeps are matched by stem, so give each image a "
                                        "distinct stem")
        served[present[0]] = row
        files.append(present[0])
    return files


def _decode(images: list[Path], lidar: list[Path] | None, progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    from regionadapt_ros.core.preprocess import IntensityScale, bev_grid

    intensity = IntensityScale()  # one sensor: one scale for the whole import
    n = len(images)
    rgb = np.empty((n, IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
    bev = np.zeros((n, *BEV_SHAPE), dtype=np.float16)
    for i in tqdm(range(n), desc=desc, disable=not progress, leave=False, unit="frame"):
        rgb[i] = read_rgb_file(images[i])
        if lidar is not None:
            bev[i] = bev_grid(read_lidar_file(lidar[i]), intensity=intensity)
    return rgb, bev


# ------------------------------------------------------------------------------------------------ importers
def import_labelled_frames(frames_dir: str | Path, out_dir: str | Path, region: str, seed: int = 0,
                           progress: bool = True) -> ImportResult:
    """Labelled-frames directory → dataset at ``out_dir`` (source "labelled_frames"). Labels not given are NaN,
    so training fits only what is labelled. Without ``lidar/`` the BEV grids are zeros (meta has_lidar false).
    The split is the ``split`` column when given, else the default seeded split."""
    frames_dir, out_dir = Path(frames_dir), Path(out_dir)
    check_region(region)
    if not frames_dir.is_dir():
        raise DataError(frames_dir, "labelled-frames directory does not exist")
    images_dir = frames_dir / "images"
    if not images_dir.is_dir():
        raise DataError(frames_dir, "no images/ directory (expected images/ plus labels.csv or labels.jsonl)")
    check_output(out_dir, [frames_dir])
    label_file = find_label_file(frames_dir)
    rows, counts, listed = read_label_file(label_file, images_dir)
    splits = _explicit_splits(label_file, rows)
    if splits is None:
        _check_enough(label_file, out_dir, len(rows), seed)
    elif len(rows) < MIN_SAMPLES:
        raise DataError(label_file, f"too few samples to split: n={len(rows)}, need at least {MIN_SAMPLES}; "
                                    f"nothing written to {out_dir}")
    lidar = _lidar_files(frames_dir, rows)
    root = Path(os.path.abspath(images_dir))
    unlisted = sum(1 for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p not in listed)
    images, bev = _decode([r.image for r in rows], lidar, progress, f"importing {frames_dir.name}")
    labels = np.stack([r.values for r in rows]).astype(np.float32)
    skipped = {"rows_without_labels": counts["rows_without_labels"], "images_not_in_label_file": unlisted}
    meta = {
        "region": region, "seed": int(seed), "source": "labelled_frames", "has_lidar": lidar is not None,
        "input": str(frames_dir.resolve()), "label_file": label_file.name,
        "split": "split column" if splits is not None else "seeded random",
        "counts": {"labelled_frames": len(rows), "label_rows": counts["rows"],
                   "obstacle_distance_clipped": counts["obstacle_distance_clipped"], **skipped},
    }
    write_dataset(out_dir, images, bev, labels, meta, splits)
    return ImportResult(out_dir, len(rows), skipped, _written_meta(out_dir))


# Sub-folder names of an image folder that carry the user's own split, per split.
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "validation"), "test": ("test", "testing")}
_SPLIT_OF_FOLDER = {name: split for split, names in SPLIT_FOLDERS.items() for name in names}
CARVED_FRACTION = 0.15  # of train, seeded, for a split the folder does not give


def _class_images(root: Path, counts: dict[str, int], ignored: list[int]) -> list[tuple[Path, int]]:
    """(image, class id) of ``root/<class>/*.png|jpg``, sorted; DataError for a sub-folder not named after a
    class. Counts per class into ``counts`` and ignored files into ``ignored[0]``."""
    found: list[tuple[Path, int]] = []
    for sub in sorted(root.iterdir()):
        if sub.name.startswith("."):
            continue
        if not sub.is_dir():
            ignored[0] += 1
            continue
        name = sub.name.lower()
        if name not in TL_CLASSES:
            raise DataError(sub, f"folder name {sub.name!r} is not a traffic-light class: {_TL_LIST}")
        for path in sorted(sub.iterdir()):
            # is_file follows symbolic links: a linked image counts, wherever its target lives
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                found.append((path, TL_CLASSES.index(name)))
                counts[name] += 1
            else:
                ignored[0] += 1
    return found


def _split_folders(folder: Path) -> dict[str, Path] | None:
    """{split: sub-folder} when ``folder`` is laid out by split (train|training, val|validation, test|testing),
    None when its sub-folders are classes. DataError for a mix, or two spellings of one split."""
    subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    by_split: dict[str, Path] = {}
    classes = [p for p in subs if p.name.lower() in TL_CLASSES]
    for sub in subs:
        split = _SPLIT_OF_FOLDER.get(sub.name.lower())
        if split is None:
            continue
        if split in by_split:
            raise DataError(folder, f"both {by_split[split].name}/ and {sub.name}/ hold the {split} split; keep one")
        by_split[split] = sub
    if not by_split:
        return None
    if classes:
        raise DataError(folder, f"mixes split folders ({', '.join(p.name for p in by_split.values())}) with class "
                                f"folders ({', '.join(p.name for p in classes)}); put every class folder inside a "
                                "split folder, or use no split folders at all")
    if "train" not in by_split:
        raise DataError(folder, "has split folders but no train/ (or training/): the fine-tune needs a train split")
    return by_split


def _carve(train: list[int], seed: int, salt: int) -> tuple[list[int], list[int]]:
    """A seeded CARVED_FRACTION of ``train`` (at least one) and what is left of it."""
    rng = np.random.default_rng(np.random.SeedSequence([0x1F0D, salt, int(seed) & 0xFFFFFFFF]))
    order = rng.permutation(len(train))
    k = max(1, int(round(CARVED_FRACTION * len(train))))
    carved = sorted(train[i] for i in order[:k])
    return carved, sorted(train[i] for i in order[k:])


def import_image_folder(folder: str | Path, out_dir: str | Path, region: str, seed: int = 0,
                        progress: bool = True) -> ImportResult:
    """An image folder sorted by traffic-light class → a traffic-light-only dataset (source "image_folder"):
    tl_state is the folder's class id, every other label NaN, BEV zeros (no lidar).

    ``<folder>/<class>/*.png|jpg`` gets the seeded default split; ``<folder>/<split>/<class>/*.png|jpg`` with
    split folders train|training, val|validation, test|testing keeps the user's split (a split that is not
    given is carved from train: a seeded 15 %). Images may be symbolic links to files anywhere."""
    folder, out_dir = Path(folder), Path(out_dir)
    check_region(region)
    if not folder.is_dir():
        raise DataError(folder, "image folder does not exist")
    check_output(out_dir, [folder])
    per_class = dict.fromkeys(TL_CLASSES, 0)
    ignored = [0]
    layout = _split_folders(folder)
    splits: dict[str, list[int]] | None = None
    split_rule = "seeded random"
    if layout is None:
        found = _class_images(folder, per_class, ignored)
    else:
        found, parts = [], {}
        for split, sub in layout.items():
            items = _class_images(sub, per_class, ignored)
            parts[split] = list(range(len(found), len(found) + len(items)))
            found += items
        carved = [s for s in SPLITS if s not in parts]
        for k, split in enumerate(carved):
            if len(parts["train"]) < 2:
                raise DataError(layout["train"], f"too few training images to carve a {split} split from")
            parts[split], parts["train"] = _carve(parts["train"], seed, k)
        for split in SPLITS:
            if not parts[split]:
                where = layout.get(split, layout["train"])
                raise DataError(where, f"the {split} split holds no image (expected <class>/*.png|jpg inside)")
        splits = {k: parts[k] for k in SPLITS}
        split_rule = "folders " + ", ".join(f"{s}: {layout[s].name}/" if s in layout
                                            else f"{s}: {CARVED_FRACTION:.0%} of train (seeded)" for s in SPLITS)
    if not found:
        raise DataError(folder, f"no images: expected <class>/*.png|jpg sub-folders with class one of {_TL_LIST} "
                                "(optionally inside train/, val/ and test/ split folders)")
    if splits is None:
        _check_enough(folder, out_dir, len(found), seed)
    elif len(found) < MIN_SAMPLES:
        raise DataError(folder, f"too few samples: n={len(found)}, need at least {MIN_SAMPLES}; nothing written "
                                f"to {out_dir}")
    images = [p for p, _ in found]
    rgb, bev = _decode(images, None, progress, f"importing {folder.name}")
    labels = empty_labels(len(images))
    labels[:, LABEL_INDEX["tl_state"]] = [c for _, c in found]
    skipped = {"not_images": ignored[0]}
    meta = {
        "region": region, "seed": int(seed), "source": "image_folder", "has_lidar": False,
        "input": str(folder.resolve()), "split": split_rule,
        "counts": {"images": len(images), "per_class": per_class, **skipped},
    }
    write_dataset(out_dir, rgb, bev, labels, meta, splits)
    return ImportResult(out_dir, len(images), skipped, _written_meta(out_dir))


def _written_meta(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "meta.json").read_text())
