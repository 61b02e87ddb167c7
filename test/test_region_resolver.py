"""Region resolution over time (core/region_resolver.py): hysteresis, dwell, GNSS quality gating, override and
the next-region prediction, on synthetic tracks and on a real drive in San Francisco."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import Point, shape

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.geo_track import load_track_csv
from regionadapt_ros.core.geofence import GeofenceSet, LocalProjection
from regionadapt_ros.core.region_resolver import (
    HoldReason,
    RegionResolver,
    ResolverConfig,
    ResolverState,
)

CENTRE = LocalProjection(37.75, -122.45)


@dataclass(frozen=True)
class Fix:
    """A GnssFix-like record (duck-typed, as the resolver reads it)."""

    stamp_s: float
    lat: float
    lon: float
    status: int = 0
    h_std_m: float | None = 2.0


def _ring(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [[CENTRE.inverse(x, y)[1], CENTRE.inverse(x, y)[0]] for x, y in corners]


def _fences(tmp_path: Path, *extra: dict) -> GeofenceSet:
    """'west' and 'east': 2 km x 4 km rectangles sharing the boundary x = 0 (metres east of CENTRE)."""
    features = [
        {
            "type": "Feature",
            "properties": {"region": "west", "priority": 1},
            "geometry": {"type": "Polygon", "coordinates": [_ring(-2000, -2000, 0, 2000)]},
        },
        {
            "type": "Feature",
            "properties": {"region": "east", "priority": 1},
            "geometry": {"type": "Polygon", "coordinates": [_ring(0, -2000, 2000, 2000)]},
        },
        *extra,
    ]
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return GeofenceSet.load(path, "base")


def _fix(t: float, x: float, y: float, **kw: object) -> Fix:
    lat, lon = CENTRE.inverse(x, y)
    return Fix(t, lat, lon, **kw)  # type: ignore[arg-type]


def _run(resolver: RegionResolver, fixes: list[Fix]) -> list[ResolverState]:
    return [resolver.update(f, now_s=f.stamp_s) for f in fixes]


def _switches(states: list[ResolverState]) -> list[ResolverState]:
    return [s for s in states if s.changed and not s.acquisition]


# ------------------------------------------------------------------------------------------- hysteresis
def _along_boundary(seed: int, sigma_m: float = 5.0, seconds: float = 300.0) -> list[Fix]:
    """Driving north on the boundary x = 0 at 10 m/s, 10 Hz, with gaussian GNSS noise across it."""
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, seconds, 0.1)
    xs = rng.normal(0.0, sigma_m, size=times.size)
    ys = -1500.0 + 10.0 * times
    return [_fix(float(t), float(x), float(y)) for t, x, y in zip(times, xs, ys, strict=True)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_across_a_boundary_does_not_flap(tmp_path: Path, seed: int):
    fences = _fences(tmp_path)
    track = _along_boundary(seed)
    resolver = RegionResolver(fences)
    states = _run(resolver, track)
    assert _switches(states) == []
    counters = resolver.counters
    assert counters["accepted"] == len(track)
    assert counters["enter_margin"] > 100  # the raw position did jump across, all the time

    # The same track without hysteresis flaps: the test above can fail.
    bare = RegionResolver(fences, ResolverConfig(enter_margin_m=0, exit_margin_m=0, confirm_s=0, min_dwell_s=0))
    assert len(_switches(_run(bare, track))) > 100


def test_an_occasional_deep_outlier_is_not_confirmed(tmp_path: Path):
    fences = _fences(tmp_path)
    track = [_fix(0.1 * i, -30.0, 10.0 * i) for i in range(100)]
    track[50] = _fix(5.0, 40.0, 500.0)  # one multipath jump 40 m into the other region
    states = _run(RegionResolver(fences), track)
    assert states[50].hold_reason is HoldReason.CONFIRMING and states[50].candidate == "east"
    assert _switches(states) == []


def test_a_clean_crossing_switches_exactly_once_after_the_margins(tmp_path: Path):
    fences = _fences(tmp_path)
    rng = np.random.default_rng(11)
    config = ResolverConfig(enter_margin_m=10.0, exit_margin_m=5.0, confirm_s=0.5)
    track = [_fix(0.1 * i, -500.0 + i + rng.normal(0, 1.0), 0.0) for i in range(1000)]  # 10 m/s eastwards
    states = _run(RegionResolver(fences, config), track)
    switches = _switches(states)
    assert [(s.previous_region, s.region) for s in switches] == [("west", "east")]
    x_switch = -500.0 + states.index(switches[0])
    # 10 m in (the larger margin), then 0.5 s = 5 m of confirmation, give or take the 1 m noise.
    assert 12.0 <= x_switch <= 19.0
    assert switches[0].switch_time_s == pytest.approx(switches[0].stamp_s)
    held = [s.hold_reason for s in states if s.candidate == "east"]
    assert HoldReason.ENTER_MARGIN in held and HoldReason.CONFIRMING in held


@pytest.mark.parametrize("every", [2, 3, 5])
def test_rejected_fixes_between_good_ones_do_not_hold_a_switch_back(tmp_path: Path, every: int):
    """A receiver that sends a poor fix every few fixes: the good ones still confirm the crossing, as soon as
    a clean receiver's would (a rejected fix is no evidence either way)."""
    fences = _fences(tmp_path)
    config = ResolverConfig(enter_margin_m=10.0, exit_margin_m=5.0, confirm_s=0.5)
    clean = [_fix(0.1 * i, -100.0 + i, 0.0) for i in range(300)]
    noisy = [_fix(f.stamp_s, *CENTRE.forward(f.lat, f.lon), h_std_m=30.0) if i % every == 0 else f
             for i, f in enumerate(clean)]
    states = _run(RegionResolver(fences, config), noisy)
    switches = _switches(states)
    assert [(s.previous_region, s.region) for s in switches] == [("west", "east")]
    clean_switch = _switches(_run(RegionResolver(fences, config), clean))[0]
    # later only by where the first and the confirming good fix fell
    assert switches[0].stamp_s - clean_switch.stamp_s <= 0.2 * every + 1e-9
    assert any(s.hold_reason is HoldReason.POOR_ACCURACY for s in states)


