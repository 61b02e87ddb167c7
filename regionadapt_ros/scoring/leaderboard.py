"""Route scores as the CARLA leaderboard 2.0 computes them (carla-simulator/leaderboard,
``leaderboard/utils/statistics_manager.py``, branch leaderboard-2.0).

Per route: route completion RC (the leaderboard's ``score_route``), infraction penalty P (``score_penalty``)
= the product over every infraction event of its coefficient, and driving score DS = RC × P
(``score_composed``). Two infractions are percentages rather than counts:

- outside route lanes, ``[0, 'increases']``: P *= 1 - (1 - 0) · pct / 100, pct = share of the completed route
  driven outside the route's lanes;
- minimum speed, ``[0.7, 'decreases']``: P *= 1 - (1 - 0.7) · (1 - pct / 100) for every checkpoint whose
  mean speed was pct % (< 100) of the surrounding traffic's.

Route deviation, blocked and route timeout end the route without a coefficient of their own: they only cut
RC short. The leaderboard reports RC in percent (0-100); this package uses fractions (0-1), so DS is in [0, 1].

Over many routes (``aggregate``): the mean of each score, and infractions per km driven, where a route's km
driven is its length × RC (``compute_global_statistics``); outside route lanes is reported there as total km
driven outside the lanes, not per km.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Infraction kinds, named as the leaderboard's result keys (PENALTY_NAME_DICT values, plus 'route_timeout').
COLLISION_PEDESTRIAN = "collisions_pedestrian"
COLLISION_VEHICLE = "collisions_vehicle"
COLLISION_LAYOUT = "collisions_layout"
RED_LIGHT = "red_light"
STOP_SIGN = "stop_infraction"
OUTSIDE_ROUTE_LANES = "outside_route_lanes"
MIN_SPEED = "min_speed_infractions"
YIELD_EMERGENCY = "yield_emergency_vehicle_infractions"
SCENARIO_TIMEOUT = "scenario_timeouts"
ROUTE_DEVIATION = "route_dev"
VEHICLE_BLOCKED = "vehicle_blocked"
ROUTE_TIMEOUT = "route_timeout"

# PENALTY_VALUE_DICT: a fixed coefficient per event.
PENALTY_COEFFICIENTS: dict[str, float] = {
    COLLISION_PEDESTRIAN: 0.50,
    COLLISION_VEHICLE: 0.60,
    COLLISION_LAYOUT: 0.65,
    RED_LIGHT: 0.70,
    STOP_SIGN: 0.80,
    SCENARIO_TIMEOUT: 0.70,
    YIELD_EMERGENCY: 0.70,
}
# PENALTY_PERC_DICT: (per-unit value, 'increases' | 'decreases'); the event carries a percentage.
PENALTY_PERCENTAGES: dict[str, tuple[float, str]] = {
    OUTSIDE_ROUTE_LANES: (0.0, "increases"),
    MIN_SPEED: (0.7, "decreases"),
}
# Events that stop the route (no coefficient; RC stays where it was).
ROUTE_ENDING = (ROUTE_DEVIATION, VEHICLE_BLOCKED, ROUTE_TIMEOUT)
KINDS: tuple[str, ...] = (*PENALTY_COEFFICIENTS, *PENALTY_PERCENTAGES, *ROUTE_ENDING)
# What the world of this package can produce; the others are scored when a caller reports them.
FAILURE_MESSAGES = {ROUTE_DEVIATION: "Agent deviated from the route", VEHICLE_BLOCKED: "Agent got blocked",
                    ROUTE_TIMEOUT: "Agent timed out"}


@dataclass(frozen=True)
class InfractionEvent:
    """One infraction. ``value``: the percentage of the two percentage kinds, else None. ``t``: seconds on the
    run's clock; ``x``, ``y``: where (the run's map frame), when known."""

    kind: str
    t: float
    message: str = ""
    value: float | None = None
    x: float | None = None
    y: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown infraction kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind in PENALTY_PERCENTAGES and (self.value is None or not math.isfinite(self.value)
                                                 or self.value < 0):
            raise ValueError(f"{self.kind} needs a finite percentage >= 0, got {self.value!r}")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def event_coefficient(event: InfractionEvent) -> float:
    """The factor one event multiplies the penalty by (1.0 for route-ending events)."""
    if event.kind in PENALTY_COEFFICIENTS:
        return PENALTY_COEFFICIENTS[event.kind]
    if event.kind in PENALTY_PERCENTAGES:
        unit, direction = PENALTY_PERCENTAGES[event.kind]
        pct = float(event.value)  # validated in __post_init__
        if direction == "decreases":
            return 1.0 - (1.0 - unit) * (1.0 - pct / 100.0)
        return 1.0 - (1.0 - unit) * pct / 100.0
    return 1.0


def infraction_penalty(events: Iterable[InfractionEvent]) -> float:
    """P = the product of every event's coefficient (1.0 without events)."""
    penalty = 1.0
    for event in events:
        penalty *= event_coefficient(event)
    return penalty


