"""One GeoJSON feature of a geofence file, checked and parsed (see ``core.geofence`` for the file format): its
``region``, ``priority`` and ``name`` properties and its Polygon / MultiPolygon in WGS84 lon/lat. Every problem
is a ConfigError naming the file and the feature."""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from regionadapt_ros.core import strict_parse
from regionadapt_ros.core.errors import ConfigError


def require_shapely_2(version: str, location: str = "") -> None:
    """ImportError unless ``version`` is shapely 2 or later. Geofences use shapely 2's vectorised functions
    (``get_parts``, ``union_all``, ``STRtree`` returning indices); under 1.8, the python3-shapely rosdep installs
    on Ubuntu 22.04 (Humble), the region manager would start and then fail on its first geofence file with an
    AttributeError."""
    head = version.split(".", 1)[0]
    if not head.isdigit() or int(head) < 2:
        where = f" ({location})" if location else ""
        raise ImportError(f"regionadapt_ros needs shapely >= 2.0, found {version}{where}; Ubuntu 22.04's "
                          "python3-shapely is 1.8: pip install -r requirements-ros.txt installs shapely 2")


require_shapely_2(shapely.__version__, str(getattr(shapely, "__file__", "")))

MAX_ABS_PRIORITY = 2.0**53  # beyond this, two different integer priorities may compare equal as floats
_POLYGON_TYPES = ("Polygon", "MultiPolygon")


def _describe(value: Any) -> str:
    try:
        text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    except ValueError:  # an integer past Python's digit limit for str()
        text = f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= 40 else text[:37] + "..."


def _polygonal_part(geometry: BaseGeometry) -> Polygon | MultiPolygon | None:
    """The polygons of a (make_valid) result, dropping the lines and points it may contain."""
    polygons = [
        part for part in shapely.get_parts(geometry) if isinstance(part, (Polygon, MultiPolygon)) and not part.is_empty
    ]
    if not polygons:
        return None
    merged = shapely.union_all(polygons)
    return merged if isinstance(merged, (Polygon, MultiPolygon)) else None


def repaired_polygon(geometry: BaseGeometry) -> Polygon | MultiPolygon | None:
    """An invalid fence made valid: each polygon by ``shapely.make_valid``, then the parts united.

    The parts of a MultiPolygon are repaired one by one and their union taken, because ``make_valid`` of the
    whole MultiPolygon treats overlapping parts by even-odd (its "linework" method, the only one before shapely
    2.1): the overlap of two parts drawn over each other became a hole, and with thousands of overlapping
    parts the call took minutes. None when nothing with an area is left."""
    parts = [_polygonal_part(shapely.make_valid(part)) for part in shapely.get_parts(geometry)]
    kept = [part for part in parts if part is not None]
    if not kept:
        return None
    return _polygonal_part(shapely.union_all(kept))


def _position_problem(coordinates: Any, depth: int) -> str | None:
    """Why the nested ``coordinates`` (``depth`` list levels above the positions: 2 for a Polygon, 3 for a
    MultiPolygon) are not GeoJSON positions, or None. shapely's ``shape`` converts whatever it is given:
    ``"37.75"`` became a number and ``[true, false]`` the position (1, 0)."""
    problem = strict_parse.nested_number_problem(coordinates, depth + 1)
    if problem is None:
        return None
    kind, item = problem
    if kind == "list":
        return f"expected a list, got {_describe(item)}"
    return f"a position holds {_describe(item)}; positions are numbers [lon, lat(, alt)]"


def _coordinates_in_wgs84_range(geometry: BaseGeometry) -> bool:
    coords = shapely.get_coordinates(geometry)
    return bool(
        np.all(np.isfinite(coords)) and np.all(np.abs(coords[:, 0]) <= 180.0) and np.all(np.abs(coords[:, 1]) <= 90.0)
    )


@dataclass
class _ParsedFeature:
    index: int
    region: str
    priority: float
    name: str | None
    geometry: BaseGeometry
    where: str  # "features[3] (region 'x')" for messages


MAX_REGION_NAME_CHARS = 128
# Control, format and surrogate characters: a region name goes into logs, /region/current, diagnostics and
# reports, where "\n" forges a log line and "\x1b[" rewrites the operator's terminal.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def region_name(text: str) -> str:
    """A region name as written, stripped, in Unicode NFC: "café" typed precomposed and exported decomposed
    (as macOS tools do) look identical, so they must be one region, not two."""
    return unicodedata.normalize("NFC", text.strip())


