"""A route as the scorer sees it: a dense polyline along the centre of the lane to follow, in a metric map frame
(x east / forward, y left: ROS REP 103, as the CARLA bridge publishes odometry), with the lateral extent of the
lanes that count as "route lanes" (all lanes of the route's direction), and the speed limit along it.

Files (``load_route``): CSV with a header containing ``x,y`` (optionally ``speed_limit_kph``), or JSON
``{"points": [[x, y], ...], "lane_bounds_m": [right, left], "speed_limit_kph": [...] | number}`` (what
``regionadapt drive`` writes next to its bag), or a CARLA leaderboard route XML (``<route><waypoints><position
x= y= z=/>``; CARLA's left-handed y is negated into the ROS frame, and consecutive waypoints are joined by
straight lines, so the file must be dense along curves).
"""

from __future__ import annotations

import array
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.errors import DataError

DEFAULT_LANE_WIDTH_M = 3.5
MAX_SPACING_M = 2.0  # a polyline is resampled to at most this spacing
# A route of 2 m spacing across 100 km is ~1 MB of CSV; a file beyond this is refused unread.
ROUTE_MAX_BYTES = 32 * 1024 * 1024
MAX_ROUTE_LENGTH_M = 1_000_000.0  # 500 000 points at MAX_SPACING_M