def test_a_1_hz_receiver_confirms_and_an_outage_restarts_the_confirmation(tmp_path: Path):
    from regionadapt_ros.core.region_resolver import CONFIRM_GAP_S

    fences = _fences(tmp_path)
    config = ResolverConfig(enter_margin_m=10.0, exit_margin_m=5.0, confirm_s=1.5, min_dwell_s=0.0)
    one_hz = [_fix(float(t), -50.0 + 10.0 * t, 0.0) for t in range(20)]
    switches = _switches(_run(RegionResolver(fences, config), one_hz))
    assert [s.region for s in switches] == ["east"] and switches[0].stamp_s == 8.0  # x = 30 seen at 7 and 8 s
    # seen deep inside once, then an outage longer than CONFIRM_GAP_S: the next fix starts the confirmation again
    gap = CONFIRM_GAP_S + 1.0
    track = [_fix(0.0, -50.0, 0.0), _fix(1.0, 50.0, 0.0), _fix(1.0 + gap, 50.0, 0.0), _fix(2.0 + gap, 50.0, 0.0),
             _fix(3.0 + gap, 50.0, 0.0)]
    states = _run(RegionResolver(fences, config), track)
    assert [s.hold_reason for s in states[1:4]] == [HoldReason.CONFIRMING] * 3
    assert states[4].changed and states[4].region == "east"


def test_dwell_time_delays_a_quick_switch_back(tmp_path: Path):
    fences = _fences(tmp_path)
    # East at 10 m/s from x = -100 to x = 60, then back west to x = -500.
    xs = [*np.arange(-100.0, 60.0, 1.0), *np.arange(60.0, -500.0, -1.0)]
    track = [_fix(0.1 * i, float(x), 0.0) for i, x in enumerate(xs)]

    def run(min_dwell_s: float) -> list[ResolverState]:
        return _switches(_run(RegionResolver(fences, ResolverConfig(min_dwell_s=min_dwell_s)), track))

    quick = run(0.0)
    slow = run(30.0)
    assert [s.region for s in quick] == ["east", "west"] == [s.region for s in slow]
    assert quick[1].stamp_s - quick[0].stamp_s < 30.0  # without dwell it would switch back sooner...
    assert slow[1].stamp_s - slow[0].stamp_s >= 30.0  # ...the dwell holds it
    assert slow[1].stamp_s - slow[0].stamp_s < 30.2


