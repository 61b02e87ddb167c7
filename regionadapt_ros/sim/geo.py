"""The simulator's map frame on the globe, and geofences that match a route.

The map frame is a local azimuthal-equidistant projection around ``ORIGIN`` (San Francisco, where
config/geofences.geojson and the demo drive live too), x east, y north. Each segment of a route gets a
geofence: the corridor of ± ``FENCE_HALF_WIDTH_M`` around its stretch of the route, so the GNSS says the
vehicle is in the region the camera shows.

A course's fences (``write_course_geofences``) are narrower (``COURSE_FENCE_HALF_WIDTH_M``) and each boundary
lies a switching distance (``switch_lead_m``) before the join where the road changes: the region manager
switches only a hysteresis margin, held for its confirmation time, past a boundary (core/region_resolver.py),
and a region's model is a specialist that cannot be trusted on the next region's road for that long (the
mountain bundle on a highway leaves the lane within seconds). A fence is drawn, as on a map, so that the
switch is done where the region's road begins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from regionadapt_ros.adaptation.demo_drive import FENCE_HALF_WIDTH_M, ORIGIN
from regionadapt_ros.core.region_resolver import ResolverConfig

if TYPE_CHECKING:
    from regionadapt_ros.sim.course import Course

# The ego keeps within a few metres of its route; 30 m either side leaves the resolver's 10 m enter margin and
# GNSS error inside, and keeps the fences of a route that passes within MIN_CLEARANCE_M of itself apart.
COURSE_FENCE_HALF_WIDTH_M = 30.0


@lru_cache(maxsize=1)
def _to_wgs84():
    from pyproj import Transformer

    lat0, lon0 = ORIGIN
    return Transformer.from_crs(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m", "EPSG:4326",
                                always_xy=True)


def to_lat_lon(x: float, y: float) -> tuple[float, float]:
    """(latitude, longitude) of a map-frame point."""
    lon, lat = _to_wgs84().transform(x, y)
    return float(lat), float(lon)


def switch_lead_m(resolver: ResolverConfig, speed_mps: float) -> float:
    """How far past a boundary the region manager switches at ``speed_mps``: the deeper of the two margins
    plus the distance covered while they are confirmed."""
    return max(resolver.enter_margin_m, resolver.exit_margin_m) + resolver.confirm_s * speed_mps


def write_course_geofences(path: str | Path, course: Course, resolver: ResolverConfig | None = None) -> Path:
    """The geofences of a course: one corridor of ± ``COURSE_FENCE_HALF_WIDTH_M`` per segment, each boundary
    ``switch_lead_m`` (at the speed limit of the segment being left) before the join, at most a third of either
    segment."""
    from shapely.geometry import LineString
    from shapely.ops import substring

    resolver = resolver or ResolverConfig()
    route = LineString(course.path.points)
    joins = [*course.offsets[1:], route.length]
    starts = [0.0]
    for i, world in enumerate(course.worlds[:-1]):
        lengths = (joins[i] - starts[i], joins[i + 1] - joins[i])
        lead = min(switch_lead_m(resolver, world.spec.speed_limit_mps), min(lengths) / 3.0)
        starts.append(joins[i] - lead)
    ends = [*starts[1:], route.length]
    pieces = zip(course.worlds, starts, ends, strict=True)
    segments = [(w.spec.name, np.asarray(substring(route, a, b).coords)) for w, a, b in pieces]
    return write_route_geofences(path, segments, COURSE_FENCE_HALF_WIDTH_M)


def write_route_geofences(path: str | Path, segments: Sequence[tuple[str, np.ndarray]],
                          half_width_m: float = FENCE_HALF_WIDTH_M) -> Path:
    """GeoJSON with one corridor of ± ``half_width_m`` per (region, (N, 2) map-frame polyline) segment;
    neighbouring corridors touch (each is extended to the next one's first point), the first has square caps so
    that the start is inside."""
    import shapely
    from shapely.geometry import LineString, mapping

    transformer = _to_wgs84()
    features = []
    for i, (region, pts) in enumerate(segments):
        line_pts = np.asarray(pts, float)
        if i + 1 < len(segments):
            line_pts = np.vstack((line_pts, np.asarray(segments[i + 1][1], float)[:1]))
        line = LineString(line_pts)
        corridor = line.buffer(half_width_m, cap_style="square" if i == 0 else "flat")
        geo = shapely.transform(corridor.simplify(1.0),
                                lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
        features.append({"type": "Feature", "properties": {"region": region, "priority": 10 + i,
                                                           "name": f"closed-loop {region}"},
                         "geometry": mapping(geo)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "name": "regionadapt closed-loop route",
                                "features": features}, indent=1))
    return path
