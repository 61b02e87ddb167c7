"""Geofence loading, validation and lookup (core/geofence.py), on synthetic fences and the real SF data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyproj
import pytest
from shapely.geometry import Polygon, mapping

from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geo_track import load_track_csv
from regionadapt_ros.core.geofence import GeofenceSet, LocalProjection

REPO = Path(__file__).resolve().parents[1]
CENTRE = LocalProjection(37.75, -122.45)
GEOD = pyproj.Geod(ellps="WGS84")


def _ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """A rectangle in metres around CENTRE, as a closed lon/lat ring."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[CENTRE.inverse(x, y)[1], CENTRE.inverse(x, y)[0]] for x, y in corners]


def _feature(region: object, priority: object, rings: list, **extra: object) -> dict:
    props = {"region": region, "priority": priority, **extra}
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": rings}}


def _write(tmp_path: Path, features: list, name: str = "fences.geojson") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def city(tmp_path: Path) -> GeofenceSet:
    """city (prio 1, 4 km square with a 200 m hole) ⊃ district (prio 5); two same-priority overlapping squares."""
    features = [
        _feature("city", 1, [_ring(-2000, -2000, 2000, 2000), _ring(-1500, -1500, -1300, -1300)]),
        _feature("district", 5, [_ring(0, 0, 500, 500)]),
        _feature("big", 2, [_ring(3000, 0, 4000, 1000)]),
        _feature("small", 2, [_ring(3800, 800, 4200, 1200)]),
    ]
    return GeofenceSet.load(_write(tmp_path, features), "base")


def _at(fences: GeofenceSet, x: float, y: float) -> str:
    lat, lon = CENTRE.inverse(x, y)
    return fences.lookup(lat, lon)


# ------------------------------------------------------------------------------------------------ lookup
def test_higher_priority_wins_and_outside_is_the_default_region(city: GeofenceSet):
    assert _at(city, 250, 250) == "district"
    assert _at(city, -1000, 1000) == "city"
    assert _at(city, 5000, 5000) == "base"
    assert city.regions == ["big", "city", "district", "small"]
    assert city.known_regions == ["base", "big", "city", "district", "small"]


def test_equal_priority_resolves_to_the_smaller_fence(city: GeofenceSet):
    assert _at(city, 3900, 900) == "small"  # inside both; small is 0.16 km², big 1 km²
    assert _at(city, 3500, 500) == "big"


def test_a_hole_is_not_part_of_its_fence(city: GeofenceSet):
    assert _at(city, -1400, -1400) == "base"
    assert _at(city, -1600, -1600) == "city"


def test_multipolygon_parts_and_holes(tmp_path: Path):
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [[_ring(0, 0, 100, 100)], [_ring(1000, 0, 1300, 300), _ring(1100, 100, 1200, 200)]],
    }
    feature = {"type": "Feature", "properties": {"region": "islands", "priority": 0}, "geometry": geometry}
    fences = GeofenceSet.load(_write(tmp_path, [feature]), "base")
    assert _at(fences, 50, 50) == "islands"
    assert _at(fences, 1050, 50) == "islands"
    assert _at(fences, 1150, 150) == "base"  # the second part's hole
    assert _at(fences, 500, 50) == "base"
    # 100² + 300² − 100² m², measured independently on the ellipsoid.
    assert fences.region_area_m2("islands") == pytest.approx(90_000, rel=2e-3)


def test_areas_are_square_metres_on_the_ground(city: GeofenceSet):
    district = city.fences_of("district")[0]
    geodesic_m2, _ = GEOD.geometry_area_perimeter(district.geometry_lonlat)
    assert district.area_m2 == pytest.approx(abs(geodesic_m2), rel=1e-3)
    assert district.area_m2 == pytest.approx(250_000, rel=2e-3)


def test_lookup_many_agrees_with_lookup(city: GeofenceSet):
    rng = np.random.default_rng(7)
    xy = rng.uniform(-2500, 4500, size=(3000, 2))
    latlon = np.array([CENTRE.inverse(x, y) for x, y in xy])
    many = city.lookup_many(latlon[:, 0], latlon[:, 1])
    assert many == [city.lookup(lat, lon) for lat, lon in latlon]
    assert len(set(many)) == 5  # every region and the default were hit


