"""The simulator's map frame on the globe, and geofences that match a route.

The map frame is a local azimuthal-equidistant projection around ``ORIGIN`` (San Francisco, where
config/geofences.geojson and the demo drive live too), x east, y north. Each segment of a route gets a
geofence: the corridor of ± ``FENCE_HALF_WIDTH_M`` around its stretch of the route, so the GNSS says the
vehicle is in the region the camera shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from regionadapt_ros.adaptation.demo_drive import FENCE_HALF_WIDTH_M, ORIGIN


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


def write_route_geofences(path: str | Path, segments: Sequence[tuple[str, np.ndarray]]) -> Path:
    """GeoJSON with one corridor per (region, (N, 2) map-frame polyline) segment; neighbouring corridors touch
    (each is extended to the next one's first point), the first has square caps so that the start is inside."""
    import shapely
    from shapely.geometry import LineString, mapping

    transformer = _to_wgs84()
    features = []
    for i, (region, pts) in enumerate(segments):
        line_pts = np.asarray(pts, float)
        if i + 1 < len(segments):
            line_pts = np.vstack((line_pts, np.asarray(segments[i + 1][1], float)[:1]))
        line = LineString(line_pts)
        corridor = line.buffer(FENCE_HALF_WIDTH_M, cap_style="square" if i == 0 else "flat")
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
