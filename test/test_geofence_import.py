"""``regionadapt geofence import``: a boundary file whose areas are named by a property becomes a fence file that
the nodes' loader accepts as it is; the real San Francisco neighbourhoods and drive first, then bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionadapt_ros.cli import main
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geofence import GeofenceSet
from regionadapt_ros.core.geofence_import import RegionMapping, fences_from_boundaries


def _square(lon: float, lat: float, size: float = 0.01) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _boundaries(*features: tuple[dict, dict | None]) -> dict:
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features]}


def _import(tmp_path: Path, data: dict | Path, *args: str) -> int:
    source = data if isinstance(data, Path) else tmp_path / "boundaries.geojson"
    if not isinstance(data, Path):
        source.write_text(json.dumps(data))
    return main(["geofence", "import", str(source), "--out", str(tmp_path / "fences.geojson"), *args])


# ------------------------------------------------------------------------------------------- real data
def test_the_real_neighbourhoods_need_repair_and_then_load_without_it(tmp_path, capsys, sf_neighbourhoods_geojson,
                                                                      sf_track_csv):
    out = tmp_path / "fences.geojson"
    assert _import(tmp_path, sf_neighbourhoods_geojson) == 1
    err = capsys.readouterr().err
    assert "3 invalid fence(s)" in err and "'Marina'" in err and "--repair" in err
    assert not out.exists()

    assert _import(tmp_path, sf_neighbourhoods_geojson, "--repair") == 0
    printed = capsys.readouterr().out
    assert "37 feature(s), 37 region(s)" in printed and "repaired:" in printed
    fences = GeofenceSet.load(out, "base")  # as a vehicle loads it: no repair
    assert len(fences.regions) == 37 and {"Ocean View", "Lakeshore", "Marina"} <= set(fences.regions)
    assert all(f.geometry_lonlat.is_valid for f in fences.fences)
    # Every fence is the area it was: repair changes no area by more than a square metre here.
    source = json.loads(sf_neighbourhoods_geojson.read_text())
    drawn = GeofenceSet.from_geojson(
        {"type": "FeatureCollection", "features": [
            {**f, "properties": {"region": f["properties"]["name"], "priority": 0}} for f in source["features"]]},
        "base", repair=True)
    assert fences.region_areas_m2() == pytest.approx(drawn.region_areas_m2(), abs=1.0)

    # The real drive crosses from Ocean View into Lakeshore once.
    assert main(["geofence", "check", str(out), "--track", str(sf_track_csv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["track"]["initial_region"] == "Ocean View"
    assert [(s["from"], s["to"]) for s in report["switches"]] == [("Ocean View", "Lakeshore")]


def test_mapped_real_neighbourhoods_become_the_product_regions(tmp_path, capsys, sf_neighbourhoods_geojson):
    assert _import(tmp_path, sf_neighbourhoods_geojson, "--map", "Ocean View=urban_day:10",
                   "--map", "Lakeshore=highway:20") == 0
    printed = capsys.readouterr().out
    assert "left out: 35 feature(s) not mapped by --map" in printed
    assert "'highway', 'urban_day'" in printed
    doc = json.loads((tmp_path / "fences.geojson").read_text())
    written = {f["properties"]["name"]: f for f in doc["features"]}
    assert written["Ocean View"]["properties"] == {"region": "urban_day", "priority": 10, "name": "Ocean View"}
    assert written["Lakeshore"]["properties"] == {"region": "highway", "priority": 20, "name": "Lakeshore"}
    assert len(doc["features"]) == 2
    source = json.loads(sf_neighbourhoods_geojson.read_text())
    drawn = {f["properties"]["name"]: f["geometry"] for f in source["features"]}
    assert written["Lakeshore"]["geometry"] == drawn["Lakeshore"]  # a valid geometry is written as it was drawn


def test_a_misspelt_name_is_refused_with_the_names_it_may_mean(tmp_path, capsys, sf_neighbourhoods_geojson):
    assert _import(tmp_path, sf_neighbourhoods_geojson, "--map", "Lakeshor=highway") == 1
    assert "did you mean 'Lakeshore'" in capsys.readouterr().err
    assert _import(tmp_path, sf_neighbourhoods_geojson, "--name-property", "nhood", "--map", "Lakeshore=highway") == 1
    err = capsys.readouterr().err
    assert "no feature has a 'nhood' property" in err and "'name'" in err and "'cartodb_id'" in err
    assert not (tmp_path / "fences.geojson").exists()


# ------------------------------------------------------------------------------------------- mappings
@pytest.mark.parametrize(("text", "expected"), [
    ("Back Bay=urban_day", RegionMapping("Back Bay", "urban_day", None)),
    ("Back Bay=urban_day:7", RegionMapping("Back Bay", "urban_day", 7.0)),
    ("A=B=urban_day:-2.5", RegionMapping("A=B", "urban_day", -2.5)),   # the name keeps its '='
    ("Ward 3=zone:-9007199254740992", RegionMapping("Ward 3", "zone", -2.0**53)),  # the loader's bound itself
    (" Café =  night ", RegionMapping("Café", "night", None)),
])
def test_a_mapping_reads_name_region_and_priority(text, expected):
    assert RegionMapping.parse(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("Lakeshore", "expected NAME=REGION"),
    ("=highway", "expected NAME=REGION"),
    ("Lakeshore=", "expected NAME=REGION"),
    ("Lakeshore=highway:nan", "not a finite number"),
    ("Lakeshore=highway:inf", "not a finite number"),
    ("Lakeshore=:3", "is empty"),
    # A mistyped priority is no part of the region's name: "m:five" would be a region no bundle is made for.
    ("Mission=m:five", "priority 'five' is not a number"),
    ("Mission=m:5x", "priority '5x' is not a number"),
    ("Mission=m:", "priority '' is not a number"),
    ("Mission=m:5:6", "priority '5:6' is not a number"),
    ("Ward 3=zone:north", "a region mapped with --map cannot hold ':'"),
    ("Mission=m:1e300", r"not a finite number within ±2\^53"),
    ("Mission=m:9007199254740994", r"within ±2\^53"),
    ("Lakeshore=high\u200bway", "invisible character"),
])
def test_a_bad_mapping_is_refused(text, reason):
    with pytest.raises(ConfigError, match=reason):
        RegionMapping.parse(text)


def test_names_that_are_neither_text_nor_whole_numbers_are_counted_as_such():
    # Shapefile exports write integer ids as floats (101.0): that is the area 101.
    data = _boundaries(({"id": 101.0}, _square(10.0, 50.0)), ({"id": 3.5}, _square(10.02, 50.0)),
                       ({"id": None}, _square(10.04, 50.0)), ({"id": ["x"]}, _square(10.06, 50.0)),
                       ({"other": 1}, _square(10.08, 50.0)))
    result = fences_from_boundaries(data, source="b.geojson", name_property="id")
    assert [r["region"] for r in result.fences] == ["101"]
    assert result.skipped == {"name_not_text": 2, "unnamed": 2}
    only_floats = _boundaries(({"name": 1.5}, _square(10.0, 50.0)), ({"name": True}, _square(10.02, 50.0)))
    with pytest.raises(ConfigError, match=r"no area is named: the 'name' of 2 feature\(s\) is neither a string nor "
                                          r"a whole number \(e.g. 1.5\)"):
        fences_from_boundaries(only_floats, source="b.geojson")


def test_an_area_drawn_as_several_features_keeps_them_all_and_integer_names_work():
    data = _boundaries(({"OBJECTID": 7}, _square(10.0, 50.0)), ({"OBJECTID": 7}, _square(10.02, 50.0)),
                       ({"OBJECTID": 8}, _square(10.04, 50.0)), ({"OBJECTID": True}, _square(10.06, 50.0)),
                       ({"OBJECTID": 9}, {"type": "Point", "coordinates": [10.1, 50.0]}))
    result = fences_from_boundaries(data, source="b.geojson", name_property="OBJECTID",
                                    mapping=[RegionMapping("7", "old_town", 5.0)], priority=1.0)
    assert [(r["index"], r["region"], r["priority"]) for r in result.fences] == [(0, "old_town", 5), (1, "old_town", 5)]
    assert [f["properties"]["priority"] for f in result.document["features"]] == [5, 5]
    assert isinstance(result.document["features"][0]["properties"]["priority"], int)
    assert result.skipped == {"unmapped": 2, "name_not_text": 1}  # true is no id
    fences = GeofenceSet.from_geojson(result.document, "base")
    assert fences.regions == ["old_town"] and len(fences.fences_of("old_town")) == 2

    every = fences_from_boundaries(data, source="b.geojson", name_property="OBJECTID", priority=1.0)
    assert [(r["region"], r["priority"]) for r in every.fences] == [("7", 1.0), ("7", 1.0), ("8", 1.0)]
    assert every.skipped == {"name_not_text": 1, "not_polygonal": 1}


def test_bad_boundary_files_are_refused_naming_what_is_wrong():
    def refused(data, match, **kw):
        with pytest.raises(ConfigError, match=match):
            fences_from_boundaries(data, source="b.geojson", **kw)

    refused([1, 2], "FeatureCollection or Feature")
    refused({"type": "FeatureCollection", "features": {}}, "'features' must be an array")
    refused({"type": "FeatureCollection", "features": []}, "'features' is empty")
    refused({"type": "FeatureCollection", "features": [3]}, r"features\[0\]: not a GeoJSON Feature")
    refused(_boundaries(({"name": "A"}, {"type": "Point", "coordinates": [1.0, 2.0]})),
            "no area with a Polygon or MultiPolygon")
    refused(_boundaries(({"name": "A"}, None)), "have no Polygon or MultiPolygon geometry",
            mapping=[RegionMapping("A", "r")])
    refused(_boundaries(({"name": "A"}, _square(1.0, 2.0))), "mapped more than once",
            mapping=[RegionMapping("A", "r"), RegionMapping("A", "s")])
    # An area name that cannot name a region (it would forge log lines) must be mapped to one that can.
    refused(_boundaries(({"name": "A\nINFO forged"}, _square(1.0, 2.0))), "cannot name a region")
    many = _boundaries(*(({"name": f"area {i}"}, _square(1.0 + 0.02 * i, 2.0)) for i in range(15)))
    refused(many, r"the file names 'area 0', 'area 1', .* and 5 more", mapping=[RegionMapping("zzz", "r")])
    ok = fences_from_boundaries(_boundaries(({"name": "A\nINFO forged"}, _square(1.0, 2.0))), source="b",
                                mapping=[RegionMapping("A\nINFO forged", "r")])
    assert ok.fences[0]["region"] == "r"


def test_errors_name_the_features_as_the_boundary_file_numbers_them(tmp_path, capsys, sf_neighbourhoods_geojson):
    # Only the mapped areas are written, so the fence document's numbering is not the file's the user reads.
    names = [f["properties"]["name"] for f in json.loads(sf_neighbourhoods_geojson.read_text())["features"]]
    marina, north_beach = names.index("Marina"), names.index("North Beach")
    assert marina != 1 or north_beach != 0
    assert _import(tmp_path, sf_neighbourhoods_geojson, "--map", "North Beach=nb", "--map", "Marina=m") == 1
    err = capsys.readouterr().err
    assert f"features[{marina}] (region 'm'): invalid polygon" in err
    assert _import(tmp_path, sf_neighbourhoods_geojson, "--map", "North Beach=nb", "--map", "Marina=m",
                   "--repair") == 0
    assert f"features[{marina}] (region 'm'): repaired invalid polygon" in capsys.readouterr().err


def test_priorities_and_the_default_region_given_on_the_command_line(tmp_path, capsys):
    data = _boundaries(({"name": "A"}, _square(1.0, 2.0)), ({"name": "B"}, _square(1.002, 2.002, 0.002)))
    for bad in (float("nan"), float("inf"), 1e20):
        assert _import(tmp_path, data, "--priority", str(bad)) == 1
        assert capsys.readouterr().err.startswith(f"regionadapt geofence: error: --priority: priority {bad:g} "
                                                  "is not a finite number within ±2^53")
    # An area mapped to the default region is a carve-out of it, said so; no bundle is needed for it.
    assert _import(tmp_path, data, "--map", "A=urban:1", "--map", "B=base:5") == 0
    printed = capsys.readouterr().out
    assert "the fences of 'base' are carve-outs" in printed and "needs a bundle for each of: 'urban'" in printed
    assert _import(tmp_path, data, "--map", "A=base", "--force") == 0
    assert "needs a bundle for each of: none (every fence is of the default region)" in capsys.readouterr().out


def test_the_fence_file_is_compact_and_never_larger_than_the_loader_reads(tmp_path, capsys, monkeypatch):
    from regionadapt_ros.core import geofence

    data = _boundaries(*(({"name": f"area {i}"}, _square(1.0 + 0.02 * i, 2.0)) for i in range(30)))
    source = tmp_path / "boundaries.geojson"
    source.write_text(json.dumps(data, separators=(",", ":")))
    assert main(["geofence", "import", str(source), "--out", str(tmp_path / "fences.geojson")]) == 0
    written = (tmp_path / "fences.geojson").read_bytes()
    assert b", " not in written and b'"region":"area 0"' in written
    assert capsys.readouterr().out.splitlines()[-1].endswith("'area 17' and 20 more (the table lists them)")
    # Region and priority make each feature longer: such a file near the limit must not be written.
    monkeypatch.setattr(geofence, "MAX_GEOJSON_BYTES", source.stat().st_size + 10)
    assert main(["geofence", "import", str(source), "--out", str(tmp_path / "big.geojson")]) == 1
    assert "more than a geofence file may hold" in capsys.readouterr().err
    assert not (tmp_path / "big.geojson").exists()


def test_the_fence_file_holds_plain_geojson_whatever_the_loader_forgave(tmp_path, capsys):
    # An unclosed ring, a 3-D position and an empty MultiPolygon part load (the loader forgives them) but other
    # GIS tools refuse them (RFC 7946): the file holds the geometry as read, closed, 2-D, without the empty part.
    unclosed = {"type": "Polygon", "coordinates": [[[1.0, 2.0], [1.01, 2.0], [1.01, 2.01], [1.0, 2.01]]]}
    solid = {"type": "MultiPolygon", "coordinates": [[[]], [[[1.1, 2.0, 7.5], [1.11, 2.0, 7.5], [1.11, 2.01, 7.5],
                                                              [1.1, 2.0, 7.5]]]]}
    assert _import(tmp_path, _boundaries(({"name": "A"}, unclosed), ({"name": "B"}, solid))) == 0
    written = {f["properties"]["name"]: f["geometry"]
               for f in json.loads((tmp_path / "fences.geojson").read_text())["features"]}
    ring = written["A"]["coordinates"][0]
    assert ring[0] == ring[-1] == [1.0, 2.0] and len(ring) == 5
    assert written["B"] == {"type": "MultiPolygon", "coordinates": [[[[1.1, 2.0], [1.11, 2.0], [1.11, 2.01],
                                                                       [1.1, 2.0]]]]}


def test_a_crs_that_is_not_wgs84_is_refused_by_the_fence_loader(tmp_path, capsys):
    data = _boundaries(({"name": "A"}, _square(500000.0, 4000000.0, 1000.0)))
    data["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32610"}}
    assert _import(tmp_path, data) == 1
    assert "is not WGS84" in capsys.readouterr().err
    assert not (tmp_path / "fences.geojson").exists()


def test_the_output_never_replaces_the_input_or_an_existing_file_unasked(tmp_path, capsys):
    data = _boundaries(({"name": "A"}, _square(1.0, 2.0)))
    source = tmp_path / "boundaries.geojson"
    source.write_text(json.dumps(data))
    before = source.read_bytes()
    assert main(["geofence", "import", str(source), "--out", str(source)]) == 1
    assert main(["geofence", "import", str(source), "--out", str(source), "--force"]) == 1
    assert source.read_bytes() == before
    (tmp_path / "link.geojson").symlink_to(source)
    assert main(["geofence", "import", str(source), "--out", str(tmp_path / "link.geojson"), "--force"]) == 1
    assert source.read_bytes() == before

    out = tmp_path / "fences.geojson"
    out.write_text("mine")
    assert _import(tmp_path, data) == 1
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "mine"
    assert _import(tmp_path, data, "--force") == 0
    assert GeofenceSet.load(out, "base").regions == ["A"]
    # A folder as the boundary file is named as one (not as an output inside it); a new folder is made for --out.
    assert main(["geofence", "import", str(tmp_path), "--out", str(tmp_path / "x.geojson")]) == 1
    assert "is a directory; give the boundary GeoJSON file" in capsys.readouterr().err
    assert main(["geofence", "import", str(source), "--out", str(tmp_path / "new" / "fences.geojson")]) == 0
    assert GeofenceSet.load(tmp_path / "new" / "fences.geojson", "base").regions == ["A"]
