"""launch_ros.actions of the launch double: Node records its arguments (launch_ros Humble signature)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from launch._double import Action, as_substitutions, check_execute_kwargs


class Node(Action):
    def __init__(self, *, executable: Any, package: Any = None, name: Any = None, namespace: Any = None,
                 exec_name: Any = None, parameters: Iterable[Any] | None = None,
                 remappings: Iterable[tuple[Any, Any]] | None = None, ros_arguments: Iterable[Any] | None = None,
                 arguments: Iterable[Any] | None = None, **kwargs: Any) -> None:
        check_execute_kwargs(kwargs, "Node")
        super().__init__(condition=kwargs.pop("condition", None))
        self.executable = as_substitutions(executable, "executable")
        self.package = None if package is None else as_substitutions(package, "package")
        self.name = None if name is None else as_substitutions(name, "name")
        self.namespace = None if namespace is None else as_substitutions(namespace, "namespace")
        self.parameters = list(parameters or [])
        self.remappings = [(as_substitutions(a, "remappings"), as_substitutions(b, "remappings"))
                           for a, b in (remappings or [])]
        self.ros_arguments = list(ros_arguments or [])
        self.arguments = list(arguments or [])
        self.kwargs = kwargs
