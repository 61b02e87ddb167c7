"""One closed-loop route: each tick the world renders camera and lidar at the ego's pose, the agent turns them
(as sensor messages, for the product) into a command, the scorer scores the tick, and the command moves the
ego and the traffic for one period. The route ends when a criterion ends it (completed, deviated, blocked,
timed out); a tick cap (twice the longest time the route timeout could allow) is the backstop.

Time runs on an integer nanosecond clock starting at ``t0_ns`` (one period per tick, faster than real time);
stamps, the scorer and the bag all use it, so a recorded run rescored from its bag gives the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core import msgconv
from regionadapt_ros.scoring.criteria import EgoState
from regionadapt_ros.scoring.leaderboard import RouteScore
from regionadapt_ros.sim.agents import Agent, Command, SensorMessages
from regionadapt_ros.sim.course import Course, RouteSpec
from regionadapt_ros.sim.recording import BagRecorder, ns_to_s, quaternion_yaw
from regionadapt_ros.sim.world import EgoPose, Observation

T0_NS = 1_700_000_000 * 1_000_000_000
LIDAR_FIELDS = ("x", "y", "z", "intensity")
# Called every tick with what the agent saw and did (on-policy data collection, DAgger).
TickHook = Callable[[Observation, EgoPose, Command], None]


@dataclass
class RunOptions:
    """``record_dir``: write bag/ and route.json there; ``record_sensors``: include camera and lidar in the bag;
    ``gnss``: build GNSS fixes (needed by an agent with geofences); ``on_tick``: see ``TickHook``."""

    record_dir: Path | None = None
    record_sensors: bool = True
    storage: str = "mcap"
    gnss: bool = False
    on_tick: TickHook | None = None
    t0_ns: int = T0_NS
    progress: bool = False


@dataclass
class RouteResult:
    spec: RouteSpec
    agent: str
    score: RouteScore
    ticks: int
    sim_s: float
    wall_s: float
    agent_stats: dict[str, Any] = field(default_factory=dict)
    bag: str | None = None
    trajectory: np.ndarray | None = None  # (ticks, 4): t, centre x, centre y, speed
    route_xy: np.ndarray | None = None    # the route polyline (N, 2)

    @property
    def real_time_factor(self) -> float:
        return self.sim_s / self.wall_s if self.wall_s > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {"route_id": self.spec.route_id, "seed": self.spec.seed, "segments": [list(s) for s in
                                                                                     self.spec.segments],
                "agent": self.agent, "score": self.score.as_dict(), "ticks": self.ticks, "sim_s": self.sim_s,
                "wall_s": self.wall_s, "agent_stats": self.agent_stats, "bag": self.bag}


def _max_ticks(spec: RouteSpec) -> int:
    cfg = spec.criteria
    from regionadapt_ros.adaptation.regions import get_region

    slowest = min(get_region(r).speed_limit_mps for r in spec.regions)
    limit_s = cfg.min_timeout_s + spec.length_m / (slowest * cfg.timeout_route_percent / 100.0)
    return int(2 * limit_s * spec.hz) + 10


def sensor_messages(types: Any, obs: Observation, pose: EgoPose, stamp_s: float, gnss: bool) -> SensorMessages:
    """Camera (rgb8), lidar (x, y, z, intensity), odometry (rear axle in the map frame) and optionally GNSS."""
    image = msgconv.build_image(types, obs.rgb, "rgb8", stamp_s, "camera")
    cloud = msgconv.build_pointcloud2(types, obs.points, LIDAR_FIELDS, stamp_s, "base_link")
    odom = msgconv.build_odometry(types, pose.speed, stamp_s, "map", "base_link", pose.x, pose.y, pose.yaw,
                                  pose.yaw_rate)
    fix = None
    if gnss:
        from regionadapt_ros.sim.geo import to_lat_lon

        lat, lon = to_lat_lon(pose.x, pose.y)
        fix = msgconv.build_navsatfix(types, lat, lon, 20.0, stamp_s, h_std_m=1.5, frame_id="gnss")
    return SensorMessages(stamp_s, image, cloud, odom, fix)


def ego_state(t: float, pose: EgoPose) -> EgoState:
    """What the scorer sees of the ego, exactly as it reads it back from the recorded CARLA odometry."""
    return EgoState(t, pose.centre_x, pose.centre_y, quaternion_yaw(pose.yaw), pose.speed)


def traffic_speed(speeds: list[float]) -> float:
    """Mean speed of the surrounding traffic as recorded (float32; NaN when there is none)."""
    return float(np.float32(np.mean(speeds))) if speeds else math.nan


def run_route(spec: RouteSpec, agent: Agent, options: RunOptions | None = None, course: Course | None = None
              ) -> RouteResult:
    """Drive ``spec`` with ``agent`` and score it (``course``: the spec's course when already built, e.g. to
    write geofences for it first; it must be fresh)."""
    opts = options or RunOptions()
    wall0 = time.perf_counter()
    ns = int(opts.t0_ns)
    dt_ns = int(round(1e9 / spec.hz))
    course = course if course is not None else Course(spec, t0=0.0)
    setup = course.route_setup()
    scorer = setup.scorer(spec.route_id)
    store = msgconv.rosbags_typestore() if (agent.needs_messages or opts.record_dir) else None
    types = msgconv.rosbags_types(store) if store is not None else None
    agent.begin(spec, ns_to_s(ns))  # before the bag is opened: an agent that cannot drive the route leaves none
    recorder = None
    if opts.record_dir is not None:
        meta = {"route_id": spec.route_id, "seed": spec.seed, "segments": [list(s) for s in spec.segments],
                "agent": agent.name, "hz": spec.hz}
        from regionadapt_ros.driving_session import COMMAND_MSG_TYPES

        command_type = getattr(agent, "command_type", "ackermann")
        recorder = BagRecorder(Path(opts.record_dir), setup, sensors=opts.record_sensors, gnss=opts.gnss,
                               storage=opts.storage, meta=meta, command_msgtype=COMMAND_MSG_TYPES[command_type])
        recorder.lights(ns, setup.stop_lines)
    ticks = 0
    cap = _max_ticks(spec)
    trajectory: list[tuple[float, float, float, float]] = []
    last_region: str | None = None
    try:
        while True:
            t = ns_to_s(ns)
            obs = course.observe()
            pose = course.pose
            msgs = None
            if agent.needs_messages or (recorder is not None and opts.record_sensors):
                msgs = sensor_messages(types, obs, pose, t, opts.gnss)
            cmd = agent.act(obs, pose, msgs)
            if opts.on_tick is not None:
                opts.on_tick(obs, pose, cmd)
            speeds = course.traffic_speeds()
            mean_speed = traffic_speed(speeds)
            lights = course.light_states()
            events = scorer.step(ego_state(t, pose), lights, None if math.isnan(mean_speed) else [mean_speed])
            trajectory.append((t - ns_to_s(opts.t0_ns), pose.centre_x, pose.centre_y, pose.speed))
            if recorder is not None:
                command_msg = agent.command_message(types, cmd) if hasattr(agent, "command_message") else None
                if command_msg is None and recorder.topics["command"][1].startswith("ackermann"):
                    command_msg = msgconv.build_ackermann(types, cmd.steer, pose.speed + cmd.accel / spec.hz,
                                                          cmd.accel, t, "base_link")
                region = cmd.region if cmd.region != last_region else None
                recorder.tick(ns, msgs=msgs, pose=pose, yaw_rate=pose.yaw_rate, light_states=lights,
                              traffic_speed=mean_speed, actors=course.actors(), command_msg=command_msg,
                              region=region)
                recorder.infractions(ns, events)
            last_region = cmd.region
            ticks += 1
            if scorer.done or ticks >= cap:
                break
            hits, markings = course.apply(cmd.steer, cmd.accel)
            mid_ns = ns + dt_ns // 2
            t_mid = ns_to_s(mid_ns)
            actors = course.actors() if hits else {}
            for hit in hits:
                # typed as a reader of the bag types it, from the actor list (id 0: the static layout)
                event = scorer.collision(t_mid, hit.other_id, actors.get(hit.other_id, hit.type_id))
                if recorder is not None:
                    recorder.collision(mid_ns, hit.other_id)
                    recorder.infractions(mid_ns, [event] if event is not None else [])
            if markings:
                scorer.lane_invasion(t_mid, markings)
                if recorder is not None:
                    recorder.lane_invasion(mid_ns, markings)
            ns += dt_ns
        score = scorer.finish()
        if recorder is not None:
            recorder.finish(ns, score)
    except BaseException as exc:  # Ctrl-C or an error: the bag is closed readable and says it was interrupted
        if recorder is not None:
            recorder.close(exc)
        raise
    stats = agent.end()
    sim_s = ticks / spec.hz
    return RouteResult(spec, agent.name, score, ticks, sim_s, time.perf_counter() - wall0, stats,
                       str(recorder.bag) if recorder is not None else None, np.asarray(trajectory),
                       setup.route.points)
