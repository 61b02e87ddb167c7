"""rclpy.callback_groups for the test double, with rclpy's semantics (rclpy/callback_groups.py, humble and
jazzy): a mutually exclusive group lets one of its callbacks run at a time, a reentrant group any number."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from ros_double import unsupported


class CallbackGroup:
    def __init__(self) -> None:
        self.entities: set = set()

    def add_entity(self, entity: Any) -> None:
        self.entities.add(weakref.ref(entity))

    def has_entity(self, entity: Any) -> bool:
        return weakref.ref(entity) in self.entities

    def can_execute(self, entity: Any) -> bool:
        raise NotImplementedError()

    def beginning_execution(self, entity: Any) -> bool:
        raise NotImplementedError()

    def ending_execution(self, entity: Any) -> None:
        raise NotImplementedError()


class ReentrantCallbackGroup(CallbackGroup):
    def can_execute(self, entity: Any) -> bool:
        return True

    def beginning_execution(self, entity: Any) -> bool:
        return True

    def ending_execution(self, entity: Any) -> None:
        pass


class MutuallyExclusiveCallbackGroup(CallbackGroup):
    def __init__(self) -> None:
        super().__init__()
        self._active_entity: Any = None
        self._lock = threading.Lock()

    def can_execute(self, entity: Any) -> bool:
        with self._lock:
            assert weakref.ref(entity) in self.entities
            return self._active_entity is None

    def beginning_execution(self, entity: Any) -> bool:
        with self._lock:
            assert weakref.ref(entity) in self.entities
            if self._active_entity is None:
                self._active_entity = entity
                return True
        return False

    def ending_execution(self, entity: Any) -> None:
        with self._lock:
            assert self._active_entity == entity
            self._active_entity = None


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.callback_groups.{name}")
