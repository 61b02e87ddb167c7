"""Exception types shared across the package.

Every error that reaches a user names what was wrong (a message field, a file, a region) so that it can be
acted on without a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RegionAdaptError(Exception):
    """Base class of every error this package raises on purpose."""

    def __reduce__(self):
        # pickled with the constructor's own arguments, so that an error raised in a worker process reaches the
        # parent as itself (Exception's default passes only the formatted message)
        fields = getattr(self, "_init_args", None)
        return (type(self), fields) if fields is not None else super().__reduce__()


class MessageConversionError(RegionAdaptError, ValueError):
    """A ROS message could not be converted; ``field`` names the offending message field."""

    def __init__(self, msg_type: str, field: str, problem: str) -> None:
        self.msg_type = msg_type
        self.field = field
        self.problem = problem
        self._init_args = (msg_type, field, problem)
        super().__init__(f"{msg_type}.{field}: {problem}")


class ConfigError(RegionAdaptError, ValueError):
    """Bad configuration; ``path`` names the file (or parameter) and the message the problem."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        self._init_args = (path, problem)
        super().__init__(f"{self.path}: {problem}")


def settings_from_dict(cls: type, data: Mapping[str, Any], source: str, what: str) -> Any:
    """A settings dataclass from ``{field: value}``: unknown keys and values its ``__post_init__`` refuses become
    one ConfigError naming ``source`` (e.g. "risk.* parameters") and the problem; ``what`` names the settings
    in the unknown-key message ("risk setting")."""
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ConfigError(source, f"unknown {what}(s): {', '.join(unknown)}")
    try:
        return cls(**dict(data))
    except ConfigError as exc:
        raise ConfigError(source, str(exc)) from None


class BundleError(RegionAdaptError):
    """A region bundle was refused; ``path`` names the bundle file that is wrong."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        self._init_args = (path, problem)
        super().__init__(f"{self.path}: {problem}")


class DataError(RegionAdaptError, ValueError):
    """Training or replay input was refused before any work started; ``path`` names the file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        self._init_args = (path, problem)
        super().__init__(f"{self.path}: {problem}")
