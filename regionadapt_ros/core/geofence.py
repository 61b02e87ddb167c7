"""Geofences: GeoJSON region boundaries, indexed for fast lookup, resolved by priority.

File format
    A GeoJSON (RFC 7946, WGS84 lon/lat) ``FeatureCollection`` of ``Polygon`` / ``MultiPolygon`` features (holes
    allowed). Every feature needs the properties ``region`` (non-empty string, the region id the models are
    trained for) and ``priority`` (a finite number). An optional ``name`` property is kept for reports. Several
    features may share a region id.

Resolution
    A point belongs to the fence that contains it (its boundary included) with the highest ``priority``; among
    equal priorities the smaller fence wins (a district inside a city wins over the city), and among equal areas
    the feature that comes first in the file. A point inside no fence belongs to the default region.
    The part of the plane a region wins under this rule is its *territory*; the territories of all regions,
    the default region included, partition the plane. Margins (see ``signed_distance_m``) are measured to the
    territory boundary, so a district that is shadowed by a higher-priority fence is not "entered" there.

Metric frame
    Fences are transformed once, at load time, into an azimuthal-equidistant projection centred on the centre of
    the fence set's bounding box. Distances and margins are in metres in that frame, areas in m². The scale
    error is below 0.01 % within 100 km of the centre and 0.4 % at 1000 km, so one fence file should cover a
    metropolitan area or a country, not a continent. What the frame cannot hold is refused with the reason, never
    projected into a sliver: a vertex farther than ``MAX_RADIUS_KM`` from the centre (a world-sized fence, or a set
    that crosses the antimeridian), or a fence spanning more than 180 degrees of longitude (around a pole).

Invalid polygons (a self-intersecting ring, a hole outside its shell, ...)
    Refused by default: the ConfigError names every invalid feature, gives shapely's ``explain_validity``
    (which includes the location of the problem) and says what ``shapely.make_valid`` would produce (kind,
    number of parts, area), because a silently repaired bow-tie can cover a very different area than the
    author meant. With ``repair=True`` (CLI ``--repair``) ``make_valid`` is applied to each polygon, the parts
    are united (overlapping parts of a MultiPolygon are one area, not a hole) and only polygonal parts are
    kept, and every repair is counted as a warning (kind ``geofence_repaired``) and listed in
    ``GeofenceSet.repairs``. A feature whose repair leaves no area is refused even with ``repair=True``.

Thread safety: a GeofenceSet is immutable after construction except for lazily built, cached territories;
use one instance per thread if several threads query margins concurrently.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from regionadapt_ros.core import strict_parse
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geofence_features import (
    _describe,
    _parse_feature,
    _ParsedFeature,
    _polygonal_part,
    region_name,
    region_name_problem,
    repaired_polygon,
)

MAX_RADIUS_KM = 2000.0  # azimuthal scale error 1.7 % there (0.4 % at 1000 km)
MAX_GEOJSON_BYTES = 64 << 20
# Pairs of fences that touch or overlap. Neighbourhoods that tile a city touch six or so neighbours each (a
# square grid, corners included: eight), three or four pairs per fence, so 100,000 pairs allows some 25,000
# fences. The overlap report and the territories cost grows with the pairs (3,000 fences stacked on one another:
# minutes; at this limit: seconds), so a file past it is refused at load rather than stalling a node on its
# first fix.
MAX_INTERSECTING_PAIRS = 100_000
_PAIR_QUERY_CHUNK = 256

# GeoJSON 2008 "crs" members that still mean WGS84 lon/lat; anything else is a projected file we cannot read.
_WGS84_CRS_NAMES = frozenset(
    {
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "urn:ogc:def:crs:OGC::CRS84",
        "EPSG:4326",
        "urn:ogc:def:crs:EPSG::4326",
    }
)


@dataclass(frozen=True)
class Fence:
    """One GeoJSON feature after validation.

    ``geometry_lonlat`` is in degrees (x = lon, y = lat); ``geometry_m`` in metres in the set's local frame.
    ``index`` is the feature's position in the file's ``features`` array.
    """

    index: int
    region: str
    priority: float
    name: str | None
    geometry_lonlat: Polygon | MultiPolygon
    geometry_m: Polygon | MultiPolygon
    area_m2: float
    repaired: bool


class BoundaryDistance:
    """Distance from a point to a (multi)line boundary in O(log n) of its vertices.

    ``shapely.distance`` to a boundary walks every segment: about 30 ms per fix for a fence of a million
    vertices (a coastline, a finely digitised city limit), called several times per fix by the resolver. A
    large boundary is cut into pieces of ``PIECE`` segments held in an STRtree, and the distance is the nearest
    piece's; a small one is measured directly."""

    PIECE = 64
    DIRECT_MAX_VERTICES = 2048

    def __init__(self, boundary: BaseGeometry) -> None:
        self._direct: BaseGeometry | None = None
        self._tree: shapely.STRtree | None = None
        if shapely.get_num_coordinates(boundary) <= self.DIRECT_MAX_VERTICES:
            self._direct = boundary
            return
        pieces = []
        for line in shapely.get_parts(boundary):
            coords = shapely.get_coordinates(line)
            for start in range(0, max(len(coords) - 1, 1), self.PIECE):
                chunk = coords[start:start + self.PIECE + 1]
                pieces.append(LineString(chunk) if len(chunk) >= 2 else Point(chunk[0]))
        self._tree = shapely.STRtree(pieces)

    def __call__(self, x_m: float, y_m: float) -> float:
        point = Point(x_m, y_m)
        if self._direct is not None:
            return float(shapely.distance(self._direct, point))
        assert self._tree is not None
        _, distances = self._tree.query_nearest(point, return_distance=True, all_matches=False)
        return float(distances[0])


