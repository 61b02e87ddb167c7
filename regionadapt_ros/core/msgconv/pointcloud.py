"""``sensor_msgs/PointCloud2`` → ``(N, K)`` float32 arrays, vectorised (no per-point Python loop).

Duck-typed on the ROS field names (``height``, ``width``, ``fields[].name/offset/datatype/count``,
``is_bigendian``, ``point_step``, ``row_step``, ``data``, ``is_dense``).

Decisions
---------
- Columns come in the order of the requested ``fields``, whatever the order, offsets and datatypes
  (PointField INT8..FLOAT64 = 1..8) in the message; values are cast to float32 (integers above 2**24 lose
  precision). A field with ``count > 1`` is read by its first element, ``"name[i]"`` selects element i; a requested
  field with ``count = 0`` is refused (it holds no value), count-0 padding is ignored.
- Required fields (``x``, ``y``, ``z`` by default) missing → MessageConversionError (field ``fields``).
  A requested optional field (e.g. ``intensity``) that is missing is filled with ``fill_value`` (0) and
  reported: ``CloudConversion.missing_fields`` and a counted warning ``pointcloud2.missing_field``.
- Invalid points are those with a non-finite x, y or z. ``drop_invalid=None`` (default) drops them, and when
  the cloud claimed ``is_dense`` the drop is a repair counted as ``pointcloud2.dense_with_invalid``;
  ``True`` drops them without that report; ``False`` keeps every point (organised clouds keep their
  ``row * width + col`` indexing).
- A cloud with points but none valid gives an empty ``(0, K)`` array and a counted
  ``pointcloud2.no_valid_points`` repair; an empty cloud (``width * height == 0``) gives ``(0, K)`` silently.
- ``max_points`` bounds the cost of one sweep: a cloud of more points is strided before any field is read (every
  k-th point of each row, and of the rows when that is not enough; k is the smallest that fits), so converting a
  5 M-point cloud costs what ``max_points`` points cost, and the points kept still cover the whole sweep. It is
  counted (``pointcloud2.downsampled``) and reported in ``CloudConversion.downsampled_from``; organised clouds are
  then indexed on the strided grid.
- Malformed layouts are errors naming the field: a requested field that appears twice, a field that does not
  fit in ``point_step``, a ``row_step`` smaller than ``width * point_step``, ``data`` shorter than
  ``row_step * height``, an unknown datatype of a requested field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv._buffers import as_byte_array

CLOUD = "sensor_msgs/PointCloud2"

# sensor_msgs/PointField datatype constants → numpy base types.
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}
DEFAULT_FIELDS = ("x", "y", "z", "intensity")
# The driving session's default cap on one sweep (DrivingConfig.lidar_max_points): a 64-beam spinning lidar's
# sweep (~130 k points) passes whole; a denser one is strided. The BEV grid has 64 x 64 cells, so 32 points per
# cell on average remain.
DEFAULT_LIDAR_MAX_POINTS = 131_072
REQUIRED_FIELDS = ("x", "y", "z")
MAX_FIELDS = 256  # real sensors publish fewer than 20 (Ouster: 9)
_ELEMENT = re.compile(r"^(.+)\[(\d+)\]$")


@dataclass(frozen=True)
class CloudConversion:
    """Result of ``read_pointcloud2``: the points and what was repaired on the way.

    ``points`` is ``(N, K)`` float32, columns in the requested order; ``missing_fields`` lists requested
    optional fields filled with the fill value; ``dropped_invalid`` counts points removed for a non-finite
    x/y/z; ``dense_flag_wrong`` is True when the message claimed ``is_dense`` but held invalid points;
    ``downsampled_from`` is the cloud's point count when more than ``max_points`` were strided away (else None).
    """

    points: np.ndarray
    missing_fields: tuple[str, ...]
    dropped_invalid: int
    dense_flag_wrong: bool
    downsampled_from: int | None = None


@dataclass(frozen=True)
class _Column:
    name: str
    offset: int
    dtype: np.dtype  # base type, native order


def _field_table(msg: Any) -> tuple[dict[str, tuple[int, int, int, int]], dict[str, int]]:
    """(name → (index, offset, datatype, count) of its first occurrence, name → index of a repeat); checks every
    field fits point_step."""
    point_step = int(msg.point_step)
    if len(msg.fields) > MAX_FIELDS:  # the per-field checks are Python: bound their number
        raise MessageConversionError(CLOUD, "fields", f"{len(msg.fields)} fields, more than {MAX_FIELDS}")
    table: dict[str, tuple[int, int, int, int]] = {}
    repeats: dict[str, int] = {}
    for index, field in enumerate(msg.fields):
        name, offset, datatype = str(field.name), int(field.offset), int(field.datatype)
        # A count of 0 is a field with no element (PCL writers leave "_" padding so); it occupies no bytes.
        count = int(field.count)
        if count < 0:
            raise MessageConversionError(CLOUD, f"fields[{index}].count", f"{count} is negative")
        base = POINTFIELD_DTYPES.get(datatype)
        if base is not None and offset + base.itemsize * count > point_step:
            raise MessageConversionError(
                CLOUD, "point_step", f"{point_step} B is smaller than field {name!r} (fields[{index}]: offset "
                f"{offset} + {count} x {base.itemsize} B)"
            )
        if offset < 0:
            raise MessageConversionError(CLOUD, f"fields[{index}].offset", f"{offset} is negative")
        if name in table:
            repeats.setdefault(name, index)
        else:
            table[name] = (index, offset, datatype, count)
    return table, repeats


def _columns(
    msg: Any, fields: Sequence[str], required: Sequence[str]
) -> tuple[list[_Column | None], tuple[str, ...]]:
    table, repeats = _field_table(msg)
    absent_required = [name for name in required if name not in table]
    if absent_required:
        present = ", ".join(table) or "none"
        raise MessageConversionError(
            CLOUD, "fields", f"required field(s) {', '.join(absent_required)} missing (present: {present})"
        )
    columns: list[_Column | None] = []
    missing: list[str] = []
    for requested in fields:
        element = 0
        name = requested
        match = _ELEMENT.match(requested)
        if match and requested not in table:
            name, element = match.group(1), int(match.group(2))
        if name not in table:
            if requested in required:
                raise MessageConversionError(CLOUD, "fields", f"required field {requested!r} missing")
            columns.append(None)
            missing.append(requested)
            continue
        index, offset, datatype, count = table[name]
        if name in repeats:
            # Padding fields may repeat (PCL's "_"); a repeated field that is read is ambiguous, and
            # sensor_msgs_py refuses such a cloud too (numpy field names must be unique).
            raise MessageConversionError(
                CLOUD, f"fields[{repeats[name]}].name", f"field {name!r} appears twice (fields[{index}] too)"
            )
        base = POINTFIELD_DTYPES.get(datatype)
        if base is None:
            raise MessageConversionError(
                CLOUD, f"fields[{index}].datatype", f"{datatype} of field {name!r} is not a PointField type (1..8)"
            )
        if count == 0:
            # sensor_msgs_py refuses such a field too ("Can't process fields with count = 0").
            raise MessageConversionError(
                CLOUD, f"fields[{index}].count", f"field {name!r} has count 0: it holds no value to read"
            )
        if element >= count:
            raise MessageConversionError(
                CLOUD, f"fields[{index}].count", f"field {name!r} has {count} element(s), {requested!r} asked"
            )
        columns.append(_Column(requested, offset + element * base.itemsize, base))
    return columns, tuple(missing)


def _gather(buf: np.ndarray, columns: list[_Column | None], height: int, width: int, point_step: int,
            row_step: int, big: bool, fill_value: float) -> np.ndarray:
    """Copy the requested columns of every point into a fresh (height*width, K) float32 array."""
    n_points = height * width
    present = [c for c in columns if c is not None]
    order = ">" if big else "<"
    out_dtype = np.dtype(np.float32)
    first = present[0]
    same_type = all(c.dtype == first.dtype for c in present)
    itemsize = first.dtype.itemsize
    base_offset = min(c.offset for c in present)
    if (same_type and all((c.offset - base_offset) % itemsize == 0 for c in present)
            and point_step % itemsize == 0 and row_step % itemsize == 0):
        # Fast path (CARLA, Velodyne, Ouster xyz+intensity): one strided 2-D view over the span of the
        # requested fields, then one gathering copy.
        span = (max(c.offset for c in present) - base_offset) // itemsize + 1
        view = np.ndarray(
            shape=(height, width, span), dtype=first.dtype.newbyteorder(order), buffer=buf, offset=base_offset,
            strides=(row_step, point_step, itemsize),
        )
        index = [(c.offset - base_offset) // itemsize if c is not None else -1 for c in columns]
        if all(c is not None for c in columns) and index == list(range(index[0], index[0] + len(index))):
            block = view[:, :, index[0]:index[0] + len(index)]
            return np.array(block, dtype=out_dtype, order="C").reshape(n_points, len(columns))
        out = np.empty((n_points, len(columns)), dtype=out_dtype)
        flat = view.reshape(n_points, span) if row_step == width * point_step else None
        for k, (column, i) in enumerate(zip(columns, index, strict=True)):
            if column is None:
                out[:, k] = fill_value
            elif flat is not None:
                out[:, k] = flat[:, i]
            else:
                out[:, k] = view[:, :, i].reshape(n_points)
        return out
    # General path: a structured dtype naming only the requested columns, one strided copy per column. Its
    # size is the extent of those columns, not point_step: a downsampled layout's point_step spans several
    # points, and a record that long would run past the buffer at the last kept point.
    names = [f"c{k}" for k, c in enumerate(columns) if c is not None]
    struct = np.dtype({
        "names": names,
        "formats": [c.dtype.newbyteorder(order) for c in present],
        "offsets": [c.offset for c in present],
        "itemsize": max(c.offset + c.dtype.itemsize for c in present),
    })
    records = np.ndarray(shape=(height, width), dtype=struct, buffer=buf, strides=(row_step, point_step))
    out = np.empty((n_points, len(columns)), dtype=out_dtype)
    for k, column in enumerate(columns):
        if column is None:
            out[:, k] = fill_value
        else:
            out[:, k] = records[f"c{k}"].reshape(n_points)
    return out


def _strides_for(height: int, width: int, max_points: int) -> tuple[int, int]:
    """(row stride, column stride) >= 1, smallest first along the row, so the strided grid has at most
    ``max_points`` points."""
    k = -(-height * width // max_points)
    col = min(k, width)
    rows_allowed = max(1, max_points // -(-width // col))
    return -(-height // rows_allowed), col


def read_pointcloud2(
    msg: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    drop_invalid: bool | None = None,
    required: Sequence[str] = REQUIRED_FIELDS,
    fill_value: float = 0.0,
    warnings: CountedWarnings | None = None,
    max_points: int | None = None,
) -> CloudConversion:
    """``sensor_msgs/PointCloud2`` → ``CloudConversion`` (``(N, K)`` float32 points plus the repairs made).

    See the module docstring for the rules. Organised clouds (``height > 1``) are flattened row-major.
    Repairs are counted on ``warnings`` when given. ``max_points``: strided down to at most this many points.
    """
    if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, int)
                                   or max_points < 1):
        raise ValueError(f"max_points must be an integer >= 1, got {max_points!r}")
    fields = tuple(fields)
    if not fields:
        raise ValueError("at least one field must be requested")
    columns, missing = _columns(msg, fields, required)
    if missing and warnings is not None:
        warnings.warn("pointcloud2.missing_field", f"{CLOUD}.fields: no {', '.join(missing)}; filled with "
                      f"{fill_value}")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise MessageConversionError(CLOUD, "width" if width < 0 else "height", "is negative")
    n_points = height * width
    if n_points == 0:
        return CloudConversion(np.empty((0, len(fields)), np.float32), missing, 0, False)
    if point_step <= 0:
        raise MessageConversionError(CLOUD, "point_step", f"is {point_step} for {n_points} points")
    if row_step < width * point_step:
        raise MessageConversionError(
            CLOUD, "row_step", f"{row_step} B is smaller than width*point_step = {width}*{point_step} B"
        )
    buf = as_byte_array(msg.data, CLOUD)
    if buf.size < row_step * height:
        raise MessageConversionError(
            CLOUD, "data", f"has {buf.size} B, fewer than row_step*height = {row_step}*{height} = "
            f"{row_step * height} B"
        )
    downsampled_from = None
    if max_points is not None and n_points > max_points:
        # Stride the layout itself: only the kept points are ever read.
        row_stride, col_stride = _strides_for(height, width, max_points)
        downsampled_from = n_points
        height, width = -(-height // row_stride), -(-width // col_stride)
        row_step, point_step = row_step * row_stride, point_step * col_stride
        n_points = height * width
        if warnings is not None:
            warnings.warn("pointcloud2.downsampled", f"{CLOUD}: {downsampled_from} points, more than max_points "
                          f"{max_points}; kept every {col_stride} point(s) of every {row_stride} row(s): {n_points}")
    if all(c is None for c in columns):
        points = np.full((n_points, len(fields)), fill_value, dtype=np.float32)
    else:
        # A float64 beyond float32's range becomes inf here, which the invalid-point rule below drops and counts.
        with np.errstate(over="ignore", invalid="ignore"):
            points = _gather(buf, columns, height, width, point_step, row_step, bool(msg.is_bigendian), fill_value)
    if drop_invalid is False:
        return CloudConversion(points, missing, 0, False, downsampled_from)
    result = _drop_invalid(msg, points, fields, required, missing, drop_invalid is None, warnings)
    return replace(result, downsampled_from=downsampled_from) if downsampled_from is not None else result


def _drop_invalid(msg: Any, points: np.ndarray, fields: tuple[str, ...], required: Sequence[str],
                  missing: tuple[str, ...], report_dense: bool, warnings: CountedWarnings | None) -> CloudConversion:
    # A whole-array reduction is several times cheaper than a per-row test; the per-row test runs only
    # when something is not finite.
    if np.isfinite(points).all():
        return CloudConversion(points, missing, 0, False)
    geometry = [k for k, name in enumerate(fields) if name in REQUIRED_FIELDS or name in required]
    if not geometry:
        return CloudConversion(points, missing, 0, False)
    valid = np.isfinite(points[:, geometry]).all(axis=1)
    n_invalid = int(valid.size - np.count_nonzero(valid))
    if n_invalid == 0:
        return CloudConversion(points, missing, 0, False)
    dense_wrong = bool(msg.is_dense)
    if warnings is not None:
        if dense_wrong and report_dense:
            warnings.warn("pointcloud2.dense_with_invalid",
                          f"{CLOUD}.is_dense: true but {n_invalid} point(s) have non-finite x/y/z; dropped")
        if n_invalid == valid.size:
            warnings.warn("pointcloud2.no_valid_points",
                          f"{CLOUD}.data: all {n_invalid} points have non-finite x/y/z; empty cloud")
    return CloudConversion(points[valid], missing, n_invalid, dense_wrong)


def pointcloud2_to_array(
    msg: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    drop_invalid: bool | None = None,
    required: Sequence[str] = REQUIRED_FIELDS,
    fill_value: float = 0.0,
    warnings: CountedWarnings | None = None,
    max_points: int | None = None,
) -> np.ndarray:
    """``sensor_msgs/PointCloud2`` → ``(N, K)`` float32 array, one column per requested field (metres for
    x/y/z, the sensor's own unit for intensity). Repairs are counted on ``warnings``; use
    ``read_pointcloud2`` to get them back as values. Raises MessageConversionError naming the field for a
    malformed cloud. ``max_points``: strided down to at most this many points (counted)."""
    return read_pointcloud2(msg, fields, drop_invalid, required, fill_value, warnings, max_points).points


def lidar_sweep_points(
    msg: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    warnings: CountedWarnings | None = None,
    max_points: int | None = None,
) -> np.ndarray:
    """``pointcloud2_to_array`` for a lidar sweep the driving models will see: a cloud that had points but none
    with a finite x/y/z is refused (MessageConversionError), because an empty grid would tell the models the
    road is clear; a blinded sensor must look like a missing one. A cloud with no points at all passes."""
    cloud = read_pointcloud2(msg, fields, None, REQUIRED_FIELDS, 0.0, warnings, max_points)
    if cloud.points.shape[0] == 0 and cloud.dropped_invalid > 0:
        raise MessageConversionError(CLOUD, "data", f"none of its {cloud.dropped_invalid} points has a finite "
                                                    "x/y/z; the sweep is not used")
    return cloud.points


def pointfield_dtype(datatype: int) -> np.dtype:
    """numpy dtype of a PointField datatype constant (1..8); KeyError for anything else."""
    return POINTFIELD_DTYPES[int(datatype)]
