"""Which of a bag's topics the replay reads, per input role, by the rule of ``core.bag_topics`` that
``data import rosbag`` follows too: given (``--camera-topic T``), disabled (``""``), or found (the role's
usual name, else the bag's only topic of its types: Image before CompressedImage; for the speed, the only
Float32 topic whose name says speed; for a vehicle's twist, the only TwistStamped topic whose name says twist,
as a command can be a TwistStamped too). A bag without a camera is refused; an optional role with no topic is
left out and said so. Of odometry, speed and twist, the driving session reads one, as the driving node's
``speed_source`` does: the one named by its option, else odometry when the bag has it, else the speed, else the
twist; a speed or twist topic it does not read is left out (odometry is still read for the region's
prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core.bag_topics import SPEED_HINTS, SPEED_SOURCE_ROLES, BagTopics, TopicRole
from regionadapt_ros.core.frames import TF_STATIC_TOPIC, TF_STATIC_TYPE

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "camera": IMAGE_TYPES,
    "lidar": ("sensor_msgs/msg/PointCloud2",),
    "gnss": ("sensor_msgs/msg/NavSatFix",),
    "odom": ("nav_msgs/msg/Odometry",),
    "speed": ("std_msgs/msg/Float32",),
    "twist": ("geometry_msgs/msg/TwistStamped",),
}
DEFAULT_TOPICS = {"camera": "/camera/image", "lidar": "/lidar/points", "gnss": "/gnss/fix", "odom": "/odom",
                  "speed": None, "twist": "/vehicle/twist"}
ROLES = {name: TopicRole(name, types, DEFAULT_TOPICS[name], SPEED_HINTS) for name, types in ROLE_TYPES.items()}
ROLES.update(SPEED_SOURCE_ROLES)  # the same speed inputs, in the same order, as the import finds
SPEED_ROLES = tuple(SPEED_SOURCE_ROLES)  # in the order the replay prefers them (the node's speed_source values)
WITHOUT = {
    "lidar": "frames run camera-only, speed capped",
    "gnss": "no GNSS: the region stays the default one",
    "odom": "no odometry",
    "speed": "no speed topic",
    "twist": "no vehicle twist",
}


@dataclass
class TopicChoice:
    """Connections per role (a topic may be recorded as several connections), how each was chosen, and the
    ``/tf_static`` connections."""

    connections: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tf_static: list[Any] = field(default_factory=list)
    speed_source: str = "odom"  # the driving session's speed input: odom, speed or twist

    def topic(self, role: str) -> str | None:
        conns = self.connections.get(role)
        return conns[0].topic if conns else None

    def msgtype(self, role: str) -> str | None:
        conns = self.connections.get(role)
        return conns[0].msgtype if conns else None

    def role_of(self) -> dict[int, str]:
        """Connection id → role."""
        return {c.id: role for role, conns in self.connections.items() for c in conns}


def choose_topics(path: Path, connections: list[Any], requested: dict[str, str | None]) -> TopicChoice:
    """See the module doc. ``requested``: role → topic (None: find it, "": disabled)."""
    bag = BagTopics.of(path, connections)
    choice = TopicChoice(notes=bag.notes)
    for name, role in ROLES.items():
        chosen = bag.choose(role, requested.get(name), required=name == "camera")
        if chosen is not None:
            choice.connections[name] = chosen.connections
        elif requested.get(name) is None and name not in ("speed", "twist"):
            bag.notes.append(f"{name}: none in the bag ({WITHOUT[name]})")
    named = [role for role in SPEED_ROLES if requested.get(role) and role in choice.connections]
    found = [role for role in SPEED_ROLES if role in choice.connections]
    choice.speed_source = (named or found or ["odom"])[0]
    for role in ("speed", "twist"):
        if role != choice.speed_source and role in choice.connections:
            bag.notes.append(f"{role}: {choice.topic(role)} not read (the speed comes from "
                             f"{choice.topic(choice.speed_source)})")
            del choice.connections[role]
    choice.tf_static = [c for c in connections if c.topic == TF_STATIC_TOPIC and c.msgtype == TF_STATIC_TYPE]
    return choice
