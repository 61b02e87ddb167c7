"""What every importer shares: the result record, the region-name check, image and lidar file readers, and the
split by time blocks for sequential recordings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.dataset import DEFAULT_FRACTIONS, MIN_SAMPLES, SPLITS
from regionadapt_ros.core import safe_read
from regionadapt_ros.core.bundle import REGION_ID_PATTERN
from regionadapt_ros.core.contracts import LABELS
from regionadapt_ros.core.errors import DataError, MessageConversionError
from regionadapt_ros.core.msgconv import compressed_image_to_rgb8
from regionadapt_ros.core.preprocess import resize_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LIDAR_SUFFIXES = (".npy", ".bin")
# Bounds on one input file, checked before it is read (core/safe_read.py): a camera frame file of 64 MiB, a sweep
# of 256 MiB (16 M points of 4 float32) are far beyond real ones.
MAX_IMAGE_FILE_BYTES = 64 << 20
MAX_LIDAR_FILE_BYTES = 256 << 20
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
# At least this many time blocks, so that each split gets several stretches of the drive.
MIN_TIME_BLOCKS = 20


@dataclass
class ImportResult:
    """What an import wrote: the dataset directory, its sample count, why frames were left out (reason →
    count), the dataset's meta.json content, and the messages refused (reason → count: a speed message whose
    yaw rate is refused leaves no frame out)."""

    path: Path
    n: int
    skipped: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()) if v)
        text = f"{self.n} samples written to {self.path}; {skipped} skipped" + (f" ({reasons})" if reasons else "")
        refused = ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items()) if v)
        return text + (f"; messages refused: {refused}" if refused else "")


def check_region(region: str) -> str:
    """The region id, or DataError naming ``--region``: it names bundles and directories, so the same
    characters as a bundle's region are allowed."""
    if not isinstance(region, str) or not REGION_ID_PATTERN.match(region):
        raise DataError("--region", f"{region!r} must start with a letter or digit and hold only letters, digits, "
                                    "'_', '-' or '.'")
    return region


def check_output(out_dir: Path, inputs: Sequence[Path]) -> Path:
    """Refuse an output directory that is, or contains, one of the inputs (the atomic replace would delete it)."""
    out = out_dir.resolve()
    for src in inputs:
        src = src.resolve()
        if out == src or out in src.parents:
            raise DataError(out_dir, f"the output directory would replace the input {src}; choose another --out")
    if out.exists() and not out.is_dir():
        raise DataError(out_dir, "exists and is not a directory")
    return out_dir


@dataclass(frozen=True)
class EncodedFrame:
    """An image file's bytes shaped like ``sensor_msgs/CompressedImage`` (``format``, ``data``), so that files
    are decoded by the same code as compressed camera frames on the vehicle."""

    format: str
    data: np.ndarray


def decode_image_file(path: Path) -> np.ndarray:
    """An image file (PNG/JPEG, 8 or 16 bit, grey, RGB or RGBA) → (H, W, 3) uint8 RGB at its own size, decoded
    exactly as the serving pipeline decodes a compressed camera frame. DataError naming the file when it cannot
    be read."""
    try:
        raw = np.frombuffer(safe_read.read_bytes(path, max_bytes=MAX_IMAGE_FILE_BYTES, error=DataError), np.uint8)
    except FileNotFoundError:
        raw = None
    if raw is None or raw.size == 0:
        raise DataError(path, "image file is missing or empty")
    codec = "png" if path.suffix.lower() == ".png" else "jpeg"
    try:
        rgb = compressed_image_to_rgb8(EncodedFrame(codec, raw))
    except MessageConversionError as exc:
        raise DataError(path, f"not a readable PNG/JPEG image ({exc.problem})") from None
    if min(rgb.shape[:2]) < 8:
        raise DataError(path, f"image is only {rgb.shape[1]}x{rgb.shape[0]} pixels")
    return rgb


def read_rgb_file(path: Path) -> np.ndarray:
    """``decode_image_file`` resized to (IMAGE_H, IMAGE_W, 3) as the serving pipeline resizes a frame."""
    return np.ascontiguousarray(resize_rgb(decode_image_file(path)))


