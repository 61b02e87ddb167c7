"""rclpy.node.Node for the test double: the subset of rclpy's Node the product's nodes use, with rclpy's
signatures and checks; every other attribute raises AttributeError naming it."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import ros_double
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from ros_double import unsupported

import rclpy.logging as rclpy_logging
from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.clock import ROSClock
from rclpy.exceptions import (
    InvalidParameterException,
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterAlreadyDeclaredException,
    ParameterNotDeclaredException,
)
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile

PARAM_REL_TOL = 1e-6
_LOG_KWARGS = {"throttle_duration_sec", "throttle_time_source_type", "skip_first", "once"}


class Logger:
    """RcutilsLogger's severity methods; records (severity, message) for tests and forwards to logging."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[tuple[str, str]] = []
        self._python = logging.getLogger(f"rclpy_double.{name}")

    def _log(self, severity: str, message: str, **kwargs: Any) -> bool:
        unknown = set(kwargs) - _LOG_KWARGS
        if unknown:
            raise TypeError(f"unexpected logging keyword(s): {', '.join(sorted(unknown))}")
        if not isinstance(message, str):
            raise TypeError(f"log message must be a str, got {type(message).__name__}")
        self.records.append((severity, message))
        self._python.log(getattr(logging, severity if severity != "FATAL" else "CRITICAL"), message)
        return True

    def debug(self, message: str, **kwargs: Any) -> bool:
        return self._log("DEBUG", message, **kwargs)

    def info(self, message: str, **kwargs: Any) -> bool:
        return self._log("INFO", message, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> bool:
        return self._log("WARNING", message, **kwargs)

    warn = warning

    def error(self, message: str, **kwargs: Any) -> bool:
        return self._log("ERROR", message, **kwargs)

    def fatal(self, message: str, **kwargs: Any) -> bool:
        return self._log("FATAL", message, **kwargs)

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"RcutilsLogger.{name}")


def _check_msg_type(msg_type: Any) -> None:
    if not ros_double.is_message_class(msg_type):
        raise TypeError(f"msg_type must be a ROS message class, got {msg_type!r}")


def _qos(qos_profile: Any) -> QoSProfile:
    # rclpy accepts a QoSProfile or a history depth.
    if isinstance(qos_profile, QoSProfile):
        return qos_profile
    if isinstance(qos_profile, int) and not isinstance(qos_profile, bool):
        return QoSProfile(depth=qos_profile)
    raise TypeError(f"Expected QoSProfile or int, but received {type(qos_profile)!r}")


def _no_extras(what: str, **extras: Any) -> None:
    given = sorted(k for k, v in extras.items() if v is not None and v is not False)
    if given:
        raise NotImplementedError(f"the rclpy test double does not model {what}({', '.join(given)}=...)")


def _group(node: Node, callback_group: Any) -> CallbackGroup:
    """The entity's callback group: the given one, or the node's default (mutually exclusive) group."""
    if callback_group is None:
        return node.default_callback_group
    if not isinstance(callback_group, CallbackGroup):
        raise TypeError(f"callback_group must be a rclpy.callback_groups.CallbackGroup, got {callback_group!r}")
    return callback_group


def _integer_range_result(parameter: Parameter, integer_range: Any) -> SetParametersResult:
    """rclpy.Node._apply_integer_range (humble and jazzy): either bound is always accepted, a value between them
    only when it is a whole number of ``step`` from the lower bound (step 0: any)."""
    low = min(integer_range.from_value, integer_range.to_value)
    high = max(integer_range.from_value, integer_range.to_value)
    value = parameter.value
    if value in (low, high):
        return SetParametersResult(successful=True)
    if not low < value < high:
        return SetParametersResult(successful=False, reason=(
            f"Parameter {parameter.name} out of range. Min: {low}, Max: {high}, value: {value}"))
    if integer_range.step != 0 and (value - low) % integer_range.step != 0:
        return SetParametersResult(successful=False, reason=(
            f"The parameter value for {parameter.name} is not a valid step. Min: {low}, max: {high}, "
            f"value: {value}, step: {integer_range.step}"))
    return SetParametersResult(successful=True)


