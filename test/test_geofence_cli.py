"""``regionadapt geofence check``: validation output, track replay from CSV and rosbag2, JSON, plots, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from regionadapt_ros.cli import main
from regionadapt_ros.core.geo_track import load_track_csv
from regionadapt_ros.core.geofence import GeofenceSet

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "geofences.geojson"


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["geofence", "check", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_check_lists_regions_areas_and_overlaps(capsys: pytest.CaptureFixture[str]):
    assert main(["geofence", "check", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "6 feature(s), 5 region(s), default region 'base'" in out
    for region in ("urban_day", "urban_night", "highway", "mountain", "left_hand"):
        assert f"  {region} " in out
    assert "urban_day / urban_night" in out and "-> urban_night (priority)" in out


def test_check_json_reports_regions_with_areas(capsys: pytest.CaptureFixture[str]):
    report = _run_json(capsys, str(CONFIG))
    fences = GeofenceSet.load(CONFIG, "base")
    by_region = {r["region"]: r for r in report["regions"]}
    assert sorted(by_region) == fences.regions
    assert by_region["highway"]["features"] == 2 and by_region["highway"]["priority"] == 30
    assert by_region["urban_night"]["area_km2"] == pytest.approx(fences.region_area_m2("urban_night") / 1e6, 1e-3)
    pairs = {(o["region_a"], o["region_b"]): o for o in report["overlaps"]}
    assert pairs[("urban_day", "urban_night")]["winner"] == "urban_night"
    assert pairs[("urban_day", "urban_night")]["area_m2"] > 100_000
    assert "switches" not in report  # no track given


# The real drive (comma2k19) over two real neighbourhoods: Ocean View = urban_day, Lakeshore = highway; the
# road follows their boundary, 0-12.4 m inside Lakeshore, so margins decide when (and whether) it switches.
REAL = ("urban_day", "highway")


def test_real_csv_track_prints_the_switch_with_its_time(capsys, sf_boundary_fences, sf_track_csv):
    args = ["--track", str(sf_track_csv), "--enter-margin", "1", "--exit-margin", "1"]
    assert main(["geofence", "check", str(sf_boundary_fences), *args]) == 0
    out = capsys.readouterr().out
    assert "579 fixes" in out
    assert "start in urban_day" in out
    switch_lines = [line for line in out.splitlines() if "switch urban_day -> highway" in line]
    assert len(switch_lines) == 1
    assert "prefetch hint: highway" in out
    assert out.index("prefetch hint: highway") < out.index("switch urban_day -> highway")


def test_real_csv_track_json_switch_lies_inside_the_new_fence_past_the_margin(capsys, sf_boundary_fences,
                                                                             sf_track_csv):
    report = _run_json(capsys, str(sf_boundary_fences), "--track", str(sf_track_csv), "--enter-margin", "12",
                       "--exit-margin", "1")
    assert report["track"]["initial_region"] == "urban_day"
    assert [(s["from"], s["to"]) for s in report["switches"]] == [REAL]
    switch = report["switches"][0]
    fences = GeofenceSet.load(sf_boundary_fences, "base")
    assert fences.signed_distance_m(switch["lat"], switch["lon"], "highway") >= 12.0
    track = load_track_csv(sf_track_csv)
    assert switch["t"] == pytest.approx(switch["stamp_s"] - track[0].stamp_s, abs=1e-3)
    assert report["resolver"]["enter_margin_m"] == 12.0
    hint = report["track"]["hints"][0]
    assert hint["region"] == "highway" and hint["t"] < switch["t"]


def test_margins_from_the_command_line_change_the_switch_time(capsys, sf_boundary_fences, sf_track_csv):
    common = [str(sf_boundary_fences), "--track", str(sf_track_csv), "--exit-margin", "1", "--confirm", "0"]
    near = _run_json(capsys, *common, "--enter-margin", "1")
    far = _run_json(capsys, *common, "--enter-margin", "8")
    deep = _run_json(capsys, *common, "--enter-margin", "13")
    # The road drifts ~1.4 m deeper into Lakeshore per 25 fixes: 7 m more margin is some 10 s later.
    assert near["switches"][0]["t"] + 5.0 < far["switches"][0]["t"]
    assert deep["switches"] == []  # deeper than the drive ever gets (12.4 m)


def test_csv_with_t_lat_lon_h_std_columns(tmp_path: Path, capsys, sf_boundary_fences, sf_track_csv):
    path = tmp_path / "track.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "lat", "lon", "h_std"])
        for i, fix in enumerate(load_track_csv(sf_track_csv)):
            # Every tenth fix reports 30 m accuracy: the resolver must ignore those.
            writer.writerow([f"{fix.stamp_s:.6f}", fix.lat, fix.lon, "30" if i % 10 == 0 else "1.5"])
    report = _run_json(capsys, str(sf_boundary_fences), "--track", str(path), *SMALL_MARGINS)
    assert report["track"]["counters"]["poor_accuracy"] == 58
    assert [(s["from"], s["to"]) for s in report["switches"]] == [REAL]


SMALL_MARGINS = ("--enter-margin", "1", "--exit-margin", "1")


def test_a_track_in_milliseconds_or_without_a_usable_fix_is_warned_about(tmp_path: Path, capsys, sf_boundary_fences,
                                                                         sf_track_csv):
    fixes = load_track_csv(sf_track_csv)
    in_ms, unusable = tmp_path / "ms.csv", tmp_path / "no_fix.csv"
    with in_ms.open("w", newline="") as a, unusable.open("w", newline="") as b:
        ms, none = csv.writer(a), csv.writer(b)
        ms.writerow(["time", "lat", "lon"])
        none.writerow(["t", "lat", "lon", "status"])
        for fix in fixes:
            ms.writerow([f"{fix.stamp_s * 1000.0:.3f}", fix.lat, fix.lon])
            none.writerow([f"{fix.stamp_s:.3f}", fix.lat, fix.lon, -1])
    report = _run_json(capsys, str(sf_boundary_fences), "--track", str(in_ms), *SMALL_MARGINS)
    assert any("is the time column in seconds?" in w for w in report["track"]["warnings"])
    assert main(["geofence", "check", str(sf_boundary_fences), "--track", str(unusable)]) == 0
    out = capsys.readouterr().out
    assert f"warning: no fix of the track was usable (no_fix {len(fixes)})" in out and "start in None" not in out
    # the real track in seconds has no warning
    report = _run_json(capsys, str(sf_boundary_fences), "--track", str(sf_track_csv), *SMALL_MARGINS)
    assert report["track"]["warnings"] == []


def _write_bag(path: Path, track_csv: Path, storage: StoragePlugin, no_fix_at: int) -> None:
    """The real drive as sensor_msgs/msg/NavSatFix on /gnss/fix (plus a decoy NavSatFix topic and a String
    topic), written with the Humble type store; message ``no_fix_at`` is a NO_FIX with NaN coordinates."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    NavSatFix = typestore.types["sensor_msgs/msg/NavSatFix"]
    NavSatStatus = typestore.types["sensor_msgs/msg/NavSatStatus"]
    Header = typestore.types["std_msgs/msg/Header"]
    Time = typestore.types["builtin_interfaces/msg/Time"]
    String = typestore.types["std_msgs/msg/String"]
    track = load_track_csv(track_csv)
    with Writer(path, version=9, storage_plugin=storage) as writer:
        status_topic = writer.add_connection("/status", "std_msgs/msg/String", typestore=typestore)
        fix_topic = writer.add_connection("/gnss/fix", "sensor_msgs/msg/NavSatFix", typestore=typestore)
        decoy = writer.add_connection("/gnss/raw", "sensor_msgs/msg/NavSatFix", typestore=typestore)
        writer.write(status_topic, 1, typestore.serialize_cdr(String(data="hello"), "std_msgs/msg/String"))
        for i, fix in enumerate(track):
            sec = math.floor(fix.stamp_s)
            stamp = Time(sec=sec, nanosec=round((fix.stamp_s - sec) * 1e9))
            no_fix = i == no_fix_at
            covariance = np.diag([2.25, 2.25, 9.0]).reshape(-1).astype(np.float64)
            msg = NavSatFix(
                header=Header(stamp=stamp, frame_id="gnss"),
                status=NavSatStatus(status=-1 if no_fix else 0, service=1),
                latitude=math.nan if no_fix else fix.lat,
                longitude=math.nan if no_fix else fix.lon,
                altitude=30.0,
                position_covariance=covariance,
                position_covariance_type=2,
            )
            log_time = int(fix.stamp_s * 1e9) + 1000
            writer.write(fix_topic, log_time, typestore.serialize_cdr(msg, "sensor_msgs/msg/NavSatFix"))
            if i % 50 == 0:  # the decoy stays in the Pacific
                far = NavSatFix(
                    header=Header(stamp=stamp, frame_id="raw"),
                    status=NavSatStatus(status=0, service=1),
                    latitude=37.0,
                    longitude=-125.0,
                    altitude=0.0,
                    position_covariance=covariance,
                    position_covariance_type=2,
                )
                writer.write(decoy, log_time, typestore.serialize_cdr(far, "sensor_msgs/msg/NavSatFix"))


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def test_rosbag2_navsatfix_track_gives_the_same_switch_as_the_csv(
    tmp_path: Path, capsys, storage: StoragePlugin, sf_boundary_fences, sf_track_csv
):
    bag = tmp_path / "drive"
    _write_bag(bag, sf_track_csv, storage, no_fix_at=100)
    fences = str(sf_boundary_fences)
    from_csv = _run_json(capsys, fences, "--track", str(sf_track_csv), *SMALL_MARGINS)
    from_bag = _run_json(capsys, fences, "--track", str(bag), *SMALL_MARGINS)
    assert from_bag["track"]["fixes"] == 579
    assert from_bag["track"]["counters"]["no_fix"] == 1
    assert [(s["from"], s["to"]) for s in from_bag["switches"]] == [REAL]
    assert from_bag["switches"][0]["stamp_s"] == pytest.approx(from_csv["switches"][0]["stamp_s"], abs=0.15)


