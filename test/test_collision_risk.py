"""The collision-risk estimate on hand-built distance sequences: closing speed, TTC, levels, hysteresis, and
every input that must not brake (missing, stale, bad, no lidar, clock jumps, another obstacle)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from regionadapt_ros.core.collision_risk import (
    ACQUIRING,
    CLEAR,
    HELD,
    STALE,
    TRACKING,
    CollisionRiskEstimator,
    RiskConfig,
    RiskLevel,
    theil_sen,
    thinned,
)
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.errors import ConfigError

T0 = 1_700_000_000.0
HZ = 20.0
DT = 1.0 / HZ


def feed(estimator, distances, ego=10.0, t0=T0, lidar=True):
    """One update per distance at HZ; returns the estimates."""
    return [estimator.update(t0 + i * DT, d, ego, lidar=lidar) for i, d in enumerate(distances)]


def closing(start_m: float, speed: float, n: int) -> list[float]:
    return [start_m - speed * i * DT for i in range(n)]


def first(estimates, level):
    return next(i for i, e in enumerate(estimates) if e.level >= level)


@pytest.mark.parametrize("engage_frames", [1, 2])
def test_a_closing_obstacle_warns_then_brakes_at_the_stated_ttcs(engage_frames):
    cfg = RiskConfig(ttc_warn_s=2.5, ttc_brake_s=1.2, engage_frames=engage_frames)
    # 10 m/s closing from 49.7 m: TTC crosses 2.5 s between frames, never exactly on a threshold
    estimates = feed(CollisionRiskEstimator(cfg), closing(49.7, 10.0, 90))
    ttc = [e.ttc_s for e in estimates]
    warn, brake = first(estimates, RiskLevel.WARN), first(estimates, RiskLevel.BRAKE)
    assert warn < brake
    assert estimates[warn].level is RiskLevel.WARN
    # the level rises on the engage_frames-th consecutive frame at or below the threshold, not before
    assert ttc[warn] <= 2.5 and all(t > 2.5 for t in ttc[warn - engage_frames: warn - engage_frames + 1])
    assert ttc[brake] <= 1.2 and ttc[brake - engage_frames] > 1.2
    assert ttc[warn - engage_frames + 1] <= 2.5 and ttc[brake - engage_frames + 1] <= 1.2
    # exact on a linear approach: closing speed and TTC are the true ones
    assert estimates[brake].closing_speed_mps == pytest.approx(10.0, abs=1e-6)
    assert estimates[brake].ttc_s == pytest.approx((49.7 - 10.0 * brake * DT) / 10.0, abs=1e-6)
    assert estimates[brake].state == TRACKING and estimates[brake].measured
    assert "TTC" in estimates[brake].trigger and "<= 1.2 s" in estimates[brake].trigger
    assert all(e.level is RiskLevel.BRAKE for e in estimates[brake:])


def test_a_receding_or_steady_obstacle_never_warns_or_brakes():
    receding = feed(CollisionRiskEstimator(), [5.0 + 4.0 * i * DT for i in range(60)], ego=3.0)
    assert all(e.level is RiskLevel.NONE and e.raw_level is RiskLevel.NONE for e in receding)
    assert receding[-1].closing_speed_mps == pytest.approx(-4.0)
    assert math.isinf(receding[-1].ttc_s)
    # following a lead car at a constant 8 m gap (closing 0): no risk, however close
    steady = feed(CollisionRiskEstimator(), [8.0] * 60, ego=15.0)
    assert all(e.level is RiskLevel.NONE for e in steady) and math.isinf(steady[-1].ttc_s)


def test_slow_closing_is_no_collision_course_until_the_obstacle_is_very_close():
    # creeping at 0.3 m/s (below min_closing_mps) to 2 m: nothing
    est = CollisionRiskEstimator(RiskConfig(min_closing_mps=0.5, min_distance_m=1.0))
    assert all(e.level is RiskLevel.NONE for e in feed(est, closing(3.0, 0.3, 60), ego=0.3))
    # creeping at 0.8 m/s: TTC is long, but at 1 m or less it brakes
    est = CollisionRiskEstimator(RiskConfig(min_closing_mps=0.5, min_distance_m=1.0))
    estimates = feed(est, closing(3.0, 0.8, 60), ego=0.8)
    brake = first(estimates, RiskLevel.BRAKE)
    assert estimates[brake].distance_m <= 1.0 and estimates[brake].ttc_s > 1.2
    assert "<= 1 m" in estimates[brake].trigger


def test_a_standing_ego_is_warned_not_braked():
    # an obstacle coming towards a standing ego (2 m/s, down to 1 m): braking would avoid nothing
    standing = feed(CollisionRiskEstimator(), closing(6.0, 2.0, 50), ego=0.0)
    assert max(e.level for e in standing) is RiskLevel.WARN
    assert any(e.reason.startswith("ego stopped: warn only") for e in standing)
    moving = feed(CollisionRiskEstimator(), closing(6.0, 2.0, 50), ego=0.5)
    assert max(e.level for e in moving) is RiskLevel.BRAKE


def test_a_missing_or_stale_distance_does_not_brake():
    cfg = RiskConfig()
    est = CollisionRiskEstimator(cfg)
    # closing at 10 m/s until TTC is 1.5 s (warn), then no usable distance while the true TTC drops below 1.2
    estimates = feed(est, closing(40.0, 10.0, 50))
    assert estimates[-1].level is RiskLevel.WARN and estimates[-1].ttc_s == pytest.approx(1.55, abs=1e-6)
    gap = [None, math.nan, -3.0, math.inf, None, None, None, None, None, None, None, None, None, None]
    held = [est.update(T0 + (50 + i) * DT, d, 10.0) for i, d in enumerate(gap)]
    assert all(e.level <= RiskLevel.WARN and not e.measured for e in held)
    # within max_gap_s the level is held and the prediction goes on; afterwards the estimate is stale
    recent = [e for e in held if e.stamp_s - estimates[-1].stamp_s <= cfg.max_gap_s + 1e-9]
    assert all(e.state == HELD and e.level is RiskLevel.WARN for e in recent)
    assert recent[-1].ttc_s < 1.2  # the prediction says brake; a prediction never brakes
    assert held[-1].state == STALE and held[-1].level is RiskLevel.NONE
    assert est.counts["missing"] == 11 and est.counts["bad_distance"] == 3 and est.counts["track_timeouts"] == 1
    # when distances return, the level is built again from fresh measurements only
    back = [est.update(T0 + (64 + i) * DT, 4.0 - 10.0 * i * DT, 10.0) for i in range(3)]
    assert back[0].state == ACQUIRING and back[0].level is RiskLevel.NONE


def test_frames_without_lidar_are_not_measurements():
    est = CollisionRiskEstimator()
    feed(est, closing(40.0, 10.0, 30))
    t = T0 + 30 * DT
    camera_only = [est.update(t + i * DT, 5.0, 10.0, lidar=False) for i in range(5)]  # a camera-only "5 m"
    assert all(e.level is RiskLevel.NONE and e.state == HELD and not e.measured for e in camera_only)
    assert est.counts["no_lidar"] == 5


def test_a_brake_is_held_through_a_short_dropout_and_released_with_hysteresis():
    cfg = RiskConfig(ttc_brake_s=1.2, release_factor=1.5, release_hold_s=0.5, window_s=1.0)
    est = CollisionRiskEstimator(cfg)
    estimates = feed(est, closing(30.0, 10.0, 40))   # down to 10.5 m: TTC 1.05 s, braking
    assert estimates[-1].level is RiskLevel.BRAKE
    t = T0 + 40 * DT
    # two frames without lidar: still braking (no chatter on a dropout)
    assert all(est.update(t + i * DT, 10.0, 10.0, lidar=False).level is RiskLevel.BRAKE for i in range(2))
    # the gap stops shrinking (the ego has slowed to the lead car's speed): the brake is held while the fit still
    # sees closing, and for release_hold_s after the release condition first holds
    t += 2 * DT
    after = [est.update(t + i * DT, 10.0, 10.0) for i in range(60)]
    released = next(i for i, e in enumerate(after) if e.level is not RiskLevel.BRAKE)
    assert all(e.level is RiskLevel.BRAKE for e in after[:released])
    last_raw_brake = max(i for i, e in enumerate(after) if e.raw_level is RiskLevel.BRAKE)
    assert after[released].stamp_s - after[last_raw_brake].stamp_s >= cfg.release_hold_s - 1e-9
    assert after[released].stamp_s - t <= cfg.window_s + cfg.release_hold_s + DT
    # TTC is infinite by then: straight down to none, and it stays there
    assert all(e.level is RiskLevel.NONE for e in after[released:])


def test_ttc_hovering_around_the_brake_threshold_does_not_chatter():
    # An exponential approach d = d0 exp(-t / tau) keeps TTC constant. The fit's closing speed is the mean over its
    # 1 s window, so the estimated TTC settles at 1 / (exp(1 / tau) - 1): 1.2 s for tau = 1.65 s. With noisy
    # distances the raw level flickers between warn and brake; the level must not.
    rng = np.random.default_rng(7)
    tau = 1.65
    distances = [30.0 * math.exp(-i * DT / tau) + rng.normal(0.0, 0.2) for i in range(70)]
    estimates = feed(CollisionRiskEstimator(), distances, ego=None)
    tracked = [e for e in estimates if e.state == TRACKING]
    raw_changes = sum(1 for a, b in itertools.pairwise(tracked) if a.raw_level != b.raw_level)
    level_changes = sum(1 for a, b in itertools.pairwise(estimates) if a.level != b.level)
    assert raw_changes >= 6  # the test really does hover around the threshold
    assert level_changes <= 2  # none -> warn -> brake, once
    brake = first(estimates, RiskLevel.BRAKE)
    assert all(e.level is RiskLevel.BRAKE for e in estimates[brake:])


def test_a_single_frame_below_the_threshold_does_not_raise_the_level():
    est = CollisionRiskEstimator(RiskConfig(engage_frames=2, ttc_warn_s=2.5, ttc_brake_s=1.2))
    feed(est, [20.0] * 30)  # steady
    # one frame of the fit reading closing: the next distance is back on the steady line
    t = T0 + 30 * DT
    levels = [est.update(t + i * DT, d, 10.0).level for i, d in enumerate([19.0, 20.0, 20.0, 20.0])]
    assert all(level is RiskLevel.NONE for level in levels)


def test_one_outlier_is_ignored_and_a_new_obstacle_restarts_the_track():
    est = CollisionRiskEstimator()
    estimates = feed(est, closing(30.0, 5.0, 20))
    t = T0 + 20 * DT
    # one frame reads 55 m (a misdetection), the next ones continue the approach: dropped as an outlier
    outlier = est.update(t, 55.0, 10.0)
    assert outlier.state == HELD and not outlier.measured
    resumed = [est.update(t + (1 + i) * DT, 30.0 - 5.0 * (21 + i) * DT, 10.0) for i in range(5)]
    assert est.counts["outliers"] == 1 and est.counts["obstacle_changes"] == 0
    assert resumed[-1].closing_speed_mps == pytest.approx(5.0, abs=1e-6)
    # a car cuts in at 8 m, closing at 2 m/s: two agreeing frames restart the track on it
    t = resumed[-1].stamp_s + DT
    cut_in = [est.update(t + i * DT, 8.0 - 2.0 * i * DT, 10.0) for i in range(12)]
    assert not cut_in[0].measured and cut_in[1].measured and est.counts["obstacle_changes"] == 1
    assert cut_in[-1].closing_speed_mps == pytest.approx(2.0, abs=1e-6)
    # the jump itself (30 m -> 8 m in one frame) is never read as a closing speed
    assert all(e.closing_speed_mps is None or e.closing_speed_mps < 5.5 for e in estimates + resumed + cut_in)
    assert all(e.level is RiskLevel.NONE for e in cut_in)


def test_the_lead_car_leaving_clears_the_risk_after_the_hold():
    est = CollisionRiskEstimator()
    feed(est, closing(30.0, 10.0, 42))  # braking at ~9.5 m
    assert est.level is RiskLevel.BRAKE
    t = T0 + 42 * DT
    after = [est.update(t + i * DT, 60.0, 10.0) for i in range(15)]  # nothing ahead any more
    assert all(e.state == CLEAR for e in after)
    released = next(i for i, e in enumerate(after) if e.level is RiskLevel.NONE)
    assert after[released].stamp_s - after[0].stamp_s == pytest.approx(0.5, abs=1e-6)


def test_clock_jumps_reset_the_track_instead_of_braking():
    est = CollisionRiskEstimator()
    feed(est, closing(20.0, 2.0, 40))  # slowly closing, no risk
    # a looped bag: the clock goes back 2 s and the distance reads 50 m; then forward again from there
    back = [est.update(T0 - 2.0 + i * DT, 50.0 - 2.0 * i * DT, 10.0) for i in range(3)]
    assert est.counts["clock_jumps"] == 1 and back[0].state == ACQUIRING
    # a forward leap of 30 s: the old track is stale, the new distance starts a new one
    leap = est.update(T0 + 30.0, 5.0, 10.0)
    assert leap.state == ACQUIRING and est.counts["track_timeouts"] == 1
    # a repeated stamp is not a second measurement
    again = est.update(T0 + 30.0, 1.0, 10.0)
    assert again is leap and est.counts["duplicate_stamps"] == 1
    assert all(e.level is RiskLevel.NONE for e in [*back, leap, again])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0, object()])
def test_bad_distances_never_brake_or_raise_and_are_counted(bad):
    warnings = CountedWarnings(log=lambda _m: None)
    est = CollisionRiskEstimator(warnings=warnings)
    estimates = feed(est, closing(30.0, 10.0, 20))  # TTC ~2.05 s at the end
    t = T0 + 20 * DT
    bad_frames = [est.update(t + i * DT, bad, 10.0) for i in range(6)]
    assert all(e.level <= estimates[-1].level and not e.measured for e in bad_frames)
    assert est.counts["bad_distance"] == 6 and warnings.count("risk_bad_distance") == 6


@pytest.mark.parametrize("bad", [math.nan, math.inf, -5.0])
def test_bad_ego_speeds_are_counted_and_not_used(bad):
    warnings = CountedWarnings(log=lambda _m: None)
    est = CollisionRiskEstimator(warnings=warnings)
    # a steady gap with a bad speed: nothing
    estimates = feed(est, [15.0] * 30, ego=bad)
    assert all(e.level is RiskLevel.NONE for e in estimates)
    assert est.counts["bad_speed"] == 30 and warnings.count("risk_bad_speed") == 30
    # a bad speed is not a cap either (an unknown speed must not hide a real approach)
    est = CollisionRiskEstimator(warnings=warnings)
    estimates = feed(est, closing(30.0, 10.0, 40), ego=bad)
    assert estimates[-1].closing_speed_mps == pytest.approx(10.0)


def test_a_bad_stamp_is_counted_and_changes_nothing():
    est = CollisionRiskEstimator(warnings=CountedWarnings(log=lambda _m: None))
    last = feed(est, closing(30.0, 10.0, 20))[-1]
    assert est.update(math.nan, 1.0, 10.0) is last and est.counts["bad_stamp"] == 1


def test_the_ego_speed_caps_the_closing_speed():
    # distances that drop at 10 m/s while the ego drives at 2 m/s (perception drifting, not a real approach)
    est = CollisionRiskEstimator()
    capped = feed(est, closing(12.0, 10.0, 12), ego=2.0)
    assert capped[-1].closing_speed_mps == pytest.approx(4.0)  # ego + max_oncoming_mps
    assert all(e.level <= RiskLevel.WARN for e in capped)
    # a frame without a measurement predicts on at the capped speed too
    held = est.update(capped[-1].stamp_s + DT, None, 2.0)
    assert held.state == HELD and held.closing_speed_mps == pytest.approx(4.0)
    assert held.distance_m == pytest.approx(capped[-1].distance_m - 4.0 * DT)
    uncapped = feed(CollisionRiskEstimator(), closing(12.0, 10.0, 12), ego=None)
    assert uncapped[-1].level is RiskLevel.BRAKE


def test_a_region_may_make_the_thresholds_stricter_never_laxer():
    cfg = RiskConfig(ttc_warn_s=2.5, ttc_brake_s=1.2, min_distance_m=1.0)
    stricter = cfg.thresholds({"ttc_brake_s": 2.0, "min_obstacle_distance_m": 3.0, "speed_limit_kph": 50})
    assert (stricter.ttc_warn_s, stricter.ttc_brake_s, stricter.min_distance_m) == (2.5, 2.0, 3.0)
    laxer = cfg.thresholds({"ttc_warn_s": 1.0, "ttc_brake_s": 0.5, "min_obstacle_distance_m": 0.0})
    assert (laxer.ttc_warn_s, laxer.ttc_brake_s, laxer.min_distance_m) == (2.5, 1.2, 1.0)
    # a region braking at 3 s also warns at 3 s at least
    assert cfg.thresholds({"ttc_brake_s": 3.0}).ttc_warn_s == 3.0
    # applied per frame: the same approach brakes earlier in the stricter region
    est_vehicle, est_region = CollisionRiskEstimator(cfg), CollisionRiskEstimator(cfg)
    est_region.set_rules({"ttc_brake_s": 2.0})
    a = first(feed(est_vehicle, closing(49.7, 10.0, 90)), RiskLevel.BRAKE)
    b = first(feed(est_region, closing(49.7, 10.0, 90)), RiskLevel.BRAKE)
    assert b < a and est_region.thresholds.ttc_brake_s == 2.0


def test_a_fast_camera_fits_an_evenly_thinned_window():
    assert thinned(10, 16) == list(range(10))
    keep = thinned(30, 16)
    assert len(keep) == 16 and keep[0] == 0 and keep[-1] == 29 and keep == sorted(set(keep))
    # at 30 Hz the fit uses 16 of the 30 samples of its window and is still exact on a linear approach
    est = CollisionRiskEstimator()
    last = [est.update(T0 + i / 30.0, 40.0 - 10.0 * i / 30.0, 10.0) for i in range(60)][-1]
    assert last.closing_speed_mps == pytest.approx(10.0) and last.distance_m == pytest.approx(40.0 - 590.0 / 30.0)


def test_theil_sen_is_exact_on_a_line_and_robust_to_one_outlier():
    t = np.arange(10) * 0.1
    d = 30.0 - 8.0 * t
    assert theil_sen(t.tolist(), d.tolist()) == pytest.approx((-8.0, d[-1]))
    d[4] += 2.5
    slope, now = theil_sen(t.tolist(), d.tolist())
    assert slope == pytest.approx(-8.0, abs=0.3) and now == pytest.approx(30.0 - 8.0 * t[-1], abs=0.3)


def _theil_sen_by_definition(times, values):
    """Every pair at least half the span apart, then the medians (statistics.median): the definition the
    estimator's faster pass must reproduce exactly, bit for bit."""
    import statistics

    half = max(0.5 * (times[-1] - times[0]) - 1e-9, 1e-12)
    slopes = [(values[j] - values[i]) / (times[j] - times[i])
              for i in range(len(times)) for j in range(i + 1, len(times)) if times[j] - times[i] >= half]
    slope = statistics.median(slopes)
    return slope, statistics.median([v + slope * (times[-1] - t) for t, v in zip(times, values, strict=True)])


