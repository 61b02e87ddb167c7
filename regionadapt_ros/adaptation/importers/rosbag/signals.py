"""Signals of a recording: time series with nearest and interpolated lookups, local linear fits, steering from the
yaw rate, commands from odometry, and header stamps read straight from CDR."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------------------------------------ series
@dataclass
class TimeSeries:
    """Values sampled at times: ``t`` (M,) seconds ascending, ``v`` (M, K)."""

    t: np.ndarray
    v: np.ndarray

    @classmethod
    def from_rows(cls, times: Sequence[float], rows: Sequence[Sequence[float]], width: int) -> TimeSeries:
        t = np.asarray(times, dtype=np.float64)
        v = np.asarray(rows, dtype=np.float64).reshape(len(t), width)
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order])

    def __len__(self) -> int:
        return int(self.t.size)

    def at(self, t: np.ndarray, max_dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Values at times ``t`` (N,): linear interpolation between the neighbours before and after when both
        are within ``max_dt``, else the nearer one if within ``max_dt``. Returns (values (N, K), matched (N,))."""
        t = np.asarray(t, dtype=np.float64)
        k = self.v.shape[1]
        out = np.full((t.size, k), np.nan)
        if len(self) == 0:
            return out, np.zeros(t.size, dtype=bool)
        right = np.searchsorted(self.t, t, side="left")
        left = right - 1
        has_left, has_right = left >= 0, right < len(self)
        li, ri = np.clip(left, 0, len(self) - 1), np.clip(right, 0, len(self) - 1)
        dl = np.where(has_left, t - self.t[li], np.inf)
        dr = np.where(has_right, self.t[ri] - t, np.inf)
        near_l, near_r = dl <= max_dt, dr <= max_dt
        both = near_l & near_r
        span = np.where(both, dl + dr, 1.0)
        w = np.where(both & (span > 0), dl / np.where(span > 0, span, 1.0), 0.0)[:, None]
        interp = self.v[li] * (1.0 - w) + self.v[ri] * w
        nearest = np.where((dl <= dr)[:, None], self.v[li], self.v[ri])
        out = np.where(both[:, None], interp, nearest)
        matched = near_l | near_r
        out[~matched] = np.nan
        return out, matched


def nearest_index(times: np.ndarray, t: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into ascending ``times`` of the nearest entry to each of ``t`` within ``max_dt``; -1 when none."""
    if times.size == 0:
        return np.full(t.size, -1, dtype=np.int64)
    right = np.clip(np.searchsorted(times, t, side="left"), 0, times.size - 1)
    left = np.clip(right - 1, 0, times.size - 1)
    pick = np.where(np.abs(times[left] - t) <= np.abs(times[right] - t), left, right)
    return np.where(np.abs(times[pick] - t) <= max_dt, pick, -1).astype(np.int64)


def local_linear_fit(t: np.ndarray, v: np.ndarray, window_s: float, max_rows: int = 1 << 21
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the samples within ±window_s/2 of each sample: (slope (M,), mean (M,)).
    The slope is a smoothed derivative dv/dt (NaN where the window holds fewer than two distinct times).
    Centred on each sample's own time, so an epoch-sized ``t`` loses no precision."""
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    m = t.size
    slope, mean = np.full(m, np.nan), np.full(m, np.nan)
    if m == 0:
        return slope, mean
    lo = np.searchsorted(t, t - window_s / 2.0, side="left")
    hi = np.searchsorted(t, t + window_s / 2.0, side="right")
    width = int((hi - lo).max())
    chunk = max(1, max_rows // max(width, 1))
    offsets = np.arange(width)
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        idx = lo[start:stop, None] + offsets[None, :]
        valid = idx < hi[start:stop, None]
        idx = np.minimum(idx, m - 1)
        dt = np.where(valid, t[idx] - t[start:stop, None], 0.0)
        vv = np.where(valid, v[idx], 0.0)
        count = valid.sum(axis=1)
        dt_mean = dt.sum(axis=1) / count
        v_mean = vv.sum(axis=1) / count
        dtc = np.where(valid, dt - dt_mean[:, None], 0.0)
        sxx = (dtc * dtc).sum(axis=1)
        sxy = (dtc * np.where(valid, vv - v_mean[:, None], 0.0)).sum(axis=1)
        ok = (count >= 2) & (sxx > 1e-12)
        slope[start:stop] = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
        mean[start:stop] = v_mean
    return slope, mean


def steering_from_yaw_rate(speed: np.ndarray, yaw_rate: np.ndarray, wheelbase_m: float,
                           min_speed_mps: float) -> np.ndarray:
    """Kinematic-bicycle steering angle [rad, + = left] = atan(wheelbase * yaw_rate / speed); NaN where
    |speed| <= min_speed_mps (the angle is not observable when standing)."""
    speed = np.asarray(speed, dtype=np.float64)
    moving = np.abs(speed) > min_speed_mps
    safe = np.where(moving, speed, 1.0)
    return np.where(moving, np.arctan(wheelbase_m * np.asarray(yaw_rate, dtype=np.float64) / safe), np.nan)


def odometry_commands(odometry: TimeSeries, window_s: float, wheelbase_m: float, min_speed_mps: float
                      ) -> TimeSeries:
    """Commands derived from odometry (columns speed, yaw rate) → TimeSeries (steering, accel)."""
    accel, _ = local_linear_fit(odometry.t, odometry.v[:, 0], window_s)
    _, yaw_rate = local_linear_fit(odometry.t, odometry.v[:, 1], window_s)
    steering = steering_from_yaw_rate(odometry.v[:, 0], yaw_rate, wheelbase_m, min_speed_mps)
    return TimeSeries(odometry.t, np.stack([steering, accel], axis=1))


def trend_sign(values: np.ndarray) -> np.ndarray:
    """Sign of the change around each sample of a time-ordered series (M,): of its next value minus its previous
    one (one-sided at the ends; NaN for a single sample). Only the order of the samples matters, so two samples
    at the same time (a driver publishing twice in one tick) give a sign too; ``np.gradient`` over such times
    divides by zero."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return np.full_like(values, np.nan)
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.sign(padded[2:] - padded[:-2])


def command_period(t: np.ndarray) -> float:
    """Median interval of a command stream [s] (the control period); 0.1 s when it cannot be told."""
    if t.size < 2:
        return 0.1
    diffs = np.diff(t)
    diffs = diffs[diffs > 0]
    return float(np.median(diffs)) if diffs.size else 0.1


# ------------------------------------------------------------------------------------------------ bag access
def cdr_header_stamp(raw: bytes | memoryview) -> float | None:
    """Stamp [s] of a CDR-serialised message whose first field is ``std_msgs/Header`` (Image, CompressedImage,
    PointCloud2, ...), read from the bytes without decoding the rest; None if the encapsulation is not plain
    CDR. Layout: 4-byte encapsulation header (0x00 0x01 little endian, 0x00 0x00 big endian), then the
    stamp's int32 sec and uint32 nanosec."""
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec + nanosec * 1e-9