def test_a_bare_mcap_file_is_read_without_its_metadata(tmp_path: Path, capsys, sf_boundary_fences, sf_track_csv):
    _write_bag(tmp_path / "drive", sf_track_csv, StoragePlugin.MCAP, no_fix_at=-1)
    (recording,) = (tmp_path / "drive").glob("*.mcap")
    lone = tmp_path / "lone.mcap"
    lone.write_bytes(recording.read_bytes())
    report = _run_json(capsys, str(sf_boundary_fences), "--track", str(lone), *SMALL_MARGINS)
    assert report["track"]["fixes"] == 579
    assert [(s["from"], s["to"]) for s in report["switches"]] == [REAL]


def test_geofence_without_an_action_prints_help(capsys: pytest.CaptureFixture[str]):
    assert main(["geofence"]) == 2
    assert "check" in capsys.readouterr().out


def test_rosbag2_topic_option_selects_the_navsatfix_topic(tmp_path: Path, capsys, sf_boundary_fences, sf_track_csv):
    bag = tmp_path / "drive"
    _write_bag(bag, sf_track_csv, StoragePlugin.SQLITE3, no_fix_at=-1)
    decoy = _run_json(capsys, str(sf_boundary_fences), "--track", str(bag), "--topic", "/gnss/raw")
    assert decoy["track"]["fixes"] == 12
    assert decoy["track"]["initial_region"] == "base" and decoy["switches"] == []