def _comparable_area(fence: Fence) -> float:
    """A fence's area as the "smaller area" rule compares it: to the square metre. Two tiles drawn the same size
    differ by micro-square-metres after projection, which would decide every tie and never leave it to file
    order, as documented."""
    return float(round(fence.area_m2))


@dataclass(frozen=True)
class Candidate:
    """A fence near a query point. ``signed_distance_m`` > 0 inside the fence (distance to its boundary),
    < 0 outside (minus the distance to the fence)."""

    region: str
    priority: float
    area_m2: float
    feature_index: int
    signed_distance_m: float


@dataclass(frozen=True)
class Overlap:
    """Two fences of different regions that overlap by ``area_m2``; ``winner`` is the region that the
    resolution rule gives the overlap to, ``rule`` why ("priority", "smaller area" or "file order")."""

    region_a: str
    region_b: str
    feature_a: int
    feature_b: int
    area_m2: float
    winner: str
    rule: str


class LocalProjection:
    """WGS84 lon/lat ⇄ a local azimuthal-equidistant frame (x east, y north, metres) centred on (lat0, lon0)."""

    def __init__(self, lat0_deg: float, lon0_deg: float) -> None:
        self.lat0_deg = float(lat0_deg)
        self.lon0_deg = float(lon0_deg)
        self.crs = pyproj.CRS.from_proj4(
            f"+proj=aeqd +lat_0={self.lat0_deg:.9f} +lon_0={self.lon0_deg:.9f} +datum=WGS84 +units=m +no_defs"
        )
        self._forward = pyproj.Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self._inverse = pyproj.Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    def forward(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) in degrees → (x, y) in metres."""
        x, y = self._forward.transform(lon_deg, lat_deg)
        return float(x), float(y)

    def forward_many(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arrays of lat, lon (degrees, same shape) → arrays x, y (metres)."""
        x, y = self._forward.transform(np.asarray(lon_deg, dtype=float), np.asarray(lat_deg, dtype=float))
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def inverse(self, x_m: float, y_m: float) -> tuple[float, float]:
        """(x, y) in metres → (lat, lon) in degrees."""
        lon, lat = self._inverse.transform(x_m, y_m)
        return float(lat), float(lon)

    def geometry_to_metres(self, geometry: BaseGeometry) -> BaseGeometry:
        """Transform a lon/lat geometry into the local frame (vertex by vertex)."""

        def _xy(coords: np.ndarray) -> np.ndarray:
            x, y = self._forward.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([x, y])

        return shapely.transform(geometry, _xy)


