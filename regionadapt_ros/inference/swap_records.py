"""What the hot-swap manager records: one ``SwapRecord`` per switch (timestamps for metrics, DESIGN.md §6.6)
and one ``LoaderStep`` per loader step run in the serving process (instrumentation: when it ran relative to
the frames)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SwapRecord:
    """Timestamps (clock seconds) of one switch; None where a step did not happen."""

    region: str
    hint_t: float | None = None
    request_t: float | None = None
    load_start_t: float | None = None
    ready_t: float | None = None
    switched_t: float | None = None
    first_frame_t: float | None = None
    bundle_id: str | None = None
    prefetched: bool = False
    attempts: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def request_to_first_frame_s(self) -> float | None:
        if self.request_t is None or self.first_frame_t is None:
            return None
        return self.first_frame_t - self.request_t


@dataclass(frozen=True)
class LoaderStep:
    """One step the loader ran in this process, with the frame counters around it (instrumentation).

    ``frames_begun_*`` / ``frames_ended_*``: ``begin_frame`` / ``end_frame`` calls so far when the step started
    and ended; ``in_frame_at_start``: a frame was being computed when the step started. A step overlapped
    frames when ``frames_begun_at_end > frames_begun_at_start``. ``in_process``: False for the part that ran in
    the loader process (which takes neither this process's GIL nor its priority).
    """

    name: str
    region: str
    frames_begun_at_start: int
    frames_ended_at_start: int
    in_frame_at_start: bool
    frames_begun_at_end: int
    frames_ended_at_end: int
    in_process: bool = True
