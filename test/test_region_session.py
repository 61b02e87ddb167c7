"""RegionSession: the region manager node's per-message logic, fed real sensor_msgs/NavSatFix and
nav_msgs/Odometry classes (rosbags Humble type store), on real fences with a real GNSS track (two San Francisco
neighbourhoods and a comma2k19 drive along their boundary) and on a small fence file written here."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geo_track import load_track_csv
from regionadapt_ros.core.region_resolver import ResolverConfig
from regionadapt_ros.driving_session import DiagnosticLevel
from regionadapt_ros.region_session import RegionSession, resolver_config_from, yaw_from_quaternion

REPO = Path(__file__).resolve().parents[1]
FAST = ResolverConfig(enter_margin_m=10.0, exit_margin_m=5.0, confirm_s=0.3, min_dwell_s=1.0, max_fix_age_s=2.0,
                      max_h_std_m=10.0, horizon_s=10.0)


def square(lat0: float, lon0: float, half: float) -> list[list[list[float]]]:
    return [[[lon0 - half, lat0 - half], [lon0 + half, lat0 - half], [lon0 + half, lat0 + half],
             [lon0 - half, lat0 + half], [lon0 - half, lat0 - half]]]


@pytest.fixture
def fences(tmp_path: Path) -> Path:
    """urban_day: a 2.2 km square around (10.0, 10.0); highway: the square east of it."""
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"region": "urban_day", "priority": 10},
         "geometry": {"type": "Polygon", "coordinates": square(10.0, 10.0, 0.01)}},
        {"type": "Feature", "properties": {"region": "highway", "priority": 20},
         "geometry": {"type": "Polygon", "coordinates": square(10.0, 10.02, 0.01)}},
    ]}
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(doc))
    return path


def fix(types, lat: float, lon: float, stamp: float, status: int = 0, h_std: float | None = 2.0):
    return msgconv.build_navsatfix(types, lat, lon, 20.0, stamp, status=status, h_std_m=h_std)


def test_the_sf_track_gets_a_prefetch_hint_before_it_enters_the_highway_fence(types, sf_boundary_fences,
                                                                              sf_track_csv):
    # The road runs 0-12 m inside Lakeshore (highway here): street-sized margins.
    config = dataclasses.replace(FAST, enter_margin_m=1.0, exit_margin_m=1.0)
    session = RegionSession.from_file(sf_boundary_fences, "base", config)
    track = load_track_csv(sf_track_csv)
    hints, switches = [], []
    for f in track:
        update = session.on_fix(fix(types, f.lat, f.lon, f.stamp_s), f.stamp_s + 0.05)
        if update.next_region_hint:
            hints.append((f.stamp_s, update.next_region_hint))
        if update.active_region_changed:
            switches.append((f.stamp_s, update.active_region_changed))
    # The first fix announces where the car is; the fence crossing announces the switch.
    assert [region for _, region in switches] == ["urban_day", "highway"]
    assert switches[0][0] == track[0].stamp_s
    assert hints and hints[0][1] == "highway" and hints[0][0] < switches[1][0]
    assert session.active_region == "highway"
    status = session.diagnostics(track[-1].stamp_s + 0.1)[0]
    assert status.level == DiagnosticLevel.OK and status.values["region"] == "highway"
    assert status.values["count.switches"] == "1"


def test_the_first_fix_acquires_the_region_and_hysteresis_holds_are_ok(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)
    assert session.active_region == "base"
    status = session.diagnostics(0.0)[0]
    assert status.level == DiagnosticLevel.WARN and "no GNSS fix message yet" in status.message
    assert session.on_fix(fix(types, 10.0, 10.0, 100.0), 100.0).active_region_changed == "urban_day"
    # 3 m past the shared boundary at lon 10.01: inside highway but within the margins.
    lon_past = 10.01 + 3.0 / (111_320 * math.cos(math.radians(10.0)))
    update = session.on_fix(fix(types, 10.0, lon_past, 102.0), 102.0)
    assert update.active_region_changed is None and session.state.candidate == "highway"
    status = session.diagnostics(102.0)[0]
    assert status.level == DiagnosticLevel.OK and "held" in status.message


@pytest.mark.parametrize(("kind", "reason"), [
    ("no_fix", "no_fix"), ("stale", "stale_fix"), ("poor_accuracy", "poor_accuracy"), ("nan", "invalid_position"),
    ("nan_covariance", "invalid_accuracy"), ("negative_covariance", "invalid_accuracy"),
    ("inf_covariance", "poor_accuracy"),
])
def test_unusable_fixes_hold_the_region_and_warn_with_the_reason(types, fences, kind, reason):
    session = RegionSession.from_file(fences, "base", FAST)
    session.on_fix(fix(types, 10.0, 10.0, 100.0), 100.0)
    lat, lon, stamp, status, h_std = 10.0, 10.02, 101.0, 0, 2.0  # deep in highway
    now = 101.0
    if kind == "no_fix":
        status = -1
    elif kind == "stale":
        now = stamp + FAST.max_fix_age_s + 1.0
    elif kind == "poor_accuracy":
        h_std = 50.0
    elif kind == "nan":
        lat = math.nan
    message = fix(types, lat, lon, stamp, status, h_std)
    if kind.endswith("_covariance"):  # a receiver that says its covariance is known, and sends no covariance
        message.position_covariance[:] = {"nan": math.nan, "negative": -4.0, "inf": math.inf}[kind.split("_")[0]]
    update = session.on_fix(message, now)
    assert update == (None, None)
    assert session.active_region == "urban_day"
    diag = session.diagnostics(now)[0]
    assert diag.level == DiagnosticLevel.WARN and reason in diag.message and diag.values["hold_reason"] == reason
    if kind == "nan":
        assert session.warnings.count("bad_navsatfix") == 1
        assert "latitude" in session.warnings.last_message("bad_navsatfix")


def test_a_message_that_is_not_a_navsatfix_is_counted_and_ignored(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)
    assert session.on_fix(msgconv.build_string(types, "37.7,-122.4"), 1.0) == (None, None)
    assert session.warnings.count("bad_navsatfix") == 1
    assert "not a NavSatFix" in session.warnings.last_message("bad_navsatfix")


def test_no_fix_message_for_longer_than_the_timeout_is_stale(types, fences):
    session = RegionSession.from_file(fences, "base", FAST, fix_timeout_s=1.0)
    session.on_fix(fix(types, 10.0, 10.0, 100.0), 100.0)
    assert session.diagnostics(100.5)[0].level == DiagnosticLevel.OK
    stale = session.diagnostics(101.5)[0]
    assert stale.level == DiagnosticLevel.STALE and "no GNSS fix message for 1.5 s" in stale.message


def test_operator_override_forces_the_region_and_unknown_regions_are_refused(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)
    session.on_fix(fix(types, 10.0, 10.0, 100.0), 100.0)
    assert session.set_override("highway", 100.5) == "highway"
    assert session.on_fix(fix(types, 10.0, 10.0, 101.0), 101.0) == (None, None)
    assert session.active_region == "highway"
    diag = session.diagnostics(101.0)[0]
    assert diag.level == DiagnosticLevel.WARN and "operator override: highway" in diag.message
    with pytest.raises(ConfigError) as info:
        session.set_override("moon")
    assert info.value.path == "region_override" and "unknown region 'moon'" in str(info.value)
    assert session.set_override("", 102.0) is None  # cleared: the next fix sets the region from the position
    assert session.on_fix(fix(types, 10.0, 10.0, 103.0), 103.0).active_region_changed == "urban_day"


def test_an_override_given_at_start_is_in_force_before_any_fix(fences):
    session = RegionSession.from_file(fences, "base", FAST, override="highway")
    assert session.active_region == "highway" and session.override == "highway"
    assert session.initial_announcement() == "highway"


def test_nothing_is_announced_before_the_first_usable_fix(types, fences):
    """A region manager restarted mid-drive must not announce the default region before it knows better."""
    session = RegionSession.from_file(fences, "base", FAST)
    assert session.initial_announcement() is None
    assert session.on_fix(fix(types, 10.0, 10.0, 100.0, status=-1), 100.0) == (None, None)
    assert session.on_fix(fix(types, 12.0, 12.0, 100.1), 100.1).active_region_changed == "base"
    assert session.on_fix(fix(types, 12.0, 12.0, 100.2), 100.2).active_region_changed is None


def test_a_looped_bag_restarts_the_resolver_instead_of_holding_out_of_order(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)
    for k in range(5):
        session.on_fix(fix(types, 10.0, 10.02, 500.0 + k * 0.1), 500.0 + k * 0.1)
    assert session.active_region == "highway"
    # The bag starts over in urban_day, with its clock: the new fixes are judged at once (not held as out of
    # order), by the same hysteresis as any change of region: a reset is not an acquisition. No switch was
    # recent, so no dwell carries over.
    changes = [session.on_fix(fix(types, 10.0, 10.0, 100.0 + k * 0.125), 100.0 + k * 0.125).active_region_changed
               for k in range(6)]
    assert changes == [None] * 3 + ["urban_day", None, None] and session.resets == 1
    counts = session.counters()
    assert counts["fixes"] == 11 and counts.get("out_of_order", 0) == 0
    assert counts["confirming"] == 3 and counts.get("min_dwell", 0) == 0


def test_a_dwell_still_running_at_a_clock_reset_carries_over(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)  # min_dwell_s 1.0
    for k in range(5):
        session.on_fix(fix(types, 10.0, 10.0, 500.0 + k * 0.125), 500.0 + k * 0.125)
    assert session.active_region == "urban_day"
    t = 500.625
    while session.active_region != "highway":  # into highway: a switch, whose dwell runs
        session.on_fix(fix(types, 10.0, 10.02, t), t)
        t += 0.125
    changes = [session.on_fix(fix(types, 10.0, 10.0, 100.0 + k * 0.125), 100.0 + k * 0.125).active_region_changed
               for k in range(10)]  # the clock restarts 0.125 s after that switch
    assert changes == [None] * 8 + ["urban_day", None]  # the dwell (1 s) runs again on the new time line
    assert session.counters()["min_dwell"] >= 5


def test_unstamped_fixes_cannot_make_the_region_flap_on_a_boundary(types, fences):
    """Jitter of a few metres across a shared edge, with every tenth fix unstamped (stamp 0): such a fix is old on
    the receipt clock too, so it is held as out of order, not taken as a new time line, and the hysteresis holds:
    the region does not swap back and forth."""
    import numpy as np

    from regionadapt_ros.core.geofence import LocalProjection

    session = RegionSession.from_file(fences, "base", FAST)
    rng = np.random.default_rng(3)
    centre = LocalProjection(10.0, 10.01)  # on the edge between urban_day and highway
    announced = []
    for k in range(300):
        t = 100.0 + 0.1 * k
        lat, lon = centre.inverse(float(rng.uniform(-3.0, 3.0)), 0.0)
        stamp = 0.0 if k % 10 == 5 else t
        update = session.on_fix(fix(types, lat, lon, stamp), t)
        if update.active_region_changed is not None:
            announced.append(update.active_region_changed)
    assert len(announced) == 1 and session.resets == 0 and session.counters()["out_of_order"] == 30


def test_a_gnss_outage_is_not_a_clock_jump(types, fences):
    """Ten seconds without fixes (a tunnel): the resolver keeps its state, the next fix is judged normally."""
    session = RegionSession.from_file(fences, "base", FAST, clock_jump_s=5.0)
    session.on_fix(fix(types, 10.0, 10.0, 100.0), 100.0)
    update = session.on_fix(fix(types, 10.0, 10.0, 110.0), 110.0)
    assert update == (None, None) and session.resets == 0 and session.active_region == "urban_day"


def test_odometry_heading_gives_a_hint_from_the_first_fix(types, fences):
    session = RegionSession.from_file(fences, "base", FAST)
    # Heading east (ENU yaw 0) at 20 m/s, 150 m before the highway fence: inside the 10 s horizon.
    odom = msgconv.build_odometry(types, 20.0, 100.0, yaw=0.0)
    assert session.on_odometry(odom, 100.0)
    lon = 10.01 - 150.0 / (111_320 * math.cos(math.radians(10.0)))
    update = session.on_fix(fix(types, 10.0, lon, 100.0), 100.0)
    assert update.next_region_hint == "highway"
    assert session.on_fix(fix(types, 10.0, lon + 1e-5, 100.1), 100.1).next_region_hint is None  # only on change
    assert session.state.heading_rad == pytest.approx(0.0, abs=1e-9)
    bad = msgconv.build_odometry(types, math.nan, 100.2)
    assert session.on_odometry(bad, 100.2) is False and session.warnings.count("bad_odometry") == 1


def test_odometry_is_ignored_when_not_used(types, fences):
    session = RegionSession.from_file(fences, "base", FAST, use_odometry=False)
    assert session.on_odometry(msgconv.build_odometry(types, 20.0, 100.0), 100.0) is False


def test_yaw_of_a_quaternion():
    assert yaw_from_quaternion(0.0, 0.0, math.sin(0.4), math.cos(0.4)) == pytest.approx(0.8)


def test_resolver_config_from_node_parameters():
    config = resolver_config_from({"enter_margin_m": 20.0, "prefetch_horizon_s": 4.0, "geofence_file": "x"})
    assert config.enter_margin_m == 20.0 and config.horizon_s == 4.0


def test_a_broken_geofence_file_names_the_file(tmp_path):
    path = tmp_path / "broken.geojson"
    path.write_text("{ not json")
    with pytest.raises(ConfigError) as info:
        RegionSession.from_file(path, "base")
    assert str(path) in str(info.value) and "not valid JSON" in str(info.value)


def test_unstamped_fixes_do_not_hold_a_real_crossing_off(types, fences):
    """Every tenth fix unstamped while driving east across the boundary at 10 m/s: the switch still happens,
    soon after the margins are passed."""
    from regionadapt_ros.core.geofence import LocalProjection

    session = RegionSession.from_file(fences, "base", dataclasses.replace(FAST, min_dwell_s=5.0))
    edge = LocalProjection(10.0, 10.01)  # the shared edge, x = 0
    announced = []
    for k in range(600):
        t = 100.0 + 0.1 * k
        lat, lon = edge.inverse(-300.0 + k, 0.0)  # crosses x = 0 at k = 300
        update = session.on_fix(fix(types, lat, lon, 0.0 if k % 10 == 9 else t), t)
        if update.active_region_changed is not None:
            announced.append((k, update.active_region_changed))
    assert [r for _, r in announced] == ["urban_day", "highway"] and session.counters()["out_of_order"] == 60
    assert 300 < announced[1][0] <= 330  # within 3 s of the crossing: margins (10 m) and the confirmation


def test_frequent_clock_resets_are_a_warning(types, fences):
    """A source whose clock goes back every second (a one-second bag looped by a player): each is a new time
    line, and a change of region may never confirm: the region status says so."""
    session = RegionSession.from_file(fences, "base", FAST)
    for k in range(40):
        t = 100.0 + 0.1 * (k % 10)  # receipt clock and stamps restart every 10 fixes
        session.on_fix(fix(types, 10.0, 10.0, t), t)
    assert session.resets == 3
    (status,) = session.diagnostics(101.0)
    assert status.level == DiagnosticLevel.WARN and "the fixes' clock went back 3 or more times" in status.message
    (later,) = session.diagnostics(101.0 + 61.0)
    assert "clock went back" not in later.message
