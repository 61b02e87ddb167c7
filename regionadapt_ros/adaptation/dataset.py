"""On-disk regional dataset: the one format that training and evaluation read, written by the synthetic
generator and by the real-data importers.

Format version 1 — a directory holding:

``meta.json``
    A JSON object with at least
    ``format_version`` (1), ``region`` (str), ``n`` (number of samples), ``seed`` (int or null: the seed of the
    synthetic generator, and the default split seed), ``source`` (one of ``SOURCES``: "synthetic", "rosbag",
    "labelled_frames", "image_folder", "closed_loop": states a model visited driving the simulator, labelled by
    the expert), ``label_names`` (exactly ``core.contracts.LABELS``, in that order),
    ``created`` (ISO-8601 UTC time). Written by this module as well: ``image_shape``, ``bev_shape``. Optional:
    ``has_lidar`` (false when ``bev.npy`` is all zeros because the source had no lidar), ``generator``
    (synthetic data: ``{"version": synthetic.GENERATOR_VERSION, "image_size": [H, W]}``), and any other key an
    importer wants to keep (bag path, topics, ...).
``images.npy``
    uint8 (N, IMAGE_H, IMAGE_W, 3), RGB, already resized to the model's input size (``core.preprocess.resize_rgb``).
``bev.npy``
    float16 (N, 3, BEV.rows, BEV.cols): ``core.preprocess.bev_grid`` of the lidar sweep of each sample.
``labels.npy``
    float32 (N, len(LABELS)) in LABELS order; NaN = not labelled (an importer of unlabelled images leaves all
    but ``speed`` NaN; ``tl_state`` holds the class id as a float).
``splits.json`` (optional)
    ``{"train": [...], "val": [...], "test": [...]}``: disjoint, non-empty lists of sample indices. When absent
    the split is ``split_indices(n, seed)``: a seeded permutation cut 0.7 / 0.15 / 0.15. Importers of
    sequential recordings should write their own split by time blocks so that neighbouring frames do not
    land on both sides of a split.

``.npy`` files are read with ``np.load(mmap_mode="r", allow_pickle=False)`` (never pickle). Writing goes to a
temporary sibling directory which then replaces the target, so a reader never sees half a dataset.
A dataset with fewer than ``MIN_SAMPLES`` samples, or with an empty split, is refused (DataError naming the
directory); a missing or corrupt file is refused with a DataError naming that file.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import safe_read, strict_parse
from regionadapt_ros.core.bundle import REGION_ID_PATTERN
from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABEL_PLAUSIBLE_RANGE, LABELS, TL_CLASSES
from regionadapt_ros.core.errors import DataError

FORMAT_VERSION = 1
SOURCES = ("synthetic", "rosbag", "labelled_frames", "image_folder", "closed_loop")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
MIN_SAMPLES = 20
MAX_JSON_BYTES = 64 << 20  # meta.json and splits.json (index lists of a million samples are ~8 MiB)
META_FILE, IMAGES_FILE, BEV_FILE, LABELS_FILE, SPLITS_FILE = (
    "meta.json",
    "images.npy",
    "bev.npy",
    "labels.npy",
    "splits.json",
)
DATASET_FILES = (META_FILE, IMAGES_FILE, BEV_FILE, LABELS_FILE, SPLITS_FILE)  # all a dataset folder holds
IMAGE_SHAPE = (IMAGE_H, IMAGE_W, 3)
BEV_SHAPE = (BEV.channels, BEV.rows, BEV.cols)
_REQUIRED_META = ("format_version", "region", "n", "seed", "source", "label_names", "created")


def split_indices(n: int, seed: int | None, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, np.ndarray]:
    """Deterministic train/val/test split of ``n`` samples: a permutation seeded by ``seed`` (0 when None) cut
    by ``fractions``; each part sorted. Raises ValueError when a part would be empty or n < MIN_SAMPLES."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be three positive numbers, got {tuple(fractions)}")
    if n < MIN_SAMPLES:
        raise ValueError(f"too few samples to split: n={n}, need at least {MIN_SAMPLES}")
    total = float(sum(fractions))
    n_val = int(round(n * fractions[1] / total))
    n_test = int(round(n * fractions[2] / total))
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) <= 0:
        raise ValueError(f"too few samples to split: n={n} gives train={n_train}, val={n_val}, test={n_test}")
    perm = np.random.default_rng(np.random.SeedSequence([0x5B17, int(seed or 0) & 0xFFFFFFFF])).permutation(n)
    return {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train : n_train + n_val]),
        "test": np.sort(perm[n_train + n_val :]),
    }


