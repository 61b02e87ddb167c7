"""Score a rosbag2 recorded next to the CARLA ROS bridge (or by ``regionadapt drive``) against a route, with the
same ``RouteScorer`` the closed-loop simulator uses live.

What is read (role ``<role>``, default ``ego_vehicle``; the leaderboard's is ``hero``):

- ``/carla/<role>/odometry`` (nav_msgs/Odometry, map frame): the ego's pose and speed, one scorer tick per
  message (the bridge publishes it every simulation step); required. Messages in another frame or with a zero
  stamp are skipped and counted (a bag with no other is refused);
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

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_storage import open_bag, recording_state
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.scoring.criteria import CriteriaConfig, EgoState, RouteScorer, Scenario, StopLine
from regionadapt_ros.scoring.leaderboard import RouteScore
from regionadapt_ros.scoring.route import RoutePath

LIGHT_STATES = {0: "red", 1: "yellow", 2: "green", 3: "off", 4: "unknown"}  # CarlaTrafficLightStatus
# What the CARLA ROS bridge publishes on each topic read here (carla-simulator/ros-bridge, carla_msgs).
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
COLLISION_TYPE = "carla_msgs/msg/CarlaCollisionEvent"
LANE_INVASION_TYPE = "carla_msgs/msg/CarlaLaneInvasionEvent"
ACTOR_LIST_TYPE = "carla_msgs/msg/CarlaActorList"
LIGHT_INFO_TYPE = "carla_msgs/msg/CarlaTrafficLightInfoList"
LIGHT_STATUS_TYPE = "carla_msgs/msg/CarlaTrafficLightStatusList"
TRAFFIC_SPEED_TYPE = "std_msgs/msg/Float32"
MAP_FRAME = "map"  # the bridge's odometry frame, and the frame of leaderboard routes
SPARSE_ROUTE_M = 10.0
# What the notes say of the messages skipped or repaired, by counter (the count is put first)
SKIPPED_NOTES = {
    "non_finite": "odometry message(s) with non-finite pose, orientation or speed (or a speed beyond any car's) "
                  "skipped",
    "not_after_previous": "odometry message(s) stamped at or before the previous one skipped",
    "zero_stamp": "odometry message(s) with a zero header stamp skipped",
    "collision_zero_stamp": "collision message(s) with a zero header stamp before any odometry skipped",
    "collision_timed_by_odometry": "collision message(s) with a zero header stamp timed by the ego's latest odometry",
    "collision_bad_id": "collision message(s) whose other_actor_id is not a uint32 (the bag's definition of "
                        "CarlaCollisionEvent differs from carla_msgs') skipped",
}  # route points further apart than this are keypoints, not a trace of the lanes


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
    files). DataError names the file and what is wrong in it."""
    from regionadapt_ros.scoring.route import read_route_document, route_json

    path = Path(route_file)
    if path.suffix.lower() != ".json":
        return [], None, None
    doc = route_json(read_route_document(path), path)
    try:
        raw_scenarios = doc.get("scenarios", [])
        if not isinstance(raw_scenarios, list):
            raise ValueError(f"scenarios must be a list, got {type(raw_scenarios).__name__}")
        scenarios = [Scenario.from_dict(s) for s in raw_scenarios]
        criteria = CriteriaConfig.from_dict(doc["criteria"]) if "criteria" in doc else None
        route_id = doc.get("route_id")
        if route_id is not None and not isinstance(route_id, str):
            raise ValueError(f"route_id must be a string, got {type(route_id).__name__}")
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"not a route file: {exc}") from None
    return scenarios, criteria, route_id