def test_lookup_refuses_nan(city: GeofenceSet):
    with pytest.raises(ValueError, match="finite"):
        city.lookup(math.nan, -122.45)


def test_candidates_within_margin_in_resolution_order(city: GeofenceSet):
    lat, lon = CENTRE.inverse(520, 250)  # 20 m east of the district, inside the city
    assert [c.region for c in city.candidates(lat, lon)] == ["city"]
    near = city.candidates(lat, lon, margin_m=50)
    assert [c.region for c in near] == ["district", "city"]
    assert near[0].signed_distance_m == pytest.approx(-20.0, abs=0.5)
    assert near[1].signed_distance_m == pytest.approx(1480.0, abs=2.0)


def test_signed_distance_is_measured_to_the_winning_territory(city: GeofenceSet):
    x, y = 250, 250  # district centre: 250 m from the district's edge, inside city's fence but not its territory
    lat, lon = CENTRE.inverse(x, y)
    assert city.signed_distance_m(lat, lon, "district") == pytest.approx(250.0, abs=1.0)
    assert city.signed_distance_m(lat, lon, "city") == pytest.approx(-250.0, abs=1.0)
    assert city.signed_distance_m(lat, lon, "base") == pytest.approx(-1750.0, abs=2.0)
    far = CENTRE.inverse(2100, 0)  # 100 m east of the city
    assert city.signed_distance_m(*far, "base") == pytest.approx(100.0, abs=1.0)
    assert city.signed_distance_m(*far, "unknown") == -math.inf


def test_region_ahead_finds_the_first_other_region_and_its_distance(city: GeofenceSet):
    x, y = city.project(*CENTRE.inverse(-300, 250))
    region, distance = city.region_ahead_xy(x, y, 0.0, 1000.0, "city")  # heading east
    assert region == "district"
    assert distance == pytest.approx(300.0, abs=1.0)
    assert city.region_ahead_xy(x, y, math.pi, 200.0, "city") is None  # west: stays in the city


def test_overlaps_report_pairs_area_and_winner(city: GeofenceSet):
    overlaps = {(o.region_a, o.region_b): o for o in city.overlaps()}
    assert set(overlaps) == {("city", "district"), ("big", "small")}
    district = overlaps[("city", "district")]
    assert district.area_m2 == pytest.approx(250_000, rel=2e-3)
    assert (district.winner, district.rule) == ("district", "priority")
    pair = overlaps[("big", "small")]
    assert pair.area_m2 == pytest.approx(200 * 200, rel=5e-3)
    assert (pair.winner, pair.rule) == ("small", "smaller area")


def test_overlap_slivers_below_the_threshold_are_not_reported(tmp_path: Path):
    features = [_feature("a", 0, [_ring(0, 0, 100, 100)]), _feature("b", 0, [_ring(99.995, 0, 200, 100)])]
    fences = GeofenceSet.load(_write(tmp_path, features), "base")
    assert fences.overlaps() == []  # 5 mm x 100 m = 0.5 m², below the default 1 m²
    assert len(fences.overlaps(min_area_m2=0.1)) == 1


# ------------------------------------------------------------------------------------------- bad input
def test_missing_file_is_a_config_error_naming_it(tmp_path: Path):
    path = tmp_path / "nowhere.geojson"
    with pytest.raises(ConfigError, match="not found") as info:
        GeofenceSet.load(path, "base")
    assert info.value.path == str(path)


def test_invalid_json_names_the_file_and_the_line(tmp_path: Path):
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection",\n "features": [}\n')
    with pytest.raises(ConfigError, match=r"not valid JSON: Expecting value at line 2") as info:
        GeofenceSet.load(path, "base")
    assert "broken.geojson" in str(info.value)


def test_feature_without_region_is_refused(tmp_path: Path):
    features = [_feature("a", 0, [_ring(0, 0, 100, 100)]), _feature("b", 0, [_ring(200, 0, 300, 100)])]
    del features[1]["properties"]["region"]
    path = _write(tmp_path, features)
    with pytest.raises(ConfigError) as info:
        GeofenceSet.load(path, "base")
    assert str(info.value).startswith(f"{path}: features[1]: missing property 'region' (")
    assert "regionadapt geofence import" in str(info.value)


