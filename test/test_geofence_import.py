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
    ("Ward 3=zone:north", RegionMapping("Ward 3", "zone:north", None)),  # not a number: part of the region
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
    ("Lakeshore=high\u200bway", "invisible character"),
])
def test_a_bad_mapping_is_refused(text, reason):
    with pytest.raises(ConfigError, match=reason):
        RegionMapping.parse(text)


def test_an_area_drawn_as_several_features_keeps_them_all_and_integer_names_work():
    data = _boundaries(({"OBJECTID": 7}, _square(10.0, 50.0)), ({"OBJECTID": 7}, _square(10.02, 50.0)),
                       ({"OBJECTID": 8}, _square(10.04, 50.0)), ({"OBJECTID": True}, _square(10.06, 50.0)),
                       ({"OBJECTID": 9}, {"type": "Point", "coordinates": [10.1, 50.0]}))
    result = fences_from_boundaries(data, source="b.geojson", name_property="OBJECTID",
                                    mapping=[RegionMapping("7", "old_town", 5.0)], priority=1.0)
    assert [(r["index"], r["region"], r["priority"]) for r in result.fences] == [(0, "old_town", 5), (1, "old_town", 5)]
    assert [f["properties"]["priority"] for f in result.document["features"]] == [5, 5]
    assert isinstance(result.document["features"][0]["properties"]["priority"], int)
    assert result.skipped == {"unmapped": 2, "unnamed": 1}
    fences = GeofenceSet.from_geojson(result.document, "base")
    assert fences.regions == ["old_town"] and len(fences.fences_of("old_town")) == 2

    every = fences_from_boundaries(data, source="b.geojson", name_property="OBJECTID", priority=1.0)
    assert [(r["region"], r["priority"]) for r in every.fences] == [("7", 1.0), ("7", 1.0), ("8", 1.0)]
    assert every.skipped == {"unnamed": 1, "not_polygonal": 1}


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