def score_bag(bag: str | Path, route: RoutePath, *, topics: BagTopics | None = None,
              criteria: CriteriaConfig | None = None, scenarios: list[Scenario] | None = None,
              route_id: str | None = None) -> BagScore:
    """Score the ego's drive in ``bag`` along ``route``."""
    topics = topics or BagTopics()
    bag = Path(bag)
    reader = open_bag(bag, msgconv.rosbags_typestore(), DataError)
    notes: list[str] = []
    try:
        by_topic = _connections_by_topic(reader.connections, topics, bag, notes)
        stop_lines: list[StopLine] = []
        if topics.light_info in by_topic:
            bad_lights = flat_lights = 0
            for conn, _, raw in reader.messages(connections=by_topic[topics.light_info]):
                msg = reader.deserialize(raw, conn.msgtype)
                lines = [stop_line_of(info) for info in msg.traffic_lights]
                finite = [line for line in lines if _finite_line(line)]
                # the leaderboard samples a light's stop points over +-0.9 of the volume's extent: none for a
                # volume of no length, so such a light is never run
                stop_lines = [line for line in finite if math.dist(line.p0, line.p1) > 0.0]
                bad_lights, flat_lights = len(lines) - len(finite), len(finite) - len(stop_lines)
            if bad_lights:
                notes.append(f"{bad_lights} traffic light(s) with non-finite poses or trigger volumes: not scored")
            if flat_lights:
                notes.append(f"{flat_lights} traffic light(s) with a trigger volume of no length: not scored, as "
                             "by the leaderboard")
        else:
            notes.append(f"no {topics.light_info}: red lights not scored")
        if topics.actor_list not in by_topic and topics.collision in by_topic:
            notes.append(f"no {topics.actor_list}: collisions with id 0 count as layout, others as vehicles")
        if topics.traffic_speed not in by_topic:
            notes.append("no surrounding-traffic speeds: the minimum-speed criterion finds no traffic")
        # what the leaderboard scores from its scenarios and the map, which neither the bridge's topics nor a
        # route file of waypoints carry: said, not silently zero
        notes.append("stop signs not scored: neither the bridge's topics nor the route carry them")
        ended = recording_state(bag)
        if ended is not None and ended != "complete":
            notes.append(f"the recording was {ended}: the route is scored as far as it was driven")
        if route.given_spacing_m > SPARSE_ROUTE_M:
            # leaderboard keypoints are 100-450 m apart; route_scenario interpolates them along the lanes at 1 m
            notes.append(f"route points up to {route.given_spacing_m:.0f} m apart are joined by straight lines: the "
                         "leaderboard follows the lanes between them (that needs the map), so route length, "
                         "deviation and outside-lane distances follow the chords")
        if not scenarios:
            notes.append("no scenarios in the route file: scenario timeouts not scored")
        scorer = RouteScorer(route, route_id or bag.name, stop_lines, scenarios or [], criteria)
        wanted = [c for t in (topics.odometry, topics.collision, topics.lane_invasion, topics.actor_list,
                              topics.light_status, topics.traffic_speed) for c in by_topic.get(t, [])]
        actors: dict[int, str] = {}
        states: dict[int, str] = {}
        traffic: float | None = None
        pending: EgoState | None = None
        pending_ns = 0
        odometry = collisions = 0
        skipped = dict.fromkeys((*SKIPPED_NOTES, "layout_hits", "unlisted_hits"), 0)
        other_frames: dict[str, int] = {}  # odometry in a frame that is not the map: frame → messages
        last_t: float | None = None

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
                frame = str(msg.header.frame_id).lstrip("/")
                if frame and frame != MAP_FRAME:
                    # the route is in the map frame: a pose in odom or base_link would be scored as a map pose
                    other_frames[frame] = other_frames.get(frame, 0) + 1
                    continue
                ego = _ego_state(msg)
                if ego is None:
                    skipped["non_finite"] += 1
                    continue
                if ego.t == 0.0:
                    # an unstamped pose has no place on the scorer's clock (timeouts, blocked time)
                    skipped["zero_stamp"] += 1
                    continue
                if last_t is not None and ego.t <= last_t:
                    # a stamp going back or repeated (a bag merged from two recordings, a replay loop): the
                    # scorer's clock must not run backwards, and one instant is scored once
                    skipped["not_after_previous"] += 1
                    continue
                flush()
                last_t = ego.t
                pending = ego
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
                stamp = msgconv.stamp_to_s(msg.header)
                if stamp == 0.0:
                    # unstamped: a zero time would defeat the leaderboard's rule that one actor counts once
                    # within 5 s; it happened at the ego's latest pose, so it takes that pose's time
                    if last_t is None:
                        skipped["collision_zero_stamp"] += 1
                        continue
                    stamp = last_t
                    skipped["collision_timed_by_odometry"] += 1
                other = msg.other_actor_id
                if isinstance(other, bool) or not isinstance(other, numbers.Integral) or not 0 <= other < 2**32:
                    # recorded with another definition of the message than carla_msgs' (uint32 other_actor_id)
                    skipped["collision_bad_id"] += 1
                    continue
                collisions += 1
                other = int(other)
                if other == 0:
                    skipped["layout_hits"] += 1
                elif other not in actors and topics.actor_list in by_topic:
                    skipped["unlisted_hits"] += 1
                type_id = actors.get(other) or ("static.layout" if other == 0 else "vehicle.unknown")
                scorer.collision(stamp, other, type_id)
            elif topic == topics.lane_invasion:
                flush()
                scorer.lane_invasion(msgconv.stamp_to_s(msg.header), [int(m) for m in msg.crossed_lane_markings])
        flush()
        skip_notes = [f"{skipped[key]} {text}" for key, text in SKIPPED_NOTES.items() if skipped[key]]
        if skipped["layout_hits"]:
            skip_notes.append(f"{skipped['layout_hits']} collision message(s) with actor 0 (the map) counted as "
                              "static layout; the leaderboard does not count sidewalks, which a bag cannot tell "
                              "apart")  # CarlaCollisionEvent has no type: CARLA reports all map geometry as actor 0
        if skipped["unlisted_hits"]:
            skip_notes.append(f"{skipped['unlisted_hits']} collision message(s) with an actor missing from "
                              f"{topics.actor_list} counted as vehicles")
        for frame, n in sorted(other_frames.items()):
            skip_notes.append(f"{n} odometry message(s) in frame {frame!r}, not {MAP_FRAME!r} (the route's "
                              "frame), skipped")
        notes += skip_notes
    except DataError:
        raise
    except Exception as exc:  # a truncated or corrupt storage file fails while reading
        raise DataError(bag, f"bag is corrupt or truncated: {type(exc).__name__}: {exc}") from exc
    finally:
        reader.close()
    if odometry == 0:
        raise DataError(bag, f"{topics.odometry} has no usable messages"
                        + (f" ({'; '.join(skip_notes)})" if skip_notes else ""))
    score = scorer.finish()
    if scorer.start_station_m > 0:
        notes.append(f"the bag starts {scorer.start_station_m:.0f} m along the route: route completion counts what "
                     "it drives from there")
    return BagScore(score, odometry, collisions, notes)