def test_leaving_a_fence_for_the_default_region_uses_the_exit_margin_only(tmp_path: Path):
    fences = _fences(tmp_path)
    config = ResolverConfig(enter_margin_m=200.0, exit_margin_m=20.0, confirm_s=0.0, min_dwell_s=0.0)
    track = [_fix(0.1 * i, 1900.0 + i, 0.0) for i in range(300)]  # east → beyond x = 2000 (no fence)
    states = _run(RegionResolver(fences, config), track)
    switches = _switches(states)
    assert [(s.previous_region, s.region) for s in switches] == [("east", "base")]
    assert 1900.0 + states.index(switches[0]) == pytest.approx(2020.0, abs=1.0)


def test_entering_a_fence_from_the_default_region_uses_the_enter_margin_only(tmp_path: Path):
    fences = _fences(tmp_path)
    config = ResolverConfig(enter_margin_m=30.0, exit_margin_m=500.0, confirm_s=0.0, min_dwell_s=0.0)
    track = [_fix(0.1 * i, 2100.0 - i, 0.0) for i in range(300)]  # from outside into east
    states = _run(RegionResolver(fences, config), track)
    switches = _switches(states)
    assert [(s.previous_region, s.region) for s in switches] == [("base", "east")]
    assert 2100.0 - states.index(switches[0]) == pytest.approx(1970.0, abs=1.0)


def test_margins_are_measured_to_the_higher_priority_territory(tmp_path: Path):
    district = {
        "type": "Feature",
        "properties": {"region": "district", "priority": 5},
        "geometry": {"type": "Polygon", "coordinates": [_ring(500, -200, 900, 200)]},
    }
    fences = _fences(tmp_path, district)
    config = ResolverConfig(enter_margin_m=25.0, exit_margin_m=0.0, confirm_s=0.0, min_dwell_s=0.0)
    track = [_fix(0.1 * i, 300.0 + i, 0.0) for i in range(1000)]  # through the district inside 'east'
    states = _run(RegionResolver(fences, config), track)
    switches = _switches(states)
    assert [s.region for s in switches] == ["district", "east"]
    assert 300.0 + states.index(switches[0]) == pytest.approx(525.0, abs=1.0)
    assert 300.0 + states.index(switches[1]) == pytest.approx(925.0, abs=1.0)


# --------------------------------------------------------------------------------------- quality gating
def _settled_in_west(fences: GeofenceSet) -> tuple[RegionResolver, float]:
    resolver = RegionResolver(fences)
    for i in range(20):
        resolver.update(_fix(0.1 * i, -300.0, 10.0 * i), now_s=0.1 * i)
    assert resolver.state.region == "west"
    return resolver, 2.0


@pytest.mark.parametrize(
    ("make_fix", "now_offset_s", "reason"),
    [
        (lambda t: _fix(t, 300.0, 0.0, status=-1), 0.0, HoldReason.NO_FIX),
        (lambda t: Fix(t, math.nan, math.nan), 0.0, HoldReason.INVALID_POSITION),
        (lambda t: Fix(t, 37.75, math.inf), 0.0, HoldReason.INVALID_POSITION),
        (lambda t: Fix(t, 95.0, -122.45), 0.0, HoldReason.INVALID_POSITION),
        (lambda t: _fix(t, 300.0, 0.0), 5.0, HoldReason.STALE_FIX),
        (lambda t: _fix(t, 300.0, 0.0, h_std_m=25.0), 0.0, HoldReason.POOR_ACCURACY),
        (lambda t: _fix(t, 300.0, 0.0, h_std_m=math.inf), 0.0, HoldReason.POOR_ACCURACY),
        (lambda t: _fix(t - 10.0, 300.0, 0.0), -10.0, HoldReason.OUT_OF_ORDER),
    ],
    ids=["no_fix", "nan", "inf", "lat_out_of_range", "stale", "poor_accuracy", "inf_std", "out_of_order"],
)
def test_bad_fixes_hold_the_region_and_say_why(tmp_path: Path, make_fix, now_offset_s: float, reason: HoldReason):
    fences = _fences(tmp_path)
    resolver, t = _settled_in_west(fences)
    # Each bad fix claims a position 300 m deep into 'east': following it would switch.
    states = [resolver.update(make_fix(t + 0.1 * k), now_s=t + 0.1 * k + now_offset_s) for k in range(30)]
    assert {s.region for s in states} == {"west"}
    assert {s.hold_reason for s in states} == {reason}
    assert resolver.counters[reason.value] == 30
    assert resolver.counters["accepted"] == 20
    # The same position as a good fix is followed (after the margins' confirmation and the dwell).
    good = [resolver.update(_fix(10.0 + 0.1 * k, 300.0, 0.0), now_s=10.0 + 0.1 * k) for k in range(10)]
    assert good[-1].region == "east"