def test_rosbag2_unknown_topic_is_an_error_naming_it(tmp_path: Path, capsys, sf_track_csv):
    bag = tmp_path / "drive"
    _write_bag(bag, sf_track_csv, StoragePlugin.SQLITE3, no_fix_at=-1)
    assert main(["geofence", "check", str(CONFIG), "--track", str(bag), "--topic", "/status"]) == 1
    err = capsys.readouterr().err
    assert "no sensor_msgs/msg/NavSatFix topic '/status'" in err and "/gnss/fix (sensor_msgs/msg/NavSatFix)" in err


def test_plot_writes_a_png_with_fences_and_track(tmp_path: Path, capsys, sf_boundary_fences, sf_track_csv):
    import matplotlib.image

    png = tmp_path / "map.png"
    assert main(["geofence", "check", str(sf_boundary_fences), "--track", str(sf_track_csv), "--plot",
                 str(png)]) == 0
    assert f"plot: {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 600 and image.shape[1] >= 1200  # two panels side by side
    assert float(image[..., :3].std()) > 0.05  # not a blank canvas


def test_invalid_fence_file_exits_1_naming_file_and_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = json.loads(CONFIG.read_text())
    del data["features"][2]["properties"]["priority"]  # the highway corridor
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(data))
    assert main(["geofence", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: features[2] (region 'highway'): missing property 'priority'" in err


def test_repair_flag_loads_self_intersecting_fences(capsys, sf_all_fences, sf_track_csv):
    path = sf_all_fences
    assert main(["geofence", "check", str(path)]) == 1
    assert "3 invalid fence(s)" in capsys.readouterr().err
    report = _run_json(capsys, str(path), "--repair", "--track", str(sf_track_csv), "--enter-margin", "0.5")
    assert len(report["repairs"]) == 3
    assert [(s["from"], s["to"]) for s in report["switches"]] == [("Ocean View", "Lakeshore")]


def test_missing_track_and_bad_csv_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["geofence", "check", str(CONFIG), "--track", str(tmp_path / "none.csv")]) == 1
    assert "none.csv: track not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("t,lat,lon\n0.0,37.7,-122.4\n0.1,north,-122.4\n")
    assert main(["geofence", "check", str(CONFIG), "--track", str(bad)]) == 1
    assert "bad.csv: line 3: column 'lat': 'north' is not a number" in capsys.readouterr().err
    headerless = tmp_path / "cols.csv"
    headerless.write_text("time,x,y\n0,1,2\n")
    assert main(["geofence", "check", str(CONFIG), "--track", str(headerless)]) == 1
    assert "missing column(s) (lat: one of lat, latitude, latitude_deg" in capsys.readouterr().err


def test_bad_margin_parameter_exits_1(capsys: pytest.CaptureFixture[str]):
    assert main(["geofence", "check", str(CONFIG), "--enter-margin", "-3"]) == 1
    assert "enter_margin_m: must be >= 0" in capsys.readouterr().err


def test_plot_names_need_an_image_suffix_and_dollar_signs_in_region_names_are_plain_text(tmp_path, capsys):
    fences = tmp_path / "fences.geojson"
    ring = [[-122.40, 37.70], [-122.39, 37.70], [-122.39, 37.71], [-122.40, 37.71], [-122.40, 37.70]]
    fences.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": "$x_{$", "priority": 1},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    for bad in ("map", "map.foo"):
        with pytest.raises(SystemExit):
            main(["geofence", "check", str(fences), "--plot", str(tmp_path / bad)])
        assert "the file name must end in .png, .svg, .pdf" in capsys.readouterr().err
    assert main(["geofence", "check", str(fences), "--plot", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.png").stat().st_size > 0 and not (tmp_path / "map.png.png").exists()



def test_a_fence_too_narrow_to_be_entered_is_warned_about(tmp_path: Path, capsys):
    lat0, lon0 = 37.75, -122.45
    wide = 0.01  # about 900 m
    narrow = 16.0 / 111_000.0  # a 16 m corridor: never 10 m (the default enter margin) inside it
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": "city", "priority": 1}, "geometry": {"type": "Polygon",
         "coordinates": [[[lon0, lat0], [lon0 + wide, lat0], [lon0 + wide, lat0 + wide], [lon0, lat0 + wide],
                          [lon0, lat0]]]}},
        {"type": "Feature", "properties": {"region": "corridor", "priority": 2}, "geometry": {"type": "Polygon",
         "coordinates": [[[lon0 + 0.02, lat0], [lon0 + 0.03, lat0], [lon0 + 0.03, lat0 + narrow],
                          [lon0 + 0.02, lat0 + narrow], [lon0 + 0.02, lat0]]]}}]}
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(doc))
    report = _run_json(capsys, str(path))
    assert report["unenterable_regions"] == ["corridor"]
    assert main(["geofence", "check", str(path)]) == 0
    assert "warning: region 'corridor' is never entered" in capsys.readouterr().out
    assert _run_json(capsys, str(path), "--enter-margin", "5")["unenterable_regions"] == []
