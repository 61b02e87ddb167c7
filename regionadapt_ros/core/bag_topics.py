"""Which of a bag's topics plays a role (the camera, the speed, ...): one rule for every command that reads bags.

A role's topic is given (it must be in the bag, recorded with a type of the role), disabled (``""``), or found
(None): the role's usual name when the bag has it, else the bag's only topic of the role's most preferred type
that it has. A type too common to be taken by itself (``std_msgs/Float32``: a replay's own output has
``/perception/obstacle_distance``; ``geometry_msgs/TwistStamped``: a command on Jazzy) is found only on a topic
whose last name part says what it is ("speed", "twist") and does not say it is a command (``twist_cmd``,
``target_speed``: a driver's TwistStamped or Float32 command is not the vehicle's speed); beside a topic so
named that does say it, it is not found by itself either (the list is refused, as for several candidates).
Several candidates and no choice is refused with the list; a required role with no topic is refused with the
bag's topics. A topic recorded with two types (two recordings merged, two publishers disagreeing) plays the role
with its messages of the role's type only, and a note says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core.errors import DataError

ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
FLOAT32_TYPE = "std_msgs/msg/Float32"
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
# Types too common to be taken as the only one of their kind, and the word a topic's name must say to be found:
# one rule for the replay and the import, so both read the same speed from one bag.
SPEED_HINTS = ((FLOAT32_TYPE, "speed"), (TWIST_STAMPED_TYPE, "twist"))
# Words in a topic's last name part that make it a command or a set point, whatever else the name says.
COMMAND_WORDS = ("cmd", "command", "ctrl", "control", "target", "goal", "setpoint", "desired")


def names_role(topic: str, word: str) -> bool:
    """True when ``topic``'s last name part contains ``word`` and no ``COMMAND_WORDS``."""
    last = topic.rsplit("/", 1)[-1].lower()
    return word in last and not any(w in last for w in COMMAND_WORDS)


@dataclass(frozen=True)
class TopicRole:
    """What a role reads: its ``types`` in order of preference, its usual topic name, and ``hints``: (type, word)
    pairs of the types found only on a topic whose name says the word and no command (``names_role``)."""

    name: str
    types: tuple[str, ...]
    default: str | None = None
    hints: tuple[tuple[str, str], ...] = ()

    @property
    def option(self) -> str:
        return f"--{self.name}-topic"

    def types_text(self) -> str:
        return " or ".join(self.types)


# The vehicle's speed inputs, in the order they are preferred (the driving node's speed_source values): the
# replay feeds the session the first a bag has, and the import labels from the same one.
SPEED_SOURCE_ROLES = {
    "odom": TopicRole("odom", (ODOMETRY_TYPE,), "/odom", SPEED_HINTS),
    "speed": TopicRole("speed", (FLOAT32_TYPE,), None, SPEED_HINTS),
    "twist": TopicRole("twist", (TWIST_STAMPED_TYPE,), "/vehicle/twist", SPEED_HINTS),
}


@dataclass
class ChosenTopic:
    """The topic of a role, the message type it is read as, its connections of that type, and how it was
    chosen ("requested", "default" or "only")."""

    role: str
    topic: str
    msgtype: str
    connections: list[Any]
    how: str


@dataclass
class BagTopics:
    """A bag's connections by topic, and the notes that choosing roles' topics left."""

    path: Path
    by_topic: dict[str, list[Any]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, path: str | Path, connections: Iterable[Any]) -> BagTopics:
        by_topic: dict[str, list[Any]] = {}
        for c in connections:
            by_topic.setdefault(c.topic, []).append(c)
        return cls(Path(path), by_topic)

    def listing(self) -> str:
        if not self.by_topic:
            return "the bag has no topics"
        return "the bag has: " + ", ".join(f"{t} ({' and '.join(_types_of(c))})"
                                           for t, c in sorted(self.by_topic.items()))

    def choose(self, role: TopicRole, requested: str | None, *, required: bool = False, why: str = ""
               ) -> ChosenTopic | None:
        """The topic of ``role`` (see the module doc); None when disabled, or optional and absent. ``why``
        is added to the refusal of a required role that is missing (what else the user can do)."""
        if requested == "":
            return None
        if requested is not None:
            return self._named(role, requested, "requested", "")
        if role.default is not None and role.default in self.by_topic:
            return self._named(role, role.default, "default", f"; name the {role.name} topic with {role.option}")
        for msgtype in role.types:
            names = sorted(t for t, conns in self.by_topic.items() if msgtype in _types_of(conns))
            hint = dict(role.hints).get(msgtype)
            said = ""
            if hint is not None:
                named = [t for t in names if hint in t.rsplit("/", 1)[-1].lower()]
                names = [t for t in named if names_role(t, hint)]
                if names and len(names) < len(named):
                    # A command named so sits beside it: a stack that records one command under a command's name
                    # may record another under a plain one (Autoware.AI's /twist_cmd and /twist_raw), so the one
                    # left is no safer a choice than any.
                    names = named
                said = f" named *{hint}*"
            if len(names) > 1:
                raise DataError(self.path, f"several {role.name} topics of type {msgtype}: {', '.join(names)}; "
                                           f"choose one with {role.option}")
            if names:
                chosen = self._of_type(names[0], msgtype, role)
                self.notes.append(f"{role.name}: {names[0]} (the bag's only {msgtype} topic{said})")
                return chosen
        if required:
            default = f"; default {role.default!r}, or" if role.default else ";"
            raise DataError(self.path, f"no {role.name} topic ({role.types_text()}{default} name it with "
                                       f"{role.option}{why}); {self.listing()}")
        return None

    def _named(self, role: TopicRole, topic: str, how: str, hint: str) -> ChosenTopic:
        conns = self.by_topic.get(topic)
        if conns is None:
            raise DataError(self.path, f"no {role.name} topic {topic!r} ({role.option}); {self.listing()}")
        msgtype = next((t for t in role.types if t in _types_of(conns)), None)
        if msgtype is None:
            raise DataError(self.path, f"{role.name} topic {topic!r} has type {' and '.join(_types_of(conns))}, "
                                       f"expected {role.types_text()}{hint}")
        chosen = self._of_type(topic, msgtype, role)
        chosen.how = how
        return chosen

    def _of_type(self, topic: str, msgtype: str, role: TopicRole) -> ChosenTopic:
        conns = self.by_topic[topic]
        others = [t for t in _types_of(conns) if t != msgtype]
        if others:
            self.notes.append(f"{topic} is also recorded as {' and '.join(others)}: only its {msgtype} messages "
                              f"are read as the {role.name}")
        return ChosenTopic(role.name, topic, msgtype, [c for c in conns if c.msgtype == msgtype], "only")


def _types_of(conns: list[Any]) -> list[str]:
    return list(dict.fromkeys(c.msgtype for c in conns))