def test_feature_without_priority_is_refused(tmp_path: Path):
    features = [_feature("a", 0, [_ring(0, 0, 100, 100)])]
    del features[0]["properties"]["priority"]
    with pytest.raises(ConfigError, match=r"features\[0\] \(region 'a'\): missing property 'priority'"):
        GeofenceSet.load(_write(tmp_path, features), "base")


@pytest.mark.parametrize("priority", ["high", True, None])
def test_priority_that_is_not_a_number_is_refused(tmp_path: Path, priority: object):
    path = _write(tmp_path, [_feature("a", priority, [_ring(0, 0, 100, 100)])])
    with pytest.raises(ConfigError, match=r"features\[0\] \(region 'a'\): property 'priority' must be a finite"):
        GeofenceSet.load(path, "base")


def test_region_that_is_not_a_string_is_refused(tmp_path: Path):
    path = _write(tmp_path, [_feature(7, 0, [_ring(0, 0, 100, 100)])])
    with pytest.raises(ConfigError, match=r"features\[0\]: property 'region' must be a non-empty string, got 7"):
        GeofenceSet.load(path, "base")


@pytest.mark.parametrize(
    ("geometry", "kind"),
    [
        ({"type": "LineString", "coordinates": [[-122.45, 37.75], [-122.44, 37.76]]}, "LineString"),
        ({"type": "Point", "coordinates": [-122.45, 37.75]}, "Point"),
        ({"type": "GeometryCollection", "geometries": []}, "GeometryCollection"),
    ],
)
def test_non_polygon_geometry_is_refused(tmp_path: Path, geometry: dict, kind: str):
    feature = {"type": "Feature", "properties": {"region": "road", "priority": 1}, "geometry": geometry}
    expected = rf"features\[0\] \(region 'road'\): geometry type \"{kind}\" is not supported"
    with pytest.raises(ConfigError, match=expected):
        GeofenceSet.load(_write(tmp_path, [feature]), "base")


def test_malformed_coordinates_are_refused(tmp_path: Path):
    two_points = [[[-122.45, 37.75], [-122.44, 37.75]]]
    with pytest.raises(ConfigError, match=r"features\[0\] \(region 'a'\): malformed Polygon coordinates"):
        GeofenceSet.load(_write(tmp_path, [_feature("a", 0, two_points)]), "base")


def test_null_geometry_is_refused(tmp_path: Path):
    feature = {"type": "Feature", "properties": {"region": "a", "priority": 1}, "geometry": None}
    with pytest.raises(ConfigError, match=r"features\[0\] \(region 'a'\): geometry is null"):
        GeofenceSet.load(_write(tmp_path, [feature]), "base")


def test_not_a_feature_collection_is_refused(tmp_path: Path):
    path = tmp_path / "one.geojson"
    path.write_text(json.dumps(_feature("a", 0, [_ring(0, 0, 100, 100)])))
    with pytest.raises(ConfigError, match='top level must be a GeoJSON FeatureCollection, got "Feature"'):
        GeofenceSet.load(path, "base")


def test_empty_feature_collection_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="'features' is empty"):
        GeofenceSet.load(_write(tmp_path, []), "base")


def test_projected_coordinates_are_refused(tmp_path: Path):
    utm_square = [[[550000, 4180000], [551000, 4180000], [551000, 4181000], [550000, 4180000]]]
    with pytest.raises(ConfigError, match=r"features\[0\] \(region 'a'\): coordinates outside WGS84"):
        GeofenceSet.load(_write(tmp_path, [_feature("a", 0, utm_square)]), "base")


def test_non_wgs84_crs_member_is_refused(tmp_path: Path):
    path = tmp_path / "utm.geojson"
    data = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32610"}},
        "features": [_feature("a", 0, [_ring(0, 0, 100, 100)])],
    }
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"EPSG::32610.* is not WGS84"):
        GeofenceSet.load(path, "base")


def _bow_tie() -> list:
    """A figure-eight ring: a left and a right triangle touching at (50, 50), 2500 m² each."""
    corners = [(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)]
    return [[[CENTRE.inverse(x, y)[1], CENTRE.inverse(x, y)[0]] for x, y in corners]]


