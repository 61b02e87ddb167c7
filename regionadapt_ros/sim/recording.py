"""The closed-loop run as a rosbag2 (MCAP), with what the CARLA ROS bridge would have recorded next to it.

Topics: the product's inputs as a vehicle records them (``/camera/image`` rgb8, ``/lidar/points``, ``/odom``,
``/gnss/fix`` on routes with geofences; camera and lidar can be left out) and its outputs (``/control/command``,
``/regionadapt/active_region``); what ``regionadapt score`` reads, under the CARLA bridge's names for role
``ego_vehicle``: ``/carla/ego_vehicle/odometry`` (the bounding-box centre in the map frame),
``/carla/ego_vehicle/collision`` and ``/carla/ego_vehicle/lane_invasion`` (carla_msgs events),
``/carla/actor_list``, ``/carla/traffic_lights/info`` and ``/status``; the mean speed of the surrounding traffic
(``/regionadapt/sim/traffic_speed``, std_msgs/Float32, NaN when there is none: CARLA bags lack it, and
without it the minimum-speed criterion finds no traffic), and the score as it happened:
``/regionadapt/infractions`` (std_msgs/String, one JSON object per infraction) and ``/regionadapt/route_score``
(the final score as JSON). ``route.json`` next to the bag holds the route, its scenarios and the criteria, for
``regionadapt score BAG --route route.json``.

Events that happen while the world moves from one tick to the next are stamped half a period after the tick,
so that a reader sees them between the two odometry messages, in the order the live scorer saw them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.bag_storage import mark_recording
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.scoring.criteria import RouteSetup, StopLine
from regionadapt_ros.scoring.leaderboard import InfractionEvent, RouteScore

ROLE = "ego_vehicle"
TOPICS = {
    "camera": ("/camera/image", "sensor_msgs/msg/Image"),
    "lidar": ("/lidar/points", "sensor_msgs/msg/PointCloud2"),
    "odom": ("/odom", "nav_msgs/msg/Odometry"),
    "gnss": ("/gnss/fix", "sensor_msgs/msg/NavSatFix"),
    "command": ("/control/command", "ackermann_msgs/msg/AckermannDriveStamped"),
    "active_region": ("/regionadapt/active_region", "std_msgs/msg/String"),
    "carla_odom": (f"/carla/{ROLE}/odometry", "nav_msgs/msg/Odometry"),
    "collision": (f"/carla/{ROLE}/collision", "carla_msgs/msg/CarlaCollisionEvent"),
    "lane_invasion": (f"/carla/{ROLE}/lane_invasion", "carla_msgs/msg/CarlaLaneInvasionEvent"),
    "actor_list": ("/carla/actor_list", "carla_msgs/msg/CarlaActorList"),
    "light_info": ("/carla/traffic_lights/info", "carla_msgs/msg/CarlaTrafficLightInfoList"),
    "light_status": ("/carla/traffic_lights/status", "carla_msgs/msg/CarlaTrafficLightStatusList"),
    "traffic_speed": ("/regionadapt/sim/traffic_speed", "std_msgs/msg/Float32"),
    "infractions": ("/regionadapt/infractions", "std_msgs/msg/String"),
    "route_score": ("/regionadapt/route_score", "std_msgs/msg/String"),
}
LIGHT_STATE_CODES = {"red": 0, "yellow": 1, "green": 2}  # CarlaTrafficLightStatus


def ns_to_s(ns: int) -> float:
    """Float seconds of an integer nanosecond time, computed as ``msgconv.stamp_to_s`` computes them from a
    header, so that live and recorded times are the same floats."""
    return int(ns // 1_000_000_000) + int(ns % 1_000_000_000) * 1e-9


def quaternion_yaw(yaw: float) -> float:
    """The yaw a reader gets back from the odometry quaternion of ``yaw`` (the live scorer uses it too)."""
    from regionadapt_ros.region_session import yaw_from_quaternion

    return yaw_from_quaternion(0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


def _pose(types: Any, x: float, y: float, yaw: float) -> Any:
    q = types("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))
    return types("geometry_msgs/msg/Pose")(position=types("geometry_msgs/msg/Point")(x=float(x), y=float(y), z=0.0),
                                           orientation=q)


class BagRecorder:
    """Writes one route's bag; ``close`` finishes it."""

    def __init__(self, out_dir: Path, setup: RouteSetup, *, sensors: bool = True, gnss: bool = False,
                 storage: str = "mcap", meta: dict[str, Any] | None = None,
                 command_msgtype: str = "ackermann_msgs/msg/AckermannDriveStamped") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.dir = Path(out_dir)
        bag = self.dir / "bag"
        if bag.exists():
            raise DataError(bag, "output bag already exists")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = msgconv.rosbags_typestore()
        self.types = msgconv.rosbags_types(self.store)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(bag, version=8, storage_plugin=plugin)
        self.writer.open()
        self.topics = dict(TOPICS, command=(TOPICS["command"][0], command_msgtype))
        keys = [k for k in self.topics if (sensors or k not in ("camera", "lidar")) and (gnss or k != "gnss")]
        self.conns = {k: self.writer.add_connection(self.topics[k][0], self.topics[k][1], typestore=self.store)
                      for k in keys}
        self.sensors = sensors
        self._actors: dict[int, str] = {}
        route_doc = setup.route.to_json()
        route_doc["scenarios"] = [asdict(s) for s in setup.scenarios]
        route_doc["criteria"] = asdict(setup.config)
        route_doc.update(meta or {})
        (self.dir / "route.json").write_text(json.dumps(route_doc) + "\n")
        self.bag = bag

    def _write(self, key: str, ns: int, msg: Any) -> None:
        if key in self.conns:
            self.writer.write(self.conns[key], ns, self.store.serialize_cdr(msg, self.topics[key][1]))

    def lights(self, ns: int, stop_lines: list[StopLine]) -> None:
        """The stop lines as CARLA traffic-light info: the pose is the middle of the stop line with its x axis
        along the line, and the trigger volume is centred there with size.x = the line's length."""
        t, types = ns_to_s(ns), self.types
        infos = []
        for line in stop_lines:
            (x0, y0), (x1, y1) = line.p0, line.p1
            mx, my = line.middle
            yaw = math.atan2(y1 - y0, x1 - x0)
            box = types("carla_msgs/msg/CarlaBoundingBox")(
                center=msgconv.build_vector3(types, 0.0, 0.0, 0.0),
                size=msgconv.build_vector3(types, math.hypot(x1 - x0, y1 - y0), 1.0, 2.0))
            infos.append(types("carla_msgs/msg/CarlaTrafficLightInfo")(id=int(line.light_id),
                                                                        transform=_pose(types, mx, my, yaw),
                                                                        trigger_volume=box))
        self._write("light_info", ns, types("carla_msgs/msg/CarlaTrafficLightInfoList")(traffic_lights=infos))
        del t

    def tick(self, ns: int, *, msgs: Any, pose: Any, yaw_rate: float, light_states: dict[int, str],
             traffic_speed: float, actors: dict[int, str], command_msg: Any, region: str | None) -> None:
        types, t = self.types, ns_to_s(ns)
        if msgs is not None:
            if self.sensors:
                self._write("camera", ns, msgs.image)
                self._write("lidar", ns, msgs.cloud)
            self._write("odom", ns, msgs.odom)
            if msgs.gnss is not None:
                self._write("gnss", ns, msgs.gnss)
        self._write("carla_odom", ns, msgconv.build_odometry(types, pose.speed, t, "map", ROLE, pose.centre_x,
                                                              pose.centre_y, pose.yaw, yaw_rate))
        status = [types("carla_msgs/msg/CarlaTrafficLightStatus")(id=int(i), state=LIGHT_STATE_CODES[s])
                  for i, s in sorted(light_states.items())]
        self._write("light_status", ns, types("carla_msgs/msg/CarlaTrafficLightStatusList")(traffic_lights=status))
        self._write("traffic_speed", ns, msgconv.build_float32(types, traffic_speed))
        if actors != self._actors:
            info = [types("carla_msgs/msg/CarlaActorInfo")(id=int(i), parent_id=0, type=tid, rolename="background")
                    for i, tid in sorted(actors.items())]
            self._write("actor_list", ns, types("carla_msgs/msg/CarlaActorList")(actors=info))
            self._actors = dict(actors)
        if command_msg is not None:
            self._write("command", ns, command_msg)
        if region is not None:
            self._write("active_region", ns, msgconv.build_string(types, region))

    def collision(self, ns: int, other_id: int) -> None:
        types = self.types
        self._write("collision", ns, types("carla_msgs/msg/CarlaCollisionEvent")(
            header=msgconv.build_header(types, ns_to_s(ns), ROLE), other_actor_id=int(other_id),
            normal_impulse=msgconv.build_vector3(types)))

    def lane_invasion(self, ns: int, markings: list[int]) -> None:
        types = self.types
        self._write("lane_invasion", ns, types("carla_msgs/msg/CarlaLaneInvasionEvent")(
            header=msgconv.build_header(types, ns_to_s(ns), ROLE),
            crossed_lane_markings=np.asarray(markings, dtype=np.int32)))

    def infractions(self, ns: int, events: list[InfractionEvent]) -> None:
        for event in events:
            self._write("infractions", ns, msgconv.build_string(self.types, json.dumps(event.as_dict())))

    def finish(self, ns: int, score: RouteScore) -> None:
        self._write("route_score", ns, msgconv.build_string(self.types, json.dumps(score.as_dict(), default=str)))
        self.close()

    def close(self, failure: BaseException | None = None) -> None:
        """Finish the bag; ``failure``: what stopped the drive before its end (the bag says it was interrupted)."""
        if self.writer is not None:
            mark_recording(self.writer, failure)
            self.writer.close()
            self.writer = None
