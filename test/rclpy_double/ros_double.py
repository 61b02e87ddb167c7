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
  callback groups are honoured (a callback runs only when its group can execute it), and the callbacks of a node
  added to a ``MultiThreadedExecutor`` run on that executor's threads (see rclpy/executors.py);
- one fake clock (nanoseconds) for every node; ``set_time``/``advance`` move it and run what is ready: a due
  timer fires once per step (missed periods are skipped, as rcl does), so step by at most the period;
- ``rclpy.init(args=["--ros-args", "-p", "name:=value", "--params-file", "FILE", ...])`` sets parameter
  overrides (values typed as rcl_yaml_param_parser types them): ``-p`` for every node, a parameter file's
  sections for the nodes whose fully qualified name its keys match as rcl matches them (``node_key_matches``:
  ``/**``, ``/*`` wildcards, a key without a leading slash is taken from the root), in rcl's order: one table
  keyed by node name, a key keeping the place of its first appearance (``merged_overrides``); ``-p`` is keyed
  ``/**`` (``-p node:name:=value`` by the node); a node's own ``parameter_overrides`` win over all;
- ``-r __ns:=/ns`` and ``-r __node:=name`` rename every node, and a node's logger is named as rcl names it
  (``<namespace with dots>.<name>``, the name ``/rosout`` knows it by);
- lifecycle publishers drop what is published while they are not activated.

Test controls (this module): ``graph()``, ``set_time``, ``advance``, ``spin_all``, ``published``,
``publisher_of``, ``subscriptions_of``.
"""

from __future__ import annotations

import copy
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any

from param_files import load_parameters_yaml, merged_overrides, node_key_matches, parameters_for  # noqa: F401
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

    def __init__(self, global_overrides: list[tuple[str, Any]] | None = None,
                 remaps: dict[str, str] | None = None) -> None:
        # ("-p", {name: value}) or ("--params-file", parsed YAML), in the order given
        self.override_sources = list(global_overrides or [])
        self.remaps = dict(remaps or {})  # "-r __ns:=/ego", "-r __node:=name": applied to every node
        self.lock = threading.RLock()
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

    def overrides_for(self, fully_qualified_name: str) -> dict[str, Any]:
        """The global parameter overrides that apply to a node, in rcl's order (``merged_overrides``)."""
        return merged_overrides(self.override_sources, fully_qualified_name)

    def add_publisher(self, publisher: Any) -> None:
        with self.lock:
            self._check_types(publisher.topic_name, publisher.msg_type)
            self.publishers.append(publisher)

    def add_subscription(self, subscription: Any) -> None:
        with self.lock:
            self._check_types(subscription.topic_name, subscription.msg_type)
            self.subscriptions.append(subscription)
            # Only a TRANSIENT_LOCAL reader is sent a writer's past samples (DDS durability); a VOLATILE late
            # joiner sees only what is published after it joined.
            from rclpy.qos import DurabilityPolicy

            late_joiner_latched = subscription.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
            for publisher in self.publishers:
                if publisher.topic_name == subscription.topic_name and publisher.latched and late_joiner_latched \
                        and self.compatible(publisher.qos_profile, subscription.qos_profile):
                    for msg in publisher.history:
                        subscription.enqueue(copy.deepcopy(msg))

    def deliver(self, publisher: Any, msg: Any) -> None:
        with self.lock:  # publishers may publish from executor threads
            for subscription in self.subscriptions:
                if subscription.topic_name == publisher.topic_name and \
                        self.compatible(publisher.qos_profile, subscription.qos_profile):
                    # each subscriber gets its own message, as rclpy's (de)serialisation gives it: a change made
                    # after publish() must not reach it
                    subscription.enqueue(copy.deepcopy(msg))

    # ----------------------------------------------------------------------------- execution
    def ready_entity(self, node: Any) -> Any | None:
        """The next entity of ``node`` an executor would take now (due timers first, then subscriptions with a
        message), skipping those whose callback group cannot execute now; None when there is none."""
        with self.lock:
            candidates = [t for t in self.timers if t.node is node and t.due(self.time_ns)]
            candidates += [s for s in self.subscriptions if s.node is node and s.queue]
            for entity in candidates:
                if entity.callback_group.can_execute(entity):
                    return entity
        return None

    def ready_work(self, node: Any) -> Callable[[], None] | None:
        """The next callback of ``node`` an executor would run now, as a callable that runs it, or None."""
        entity = self.ready_entity(node)
        if entity is None:
            return None
        return self._start(entity)

    def _start(self, entity: Any) -> Callable[[], None]:
        """Take ``entity`` (its group is now busy with it; a timer's next period is scheduled, a message taken)
        and return the callable that runs its callback and frees the group."""
        group = entity.callback_group
        with self.lock:
            if not group.beginning_execution(entity):
                raise RuntimeError("callback group refused an entity it said it could execute")
            run = entity.take()

        def execute() -> None:
            try:
                run()
            finally:
                group.ending_execution(entity)

        return execute

    def spin_all(self, max_callbacks: int = 100_000, wait_s: float | None = 30.0) -> int:
        """Run ready callbacks of every node until none is ready; returns how many were started.

        A node in a MultiThreadedExecutor gets its callbacks submitted to that executor's threads; spin_all
        waits for the ones it submitted (not for those still running from an earlier call: a test may hold a
        callback on purpose) and re-raises what a callback raised. ``wait_s`` bounds that wait, so a callback
        that never returns fails the test instead of hanging it (None: do not wait at all)."""
        started, pending = 0, []
        while started < max_callbacks:
            self._check_outstanding()
            work = None
            for node in list(self.nodes):
                entity = self.ready_entity(node)
                if entity is not None:
                    work = (node, entity)
                    break
            if work is None:
                if not pending or wait_s is None:
                    return started
                done, not_done = wait(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
                if not done:
                    raise RuntimeError(f"{len(not_done)} callback(s) did not return within {wait_s} s")
                pending = list(not_done)
                continue
            node, entity = work
            execute = self._start(entity)
            executor = getattr(node, "_executor", None)
            pool = getattr(executor, "pool", None)
            started += 1
            if pool is None:
                execute()
            else:
                future = pool.submit(execute)
                executor.outstanding.append(future)
                pending.append(future)
        raise RuntimeError("callbacks keep scheduling callbacks: more than max_callbacks ran")

    def _check_outstanding(self) -> None:
        """Re-raise the exception of a finished executor callback, as rclpy's MultiThreadedExecutor does on its
        next spin."""
        for node in list(self.nodes):
            executor = getattr(node, "_executor", None)
            if executor is None or not executor.outstanding:
                continue
            for future in [f for f in executor.outstanding if f.done()]:
                executor.outstanding.remove(future)
                future.result()

    def set_time(self, time_ns: int) -> None:
        """Move the clock to ``time_ns`` and run what is ready: each due timer fires once (missed periods are
        skipped, as rcl_timer_call does), so fixed-rate firing needs steps no longer than the period."""
        with self.lock:
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
    _graph = Graph(parse_ros_args(args or []), parse_remaps(args or []))


def parse_ros_args(args: list[str]) -> list[tuple[str, Any]]:
    """``-p name:=value`` and ``--params-file FILE`` after ``--ros-args`` (up to ``--``), in order; any other ROS
    argument is refused. Values get rcl's types (``param_files.load_parameters_yaml``: rcl_yaml_param_parser's
    rules, not PyYAML's). A parameter file that cannot be read or parsed, or an empty ``-p`` value, raises, as rcl
    fails rclpy.init (rcl_parse_yaml_value refuses an empty value)."""
    sources: list[tuple[str, Any]] = []
    if "--ros-args" not in args:
        return sources
    rest = args[args.index("--ros-args") + 1:]
    i = 0
    while i < len(rest) and rest[i] != "--":
        if rest[i] in ("-p", "--param") and i + 1 < len(rest) and ":=" in rest[i + 1]:
            name, text = rest[i + 1].split(":=", 1)
            value = load_parameters_yaml(text, f"-p {rest[i + 1]}")
            if value is None or isinstance(value, dict):
                raise ValueError(f"Couldn't parse parameter override rule: '-p {rest[i + 1]}'")
            # "[node_name:]param_name": without a node name rcl stores the rule under "/**"
            node_key, _, param = name.rpartition(":")
            sources.append(("-p", {node_key or "/**": {param: value}}))
            i += 2
        elif rest[i] in ("-r", "--remap") and i + 1 < len(rest):
            i += 2  # parse_remaps reads (and checks) these
        elif rest[i] == "--params-file" and i + 1 < len(rest):
            with open(rest[i + 1], encoding="utf-8") as stream:
                document = load_parameters_yaml(stream.read(), rest[i + 1])
            parameters_for(document, "/", rest[i + 1])  # the file's shape is checked at init, as rcl does
            sources.append(("--params-file", document))
            i += 2
        else:
            raise NotImplementedError(f"the rclpy test double only parses '-p name:=value' and '--params-file FILE' "
                                      f"ROS arguments, not {rest[i]!r}")
    return sources


def parse_remaps(args: list[str]) -> dict[str, str]:
    """``-r __ns:=/ns`` and ``-r __node:=name`` (or ``--remap``) after ``--ros-args``: rcl applies them to every
    node of the context. Topic remaps and node-prefixed rules are refused (not modelled)."""
    remaps: dict[str, str] = {}
    if "--ros-args" not in args:
        return remaps
    rest = args[args.index("--ros-args") + 1:]
    for i, arg in enumerate(rest):
        if arg == "--":
            break
        if arg in ("-r", "--remap") and i + 1 < len(rest):
            name, _, value = rest[i + 1].partition(":=")
            if name not in ("__ns", "__node") or not value:
                raise NotImplementedError(f"the rclpy test double only models -r __ns:= and -r __node:=, not "
                                          f"{rest[i + 1]!r}")
            if name == "__ns" and not value.startswith("/"):
                raise ValueError(f"Couldn't parse remap rule: '-r {rest[i + 1]}' (a namespace is absolute)")
            remaps[name] = value
    return remaps


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