def test_self_intersecting_polygon_is_refused_with_explanation(tmp_path: Path):
    path = _write(tmp_path, [_feature("ok", 0, [_ring(500, 0, 600, 100)]), _feature("bow", 3, _bow_tie())])
    with pytest.raises(ConfigError) as info:
        GeofenceSet.load(path, "base")
    message = str(info.value)
    assert message.startswith(f"{path}: 1 invalid fence(s): features[1] (region 'bow'): invalid polygon (")
    assert "Self-intersection" in message
    assert "make_valid would give a MultiPolygon of 2 part(s), 5000 m²" in message
    assert "--repair" in message


def test_self_intersecting_polygon_is_repaired_on_request_with_a_counted_warning(tmp_path: Path):
    path = _write(tmp_path, [_feature("ok", 0, [_ring(500, 0, 600, 100)]), _feature("bow", 3, _bow_tie())])
    logged: list[str] = []
    warnings = CountedWarnings(log=logged.append)
    fences = GeofenceSet.load(path, "base", repair=True, warnings=warnings)
    assert warnings.count("geofence_repaired") == 1
    assert len(fences.repairs) == 1 and "features[1] (region 'bow')" in fences.repairs[0]
    assert fences.fences[1].repaired and not fences.fences[0].repaired
    assert fences.fences[1].area_m2 == pytest.approx(5000, rel=5e-3)
    assert _at(fences, 80, 50) == "bow"  # inside the right-hand triangle
    assert _at(fences, 20, 50) == "bow"  # inside the left-hand triangle
    assert _at(fences, 50, 20) == "base"  # between the lobes


def test_unknown_default_region_name_is_refused(tmp_path: Path):
    path = _write(tmp_path, [_feature("a", 0, [_ring(0, 0, 100, 100)])])
    with pytest.raises(ConfigError, match="default_region: must be a non-empty string"):
        GeofenceSet.load(path, "  ")


# ---------------------------------------------------------------------------------------------- real data
def test_real_sf_file_without_region_properties_is_refused(sf_neighbourhoods_geojson: Path):
    with pytest.raises(ConfigError, match=r"san-francisco.geojson: features\[0\]: missing property 'region'"):
        GeofenceSet.load(sf_neighbourhoods_geojson, "base")


def test_real_sf_neighbourhoods_with_self_intersections_are_refused_then_repaired(sf_all_fences: Path):
    with pytest.raises(ConfigError, match="3 invalid fence") as info:
        GeofenceSet.load(sf_all_fences, "base")
    for name in ("Marina", "Downtown/Civic Center", "North Beach"):
        assert f"(region '{name}'): invalid polygon (Ring Self-intersection" in str(info.value)
    warnings = CountedWarnings(log=lambda message: None)
    fences = GeofenceSet.load(sf_all_fences, "base", repair=True, warnings=warnings)
    assert warnings.count("geofence_repaired") == 3
    assert len(fences.regions) == 37


def test_real_drive_starts_in_ocean_view_and_ends_in_lakeshore(sf_all_fences: Path, sf_track_csv: Path):
    fences = GeofenceSet.load(sf_all_fences, "base", repair=True)
    track = load_track_csv(sf_track_csv)
    regions = fences.lookup_many(np.array([f.lat for f in track]), np.array([f.lon for f in track]))
    changes = [i for i in range(1, len(regions)) if regions[i] != regions[i - 1]]
    assert (regions[0], regions[-1]) == ("Ocean View", "Lakeshore")
    assert changes == [78]  # the realdata README's fact: between the 78th and 79th fix
    # The drive follows the boundary street: it never gets far from the edge (why margins matter, see the
    # resolver tests).
    depth = [fences.signed_distance_m(f.lat, f.lon, regions[i]) for i, f in enumerate(track)]
    assert min(depth) >= 0 and max(depth) < 20


def test_real_neighbour_boundaries_only_overlap_in_slivers(sf_all_fences: Path):
    fences = GeofenceSet.load(sf_all_fences, "base", repair=True)
    overlaps = fences.overlaps()
    assert all(o.area_m2 < 1000 for o in overlaps)  # independently digitised edges, not real overlaps
    assert all(o.rule == "smaller area" for o in overlaps)


