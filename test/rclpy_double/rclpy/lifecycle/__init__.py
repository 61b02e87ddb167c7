"""rclpy.lifecycle for the test double: LifecycleNode (alias Node) with rclpy's state machine semantics.

Transitions (lifecycle_msgs): configure unconfigured→inactive, activate inactive→active, deactivate
active→inactive, cleanup inactive→unconfigured, shutdown any primary state→finalized. A callback returning
FAILURE leaves the node in the start state; ERROR (or an exception, which rclpy turns into ERROR) runs
on_error: SUCCESS → unconfigured, anything else → finalized. A callback that returns anything but a
TransitionCallbackReturn makes ``trigger_*`` raise AttributeError, as rclpy's ``cb_return_code.to_label()``
does, and leaves the state machine in the transition state (every later transition is refused); a managed
entity that does so raises TypeError inside the transition (so: ERROR), as LifecycleNodeMixin does. An invalid
transition raises RuntimeError (rclpy raises its RCLError). Lifecycle publishers publish only while
activated; the default on_activate / on_deactivate (call them with super()) switch them.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

from rclpy.node import Node as _Node
from rclpy.node import Publisher as _Publisher


class TransitionCallbackReturn(Enum):
    SUCCESS = 97
    FAILURE = 98
    ERROR = 99

    def to_label(self) -> str:
        return {97: "transition_success", 98: "transition_failure", 99: "transition_error"}[self.value]


class LifecycleState(NamedTuple):
    label: str
    state_id: int


_STATES = {"unconfigured": 1, "inactive": 2, "active": 3, "finalized": 4}
_TRANSITIONS = {  # name: (allowed start states, goal state, callback name)
    "configure": (("unconfigured",), "inactive", "on_configure"),
    "activate": (("inactive",), "active", "on_activate"),
    "deactivate": (("active",), "inactive", "on_deactivate"),
    "cleanup": (("inactive",), "unconfigured", "on_cleanup"),
    "shutdown": (("unconfigured", "inactive", "active"), "finalized", "on_shutdown"),
}


class ManagedEntity:
    """rclpy.lifecycle.ManagedEntity: every transition callback succeeds by default."""

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    on_cleanup = on_shutdown = on_error = on_activate = on_deactivate = on_configure


class LifecyclePublisher(ManagedEntity, _Publisher):
    """Publishes only while activated (rclpy's SimpleManagedEntity.when_enabled drops silently)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._enabled = False
        self.dropped_inactive = 0  # double only

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._enabled = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._enabled = False
        return TransitionCallbackReturn.SUCCESS

    @property
    def is_activated(self) -> bool:
        return self._enabled

    def publish(self, msg: Any) -> None:
        if not self._enabled:
            self.dropped_inactive += 1
            return
        super().publish(msg)


class LifecycleNode(_Node):
    def __init__(self, node_name: str, *, enable_communication_interface: bool = True, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._managed_entities: set[Any] = set()
        self._lifecycle_state = "unconfigured"
        self.transition_errors: list[BaseException] = []  # double only: exceptions rclpy would swallow

    # default callbacks: forward to the managed entities, as LifecycleNodeMixin does
    def _forward(self, method: str, state: LifecycleState) -> TransitionCallbackReturn:
        for entity in self._managed_entities:
            ret = getattr(entity, method)(state)
            if not isinstance(ret, TransitionCallbackReturn):
                raise TypeError(f"{method}() return value of class {type(entity)} should be "
                                "`TransitionCallbackReturn`.")
            if ret != TransitionCallbackReturn.SUCCESS:
                return ret
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_configure", state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_cleanup", state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_shutdown", state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_activate", state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_deactivate", state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._forward("on_error", state)

    def create_lifecycle_publisher(self, *args: Any, **kwargs: Any) -> LifecyclePublisher:
        if "publisher_class" in kwargs:
            raise TypeError("create_publisher() got an unexpected keyword argument 'publisher_class'")
        publisher = _Node.create_publisher(self, *args, **kwargs, publisher_class=LifecyclePublisher)
        self._managed_entities.add(publisher)
        return publisher

    def destroy_lifecycle_publisher(self, publisher: LifecyclePublisher) -> bool:
        self._managed_entities.discard(publisher)
        return _Node.destroy_publisher(self, publisher)

    def add_managed_entity(self, entity: ManagedEntity) -> None:
        # rclpy/lifecycle/node.py: only ManagedEntity instances take part in the transitions.
        if not isinstance(entity, ManagedEntity):
            raise TypeError("Expected a rclpy.lifecycle.ManagedEntity instance.")
        self._managed_entities.add(entity)

    def _call(self, method: str, previous: LifecycleState) -> Any:
        try:
            return getattr(self, method)(previous)
        except Exception as exc:  # rclpy turns an exception into ERROR
            self.transition_errors.append(exc)
            return TransitionCallbackReturn.ERROR

    def _change_state(self, transition: str) -> TransitionCallbackReturn:
        starts, goal, method = _TRANSITIONS[transition]
        start = self._lifecycle_state
        if start not in starts:
            raise RuntimeError(f"lifecycle transition '{transition}' is not valid from state '{start}'")
        previous = LifecycleState(start, _STATES[start])
        self._lifecycle_state = f"{transition} in progress"  # rcl's transition states (configuring, ...)
        ret = self._call(method, previous)
        ret.to_label()  # as rclpy: AttributeError for anything but a TransitionCallbackReturn
        if ret == TransitionCallbackReturn.SUCCESS:
            self._lifecycle_state = goal
        elif ret == TransitionCallbackReturn.ERROR:
            recovered = self._call("on_error", previous)
            recovered.to_label()
            self._lifecycle_state = "unconfigured" if recovered == TransitionCallbackReturn.SUCCESS else "finalized"
        else:
            self._lifecycle_state = start
        return ret

    def trigger_configure(self) -> TransitionCallbackReturn:
        return self._change_state("configure")

    def trigger_cleanup(self) -> TransitionCallbackReturn:
        return self._change_state("cleanup")

    def trigger_activate(self) -> TransitionCallbackReturn:
        return self._change_state("activate")

    def trigger_deactivate(self) -> TransitionCallbackReturn:
        return self._change_state("deactivate")

    def trigger_shutdown(self) -> TransitionCallbackReturn:
        return self._change_state("shutdown")


Node = LifecycleNode
State = LifecycleState
Publisher = LifecyclePublisher
