"""sensor_msgs/NavSatFix → GnssFix with real ROS 2 (Humble) message classes and a real u-blox GNSS track
(comma2k19), and the stamp helpers."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv import (
    build_header,
    build_navsatfix,
    build_time,
    navsatfix_to_fix,
    s_to_stamp_parts,
    stamp_to_s,
)


def raw_fix(types, lat, lon, status=0, covariance=None, covariance_type=2, alt=10.0):
    return types("sensor_msgs/msg/NavSatFix")(
        header=build_header(types, 100.5, "gnss"),
        status=types("sensor_msgs/msg/NavSatStatus")(status=status, service=1),
        latitude=lat, longitude=lon, altitude=alt,
        position_covariance=np.asarray(covariance if covariance is not None else np.zeros(9), np.float64),
        position_covariance_type=covariance_type,
    )


def test_real_gnss_track_survives_build_cdr_and_back(store, types, sf_track_csv):
    with sf_track_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:50]
    for row in rows:
        stamp = float(row["utc_timestamp"]) / 1000.0
        lat, lon, alt = float(row["latitude_deg"]), float(row["longitude_deg"]), float(row["altitude_m"])
        msg = build_navsatfix(types, lat, lon, alt, stamp, status=0, h_std_m=1.5, frame_id="gnss")
        back = store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
        fix = navsatfix_to_fix(back)
        assert (fix.lat, fix.lon, fix.alt) == (lat, lon, alt)
        assert fix.has_fix and fix.status == 0 and fix.service == 1
        assert fix.covariance_type == 2 and fix.h_std_m == pytest.approx(1.5)
        assert fix.stamp_s == pytest.approx(stamp, abs=1e-6) and fix.frame_id == "gnss"


def test_h_std_uses_the_worse_horizontal_axis(types):
    fix = navsatfix_to_fix(raw_fix(types, 37.7, -122.4, covariance=[4.0, 0, 0, 0, 9.0, 0, 0, 0, 25.0]))
    assert fix.h_std_m == pytest.approx(3.0)


def test_h_std_is_none_only_when_the_covariance_type_says_unknown(types):
    assert navsatfix_to_fix(raw_fix(types, 37.7, -122.4, covariance=[np.nan] * 9,
                                    covariance_type=0)).h_std_m is None


@pytest.mark.parametrize("covariance", [
    [-1.0, 0, 0, 0, 9.0, 0, 0, 0, 1],       # a negative variance
    [4.0, 0, 0, 0, 9.0, 0, 0, 0, -1],       # a negative vertical variance: not a covariance either
    [np.nan] * 9,
    [4.0, np.nan, 0, 0, 9.0, 0, 0, 0, 1],   # NaN off the diagonal
], ids=["negative_east", "negative_up", "all_nan", "nan_off_diagonal"])
def test_a_covariance_that_is_not_one_makes_the_fix_unusable(types, covariance):
    # It used to read as "accuracy unknown" and be accepted; the receiver said it knew, and what it sent is no
    # covariance: the fix is marked unusable (NaN) for the resolver to hold and count.
    assert math.isnan(navsatfix_to_fix(raw_fix(types, 37.7, -122.4, covariance=covariance)).h_std_m)


def test_an_infinite_variance_is_an_infinite_standard_deviation(types):
    fix = navsatfix_to_fix(raw_fix(types, 37.7, -122.4, covariance=[math.inf, 0, 0, 0, 9.0, 0, 0, 0, 1]))
    assert fix.h_std_m == math.inf


def test_no_fix_is_reported_not_raised_even_with_nan_coordinates(types):
    fix = navsatfix_to_fix(raw_fix(types, math.nan, math.nan, status=-1, covariance_type=0))
    assert not fix.has_fix and fix.status == -1
    assert math.isnan(fix.lat) and fix.h_std_m is None
    assert navsatfix_to_fix(raw_fix(types, 37.7, -122.4, status=2)).has_fix


@pytest.mark.parametrize("field", ["latitude", "longitude"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_coordinate_with_a_fix_is_refused(types, field, bad):
    lat, lon = (bad, -122.4) if field == "latitude" else (37.7, bad)
    with pytest.raises(MessageConversionError) as err:
        navsatfix_to_fix(raw_fix(types, lat, lon))
    assert err.value.field == field
    assert f"sensor_msgs/NavSatFix.{field}" in str(err.value) and "a fix" in str(err.value)


def test_out_of_range_latitude_is_refused(types):
    with pytest.raises(MessageConversionError) as err:
        navsatfix_to_fix(raw_fix(types, 91.0, 0.0))
    assert err.value.field == "latitude" and "outside" in str(err.value)


def test_nan_altitude_is_kept(types):
    assert math.isnan(navsatfix_to_fix(raw_fix(types, 37.7, -122.4, alt=math.nan)).alt)


# --- stamps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t,parts", [(1.5, (1, 500_000_000)), (0.0, (0, 0)), (-0.25, (-1, 750_000_000)),
                                     (2.9999999999, (3, 0)), (1533226488.299, (1533226488, 299_000_000))])
def test_seconds_to_stamp_parts(t, parts):
    sec, nanosec = s_to_stamp_parts(t)
    assert sec == parts[0]
    assert abs(nanosec - parts[1]) <= 1000  # float seconds near 1.5e9 resolve ~0.24 µs
    assert 0 <= nanosec < 1_000_000_000


def test_stamp_round_trip_through_header_and_time(types):
    for t in (0.0, 12.345678901, 1700000000.123456):
        header = build_header(types, t, "x")
        assert stamp_to_s(header) == pytest.approx(t, abs=1e-6)
        assert stamp_to_s(header.stamp) == stamp_to_s(build_time(types, t))


def test_non_finite_time_and_non_stamps_are_refused():
    with pytest.raises(ValueError, match="finite"):
        s_to_stamp_parts(math.nan)
    with pytest.raises(TypeError, match="no stamp"):
        stamp_to_s(object())


def test_a_known_covariance_of_zeros_is_unknown_accuracy_not_a_perfect_fix(types):
    from regionadapt_ros.core.msgconv.navsat import COVARIANCE_TYPE_DIAGONAL_KNOWN, horizontal_std_m

    assert horizontal_std_m(np.zeros(9), COVARIANCE_TYPE_DIAGONAL_KNOWN) is None
    assert horizontal_std_m(np.diag([4.0, 1.0, 9.0]).reshape(-1), COVARIANCE_TYPE_DIAGONAL_KNOWN) == 2.0