def test_unknown_accuracy_is_accepted_and_an_unusable_one_is_held(tmp_path: Path):
    fences = _fences(tmp_path)
    resolver = RegionResolver(fences)
    state = resolver.update(_fix(0.0, 300.0, 0.0, h_std_m=None), now_s=0.0)
    assert state.region == "east" and state.hold_reason is None
    for k, bad in enumerate((math.nan, -1.0)):
        state = resolver.update(_fix(0.1 + 0.1 * k, -300.0, 0.0, h_std_m=bad), now_s=0.1 + 0.1 * k)
        assert state.region == "east" and state.hold_reason is HoldReason.INVALID_ACCURACY
    assert resolver.counters["invalid_accuracy"] == 2 and resolver.counters["accepted"] == 1


def test_before_any_fix_the_initial_region_is_held_awaiting_a_fix(tmp_path: Path):
    fences = _fences(tmp_path)
    resolver = RegionResolver(fences)
    assert resolver.state.region == "base" and resolver.state.hold_reason is HoldReason.AWAITING_FIX
    state = resolver.update(_fix(0.0, -300.0, 0.0, status=-1))
    assert state.region == "base" and state.hold_reason is HoldReason.NO_FIX
    state = resolver.update(_fix(0.1, -300.0, 0.0))  # the first good fix sets the region directly
    assert (state.region, state.changed, state.acquisition, state.previous_region) == ("west", True, True, "base")
    assert resolver.counters.get("switches", 0) == 0


# ------------------------------------------------------------------------------------------------ override
def test_operator_override_forces_a_region_until_cleared(tmp_path: Path):
    fences = _fences(tmp_path)
    resolver, t = _settled_in_west(fences)
    state = resolver.set_override("east", now_s=t)
    assert (state.region, state.changed, state.override, state.hold_reason) == ("east", True, "east", "override")
    assert state.switch_time_s == t
    states = _run(resolver, [_fix(t + 0.1 * k, -300.0, 0.0) for k in range(1, 50)])
    assert {s.region for s in states} == {"east"}
    assert {s.hold_reason for s in states} == {HoldReason.OVERRIDE}
    assert all(s.next_region is None for s in states)  # no prefetch hint while overridden
    assert states[-1].raw_region == "west"  # the position is still tracked

    state = resolver.set_override("base", now_s=t + 6)  # the default region is a valid override
    assert state.region == "base" and state.changed

    resolver.set_override(None)
    state = resolver.update(_fix(t + 7, -300.0, 0.0), now_s=t + 7)
    assert (state.region, state.changed, state.acquisition, state.override) == ("west", True, True, None)


def test_override_with_an_unknown_region_is_refused(tmp_path: Path):
    resolver = RegionResolver(_fences(tmp_path))
    with pytest.raises(ConfigError, match=r"region_override: unknown region 'north'; known regions: base, east, west"):
        resolver.set_override("north")
    assert resolver.override is None


# ---------------------------------------------------------------------------------------------- prediction
def test_prediction_announces_the_next_region_before_the_crossing(tmp_path: Path):
    fences = _fences(tmp_path)
    config = ResolverConfig(horizon_s=10.0)
    rng = np.random.default_rng(5)
    track = [_fix(0.1 * i, -400.0 + i + rng.normal(0, 1.0), 0.0) for i in range(700)]  # 10 m/s east
    states = _run(RegionResolver(fences, config), track)
    hinted = [i for i, s in enumerate(states) if s.next_region == "east"]
    switch = states.index(_switches(states)[0])
    assert hinted and hinted[0] < switch
    first = hinted[0]
    assert -400.0 + first == pytest.approx(-100.0, abs=15.0)  # 10 s x 10 m/s ahead of the boundary
    for i in hinted[:300]:
        true_eta = max(0.0, (0.0 - (-400.0 + i)) / 10.0)
        # 1 m of position noise and the speed fitted over 2 s: about a tenth of the ETA.
        assert states[i].next_eta_s == pytest.approx(true_eta, abs=0.3 + 0.1 * true_eta)
    assert states[first].speed_mps == pytest.approx(10.0, abs=0.5)
    assert states[first].heading_rad == pytest.approx(0.0, abs=0.05)  # east, ENU
    assert all(s.next_region is None for s in states[switch + 1 :])  # nothing ahead once in 'east'


