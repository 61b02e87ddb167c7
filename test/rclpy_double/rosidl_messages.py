"""Message classes with the semantics of rosidl_generator_py's generated classes, for one ROS 2 distribution.

The field lists (names, types, array sizes, constants) come from the rosbags type store of the distribution
named by ``ROS_DISTRO`` (``humble`` or ``jazzy``, as a sourced workspace sets it; default humble). What the type
store does not carry, the field defaults a ``.msg`` file declares, is in ``MSG_DEFAULTS`` (read from
ros2/common_interfaces on the humble and jazzy branches; docs/design-notes.md cites them).

Checks, as the generated setters of rosidl_generator_py (``resource/_msg.py.em``, humble; on jazzy the same
checks run when ``ROS_PYTHON_CHECK_FIELDS=1``, and the double always runs them):
- unknown constructor keywords: AssertionError "Invalid arguments passed to constructor: ...";
- assigning an attribute that is not a field: AttributeError (the generated classes use ``__slots__``);
- ``bool``: a bool; integers: an int in the type's range; ``float32``/``float64``: a float (not an int) within
  +-3.402823466e+38 / +-1.7976931348623157e+308 (inf and NaN pass); ``string``: a str;
- ``byte`` (rosidl ``octet``): ``bytes`` of length 1;
- numeric sequences (``uint8[]`` ...): an ``array.array`` of the matching type code, or a sequence (list,
  tuple, bytes) of ints in range, stored as ``array.array``; a numpy array is refused, as by rclpy;
- fixed numeric arrays (``float64[9]``): a numpy array of the right dtype and size, or a sequence of that length
  of floats, stored as numpy;
- nested messages: an instance of the (double's) class; sequences of messages: a sequence of instances.
"""

from __future__ import annotations

import array
import copy
import math
import os
from collections import UserList
from collections.abc import ByteString, Sequence, Set
from typing import Any, ClassVar

import numpy as np

from regionadapt_ros.core.msgconv import rosbags_typestore

DISTROS = ("humble", "jazzy")
DISTRO = os.environ.get("ROS_DISTRO", "humble")
if DISTRO not in DISTROS:
    raise RuntimeError(f"the rclpy test double serves ROS_DISTRO humble or jazzy, not {DISTRO!r}")
STORE = rosbags_typestore(DISTRO)

# Defaults declared in the .msg files (rosidl's @default annotation); every other field is its type's zero.
MSG_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "humble": {"geometry_msgs/msg/Quaternion": {"w": 1.0}},
    # jazzy: NavSatStatus.msg "int8 status -2 # STATUS_UNKNOWN" (humble: no default, 0 = STATUS_FIX).
    "jazzy": {"geometry_msgs/msg/Quaternion": {"w": 1.0}, "sensor_msgs/msg/NavSatStatus": {"status": -2}},
}

_NODE_BASE, _NODE_NAME, _NODE_ARRAY, _NODE_SEQUENCE = 1, 2, 3, 4
# rosbags base type -> (rosidl type name, numpy dtype / array type code for the numeric ones)
_NUMERIC = {
    "int8": ("int8", "b"), "uint8": ("uint8", "B"), "char": ("uint8", "B"), "int16": ("int16", "h"),
    "uint16": ("uint16", "H"), "int32": ("int32", "i"), "uint32": ("uint32", "I"), "int64": ("int64", "q"),
    "uint64": ("uint64", "Q"), "float32": ("float", "f"), "float64": ("double", "d"),
}
_FLOAT_BOUND = {"float32": 3.402823466e38, "float64": 1.7976931348623157e308}
_OTHER = {"bool": "boolean", "byte": "octet", "string": "string"}


