"""The rcl_interfaces messages the nodes build, as rclpy generates them: keyword arguments with defaults, unknown
keywords refused, field types asserted on assignment (a float field refuses an int, as the generated setters do).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ros_double import missing_message


class _Generated:
    """Base of a generated message class: ``_fields`` = {name: (check, default factory, type text)}."""

    _fields: ClassVar[dict[str, tuple[Any, Any, str]]] = {}

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self._fields))
        # rclpy's generated __init__ asserts exactly this.
        assert not unknown, f"Invalid arguments passed to constructor: {', '.join(unknown)}"
        for name, (_, default, _) in self._fields.items():
            setattr(self, name, kwargs.get(name, default()))

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        check, _, text = self._fields[name]
        assert check(value), f"The '{name}' field must be {text}"
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"rcl_interfaces.msg.{type(self).__name__}({inner})"


def _is_float(v: Any) -> bool:
    return isinstance(v, float)


# The generated setters check the field's range too: IntegerRange.from_value/to_value are int64, step uint64.
def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


class FloatingPointRange(_Generated):
    _fields: ClassVar[dict[str, tuple[Any, Any, str]]] = {
        "from_value": (_is_float, float, "of type 'float'"), "to_value": (_is_float, float, "of type 'float'"),
        "step": (lambda v: _is_float(v) and v >= 0.0, float, "of type 'float' and >= 0")}


class IntegerRange(_Generated):
    _fields: ClassVar[dict[str, tuple[Any, Any, str]]] = {
        "from_value": (_is_int, int, "an integer in [-9223372036854775808, 9223372036854775807]"),
        "to_value": (_is_int, int, "an integer in [-9223372036854775808, 9223372036854775807]"),
        "step": (_is_uint, int, "an unsigned integer in [0, 18446744073709551615]")}


def _ranges_of(cls: type) -> Any:
    return lambda v: isinstance(v, (list, tuple)) and len(v) <= 1 and all(isinstance(x, cls) for x in v)


class ParameterDescriptor(_Generated):
    _fields: ClassVar[dict[str, tuple[Any, Any, str]]] = {
        "name": (_is_str, str, "of type 'str'"),
        "type": (lambda v: _is_uint(v) and v < 256, int, "an unsigned integer in [0, 255]"),
        "description": (_is_str, str, "of type 'str'"),
        "additional_constraints": (_is_str, str, "of type 'str'"),
        "read_only": (_is_bool, bool, "of type 'bool'"),
        "dynamic_typing": (_is_bool, bool, "of type 'bool'"),
        "floating_point_range": (_ranges_of(FloatingPointRange), list,
                                 "a sequence of at most 1 'FloatingPointRange'"),
        "integer_range": (_ranges_of(IntegerRange), list, "a sequence of at most 1 'IntegerRange'"),
    }


class SetParametersResult(_Generated):
    _fields: ClassVar[dict[str, tuple[Any, Any, str]]] = {
        "successful": (_is_bool, bool, "of type 'bool'"), "reason": (_is_str, str, "of type 'str'")}


class ParameterType:
    PARAMETER_NOT_SET = 0
    PARAMETER_BOOL = 1
    PARAMETER_INTEGER = 2
    PARAMETER_DOUBLE = 3
    PARAMETER_STRING = 4
    PARAMETER_BYTE_ARRAY = 5
    PARAMETER_BOOL_ARRAY = 6
    PARAMETER_INTEGER_ARRAY = 7
    PARAMETER_DOUBLE_ARRAY = 8
    PARAMETER_STRING_ARRAY = 9


__getattr__ = missing_message("rcl_interfaces")