def _floating_point_range_result(parameter: Parameter, floating_point_range: Any) -> SetParametersResult:
    """rclpy.Node._apply_floating_point_range (humble and jazzy): a value within PARAM_REL_TOL of either bound is
    accepted; one between them only when it is within PARAM_REL_TOL of a whole number of ``step`` from the lower
    bound (step 0.0: any). NaN is refused (it is neither close to a bound nor between them)."""
    low = min(floating_point_range.from_value, floating_point_range.to_value)
    high = max(floating_point_range.from_value, floating_point_range.to_value)
    value = parameter.value
    if math.isclose(value, low, rel_tol=PARAM_REL_TOL) or math.isclose(value, high, rel_tol=PARAM_REL_TOL):
        return SetParametersResult(successful=True)
    if not low < value < high:
        return SetParametersResult(successful=False, reason=(
            f"Parameter {parameter.name} out of range Min: {low}, Max: {high}, value: {value}"))
    step = floating_point_range.step
    if step != 0.0 and not math.isclose(low + round((value - low) / step) * step, value, rel_tol=PARAM_REL_TOL):
        return SetParametersResult(successful=False, reason=(
            f"The parameter value for {parameter.name} is not close enough to a valid step. Min: {low}, "
            f"max: {high}, value: {value}, step: {step}"))
    return SetParametersResult(successful=True)


class Publisher:
    """rclpy.publisher.Publisher: ``msg_type``, ``topic``, ``qos_profile``, ``topic_name``, ``publish``."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos_profile: QoSProfile) -> None:
        self.node = node
        self.msg_type = msg_type
        self.topic = topic
        self.qos_profile = qos_profile
        self.topic_name = ros_double.resolve_topic(topic, node.get_namespace(), node.get_name())
        self.sent: list[Any] = []  # double only: what went out
        self.latched = qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        self.history: deque = deque(maxlen=max(1, qos_profile.depth))
        self.destroyed = False

    def publish(self, msg: Any) -> None:
        if self.destroyed:
            raise RuntimeError(f"publish on destroyed publisher of {self.topic_name}")
        if not isinstance(msg, self.msg_type):
            raise TypeError(f"Expected {self.msg_type}, got {type(msg)}")
        self.sent.append(msg)
        if self.latched:
            self.history.append(msg)
        ros_double.graph().deliver(self, msg)

    def get_subscription_count(self) -> int:
        graph = ros_double.graph()
        return sum(1 for s in graph.subscriptions if s.topic_name == self.topic_name
                   and graph.compatible(self.qos_profile, s.qos_profile))

    def destroy(self) -> None:
        self.destroyed = True

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"Publisher.{name}")


class Subscription:
    """rclpy.subscription.Subscription: ``msg_type``, ``topic``, ``callback``, ``qos_profile``, ``topic_name``."""

    def __init__(self, node: Node, msg_type: type, topic: str, callback: Callable[[Any], None],
                 qos_profile: QoSProfile, callback_group: CallbackGroup) -> None:
        self.node = node
        self.callback_group = callback_group
        callback_group.add_entity(self)
        self.msg_type = msg_type
        self.topic = topic
        self.callback = callback
        self.qos_profile = qos_profile
        self.topic_name = ros_double.resolve_topic(topic, node.get_namespace(), node.get_name())
        keep_last = qos_profile.history != HistoryPolicy.KEEP_ALL
        self.queue: deque = deque(maxlen=max(1, qos_profile.depth) if keep_last else None)
        self.dropped = 0  # double only: messages pushed out of the keep-last queue unread
        self.received = 0

    def enqueue(self, msg: Any) -> None:
        if self.queue.maxlen is not None and len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(msg)

    def take(self) -> Callable[[], None]:
        """Take the oldest message (executor's take); returns the call of the callback with it."""
        msg = self.queue.popleft()
        self.received += 1
        return lambda: self.callback(msg)

    def destroy(self) -> None:
        self.queue.clear()

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"Subscription.{name}")


