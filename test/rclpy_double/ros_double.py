"""State and test controls of the strict rclpy double (the ``rclpy`` package next to this module).

The double implements only the rclpy API the product's nodes use, with rclpy's signatures (Humble and Jazzy),
and raises AttributeError / NotImplementedError naming anything else, so a node that strays outside that API
fails here instead of on the vehicle. Message packages (``sensor_msgs.msg`` ...) are thin modules whose classes
have the semantics of rosidl-generated classes (``rosidl_messages.py``: field checks, byte and array types, the
.msg defaults) for the distribution ``ROS_DISTRO`` names (humble or jazzy), with the field lists of that
distribution's rosbags type store (plus carla_msgs and ackermann_msgs).

What the double models (enough to test QoS and timing decisions):
- one graph per ``rclpy.init``: publishers and subscriptions of all nodes, matched by resolved topic name and
  QoS compatibility (a RELIABLE subscription gets nothing from a BEST_EFFORT publisher; a TRANSIENT_LOCAL
  subscription nothing from a VOLATILE publisher), a keep-last queue of ``depth`` per subscription (older
  messages are dropped and counted), and late-joiner delivery from TRANSIENT_LOCAL publishers;
- delivery is asynchronous as in ROS: ``publish`` queues, ``rclpy.spin_once`` / ``spin_all`` run callbacks;
- one fake clock (nanoseconds) for every node; ``set_time``/``advance`` move it and run what is ready: a due
  timer fires once per step (missed periods are skipped, as rcl does), so step by at most the period;
- ``rclpy.init(args=["--ros-args", "-p", "name:=value", ...])`` sets parameter overrides for every node (values
  parsed as YAML, as rcl does); a node's own ``parameter_overrides`` win;
- lifecycle publishers drop what is published while they are not activated.

Test controls (this module): ``graph()``, ``set_time``, ``advance``, ``spin_all``, ``published``,
``publisher_of``, ``subscriptions_of``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any

from rosidl_messages import DISTRO, STORE, is_message_class, message_class, message_namespace  # noqa: F401

_TOPIC = re.compile(r"^[~/]?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def unsupported(what: str) -> AttributeError:
    return AttributeError(f"the rclpy test double does not implement {what}; the nodes must stay within the API it "
                          "implements (add it to test/rclpy_double with rclpy's real signature if it is needed)")


def missing_message(package: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:  # noqa: N807 - becomes a module's __getattr__
        raise AttributeError(f"{package}.msg.{name} is not in the ROS 2 {DISTRO} type store the double serves")

    return __getattr__


def resolve_topic(topic: str, namespace: str, node_name: str) -> str:
    """rcl's expansion of a topic name: absolute stays, relative gets the namespace, ``~`` the node's name."""
    if not isinstance(topic, str) or not _TOPIC.match(topic) or topic.endswith("/"):
        raise ValueError(f"invalid topic name {topic!r}")
    if topic.startswith("/"):
        return topic
    base = namespace.rstrip("/")
    if topic.startswith("~"):
        return f"{base}/{node_name}{topic[1:]}"
    return f"{base}/{topic}"


class Graph:
    """Everything one ``rclpy.init`` context holds."""

    def __init__(self, global_overrides: dict[str, Any] | None = None) -> None:
        self.global_overrides = dict(global_overrides or {})
        self.time_ns = 0
        self.nodes: list[Any] = []
        self.publishers: list[Any] = []
        self.subscriptions: list[Any] = []
        self.timers: list[Any] = []

    # ----------------------------------------------------------------------------- matching
    @staticmethod
    def compatible(publisher_qos: Any, subscription_qos: Any) -> bool:
        from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

        pub_reliable = publisher_qos.reliability != ReliabilityPolicy.BEST_EFFORT
        sub_reliable = subscription_qos.reliability == ReliabilityPolicy.RELIABLE
        pub_latched = publisher_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        sub_latched = subscription_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        return (pub_reliable or not sub_reliable) and (pub_latched or not sub_latched)

    def _check_types(self, topic: str, msg_type: type) -> None:
        for entity in (*self.publishers, *self.subscriptions):
            if entity.topic_name == topic and entity.msg_type is not msg_type:
                raise TypeError(f"topic {topic} is used with two message types: {entity.msg_type._MSGTYPE} and "
                                f"{msg_type._MSGTYPE}")

    def add_publisher(self, publisher: Any) -> None:
        self._check_types(publisher.topic_name, publisher.msg_type)
        self.publishers.append(publisher)

    def add_subscription(self, subscription: Any) -> None:
        self._check_types(subscription.topic_name, subscription.msg_type)
        self.subscriptions.append(subscription)
        for publisher in self.publishers:
            if publisher.topic_name == subscription.topic_name and publisher.latched and \
                    self.compatible(publisher.qos_profile, subscription.qos_profile):
                for msg in publisher.history:
                    subscription.enqueue(msg)

    def deliver(self, publisher: Any, msg: Any) -> None:
        for subscription in self.subscriptions:
            if subscription.topic_name == publisher.topic_name and \
                    self.compatible(publisher.qos_profile, subscription.qos_profile):
                subscription.enqueue(msg)

    # ----------------------------------------------------------------------------- execution
    def ready_work(self, node: Any) -> Callable[[], None] | None:
        """The next callback of ``node`` that an executor would run now (due timers first), or None."""
        for timer in self.timers:
            if timer.node is node and timer.due(self.time_ns):
                return timer.fire
        for subscription in self.subscriptions:
            if subscription.node is node and subscription.queue:
                return subscription.take
        return None

    def spin_all(self, max_callbacks: int = 100_000) -> int:
        """Run ready callbacks of every node until none is ready; returns how many ran."""
        ran = 0
        while ran < max_callbacks:
            work = next((w for w in (self.ready_work(n) for n in list(self.nodes)) if w is not None), None)
            if work is None:
                return ran
            work()
            ran += 1
        raise RuntimeError("callbacks keep scheduling callbacks: more than max_callbacks ran")

    def set_time(self, time_ns: int) -> None:
        """Move the clock to ``time_ns`` and run what is ready: each due timer fires once (missed periods are
        skipped, as rcl_timer_call does), so fixed-rate firing needs steps no longer than the period."""
        if time_ns < self.time_ns:
            # Time going back (a looped bag): timers restart from the new time, as rcl's jump handling does.
            for timer in self.timers:
                timer.restart(time_ns)
        self.time_ns = time_ns
        self.spin_all()


_graph: Graph | None = None


def graph() -> Graph:
    if _graph is None:
        raise RuntimeError("rclpy.init() has not been called (or rclpy.shutdown() was)")
    return _graph


def _init_graph(args: list[str] | None) -> None:
    global _graph
    if _graph is not None:
        raise RuntimeError("rclpy.init() called twice without rclpy.shutdown()")
    _graph = Graph(parse_ros_args(args or []))


def parse_ros_args(args: list[str]) -> dict[str, Any]:
    """``-p name:=value`` pairs after ``--ros-args`` (up to ``--``); any other ROS argument is refused."""
    import yaml

    overrides: dict[str, Any] = {}
    if "--ros-args" not in args:
        return overrides
    rest = args[args.index("--ros-args") + 1:]
    i = 0
    while i < len(rest) and rest[i] != "--":
        if rest[i] in ("-p", "--param") and i + 1 < len(rest) and ":=" in rest[i + 1]:
            name, text = rest[i + 1].split(":=", 1)
            overrides[name] = yaml.safe_load(text) if text else ""
            i += 2
        else:
            raise NotImplementedError(f"the rclpy test double only parses '-p name:=value' ROS arguments, not "
                                      f"{rest[i]!r}")
    return overrides


def _drop_graph() -> None:
    global _graph
    if _graph is None:
        raise RuntimeError("rclpy.shutdown() without rclpy.init()")
    _graph = None


def graph_is_up() -> bool:
    return _graph is not None


# --------------------------------------------------------------------------------- test controls
def set_time(seconds: float) -> None:
    """Set the clock of every node (ROS time) to ``seconds``, firing due timers on the way."""
    graph().set_time(int(round(seconds * 1e9)))


def advance(seconds: float) -> None:
    graph().set_time(graph().time_ns + int(round(seconds * 1e9)))


def now() -> float:
    return graph().time_ns * 1e-9


def spin_all() -> int:
    return graph().spin_all()


def publisher_of(node: Any, topic: str) -> Any:
    """The publisher ``node`` has on ``topic`` (relative names are resolved in the node's namespace)."""
    name = resolve_topic(topic, node.get_namespace(), node.get_name())
    found = [p for p in graph().publishers if p.node is node and p.topic_name == name]
    if len(found) != 1:
        raise LookupError(f"{node.get_name()} has {len(found)} publishers on {name}")
    return found[0]


def subscriptions_of(node: Any, topic: str | None = None) -> list[Any]:
    subs = [s for s in graph().subscriptions if s.node is node]
    if topic is not None:
        name = resolve_topic(topic, node.get_namespace(), node.get_name())
        subs = [s for s in subs if s.topic_name == name]
    return subs


def published(node: Any, topic: str) -> list[Any]:
    """Every message ``node`` published on ``topic`` (only what went out: not what an inactive lifecycle
    publisher dropped)."""
    return list(publisher_of(node, topic).sent)


def new_queue(depth: int | None) -> deque:
    return deque(maxlen=depth)