def region_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a region (None when it can). Real boundary files name regions as people do
    ("Back Bay", "Sankt Pauli"), so spaces and any script are allowed; invisible characters are not."""
    if len(name) > MAX_REGION_NAME_CHARS:
        return f"is {len(name)} characters long; at most {MAX_REGION_NAME_CHARS}"
    bad = next((c for c in name if unicodedata.category(c) in _INVISIBLE_CATEGORIES), None)
    if bad is not None:
        return f"holds the invisible character U+{ord(bad):04X} ({unicodedata.category(bad)})"
    return None


def _parse_feature(source: str, index: int, feature: Any, number: int | None = None) -> _ParsedFeature:
    """The feature at ``index``; messages call it ``features[number]`` (by default its index)."""
    number = index if number is None else number
    where = f"features[{number}]"
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise ConfigError(source, f"{where}: not a GeoJSON Feature (got {_describe(feature)})")
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, Mapping):
        raise ConfigError(source, f"{where}: 'properties' must be an object, got {_describe(properties)}")
    if "region" not in properties:
        raise ConfigError(source, f"{where}: missing property 'region' (a boundary file whose areas are named by "
                          "another property becomes a fence file with `regionadapt geofence import`)")
    region = properties["region"]
    if not isinstance(region, str) or not region.strip():
        raise ConfigError(source, f"{where}: property 'region' must be a non-empty string, got {_describe(region)}")
    region = region_name(region)
    problem = region_name_problem(region)
    if problem:
        raise ConfigError(source, f"{where}: property 'region' {_describe(region)} {problem}")
    where = f"features[{number}] (region {region!r})"
    if "priority" not in properties:
        raise ConfigError(source, f"{where}: missing property 'priority'")
    priority = properties["priority"]
    # bool is an int subclass in Python; `true` as a priority is a typo, not a number.
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise ConfigError(source, f"{where}: property 'priority' must be a finite number, got {_describe(priority)}")
    try:
        priority_value = float(priority)
    except OverflowError:  # an integer with hundreds of digits
        priority_value = math.inf
    if not math.isfinite(priority_value) or abs(priority_value) > MAX_ABS_PRIORITY:
        raise ConfigError(source, f"{where}: property 'priority' must be a finite number within ±2^53, got "
                          f"{_describe(priority)}")
    name = properties.get("name")
    name = name if isinstance(name, str) and not region_name_problem(name) else None  # a label only

    geometry_json = feature.get("geometry")
    if geometry_json is None:
        raise ConfigError(source, f"{where}: geometry is null; fences must be Polygon or MultiPolygon")
    if not isinstance(geometry_json, Mapping):
        raise ConfigError(source, f"{where}: geometry must be an object, got {_describe(geometry_json)}")
    geometry_type = geometry_json.get("type")
    if geometry_type not in _POLYGON_TYPES:
        raise ConfigError(
            source,
            f"{where}: geometry type {_describe(geometry_type)} is not supported; fences must be Polygon or "
            "MultiPolygon",
        )
    problem = _position_problem(geometry_json.get("coordinates"), 2 if geometry_type == "Polygon" else 3)
    if problem:
        raise ConfigError(source, f"{where}: malformed {geometry_type} coordinates ({problem})")
    try:
        geometry = shape(geometry_json)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, shapely.errors.GEOSException) as exc:
        raise ConfigError(source, f"{where}: malformed {geometry_type} coordinates ({exc})") from exc
    if geometry.is_empty:
        raise ConfigError(source, f"{where}: {geometry_type} is empty")
    if not _coordinates_in_wgs84_range(geometry):
        raise ConfigError(
            source,
            f"{where}: coordinates outside WGS84 lon/lat range (|lon| <= 180, |lat| <= 90) or not finite; "
            "geofences must be in WGS84 degrees, lon first",
        )
    lon = shapely.get_coordinates(geometry)[:, 0]
    if float(lon.max() - lon.min()) > 180.0:
        raise ConfigError(source, f"{where}: spans {float(lon.max() - lon.min()):.1f} degrees of longitude; a fence "
                          "must span less than 180 (one that goes around a pole or across the antimeridian cannot be "
                          "drawn in lon/lat coordinates)")
    return _ParsedFeature(index, region, priority_value, name, geometry, where)