class Timer:
    """rclpy.timer.Timer on the double's clock: ``callback``, ``timer_period_ns``, ``cancel``, ``reset``,
    ``is_canceled``."""

    def __init__(self, node: Node, callback: Callable[[], None], period_ns: int, callback_group: CallbackGroup,
                 autostart: bool = True) -> None:
        self.node = node
        self.callback = callback
        self.timer_period_ns = period_ns
        self.callback_group = callback_group
        callback_group.add_entity(self)
        self.canceled = not autostart
        self.restart(ros_double.graph().time_ns)

    def restart(self, now_ns: int) -> None:
        self.next_due_ns = now_ns + self.timer_period_ns

    def due(self, now_ns: int) -> bool:
        return not self.canceled and self.next_due_ns <= now_ns

    def take(self) -> Callable[[], None]:
        """rcl_timer_call: schedule the next period (missed periods are skipped); returns the callback."""
        now_ns = ros_double.graph().time_ns
        while self.next_due_ns <= now_ns:
            self.next_due_ns += self.timer_period_ns
        return self.callback

    def cancel(self) -> None:
        self.canceled = True

    def reset(self) -> None:
        self.canceled = False
        self.restart(ros_double.graph().time_ns)

    def is_canceled(self) -> bool:
        return self.canceled

    def destroy(self) -> None:
        self.canceled = True

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"Timer.{name}")


