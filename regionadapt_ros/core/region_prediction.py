"""The next-region prediction behind the prefetch hint (``RegionResolver``'s rule 5), on curved roads too.

From a position, a heading and the distance the vehicle covers in the prediction horizon (its reach), the next
region is, in this order:
a. the first fenced region other than the current one met on the straight line ahead within reach that the
   line gets ``enter_margin_m`` deep into: a sliver the line merely clips, or a fence narrower than twice the
   margin, could never be entered; a gap outside every fence narrower than ``exit_margin_m`` on the way is
   never switched to and is passed over too;
b. when the line leaves the current region towards no fence, as it does on a curved road, the nearest fenced
   region within reach in front of the vehicle that could be entered: its territory's nearest point within
   ``PREFETCH_CONE_RAD`` of the heading (or the position already inside it). The cone keeps out a fence beside
   the road and the one just left; a line that stays in the current region means the vehicle is not about to
   leave it, and then no fence beside the road is staged;
c. else the default region, when the line leaves every fence (by ``exit_margin_m`` at least).
The distance returned is the straight-line distance to the region, never more than the distance along the
road, so an ETA from it is never late. Local metric frame of the ``GeofenceSet``; metres and radians (ENU).
"""

from __future__ import annotations

import math

import shapely
from shapely.geometry import Point

from regionadapt_ros.core.geofence import GeofenceSet

# A fence counts as "in front" when the direction to its nearest point is within this of the heading: wide
# enough for the next fence along a curve (a road turning by 90 degrees within reach puts it at ~45 degrees),
# narrow enough to ignore a fence beside the road or the one just left behind.
PREFETCH_CONE_RAD = math.radians(60.0)


def in_cone(dx: float, dy: float, heading_rad: float, half_angle_rad: float = PREFETCH_CONE_RAD) -> bool:
    """Whether the direction (dx, dy) lies within ``half_angle_rad`` of ``heading_rad``."""
    norm = math.hypot(dx, dy)
    if norm == 0.0:
        return True
    return (dx * math.cos(heading_rad) + dy * math.sin(heading_rad)) / norm >= math.cos(half_angle_rad)


class NextRegionPredictor:
    """Rules a-c of the module docstring over one ``GeofenceSet``; caches which regions can ever be entered."""

    def __init__(self, geofences: GeofenceSet, enter_margin_m: float, exit_margin_m: float) -> None:
        self.geofences = geofences
        self.enter_margin_m = float(enter_margin_m)
        self.exit_margin_m = float(exit_margin_m)
        self._enterable: dict[str, bool] = {}

    def enterable(self, region: str) -> bool:
        """Whether some point of ``region``'s territory lies ``enter_margin_m`` inside it, i.e. whether the
        resolver could ever switch to it."""
        known = self._enterable.get(region)
        if known is None:
            area = self.geofences.territory(region)
            known = not area.is_empty and not shapely.buffer(area, -self.enter_margin_m).is_empty
            self._enterable[region] = known
        return known

    def near(self, x_m: float, y_m: float, distance_m: float, exclude: str) -> list[tuple[float, str, float, float]]:
        """Fenced regions but ``exclude`` whose territory lies within ``distance_m`` of (x, y): (metres, region,
        nearest point x, y), nearest first; 0 m and the point itself when (x, y) is inside it."""
        fences = self.geofences
        regions = {c.region for c in fences.candidates_xy(x_m, y_m, margin_m=distance_m)}
        regions -= {exclude, fences.default_region}
        point = Point(x_m, y_m)
        found = []
        for region in sorted(regions):
            area = fences.territory(region)
            if area.is_empty:
                continue
            if bool(shapely.intersects_xy(area, x_m, y_m)):
                found.append((0.0, region, x_m, y_m))
                continue
            nx, ny = shapely.get_coordinates(shapely.shortest_line(point, area))[-1].tolist()
            gap = math.hypot(nx - x_m, ny - y_m)
            if gap <= distance_m:
                found.append((gap, region, nx, ny))
        return sorted(found)

    def predict(self, x_m: float, y_m: float, heading_rad: float, reach_m: float, current: str
                ) -> tuple[str, float] | None:
        """(next region, metres to it) or None; see the module docstring."""
        fences = self.geofences
        default = fences.default_region
        never = _NeverEntered(self)
        ahead = fences.region_ahead_xy(x_m, y_m, heading_rad, reach_m, current, skip=_NeverEntered(self, default),
                                       min_depth_m=self.enter_margin_m)
        if ahead is not None:
            return ahead
        leaving = fences.region_ahead_xy(x_m, y_m, heading_rad, reach_m, current, skip=never,
                                         min_depth_m=self.enter_margin_m, min_default_depth_m=self.exit_margin_m)
        if leaving is None and current != default:
            return None  # the line stays in the current region: not about to leave it
        for gap, region, nx, ny in self.near(x_m, y_m, reach_m, current):
            if (gap == 0.0 or in_cone(nx - x_m, ny - y_m, heading_rad)) and self.enterable(region):
                return region, gap
        return leaving


class _NeverEntered:
    """``region in skip`` for ``region_ahead_xy``: the fenced regions that could never be entered (checked
    lazily, only for the regions the line meets), plus ``extra``."""

    def __init__(self, predictor: NextRegionPredictor, *extra: str) -> None:
        self.predictor = predictor
        self.extra = extra

    def __contains__(self, region: object) -> bool:
        if region in self.extra:
            return True
        return region != self.predictor.geofences.default_region and not self.predictor.enterable(str(region))