@dataclass
class RouteScore:
    """One route's result. ``route_completion`` and ``driving_score`` are fractions in [0, 1]."""

    route_id: str
    route_length_m: float
    route_completion: float
    infraction_penalty: float
    driving_score: float
    status: str
    duration_s: float
    events: list[InfractionEvent] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def km_driven(self) -> float:
        return self.route_length_m / 1000.0 * self.route_completion

    def counts(self) -> dict[str, int]:
        """Events per kind (every kind present, 0 when none)."""
        out = dict.fromkeys(KINDS, 0)
        for event in self.events:
            out[event.kind] += 1
        return out

    def outside_lanes_m(self) -> float:
        """Metres driven outside the route lanes (from the event's message-independent extras)."""
        return float(self.extras.get("outside_route_lanes_m", 0.0))

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "events"}
        d["events"] = [e.as_dict() for e in self.events]
        d["counts"] = self.counts()
        return d


def route_score(route_id: str, route_length_m: float, completion_percent: float, events: Sequence[InfractionEvent],
                duration_s: float, extras: Mapping[str, Any] | None = None) -> RouteScore:
    """A route's score from its completion (percent, 0-100 as the leaderboard's RouteCompletionTest reports it)
    and its events, with the leaderboard's status: 'Perfect' (completed without infractions), 'Completed', or
    'Failed' with the reason a route-ending event gives."""
    if not (math.isfinite(route_length_m) and route_length_m > 0):
        raise ValueError(f"route length must be > 0, got {route_length_m!r}")
    if not (math.isfinite(completion_percent) and 0.0 <= completion_percent <= 100.0):
        raise ValueError(f"route completion must be a percentage in [0, 100], got {completion_percent!r}")
    rc = completion_percent / 100.0
    penalty = infraction_penalty(events)
    if completion_percent >= 100.0:
        status = "Completed" if events else "Perfect"
    else:
        status = "Failed"
        for event in events:
            if event.kind in FAILURE_MESSAGES:
                status = f"Failed - {FAILURE_MESSAGES[event.kind]}"
    return RouteScore(route_id, float(route_length_m), rc, penalty, max(rc * penalty, 0.0), status,
                      float(duration_s), list(events), dict(extras or {}))


# ------------------------------------------------------------------------------------------- many routes
def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded: the same values give the same interval)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x.mean()), float(x.mean()))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], level: float = 0.95,
             resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of sum(numerators) / sum(denominators) over routes (infractions per km)."""
    import numpy as np

    num, den = np.asarray(numerators, float), np.asarray(denominators, float)
    if num.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, (resamples, num.size))
    ratios = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 0.001)
    alpha = (1.0 - level) / 2.0
    return (float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1.0 - alpha)))


def aggregate(scores: Sequence[RouteScore], level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean DS, RC and P with bootstrap confidence intervals, and infractions per km driven (with intervals),
    as the leaderboard's global record: km driven = Σ length × RC (at least 1 m)."""
    if not scores:
        raise ValueError("no routes to aggregate")
    ds = [s.driving_score for s in scores]
    rc = [s.route_completion for s in scores]
    pen = [s.infraction_penalty for s in scores]
    km = [s.km_driven for s in scores]
    km_total = max(sum(km), 0.001)
    per_km: dict[str, float] = {}
    per_km_ci: dict[str, list[float]] = {}
    for kind in KINDS:
        if kind == OUTSIDE_ROUTE_LANES:
            continue
        counts = [s.counts()[kind] for s in scores]
        per_km[kind] = sum(counts) / km_total
        per_km_ci[kind] = list(ratio_ci(counts, km, level, seed=seed))
    outside_m = [s.outside_lanes_m() for s in scores]

    def mean(v: Sequence[float]) -> float:
        return float(sum(v) / len(v))

    return {
        "routes": len(scores),
        "driving_score": mean(ds), "driving_score_ci": list(bootstrap_ci(ds, level, seed=seed)),
        "route_completion": mean(rc), "route_completion_ci": list(bootstrap_ci(rc, level, seed=seed)),
        "infraction_penalty": mean(pen), "infraction_penalty_ci": list(bootstrap_ci(pen, level, seed=seed)),
        "km_driven": sum(km),
        "infractions_per_km": per_km, "infractions_per_km_ci": per_km_ci,
        "outside_route_lanes_km": sum(outside_m) / 1000.0,
        "outside_route_lanes_percent": 100.0 * sum(outside_m) / 1000.0 / km_total,
        "perfect_routes": sum(1 for s in scores if s.status == "Perfect"),
        "failed_routes": sum(1 for s in scores if s.status.startswith("Failed")),
    }


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, seed: int = 0
                      ) -> dict[str, float | list[float]]:
    """Mean of a - b over paired routes (the same seeds) with its bootstrap interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need the same non-zero length, got {len(a)} and {len(b)}")
    diff = [x - y for x, y in zip(a, b, strict=True)]
    return {"mean": float(sum(diff) / len(diff)), "ci": list(bootstrap_ci(diff, level, seed=seed))}
