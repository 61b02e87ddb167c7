"""Boundary files (a city's neighbourhoods, OpenStreetMap administrative areas) turned into a geofence file.

Such files name their areas in a property of their own choosing (``name``, ``NAME``, ``nhood``) and carry no
``region`` or ``priority``. ``fences_from_boundaries`` picks the areas by that property, maps each to a region
(``NAME=REGION[:PRIORITY]``; without a mapping every named area becomes a region of its own name) and writes
the fence file's FeatureCollection: ``region``, ``priority`` and the area's ``name`` as properties, the
geometry as the loader reads it, written as plain GeoJSON (``fence_geometry_json``). Whether the result is a
valid fence file is left to ``GeofenceSet.from_geojson``, the one loader every node and command uses, so an
import cannot accept what a vehicle would refuse.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
import shapely.geometry
from shapely.geometry import MultiPolygon, Polygon

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geofence_features import (
    _POLYGON_TYPES,
    MAX_ABS_PRIORITY,
    _describe,
    region_name,
    region_name_problem,
)

MAX_LISTED = 10  # names shown in an error about names


def fence_priority(value: float, option: str) -> float:
    """A priority given on the command line, as the fence loader would take it from a file: finite and within
    ±2^53 (beyond, two priorities a file tells apart are one float); else ConfigError naming ``option``."""
    if not math.isfinite(value) or abs(value) > MAX_ABS_PRIORITY:
        raise ConfigError(option, f"priority {value:g} is not a finite number within ±2^53")
    return value


@dataclass(frozen=True)
class RegionMapping:
    """One ``NAME=REGION[:PRIORITY]``: the areas called NAME become fences of REGION."""

    name: str
    region: str
    priority: float | None = None

    @classmethod
    def parse(cls, text: str) -> RegionMapping:
        """``NAME=REGION`` or ``NAME=REGION:PRIORITY``. The name is split off at the last ``=``, so an area name
        may hold ``=``; a ``:`` after it always starts the priority, which must be a number (a typo such as
        ``m:five`` would otherwise become the region "m:five"), so a region mapped here holds neither."""
        name, sep, target = text.rpartition("=")
        if not sep or not name.strip() or not target.strip():
            raise ConfigError("--map", f"{text!r}: expected NAME=REGION or NAME=REGION:PRIORITY")
        region, colon, tail = target.partition(":")
        priority = None
        if colon:
            try:
                priority = float(tail)
            except ValueError:
                raise ConfigError("--map", f"{text!r}: priority {tail!r} is not a number (NAME=REGION:PRIORITY; "
                                           "a region mapped with --map cannot hold ':')") from None
            fence_priority(priority, "--map")
        region = region_name(region)
        problem = region_name_problem(region) if region else "is empty"
        if problem:
            raise ConfigError("--map", f"{text!r}: region {region!r} {problem}")
        return cls(region_name(name), region, priority)


@dataclass
class BoundaryImport:
    """The fence file's document and what went into it."""

    document: dict[str, Any]
    fences: list[dict[str, Any]]  # per output feature: source index, name, region, priority
    skipped: Counter[str] = field(default_factory=Counter)  # why source features were left out


def fence_geometry_json(geometry: Polygon | MultiPolygon) -> dict[str, Any]:
    """A fence's geometry as the fence file holds it: GeoJSON as RFC 7946 has it, from what the loader read
    (rings closed, no empty part of a MultiPolygon, no z: other GIS tools refuse what the loader forgives)."""
    geometry = shapely.force_2d(geometry)
    if isinstance(geometry, MultiPolygon):
        geometry = MultiPolygon([part for part in geometry.geoms if not part.is_empty])
    return dict(shapely.geometry.mapping(geometry))


def _area_name(properties: Any, name_property: str) -> tuple[str | None, str]:
    """(the area's name, or None and why not: "unnamed" without the property, "name_not_text" when it is not a
    string or a whole number). A name is a string, or an integer id (files keyed by OBJECTID; shapefile exports
    write 101 as 101.0), stripped."""
    if not isinstance(properties, Mapping) or properties.get(name_property) is None:
        return None, "unnamed"
    value = properties[name_property]
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_ABS_PRIORITY:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, "name_not_text"
    text = region_name(str(value))
    return (text, "") if text else (None, "unnamed")


