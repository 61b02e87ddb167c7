"""launch_ros.parameter_descriptions of the launch double."""

from __future__ import annotations

from typing import Any

_ALLOWED = (None, int, bool, float, str)


class ParameterValue:
    def __init__(self, value: Any, *, value_type: Any = None) -> None:
        if value_type not in _ALLOWED:
            raise TypeError(f"value_type must be one of {_ALLOWED}, got {value_type!r}")
        self.value = value
        self.value_type = value_type
