"""The strict rclpy test double (see ros_double.py next to this package for what it models).

Module-level functions as in rclpy: init, shutdown, try_shutdown, ok, spin_once, spin. There is no wall clock to
wait on, so ``spin`` runs every ready callback and then raises KeyboardInterrupt, as Ctrl-C would end it.
"""

from __future__ import annotations

from typing import Any

import ros_double
from ros_double import unsupported


def init(*, args: list[str] | None = None, context: Any = None, domain_id: int | None = None,
         signal_handler_options: Any = None) -> None:
    if context is not None or domain_id is not None:
        raise NotImplementedError("the rclpy test double has one default context and no domain id")
    ros_double._init_graph(args)


def shutdown(*, context: Any = None, uninstall_handlers: bool | None = None) -> None:
    ros_double._drop_graph()


def try_shutdown(*, context: Any = None) -> None:
    if ros_double.graph_is_up():
        ros_double._drop_graph()


def ok(*, context: Any = None) -> bool:
    return ros_double.graph_is_up()


def spin_once(node: Any, *, executor: Any = None, timeout_sec: float | None = None) -> None:
    if executor is not None:
        executor.add_node(node)
    work = ros_double.graph().ready_work(node)
    if work is not None:
        work()


def spin(node: Any, executor: Any = None) -> None:
    """Runs every ready callback (on ``executor``'s threads when it is a MultiThreadedExecutor), then raises
    KeyboardInterrupt."""
    if executor is not None:
        executor.add_node(node)
    ros_double.graph().spin_all()
    raise KeyboardInterrupt


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.{name}")
