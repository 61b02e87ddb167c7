"""Valid, near-valid and hostile geofence files: a supported carve-out loads, everything else is refused with one
line naming the file and the problem, and a fence the local projection cannot hold is refused, never destroyed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from test_hostile_bundles import call_guarded, needs_fifo

from regionadapt_ros.cli import main
from regionadapt_ros.core.errors import ConfigError, DataError
from regionadapt_ros.core.geofence import GeofenceSet


def square(lon0: float, lat0: float, size: float) -> list[list[list[float]]]:
    return [[[lon0, lat0], [lon0 + size, lat0], [lon0 + size, lat0 + size], [lon0, lat0 + size], [lon0, lat0]]]


def feature(region: str, priority: Any, ring: list[list[list[float]]]) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"region": region, "priority": priority},
            "geometry": {"type": "Polygon", "coordinates": ring}}


def collection(*features: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features), **top}


def write(tmp_path: Path, document: Any, name: str = "fences.geojson") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def check_fails_with_one_line(capsys: pytest.CaptureFixture[str], path: Path, needle: str) -> str:
    code = main(["geofence", "check", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"regionadapt geofence: error: {path}: ") and needle in err, err
    return err


CITY = square(-122.45, 37.75, 0.02)
DISTRICT = square(-122.44, 37.76, 0.005)


def test_a_fence_of_the_default_region_carves_it_out_of_another_region(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, collection(feature("urban", 1, CITY), feature("base", 5, DISTRICT)))
    code = main(["geofence", "check", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert {r["region"] for r in report["regions"]} == {"urban", "base"} and report["shadowed_regions"] == []
    fences = GeofenceSet.load(path, "base")
    assert fences.lookup(37.7625, -122.4375) == "base" and fences.lookup(37.752, -122.448) == "urban"


def test_a_default_region_fence_that_wins_nowhere_is_reported_as_shadowed(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, collection(feature("urban", 9, CITY), feature("base", 1, DISTRICT)))
    assert main(["geofence", "check", str(path)]) == 0
    assert "warning: region 'base' wins nowhere" in capsys.readouterr().out


@pytest.mark.parametrize(("crs", "needle"), [
    ({"type": "name", "properties": ["EPSG:4326"]}, 'crs dict is not WGS84 lon/lat'),
    ({"type": "name", "properties": {"name": ["EPSG:4326"]}}, 'crs list is not WGS84'),
    ("EPSG:4326", 'crs "EPSG:4326" is not WGS84'),
    ({"type": "name", "properties": {"name": "EPSG:3857"}}, 'crs "EPSG:3857" is not WGS84'),
])
def test_a_crs_of_the_wrong_shape_is_refused_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           crs: Any, needle: str) -> None:
    path = write(tmp_path, collection(feature("urban", 1, CITY), crs=crs))
    check_fails_with_one_line(capsys, path, needle)


def test_a_401_digit_priority_is_refused_by_the_parser_and_by_the_set(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(collection(feature("urban", 1, CITY))).replace('"priority": 1', '"priority": ' + "9" * 401)
    check_fails_with_one_line(capsys, write(tmp_path, text), "refused JSON: integer '999")
    # The same document built in Python (no JSON parser in between) is refused by the fence checks.
    for huge in (10**400, 1e300, 2**60):
        with pytest.raises(ConfigError, match=r"property 'priority' must be a finite number within ±2\^53"):
            GeofenceSet.from_geojson(collection(feature("urban", huge, CITY)), "base")


def test_non_finite_coordinates_and_duplicate_properties_are_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(collection(feature("urban", 1, CITY))).replace("-122.45", "NaN", 1)
    check_fails_with_one_line(capsys, write(tmp_path, text), "refused JSON: NaN is not a JSON number")
    text = json.dumps(collection(feature("urban", 1, CITY))).replace('"region": "urban"',
                                                                     '"region": "urban", "region": "base"')
    check_fails_with_one_line(capsys, write(tmp_path, text), "refused JSON: duplicate key 'region'")


def test_a_deeply_nested_geofence_file_is_refused_with_one_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(collection(feature("urban", 1, CITY)))[:-1] + ', "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    check_fails_with_one_line(capsys, write(tmp_path, text), "nested more than 64 levels deep")


@needs_fifo
def test_a_fifo_as_the_geofence_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fences.geojson"
    os.mkfifo(fifo)
    code = call_guarded(lambda: main(["geofence", "check", str(fifo)]), fifo)
    assert code == 1 and "is a FIFO" in capsys.readouterr().err


def test_a_world_sized_fence_is_refused_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = [[[-180, -80], [180, -80], [180, 80], [-180, 80], [-180, -80]]]
    path = write(tmp_path, collection(feature("earth", 0, world), feature("urban", 1, CITY)))
    check_fails_with_one_line(capsys, path, "features[0] (region 'earth'): spans 360.0 degrees of longitude")
    half = [[[-100, -60], [70, -60], [70, 60], [-100, 60], [-100, -60]]]  # under 180 degrees, far too large
    path = write(tmp_path, collection(feature("half", 0, half), feature("urban", 1, CITY)))
    err = check_fails_with_one_line(capsys, path, "features[0] (region 'half'): vertex")
    assert "km from the centre of the fence set" in err and "within 2000 km" in err


def test_a_fence_set_across_the_antimeridian_is_refused_with_the_reason(tmp_path: Path) -> None:
    fiji_east = square(179.9, -17.0, 0.05)
    fiji_west = square(-179.99, -17.0, 0.05)
    with pytest.raises(ConfigError, match=r"sets across the antimeridian are not supported"):
        GeofenceSet.from_geojson(collection(feature("a", 1, fiji_east), feature("b", 1, fiji_west)), "base")


def test_a_country_sized_set_still_loads_and_keeps_its_area(tmp_path: Path) -> None:
    # Two fences 1500 km apart (within the limit): nothing is refused and areas are what geodesy says.
    import pyproj
    from shapely.geometry import shape

    west, east = square(-5.0, 40.0, 0.1), square(12.0, 45.0, 0.1)
    fences = GeofenceSet.from_geojson(collection(feature("w", 1, west), feature("e", 1, east)), "base")
    geod = pyproj.Geod(ellps="WGS84")
    for fence, ring in zip(fences.fences, (west, east), strict=True):
        true_area = abs(geod.geometry_area_perimeter(shape({"type": "Polygon", "coordinates": ring}))[0])
        assert fence.area_m2 == pytest.approx(true_area, rel=0.02)


# ------------------------------------------------------------------------------------------- track CSVs
def test_a_track_csv_cell_beyond_csvs_field_limit_is_one_data_error(tmp_path):
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.core.geo_track import load_track_csv

    path = tmp_path / "track.csv"
    path.write_text("t,lat,lon\n0,37.7,-122.4\n1,37.7," + "1" * 200_000 + "\n")
    with pytest.raises(DataError, match=r"track\.csv: not a CSV track \(field larger than field limit"):
        load_track_csv(path)


def test_a_track_csv_naming_a_column_twice_is_refused(tmp_path):
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.core.geo_track import load_track_csv

    path = tmp_path / "track.csv"
    path.write_text("t,lat,lon,LAT\n0,37.7,-122.4,0\n")
    with pytest.raises(DataError, match="column\\(s\\) 'lat' appear more than once"):
        load_track_csv(path)
    path.write_text("t,lat,lon,,\n0,37.7,-122.4,,\n")  # trailing commas: empty names are not columns
    assert len(load_track_csv(path)) == 1


def test_a_newest_first_track_csv_is_read_in_time_order(tmp_path, sf_track_csv):
    from regionadapt_ros.core.geo_track import load_track_csv

    lines = sf_track_csv.read_text().splitlines()
    reversed_csv = tmp_path / "newest_first.csv"
    reversed_csv.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    forward = load_track_csv(sf_track_csv)
    backward = load_track_csv(reversed_csv)
    assert [f.stamp_s for f in backward] == sorted(f.stamp_s for f in forward)
    assert [(f.lat, f.lon) for f in backward] == [(f.lat, f.lon) for f in forward]


def test_hundreds_of_stacked_fences_are_refused_at_load_and_a_large_tiling_is_not(tmp_path: Path,
                                                                                   capsys) -> None:
    # 460 copies of one square: 105,570 touching pairs, one past the other of MAX_INTERSECTING_PAIRS. Each pair
    # costs an intersection in the overlap report and the territories, so an uncapped stack stalls for minutes.
    from regionadapt_ros.core.geofence import MAX_INTERSECTING_PAIRS

    stack = collection(*(feature(f"r{i}", 1, square(-71.06 + i * 1e-6, 42.36, 0.01)) for i in range(460)))
    assert MAX_INTERSECTING_PAIRS < 460 * 459 // 2
    with pytest.raises(ConfigError, match="pairs of fences touch or overlap"):
        GeofenceSet.from_geojson(stack, "base")
    check_fails_with_one_line(capsys, write(tmp_path, stack), "merge the fences of each region")

    # A 60 x 60 grid of neighbourhoods (3,600 fences, each touching eight neighbours) is a map, and loads.
    grid = collection(
        *(feature(f"n{(i * 60 + j) % 40}", 1, square(-71.06 + i * 1e-3, 42.36 + j * 1e-3, 1e-3))
          for i in range(60) for j in range(60))
    )
    fences = GeofenceSet.from_geojson(grid, "base")
    assert len(fences.fences) == 3600
    assert fences.lookup(42.36 + 0.0305, -71.06 + 0.0205) == f"n{(20 * 60 + 30) % 40}"


@pytest.mark.parametrize(("region", "needle"), [
    ("Back Bay\nWARN forged log line", "U+000A"),
    ("\x1b[2J\x1b[Hurban", "U+001B"),
    ("high\u200bway", "U+200B (Cf)"),
    ("a" * 129, "129 characters long"),
])
def test_a_region_name_with_invisible_characters_or_too_long_is_refused(tmp_path, capsys, region, needle):
    # Names reach logs, /region/current, diagnostics and reports: a newline forges a log line, ESC rewrites the
    # operator's terminal, a zero-width space makes two regions that print alike.
    document = collection(feature(region, 1, CITY))
    with pytest.raises(ConfigError, match="property 'region'") as exc:
        GeofenceSet.from_geojson(document, "base")
    assert needle in str(exc.value) and "\n" not in str(exc.value) and "\x1b" not in str(exc.value)
    check_fails_with_one_line(capsys, write(tmp_path, document), needle)


def test_region_names_as_people_write_them_are_kept(tmp_path):
    names = ["Back Bay", "Sankt Pauli", "大田区", "Saint-Germain-des-Prés", "a" * 128]
    document = collection(*(feature(n, 1, square(-71.1 + 0.03 * i, 42.35, 0.02)) for i, n in enumerate(names)))
    fences = GeofenceSet.from_geojson(document, "base")
    assert fences.regions == sorted(names)
    assert fences.lookup(42.36, -71.1 + 0.03 * 2 + 0.01) == "大田区"
    with pytest.raises(ConfigError, match=r"default_region: .* U\+000A"):
        GeofenceSet.from_geojson(document, "base\nx")


def test_repairing_overlapping_multipolygon_parts_keeps_their_overlap_inside(tmp_path: Path) -> None:
    """Two parts of one MultiPolygon drawn over each other (a common GIS export): the repair unites them; the
    whole-geometry make_valid made their overlap a hole, so a vehicle there was outside its region."""
    a, b = square(-122.45, 37.75, 0.02), square(-122.44, 37.76, 0.02)
    doc = collection({"type": "Feature", "properties": {"region": "city", "priority": 1},
                      "geometry": {"type": "MultiPolygon", "coordinates": [a, b]}})
    with pytest.raises(ConfigError, match="invalid polygon"):
        GeofenceSet.load(write(tmp_path, doc), "base")
    fences = GeofenceSet.load(write(tmp_path, doc), "base", repair=True)
    assert fences.lookup(37.765, -122.435) == "city"  # in both parts
    assert fences.lookup(37.755, -122.445) == "city" and fences.lookup(37.775, -122.425) == "city"
    assert fences.lookup(37.7, -122.5) == "base"
    # many overlapping parts are united too (the whole-geometry make_valid took minutes for thousands)
    many = [square(-122.45 + 0.0001 * k, 37.75, 0.01) for k in range(300)]
    doc = collection({"type": "Feature", "properties": {"region": "city", "priority": 1},
                      "geometry": {"type": "MultiPolygon", "coordinates": many}})
    fences = GeofenceSet.load(write(tmp_path, doc, "many.geojson"), "base", repair=True)
    assert fences.lookup(37.755, -122.445) == "city" and len(fences.repairs) == 1


def test_an_empty_position_cell_in_a_track_csv_is_a_fix_without_a_position(tmp_path, sf_track_csv):
    from regionadapt_ros.core.geo_track import load_track_csv

    path = tmp_path / "gaps.csv"
    path.write_text("t,lat,lon\n0.0,37.7,-122.4\n0.1,,\n0.2,37.7,\n0.3,37.7001,-122.4\n")
    fixes = load_track_csv(path)
    assert [math.isnan(f.lat) or math.isnan(f.lon) for f in fixes] == [False, True, True, False]
    path.write_text("t,lat,lon\n0.0,north,-122.4\n")
    with pytest.raises(DataError, match=r"line 2: column 'lat': 'north' is not a number"):
        load_track_csv(path)


def test_two_fences_drawn_the_same_size_are_decided_by_file_order(tmp_path: Path) -> None:
    # Equal tiles project to areas a few micro-square-metres apart: that must not decide the overlap.
    a, b = feature("a", 1, square(-122.45, 37.75, 0.01)), feature("b", 1, square(-122.445, 37.75, 0.01))
    for first, second in ((a, b), (b, a)):
        fences = GeofenceSet.from_geojson(collection(first, second), "base")
        (overlap,) = fences.overlaps()
        assert overlap.rule == "file order"
        assert overlap.winner == first["properties"]["region"]
        assert fences.lookup(37.755, -122.4425) == first["properties"]["region"]


def test_a_region_name_written_decomposed_is_the_same_region_as_precomposed(tmp_path):
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # both print as café
    doc = collection(feature(composed, 1, CITY), feature(decomposed, 1, square(-122.40, 37.75, 0.01)))
    fences = GeofenceSet.from_geojson(doc, decomposed)
    assert fences.regions == [composed] and fences.default_region == composed


@pytest.mark.parametrize(("ring", "needle"), [
    ([["-122.45", "37.75"], [-122.44, 37.75], [-122.44, 37.76], [-122.45, 37.75]], 'a position holds "-122.45"'),
    ([[True, False], [-122.44, 37.75], [-122.44, 37.76], [True, False]], "a position holds true"),
    ([[-122.45, 37.75, None], [-122.44, 37.75], [-122.44, 37.76], [-122.45, 37.75]], "a position holds null"),
    ([-122.45, 37.75], "expected a list, got -122.45"),
])
def test_positions_that_are_not_numbers_are_refused(tmp_path, capsys, ring, needle):
    path = write(tmp_path, collection(feature("city", 1, [ring])))
    check_fails_with_one_line(capsys, path, needle)
