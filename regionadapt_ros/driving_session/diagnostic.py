"""Diagnostics as plain data (``diagnostic_msgs/DiagnosticStatus`` without ROS)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from regionadapt_ros.core import msgconv


class DiagnosticLevel(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class DiagnosticStatusData:
    """One ``diagnostic_msgs/DiagnosticStatus`` as plain data; ``values`` become its KeyValue list."""

    name: str
    level: DiagnosticLevel
    message: str
    values: Mapping[str, str] = field(default_factory=dict)
    hardware_id: str = ""

    def as_entry(self) -> msgconv.DiagnosticEntry:
        """The tuple ``msgconv.build_diagnostic_array`` takes."""
        return (self.name, int(self.level), self.message, self.hardware_id, dict(self.values))


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "none"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"
