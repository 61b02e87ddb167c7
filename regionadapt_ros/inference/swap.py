"""Double-buffered weight slots and the hot-swap protocol of DESIGN.md §6.

- ``ModelSlot`` holds at most two runners of one model: the serving one and a staged one.
- ``HotSwapManager`` loads, verifies, prepares and warms up a region's weights for both models off the serving
  thread, and switches both slots together at a frame boundary (``begin_frame``, called by the serving thread
  before each frame), so a frame is always computed with one bundle and serving never waits for loading.
- Reading, verifying and resolving a bundle runs in a separate loader process at a lower OS priority
  (``inference.loader_process``), which hands the weights over in shared memory; what is left in this process
  (building both runners from them, warming them up, freeing a replaced set) runs on one loader thread, each
  step started right after a frame has ended, in the gap before the next one. Every load is bounded in time: a
  load that does not finish is killed, counted as a failure, and later requests are served.
- A failed load keeps the serving weights, records the reason, and is retried with exponential back-off while
  that region is still wanted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionadapt_ros.inference.backend import InferenceBackend, ModelRunner
from regionadapt_ros.inference.swap_records import LoaderStep, SwapRecord
from regionadapt_ros.inference.weight_source import (
    LoadTimeoutError,
    SourceClosedError,
    WeightSource,
    describe_error,
    make_weight_source,
)

__all__ = ["ISOLATIONS", "MODEL_NAMES", "HotSwapManager", "LoadedWeights", "Loader", "LoaderStep", "ModelSlot",
           "SwapError", "SwapRecord", "WeightSet"]

_LOG = logging.getLogger("regionadapt_ros.swap")

MODEL_NAMES = ("perception", "decision")

# Frames a hint for another region must stand before it replaces a held prefetch (see HotSwapManager.hint).
HINT_SETTLE_FRAMES = 10
SWAP_HISTORY = 256


@dataclass
class LoadedWeights:
    """What a loader returns: full named weights of both models for one region's bundle."""

    region: str
    bundle_id: str
    weights: Mapping[str, Mapping[str, np.ndarray]]
    version: int = 0
    sha256: str = ""
    rules: Mapping[str, Any] = field(default_factory=dict)
    # {model: bytes} from the backend's loader stages, when the loader process ran them (InferenceBackend)
    staged: Mapping[str, Any] = field(default_factory=dict)


Loader = Callable[[str], LoadedWeights]
ISOLATIONS = ("auto", "process", "thread")


@dataclass(frozen=True)
class WeightSet:
    """Both models' runners for one bundle; immutable, swapped as one reference."""

    region: str
    bundle_id: str
    version: int
    sha256: str
    runners: Mapping[str, ModelRunner]
    rules: Mapping[str, Any]

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()


