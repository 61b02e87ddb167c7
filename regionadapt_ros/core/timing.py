"""Per-stage latency bookkeeping: rolling windows with percentiles, and a tiny stage timer."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

import numpy as np


class LatencyWindow:
    """Rolling window of latencies in milliseconds (keeps the last ``size`` samples)."""

    def __init__(self, size: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, ms: float) -> None:
        self._values.append(ms)
        self.count += 1

    def percentile(self, q: float) -> float:
        if not self._values:
            return float("nan")
        return float(np.percentile(np.fromiter(self._values, float), q))

    def values(self) -> list[float]:
        return list(self._values)


class StageTimings:
    """Latency windows per named stage ("convert", "preprocess", "perception", ...)."""

    def __init__(self, stages: Iterable[str] = (), size: int = 1000) -> None:
        self.size = size
        self.windows: dict[str, LatencyWindow] = {s: LatencyWindow(size) for s in stages}

    def add(self, timings_ms: dict[str, float]) -> None:
        windows = self.windows
        for stage, ms in timings_ms.items():
            w = windows.get(stage)
            if w is None:
                w = windows[stage] = LatencyWindow(self.size)
            w.add(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            s: {"p50": w.percentile(50), "p99": w.percentile(99), "count": w.count}
            for s, w in self.windows.items()
        }


class StageTimer:
    """Accumulates wall time per stage: ``with timer("perception"): ...``; results in ``timer.ms``."""

    def __init__(self, clock=time.perf_counter) -> None:
        self._clock = clock
        self.ms: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0

    def __call__(self, stage: str) -> StageTimer:
        self._stage = stage
        return self

    def __enter__(self) -> StageTimer:
        self._t0 = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stage is not None
        self.ms[self._stage] = self.ms.get(self._stage, 0.0) + (self._clock() - self._t0) * 1000.0
