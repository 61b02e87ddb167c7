"""Score a rosbag2 recorded next to the CARLA ROS bridge (or by ``regionadapt drive``) against a route, with the
same ``RouteScorer`` the closed-loop simulator uses live.

What is read (role ``<role>``, default ``ego_vehicle``; the leaderboard's is ``hero``):

- ``/carla/<role>/odometry`` (nav_msgs/Odometry, map frame): the ego's pose and speed, one scorer tick per
  message (the bridge publishes it every simulation step); required;
- ``/carla/<role>/collision`` (carla_msgs/CarlaCollisionEvent), classified with ``/carla/actor_list``
  (carla_msgs/CarlaActorList: id → type id; id 0 is the static layout). Without an actor list a collision
  with id 0 counts as layout and any other as a vehicle, and the summary says so;
- ``/carla/<role>/lane_invasion`` (carla_msgs/CarlaLaneInvasionEvent): counted by marking kind (extras);
- ``/carla/traffic_lights/info`` and ``/status``: red-light infractions and stops. The stop line of a light is
  taken as its trigger volume's x axis through the volume's centre (CARLA's trigger volumes lie across the
  lanes they govern; the leaderboard follows those lanes to the junction, which needs the map);
- ``/regionadapt/sim/traffic_speed`` (std_msgs/Float32), when present: the surrounding traffic's mean speed for
  the minimum-speed criterion (a CARLA bag does not carry it, and the criterion then finds no traffic, as the
  leaderboard does on routes without background vehicles).

Messages are taken in log-time order; an odometry tick is scored once every message of the same time has
been read (the light states of that instant first), events with a later time after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.scoring.criteria import CriteriaConfig, EgoState, RouteScorer, Scenario, StopLine
from regionadapt_ros.scoring.leaderboard import RouteScore
from regionadapt_ros.scoring.route import RoutePath

LIGHT_STATES = {0: "red", 1: "yellow", 2: "green", 3: "off", 4: "unknown"}  # CarlaTrafficLightStatus


@dataclass
class BagTopics:
    role: str = "ego_vehicle"
    odometry: str | None = None
    collision: str | None = None
    lane_invasion: str | None = None
    actor_list: str = "/carla/actor_list"
    light_info: str = "/carla/traffic_lights/info"
    light_status: str = "/carla/traffic_lights/status"
    traffic_speed: str = "/regionadapt/sim/traffic_speed"

    def __post_init__(self) -> None:
        self.odometry = self.odometry or f"/carla/{self.role}/odometry"
        self.collision = self.collision or f"/carla/{self.role}/collision"
        self.lane_invasion = self.lane_invasion or f"/carla/{self.role}/lane_invasion"


@dataclass
class BagScore:
    score: RouteScore
    odometry_messages: int
    collisions_seen: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score.as_dict(), "odometry_messages": self.odometry_messages,
                "collisions_seen": self.collisions_seen, "notes": list(self.notes)}


def _yaw(q: Any) -> float:
    from regionadapt_ros.region_session import yaw_from_quaternion

    return yaw_from_quaternion(q.x, q.y, q.z, q.w)


def stop_line_of(info: Any) -> StopLine:
    """A CarlaTrafficLightInfo's stop line in the map frame: the trigger volume's x axis through its centre."""
    pose = info.transform
    yaw = _yaw(pose.orientation)
    c, s = math.cos(yaw), math.sin(yaw)
    box = info.trigger_volume
    cx = pose.position.x + c * box.center.x - s * box.center.y
    cy = pose.position.y + s * box.center.x + c * box.center.y
    hx = 0.5 * box.size.x
    return StopLine(int(info.id), (cx - c * hx, cy - s * hx), (cx + c * hx, cy + s * hx), (cx, cy))


def route_extras(route_file: str | Path) -> tuple[list[Scenario], CriteriaConfig | None, str | None]:
    """Scenarios, criteria and route id a route JSON written by ``regionadapt drive`` carries (none for other
    files)."""
    path = Path(route_file)
    if path.suffix.lower() != ".json":
        return [], None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the route: {exc}") from exc
    scenarios = [Scenario(**s) for s in doc.get("scenarios", [])]
    criteria = CriteriaConfig(**doc["criteria"]) if "criteria" in doc else None
    return scenarios, criteria, doc.get("route_id")


def score_bag(bag: str | Path, route: RoutePath, *, topics: BagTopics | None = None,
              criteria: CriteriaConfig | None = None, scenarios: list[Scenario] | None = None,
              route_id: str | None = None) -> BagScore:
    """Score the ego's drive in ``bag`` along ``route``."""
    from rosbags.highlevel import AnyReader

    topics = topics or BagTopics()
    bag = Path(bag)
    if not bag.exists():
        raise DataError(bag, "bag path does not exist")
    store = msgconv.rosbags_typestore()
    try:
        reader = AnyReader([bag], default_typestore=store)
        reader.open()
    except Exception as exc:  # rosbags raises several types for unreadable metadata / storage
        raise DataError(bag, f"cannot open as a rosbag2 (sqlite3 or MCAP): {exc}") from exc
    notes: list[str] = []
    try:
        by_topic = {c.topic: c for c in reader.connections}
        if topics.odometry not in by_topic:
            listing = ", ".join(sorted(by_topic)) or "none"
            raise DataError(bag, f"no ego odometry topic {topics.odometry!r} (nav_msgs/Odometry); the bag has: "
                                 f"{listing}")
        stop_lines: list[StopLine] = []
        if topics.light_info in by_topic:
            for conn, _, raw in reader.messages(connections=[by_topic[topics.light_info]]):
                msg = reader.deserialize(raw, conn.msgtype)
                stop_lines = [stop_line_of(info) for info in msg.traffic_lights]
        else:
            notes.append(f"no {topics.light_info}: red lights not scored")
        if topics.actor_list not in by_topic and topics.collision in by_topic:
            notes.append(f"no {topics.actor_list}: collisions with id 0 count as layout, others as vehicles")
        if topics.traffic_speed not in by_topic:
            notes.append("no surrounding-traffic speeds: the minimum-speed criterion finds no traffic")
        scorer = RouteScorer(route, route_id or bag.name, stop_lines, scenarios or [], criteria)
        wanted = [by_topic[t] for t in (topics.odometry, topics.collision, topics.lane_invasion, topics.actor_list,
                                        topics.light_status, topics.traffic_speed) if t in by_topic]
        actors: dict[int, str] = {}
        states: dict[int, str] = {}
        traffic: float | None = None
        pending: EgoState | None = None
        pending_ns = 0
        odometry = collisions = 0

        def flush() -> None:
            nonlocal pending
            if pending is not None and not scorer.done:
                scorer.step(pending, states, None if traffic is None else [traffic])
            pending = None

        for conn, ns, raw in reader.messages(connections=wanted):
            t_log = ns  # log time orders the ticks; stamps are what the scorer sees
            if pending is not None and t_log > pending_ns:
                flush()
            if scorer.done:
                break
            msg = reader.deserialize(raw, conn.msgtype)
            topic = conn.topic
            if topic == topics.odometry:
                flush()
                twist = msg.twist.twist.linear
                pending = EgoState(msgconv.stamp_to_s(msg.header), float(msg.pose.pose.position.x),
                                   float(msg.pose.pose.position.y), _yaw(msg.pose.pose.orientation),
                                   math.sqrt(twist.x ** 2 + twist.y ** 2 + twist.z ** 2))
                pending_ns = t_log
                odometry += 1
            elif topic == topics.light_status:
                states = {int(s.id): LIGHT_STATES.get(int(s.state), "unknown") for s in msg.traffic_lights}
            elif topic == topics.traffic_speed:
                traffic = None if not math.isfinite(msg.data) else float(msg.data)
            elif topic == topics.actor_list:
                actors = {int(a.id): str(a.type) for a in msg.actors}
            elif topic == topics.collision:
                flush()
                collisions += 1
                other = int(msg.other_actor_id)
                type_id = actors.get(other) or ("static.layout" if other == 0 else "vehicle.unknown")
                scorer.collision(msgconv.stamp_to_s(msg.header), other, type_id)
            elif topic == topics.lane_invasion:
                flush()
                scorer.lane_invasion(msgconv.stamp_to_s(msg.header), [int(m) for m in msg.crossed_lane_markings])
        flush()
    except DataError:
        raise
    except Exception as exc:  # a truncated or corrupt storage file fails while reading
        raise DataError(bag, f"bag is corrupt or truncated: {type(exc).__name__}: {exc}") from exc
    finally:
        reader.close()
    if odometry == 0:
        raise DataError(bag, f"{topics.odometry} has no messages")
    return BagScore(scorer.finish(), odometry, collisions, notes)
