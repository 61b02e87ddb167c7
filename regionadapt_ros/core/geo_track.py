"""GNSS tracks from CSV files, as records the region resolver reads (``stamp_s, lat, lon, status, h_std_m``).

Accepted column names (case-insensitive, any order, other columns ignored):

- time, seconds: ``t``, ``time``, ``stamp_s``, ``time_s`` or ``boot_time_s`` (the comma2k19 u-blox export);
- latitude, degrees: ``lat``, ``latitude`` or ``latitude_deg``;
- longitude, degrees: ``lon``, ``lng``, ``longitude`` or ``longitude_deg``;
- optional horizontal standard deviation, metres: ``h_std``, ``h_std_m`` (empty cell = unknown);
- optional NavSatStatus: ``status`` (default 0 = fix; -1 = no fix).

``nan`` or an empty cell in lat/lon is kept as no position (a receiver without a fix writes it; the resolver
holds the region on it); a cell that is not a number is refused with a DataError naming the file, line and
column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.errors import DataError

MAX_TRACK_BYTES = 256 << 20  # a day of 10 Hz fixes is about 40 MiB of CSV

_TIME_COLUMNS = ("t", "time", "stamp_s", "time_s", "boot_time_s")
_LAT_COLUMNS = ("lat", "latitude", "latitude_deg")
_LON_COLUMNS = ("lon", "lng", "longitude", "longitude_deg")
_H_STD_COLUMNS = ("h_std", "h_std_m")
_STATUS_COLUMNS = ("status",)


@dataclass(frozen=True)
class TrackFix:
    """One fix of a track: ``stamp_s`` seconds, ``lat``/``lon`` WGS84 degrees, ``status`` NavSatStatus
    (-1 = no fix), ``h_std_m`` horizontal standard deviation in metres or None when unknown."""

    stamp_s: float
    lat: float
    lon: float
    status: int = 0
    h_std_m: float | None = None


def _pick(header: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def load_track_csv(path: str | Path) -> list[TrackFix]:
    """Read a CSV track (see the module docstring); fixes in time order (a stable sort: file order among equal
    stamps)."""
    path = Path(path)
    try:
        text = safe_read.read_text(path, max_bytes=MAX_TRACK_BYTES, error=DataError)
    except FileNotFoundError as exc:
        raise DataError(path, "track file not found") from exc
    try:
        fixes = _track_rows(path, csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:  # a cell over csv's field limit (128 KiB), a NUL byte
        raise DataError(path, f"not a CSV track ({exc})") from None
    if not fixes:
        raise DataError(path, "track has no rows")
    # In time order, as a bag's fixes are read (by log time): a logger that writes newest first is common, and
    # the resolver would hold every fix but the first as out of order.
    return sorted(fixes, key=lambda fix: fix.stamp_s)


def _track_rows(path: Path, reader: csv.DictReader) -> list[TrackFix]:
    header = list(reader.fieldnames or [])
    folded = [column.strip().lower() for column in header]
    twice = sorted({column for column in folded if column and folded.count(column) > 1})
    if twice:  # DictReader would silently keep the last of them
        raise DataError(path, f"column(s) {', '.join(map(repr, twice))} appear more than once in the header")
    columns = {
        "time": _pick(header, _TIME_COLUMNS),
        "lat": _pick(header, _LAT_COLUMNS),
        "lon": _pick(header, _LON_COLUMNS),
    }
    missing = [key for key, column in columns.items() if column is None]
    if missing:
        wanted = {"time": _TIME_COLUMNS, "lat": _LAT_COLUMNS, "lon": _LON_COLUMNS}
        needs = "; ".join(f"{key}: one of {', '.join(wanted[key])}" for key in missing)
        raise DataError(path, f"missing column(s) ({needs}); header is {header}")
    h_std_column = _pick(header, _H_STD_COLUMNS)
    status_column = _pick(header, _STATUS_COLUMNS)

    fixes = []
    for row in reader:
        line = reader.line_num

        def number(column: str, *, line: int = line, row: dict[str, str] = row) -> float:
            text = (row.get(column) or "").strip()
            try:
                return float(text)
            except ValueError:
                raise DataError(path, f"line {line}: column {column!r}: {text!r} is not a number") from None

        h_std: float | None = None
        if h_std_column is not None and (row.get(h_std_column) or "").strip():
            h_std = number(h_std_column)
        status = 0
        if status_column is not None and (row.get(status_column) or "").strip():
            status_value = number(status_column)
            if not math.isfinite(status_value) or status_value != int(status_value):
                raise DataError(path, f"line {line}: column {status_column!r}: status must be an integer")
            status = int(status_value)
        stamp_s = number(columns["time"])  # type: ignore[arg-type]
        if not math.isfinite(stamp_s):
            raise DataError(path, f"line {line}: column {columns['time']!r}: time must be finite")

        def position(column: str, *, row: dict[str, str] = row) -> float:
            # an empty cell is how NMEA-to-CSV converters write a sentence without a fix: no position, as nan
            return math.nan if not (row.get(column) or "").strip() else number(column)

        fixes.append(
            TrackFix(
                stamp_s=stamp_s,
                lat=position(columns["lat"]),  # type: ignore[arg-type]
                lon=position(columns["lon"]),  # type: ignore[arg-type]
                status=status,
                h_std_m=h_std,
            )
        )
    return fixes
