"""One frame: sensor messages or arrays → conversion → preprocessing → perception → decision → command.

The same ``FramePipeline`` runs inside the rclpy driving node, the ROS-less bag replay and the demo. It owns no
thread and no clock of its own: the driver calls ``process_*`` once per camera frame. Weights are taken from
the ``HotSwapManager`` once per frame, so perception and decision of one frame always come from one bundle.

Beside the models, every frame updates two collision-risk estimates (``core.collision_risk``): one from the
perceived obstacle distance, one from the nearest lidar return in the ego's path corridor
(``core.lidar_corridor``, once per sweep: independent of the models, so that the guard does not fail where they
do). At level brake of either, the emergency-braking guard (``core.emergency_brake``) replaces the decision's
acceleration by full braking, unless the guard is switched off.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionadapt_ros.core.collision_risk import CollisionRiskEstimator, RiskEstimate, more_urgent
from regionadapt_ros.core.contracts import BEV, OBSTACLE_MAX_M, TL_CLASSES
from regionadapt_ros.core.control import ControlMapper, VehicleCommand
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard
from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.lidar_corridor import CorridorObstacle, LidarCorridor, path_curvature, predicted_paths
from regionadapt_ros.core.preprocess import IntensityScale, bev_grid, image_tensor
from regionadapt_ros.core.timing import StageTimer, StageTimings
from regionadapt_ros.inference.swap import HotSwapManager

STAGES = ("convert", "preprocess", "perception", "decision", "control", "total")


@dataclass
class FrameInputs:
    """Sensor data of one frame, already converted to arrays.

    rgb: (H, W, 3) uint8 RGB; points: (N, 3+) float32 [x, y, z, intensity] in the vehicle frame or None when
    no fresh sweep is available; speed: ego speed [m/s]; stamp_s: the camera stamp (seconds); speed_valid: the
    speed was measured recently (False: a placeholder, not used by the collision-risk estimate); bev: the
    (1, C, rows, cols) grid of ``points`` when the driver has already computed it (once per sweep), else None;
    sweep_stamp_s: the sweep's own stamp (None: the camera stamp; the lidar channel measures each sweep once);
    yaw_rate: measured [rad/s, + = left] (None: unknown), for the path of the ego's motion.
    """

    stamp_s: float
    rgb: np.ndarray
    points: np.ndarray | None
    speed: float
    speed_valid: bool = True
    bev: np.ndarray | None = None
    sweep_stamp_s: float | None = None
    yaw_rate: float | None = None


@dataclass(slots=True)
class Perception:
    """Decoded perception outputs of one frame (physical units)."""

    tl_state: str
    tl_confidence: float
    lane_offset: float
    heading_error: float
    curvature: float
    obstacle_distance: float
    free_space: float

    @classmethod
    def from_outputs(cls, out: dict[str, np.ndarray]) -> Perception:
        logits = out["tl_logits"][0].tolist()
        top = max(logits)
        exp = [math.exp(v - top) for v in logits]
        k = exp.index(1.0) if 1.0 in exp else int(np.argmax(logits))
        lane = out["lane"][0].tolist()
        obstacle = out["obstacle"][0].tolist()
        return cls(TL_CLASSES[k], exp[k] / sum(exp), lane[0], lane[1], lane[2], obstacle[0], obstacle[1])

    def is_finite(self) -> bool:
        # A NaN or infinite logit makes the confidence NaN (inf - inf), so the logits are covered too.
        return all(map(math.isfinite, (self.tl_confidence, self.lane_offset, self.heading_error, self.curvature,
                                       self.obstacle_distance, self.free_space)))


def _finite_features(out: dict[str, np.ndarray]) -> bool:
    # A sum propagates NaN and inf (inf - inf = NaN) in one pass.
    return math.isfinite(float(out["features"].sum()))


@dataclass(slots=True)
class FrameResult:
    stamp_s: float
    command: VehicleCommand
    perception: Perception | None
    raw_control: tuple[float, float]
    region: str
    bundle_id: str
    lidar_used: bool
    degraded: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    risk: RiskEstimate | None = None


class FramePipeline:
    """Runs frames on the weights the swap manager serves and maps the decision to a vehicle command.

    ``degraded_max_speed``: speed cap [m/s] while lidar is missing or stale (camera-only driving is allowed,
    but slowly). ``record_timings``: keep per-stage latency windows in ``timings``; a driver that converts the
    messages itself and records the whole frame (``DrivingSession``) turns it off so that a frame is recorded
    once. Every ``FrameResult`` carries its stage timings either way. ``risk`` and ``guard``: the collision-risk
    estimator and the emergency-braking guard (new ones, guard on, when not given); ``lidar_risk`` and
    ``corridor``: the estimator of the lidar channel and the corridor it measures (a default corridor when not
    given; ``corridor.config.enabled`` False: perception alone).
    """

    def __init__(
        self,
        swap: HotSwapManager,
        mapper: ControlMapper | None = None,
        degraded_max_speed: float = 5.0,
        warnings: CountedWarnings | None = None,
        record_timings: bool = True,
        risk: CollisionRiskEstimator | None = None,
        guard: EmergencyBrakeGuard | None = None,
        lidar_risk: CollisionRiskEstimator | None = None,
        corridor: LidarCorridor | None = None,
    ) -> None:
        self.swap = swap
        self.mapper = mapper or ControlMapper()
        self.degraded_max_speed = degraded_max_speed
        self.warnings = warnings or CountedWarnings()
        self.risk = risk or CollisionRiskEstimator(warnings=self.warnings)
        self.guard = guard or EmergencyBrakeGuard()
        self.corridor = corridor or LidarCorridor()
        self.lidar_risk = lidar_risk or CollisionRiskEstimator(self.risk.config, self.warnings, source="lidar")
        self._last_sweep: float | None = None  # stamp of the last sweep the lidar channel measured
        self.last_obstacle: CorridorObstacle | None = None  # what the lidar channel found in that sweep
        self.timings: StageTimings | None = StageTimings(STAGES) if record_timings else None
        self.frames = 0
        self.errors = 0
        self._empty_bev = np.zeros((1, BEV.channels, BEV.rows, BEV.cols), np.float32)
        self.intensity = IntensityScale()  # the lidar's scale, kept across its sweeps
        self._speed_limit_region: str | None = None

    # ---------------------------------------------------------------- message front-end
    def process_messages(self, image_msg: Any, cloud_msg: Any | None, speed: float,
                         compressed: bool = False) -> FrameResult:
        """ROS messages (rclpy or rosbags) → command. Bad messages raise MessageConversionError (the caller
        counts them and goes on with the next frame); a bad lidar message only degrades the frame."""
        from regionadapt_ros.core import msgconv

        timer = StageTimer()
        t0 = time.perf_counter()
        with timer("convert"):
            if compressed:
                rgb = msgconv.compressed_image_to_rgb8(image_msg)
            else:
                rgb = msgconv.image_to_rgb8(image_msg)
            stamp = msgconv.stamp_to_s(image_msg.header.stamp)
            points = sweep_stamp = None
            if cloud_msg is not None:
                try:
                    points = msgconv.lidar_sweep_points(cloud_msg, ("x", "y", "z", "intensity"))
                    sweep_stamp = msgconv.stamp_to_s(cloud_msg.header.stamp)
                except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
                    points = None
                    self.warnings.warn("bad_pointcloud", str(exc))
        return self._run(FrameInputs(stamp, rgb, points, speed, sweep_stamp_s=sweep_stamp), timer, t0)

    def process(self, inputs: FrameInputs) -> FrameResult:
        """Arrays → command."""
        return self._run(inputs, StageTimer(), time.perf_counter())

    def process_tensors(self, image: np.ndarray, bev: np.ndarray, speed: float, stamp_s: float,
                        lidar_used: bool = True, speed_valid: bool = True) -> FrameResult:
        """Already preprocessed model inputs (image (1,3,96,160), bev (1,3,64,64) float32) → command.
        For drivers that preprocess elsewhere (e.g. on the GPU) and for measuring the pipeline's overhead."""
        timer = StageTimer()
        t0 = time.perf_counter()
        return self._infer(image, bev, speed, stamp_s, None if lidar_used else "lidar missing or stale",
                           timer, t0, speed_valid)

    # ---------------------------------------------------------------- the frame
    def _run(self, inputs: FrameInputs, timer: StageTimer, t0: float) -> FrameResult:
        degraded = None
        with timer("preprocess"):
            image = image_tensor(inputs.rgb)
            if inputs.points is None:
                bev = self._empty_bev
                degraded = "lidar missing or stale"
            elif inputs.bev is not None:
                bev = inputs.bev
            else:
                bev = bev_grid(inputs.points, intensity=self.intensity)[None]
        sweep = inputs.sweep_stamp_s if inputs.sweep_stamp_s is not None else inputs.stamp_s
        return self._infer(image, bev, inputs.speed, inputs.stamp_s, degraded, timer, t0, inputs.speed_valid,
                           inputs.points, sweep, inputs.yaw_rate)

    def _infer(self, image: np.ndarray, bev: np.ndarray, speed: float, stamp_s: float, degraded: str | None,
               timer: StageTimer, t0: float, speed_valid: bool = True, points: np.ndarray | None = None,
               sweep_stamp_s: float | None = None, yaw_rate: float | None = None) -> FrameResult:
        clock = time.perf_counter
        weights = self.swap.begin_frame()
        try:
            t1 = clock()
            p_out = weights.runners["perception"].run({"image": image, "bev": bev})
            t2 = clock()
            # The forward estimators' ego speed: the estimator counts a bad one. A negative one (reversing, or a
            # sign flipped upstream) is not known to them as a forward speed: unknown, counted once per frame
            # without a warning, and never "standing", which would lower a brake to a warning.
            measured_speed = speed if speed_valid else None
            if measured_speed is not None and measured_speed < 0.0:
                self.risk.counts["reversing"] += 1
                measured_speed = None
            speed = float(speed) if math.isfinite(speed) else 0.0
            d_out = weights.runners["decision"].run(
                {"features": p_out["features"], "speed": np.asarray([[speed]], np.float32)}
            )
            t3 = clock()
            steering, accel = d_out["control"][0].tolist()
            self._apply_rules(weights.region, weights.rules, degraded)
            perception: Perception | None = Perception.from_outputs(p_out)
            if not (perception.is_finite() and _finite_features(p_out)):
                perception = None
            self.risk.set_rules(weights.rules)
            risk = self.risk.update(stamp_s, perception.obstacle_distance if perception is not None else None,
                                    measured_speed, lidar=degraded is None)
            if self.corridor.config.enabled:
                self.lidar_risk.set_rules(weights.rules)
                risk = more_urgent(risk, self._lidar_channel(stamp_s, points, sweep_stamp_s, speed, yaw_rate,
                                                             perception, measured_speed))
            command = self._command(perception, steering, accel, speed, stamp_s,
                                    self.guard.decide(risk, weights.region))
            if command.stop and command.reason.startswith("non-finite"):
                self.errors += 1
                self.warnings.warn("non_finite_output", f"{weights.bundle_id}: {command.reason}")
        finally:
            self.swap.end_frame()
        t4 = clock()
        ms = timer.ms
        ms["perception"] = (t2 - t1) * 1000.0
        ms["decision"] = (t3 - t2) * 1000.0
        ms["control"] = (t4 - t3) * 1000.0
        ms["total"] = (t4 - t0) * 1000.0
        if self.timings is not None:
            self.timings.add(ms)
        self.frames += 1
        return FrameResult(stamp_s, command, perception, (steering, accel), weights.region,
                           weights.bundle_id, degraded is None, degraded, dict(ms), risk)

    def _lidar_channel(self, stamp_s: float, points: np.ndarray | None, sweep_stamp_s: float | None, speed: float,
                       yaw_rate: float | None, perception: Perception | None, measured_speed: float | None
                       ) -> RiskEstimate | None:
        """The lidar channel's estimate for this frame: measured once per sweep, at the sweep's stamp (a sweep
        serving several camera frames is one sample, not several at the same distance); between sweeps the last
        estimate holds, and with no sweep for longer than the estimator's ``max_gap_s`` the channel is stale
        (None: no say). The corridors follow the perceived lane and the ego's motion (``predicted_paths``)."""
        last = self._last_sweep
        if points is not None and sweep_stamp_s is not None and math.isfinite(sweep_stamp_s) and (
                last is None or sweep_stamp_s != last):
            self._last_sweep = sweep_stamp_s
            motion = path_curvature(speed, yaw_rate, self.mapper.last_steering, self.mapper.limits.wheelbase)
            lane = (perception.lane_offset, perception.heading_error, perception.curvature) \
                if perception is not None else None
            obstacle = self.corridor.nearest(points, predicted_paths(self.corridor.config, speed, motion, lane))
            self.last_obstacle = obstacle
            distance = obstacle.distance_m if obstacle.distance_m is not None else OBSTACLE_MAX_M
            if measured_speed is not None and not math.isfinite(measured_speed):
                measured_speed = None  # the perception channel has counted it (a negative one arrives as None)
            return self.lidar_risk.update(sweep_stamp_s, distance, measured_speed)
        if last is None:
            return None
        if not (abs(stamp_s - last) <= self.lidar_risk.config.max_gap_s):  # NaN stamps included
            # no sweep for too long: the estimator goes stale (and counts it), and the channel has no say
            self.lidar_risk.update(stamp_s, None, None, lidar=False)
            self._last_sweep = None
            return None
        return self.lidar_risk.latest

    def reset_risk(self) -> None:
        """Forget both risk channels' tracks and the guard's open episode (a clock jump, a restart)."""
        self.risk.reset()
        self.lidar_risk.reset()
        self.guard.reset()
        self._last_sweep = None

    def _command(self, perception: Perception | None, steering: float, accel: float, speed: float,
                 stamp_s: float, brake_reason: str | None) -> VehicleCommand:
        """The decision mapped to a limited command; a stop when an output is not finite; full braking when the
        guard overrides (a stop that the override makes harder keeps its non-finite reason first)."""
        decision_finite = math.isfinite(steering) and math.isfinite(accel)
        if brake_reason is None:
            if perception is None:
                return self.mapper.stop(stamp_s, speed, "non-finite perception output")
            return self.mapper.map(steering, accel, speed, stamp_s)
        if perception is None:
            return self.mapper.emergency_brake(math.nan, speed, stamp_s,
                                               f"non-finite perception output; {brake_reason}", stop=True)
        if not decision_finite:
            return self.mapper.emergency_brake(math.nan, speed, stamp_s,
                                               f"non-finite decision output; {brake_reason}", stop=True)
        return self.mapper.emergency_brake(steering, speed, stamp_s, brake_reason)

    def _apply_rules(self, region: str, rules: dict[str, Any], degraded: str | None) -> None:
        limit = rules.get("speed_limit_kph")
        cap = float(limit) / 3.6 if limit else None
        if degraded:
            cap = self.degraded_max_speed if cap is None else min(cap, self.degraded_max_speed)
        self.mapper.speed_limit = cap

    def stop_command(self, stamp_s: float, speed: float, reason: str) -> VehicleCommand:
        """A stop command for the driver's watchdogs (stale camera), through the same rate limits."""
        return self.mapper.stop(stamp_s, speed, reason)
