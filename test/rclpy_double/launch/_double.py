"""Implementation of the launch double (see __init__)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any


class SubstitutionFailure(RuntimeError):  # noqa: N818 - launch's own name
    pass


class LaunchContext:
    """``launch_configurations``: name → value; ``share``: package → share directory (FindPackageShare)."""

    def __init__(self, launch_configurations: dict[str, str] | None = None,
                 share: dict[str, str] | None = None) -> None:
        self.launch_configurations = dict(launch_configurations or {})
        self.share = dict(share or {})


class Substitution:
    def perform(self, context: LaunchContext) -> str:
        raise NotImplementedError


def as_substitutions(value: Any, what: str) -> list[Any]:
    """launch's normalize_to_list_of_substitutions: a str, a Substitution or an iterable of those."""
    if isinstance(value, (str, Substitution)):
        return [value]
    if isinstance(value, Iterable):
        items = list(value)
        for item in items:
            if not isinstance(item, (str, Substitution)):
                raise TypeError(f"{what}: expected str or Substitution, got {type(item).__name__}")
        return items
    raise TypeError(f"{what}: expected str, Substitution or a list of them, got {type(value).__name__}")


def perform(context: LaunchContext, value: Any) -> str:
    return "".join(v if isinstance(v, str) else v.perform(context) for v in as_substitutions(value, "value"))


class TextSubstitution(Substitution):
    def __init__(self, *, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"TextSubstitution expected Text object got '{type(text)}' instead.")
        self.text = text

    def perform(self, context: LaunchContext) -> str:
        return self.text


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name: Any, *, default: Any = None) -> None:
        self.variable_name = as_substitutions(variable_name, "variable_name")
        self.default = default

    def perform(self, context: LaunchContext) -> str:
        name = perform(context, self.variable_name)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is not None:
            return perform(context, self.default)
        raise SubstitutionFailure(f"launch configuration '{name}' does not exist")


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions: Iterable[Any]) -> None:
        self.substitutions = [as_substitutions(s, "PathJoinSubstitution") for s in substitutions]

    def perform(self, context: LaunchContext) -> str:
        return os.path.join(*(perform(context, s) for s in self.substitutions))


class PythonExpression(Substitution):
    def __init__(self, expression: Any) -> None:
        self.expression = as_substitutions(expression, "expression")

    def perform(self, context: LaunchContext) -> str:
        return str(eval(perform(context, self.expression), {}, math.__dict__))


class Condition:
    def __init__(self, predicate_expression: Any) -> None:
        self.predicate_expression = as_substitutions(predicate_expression, "predicate_expression")

    def _value(self, context: LaunchContext) -> bool:
        text = perform(context, self.predicate_expression).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"condition expression {text!r} is not one of true, false, 1, 0")


class IfCondition(Condition):
    def evaluate(self, context: LaunchContext) -> bool:
        return self._value(context)


class UnlessCondition(Condition):
    def evaluate(self, context: LaunchContext) -> bool:
        return not self._value(context)


class Action:
    def __init__(self, *, condition: Condition | None = None) -> None:
        if condition is not None and not isinstance(condition, Condition):
            raise TypeError(f"condition must be a Condition, got {type(condition).__name__}")
        self.condition = condition


class DeclareLaunchArgument(Action):
    def __init__(self, name: str, *, default_value: Any = None, description: str | None = None,
                 choices: Iterable[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(name, str):
            raise TypeError("DeclareLaunchArgument name must be a str")
        self.name = name
        self.default_value = None if default_value is None else as_substitutions(default_value, "default_value")
        self.description = description
        self.choices = list(choices) if choices is not None else None
        if self.choices is not None:
            if not self.choices:
                raise RuntimeError("Provided choices arg is empty. Use None to ignore the choice list.")
            if isinstance(default_value, str) and default_value not in self.choices:
                raise RuntimeError(f'Provided default_value "{default_value}" is not in provided choices '
                                   f'"{self.choices}".')


_EXECUTE_KWARGS = {"prefix", "name", "cwd", "env", "additional_env", "shell", "sigterm_timeout", "sigkill_timeout",
                   "emulate_tty", "output", "output_format", "cached_output", "log_cmd", "on_exit", "respawn",
                   "respawn_delay", "condition"}


def check_execute_kwargs(kwargs: dict[str, Any], what: str) -> None:
    unknown = sorted(set(kwargs) - _EXECUTE_KWARGS)
    if unknown:
        raise TypeError(f"{what}() got unexpected keyword argument(s) {', '.join(unknown)}")


class ExecuteProcess(Action):
    def __init__(self, *, cmd: Iterable[Any], **kwargs: Any) -> None:
        check_execute_kwargs(kwargs, "ExecuteProcess")
        super().__init__(condition=kwargs.pop("condition", None))
        self.cmd = [as_substitutions(part, "cmd") for part in cmd]
        self.kwargs = kwargs

    def performed_cmd(self, context: LaunchContext) -> list[str]:
        return [perform(context, part) for part in self.cmd]


class TimerAction(Action):
    def __init__(self, *, period: Any, actions: Iterable[Any], cancel_on_shutdown: Any = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # launch's TimerAction takes a float or substitutions: an int period is a TypeError there
        # (ensure_argument_type against SomeSubstitutionsType_types_tuple + [float]).
        if isinstance(period, int):
            raise TypeError(f"Expected 'period' to be one of [str, Substitution, Iterable, float], but got "
                            f"'{period}' of type '{type(period)}'")
        self.period = period if isinstance(period, float) else as_substitutions(period, "period")
        self.actions = list(actions)


class GroupAction(Action):
    def __init__(self, actions: Iterable[Any], *, scoped: bool = True, forwarding: bool = True,
                 launch_configurations: dict[Any, Any] | None = None, **left_over_kwargs: Any) -> None:
        super().__init__(**left_over_kwargs)
        self.actions = list(actions)
        self.launch_configurations = dict(launch_configurations or {})


class PythonLaunchDescriptionSource:
    def __init__(self, launch_file_path: Any) -> None:
        self.launch_file_path = as_substitutions(launch_file_path, "launch_file_path")


class IncludeLaunchDescription(Action):
    def __init__(self, launch_description_source: Any, *, launch_arguments: Iterable[tuple[Any, Any]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(launch_description_source, PythonLaunchDescriptionSource):
            launch_description_source = PythonLaunchDescriptionSource(launch_description_source)
        self.launch_description_source = launch_description_source
        self.launch_arguments = [(as_substitutions(k, "launch_arguments"), as_substitutions(v, "launch_arguments"))
                                 for k, v in (launch_arguments or [])]


class LaunchDescription:
    def __init__(self, initial_entities: Iterable[Any] | None = None, *, deprecated_reason: str | None = None) -> None:
        self.entities = list(initial_entities or [])
        for entity in self.entities:
            if not isinstance(entity, (Action, LaunchDescription)):
                raise TypeError(f"LaunchDescription entities must be actions, got {type(entity).__name__}")