def _complete_meta(meta: Mapping[str, Any], n: int) -> dict[str, Any]:
    out = dict(meta)
    out["format_version"] = FORMAT_VERSION
    out["n"] = int(n)
    out.setdefault("seed", None)
    out.setdefault("source", "synthetic")
    out["label_names"] = list(LABELS)
    out.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out["image_shape"] = list(IMAGE_SHAPE)
    out["bev_shape"] = list(BEV_SHAPE)
    if "region" not in out or not isinstance(out["region"], str) or not out["region"]:
        raise ValueError("meta must name the region (a non-empty string under 'region')")
    if out["source"] not in SOURCES:
        raise ValueError(f"meta 'source' must be one of {SOURCES}, got {out['source']!r}")
    return out


def _splits_or_error(out_dir: Path, n: int, seed: int | None) -> dict[str, np.ndarray]:
    try:
        return split_indices(n, seed)
    except ValueError as exc:
        raise DataError(out_dir, str(exc)) from None


def _check_splits(path: Path, splits: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    """Validated splits as sorted int64 arrays; DataError naming ``path`` otherwise."""
    out: dict[str, np.ndarray] = {}
    seen = np.zeros(n, dtype=bool)
    for name in SPLITS:
        if name not in splits:
            raise DataError(path, f"split {name!r} is missing")
        try:
            idx = np.asarray(splits[name])
        except (TypeError, ValueError) as exc:
            raise DataError(path, f"split {name!r} is not a list of indices: {exc}") from None
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise DataError(path, f"split {name!r} is not a flat list of integer indices")
        if idx.size == 0:
            raise DataError(path, f"split {name!r} is empty: too few samples to split (n={n})")
        idx = idx.astype(np.int64)
        if idx.min() < 0 or idx.max() >= n:
            raise DataError(path, f"split {name!r} has indices outside 0..{n - 1}")
        if seen[idx].any() or np.unique(idx).size != idx.size:
            raise DataError(path, f"split {name!r} overlaps another split or repeats an index")
        seen[idx] = True
        out[name] = np.sort(idx)
    return out


def _commit(tmp: Path, out_dir: Path) -> None:
    """Move the finished temporary directory into place, replacing an older dataset."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def _looks_like_dataset(path: Path) -> bool:
    try:
        meta = strict_parse.load_json_file(path / META_FILE, max_bytes=MAX_JSON_BYTES, error=DataError)
    except (OSError, ValueError):  # DataError included
        return False
    return isinstance(meta, dict) and "format_version" in meta and "label_names" in meta


def check_dataset_output(out_dir: str | Path) -> None:
    """``out_dir`` can take a dataset (what writing it checks), checked before an import reads a single frame: an
    import of a long bag must not end by refusing its output."""
    from regionadapt_ros.core.output_dir import check_parent_is_dir

    check_parent_is_dir("--out", _replace_target(Path(out_dir)))


def _replace_target(out_dir: Path) -> Path:
    """The directory to replace for ``out_dir`` (a symbolic link's target); never a directory of other files."""
    from regionadapt_ros.core.output_dir import replaceable_dir

    return replaceable_dir(out_dir, _looks_like_dataset, "dataset", DataError)


def _tmp_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (as importers may put in meta) → plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON serialisable")


def _write_meta_and_splits(tmp: Path, meta: dict[str, Any], splits: Mapping[str, np.ndarray]) -> None:
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_value) + "\n")
    (tmp / SPLITS_FILE).write_text(json.dumps({k: [int(i) for i in splits[k]] for k in SPLITS}) + "\n")