class ModelSlot:
    """Serving + staged runner of one model. Only ``HotSwapManager`` mutates it, under its lock."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.serving: ModelRunner | None = None
        self.staged: ModelRunner | None = None

    def resident(self) -> int:
        return int(self.serving is not None) + int(self.staged is not None)


class SwapError(RuntimeError):
    pass


class HotSwapManager:
    """Owns the weight slots of both models, the loader thread and the weight source.

    ``loader``: a ``Loader`` (region → ``LoadedWeights``) or a ``WeightSource``. ``isolation`` says where a
    ``Loader`` runs: "process" in a ``LoaderProcess`` (the loader must be spawnable: ``inference.spawn_spec``),
    "thread" on a helper thread of this process, "auto" (default) in a process when the loader says it can be
    (``spawnable``, as ``inference.loading.BundleLoader``) and in a thread otherwise. ``load_timeout_s`` bounds
    every load, the initial one included; ``loader_nice`` / ``loader_sched_idle`` / ``loader_memory_limit_mb``
    configure the loader process (see ``LoaderProcess``).

    ``clock`` is a monotonic time source in seconds (injectable for tests and for replay in bag time; the
    retry back-off uses it too). ``yield_to_frames``: start each in-process loader step right after a frame
    ends while frames are being served; frames count as being served until none has ended for
    ``serving_idle_s`` (wall time), so a loader never waits on a driver that has stopped.
    ``loader_steps`` keeps the latest in-process steps with the frame counters around them (``LoaderStep``).
    A ``Loader`` with a ``commit(weight_set)`` method (``BundleLoader``: the rollback registry) is told, in this
    process, of every set of its once it serves, never of one that failed to prepare or warm up.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        loader: Loader | WeightSource,
        clock: Callable[[], float] = time.monotonic,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        warmup_iterations: int = 2,
        gil_switch_interval_s: float | None = 0.001,
        yield_to_frames: bool = True,
        serving_idle_s: float = 0.25,
        *,
        isolation: str = "auto",
        load_timeout_s: float = 20.0,
        loader_nice: int = 10,
        loader_sched_idle: bool = False,
        loader_memory_limit_mb: int = 2048,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
        if not (math.isfinite(load_timeout_s) and load_timeout_s > 0):
            raise ValueError(f"load_timeout_s must be a positive number of seconds, not {load_timeout_s!r}")
        self.backend = backend
        self.source = make_weight_source(loader, isolation, nice=loader_nice, sched_idle=loader_sched_idle,
                                         memory_limit_mb=loader_memory_limit_mb, stages=backend.loader_stages)
        self._commit: Callable[[WeightSet], None] | None = getattr(loader, "commit", None)
        self._uncommitted: WeightSet | None = None  # switched to, its commit still queued
        self.commit_failures = 0
        self.last_commit_error: str | None = None
        self.clock = clock
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.warmup_iterations = warmup_iterations
        self.load_timeout_s = float(load_timeout_s)
        self.yield_to_frames = yield_to_frames
        self.serving_idle_s = serving_idle_s
        if gil_switch_interval_s is not None and sys.getswitchinterval() > gil_switch_interval_s:
            # The loader thread runs some Python code (building runners, bookkeeping) while frames are served;
            # the interpreter's default 5 ms GIL switch interval would let it delay a frame by that much.
            sys.setswitchinterval(gil_switch_interval_s)
        self.slots = {name: ModelSlot(name) for name in MODEL_NAMES}
        self._lock = threading.Lock()
        self._frame_ended = threading.Condition(self._lock)
        self._frames_begun = 0
        self._frames_ended = 0
        self._in_frame = False
        self._last_frame_end = -math.inf  # time.monotonic() of the last end_frame
        self._idle_waiters = 0  # threads in wait_idle: the serving thread may be one, so do not wait for frames
        self._tasks_pending = 0  # loader tasks queued or running
        self._parked_after: int | None = None  # frames_ended when the loader began waiting for the next frame end
        # The loader thread keeps the serving thread's priority: a thread of this process at a lower priority
        # would be preempted by other processes while it holds the GIL, and the serving thread would wait.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regionadapt-loader")
        self._serving: WeightSet | None = None
        self._staged: WeightSet | None = None
        self._staging_region: str | None = None
        self._staging_future: Future | None = None
        self._generation = 0
        self._target: str | None = None
        self._records: dict[str, SwapRecord] = {}
        self._pending_first_frame: SwapRecord | None = None
        self._deferred_hint: str | None = None  # a hint that arrived while a switch was pending ...
        self._deferred_hint_frame: int | None = None  # ... or while a prefetch was held: staged after this frame
        self._retiring = 0  # replaced sets queued to be freed on the loader thread
        # the latest swaps (a node runs for days; every swap's record would grow without bound)
        self.history: deque[SwapRecord] = deque(maxlen=SWAP_HISTORY)
        self.loader_steps: deque[LoaderStep] = deque(maxlen=2000)
        self.failures: dict[str, str] = {}
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self.swaps = 0
        self.failed_loads = 0
        self.load_timeouts = 0

    # ----------------------------------------------------------------- set-up and tear-down
    def initialize(self, region: str) -> WeightSet:
        """Load ``region`` synchronously and serve it (node configure / start-up). Raises on failure, within
        ``load_timeout_s`` for the load itself (plus the loader process's start)."""
        self.source.start(max(30.0, self.load_timeout_s))
        try:
            loaded = self.source.load(region, self.load_timeout_s)
        except LoadTimeoutError:
            self.load_timeouts += 1
            raise
        weight_set = self._prepare(loaded)
        del loaded  # the shared block is unmapped once the runners hold their own copies
        with self._lock:
            old = self._serving
            self._serving = weight_set
            self._target = region
            for name, slot in self.slots.items():
                slot.serving = weight_set.runners[name]
        if old is not None:
            old.close()
        if self._commit is not None:
            # at start-up a registry that cannot be written fails the start, as a load that cannot record would:
            # a vehicle with rollback protection must not drive without it
            self._commit(weight_set)
        return weight_set

    def _committed(self, weight_set: WeightSet) -> None:
        """Tell the loader that ``weight_set`` (switched to while driving) serves. A failure (a registry that
        became unwritable) is logged, counted and shown in ``status``: the set serves already, and taking it back
        would leave the car on older weights."""
        with self._lock:
            if self._uncommitted is weight_set:
                self._uncommitted = None
        if self._commit is None:
            return
        try:
            self._commit(weight_set)
        except Exception as exc:
            with self._lock:
                self.commit_failures += 1
                self.last_commit_error = f"{weight_set.bundle_id}: {exc}"
            _LOG.error("region %r serves bundle %s, but recording it as installed failed: %s", weight_set.region,
                       weight_set.bundle_id, exc)

    def shutdown(self) -> None:
        """Stop the loader and free both weight sets (node deactivate / cleanup). Always returns: a load in
        progress is abandoned (the loader process is stopped)."""
        self.source.close()
        with self._lock:
            self._idle_waiters += 1  # the loader thread must not wait for frames any more
            self._frame_ended.notify_all()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            uncommitted = self._uncommitted
        if uncommitted is not None:  # it served: its commit was queued behind the frame that shutdown cancelled
            self._committed(uncommitted)
        with self._lock:
            sets = [s for s in (self._serving, self._staged) if s is not None]
            self._serving = self._staged = None
            for slot in self.slots.values():
                slot.serving = slot.staged = None
        for s in sets:
            s.close()

    # ----------------------------------------------------------------- requests (any thread)
    def hint(self, region: str) -> None:
        """``next_region``: stage ``region`` early so that the switch is immediate when it becomes active."""
        now = self.clock()
        with self._lock:
            if self._serving is not None and region == self._serving.region:
                return
            rec = self._records.setdefault(region, SwapRecord(region))
            if rec.hint_t is None:
                rec.hint_t = now
            if self._switch_pending_locked() and region != self._target:
                # The staging slot holds (or is loading) the region about to be switched to: staging the hint
                # now would evict it. It is staged right after the switch.
                self._deferred_hint = region
                self._deferred_hint_frame = None
                return
            if self._prefetch_held_locked(region):
                # The slot holds (or is loading) another hinted region. One GNSS fix can move the vehicle into
                # that region and predict the next one; the two topics reach the node in either order, and a
                # hint that evicted the set at once would lose it to the active_region right behind it. The
                # new hint replaces it once it has stood for HINT_SETTLE_FRAMES frames, unless that region is
                # requested first or hinted again: a prediction flipping between two regions at a junction
                # would otherwise load and free a set on every frame.
                self._deferred_hint = region
                self._deferred_hint_frame = self._frames_begun
                return
            self._deferred_hint, self._deferred_hint_frame = None, None  # the newest hint wins
            self._stage_locked(region)

    def _prefetch_held_locked(self, region: str) -> bool:
        if self._staged is not None:
            held = self._staged.region
        elif self._staging_future is not None and not self._staging_future.done():
            held = self._staging_region
        else:
            return False
        rec = self._records.get(held) if held is not None else None
        return held != region and rec is not None and rec.hint_t is not None

    def _switch_pending_locked(self) -> bool:
        return self._target is not None and self._serving is not None and self._target != self._serving.region

    def _stage_deferred_locked(self) -> None:
        region, self._deferred_hint, self._deferred_hint_frame = self._deferred_hint, None, None
        if region is not None and self._serving is not None and region != self._serving.region:
            self._stage_locked(region)

    def request(self, region: str) -> None:
        """``active_region``: switch to ``region`` at the first frame boundary after it is ready."""
        now = self.clock()
        with self._lock:
            self._target = region
            if self._serving is not None and region == self._serving.region:
                self._stage_deferred_locked()  # no switch pending any more
                return
            rec = self._records.setdefault(region, SwapRecord(region))
            rec.request_t = now
            self._stage_locked(region)

    def _stage_locked(self, region: str) -> None:
        if self._staged is not None and self._staged.region == region:
            return
        if self._staging_region == region and self._staging_future is not None and not self._staging_future.done():
            return
        retry_at = self._retry_at.get(region)
        if retry_at is not None and self.clock() < retry_at:
            return  # back-off running; begin_frame resubmits when it expires
        self._generation += 1
        self._staging_region = region
        self._staging_future = self._submit_locked(self._stage_task, region, self._generation)

    def _submit_locked(self, fn: Callable[..., None], *args: Any) -> Future:
        """Queue a loader task (under the lock); ``_tasks_pending`` counts it until it has run."""
        def run() -> None:
            try:
                fn(*args)
            finally:
                with self._lock:
                    self._tasks_pending -= 1
                    self._frame_ended.notify_all()

        future = self._executor.submit(run)  # RuntimeError once shut down: nothing counted then
        self._tasks_pending += 1
        return future

    # ----------------------------------------------------------------- frame boundary (serving thread)
    def begin_frame(self) -> WeightSet:
        """Called before each frame; switches to the staged set if it is the wanted region. O(1), no I/O."""
        with self._lock:
            target = self._target
            serving = self._serving
            if serving is None:
                raise SwapError("no weights are serving: initialize() was not called or failed")
            self._frames_begun += 1
            self._in_frame = True
            old = None
            if target is not None and target != serving.region:
                staged = self._staged
                if staged is not None and staged.region == target:
                    old = serving
                    self._serving = staged
                    self._staged = None
                    for name, slot in self.slots.items():
                        slot.serving, slot.staged = staged.runners[name], None
                    rec = self._records.pop(target, SwapRecord(target))
                    rec.switched_t = self.clock()
                    rec.bundle_id = staged.bundle_id
                    self.history.append(rec)
                    self._pending_first_frame = rec
                    self.swaps += 1
                elif target in self._retry_at and self.clock() >= self._retry_at[target]:
                    del self._retry_at[target]
                    self._stage_locked(target)
            elif (self._deferred_hint_frame is not None
                  and self._frames_begun >= self._deferred_hint_frame + HINT_SETTLE_FRAMES):
                self._stage_deferred_locked()  # no active_region came for the held prefetch: the new hint wins
            serving = self._serving
        if old is not None:
            self._retire(old)  # queued first: the replaced set is freed before a deferred hint is loaded
            with self._lock:
                if self._commit is not None:
                    # file I/O: on the loader thread, after this frame, never in it; shutdown commits it when
                    # the queue is dropped first
                    self._uncommitted = serving
                    with contextlib.suppress(RuntimeError):
                        self._submit_locked(self._commit_after_frame, serving)
                self._stage_deferred_locked()
        return serving

    def _commit_after_frame(self, weight_set: WeightSet) -> None:
        self._between_frames()
        self._committed(weight_set)

    def _retire(self, old: WeightSet) -> None:
        """Free a replaced set on the loader thread: tearing down a session (arenas, graph, kernels) takes a
        millisecond or more, which the frame right after a switch must not pay. The loader runs its tasks in
        order, so the set is freed before the next region is loaded (still at most two resident sets)."""
        with self._lock:
            self._retiring += 1

        def close() -> None:
            try:
                self._between_frames()  # not while the frame that switched is still running
                with self._step("free", old.region):
                    old.close()
            finally:
                with self._lock:
                    self._retiring -= 1

        try:
            with self._lock:
                self._submit_locked(close)
        except RuntimeError:  # executor shut down: free it here
            close()

    def end_frame(self) -> None:
        """Called after each frame (records when the first frame on new weights was served)."""
        now = self.clock()
        with self._lock:
            if self._pending_first_frame is not None:
                self._pending_first_frame.first_frame_t = now
                self._pending_first_frame = None
            self._frames_ended += 1
            self._in_frame = False
            self._last_frame_end = time.monotonic()
            self._frame_ended.notify_all()

    def _between_frames(self) -> None:
        """Loader checkpoint: while frames are being served, return right after the next frame has ended."""
        if not self.yield_to_frames:
            return
        with self._lock:
            if self._idle_waiters:
                return  # the driver waits for the loader
            if not self._in_frame and time.monotonic() - self._last_frame_end > self.serving_idle_s:
                return  # nothing is being served (a frame in flight after a long pause still is)
            seen = self._frames_ended
            self._parked_after = seen
            self._frame_ended.notify_all()  # settle_gap: the loader is done with this gap
            try:
                self._frame_ended.wait_for(lambda: self._frames_ended != seen or self._idle_waiters > 0,
                                           timeout=self.serving_idle_s)
            finally:
                self._parked_after = None

    def settle_gap(self, timeout: float | None = None) -> bool:
        """Block until the loader is done with the gap after the last frame: it waits for the next frame to
        end, or has nothing left to do. A driver that calls this between frames makes the interleaving of
        frames and loader steps deterministic (tests); False on timeout."""
        with self._lock:
            ended = self._frames_ended
            return self._frame_ended.wait_for(
                lambda: self._tasks_pending == 0 or self._parked_after == ended or self._frames_ended != ended,
                timeout=timeout)

    # ----------------------------------------------------------------- background work
    @contextlib.contextmanager
    def _step(self, name: str, region: str, in_process: bool = True) -> Iterator[None]:
        """Record one loader step with the frame counters around it (``loader_steps``)."""
        with self._lock:
            begun, ended, in_frame = self._frames_begun, self._frames_ended, self._in_frame
        try:
            yield
        finally:
            with self._lock:
                self.loader_steps.append(LoaderStep(name, region, begun, ended, in_frame, self._frames_begun,
                                                    self._frames_ended, in_process))

    def _load(self, region: str, urgent: bool) -> LoadedWeights:
        """``region``'s weights from the source; its work in this process starts between frames."""
        with self._lock:
            begun, ended, in_frame = self._frames_begun, self._frames_ended, self._in_frame
        marks: dict[str, tuple[int, int, bool]] = {}

        def checkpoint() -> None:  # the source is about to work in this process
            self._between_frames()
            with self._lock:
                marks["local"] = (self._frames_begun, self._frames_ended, self._in_frame)

        try:
            return self.source.load(region, self.load_timeout_s, checkpoint, urgent=urgent)
        finally:
            with self._lock:
                now = (self._frames_begun, self._frames_ended)
                local = marks.get("local")
                if not self.source.in_process:
                    until = local[:2] if local is not None else now
                    self.loader_steps.append(LoaderStep("load", region, begun, ended, in_frame, *until, False))
                if local is not None:
                    name = "load" if self.source.in_process else "receive"
                    self.loader_steps.append(LoaderStep(name, region, *local, *now, True))

    def _prepare(self, loaded: LoadedWeights, checkpoint: Callable[[], None] = lambda: None) -> WeightSet:
        runners: dict[str, ModelRunner] = {}
        try:
            for name in MODEL_NAMES:
                if name not in loaded.weights:
                    raise SwapError(f"bundle {loaded.bundle_id}: no weights for model {name!r}")
                checkpoint()
                with self._step(f"prepare {name}", loaded.region):
                    staged = loaded.staged.get(name)
                    runners[name] = (self.backend.prepare(name, loaded.weights[name]) if staged is None else
                                     self.backend.prepare_staged(name, loaded.weights[name], staged))
            checkpoint()
            with self._step("warm up", loaded.region):
                # Warm up the pair as it will run: decision on the perception's own features.
                out = runners["perception"].warmup(self.warmup_iterations)
                feats = out["features"]
                dec = runners["decision"].run({"features": feats, "speed": np.full((1, 1), 10.0, np.float32)})
                if not all(np.all(np.isfinite(v)) for v in dec.values()):
                    raise SwapError(f"bundle {loaded.bundle_id}: non-finite warm-up output of the decision model")
                runners["decision"].warmup(self.warmup_iterations)
        except BaseException:
            for r in runners.values():
                r.close()
            raise
        return WeightSet(loaded.region, loaded.bundle_id, loaded.version, loaded.sha256, runners,
                         dict(loaded.rules))

    def _stage_task(self, region: str, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            # At most two resident sets per model: drop a staged set that is no longer wanted first.
            stale = self._staged
            self._staged = None
            for slot in self.slots.values():
                slot.staged = None
            rec = self._records.setdefault(region, SwapRecord(region))
            rec.load_start_t = self.clock()
            rec.attempts += 1
            rec.prefetched = rec.request_t is None
        if stale is not None:
            self._between_frames()
            with self._step("free", stale.region):
                stale.close()
        try:
            loaded = self._load(region, urgent=not rec.prefetched)
            weight_set = self._prepare(loaded, self._between_frames)
            del loaded  # the shared block is unmapped once the runners hold their own copies
        except SourceClosedError:
            return  # shut down while loading (deactivate, cleanup): not a failure of the region's bundle
        except Exception as exc:  # any failure keeps the serving weights
            reason = describe_error(exc)
            with self._lock:
                attempts = self._attempts.get(region, 0) + 1
                self._attempts[region] = attempts
                delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (attempts - 1))
                self._retry_at[region] = self.clock() + delay
                self.failures[region] = reason
                self.failed_loads += 1
                self.load_timeouts += isinstance(exc, LoadTimeoutError)
                rec.error = reason
                if self._staging_region == region:
                    self._staging_region = None
            _LOG.warning("loading region %r failed (attempt %d, retry in %.1f s): %s", region, attempts, delay, reason)
            return
        with self._lock:
            if generation != self._generation:
                drop = weight_set
            else:
                drop = None
                self._staged = weight_set
                for name, slot in self.slots.items():
                    slot.staged = weight_set.runners[name]
                rec.ready_t = self.clock()
                rec.error = None
                self.failures.pop(region, None)
                self._attempts.pop(region, None)
                self._retry_at.pop(region, None)
                self._staging_region = None
        if drop is not None:
            self._between_frames()
            with self._step("free", drop.region):
                drop.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the loader has nothing in flight or queued (tests, replay in bag time, start-up).
        Meanwhile the loader does not wait for frames: the caller may be the thread that serves them."""
        try:
            barrier = self._executor.submit(lambda: None)  # the loader runs its tasks in order
        except RuntimeError:  # shut down: nothing can be in flight
            return True
        with self._lock:
            self._idle_waiters += 1
            self._frame_ended.notify_all()
        try:
            barrier.result(timeout=timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._idle_waiters -= 1
        return True

    # ----------------------------------------------------------------- state
    @property
    def serving(self) -> WeightSet | None:
        return self._serving

    @property
    def staged(self) -> WeightSet | None:
        return self._staged

    @property
    def target(self) -> str | None:
        return self._target

    def resident_sets(self) -> int:
        """Weight sets held per model: serving, staged, and a replaced one not yet freed."""
        with self._lock:
            return max(slot.resident() for slot in self.slots.values()) + self._retiring

    def status(self) -> dict[str, Any]:
        """Swap state for diagnostics."""
        now = self.clock()
        with self._lock:
            serving, staged = self._serving, self._staged
            if self._staging_region is not None:
                state = f"loading {self._staging_region}"
            elif staged is not None:
                state = f"staged {staged.region}"
            elif self._target is not None and serving is not None and self._target != serving.region:
                state = f"waiting for {self._target}"
            else:
                state = "idle"
            retry = {r: max(0.0, t - now) for r, t in self._retry_at.items()}
            return {
                "state": state,
                "serving_region": serving.region if serving else None,
                "bundle_id": serving.bundle_id if serving else None,
                "bundle_version": serving.version if serving else None,
                "bundle_sha256": serving.sha256 if serving else None,
                "staged_region": staged.region if staged else None,
                "target_region": self._target,
                "swaps": self.swaps,
                "failed_loads": self.failed_loads,
                "load_timeouts": self.load_timeouts,
                "loader": self.source.describe(),
                "failures": dict(self.failures),
                "retry_in_s": retry,
                "commit_failures": self.commit_failures,
                "last_commit_error": self.last_commit_error,
            }