def _int_range(base: str) -> tuple[int, int]:
    bits = int("".join(c for c in base if c.isdigit()) or 8)
    if base.startswith("u") or base == "char":
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_scalar(base: str, value: Any) -> str | None:
    """Why ``value`` does not fit a field of rosbags base type ``base`` (None: it fits)."""
    if base == "bool":
        return None if isinstance(value, bool) else "of type 'bool'"
    if base == "byte":
        ok = isinstance(value, (bytes, ByteString)) and len(value) == 1
        return None if ok else "of type 'bytes' or 'ByteString' with length 1"
    if base == "string":
        return None if isinstance(value, str) else "of type 'str'"
    if base in _FLOAT_BOUND:
        bound = _FLOAT_BOUND[base]
        if not isinstance(value, float):
            return "of type 'float'"
        if (value < -bound or value > bound) and not math.isinf(value):
            return f"a {_NUMERIC[base][0]} in [{-bound}, {bound}]"
        return None
    if not isinstance(value, int):
        return "of type 'int'"
    low, high = _int_range(base)
    return None if low <= value <= high else f"an integer in [{low}, {high}]"


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (Sequence, Set, UserList)) and not isinstance(value, str)


class _Field:
    """One field of a message: how to check and store a value, its default, its rosidl type string."""

    def __init__(self, msgtype: str, name: str, node: tuple[Any, Any]) -> None:
        self.name = name
        self.kind = int(node[0])
        if self.kind in (_NODE_ARRAY, _NODE_SEQUENCE):
            (element_kind, element), self.size = node[1]
            self.element_kind = int(element_kind)
        else:
            element_kind, element = node
            self.element_kind, self.size = int(element_kind), 0
        self.base = element[0] if self.element_kind == _NODE_BASE else None
        self.nested = element if self.element_kind == _NODE_NAME else None
        self.explicit_default = MSG_DEFAULTS[DISTRO].get(msgtype, {}).get(name)

    @property
    def numeric(self) -> bool:
        return self.base in _NUMERIC

    def type_string(self) -> str:
        if self.nested is not None:
            pkg, _, type_name = self.nested.split("/")
            element = f"{pkg}/{type_name}"
        else:
            element = _NUMERIC[self.base][0] if self.numeric else _OTHER[self.base]
        if self.kind == _NODE_ARRAY:
            return f"{element}[{self.size}]"
        if self.kind == _NODE_SEQUENCE:
            return f"sequence<{element}, {self.size}>" if self.size else f"sequence<{element}>"
        return element

    def default(self) -> Any:
        if self.explicit_default is not None:
            return self.explicit_default
        if self.kind == _NODE_ARRAY:
            if self.numeric:
                return np.zeros(self.size, dtype=_dtype(self.base))
            return [self._zero() for _ in range(self.size)]
        if self.kind == _NODE_SEQUENCE:
            return array.array(_NUMERIC[self.base][1]) if self.numeric else []
        return self._zero()

    def _zero(self) -> Any:
        if self.nested is not None:
            return message_class(self.nested)()
        return {"bool": False, "byte": bytes([0]), "string": ""}.get(self.base, 0.0 if self.base in _FLOAT_BOUND
                                                                      else 0)

    def coerce(self, value: Any) -> Any:
        """The value as the generated setter stores it; AssertionError with rclpy's wording when refused."""
        where = f"The '{self.name}' field must be"
        if self.kind == _NODE_BASE or (self.kind == _NODE_NAME):
            if self.nested is not None:
                cls = message_class(self.nested)
                assert isinstance(value, cls), f"{where} a sub message of type '{cls.__name__}'"
                return value
            problem = _check_scalar(self.base, value)
            assert problem is None, f"{where} {problem}"
            return value
        if self.numeric and self.kind == _NODE_ARRAY and isinstance(value, np.ndarray):
            assert value.dtype == _dtype(self.base), \
                f"The '{self.name}' numpy.ndarray() must have the dtype of 'numpy.{_dtype(self.base).name}'"
            assert value.size == self.size, f"The '{self.name}' numpy.ndarray() must have a size of {self.size}"
            return value
        if self.numeric and self.kind == _NODE_SEQUENCE and isinstance(value, array.array):
            code = _NUMERIC[self.base][1]
            assert value.typecode == code, f"The '{self.name}' array.array() must have the type code of '{code}'"
            assert not self.size or len(value) <= self.size
            return value
        ok = _is_sequence(value)
        if ok and self.kind == _NODE_ARRAY:
            ok = len(value) == self.size
        elif ok and self.size:
            ok = len(value) <= self.size
        if ok:
            if self.nested is not None:
                cls = message_class(self.nested)
                ok = all(isinstance(v, cls) for v in value)
            else:
                ok = all(_check_scalar(self.base, v) is None for v in value)
        assert ok, f"{where} a set or sequence of {self.type_string()} values"
        if self.numeric:
            if self.kind == _NODE_ARRAY:
                return np.array(value, dtype=_dtype(self.base))
            return array.array(_NUMERIC[self.base][1], value)
        return value