def write_dataset(
    out_dir: str | Path,
    images: np.ndarray,
    bev: np.ndarray,
    labels: np.ndarray,
    meta: Mapping[str, Any],
    splits: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write a dataset directory atomically (replacing an existing one) and return its path.

    images (N, IMAGE_H, IMAGE_W, 3) uint8 RGB; bev (N, 3, rows, cols), stored as float16; labels
    (N, len(LABELS)) float32 with NaN = not labelled; meta must hold at least ``region`` (see the module
    docstring for the rest, filled in when absent); splits default to ``split_indices(N, meta['seed'])``.
    """
    out_dir = Path(out_dir)
    images = np.asarray(images)
    bev = np.asarray(bev)
    labels = np.asarray(labels)
    n = images.shape[0] if images.ndim else 0
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images must be uint8 (N, {IMAGE_H}, {IMAGE_W}, 3), got {images.dtype} {images.shape}")
    if bev.shape != (n, *BEV_SHAPE):
        raise ValueError(f"bev must be ({n}, {', '.join(map(str, BEV_SHAPE))}), got {bev.shape}")
    if labels.shape != (n, len(LABELS)):
        raise ValueError(f"labels must be ({n}, {len(LABELS)}) in LABELS order, got {labels.shape}")
    _check_label_values(out_dir / LABELS_FILE, labels)
    full_meta = _complete_meta(meta, n)
    if splits is None:
        checked = _splits_or_error(out_dir, n, full_meta["seed"])
    else:
        if n < MIN_SAMPLES:
            raise DataError(out_dir, f"too few samples to split: n={n}, need at least {MIN_SAMPLES}")
        checked = _check_splits(out_dir, splits, n)
    target = _replace_target(out_dir)
    tmp = _tmp_dir(target)
    try:
        np.save(tmp / IMAGES_FILE, images, allow_pickle=False)
        np.save(tmp / BEV_FILE, bev.astype(np.float16, copy=False), allow_pickle=False)
        np.save(tmp / LABELS_FILE, labels.astype(np.float32, copy=False), allow_pickle=False)
        _write_meta_and_splits(tmp, full_meta, checked)
        _commit(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _load_array(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    from regionadapt_ros.core.npy_header import read_npy_header

    _check_present(path)
    try:
        # numpy must not parse a header it could crash on (core.npy_header): checked first
        with path.open("rb") as f:
            read_npy_header(f.read(64 * 1024))
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(path, "not a single .npy array")
    if arr.dtype != np.dtype(dtype):
        raise DataError(path, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.shape != shape:
        raise DataError(path, f"shape {arr.shape}, expected {shape}")
    return arr


def _check_present(path: Path) -> None:
    state, what = safe_read.file_state(path)
    if state == "missing":
        raise DataError(path, "file is missing")
    if state == "other":
        raise DataError(path, f"is {what}, not a regular file")


def _load_meta(path: Path) -> dict[str, Any]:
    _check_present(path)
    try:
        meta = strict_parse.load_json_file(path, max_bytes=MAX_JSON_BYTES, error=DataError)
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    if not isinstance(meta, dict):
        raise DataError(path, "must hold a JSON object")
    for key in _REQUIRED_META:
        if key not in meta:
            raise DataError(path, f"key {key!r} is missing")
    if type(meta["format_version"]) is not int or meta["format_version"] != FORMAT_VERSION:  # true == 1 in Python
        raise DataError(path, f"format_version {meta['format_version']!r} is not supported (expected {FORMAT_VERSION})")
    n = meta["n"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise DataError(path, f"'n' must be a non-negative integer, got {n!r}")
    if meta["label_names"] != list(LABELS):
        raise DataError(path, f"label_names {_shown(meta['label_names'])} differ from the model contract "
                              f"{list(LABELS)}")
    if not isinstance(meta["source"], str) or meta["source"] not in SOURCES:
        raise DataError(path, f"source {_shown(meta['source'])} is not one of {SOURCES}")
    # A hand-edited meta.json reaches the trainer, bundle names and reports: each key has the type they expect.
    region = meta["region"]
    if not isinstance(region, str) or not REGION_ID_PATTERN.match(region):
        raise DataError(path, f"region {_shown(region)} must be a region id: letters, digits, '_', '-' or '.'")
    seed = meta["seed"]
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise DataError(path, f"seed {_shown(seed)} must be an integer or null")
    if not isinstance(meta["created"], str):
        raise DataError(path, f"created {_shown(meta['created'])} must be a timestamp string")
    if "has_lidar" in meta and not (meta["has_lidar"] is None or isinstance(meta["has_lidar"], bool)):
        raise DataError(path, f"has_lidar {_shown(meta['has_lidar'])} must be true, false or null")
    for key, shape in (("image_shape", IMAGE_SHAPE), ("bev_shape", BEV_SHAPE)):
        if key in meta and meta[key] != list(shape):
            raise DataError(path, f"{key} {_shown(meta[key])} differs from the model contract {list(shape)}")
    return meta


def implausible_labels(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Label name → (N,) bool mask of the samples whose value lies outside ``LABEL_PLAUSIBLE_RANGE`` (a wrong unit,
    an overflow); only labels with such samples are listed. NaN (not labelled) is never outside."""
    values = np.asarray(labels)
    found = {}
    with np.errstate(invalid="ignore"):  # NaN compares False: it is in range
        for name, (low, high) in LABEL_PLAUSIBLE_RANGE.items():
            column = values[:, LABELS.index(name)]
            outside = (column < low) | (column > high)
            if outside.any():
                found[name] = outside
    return found


def _check_label_values(path: Path, labels: np.ndarray) -> None:
    """NaN means "not labelled"; anything else must be finite, and a traffic-light state one of the class ids
    (a stray 7 would index past the classifier's logits in the loss)."""
    values = np.asarray(labels)
    if np.isinf(values).any():
        rows, cols = np.nonzero(np.isinf(values))
        raise DataError(path, f"sample {int(rows[0])}: {LABELS[int(cols[0])]} is infinite ({int(rows.size)} value(s))")
    for name, outside in implausible_labels(values).items():
        low, high = LABEL_PLAUSIBLE_RANGE[name]
        first = int(np.flatnonzero(outside)[0])
        raise DataError(path, f"sample {first}: {name} {float(values[first, LABELS.index(name)])!r} is outside "
                              f"{low:g}..{high:g} ({int(outside.sum())} value(s)): a wrong unit?")
    tl = values[:, LABELS.index("tl_state")]
    known = tl[~np.isnan(tl)]
    bad = ~np.isin(known, np.arange(len(TL_CLASSES), dtype=np.float32))
    if bad.any():
        first = int(np.flatnonzero(~np.isnan(tl))[np.flatnonzero(bad)[0]])
        raise DataError(path, f"sample {first}: tl_state {float(tl[first])!r} is not a class id "
                              f"0-{len(TL_CLASSES) - 1} ({', '.join(TL_CLASSES)}) or NaN ({int(bad.sum())} value(s))")


def _check_bev_values(path: Path, bev: np.ndarray, chunk: int = 256) -> None:
    """The grids are what ``core.preprocess.bev_grid`` makes: every cell in 0..1. One NaN or inf cell makes every
    loss after it NaN, and training would end with the weights it started from. Read in chunks: the array is a
    memory map."""
    for start in range(0, len(bev), chunk):
        block = np.asarray(bev[start:start + chunk], dtype=np.float32)
        bad = ~(np.isfinite(block) & (block >= 0.0) & (block <= 1.0))
        if bad.any():
            sample = start + int(np.flatnonzero(bad.reshape(len(block), -1).any(axis=1))[0])
            value = float(block[sample - start][bad[sample - start]].flat[0])
            raise DataError(path, f"sample {sample}: a grid cell is {value!r}; BEV cells are finite values in 0..1 "
                                  "(core.preprocess.bev_grid)")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class RegionDataset:
    """An opened dataset; arrays are read-only memory maps."""

    path: Path
    meta: dict[str, Any]
    images: np.ndarray
    bev: np.ndarray
    labels: np.ndarray
    splits: dict[str, np.ndarray]

    @classmethod
    def open(cls, path: str | Path) -> RegionDataset:
        """Open and validate a dataset directory (DataError naming the bad file or the directory)."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, "not a dataset directory (missing or not a directory)")
        meta = _load_meta(path / META_FILE)
        n = meta["n"]
        if n < MIN_SAMPLES:
            raise DataError(path, f"too few samples to split: n={n}, need at least {MIN_SAMPLES}")
        images = _load_array(path / IMAGES_FILE, np.uint8, (n, *IMAGE_SHAPE))
        bev = _load_array(path / BEV_FILE, np.float16, (n, *BEV_SHAPE))
        labels = _load_array(path / LABELS_FILE, np.float32, (n, len(LABELS)))
        _check_label_values(path / LABELS_FILE, labels)
        _check_bev_values(path / BEV_FILE, bev)
        splits_path = path / SPLITS_FILE
        if splits_path.exists():
            try:
                raw = strict_parse.load_json_file(splits_path, max_bytes=MAX_JSON_BYTES, error=DataError)
            except FileNotFoundError:
                raise DataError(splits_path, "file is missing") from None
            if not isinstance(raw, dict):
                raise DataError(splits_path, "must hold a JSON object of index lists")
            splits = _check_splits(splits_path, raw, n)
        else:
            seed = meta["seed"] if isinstance(meta["seed"], int) else None
            splits = _splits_or_error(path, n, seed)
        return cls(path, meta, images, bev, labels, splits)

    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @property
    def region(self) -> str:
        return str(self.meta["region"])

    def __len__(self) -> int:
        return self.n

    def split(self, name: str) -> np.ndarray:
        """Sorted int64 sample indices of split ``name`` ("train", "val" or "test")."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self.splits[name]

    def label_index(self, label: str) -> int:
        try:
            return LABELS.index(label)
        except ValueError:
            raise ValueError(f"unknown label {label!r}; labels are {', '.join(LABELS)}") from None

    def label(self, label: str) -> np.ndarray:
        """(N,) float32 values of one label (NaN = not labelled)."""
        return self.labels[:, self.label_index(label)]

    def labelled_mask(self, label: str) -> np.ndarray:
        """(N,) bool: True where ``label`` is labelled (not NaN)."""
        return ~np.isnan(self.label(label))


def build_region_dataset(
    region: str,
    n: int,
    seed: int,
    out_dir: str | Path,
    workers: int = 2,
    progress: bool = True,
) -> RegionDataset:
    """Generate ``n`` synthetic samples of ``region`` straight into a new dataset at ``out_dir`` (through memory
    maps, so memory does not grow with n) and open it."""
    from regionadapt_ros.adaptation.regions import get_region
    from regionadapt_ros.adaptation.synthetic import GENERATOR_VERSION, generate_into

    spec = get_region(region)
    out_dir = Path(out_dir)
    splits = _splits_or_error(out_dir, n, seed)
    meta = _complete_meta({"region": spec.name, "seed": int(seed), "source": "synthetic", "has_lidar": True}, n)
    meta["generator"] = {"version": GENERATOR_VERSION, "image_size": [IMAGE_H, IMAGE_W]}
    target = _replace_target(out_dir)
    tmp = _tmp_dir(target)
    try:
        generate_into(
            spec, n, seed, (tmp / IMAGES_FILE, tmp / BEV_FILE, tmp / LABELS_FILE), (IMAGE_H, IMAGE_W), workers, progress
        )
        _write_meta_and_splits(tmp, meta, splits)
        _commit(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RegionDataset.open(out_dir)
