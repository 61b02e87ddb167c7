"""Runs node tests on the strict rclpy double, or on a real rclpy where one is importable (a sourced ROS 2
workspace): ``with ros_environment() as env`` installs the double only when ``import rclpy`` fails, and
``env.harness()`` gives the same small API on both:

    make(factory, **parameters)      a node with parameter overrides and use_sim_time
    make_multi_threaded(factory, num_threads, **parameters)
                                     the same, spun by a MultiThreadedExecutor as the node's main() does
                                     (double only)
    publisher(topic, type, qos)      a publisher of the harness's own node; publish(pub, msg) sends and spins
    recorder(topic, type, qos)       a list that collects what arrives on a topic
    set_time(s) / advance(dt, step)  the ROS time (sim time) of every node; advance steps so timers fire at rate
    spin(until=None)                 run ready callbacks (double: until none; real: until ``until()`` or timeout)

The real-rclpy path drives time by publishing rosgraph_msgs/Clock on /clock; it has not been exercised on a
machine without ROS 2 and is kept deliberately small.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DOUBLE_DIR = Path(__file__).resolve().parent
_DOUBLE_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "nav_msgs", "geometry_msgs",
                    "ackermann_msgs", "carla_msgs", "diagnostic_msgs", "builtin_interfaces", "tf2_msgs", "ros_double",
                    "rosidl_messages", "param_files", "launch", "launch_ros")
_NODE_MODULES = ("regionadapt_ros.nodes.driving_node", "regionadapt_ros.nodes.region_manager_node",
                 "regionadapt_ros.nodes._msgs")


def real_rclpy_available() -> bool:
    spec = importlib.util.find_spec("rclpy")
    return spec is not None and spec.origin is not None and DOUBLE_DIR not in Path(spec.origin).resolve().parents


def _purge(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            module = sys.modules.pop(name)
            # ``from package import module`` reads the package's attribute first: drop it too.
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name)
            if parent is not None and getattr(parent, child, None) is module:
                delattr(parent, child)


@contextlib.contextmanager
def double_on_path(packages: tuple[str, ...] = _DOUBLE_PACKAGES, distro: str = "humble") -> Iterator[None]:
    """Put the double first on sys.path for the duration (real modules of those names are set aside and
    restored afterwards), serving the message definitions of ``distro`` (``ROS_DISTRO``, as a sourced ROS 2
    workspace sets it)."""
    saved = {n: m for n, m in sys.modules.items() if any(n == p or n.startswith(p + ".") for p in packages)}
    saved_distro = os.environ.get("ROS_DISTRO")
    _purge(packages + _NODE_MODULES)
    os.environ["ROS_DISTRO"] = distro
    sys.path.insert(0, str(DOUBLE_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(DOUBLE_DIR))
        _purge(packages + _NODE_MODULES)
        sys.modules.update(saved)
        if saved_distro is None:
            os.environ.pop("ROS_DISTRO", None)
        else:
            os.environ["ROS_DISTRO"] = saved_distro


class Environment:
    """``real``: a real rclpy is in use; ``distro``: the ROS 2 distribution whose message definitions the nodes
    get (a real workspace's ROS_DISTRO)."""

    def __init__(self, real: bool, distro: str) -> None:
        self.real = real
        self.distro = distro

    def harness(self) -> RealHarness | DoubleHarness:
        return RealHarness() if self.real else DoubleHarness()


@contextlib.contextmanager
def ros_environment(distro: str = "humble") -> Iterator[Environment]:
    """The double with ``distro``'s message definitions, or the real rclpy when one is importable (then only
    the sourced distribution is available: other distros are skipped by the caller)."""
    if real_rclpy_available():
        yield Environment(real=True, distro=os.environ.get("ROS_DISTRO", ""))
        return
    with double_on_path(distro=distro):
        yield Environment(real=False, distro=distro)


def _overrides(parameters: dict[str, Any]) -> list[Any]:
    from rclpy.parameter import Parameter

    values = {"use_sim_time": True, **parameters}
    return [Parameter(name, value=value) for name, value in values.items()]


class _Base:
    def __init__(self) -> None:
        import rclpy
        from rclpy.node import Node

        from regionadapt_ros.core.msgconv import rclpy_types

        rclpy.init()
        self.types = rclpy_types()
        self.node = Node("test_harness")
        self.nodes: list[Any] = []
        self.now = 0.0

    def make(self, factory: Callable[..., Any], **parameters: Any) -> Any:
        node = factory(parameter_overrides=_overrides(parameters))
        self.nodes.append(node)
        self.spin()
        return node

    def publisher(self, topic: str, type_name: str, qos: Any) -> Any:
        return self.node.create_publisher(self.types(type_name), topic, qos)

    def publish(self, publisher: Any, msg: Any) -> None:
        publisher.publish(msg)
        self.spin()

    def recorder(self, topic: str, type_name: str, qos: Any) -> list[Any]:
        received: list[Any] = []
        self.node.create_subscription(self.types(type_name), topic, received.append, qos)
        self.spin()
        return received

    def advance(self, dt: float, step: float = 0.01) -> None:
        end = self.now + dt
        while self.now < end - 1e-9:
            self.set_time(min(end, self.now + step))

    def close(self) -> None:
        import rclpy

        for node in self.nodes:
            close = getattr(type(node), "close", None)
            if close is not None:
                node.close()
            node.destroy_node()
        self.node.destroy_node()
        rclpy.try_shutdown()


class DoubleHarness(_Base):
    real = False

    def __init__(self) -> None:
        super().__init__()
        self.executors: list[Any] = []

    def make_multi_threaded(self, factory: Callable[..., Any], num_threads: int, **parameters: Any) -> Any:
        from rclpy.executors import MultiThreadedExecutor

        node = factory(parameter_overrides=_overrides(parameters))
        self.nodes.append(node)
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        self.executors.append(executor)
        self.spin()
        return node

    def dispatch(self) -> None:
        """Start every ready callback without waiting for those that run on executor threads."""
        import ros_double

        ros_double.graph().spin_all(wait_s=None)

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait for every callback still running on an executor thread (re-raising what it raised), then run
        what became ready."""
        from concurrent.futures import wait

        for executor in self.executors:
            _, not_done = wait(list(executor.outstanding), timeout=timeout_s)
            assert not not_done, f"{len(not_done)} callback(s) still running after {timeout_s} s"
        self.spin()

    def close(self) -> None:
        for executor in self.executors:
            executor.shutdown()
        super().close()

    def set_time(self, seconds: float) -> None:
        import ros_double

        self.now = seconds
        ros_double.set_time(seconds)

    def spin(self, until: Callable[[], bool] | None = None, timeout_s: float = 5.0) -> None:
        import ros_double

        ros_double.spin_all()
        if until is not None:
            assert until(), "condition not reached after all ready callbacks ran"


class RealHarness(_Base):
    real = True

    def __init__(self) -> None:
        super().__init__()
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile

        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.clock_pub = self.node.create_publisher(self.types("rosgraph_msgs/msg/Clock"), "/clock",
                                                    QoSProfile(depth=1))

    def make(self, factory: Callable[..., Any], **parameters: Any) -> Any:
        node = factory(parameter_overrides=_overrides(parameters))
        self.nodes.append(node)
        self.executor.add_node(node)
        self.set_time(self.now)
        return node

    def set_time(self, seconds: float) -> None:
        from regionadapt_ros.core.msgconv import build_time

        self.now = seconds
        target_ns = round(seconds * 1e9)
        self.clock_pub.publish(self.types("rosgraph_msgs/msg/Clock")(clock=build_time(self.types, seconds)))
        self.spin(until=lambda: all(abs(n.get_clock().now().nanoseconds - target_ns) < 1000 for n in self.nodes))

    def spin(self, until: Callable[[], bool] | None = None, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + (timeout_s if until is not None else 0.05)
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.005)
            if until is not None and until():
                return
        if until is not None:
            raise AssertionError(f"condition not reached within {timeout_s} s")