# ------------------------------------------------------------------------------------- the example config
def test_example_config_loads_with_the_product_regions():
    fences = GeofenceSet.load(REPO / "config" / "geofences.geojson", "base")
    assert fences.regions == ["highway", "left_hand", "mountain", "urban_day", "urban_night"]
    assert not fences.repairs
    data = json.loads((REPO / "config" / "geofences.geojson").read_text())
    assert "illustrative" in data["attribution"].lower() and "drawn by hand" in data["attribution"]
    assert all(f["properties"]["source"] == "drawn by hand" for f in data["features"])
    overlaps = {(o.region_a, o.region_b): o for o in fences.overlaps()}
    night = overlaps[("urban_day", "urban_night")]
    assert night.winner == "urban_night" and night.rule == "priority"
    assert night.area_m2 == pytest.approx(fences.region_area_m2("urban_night"), rel=1e-3)  # fully inside
    assert overlaps[("urban_day", "highway")].winner == "highway"
    for (lat, lon), region in EXAMPLE_POINTS.items():
        assert fences.lookup(lat, lon) == region, (lat, lon)


# Points of the example fences (config/geofences.geojson) and the region each lies in.
EXAMPLE_POINTS = {
    (37.7700, -122.4300): "urban_day",  # the city square, away from the night district and the highway
    (37.7750, -122.4150): "urban_night",  # the night district inside the city
    (37.7650, -122.4225): "highway",  # the corridor through the city (priority over urban_day)
    (37.7440, -122.4550): "mountain",  # the ridge south-west of the city
    (37.8050, -122.3700): "left_hand",  # the island
    (37.7470, -122.4560): "base",  # the hole in the ridge: the valley town is not mountain
    (37.7000, -122.3000): "base",  # outside every fence
}


def test_priority_may_be_a_float(tmp_path: Path):
    square = Polygon([(-122.45, 37.75), (-122.44, 37.75), (-122.44, 37.76), (-122.45, 37.76)])
    path = tmp_path / "f.geojson"
    feature = {"type": "Feature", "properties": {"region": "sq", "priority": 1.5}, "geometry": mapping(square)}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    fences = GeofenceSet.load(path, "base")
    assert fences.fences[0].priority == 1.5
    assert fences.lookup(37.755, -122.445) == "sq"


def test_the_indexed_boundary_distance_equals_shapelys_on_a_large_fence():
    """A fence of tens of thousands of vertices (a coastline) is measured through an STRtree of boundary pieces:
    the same distance as walking every segment, for points inside, outside and on the edge."""
    import shapely
    from shapely.geometry import Point, Polygon

    from regionadapt_ros.core.geofence import BoundaryDistance

    rng = np.random.default_rng(5)
    angles = np.linspace(0.0, 2 * np.pi, 30_001)[:-1]
    radius = 1000.0 + 40.0 * np.sin(37 * angles) + rng.normal(0.0, 2.0, angles.size)
    shape = Polygon(np.c_[radius * np.cos(angles), radius * np.sin(angles)]).buffer(0)
    holed = shape.difference(Point(0, 0).buffer(200.0))  # a second ring: an inner boundary
    for geometry in (shape, holed):
        measure = BoundaryDistance(geometry.boundary)
        assert measure._tree is not None  # large: the indexed path
        for x, y in [*rng.uniform(-1500, 1500, (200, 2)), (0.0, 0.0), (1000.0, 0.0), (250.0, 0.0)]:
            expected = float(shapely.distance(geometry.boundary, Point(x, y)))
            assert measure(float(x), float(y)) == pytest.approx(expected, abs=1e-9)
    small = BoundaryDistance(Point(0, 0).buffer(10.0).boundary)
    assert small._tree is None and small(0.0, 0.0) == pytest.approx(10.0, rel=2e-3)  # a 64-gon of radius 10


def test_lookup_and_lookup_many_refuse_the_same_non_positions(city: GeofenceSet):
    for lat, lon in ((float("nan"), -122.45), (95.0, -122.45), (37.75, 200.0)):
        with pytest.raises(ValueError, match="needs WGS84 coordinates"):
            city.lookup(lat, lon)
        with pytest.raises(ValueError, match="needs WGS84 coordinates"):
            city.lookup_many(np.array([37.75, lat]), np.array([-122.45, lon]))
