"""rclpy.qos for the test double: QoSProfile with rclpy's constructor rules and the policy enums."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from ros_double import unsupported


class InvalidQoSProfileException(Exception):  # noqa: N818 - rclpy's name
    pass


class HistoryPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3


class DurabilityPolicy(IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3


QoSHistoryPolicy = HistoryPolicy
QoSReliabilityPolicy = ReliabilityPolicy
QoSDurabilityPolicy = DurabilityPolicy

_SUPPORTED = ("history", "depth", "reliability", "durability")


class QoSProfile:
    """history/depth/reliability/durability (other policies are not modelled and are refused)."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_SUPPORTED))
        if unknown:
            raise unsupported(f"QoSProfile({', '.join(unknown)}=...)")
        if "history" not in kwargs:
            if "depth" not in kwargs:
                raise InvalidQoSProfileException("History and/or depth settings are required.")
            kwargs["history"] = HistoryPolicy.KEEP_LAST
        if HistoryPolicy(kwargs["history"]) == HistoryPolicy.KEEP_LAST and "depth" not in kwargs:
            raise InvalidQoSProfileException("History set to KEEP_LAST without a depth setting.")
        self.history = HistoryPolicy(kwargs["history"])
        depth = kwargs.get("depth", 10)
        assert isinstance(depth, int) and not isinstance(depth, bool)
        self.depth = depth
        self.reliability = ReliabilityPolicy(kwargs.get("reliability", ReliabilityPolicy.RELIABLE))
        self.durability = DurabilityPolicy(kwargs.get("durability", DurabilityPolicy.VOLATILE))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QoSProfile) and all(getattr(self, k) == getattr(other, k) for k in _SUPPORTED)

    def __repr__(self) -> str:
        return (f"QoSProfile(history={self.history.name}, depth={self.depth}, reliability={self.reliability.name}, "
                f"durability={self.durability.name})")


# rmw_qos_profile_sensor_data: best effort, keep last 5, volatile.
qos_profile_sensor_data = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                                     reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def __getattr__(name: str) -> Any:
    raise unsupported(f"rclpy.qos.{name}")
