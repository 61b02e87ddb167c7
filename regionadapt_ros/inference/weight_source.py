"""Where the hot-swap manager gets a region's weights from: the interface, and the in-process variant.

A ``WeightSource`` turns a region id into ``LoadedWeights`` within a time limit, or raises. Two exist:
- ``LoaderProcess`` (``inference.loader_process``): the loader runs in a separate process at a lower OS
  priority and hands the weights over in shared memory; what the node, the replay and the demo use.
- ``ThreadWeightSource`` (here): the loader callable runs on a helper thread of this process. For loaders that
  cannot be rebuilt in another process (closures in tests, embedding code); a load that blocks is abandoned
  after the time limit (a thread cannot be killed), so the swap manager is never wedged, but the blocked
  thread and what it holds stay until the call returns, if ever.
"""

from __future__ import annotations

import abc
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from regionadapt_ros.inference.spawn_spec import is_spawnable

if TYPE_CHECKING:
    from regionadapt_ros.inference.swap import LoadedWeights


class LoadError(RuntimeError):
    """A load failed for a reason the source reports as a message (``kind``: the original error type)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LoadTimeoutError(LoadError):
    """A load did not finish within its time limit (a bundle file that blocks or never ends, a hung disk)."""

    def __init__(self, message: str) -> None:
        super().__init__("LoadTimeout", message)


class SourceClosedError(LoadError):
    """The source was closed while a load was waiting (session shutting down)."""

    def __init__(self, message: str = "the weight loader was closed") -> None:
        super().__init__("SourceClosed", message)


def describe_error(exc: BaseException) -> str:
    """'Type: message' of a load failure, with the original type for errors that crossed a process."""
    return f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}"


def _no_checkpoint() -> None:
    return None


class WeightSource(abc.ABC):
    """Region id → ``LoadedWeights``, bounded in time. Used by one loader thread at a time; ``close`` may be
    called from any thread and makes a waiting ``load`` raise ``SourceClosedError`` at once.

    ``in_process``: whether the loader's own work (reading, verifying, resolving) runs in this process."""

    in_process: bool = True

    @abc.abstractmethod
    def load(self, region: str, timeout_s: float, checkpoint: Callable[[], None] = _no_checkpoint,
             urgent: bool = True) -> LoadedWeights:
        """Read, verify and resolve ``region``'s weights; LoadTimeoutError after ``timeout_s`` seconds.
        ``checkpoint`` is called right before the source starts working in this process (the swap manager
        waits there for the gap between two frames). ``urgent``: the region is already active and waits for
        its weights; False for a prefetch, which a source may run at a lower priority."""

    def start(self, timeout_s: float) -> None:
        """Get ready to load (start a process); called before the first load. Default: nothing to do."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop loading and free what the source holds. Idempotent; always returns."""

    def describe(self) -> str:
        return type(self).__name__


class ThreadWeightSource(WeightSource):
    """Runs ``loader`` on a helper thread per load, so that a load which never returns only costs that thread."""

    def __init__(self, loader: Callable[[str], LoadedWeights]) -> None:
        self.loader = loader
        self.abandoned = 0  # loads given up after their time limit whose thread may still be running
        self._lock = threading.Lock()
        self._waiting: set[threading.Event] = set()
        self._closed = False

    def load(self, region: str, timeout_s: float, checkpoint: Callable[[], None] = _no_checkpoint,
             urgent: bool = True) -> LoadedWeights:
        checkpoint()
        done = threading.Event()
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["value"] = self.loader(region)
            except BaseException as exc:  # handed to the waiting thread, which raises it
                box["error"] = exc
            finally:
                done.set()

        with self._lock:
            if self._closed:
                raise SourceClosedError()
            self._waiting.add(done)
        try:
            threading.Thread(target=run, name=f"regionadapt-load-{region}", daemon=True).start()
            finished = done.wait(timeout_s)
        finally:
            with self._lock:
                self._waiting.discard(done)
                closed = self._closed
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        if "value" in box:
            return box["value"]  # type: ignore[return-value]
        if closed:
            raise SourceClosedError()
        assert not finished
        self.abandoned += 1
        raise LoadTimeoutError(f"loading region {region!r} did not finish within {timeout_s:g} s (a bundle file "
                               "that blocks or never ends?); it was abandoned and later loads go on")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting = list(self._waiting)
        for event in waiting:  # wake the loader thread; the helper thread, if blocked, is left behind
            event.set()

    def describe(self) -> str:
        return "loader thread in the serving process"


def _can_spawn() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")


def make_weight_source(loader: Callable[[str], LoadedWeights] | WeightSource, isolation: str = "auto",
                       **process_options: Any) -> WeightSource:
    """The ``WeightSource`` for ``loader``: a ``WeightSource`` as it is; a loader callable in a ``LoaderProcess``
    ("process"), on a ``ThreadWeightSource`` ("thread"), or "auto": in a process when it says it can be
    rebuilt there (``spawnable = True``, as ``inference.loading.BundleLoader``) and this OS can pass file
    descriptors over Unix sockets, else in a thread. ``stages`` (process only): the backend's loader stages,
    or a callable returning them (``InferenceBackend.loader_stages``), only called when a process is used."""
    if isinstance(loader, WeightSource):
        return loader
    if isolation == "auto":
        isolation = "process" if is_spawnable(loader) and _can_spawn() else "thread"
    stages = process_options.pop("stages", None)
    if isolation == "thread":
        return ThreadWeightSource(loader)  # the backend does all its work in prepare, on the loader thread
    from regionadapt_ros.inference.loader_process import LoaderProcess

    return LoaderProcess(loader, stages=stages() if callable(stages) else stages, **process_options)
