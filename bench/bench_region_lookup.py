"""Region lookup with 1,000 fences: the STRtree-indexed GeofenceSet against a plain loop over the polygons.

Run: .venv/bin/python bench/bench_region_lookup.py [--fences 1000] [--points 5000] [--seed 0]

All methods answer the same random query points and must agree (checked); the printed ratios are measured side
by side in this run, so they hold on a noisy machine while the absolute times do not.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from shapely.geometry import Point, Polygon, mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regionadapt_ros.core.geofence import GeofenceSet, LocalProjection

CENTRE_LAT, CENTRE_LON = 37.75, -122.45
AREA_HALF_WIDTH_M = 25_000.0


def random_fences(count: int, rng: np.random.Generator) -> dict:
    """``count`` star-shaped polygons (12-40 vertices, 200-1500 m radius) over a 50 km square, 20 regions,
    priorities 0-9: overlapping, like city districts over a metropolitan area."""
    local = LocalProjection(CENTRE_LAT, CENTRE_LON)
    features = []
    for i in range(count):
        cx, cy = rng.uniform(-AREA_HALF_WIDTH_M, AREA_HALF_WIDTH_M, size=2)
        n = int(rng.integers(12, 41))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=n))
        radii = rng.uniform(200, 1500) * rng.uniform(0.6, 1.0, size=n)
        ring = [local.inverse(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]
        polygon = Polygon([(lon, lat) for lat, lon in ring])
        features.append(
            {
                "type": "Feature",
                "properties": {"region": f"region_{i % 20:02d}", "priority": int(rng.integers(0, 10))},
                "geometry": mapping(polygon),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def plain_loop_lookup(fences: GeofenceSet, polygons: list[Polygon], lat: float, lon: float) -> str:
    """The obvious implementation: test every polygon (lon/lat) and keep the best by the same rule."""
    point = Point(lon, lat)
    best = None
    for fence, polygon in zip(fences.fences, polygons, strict=True):
        if polygon.intersects(point):
            key = (-fence.priority, fence.area_m2, fence.index)
            if best is None or key < best[0]:
                best = (key, fence.region)
    return best[1] if best is not None else fences.default_region


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fences", type=int, default=1000)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    data = random_fences(args.fences, rng)
    build_s, fences = timed(lambda: GeofenceSet.from_geojson(data, "base", source="<random>"))
    polygons = [f.geometry_lonlat for f in fences.fences]

    local = LocalProjection(CENTRE_LAT, CENTRE_LON)
    xy = rng.uniform(-AREA_HALF_WIDTH_M, AREA_HALF_WIDTH_M, size=(args.points, 2))
    latlon = np.array([local.inverse(x, y) for x, y in xy])
    lats, lons = latlon[:, 0], latlon[:, 1]

    pairs = list(zip(lats.tolist(), lons.tolist(), strict=True))
    local_xy = [fences.project(a, o) for a, o in pairs]
    loop_s, by_loop = timed(lambda: [plain_loop_lookup(fences, polygons, a, o) for a, o in pairs])
    tree_s, by_tree = timed(lambda: [fences.lookup(a, o) for a, o in pairs])
    xy_s, by_xy = timed(lambda: [fences.region_at_xy(x, y) for x, y in local_xy])
    many_s, by_many = timed(lambda: fences.lookup_many(lats, lons))
    if not (by_loop == by_tree == by_xy == by_many):
        print("MISMATCH between methods", file=sys.stderr)
        return 1
    inside = sum(r != "base" for r in by_tree)

    n = args.points
    print(f"{args.fences} fences ({sum(len(p.exterior.coords) for p in polygons)} vertices), {n} query points "
          f"({inside} inside a fence); index build {build_s * 1e3:.0f} ms")
    print(f"  plain loop, shapely intersects per polygon : {loop_s / n * 1e6:9.1f} µs/lookup")
    print(f"  GeofenceSet.lookup (STRtree, per point)    : {tree_s / n * 1e6:9.1f} µs/lookup")
    print(f"  GeofenceSet.region_at_xy (pre-projected)   : {xy_s / n * 1e6:9.1f} µs/lookup")
    print(f"  GeofenceSet.lookup_many (STRtree, batched) : {many_s / n * 1e6:9.1f} µs/lookup")
    print(f"ratio plain loop / STRtree lookup      : {loop_s / tree_s:7.1f}x")
    print(f"ratio plain loop / STRtree region_at_xy: {loop_s / xy_s:7.1f}x (the rest of lookup is pyproj)")
    print(f"ratio plain loop / STRtree lookup_many : {loop_s / many_s:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
