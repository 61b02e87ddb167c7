"""Counted, rate-limited warnings: one bad message is counted and logged, a flood of them is counted and
logged at most once per interval per kind, and the counts are reported in diagnostics."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

_LOG = logging.getLogger("regionadapt_ros")


class CountedWarnings:
    """Counts problems by kind and logs each kind at most once per ``interval_s``."""

    def __init__(
        self,
        interval_s: float = 5.0,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._log = log or _LOG.warning
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._last_message: dict[str, str] = {}
        self._lock = threading.Lock()

    def warn(self, kind: str, message: str) -> None:
        """Count one occurrence of ``kind``; log ``message`` unless this kind was logged recently."""
        with self._lock:
            self._counts[kind] += 1
            self._last_message[kind] = message
            now = self._clock()
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.interval_s:
                return
            self._last_logged[kind] = now
            count = self._counts[kind]
        self._log(f"[{kind}] {message} (count={count})")

    def count(self, kind: str) -> int:
        with self._lock:
            return self._counts[kind]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def last_message(self, kind: str) -> str | None:
        with self._lock:
            return self._last_message.get(kind)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())
