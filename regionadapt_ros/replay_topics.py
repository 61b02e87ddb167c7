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
    return "the bag has: " + ", ".join(f"{t} ({' and '.join(_types_of(c))})" for t, c in sorted(by_topic.items()))


def _types_of(conns: list[Any]) -> list[str]:
    return list(dict.fromkeys(c.msgtype for c in conns))


def _of_role(topic: str, conns: list[Any], types: tuple[str, ...], notes: list[str]) -> list[Any]:
    """The connections of ``topic`` with the first of the role's ``types`` it was recorded with. A topic can be
    recorded with two types (two recordings merged, two publishers disagreeing): the other type's messages are
    not the role's and are left out, with a note."""
    for msgtype in types:
        chosen = [c for c in conns if c.msgtype == msgtype]
        if chosen:
            others = [t for t in _types_of(conns) if t != msgtype]
            if others:
                notes.append(f"{topic} is also recorded as {' and '.join(others)}: only its {msgtype} messages "
                             "are read")
            return chosen
    return []


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
            if wanted not in by_topic:
                raise DataError(path, f"no {role} topic {wanted!r} ({option}); {_listing(by_topic)}")
            conns = _of_role(wanted, by_topic[wanted], types, choice.notes)
            if not conns:
                raise DataError(path, f"topic {wanted!r} has type {' and '.join(_types_of(by_topic[wanted]))}, "
                                      f"expected {' or '.join(types)}")
            choice.connections[role] = conns
            continue
        default = DEFAULT_TOPICS[role]
        if default is not None and default in by_topic:
            conns = _of_role(default, by_topic[default], types, choice.notes)
            if not conns:
                raise DataError(path, f"topic {default!r} has type {' and '.join(_types_of(by_topic[default]))}, "
                                      f"expected {' or '.join(types)}; name the {role} topic with {option}")
            choice.connections[role] = conns
            continue
        picked: tuple[str, str] | None = None
        for msgtype in types:
            names = sorted(t for t, c in by_topic.items() if msgtype in _types_of(c))
            if role == "speed":  # Float32 is too common a type to take any of them for the speed
                names = [t for t in names if "speed" in t.rsplit("/", 1)[-1].lower()]
            if len(names) > 1:
                raise DataError(path, f"several {role} topics of type {msgtype}: {', '.join(names)}; choose one "
                                      f"with {option}")
            if names:
                picked = names[0], msgtype
                break
        if picked is None:
            if role == "camera":
                raise DataError(path, f"no camera topic ({' or '.join(types)}; default {default!r}, or name it "
                                      f"with {option}); {_listing(by_topic)}")
            if role != "speed":
                choice.notes.append(f"{role}: none in the bag ({WITHOUT[role]})")
            continue
        name, msgtype = picked
        choice.connections[role] = _of_role(name, by_topic[name], (msgtype,), choice.notes)
        choice.notes.append(f"{role}: {name} (the bag's only {msgtype} topic)")
    choice.tf_static = [c for c in connections if c.topic == TF_STATIC_TOPIC and c.msgtype == TF_STATIC_TYPE]
    return choice