def test_odometry_motion_drives_the_prediction_while_fresh(tmp_path: Path):
    fences = _fences(tmp_path)
    resolver = RegionResolver(fences, ResolverConfig(horizon_s=10.0, motion_max_age_s=1.0))
    parked = [_fix(0.1 * i, -50.0, 0.0) for i in range(30)]
    assert _run(resolver, parked)[-1].next_region is None  # standing still: no heading, no hint

    resolver.update_motion(heading_rad=0.0, speed_mps=10.0, stamp_s=3.0)  # east, 10 m/s
    state = resolver.update(_fix(3.1, -50.0, 0.0), now_s=3.1)
    assert state.next_region == "east" and state.next_eta_s == pytest.approx(5.0, abs=0.05)

    resolver.update_motion(heading_rad=math.pi / 2, speed_mps=10.0, stamp_s=3.2)  # north: along the boundary
    assert resolver.update(_fix(3.3, -50.0, 0.0), now_s=3.3).next_region is None

    resolver.update_motion(heading_rad=0.0, speed_mps=10.0, stamp_s=3.4)
    state = resolver.update(_fix(5.0, -50.0, 0.0), now_s=5.0)  # odometry 1.6 s old: stale, fixes say parked
    assert state.next_region is None

    resolver.update_motion(math.nan, 10.0, 5.0)
    assert resolver.counters["invalid_motion"] == 1


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enter_margin_m": -1.0}, r"enter_margin_m: must be >= 0"),
        ({"min_dwell_s": math.nan}, r"min_dwell_s: must be a finite number"),
        ({"max_h_std_m": 0.0}, r"max_h_std_m: must be > 0"),
    ],
)
def test_bad_resolver_parameters_are_refused(kwargs: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        ResolverConfig(**kwargs)


def test_unknown_initial_region_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"initial_region: unknown region 'nowhere'"):
        RegionResolver(_fences(tmp_path), initial_region="nowhere")


# -------------------------------------------------------------------------------------------- real drive
@pytest.fixture(scope="module")
def sf_neighbourhoods(sf_all_fences: Path) -> GeofenceSet:
    return GeofenceSet.load(sf_all_fences, "base", repair=True)  # three of the real polygons self-intersect


@pytest.fixture(scope="module")
def track(sf_track_csv: Path) -> list:
    return load_track_csv(sf_track_csv)


def _depth_into_lakeshore_m(track: list, neighbourhoods_geojson: Path) -> list[float]:
    """Signed metres inside Lakeshore per fix, computed independently of the resolver (UTM zone 10N)."""
    data = json.loads(neighbourhoods_geojson.read_text())
    (feature,) = [f for f in data["features"] if f["properties"]["name"] == "Lakeshore"]
    utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32610", always_xy=True)
    lakeshore = shapely.transform(
        shape(feature["geometry"]), lambda c: np.column_stack(utm.transform(c[:, 0], c[:, 1]))
    )
    depth = []
    for fix in track:
        point = Point(utm.transform(fix.lon, fix.lat))
        d = lakeshore.boundary.distance(point)
        depth.append(d if lakeshore.contains(point) else -d)
    return depth


def test_real_drive_switches_once_from_ocean_view_to_lakeshore(sf_neighbourhoods: GeofenceSet, track: list,
                                                              sf_neighbourhoods_geojson: Path):
    t0 = track[0].stamp_s
    # The drive follows the boundary street (Junipero Serra Blvd) and is never more than ~12 m inside
    # Lakeshore, so a margin fit for the street's width: 0.5 m.
    config = ResolverConfig(enter_margin_m=0.5, exit_margin_m=0.5, confirm_s=0.3, min_dwell_s=2.0)
    resolver = RegionResolver(sf_neighbourhoods, config)
    states = [resolver.update(f, now_s=f.stamp_s) for f in track]

    assert states[0].region == "Ocean View" and states[0].acquisition
    switches = _switches(states)
    assert [(s.previous_region, s.region) for s in switches] == [("Ocean View", "Lakeshore")]
    switch_index = states.index(switches[0])

    depth = _depth_into_lakeshore_m(track, sf_neighbourhoods_geojson)
    crossing = next(i for i, d in enumerate(depth) if d > 0)
    assert crossing == 78  # the README's fact, checked independently of the geofence code
    deep = next(i for i, d in enumerate(depth) if d >= 0.5)
    expected = next(i for i in range(deep, len(track)) if track[i].stamp_s - track[deep].stamp_s >= 0.3)
    assert abs(switch_index - expected) <= 1
    assert 8.0 < switches[0].stamp_s - t0 < 10.0  # "about 8 s in", after the margin and the confirmation

    hints = [i for i, s in enumerate(states) if s.next_region == "Lakeshore"]
    assert hints and hints[0] < crossing  # the prefetch hint arrives before the vehicle even crosses
    assert states[hints[0]].next_eta_s is not None and states[hints[0]].next_eta_s <= config.horizon_s


