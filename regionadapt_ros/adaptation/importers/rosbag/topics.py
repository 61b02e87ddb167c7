"""Which of a bag's topics is the camera, the lidar, the speed and the command: by name, by option, or the only one
of its type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionadapt_ros.adaptation.importers.rosbag.config import (
    ODOMETRY_TYPE,
    ROLE_TYPES,
    TWIST_STAMPED_TYPE,
)
from regionadapt_ros.core.bag_storage import BagExtent, open_bag
from regionadapt_ros.core.bag_topics import SPEED_HINTS, BagTopics, TopicRole
from regionadapt_ros.core.errors import DataError


@dataclass
class _Topic:
    role: str
    topic: str
    msgtype: str
    connections: list[Any]
    count: int  # messages, as the bag's storage holds them (core.bag_storage.bag_extent)

    def describe(self) -> dict[str, Any]:
        return {"topic": self.topic, "type": self.msgtype, "messages": self.count}


# The project's own topic names (DESIGN.md topic contract), taken first when a bag has them; a speed given as a
# bare Float32 or a vehicle's TwistStamped is found only on a topic named for it (the types are too common to take
# any one of them: a TwistStamped may be a command).
DEFAULT_TOPICS = {"camera": "/camera/image", "lidar": "/lidar/points", "speed": "/odom"}
ROLES = {name: TopicRole(name, types, DEFAULT_TOPICS.get(name), SPEED_HINTS) for name, types in ROLE_TYPES.items()}
# Commands derived from odometry need a yaw rate: the speed is then found among the types that carry one.
ROLES["speed_with_yaw_rate"] = TopicRole("speed", (ODOMETRY_TYPE, TWIST_STAMPED_TYPE), DEFAULT_TOPICS["speed"],
                                        SPEED_HINTS)


def _pick_topic(topics: BagTopics, extent: BagExtent, role: str, requested: str | None, required: bool,
                why: str = "") -> _Topic | None:
    """The topic of one role, chosen by the rule every bag reader follows (``core.bag_topics``)."""
    chosen = topics.choose(ROLES[role], requested, required=required, why=why)
    if chosen is None:
        return None
    return _Topic(chosen.role, chosen.topic, chosen.msgtype, chosen.connections, extent.count_of(chosen.connections))


def _open_reader(bag: Path) -> Any:
    from regionadapt_ros.core.msgconv import rosbags_typestore

    if not bag.exists():
        raise DataError(bag, "rosbag2 path does not exist")
    if bag.is_file() and bag.suffix == ".bag":
        raise DataError(bag, "is a ROS 1 bag; convert it to rosbag2 first (e.g. `rosbags-convert --src BAG`)")
    if bag.is_file() and bag.suffix not in (".mcap", ".db3"):
        raise DataError(bag, "not a rosbag2: expected a bag directory (with metadata.yaml) or a .mcap/.db3 file")
    return open_bag(bag, rosbags_typestore(), DataError)