def _check_within_projection(source: str, parsed: Sequence[_ParsedFeature], projection: LocalProjection,
                             lon_range: tuple[float, float]) -> None:
    """Refuse a fence the local frame cannot hold: a vertex farther than MAX_RADIUS_KM from its centre.
    (Azimuthal equidistant: a vertex's distance from the origin in the frame is its true distance.)"""
    limit_m = MAX_RADIUS_KM * 1000.0
    for p in parsed:
        coords = shapely.get_coordinates(p.geometry)
        x, y = projection.forward_many(coords[:, 1], coords[:, 0])
        reach = np.hypot(x, y)
        farthest = int(np.nanargmax(reach)) if np.isfinite(reach).any() else 0
        if not np.isfinite(reach).all() or float(reach[farthest]) > limit_m:
            lon, lat = coords[farthest]
            crosses = " (the set spans longitudes {:.1f}..{:.1f}: sets across the antimeridian are not supported)" \
                .format(*lon_range) if lon_range[1] - lon_range[0] > 180.0 else ""
            raise ConfigError(source, f"{p.where}: vertex ({lat:.4f}, {lon:.4f}) lies "
                              f"{float(reach[farthest]) / 1000.0:.0f} km from the centre of the fence set "
                              f"({projection.lat0_deg:.4f}, {projection.lon0_deg:.4f}); the local metric projection "
                              f"holds fences within {MAX_RADIUS_KM:.0f} km of it{crosses}. Split the file by area "
                              "and leave 'everywhere else' to the default region")