def test_real_drive_along_the_boundary_never_switches_with_street_sized_margins(
        sf_neighbourhoods: GeofenceSet, track: list, sf_neighbourhoods_geojson: Path):
    depth = _depth_into_lakeshore_m(track, sf_neighbourhoods_geojson)
    config = ResolverConfig(enter_margin_m=max(depth) + 1.0)
    resolver = RegionResolver(sf_neighbourhoods, config)
    states = [resolver.update(f, now_s=f.stamp_s) for f in track]
    assert {s.region for s in states} == {"Ocean View"}
    assert resolver.counters["enter_margin"] > 400  # the raw position was in Lakeshore most of the time


# ------------------------------------------------------------------------------ prediction on curved roads
def _feature(region: str, polygon_xy, priority: int = 1) -> dict:
    coords = [[CENTRE.inverse(x, y)[1], CENTRE.inverse(x, y)[0]] for x, y in polygon_xy.exterior.coords]
    return {"type": "Feature", "properties": {"region": region, "priority": priority},
            "geometry": {"type": "Polygon", "coordinates": [coords]}}


def _ring_sector(r0: float, r1: float, a0_deg: float, a1_deg: float):
    angles = np.radians(np.linspace(a0_deg, a1_deg, 46))
    outer = [(r1 * math.cos(a), r1 * math.sin(a)) for a in angles]
    inner = [(r0 * math.cos(a), r0 * math.sin(a)) for a in angles[::-1]]
    return shapely.geometry.Polygon(outer + inner)


