"""Which of a bag's topics is the camera, the lidar, the speed and the command: by name, by option, or the only one
of its type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionadapt_ros.adaptation.importers.rosbag.config import ROLE_TYPES
from regionadapt_ros.core.bag_storage import open_bag
from regionadapt_ros.core.errors import DataError


@dataclass
class _Topic:
    role: str
    topic: str
    msgtype: str
    connections: list[Any]
    measured: int | None = None  # the storage's own count, where the bag's metadata.yaml is stale

    @property
    def count(self) -> int:
        if self.measured is not None:
            return self.measured
        return sum(int(getattr(c, "msgcount", 0)) for c in self.connections)

    def describe(self) -> dict[str, Any]:
        return {"topic": self.topic, "type": self.msgtype, "messages": self.count}


def _bag_topics(reader: Any) -> dict[str, dict[str, list[Any]]]:
    """topic → message type → its connections. A topic can be recorded with two types (two recordings merged,
    two publishers disagreeing): each type keeps its own connections, so a role reads only messages of its type."""
    topics: dict[str, dict[str, list[Any]]] = {}
    for c in reader.connections:
        topics.setdefault(c.topic, {}).setdefault(c.msgtype, []).append(c)
    return topics


def _listing(topics: dict[str, dict[str, list[Any]]]) -> str:
    if not topics:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{name} ({' and '.join(by_type)})" for name, by_type in sorted(topics.items()))


def _option(role: str) -> str:
    return f"--{role}-topic"


def _pick_topic(bag: Path, topics: dict[str, dict[str, list[Any]]], role: str, requested: str | None,
                required: bool, why: str = "") -> _Topic | None:
    """The topic of one role: the requested one (DataError listing the bag's topics if absent or of a wrong
    type), else the only one of the most preferred type that the bag has."""
    allowed = ROLE_TYPES[role]
    if requested is not None:
        if requested not in topics:
            raise DataError(bag, f"no {role} topic {requested!r} ({_option(role)}); {_listing(topics)}")
        by_type = topics[requested]
        msgtype = next((t for t in allowed if t in by_type), None)
        if msgtype is None:
            raise DataError(bag, f"{role} topic {requested!r} is {' and '.join(by_type)}; the {role} must be one of "
                                 f"{', '.join(allowed)}")
        return _Topic(role, requested, msgtype, by_type[msgtype])
    for msgtype in allowed:
        names = sorted(name for name, by_type in topics.items() if msgtype in by_type)
        if len(names) > 1:
            raise DataError(bag, f"several {role} topics of type {msgtype}: {', '.join(names)}; choose one with "
                                 f"{_option(role)}")
        if names:
            return _Topic(role, names[0], msgtype, topics[names[0]][msgtype])
    if required:
        types = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise DataError(bag, f"no {role} topic ({types}; name it with {_option(role)}{why}); {_listing(topics)}")
    return None


def _open_reader(bag: Path) -> Any:
    from regionadapt_ros.core.msgconv import rosbags_typestore

    if not bag.exists():
        raise DataError(bag, "rosbag2 path does not exist")
    if bag.is_file() and bag.suffix == ".bag":
        raise DataError(bag, "is a ROS 1 bag; convert it to rosbag2 first (e.g. `rosbags-convert --src BAG`)")
    if bag.is_file() and bag.suffix not in (".mcap", ".db3"):
        raise DataError(bag, "not a rosbag2: expected a bag directory (with metadata.yaml) or a .mcap/.db3 file")
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        raise DataError(bag, "not a rosbag2 directory: metadata.yaml is missing")
    return open_bag(bag, rosbags_typestore(), DataError)