class GeofenceSet:
    """A validated, indexed set of fences and the default region for points outside all of them.

    Build with ``GeofenceSet.load(path, default_region)`` or ``GeofenceSet.from_geojson(obj, default_region)``.
    Query in WGS84 (``lookup``, ``candidates``, ``signed_distance_m``) or, to avoid re-projecting, in the local
    metric frame (``project`` then the ``*_xy`` methods).
    """

    def __init__(
        self,
        fences: Sequence[Fence],
        default_region: str,
        projection: LocalProjection,
        source: str = "<geojson>",
        repairs: Sequence[str] = (),
    ) -> None:
        if not isinstance(default_region, str) or not default_region.strip():
            raise ConfigError("default_region", f"must be a non-empty string, got {_describe(default_region)}")
        problem = region_name_problem(default_region.strip())
        if problem:
            raise ConfigError("default_region", f"{_describe(default_region)} {problem}")
        if not fences:
            raise ConfigError(source, "no fences")
        self.fences: tuple[Fence, ...] = tuple(fences)
        self.default_region = region_name(default_region)
        self.projection = projection
        self.source = source
        self.repairs: tuple[str, ...] = tuple(repairs)

        # Per region its fences' positions, in file order: reports walk every region, which scanning all fences
        # for each made quadratic (minutes for a city's 20,000 parcels).
        self._by_region: dict[str, list[int]] = {}
        for i, fence in enumerate(self.fences):
            self._by_region.setdefault(fence.region, []).append(i)
        self._geoms = np.array([f.geometry_m for f in self.fences], dtype=object)
        shapely.prepare(self._geoms)
        self._boundaries = np.array([f.geometry_m.boundary for f in self.fences], dtype=object)
        self._tree = shapely.STRtree(self._geoms)
        # rank[i] = position of fence i in resolution order (lower wins): priority high → area small → file order.
        order = sorted(range(len(self.fences)), key=lambda i: self._order_key(self.fences[i]))
        self._rank = np.empty(len(self.fences), dtype=np.int64)
        self._rank[order] = np.arange(len(self.fences))
        self._check_intersecting_pairs()

        # Built on first use: the resolver needs them, a plain lookup does not.
        self._territories: dict[str, BaseGeometry] = {}
        self._territory_boundaries: dict[str, BoundaryDistance] = {}
        self._non_default_area: BaseGeometry | None = None
        self._non_default_boundary: BoundaryDistance | None = None

    def _check_intersecting_pairs(self) -> None:
        # Queried in chunks and stopped at the limit, so a hostile file costs at most about the limit to count.
        pairs = 0
        n = len(self._geoms)
        for start in range(0, n, _PAIR_QUERY_CHUNK):
            chunk = self._geoms[start : start + _PAIR_QUERY_CHUNK]
            left, right = self._tree.query(chunk, predicate="intersects")
            pairs += int(np.count_nonzero(left + start < right))
            if pairs > MAX_INTERSECTING_PAIRS:
                raise ConfigError(
                    self.source,
                    f"more than {MAX_INTERSECTING_PAIRS} pairs of fences touch or overlap "
                    f"(counted {pairs} within the first {min(start + len(chunk), n)} of {n} fences); "
                    "a geofence file is a map of regions, not a stack of copies: merge the fences of each region",
                )

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | Path,
        default_region: str,
        *,
        repair: bool = False,
        warnings: CountedWarnings | None = None,
    ) -> GeofenceSet:
        """Read and validate a GeoJSON fence file; raises ConfigError naming the file and the problem."""
        path = Path(path)
        try:
            data = strict_parse.load_json_file(path, max_bytes=MAX_GEOJSON_BYTES)
        except FileNotFoundError as exc:
            raise ConfigError(path, "geofence file not found") from exc
        return cls.from_geojson(data, default_region, source=str(path), repair=repair, warnings=warnings)

    @classmethod
    def from_geojson(
        cls,
        data: Any,
        default_region: str,
        *,
        source: str = "<geojson>",
        repair: bool = False,
        warnings: CountedWarnings | None = None,
        feature_numbers: Sequence[int] | None = None,
    ) -> GeofenceSet:
        """Validate a parsed GeoJSON FeatureCollection (see the module docstring) and index it.
        ``feature_numbers``: what messages call each feature (``features[N]``) when the document was made from
        another file, whose numbering the user knows; by default its position here."""
        if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
            got = data.get("type") if isinstance(data, Mapping) else type(data).__name__
            raise ConfigError(source, f"top level must be a GeoJSON FeatureCollection, got {_describe(got)}")
        crs = data.get("crs")
        if crs is not None:
            # GeoJSON 2008: {"type": "name", "properties": {"name": "..."}}; any other shape is not one we know.
            crs_properties = crs.get("properties") if isinstance(crs, Mapping) else None
            crs_name = crs_properties.get("name") if isinstance(crs_properties, Mapping) else None
            if not isinstance(crs_name, str) or crs_name not in _WGS84_CRS_NAMES:
                shown = crs_name if crs_name is not None else crs
                raise ConfigError(source, f"crs {_describe(shown)} is not WGS84 lon/lat (EPSG:4326 / CRS84); "
                                  "expected {\"type\": \"name\", \"properties\": {\"name\": \"EPSG:4326\"}} or no crs")
        features = data.get("features")
        if not isinstance(features, list):
            raise ConfigError(source, f"'features' must be an array, got {_describe(features)}")
        if not features:
            raise ConfigError(source, "'features' is empty: at least one fence is needed")

        if feature_numbers is not None and len(feature_numbers) != len(features):
            raise ValueError(f"{len(feature_numbers)} feature numbers for {len(features)} features")
        parsed = [_parse_feature(source, i, feature, i if feature_numbers is None else feature_numbers[i])
                  for i, feature in enumerate(features)]

        min_lon, min_lat, max_lon, max_lat = shapely.total_bounds([p.geometry for p in parsed])
        projection = LocalProjection((min_lat + max_lat) / 2.0, (min_lon + max_lon) / 2.0)
        _check_within_projection(source, parsed, projection, (min_lon, max_lon))

        invalid = [p for p in parsed if not p.geometry.is_valid]
        repairs: list[str] = []
        repaired_indices: set[int] = set()
        problems: list[str] = []
        for p in invalid:
            reason = explain_validity(p.geometry)
            fixed = repaired_polygon(p.geometry)
            if fixed is None:
                problems.append(f"{p.where}: invalid polygon ({reason}); make_valid leaves no area")
                continue
            drawn_m2 = abs(projection.geometry_to_metres(p.geometry).area)
            fixed_m2 = projection.geometry_to_metres(fixed).area
            parts = len(shapely.get_parts(fixed))
            outcome = (
                f"make_valid would give a {fixed.geom_type} of {parts} part(s), {fixed_m2:.0f} m² "
                f"(shoelace area as drawn: {drawn_m2:.0f} m²)"
            )
            if repair:
                p.geometry = fixed
                repaired_indices.add(p.index)
                message = f"{source}: {p.where}: repaired invalid polygon ({reason}); {outcome}"
                repairs.append(message)
                if warnings is not None:
                    warnings.warn("geofence_repaired", message)
            else:
                problems.append(f"{p.where}: invalid polygon ({reason}); {outcome}")
        if problems:
            raise ConfigError(
                source,
                f"{len(problems)} invalid fence(s): "
                + "; ".join(problems)
                + ". Fix the file, or load with repair=True (CLI: --repair) to apply make_valid",
            )

        fences = []
        for p in parsed:
            geometry_m = projection.geometry_to_metres(p.geometry)
            if not geometry_m.is_valid:
                # A valid lon/lat ring can become invalid only by rounding in the projection (a spike a few
                # nanometres wide); make_valid is a no-op for the area there.
                geometry_m = _polygonal_part(shapely.make_valid(geometry_m)) or geometry_m
            fences.append(
                Fence(
                    index=p.index,
                    region=p.region,
                    priority=p.priority,
                    name=p.name,
                    geometry_lonlat=p.geometry,
                    geometry_m=geometry_m,
                    area_m2=float(geometry_m.area),
                    repaired=p.index in repaired_indices,
                )
            )
        return cls(fences, default_region, projection, source=source, repairs=repairs)

    # ------------------------------------------------------------------------------------------ description
    @staticmethod
    def _order_key(fence: Fence) -> tuple[float, float, int]:
        return (-fence.priority, _comparable_area(fence), fence.index)

    @property
    def regions(self) -> list[str]:
        """Region ids of the fences, sorted; the default region is not included unless a fence uses it."""
        return sorted(self._by_region)

    @property
    def known_regions(self) -> list[str]:
        """Every region a lookup can return: the fences' regions and the default region, sorted."""
        return sorted({*self.regions, self.default_region})

    def fences_of(self, region: str) -> list[Fence]:
        return [self.fences[i] for i in self._by_region.get(region, ())]

    def region_area_m2(self, region: str) -> float:
        """Area covered by the region's fences (their union, overlaps counted once), m²."""
        geoms = [f.geometry_m for f in self.fences_of(region)]
        return float(shapely.union_all(geoms).area) if geoms else 0.0

    def region_areas_m2(self) -> dict[str, float]:
        return {region: self.region_area_m2(region) for region in self.regions}

    def overlaps(self, min_area_m2: float = 1.0) -> list[Overlap]:
        """Pairs of fences of different regions that overlap by at least ``min_area_m2`` (m²).

        The threshold hides the slivers that two independently digitised neighbouring boundaries leave.
        """
        left, right = self._tree.query(self._geoms, predicate="intersects")
        regions = np.array([f.region for f in self.fences], dtype=object)
        keep = (left < right) & (regions[left] != regions[right])
        left, right = left[keep], right[keep]
        # One vectorised call: the pairs can number hundreds of thousands (see MAX_INTERSECTING_PAIRS).
        areas = shapely.area(shapely.intersection(self._geoms[left], self._geoms[right]))
        result = []
        for i, j, area in zip(left.tolist(), right.tolist(), areas.tolist(), strict=True):
            if area < min_area_m2:
                continue
            a, b = self.fences[i], self.fences[j]
            winner = a if self._rank[i] < self._rank[j] else b
            if a.priority != b.priority:
                rule = "priority"
            elif _comparable_area(a) != _comparable_area(b):
                rule = "smaller area"
            else:
                rule = "file order"
            result.append(Overlap(a.region, b.region, a.index, b.index, float(area), winner.region, rule))
        return result

    # ------------------------------------------------------------------------------------------------ lookup
    def project(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """(lat, lon) degrees → (x, y) metres in this set's local frame."""
        return self.projection.forward(lat_deg, lon_deg)

    def _check_finite(self, lat_deg: float, lon_deg: float) -> None:
        """ValueError unless (lat, lon) is a WGS84 position: a NaN or a latitude of 95 has no region (the
        default region would be a wrong answer, not a refusal)."""
        if not (math.isfinite(lat_deg) and math.isfinite(lon_deg) and abs(lat_deg) <= 90.0
                and abs(lon_deg) <= 180.0):
            raise ValueError(f"geofence query needs WGS84 coordinates (finite, |lat| <= 90, |lon| <= 180), got "
                             f"{(lat_deg, lon_deg)}")

    def fence_at_xy(self, x_m: float, y_m: float) -> Fence | None:
        """The winning fence at a point of the local frame, or None outside every fence."""
        hits = self._tree.query(shapely.points((x_m, y_m)), predicate="intersects")
        if hits.size == 0:
            return None
        return self.fences[int(hits[np.argmin(self._rank[hits])])]

    def region_at_xy(self, x_m: float, y_m: float) -> str:
        fence = self.fence_at_xy(x_m, y_m)
        return fence.region if fence is not None else self.default_region

    def lookup(self, lat_deg: float, lon_deg: float) -> str:
        """Region at (lat, lon) in degrees: the winning fence's region, else the default region."""
        self._check_finite(lat_deg, lon_deg)
        return self.region_at_xy(*self.project(lat_deg, lon_deg))

    def lookup_many(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> list[str]:
        """Vectorised ``lookup`` over arrays of (lat, lon) in degrees; returns one region per point. ValueError
        for a point that is not a WGS84 position, as ``lookup``."""
        lat_a, lon_a = np.asarray(lat_deg, dtype=np.float64), np.asarray(lon_deg, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(lat_a) & np.isfinite(lon_a) & (np.abs(lat_a) <= 90.0) & (np.abs(lon_a) <= 180.0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            self._check_finite(float(lat_a.flat[k]), float(lon_a.flat[k]))
        x, y = self.projection.forward_many(lat_deg, lon_deg)
        points = shapely.points(x, y)
        point_idx, fence_idx = self._tree.query(points)
        hit = shapely.intersects_xy(self._geoms[fence_idx], x[point_idx], y[point_idx])
        point_idx, fence_idx = point_idx[hit], fence_idx[hit]
        best_rank = np.full(len(points), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best_rank, point_idx, self._rank[fence_idx])
        by_rank = np.empty(len(self.fences), dtype=np.int64)
        by_rank[self._rank] = np.arange(len(self.fences))
        return [
            self.default_region if r == np.iinfo(np.int64).max else self.fences[by_rank[r]].region
            for r in best_rank.tolist()
        ]

    def candidates(self, lat_deg: float, lon_deg: float, margin_m: float = 0.0) -> list[Candidate]:
        """Fences that contain the point or lie within ``margin_m`` metres of it, in resolution order (the
        first one is the winner when the point is inside it)."""
        self._check_finite(lat_deg, lon_deg)
        return self.candidates_xy(*self.project(lat_deg, lon_deg), margin_m=margin_m)

    def candidates_xy(self, x_m: float, y_m: float, margin_m: float = 0.0) -> list[Candidate]:
        point = Point(x_m, y_m)
        idx = self._tree.query(point, predicate="dwithin", distance=max(0.0, float(margin_m)))
        result = []
        for i in sorted(idx.tolist(), key=lambda k: self._rank[k]):
            fence = self.fences[i]
            inside = bool(shapely.intersects_xy(self._geoms[i], x_m, y_m))
            edge = float(shapely.distance(self._boundaries[i], point))
            signed = edge if inside else -edge
            result.append(Candidate(fence.region, fence.priority, fence.area_m2, fence.index, signed))
        return result

    # ------------------------------------------------------------------------------------- margins (metres)
    def territory(self, region: str) -> BaseGeometry:
        """The area (local frame, metres) where ``region`` wins. For the default region this is the complement
        of ``non_default_area()`` and cannot be returned as a finite geometry: ValueError (``fenced_territory``
        gives where its own fences, the carve-outs, win)."""
        if region == self.default_region:
            raise ValueError(f"the default region {region!r} is everything outside non_default_area()")
        return self.fenced_territory(region)

    def fenced_territory(self, region: str) -> BaseGeometry:
        """The area (local frame, metres) where one of ``region``'s fences wins; for the default region, where
        its carve-out fences win. Empty when the region has no fence or every one is shadowed."""
        cached = self._territories.get(region)
        if cached is not None:
            return cached
        parts = []
        for i in self._by_region.get(region, ()):
            fence = self.fences[i]
            near = self._tree.query(self._geoms[i], predicate="intersects")
            beaters = [k for k in near.tolist() if self._rank[k] < self._rank[i]]
            part = fence.geometry_m
            if beaters:
                part = shapely.difference(part, shapely.union_all(self._geoms[beaters]))
            parts.append(part)
        area = shapely.union_all(parts) if parts else Polygon()
        shapely.prepare(area)
        self._territories[region] = area
        self._territory_boundaries[region] = BoundaryDistance(area.boundary)
        return area

    def non_default_area(self) -> BaseGeometry:
        """Where some region other than the default wins (local frame, metres)."""
        if self._non_default_area is None:
            if any(f.region == self.default_region for f in self.fences):
                # A fence may carve the default region out of others; then only the territories add up.
                area = shapely.union_all([self.territory(r) for r in self.regions if r != self.default_region])
            else:
                area = shapely.union_all(self._geoms)
            shapely.prepare(area)
            self._non_default_area = area
            self._non_default_boundary = BoundaryDistance(area.boundary)
        return self._non_default_area

    def signed_distance_xy(self, x_m: float, y_m: float, region: str) -> float:
        """Metres from the point to the edge of ``region``'s territory: positive inside, negative outside;
        ``-inf`` for a region that wins nowhere (fully shadowed by higher-priority fences) or is unknown."""
        if region == self.default_region:
            area = self.non_default_area()
            return -self._signed_distance(area, self._non_default_boundary, x_m, y_m)
        if region not in self.regions:
            return -math.inf
        area = self.territory(region)
        return self._signed_distance(area, self._territory_boundaries[region], x_m, y_m)

    @staticmethod
    def _signed_distance(area: BaseGeometry, boundary: BoundaryDistance | None, x_m: float, y_m: float) -> float:
        if area.is_empty or boundary is None:
            return -math.inf
        edge = boundary(x_m, y_m)
        return edge if bool(shapely.intersects_xy(area, x_m, y_m)) else -edge

    def signed_distance_m(self, lat_deg: float, lon_deg: float, region: str) -> float:
        """``signed_distance_xy`` for a WGS84 point: how far (m) inside (+) or outside (−) ``region`` it is."""
        self._check_finite(lat_deg, lon_deg)
        return self.signed_distance_xy(*self.project(lat_deg, lon_deg), region)

    def region_ahead_xy(
        self, x_m: float, y_m: float, heading_rad: float, distance_m: float, current_region: str,
        skip: Container[str] = (), min_depth_m: float = 0.0, min_default_depth_m: float = 0.0,
    ) -> tuple[str, float] | None:
        """First region other than ``current_region`` (and not in ``skip``) met when going ``distance_m``
        metres from (x, y) along ``heading_rad`` (ENU: 0 = east, counter-clockwise), with the distance (m) to
        its boundary; None if the whole segment stays in ``current_region`` or ``skip``. Exact: uses the
        crossings with fence boundaries. ``min_depth_m``: a stretch of a fenced region that ends before the
        line does counts only when the line gets that deep inside (at the stretch's middle), so a sliver the
        line merely clips is passed over.
        ``min_default_depth_m``: a stretch outside every fence counts only when the line gets that far out
        (at the stretch's middle), so a narrow gap between two fences is passed over."""
        end = (x_m + distance_m * math.cos(heading_rad), y_m + distance_m * math.sin(heading_rad))
        segment = LineString([(x_m, y_m), end])
        stops = {0.0, float(distance_m)}
        for i in self._tree.query(segment, predicate="intersects").tolist():
            crossing = shapely.intersection(segment, self._boundaries[i])
            for cx, cy in shapely.get_coordinates(crossing).tolist():
                stops.add(float(segment.project(Point(cx, cy))))
        ordered = sorted(stops)
        for start, stop in itertools.pairwise(ordered):
            if stop - start < 1e-6:
                continue
            mid = segment.interpolate((start + stop) / 2.0)
            region = self.region_at_xy(mid.x, mid.y)
            if region == current_region or region in skip:
                continue
            if region == self.default_region:
                if min_default_depth_m > 0 and self.signed_distance_xy(mid.x, mid.y, region) < min_default_depth_m:
                    continue
            elif min_depth_m > 0 and stop < distance_m and self.signed_distance_xy(mid.x, mid.y, region) < min_depth_m:
                continue  # (a stretch cut off by the end of the line may get deeper beyond it)
            return region, start
        return None
