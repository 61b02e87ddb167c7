"""Which of a bag's topics the replay reads, per input role.

A role's topic is given (``--camera-topic T``: it must be there, with a type of the role), disabled (``""``),
or found (None): the role's default name when the bag has it, else the bag's only topic of the role's types
(Image before CompressedImage; for the speed, the only Float32 topic whose name says speed). Several
candidates and no choice is refused with the list, as ``data import rosbag`` does; a bag without a camera is
refused; an optional role with no topic is left out and said so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core.errors import DataError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "camera": IMAGE_TYPES,
    "lidar": ("sensor_msgs/msg/PointCloud2",),
    "gnss": ("sensor_msgs/msg/NavSatFix",),
    "odom": ("nav_msgs/msg/Odometry",),
    "speed": ("std_msgs/msg/Float32",),
}
DEFAULT_TOPICS = {"camera": "/camera/image", "lidar": "/lidar/points", "gnss": "/gnss/fix", "odom": "/odom",
                  "speed": None}
TF_STATIC_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"
WITHOUT = {
    "lidar": "frames run camera-only, speed capped",
    "gnss": "no GNSS: the region stays the default one",
    "odom": "no odometry",
    "speed": "no speed topic",
}


@dataclass
class TopicChoice:
    """Connections per role (a topic may be recorded as several connections), how each was chosen, and the
    ``/tf_static`` connections."""

    connections: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tf_static: list[Any] = field(default_factory=list)

    def topic(self, role: str) -> str | None:
        conns = self.connections.get(role)
        return conns[0].topic if conns else None

    def msgtype(self, role: str) -> str | None:
        conns = self.connections.get(role)
        return conns[0].msgtype if conns else None

    def role_of(self) -> dict[int, str]:
        """Connection id → role."""
        return {c.id: role for role, conns in self.connections.items() for c in conns}


def _listing(by_topic: dict[str, list[Any]]) -> str:
    if not by_topic:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{t} ({c[0].msgtype})" for t, c in sorted(by_topic.items()))


def choose_topics(path: Path, connections: list[Any], requested: dict[str, str | None]) -> TopicChoice:
    """See the module doc. ``requested``: role → topic (None: find it, "": disabled)."""
    by_topic: dict[str, list[Any]] = {}
    for c in connections:
        by_topic.setdefault(c.topic, []).append(c)
    choice = TopicChoice()
    for role, types in ROLE_TYPES.items():
        wanted = requested.get(role)
        option = f"--{role}-topic"
        if wanted == "":
            continue
        if wanted is not None:
            conns = by_topic.get(wanted)
            if conns is None:
                raise DataError(path, f"no {role} topic {wanted!r} ({option}); {_listing(by_topic)}")
            if conns[0].msgtype not in types:
                raise DataError(path, f"topic {wanted!r} has type {conns[0].msgtype}, expected "
                                      f"{' or '.join(types)}")
            choice.connections[role] = conns
            continue
        default = DEFAULT_TOPICS[role]
        if default is not None and default in by_topic:
            conns = by_topic[default]
            if conns[0].msgtype not in types:
                raise DataError(path, f"topic {default!r} has type {conns[0].msgtype}, expected "
                                      f"{' or '.join(types)}; name the {role} topic with {option}")
            choice.connections[role] = conns
            continue
        picked = None
        for msgtype in types:
            names = sorted(t for t, c in by_topic.items() if c[0].msgtype == msgtype)
            if role == "speed":  # Float32 is too common a type to take any of them for the speed
                names = [t for t in names if "speed" in t.rsplit("/", 1)[-1].lower()]
            if len(names) > 1:
                raise DataError(path, f"several {role} topics of type {msgtype}: {', '.join(names)}; choose one "
                                      f"with {option}")
            if names:
                picked = names[0]
                break
        if picked is None:
            if role == "camera":
                raise DataError(path, f"no camera topic ({' or '.join(types)}; default {default!r}, or name it "
                                      f"with {option}); {_listing(by_topic)}")
            if role != "speed":
                choice.notes.append(f"{role}: none in the bag ({WITHOUT[role]})")
            continue
        choice.connections[role] = by_topic[picked]
        choice.notes.append(f"{role}: {picked} (the bag's only {by_topic[picked][0].msgtype} topic)")
    choice.tf_static = [c for c in connections if c.topic == TF_STATIC_TOPIC and c.msgtype == TF_STATIC_TYPE]
    return choice