def read_lidar_file(path: Path, bin_fields: int = 4) -> np.ndarray:
    """A lidar sweep file → (N, 4) float32 points x, y, z [m, vehicle frame as the BEV grid expects],
    intensity. ``.npy``: an (N, 3) or (N, 4) float array (no pickle); ``.bin``: raw little-endian float32
    records of ``bin_fields`` values starting x, y, z, intensity (4: KITTI's velodyne files; 5: nuScenes'
    ``.pcd.bin`` with the ring index last, dropped). DataError naming the file otherwise."""
    if path.suffix.lower() == ".bin" and bin_fields < 4:
        raise DataError(path, f"a .bin record needs at least x, y, z, intensity (4 fields), got {bin_fields}")
    try:
        data = safe_read.read_bytes(path, max_bytes=MAX_LIDAR_FILE_BYTES, error=DataError)
    except FileNotFoundError:
        raise DataError(path, "lidar file is missing") from None
    if path.suffix.lower() == ".bin":
        record = 4 * bin_fields
        if len(data) % record:
            raise DataError(path, f"{len(data)} bytes is not a whole number of {bin_fields}-float32 records "
                                  f"({record} bytes each: x, y, z, intensity{', ...' if bin_fields > 4 else ''})")
        return np.ascontiguousarray(np.frombuffer(data, dtype="<f4").reshape(-1, bin_fields)[:, :4],
                                    dtype=np.float32)
    arr = _npy_array(path, data)
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] not in (3, 4):
        shape = getattr(arr, "shape", None)
        raise DataError(path, f"lidar array must be (N, 4) x, y, z, intensity (or (N, 3)), got shape {shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(path, f"lidar array must be float32 or float64, got {arr.dtype}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: inf, then not finite, as in a cloud
        points = arr.astype(np.float32, copy=False)
    if points.shape[1] == 3:
        points = np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1)
    return points


def _npy_array(path: Path, data: bytes) -> np.ndarray:
    """The array of a ``.npy`` file's bytes, after checking its header (``core.npy_header``: numpy never sees a
    dtype string it could crash on) and that the shape it declares is what the file holds: a header may declare
    10^12 elements in a 100-byte file, and ``np.load`` would allocate them first."""
    from regionadapt_ros.core.npy_header import read_npy_header

    try:
        header = read_npy_header(data[:64 * 1024])
    except ValueError as exc:
        raise DataError(path, f"not a readable .npy array ({exc})") from None
    held = len(data) - header.data_offset
    if header.data_bytes != held:
        raise DataError(path, f"header declares shape {header.shape} {header.dtype} = {header.data_bytes} bytes but "
                              f"the file holds {held} (truncated or forged); refused before allocating")
    array = np.frombuffer(data, dtype=header.dtype, offset=header.data_offset).reshape(
        header.shape, order="F" if header.fortran_order else "C")
    return np.array(array)  # owns its memory, writeable, native order as stored


def time_block_splits(
    stamps_s: np.ndarray, block_s: float, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, np.ndarray]:
    """Train/val/test split of time-ordered frames by blocks of ``block_s`` seconds, so that the neighbouring
    frames of a recording stay on one side of a split except at block edges.

    ``stamps_s`` (N,) sorted seconds. Blocks are cut every ``block_s`` seconds; when that gives fewer than
    ``MIN_TIME_BLOCKS`` blocks (a short recording), the frames are cut into ``MIN_TIME_BLOCKS`` runs of equal
    length instead. A seeded permutation of the blocks gives val and test ``fractions[1:]`` of the blocks (at
    least one each) and train the rest. Raises ValueError when N < MIN_SAMPLES.
    """
    stamps = np.asarray(stamps_s, dtype=np.float64)
    n = stamps.size
    if n < MIN_SAMPLES:
        raise ValueError(f"too few samples to split: n={n}, need at least {MIN_SAMPLES}")
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"split block length must be a positive number of seconds, got {block_s}")
    block_of = np.floor((stamps - stamps[0]) / block_s).astype(np.int64)
    _, block_of = np.unique(block_of, return_inverse=True)
    n_blocks = int(block_of.max()) + 1
    if n_blocks < MIN_TIME_BLOCKS:
        n_blocks = min(MIN_TIME_BLOCKS, n)
        block_of = (np.arange(n) * n_blocks) // n
    total = float(sum(fractions))
    n_val = max(1, round(n_blocks * fractions[1] / total))
    n_test = max(1, round(n_blocks * fractions[2] / total))
    order = np.random.default_rng(np.random.SeedSequence([0x7B10, int(seed) & 0xFFFFFFFF])).permutation(n_blocks)
    part_of_block = np.zeros(n_blocks, dtype=np.int64)  # 0 train, 1 val, 2 test
    part_of_block[order[:n_val]] = 1
    part_of_block[order[n_val : n_val + n_test]] = 2
    part = part_of_block[block_of]
    return {name: np.flatnonzero(part == k) for k, name in enumerate(SPLITS)}


def empty_labels(n: int) -> np.ndarray:
    """(n, len(LABELS)) float32, all NaN (nothing labelled)."""
    return np.full((n, len(LABELS)), np.nan, dtype=np.float32)