class Node:
    """rclpy.node.Node (Humble/Jazzy signatures)."""

    PARAM_REL_TOL = PARAM_REL_TOL

    def __init__(
        self,
        node_name: str,
        *,
        context: Any = None,
        cli_args: list[str] | None = None,
        namespace: str | None = None,
        use_global_arguments: bool = True,
        enable_rosout: bool = True,
        start_parameter_services: bool = True,
        parameter_overrides: list[Parameter] | None = None,
        allow_undeclared_parameters: bool = False,
        automatically_declare_parameters_from_overrides: bool = False,
    ) -> None:
        _no_extras("Node", context=context, cli_args=cli_args or None,
                   allow_undeclared_parameters=allow_undeclared_parameters,
                   automatically_declare_parameters_from_overrides=automatically_declare_parameters_from_overrides)
        graph = ros_double.graph()  # raises before rclpy.init(), as rcl does
        if not isinstance(node_name, str) or not node_name or not node_name.replace("_", "a").isalnum() \
                or node_name[0].isdigit():
            raise ValueError(f"invalid node name {node_name!r}")
        node_name = graph.remaps.get("__node", node_name)  # rcl applies -r __node:= / __ns:= to every node
        ns = graph.remaps.get("__ns", namespace or "/")
        if not ns.startswith("/"):
            ns = "/" + ns
        self._name = node_name
        self._namespace = ns.rstrip("/") or "/"
        self._default_callback_group = MutuallyExclusiveCallbackGroup()
        self._executor: Any = None
        self._post_set_parameters_callbacks: list[Callable[[list[Parameter]], None]] = []
        # rcl_create_node_logger_name: "<namespace, '/' as '.'>.<name>", the name /rosout knows the node by
        local = self._namespace.strip("/").replace("/", ".")
        self._logger = rclpy_logging.get_logger(f"{local}.{node_name}" if local else node_name)
        self._clock = ROSClock()
        self._parameters: dict[str, Parameter] = {}
        self._descriptors: dict[str, ParameterDescriptor] = {}
        self._parameters_callbacks: list[Callable[[list[Parameter]], SetParametersResult]] = []
        self._parameter_overrides: dict[str, Parameter] = {
            name: Parameter(name, value=value)
            for name, value in graph.overrides_for(self.get_fully_qualified_name()).items()}
        for override in parameter_overrides or []:
            if not isinstance(override, Parameter):
                raise TypeError(f"parameter_overrides must hold rclpy.parameter.Parameter, got {override!r}")
            self._parameter_overrides[override.name] = override
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._destroyed = False
        graph.nodes.append(self)
        # rclpy's TimeSource declares use_sim_time on every node; on Jazzy its TypeDescriptionService declares a
        # read-only start_type_description_service too (rclpy jazzy type_description_service.py).
        self.declare_parameter("use_sim_time", False)
        if ros_double.DISTRO != "humble":
            self.declare_parameter("start_type_description_service", True, ParameterDescriptor(
                name="start_type_description_service", type=ParameterType.PARAMETER_BOOL,
                description="If enabled, start the ~/get_type_description service.", read_only=True))

    # ------------------------------------------------------------------ identity, logging, time
    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return f"{self._namespace.rstrip('/')}/{self._name}"

    @property
    def default_callback_group(self) -> CallbackGroup:
        return self._default_callback_group

    def get_logger(self) -> Logger:
        return self._logger

    def get_clock(self) -> ROSClock:
        return self._clock

    # ------------------------------------------------------------------ parameters
    def declare_parameter(self, name: str, value: Any = None, descriptor: ParameterDescriptor | None = None,
                          ignore_override: bool = False) -> Parameter:
        # rclpy: a name that is not a str is a TypeError; an empty one fails validate_parameter_name.
        if not isinstance(name, str):
            raise TypeError(f"First element {name} at index 0 in parameters list is not a str.")
        if not name:
            raise InvalidParameterException(name)
        if value is None or isinstance(value, Parameter.Type):
            raise unsupported("declare_parameter without a default value (dynamic or type-only declaration)")
        descriptor = ParameterDescriptor() if descriptor is None else descriptor
        if not isinstance(descriptor, ParameterDescriptor):
            raise TypeError(f"descriptor must be a ParameterDescriptor, got {descriptor!r}")
        if name in self._parameters:
            raise ParameterAlreadyDeclaredException([name])
        descriptor.type = Parameter.Type.from_parameter_value(value).value
        if not ignore_override and name in self._parameter_overrides:
            value = self._parameter_overrides[name].value
        parameter = Parameter(name, value=value)
        result = self._apply_descriptor(parameter, descriptor, check_read_only=False)
        if result.successful:
            result = self._run_callbacks([parameter])
        if not result.successful:
            if result.reason.startswith("Wrong parameter type"):
                raise InvalidParameterTypeException(parameter, Parameter.Type(descriptor.type).name)
            raise InvalidParameterValueException(name, value, result.reason)
        descriptor.name = name
        self._descriptors[name] = descriptor
        self._parameters[name] = parameter
        self._run_post_callbacks([parameter])  # Jazzy calls them for declarations too
        return parameter

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        if name not in self._parameters:
            raise ParameterNotDeclaredException(name)
        return self._parameters[name]

    def describe_parameter(self, name: str) -> ParameterDescriptor:
        if name not in self._descriptors:
            raise ParameterNotDeclaredException(name)
        return self._descriptors[name]

    def add_on_set_parameters_callback(self, callback: Callable[[list[Parameter]], SetParametersResult]) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._parameters_callbacks.insert(0, callback)

    if ros_double.DISTRO != "humble":
        # rclpy Iron and later (Jazzy): called with the parameters after they were set successfully; Humble's
        # Node has no such method.
        def add_post_set_parameters_callback(self, callback: Callable[[list[Parameter]], None]) -> None:
            if not callable(callback):
                raise TypeError("callback must be callable")
            self._post_set_parameters_callbacks.insert(0, callback)

    def _run_post_callbacks(self, parameters: list[Parameter]) -> None:
        for callback in self._post_set_parameters_callbacks:
            callback(parameters)

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:
        if not all(isinstance(p, Parameter) for p in parameter_list):
            raise TypeError(f"parameter must be instance of type '{Parameter!r}'")
        results = []
        for parameter in parameter_list:
            if parameter.name not in self._parameters:
                raise ParameterNotDeclaredException([parameter.name])
            result = self._apply_descriptor(parameter, self._descriptors[parameter.name], check_read_only=True)
            if result.successful:
                result = self._run_callbacks([parameter])
            if result.successful:
                self._parameters[parameter.name] = parameter
                self._run_post_callbacks([parameter])
            results.append(result)
        return results

    def _run_callbacks(self, parameters: list[Parameter]) -> SetParametersResult:
        for callback in self._parameters_callbacks:
            result = callback(parameters)
            if not isinstance(result, SetParametersResult):
                raise TypeError(f"on-set-parameters callback returned {result!r}, not a SetParametersResult")
            if not result.successful:
                return result
        return SetParametersResult(successful=True)

    def _apply_descriptor(self, parameter: Parameter, descriptor: ParameterDescriptor,
                          check_read_only: bool) -> SetParametersResult:
        # rclpy.Node._apply_descriptor, for statically typed parameters.
        if check_read_only and descriptor.read_only:
            return SetParametersResult(successful=False,
                                       reason=f"Trying to set a read-only parameter: {parameter.name}.")
        if parameter.type_.value != descriptor.type:
            return SetParametersResult(successful=False, reason=(
                f"Wrong parameter type, expected '{Parameter.Type(descriptor.type)}' got '{parameter.type_}'"))
        if parameter.type_ == Parameter.Type.INTEGER and descriptor.integer_range:
            return _integer_range_result(parameter, descriptor.integer_range[0])
        if parameter.type_ == Parameter.Type.DOUBLE and descriptor.floating_point_range:
            return _floating_point_range_result(parameter, descriptor.floating_point_range[0])
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ entities
    def create_publisher(self, msg_type: type, topic: str, qos_profile: QoSProfile | int, *,
                         callback_group: Any = None, event_callbacks: Any = None,
                         qos_overriding_options: Any = None, publisher_class: type | None = None) -> Publisher:
        _no_extras("create_publisher", callback_group=callback_group, event_callbacks=event_callbacks,
                   qos_overriding_options=qos_overriding_options)
        self._check_alive()
        _check_msg_type(msg_type)
        cls = publisher_class or Publisher
        publisher = cls(self, msg_type, topic, _qos(qos_profile))
        ros_double.graph().add_publisher(publisher)
        self._publishers.append(publisher)
        return publisher

    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos_profile: QoSProfile | int, *, callback_group: Any = None,
                            event_callbacks: Any = None, qos_overriding_options: Any = None,
                            raw: bool = False) -> Subscription:
        _no_extras("create_subscription", event_callbacks=event_callbacks,
                   qos_overriding_options=qos_overriding_options, raw=raw)
        self._check_alive()
        _check_msg_type(msg_type)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        subscription = Subscription(self, msg_type, topic, callback, _qos(qos_profile),
                                    _group(self, callback_group))
        self._subscriptions.append(subscription)
        ros_double.graph().add_subscription(subscription)
        return subscription

    def create_timer(self, timer_period_sec: float, callback: Callable[[], None], callback_group: Any = None,
                     clock: Any = None, **jazzy: Any) -> Timer:
        # Jazzy adds ``autostart: bool = True``; Humble's create_timer has no such argument.
        if set(jazzy) - {"autostart"} or (jazzy and ros_double.DISTRO == "humble"):
            raise TypeError(f"create_timer() got an unexpected keyword argument {sorted(jazzy)[0]!r}")
        _no_extras("create_timer", clock=clock)
        self._check_alive()
        if isinstance(timer_period_sec, bool) or not isinstance(timer_period_sec, (int, float)) or \
                not timer_period_sec > 0:
            raise ValueError(f"timer_period_sec must be a positive number, got {timer_period_sec!r}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        timer = Timer(self, callback, int(timer_period_sec * 1e9), _group(self, callback_group),
                      autostart=bool(jazzy.get("autostart", True)))
        self._timers.append(timer)
        ros_double.graph().timers.append(timer)
        return timer

    def destroy_publisher(self, publisher: Publisher) -> bool:
        if publisher not in self._publishers:
            return False
        self._publishers.remove(publisher)
        ros_double.graph().publishers.remove(publisher)
        publisher.destroy()
        return True

    def destroy_subscription(self, subscription: Subscription) -> bool:
        if subscription not in self._subscriptions:
            return False
        self._subscriptions.remove(subscription)
        ros_double.graph().subscriptions.remove(subscription)
        subscription.destroy()
        return True

    def destroy_timer(self, timer: Timer) -> bool:
        if timer not in self._timers:
            return False
        self._timers.remove(timer)
        ros_double.graph().timers.remove(timer)
        timer.destroy()
        return True

    def destroy_node(self) -> None:
        for publisher in list(self._publishers):
            self.destroy_publisher(publisher)
        for subscription in list(self._subscriptions):
            self.destroy_subscription(subscription)
        for timer in list(self._timers):
            self.destroy_timer(timer)
        if ros_double.graph_is_up() and self in ros_double.graph().nodes:
            ros_double.graph().nodes.remove(self)
        self._destroyed = True

    # Iterators, as rclpy's properties are (``node.subscriptions == []`` is never true there either).
    @property
    def publishers(self) -> Iterator[Publisher]:
        return iter(list(self._publishers))

    @property
    def subscriptions(self) -> Iterator[Subscription]:
        return iter(list(self._subscriptions))

    @property
    def timers(self) -> Iterator[Timer]:
        return iter(list(self._timers))

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError(f"node {self._name} was destroyed")

    def __getattr__(self, name: str) -> Any:
        raise unsupported(f"rclpy.node.Node.{name}")