def _dtype(base: str) -> np.dtype:
    return np.dtype({"char": "uint8", "float32": "float32", "float64": "float64"}.get(base, base))


class GeneratedMessage:
    """Base of the generated classes: ``_FIELDS`` {name: _Field}, ``_MSGTYPE`` "pkg/msg/Type"."""

    _FIELDS: ClassVar[dict[str, _Field]] = {}
    _MSGTYPE = ""
    __slots__ = ("_values",)

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(k for k in kwargs if k not in self._FIELDS)
        assert not unknown, f"Invalid arguments passed to constructor: {', '.join(unknown)}"
        object.__setattr__(self, "_values", {})
        for name, field in self._FIELDS.items():
            setattr(self, name, kwargs[name] if name in kwargs else field.default())

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        field = self._FIELDS.get(name)
        if field is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        self._values[name] = field.coerce(value)

    def __deepcopy__(self, memo: dict[int, Any]) -> GeneratedMessage:
        # the values are already coerced to their field types: copy them without running the setters again
        clone = object.__new__(type(self))
        object.__setattr__(clone, "_values", copy.deepcopy(self._values, memo))
        return clone

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return {name: field.type_string() for name, field in cls._FIELDS.items()}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        for name in self._FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        pkg, _, name = self._MSGTYPE.split("/")
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{pkg}.msg.{name}({inner})"


def _constant(const_type: str, value: Any) -> Any:
    """A constant as rosidl_generator_py writes it (generate_py_impl.constant_value_to_py, humble and jazzy): a
    ``byte`` constant is ``bytes([value])`` (``DiagnosticStatus.ERROR == b'\\x02'``, so it can be assigned to a
    byte field and ``int()`` of it fails), a ``char`` one a one-character str; numbers stay numbers."""
    if const_type == "byte":
        return bytes([value])
    if const_type == "char":
        return chr(value)
    return value


_classes: dict[str, type] = {}


def message_class(msgtype: str) -> type:
    """The generated class of ``pkg/msg/Type`` (KeyError when the distribution's type store lacks it)."""
    found = _classes.get(msgtype)
    if found is not None:
        return found
    consts, fields = STORE.fielddefs[msgtype]
    pkg, _, name = msgtype.split("/")
    namespace: dict[str, Any] = {"_MSGTYPE": msgtype, "__slots__": (), "__module__": f"{pkg}.msg"}
    namespace.update({const_name: _constant(const_type, value) for const_name, const_type, value in consts})
    cls = type(name, (GeneratedMessage,), namespace)
    _classes[msgtype] = cls  # before the fields: a message may nest its own package's types
    cls._FIELDS = {field_name: _Field(msgtype, field_name, node) for field_name, node in fields}
    return cls


def is_message_class(cls: Any) -> bool:
    return isinstance(cls, type) and _classes.get(getattr(cls, "_MSGTYPE", None)) is cls


def message_namespace(package: str) -> dict[str, type]:
    """{TypeName: generated class} of ``<package>/msg/*`` in the distribution's type store."""
    prefix = f"{package}/msg/"
    return {name[len(prefix):]: message_class(name) for name in STORE.fielddefs if name.startswith(prefix)}