@dataclass
class RoutePath:
    """``points`` (N, 2) in metres; ``lane_bounds`` = (right, left) lateral limits [m, + = left of the line] of
    the route lanes, one pair for the whole route or an (N, 2) array per point; ``speed_limits`` (N,) m/s per
    point or None."""

    points: np.ndarray
    lane_bounds: tuple[float, float] | np.ndarray = (-DEFAULT_LANE_WIDTH_M / 2, DEFAULT_LANE_WIDTH_M / 2)
    speed_limits: np.ndarray | None = None
    cumulative: np.ndarray = field(init=False, repr=False)
    bounds: np.ndarray = field(init=False, repr=False)  # (N, 2) per point after resampling
    given_spacing_m: float = field(init=False, repr=False)  # the longest step between the points as given

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] < 2 or len(pts) < 2:
            raise ValueError(f"a route needs at least two (x, y) points, got shape {pts.shape}")
        if not np.all(np.isfinite(pts[:, :2])):
            raise ValueError("route points must be finite")
        pts = pts[:, :2]
        bounds = np.asarray(self.lane_bounds, float)
        if bounds.shape == (2,):
            bounds = np.tile(bounds, (len(pts), 1))
        if bounds.shape != (len(pts), 2) or not np.all(np.isfinite(bounds)):
            raise ValueError(f"lane bounds must be a (right, left) pair or one per point, got shape {bounds.shape}")
        if not np.all(bounds[:, 0] < bounds[:, 1]):
            raise ValueError("lane bounds must be (right, left) with right < left")
        with np.errstate(over="ignore", invalid="ignore"):  # coordinates too large to subtract: refused below
            steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        keep = np.concatenate(([True], steps > 1e-6))
        limits = None if self.speed_limits is None else np.asarray(self.speed_limits, float)[keep]
        if limits is not None and (limits.shape != (int(keep.sum()),) or not np.all(limits > 0)
                                   or not np.all(np.isfinite(limits))):
            raise ValueError("speed limits must be one positive, finite value per point")
        pts, bounds = pts[keep], bounds[keep]
        if len(pts) < 2:
            raise ValueError("a route needs at least two distinct points")
        with np.errstate(over="ignore", invalid="ignore"):
            given_m = float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
        if not given_m <= MAX_ROUTE_LENGTH_M:  # also inf, from coordinates too large to subtract
            raise ValueError(f"the route is {given_m:.3g} m long, more than {MAX_ROUTE_LENGTH_M / 1000:.0f} km: "
                             "are the coordinates in metres, in a local map frame?")
        self.given_spacing_m = float(np.max(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
        pts, extra = _resample(pts, [bounds[:, 0], bounds[:, 1]] + ([limits] if limits is not None else []))
        self.points = pts
        self.bounds = np.stack((extra[0], extra[1]), axis=1)
        self.speed_limits = extra[2] if limits is not None else None
        uniform = np.all(self.bounds == self.bounds[0])
        self.lane_bounds = (float(self.bounds[0, 0]), float(self.bounds[0, 1])) if uniform else self.bounds
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        self.cumulative = np.concatenate(([0.0], np.cumsum(seg)))

    @property
    def length(self) -> float:
        return float(self.cumulative[-1])

    @property
    def end(self) -> np.ndarray:
        return self.points[-1]

    def lane_bounds_at(self, s: float) -> tuple[float, float]:
        return (float(np.interp(s, self.cumulative, self.bounds[:, 0])),
                float(np.interp(s, self.cumulative, self.bounds[:, 1])))

    def speed_limit_at(self, s: float) -> float | None:
        if self.speed_limits is None:
            return None
        return float(np.interp(s, self.cumulative, self.speed_limits))

    def project(self, x: float, y: float, start: int = 0, window: int | None = None) -> tuple[float, float, int]:
        """(station s along the route [m], signed lateral offset [m, + = left], segment index) of the point's
        projection on segments [start, start + window) (all segments when window is None)."""
        n_seg = len(self.points) - 1
        a = max(0, min(start, n_seg - 1))
        b = n_seg if window is None else min(n_seg, a + window)
        p0 = self.points[a:b]
        d = self.points[a + 1:b + 1] - p0
        rel = np.array([x, y]) - p0
        length_sq = np.einsum("ij,ij->i", d, d)
        u = np.clip(np.einsum("ij,ij->i", rel, d) / length_sq, 0.0, 1.0)
        foot = p0 + u[:, None] * d
        dist_sq = np.einsum("ij,ij->i", np.array([x, y]) - foot, np.array([x, y]) - foot)
        k = int(np.argmin(dist_sq))
        seg_len = math.sqrt(length_sq[k])
        cross = d[k, 0] * rel[k, 1] - d[k, 1] * rel[k, 0]
        lateral = math.copysign(math.sqrt(dist_sq[k]), cross) if dist_sq[k] > 0 else 0.0
        return float(self.cumulative[a + k] + u[k] * seg_len), lateral, a + k

    def heading_at(self, index: int) -> float:
        i = max(0, min(index, len(self.points) - 2))
        d = self.points[i + 1] - self.points[i]
        return math.atan2(d[1], d[0])

    def to_json(self) -> dict:
        # full precision: a route read back scores exactly as the one written
        bounds = self.lane_bounds if isinstance(self.lane_bounds, tuple) else self.bounds.tolist()
        out: dict = {"points": self.points.tolist(), "lane_bounds_m": list(bounds)}
        if self.speed_limits is not None:
            out["speed_limit_kph"] = (self.speed_limits * 3.6).tolist()
        return out


def _resample(pts: np.ndarray, values: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Insert points so that no segment is longer than MAX_SPACING_M (straight lines between the given points),
    interpolating the per-point ``values`` linearly."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    if np.all(seg <= MAX_SPACING_M):
        return pts, values
    n = np.maximum(1, np.ceil(seg / MAX_SPACING_M).astype(int))
    # fractional index of every output point along the input polyline
    frac = np.concatenate([[0.0]] + [i + np.arange(1, k + 1) / k for i, k in enumerate(n)])
    idx = np.arange(len(pts), dtype=float)
    out = np.stack([np.interp(frac, idx, pts[:, j]) for j in range(2)], axis=1)
    return out, [np.interp(frac, idx, v) for v in values]


def read_route_document(path: str | Path) -> str:
    """The text of a route file: a bounded read of a regular file (a FIFO, a device or a file over
    ``ROUTE_MAX_BYTES`` is refused before it is read), UTF-8. DataError names the file and the problem."""
    return safe_read.decode_utf8(read_route_bytes(path), path, DataError)


def read_route_bytes(path: str | Path) -> bytes:
    """The bytes of a route file, read as ``read_route_document`` reads it, undecoded: an XML file says its
    own encoding in its declaration (``encoding="ISO-8859-1"``), which the XML parser honours."""
    try:
        return safe_read.read_bytes(path, max_bytes=ROUTE_MAX_BYTES, error=DataError)
    except FileNotFoundError:
        raise DataError(path, "cannot read the route: no such file") from None
    except OSError as exc:
        raise DataError(path, f"cannot read the route: {exc.strerror or exc}") from None


def route_json(text: str, path: str | Path) -> dict:
    """A route JSON document parsed strictly (duplicate keys, NaN, nesting: ``core.strict_parse``)."""
    from regionadapt_ros.core.strict_parse import loads_json

    doc = loads_json(text, path, error=DataError)
    if not isinstance(doc, dict):
        raise DataError(path, f"not a route file: a JSON route is an object with \"points\", not a "
                              f"{type(doc).__name__}")
    return doc


def load_route(path: str | Path, lane_width_m: float | None = None, speed_limit_kph: float | None = None,
               route_id: str | None = None) -> RoutePath:
    """A route file (CSV, JSON or CARLA leaderboard XML, see the module doc). ``lane_width_m`` overrides the
    route lanes to ±width/2 around the line; ``speed_limit_kph`` sets one limit for the whole route;
    ``route_id`` picks a ``<route id=...>`` of a leaderboard file that holds several (required then).
    DataError names the file and the problem."""
    path = Path(path)
    if route_id is not None and path.suffix.lower() != ".xml":
        raise DataError(path, "a route id picks one route of a leaderboard routes XML; this file holds one route")
    is_xml = path.suffix.lower() == ".xml"
    raw = read_route_bytes(path)
    text = "" if is_xml else safe_read.decode_utf8(raw, path, DataError)
    limits: Sequence[float] | None = None
    bounds: tuple[float, float] | np.ndarray | None = None
    try:
        if path.suffix.lower() == ".json":
            doc = route_json(text, path)
            pts = np.asarray(_json_numbers(doc["points"], "points", 2), float)
            if "lane_bounds_m" in doc:
                bounds = np.asarray(_json_numbers(doc["lane_bounds_m"], "lane_bounds_m", None), float)
            lim = doc.get("speed_limit_kph")
            if _is_number(lim):
                limits = [float(lim) / 3.6] * len(pts)
            elif isinstance(lim, list):
                limits = [float(v) / 3.6 for v in _json_numbers(lim, "speed_limit_kph", 1)]
            elif lim is not None:
                raise ValueError(f"speed_limit_kph must be a number or a list of numbers, got {type(lim).__name__}")
        elif is_xml:
            pts = _leaderboard_xml_points(raw, path, route_id)
        else:
            pts, limits = _csv_points(text)
    except DataError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, SyntaxError, csv.Error) as exc:  # SyntaxError: XML
        raise DataError(path, f"not a route file: {type(exc).__name__}: {exc}") from exc
    if lane_width_m is not None:
        bounds = (-lane_width_m / 2.0, lane_width_m / 2.0)
    if speed_limit_kph is not None:
        limits = [speed_limit_kph / 3.6] * len(pts)
    if limits is not None and len(limits) != len(pts):
        raise DataError(path, f"{len(limits)} speed limits for {len(pts)} route points: give one per point, or "
                              "one number for the whole route")
    try:
        return RoutePath(pts, bounds if bounds is not None else (-DEFAULT_LANE_WIDTH_M / 2, DEFAULT_LANE_WIDTH_M / 2),
                         None if limits is None else np.asarray(limits, float))
    except ValueError as exc:
        raise DataError(path, str(exc)) from exc


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_numbers(value: object, key: str, depth: int | None) -> object:
    """``value`` when it is a number, or lists of numbers nested ``depth`` deep (any depth when None); numpy
    would otherwise read true as 1 and "0" as 0."""
    from regionadapt_ros.core.strict_parse import nested_number_problem

    problem = nested_number_problem(value, depth)
    if problem is not None:
        kind, item = problem
        if kind == "list":
            raise ValueError(f"{key}: expected a list, found {json.dumps(item)[:40]}")
        raise ValueError(f"{key}: {json.dumps(item)[:40]} is not a number")
    return value


def _csv_points(text: str) -> tuple[np.ndarray, list[float] | None]:
    """(points, speed limits [m/s] or None) of a CSV route, read row by row: a list of dicts per row cost a
    hundred times the file's size in memory."""
    rows = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(rows, [])]
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        raise ValueError(f"column(s) {', '.join(twice)} appear more than once in the header")
    if "x" not in header or "y" not in header:
        raise ValueError("a CSV route needs a header with x and y columns")
    columns = [header.index("x"), header.index("y")]
    has_limit = "speed_limit_kph" in header
    if has_limit:
        columns.append(header.index("speed_limit_kph"))
    width = max(columns) + 1
    values = array.array("d")
    for row in rows:
        if not row:
            continue
        if len(row) < width:
            raise ValueError(f"line {rows.line_num}: {len(row)} cell(s), the header has {len(header)}")
        values.extend(float(row[k]) for k in columns)
    table = (np.frombuffer(values, dtype=np.float64).reshape(-1, len(columns)) if values
             else np.empty((0, len(columns))))
    limits = (table[:, 2] / 3.6).tolist() if has_limit else None
    return table[:, :2].copy(), limits


def leaderboard_route_ids(text: str | bytes) -> list[str]:
    """The ``id`` of every ``<route>`` in a leaderboard routes XML (bytes: decoded as its declaration says), in
    file order ("" for a route without)."""
    return [r.attrib.get("id", "") for r in _leaderboard_routes(text)]


def _leaderboard_routes(text: str | bytes) -> list:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    return [root] if root.tag == "route" else root.findall("route")


def _listed(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _leaderboard_xml_points(text: str | bytes, path: Path, route_id: str | None = None) -> np.ndarray:
    routes = _leaderboard_routes(text)
    if not routes:
        raise ValueError("no <route> element")
    ids = [r.attrib.get("id", "") for r in routes]
    if route_id is None:
        # The leaderboard's files hold tens of routes; scoring the first one silently would score the wrong drive.
        if len(routes) > 1:
            raise DataError(path, f"holds {len(routes)} routes (ids {_listed(ids)}); say which one the bag drove "
                                  "with --route-id")
        route = routes[0]
    else:
        matches = [r for r, i in zip(routes, ids, strict=True) if i == route_id]
        if not matches:
            raise DataError(path, f"no route with id {route_id!r} (the file has {_listed(ids)})")
        if len(matches) > 1:
            raise DataError(path, f"{len(matches)} routes have id {route_id!r}; ids must be unique")
        route = matches[0]
    positions = route.findall("./waypoints/position") or route.findall("./waypoint")
    if len(positions) < 2:
        raise ValueError("the route has fewer than two waypoints")
    # CARLA's map frame is left-handed (y to the right); the ROS bridge publishes y to the left.
    return np.array([[float(p.attrib["x"]), -float(p.attrib["y"])] for p in positions])
