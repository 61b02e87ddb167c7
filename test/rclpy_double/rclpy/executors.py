"""rclpy.executors for the test double: SingleThreadedExecutor and MultiThreadedExecutor with rclpy's
signatures (humble and jazzy), and the exceptions a node's main() catches.

The double has no wall clock to wait on: callbacks become ready when the test moves the clock or publishes, and
the graph's ``spin_all`` runs them. A node added to a MultiThreadedExecutor has its callbacks run on that
executor's thread pool, as rclpy's does: a callback is taken only when its callback group can execute it (one at
a time per mutually exclusive group), and a callback that blocks holds only its own group, so callbacks of other
groups go on running. A node in a SingleThreadedExecutor (or none) runs its callbacks one after the other on the
spinning thread. ``spin()`` runs every ready callback and then raises KeyboardInterrupt, as Ctrl-C would end it.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ros_double
from ros_double import unsupported


class ExternalShutdownException(Exception):  # noqa: N818 - rclpy's name
    """The context was shut down from outside while spinning."""


class ShutdownException(Exception):  # noqa: N818 - rclpy's name
    """Signal that the executor was shut down."""


class Executor:
    def __init__(self, *, context: Any = None) -> None:
        if context is not None:
            raise NotImplementedError("the rclpy test double has one default context")
        self._nodes: list[Any] = []
        self._is_shutdown = False
        self.pool: ThreadPoolExecutor | None = None  # double only: where callbacks run (None: the caller)
        self.outstanding: list[Any] = []  # double only: futures of callbacks submitted and not yet checked

    def add_node(self, node: Any) -> bool:
        if self._is_shutdown:
            raise ShutdownException()
        if node in self._nodes:
            return False
        previous = getattr(node, "_executor", None)
        if previous is not None and previous is not self:
            previous.remove_node(node)
        self._nodes.append(node)
        node._executor = self
        return True

    def remove_node(self, node: Any) -> None:
        if node in self._nodes:
            self._nodes.remove(node)
            node._executor = None

    def get_nodes(self) -> list[Any]:
        return list(self._nodes)

    def spin(self) -> None:
        if self._is_shutdown:
            raise ShutdownException()
        ros_double.graph().spin_all()
        raise KeyboardInterrupt

    def spin_once(self, timeout_sec: float | None = None) -> None:
        ros_double.graph().spin_all(max_callbacks=1)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        self._is_shutdown = True
        for node in list(self._nodes):
            self.remove_node(node)
        if self.pool is not None:
            # Humble waits for the callbacks in progress; Jazzy's shutdown (rclpy up to 7.1.11) sets _is_shutdown
            # and then tests "if not self._is_shutdown" before waiting, so it returns while callbacks still run
            # (rclpy/executors.py, Executor.shutdown, jazzy branch). 7.1.12 waits; the double keeps the older,
            # harsher behaviour, which the nodes must survive on a Jazzy install not yet updated.
            self.pool.shutdown(wait=ros_double.DISTRO == "humble")
        return True

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"rclpy.executors.Executor.{name}")


class SingleThreadedExecutor(Executor):
    def __init__(self, *, context: Any = None) -> None:
        super().__init__(context=context)


class MultiThreadedExecutor(Executor):
    def __init__(self, num_threads: int | None = None, *, context: Any = None) -> None:
        super().__init__(context=context)
        if num_threads is None:
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
        if num_threads == 1 and ros_double.DISTRO != "humble":
            warnings.warn("MultiThreadedExecutor is used with a single thread.\n"
                          "Use the SingleThreadedExecutor instead.", stacklevel=2)
        self.num_threads = num_threads
        self.pool = ThreadPoolExecutor(num_threads, thread_name_prefix="rclpy_double")


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.executors.{name}")