def _connections_by_topic(connections: Any, topics: BagTopics, bag: Path, notes: list[str]) -> dict[str, list]:
    """The bag's connections of each wanted topic whose type is the one the bridge publishes there. The odometry
    topic is required (DataError naming what the bag has); another topic of a different type is left out with
    a note. A topic recorded over several connections (a split or merged recording) keeps all of them."""
    expected = {topics.odometry: ODOMETRY_TYPE, topics.collision: COLLISION_TYPE,
                topics.lane_invasion: LANE_INVASION_TYPE, topics.actor_list: ACTOR_LIST_TYPE,
                topics.light_info: LIGHT_INFO_TYPE, topics.light_status: LIGHT_STATUS_TYPE,
                topics.traffic_speed: TRAFFIC_SPEED_TYPE}
    present: dict[str, set[str]] = {}
    by_topic: dict[str, list] = {}
    for conn in connections:
        present.setdefault(conn.topic, set()).add(conn.msgtype)
        if conn.topic in expected and _type_name(conn.msgtype) == expected[conn.topic]:
            by_topic.setdefault(conn.topic, []).append(conn)
    if topics.odometry not in by_topic:
        if topics.odometry in present:
            raise DataError(bag, f"{topics.odometry} is {', '.join(sorted(present[topics.odometry]))}, not "
                                 f"{ODOMETRY_TYPE}")
        listing = ", ".join(sorted(present)) or "none"
        raise DataError(bag, f"no ego odometry topic {topics.odometry!r} ({ODOMETRY_TYPE}); the bag has: {listing}")
    for topic, kind in expected.items():
        if topic in present and topic not in by_topic:
            notes.append(f"{topic} is {', '.join(sorted(present[topic]))}, not {kind}: not read")
    return by_topic


def _type_name(name: str) -> str:
    try:
        return msgconv.normalise_type_name(name)
    except ValueError:
        return str(name)


def _ego_state(msg: Any) -> EgoState | None:
    """The scorer's ego state from a nav_msgs/Odometry; None when any value it uses is not finite, or the speed
    is beyond any car's (``MAX_PLAUSIBLE_SPEED_MPS``)."""
    pose = msg.pose.pose
    twist = msg.twist.twist.linear
    q = pose.orientation
    values = (pose.position.x, pose.position.y, q.x, q.y, q.z, q.w, twist.x, twist.y, twist.z)
    if not all(math.isfinite(v) for v in values) or not any(values[2:6]):
        return None  # a zero quaternion has no yaw either
    speed = math.hypot(twist.x, twist.y, twist.z)  # squares of 1e300 overflow; hypot does not
    if not speed <= msgconv.MAX_PLAUSIBLE_SPEED_MPS:
        return None  # no car moves at 1e300 m/s: the message is wrong, not the driving
    return EgoState(msgconv.stamp_to_s(msg.header), float(pose.position.x), float(pose.position.y), _yaw(q), speed)


def _finite_line(line: StopLine) -> bool:
    return all(math.isfinite(v) for v in (*line.p0, *line.p1, *(line.centre or ())))
