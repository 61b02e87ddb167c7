"""``sensor_msgs/NavSatFix`` → ``GnssFix``.

Decisions
---------
- ``status.status == NO_FIX (-1)`` (or any negative status) is not an error: the result has
  ``has_fix == False`` so that the region resolver can hold the current region and report "no fix".
  Drivers commonly publish NaN latitude/longitude with NO_FIX; that is accepted then.
- With a fix, a non-finite latitude or longitude, or one outside [-90, 90] / [-180, 180], raises
  MessageConversionError naming the field. A NaN altitude is kept (many receivers have no altitude).
- ``h_std_m`` (horizontal standard deviation, metres) is the square root of the larger of the east and north
  variances, ``sqrt(max(cov[0], cov[4]))`` of the ENU ``position_covariance`` (row-major 3x3): the
  conservative choice, a fix is as good as its worst horizontal axis. It is None ("accuracy unknown") only when
  ``position_covariance_type`` is UNKNOWN (0), or the horizontal variances are both 0 (a driver that names a
  type but never fills the matrix in: no receiver is exact). A covariance the receiver says it knows but that is
  not one (a NaN anywhere, a negative variance, fewer than 9 entries) makes the fix unusable: ``h_std_m`` is NaN,
  which the region resolver holds and counts as ``invalid_accuracy``. An infinite variance (how some drivers say "do not
  trust this fix") gives ``h_std_m = inf``, held as ``poor_accuracy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv.stamps import stamp_to_s

NAVSATFIX = "sensor_msgs/NavSatFix"

STATUS_NO_FIX = -1
STATUS_FIX = 0
STATUS_SBAS_FIX = 1
STATUS_GBAS_FIX = 2
COVARIANCE_TYPE_UNKNOWN = 0
COVARIANCE_TYPE_APPROXIMATED = 1
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2
COVARIANCE_TYPE_KNOWN = 3


@dataclass(frozen=True)
class GnssFix:
    """One GNSS fix in WGS84. ``stamp_s``: header stamp in seconds; ``lat``/``lon``: degrees; ``alt``: metres
    above the WGS84 ellipsoid (may be NaN); ``status``/``service``: NavSatStatus values; ``covariance_type``:
    NavSatFix.position_covariance_type; ``h_std_m``: horizontal standard deviation in metres or None when
    unknown; ``frame_id``: the header's frame."""

    stamp_s: float
    lat: float
    lon: float
    alt: float
    status: int
    service: int
    covariance_type: int
    h_std_m: float | None
    frame_id: str

    @property
    def has_fix(self) -> bool:
        """True when the receiver reports a fix (status >= STATUS_FIX)."""
        return self.status >= STATUS_FIX


def horizontal_std_m(covariance: Any, covariance_type: int) -> float | None:
    """``sqrt(max(cov[0], cov[4]))`` of a row-major ENU 3x3 covariance in m²; None when the type is UNKNOWN, NaN
    when the covariance is unusable (NaN entries, negative variances, not 3x3), inf for an infinite variance."""
    if int(covariance_type) == COVARIANCE_TYPE_UNKNOWN:
        return None
    try:
        cov = np.asarray(covariance, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return math.nan
    if cov.size != 9 or np.isnan(cov).any() or (np.diag(cov.reshape(3, 3)) < 0.0).any():
        return math.nan
    var_e, var_n = float(cov[0]), float(cov[4])
    if var_e == 0.0 and var_n == 0.0:
        return None  # a covariance of zeros is one the driver never filled in, not a perfect fix
    return math.sqrt(max(var_e, var_n))


def navsatfix_to_fix(msg: Any) -> GnssFix:
    """``sensor_msgs/NavSatFix`` → ``GnssFix`` (see the module docstring for the decisions).

    Raises MessageConversionError naming ``latitude`` or ``longitude`` when a fix has a non-finite or
    out-of-range coordinate.
    """
    status_msg = msg.status
    status = int(status_msg.status)
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    if status >= STATUS_FIX:
        for field, value, limit in (("latitude", lat, 90.0), ("longitude", lon, 180.0)):
            if not math.isfinite(value):
                raise MessageConversionError(NAVSATFIX, field, f"is {value} although status is {status} (a fix)")
            if abs(value) > limit:
                raise MessageConversionError(NAVSATFIX, field, f"{value} is outside [-{limit:g}, {limit:g}] degrees")
    covariance_type = int(msg.position_covariance_type)
    return GnssFix(
        stamp_s=stamp_to_s(msg.header),
        lat=lat,
        lon=lon,
        alt=alt,
        status=status,
        service=int(status_msg.service),
        covariance_type=covariance_type,
        h_std_m=horizontal_std_m(msg.position_covariance, covariance_type),
        frame_id=str(msg.header.frame_id),
    )