def test_a_curved_road_gets_the_next_fence_along_it_not_the_default_region(tmp_path: Path):
    """A road on a circle of radius 120 m through two ring-shaped fences: the straight line ahead leaves the
    ring (into the default region) long before it could reach the next fence, which lies along the curve."""
    path = tmp_path / "ring.geojson"
    features = [_feature("first_bend", _ring_sector(80, 160, 0, 90)), _feature("second_bend",
                                                                               _ring_sector(80, 160, 90, 180))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    fences = GeofenceSet.load(path, "base")
    resolver = RegionResolver(fences, ResolverConfig(horizon_s=15.0))
    states = []
    for i in range(260):  # 10 m/s counter-clockwise from 10 degrees, heading from odometry
        phi = math.radians(10.0) + i * 0.1 * 10.0 / 120.0
        resolver.update_motion(phi + math.pi / 2, 10.0, 0.1 * i)
        states.append(resolver.update(_fix(0.1 * i, 120 * math.cos(phi), 120 * math.sin(phi)), now_s=0.1 * i))
    switch = states.index(_switches(states)[0])
    assert states[switch].region == "second_bend"
    hinted = [i for i, s in enumerate(states[:switch]) if s.next_region == "second_bend"]
    assert hinted and switch - hinted[0] >= 50  # at least 5 s before the switch
    assert all(s.next_region == "second_bend" for s in states[hinted[0]:switch])  # and it stays put
    assert all(s.next_region != "base" for s in states[:switch])
    first = states[hinted[0]]
    assert 0.0 < first.next_eta_s <= 15.0


def test_no_fence_beside_the_road_is_staged_while_the_road_stays_in_the_region(tmp_path: Path):
    """'beside' lies 60 m north of the road, within reach and in front: the line ahead stays in 'west', so the
    vehicle is not about to leave it and the next hint is 'east', straight ahead."""
    beside = shapely.geometry.box(-350, 50, -250, 150)
    fences = _fences(tmp_path, _feature("beside", beside, priority=5))
    states = _run(RegionResolver(fences, ResolverConfig(horizon_s=10.0)),
                  [_fix(0.1 * i, -450.0 + i, 0.0) for i in range(500)])  # 10 m/s east along y = 0
    assert all(s.next_region != "beside" for s in states)
    assert any(s.next_region == "east" for s in states)


def test_a_sliver_and_a_gap_on_the_way_are_passed_over(tmp_path: Path):
    """Between 'west' and 'east' lie a 4 m gap of the default region (narrower than the 5 m exit margin) and a
    6 m strip fence ('strip', narrower than twice the 10 m enter margin): neither can ever be switched to, so
    the hint is 'east' throughout."""
    path = tmp_path / "gap.geojson"
    features = [_feature("west", shapely.geometry.box(-2000, -2000, -4, 2000)),
                _feature("strip", shapely.geometry.box(-60, -2000, -54, 2000), priority=9),
                _feature("east", shapely.geometry.box(0, -2000, 2000, 2000))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    fences = GeofenceSet.load(path, "base")
    states = _run(RegionResolver(fences, ResolverConfig(horizon_s=10.0)),
                  [_fix(0.1 * i, -400.0 + i, 0.0) for i in range(420)])
    in_west = [s for s in states if s.region == "west" and s.next_region is not None]
    assert in_west and all(s.next_region == "east" for s in in_west)
    assert [s.region for s in _switches(states)] == ["east"]


@pytest.mark.parametrize("name", ["horizon_s", "enter_margin_m", "min_dwell_s"])
def test_a_setting_beyond_any_meaning_is_refused(name):
    with pytest.raises(ConfigError, match=rf"{name}: must be at most 1e\+06"):
        ResolverConfig(**{name: 1e308})


def test_replay_rate_is_zero_or_a_sane_pace():
    import argparse

    from regionadapt_ros.commands.replay import replay_rate

    assert replay_rate("0") == 0.0 and replay_rate("0.001") == 0.001 and replay_rate("1000") == 1000.0
    for bad in ("1e-300", "0.0009", "1001", "nan", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            replay_rate(bad)


def test_two_outliers_among_rejected_fixes_do_not_confirm_a_switch(tmp_path: Path):
    """Parked 200 m inside west, most fixes rejected for poor accuracy, two multipath outliers 150 m into east
    2.9 s apart: a stream that is mostly rejected is no evidence for a switch."""
    fences = _fences(tmp_path)
    fixes = [_fix(100.0, -200.0, 0.0)]
    fixes += [_fix(100.0 + k / 10, -200.0, 0.0, h_std_m=15.0) for k in range(1, 10)]
    fixes += [_fix(101.0, 150.0, 0.0, h_std_m=4.0)]
    fixes += [_fix(101.0 + k / 10, -200.0, 0.0, h_std_m=15.0) for k in range(1, 29)]
    fixes += [_fix(103.9, 150.0, 0.0, h_std_m=4.0)]
    assert _switches(_run(RegionResolver(fences), fixes)) == []


@pytest.mark.parametrize("period", [3.5, 5.0])
def test_a_receiver_slower_than_the_outage_gap_still_switches(tmp_path: Path, period: float):
    """A fix every 5 s is that receiver's rate, not an outage: the confirmation does not restart on every fix."""
    fences = _fences(tmp_path)
    fixes = [_fix(100.0 + k * period, -300.0 + 10.0 * k * period, 0.0) for k in range(int(120 / period))]
    switches = _switches(_run(RegionResolver(fences), fixes))
    assert [s.region for s in switches] == ["east"]
    assert switches[0].stamp_s - 130.0 <= 3 * period  # the crossing is at t = 130 s


def test_a_tunnel_still_restarts_a_confirmation_seen_before_it(tmp_path: Path):
    fences = _fences(tmp_path)
    fixes = [_fix(100.0 + 0.1 * k, -300.0 + k, 0.0) for k in range(315)]  # to x = 14: east is seen
    fixes += [_fix(190.0 + 0.1 * k, 600.0 + k, 0.0) for k in range(20)]  # 60 s later, deep in east
    states = _run(RegionResolver(fences, ResolverConfig(confirm_s=0.5)), fixes)
    first_after = states[315]
    assert first_after.hold_reason is HoldReason.CONFIRMING  # not switched on the first fix after the tunnel
    assert [s.region for s in _switches(states)] == ["east"]