def test_theil_sen_equals_its_definition_bit_for_bit():
    rng = np.random.default_rng(7)
    for _ in range(3000):
        n = int(rng.integers(2, 17))
        if rng.random() < 0.5:  # camera-like stamps, with jitter, dropped frames and uneven rates
            times = np.cumsum(rng.choice([1 / 30, 0.05, 0.1, 0.2], n) * rng.uniform(0.8, 1.2, n))
        else:
            times = np.cumsum(rng.uniform(1e-4, 0.3, n))
        values = rng.uniform(0.0, 60.0, n)
        if rng.random() < 0.3:
            values[rng.integers(n)] += 20.0  # an outlier
        t, v = (T0 + times).tolist(), values.tolist()
        assert theil_sen(t, v) == _theil_sen_by_definition(t, v)


def test_the_reason_of_a_frame_describes_its_numbers():
    est = CollisionRiskEstimator()
    for i in range(10):
        risk = est.update(T0 + 0.1 * i, 45.0 - 1.0 * i, 10.0)
    assert risk.state == "tracking" and risk.note == ""
    assert risk.reason == f"TTC {risk.ttc_s:.2f} s (obstacle {risk.distance_m:.1f} m, closing 10.0 m/s)"
    assert risk.as_dict()["reason"] == risk.reason


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("ttc_warn_s", 0.0, "must be > 0"),
    ("ttc_brake_s", 3.0, "is above risk.ttc_warn_s"),
    ("window_s", math.nan, "must be a finite number"),
    ("min_samples", 1, "two samples or more"),
    ("engage_frames", 1.5, "must be an integer"),
    ("release_factor", 0.5, "must be >= 1"),
    ("min_distance_m", -1.0, "must be >= 0"),
    ("max_gap_s", True, "must be a finite number"),
])
def test_bad_risk_settings_name_the_setting(field, value, problem):
    with pytest.raises(ConfigError) as info:
        RiskConfig(**{field: value})
    assert info.value.path == f"risk.{field}" and problem in str(info.value)
    with pytest.raises(ConfigError, match="unknown risk setting"):
        RiskConfig.from_dict({"ttc_panic_s": 1.0})


def test_the_risk_vector_is_ttc_closing_and_level():
    est = CollisionRiskEstimator()
    estimates = feed(est, closing(30.0, 10.0, 45))
    x, y, z = estimates[-1].vector()
    assert (x, y, z) == pytest.approx((estimates[-1].ttc_s, 10.0, 2.0))
    assert math.isnan(estimates[0].vector()[0]) and estimates[0].vector()[2] == 0.0   # no estimate yet
    steady = feed(CollisionRiskEstimator(), [20.0] * 10)[-1]
    assert steady.vector()[0] == 100.0  # not closing: capped, finite
    assert estimates[-1].as_dict()["level"] == "brake"