def _features(data: Any, source: str) -> list[Any]:
    if isinstance(data, Mapping) and data.get("type") == "Feature":
        return [data]
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        got = data.get("type") if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(source, f"top level must be a GeoJSON FeatureCollection or Feature, got {_describe(got)}")
    features = data.get("features")
    if not isinstance(features, list):
        raise ConfigError(source, f"'features' must be an array, got {_describe(features)}")
    if not features:
        raise ConfigError(source, "'features' is empty: no area to make a fence of")
    return features


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(repr(k) for k in sorted(known)[:MAX_LISTED])
    more = f" and {len(known) - MAX_LISTED} more" if len(known) > MAX_LISTED else ""
    return f"; the file names {shown}{more}"


def fences_from_boundaries(data: Any, *, source: str, name_property: str = "name",
                           mapping: Sequence[RegionMapping] = (), priority: float = 0.0) -> BoundaryImport:
    """The geofence FeatureCollection for the boundary document ``data`` (parsed GeoJSON).

    With ``mapping``, only the mapped areas are kept (each mapping must name at least one area with a polygon;
    one area may be drawn as several features, all kept) and get the mapping's priority, else ``priority``.
    Without, every named area with a polygon becomes a region of its own name. Features without a Polygon or
    MultiPolygon geometry or without a name are left out and counted. ConfigError names the file (``source``)
    and what is wrong."""
    features = _features(data, source)
    by_name = {m.name: m for m in mapping}
    if len(by_name) < len(mapping):
        twice = [name for name, n in Counter(m.name for m in mapping).items() if n > 1]
        raise ConfigError("--map", f"{twice[0]!r} is mapped more than once")
    names_seen: set[str] = set()
    property_keys: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    mapped_with_polygon: set[str] = set()
    not_text: Any = None  # the first name that is neither a string nor a whole number
    for index, feature in enumerate(features):
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            raise ConfigError(source, f"features[{index}]: not a GeoJSON Feature (got {_describe(feature)})")
        properties = feature.get("properties")
        if isinstance(properties, Mapping):
            property_keys.update(str(k) for k in properties)
        name, why = _area_name(properties, name_property)
        if name is None:
            skipped[why] += 1
            if why == "name_not_text" and not_text is None:
                not_text = properties[name_property]
            continue
        names_seen.add(name)
        geometry = feature.get("geometry")
        polygonal = isinstance(geometry, Mapping) and geometry.get("type") in _POLYGON_TYPES
        chosen = by_name.get(name) if mapping else RegionMapping(name, name)
        if chosen is None:
            skipped["unmapped"] += 1
            continue
        if not polygonal:
            skipped["not_polygonal"] += 1
            continue
        if mapping:
            mapped_with_polygon.add(name)
        elif region_name_problem(name):
            raise ConfigError(source, f"features[{index}]: the area name {_describe(name)} cannot name a region "
                              f"({region_name_problem(name)}); map it with --map NAME=REGION")
        value: float | int = chosen.priority if chosen.priority is not None else priority
        if float(value).is_integer() and abs(value) <= MAX_ABS_PRIORITY:
            value = int(value)  # written as 10, as people write priorities
        out.append({"type": "Feature", "properties": {"region": chosen.region, "priority": value, "name": name},
                    "geometry": geometry})
        rows.append({"index": index, "name": name, "region": chosen.region, "priority": value})
    if not names_seen and skipped["name_not_text"]:
        raise ConfigError(source, f"no area is named: the {name_property!r} of {skipped['name_not_text']} "
                          f"feature(s) is neither a string nor a whole number (e.g. {_describe(not_text)}); name "
                          "the property that names the areas with --name-property")
    if not names_seen:
        keys = ", ".join(repr(k) for k, _ in property_keys.most_common(MAX_LISTED)) or "none"
        raise ConfigError(source, f"no feature has a {name_property!r} property (a string or an integer); the "
                          f"features' properties are {keys}: name the one that names the areas with "
                          "--name-property")
    for m in mapping:
        if m.name not in names_seen:
            raise ConfigError("--map", f"{m.name!r}: no area of {source} is called that (by its {name_property!r} "
                              f"property){_suggest(m.name, sorted(names_seen))}")
        if m.name not in mapped_with_polygon:
            raise ConfigError("--map", f"{m.name!r}: the areas of {source} called that have no Polygon or "
                              "MultiPolygon geometry")
    if not out:
        raise ConfigError(source, "no area with a Polygon or MultiPolygon geometry to make a fence of")
    document: dict[str, Any] = {"type": "FeatureCollection", "features": out}
    crs = data.get("crs")
    if crs is not None:
        document["crs"] = crs  # carried over for the fence loader to refuse one that is not WGS84
    return BoundaryImport(document, rows, skipped)
