"""A pool of worker processes that Ctrl-C stops: the jobs not yet started are cancelled and the workers do not
print tracebacks of their own.

``concurrent.futures.ProcessPoolExecutor`` used as a context manager waits, on any exception, for every job
already submitted: after Ctrl-C a long generation ran on to its end. A terminal also sends SIGINT to the workers
(one process group), each of which printed a KeyboardInterrupt traceback. Here the workers ignore SIGINT, so the
parent alone decides, and an exception in the parent cancels what has not started; the jobs that are running
(one per worker) finish, so no file they write is left half-written.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


def _ignoring_sigint(initializer: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()


@contextmanager
def process_pool(workers: int, initializer: Callable[[], None] | None = None) -> Iterator[ProcessPoolExecutor]:
    """``workers`` spawned processes (a clean interpreter each: safe whatever threads torch or OpenCV run here; a
    worker that dies fails the pool instead of hanging it), each running ``initializer`` first."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_ignoring_sigint,
                               initargs=(initializer,))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
