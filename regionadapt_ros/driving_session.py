"""Everything the driving node does per message, without ROS: the rclpy node, the ROS-less bag replay and the demo
all drive a ``DrivingSession`` and only differ in where messages and time come from.

The caller delivers messages with the time it runs on (``now_s``: the node's ROS clock, bag time in a replay)
and calls ``tick(now_s)`` from a fixed-rate timer. Nothing here reads a wall clock except for latency
measurement and the weight loader's retry back-off.

Per camera frame (``on_image``): the image is converted, the newest lidar sweep whose stamp is within
``lidar_max_age_s`` of the image stamp is picked (none: the frame runs camera-only and the speed is capped, see
``FramePipeline``), the latest speed is attached, and the pipeline maps the models' decision to a limited
``VehicleCommand`` stamped with the image stamp. A message that cannot be converted is counted (kind
``bad_image``, ``bad_pointcloud``, ...) and the call returns None or False; no method raises on bad input.

Time may jump (a looped or seeked bag, a simulator reset): when ``now_s`` goes backwards or leaps forward by more
than ``clock_jump_s``, or image stamps go backwards, the session forgets its history (lidar buffer, speed,
control rate limits, frame-rate window) and the watchdogs restart, so a jump neither stops the vehicle
spuriously nor crashes anything.

Threads: ``tick`` (the stale-camera stop timer) and ``diagnostics`` may run concurrently with a frame (the
node runs them in callback groups of their own on a multi-threaded executor, so that a slow frame cannot hold
up the stop commands). They never wait for a frame: the session's state is guarded by a lock that is held only
for bookkeeping, never while an image is decoded, a sweep converted or a model runs, and the control mapper has
a lock of its own. Inputs (``on_image``, ``on_lidar``, ``on_speed``, ``on_odometry``, the region topics) are
meant to come from one thread at a time (one callback group). A frame that ends more than ``camera_timeout_s``
after it arrived, when the stop timer has already taken over, is dropped (``late_frame``) rather than
published after the stops. Bundles are loaded by ``HotSwapManager`` in a separate loader process (what is
left in this process runs on its loader thread).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.collision_risk import CollisionRiskEstimator, RiskConfig, RiskEstimate, RiskThresholds
from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.control import ControlMapper, VehicleCommand, VehicleLimits
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard, risk_status
from regionadapt_ros.core.errors import ConfigError, MessageConversionError
from regionadapt_ros.core.frames import CloudFrames, parse_extrinsic
from regionadapt_ros.core.timing import StageTimings
from regionadapt_ros.core.watchdog import SensorWatchdog
from regionadapt_ros.inference.backend import InferenceBackend
from regionadapt_ros.inference.swap import HotSwapManager, Loader, WeightSet
from regionadapt_ros.pipeline import STAGES, FrameInputs, FramePipeline, FrameResult

_LOG = logging.getLogger("regionadapt_ros.driving")
LIDAR_GAP_NONE_YET = "no lidar sweep received yet"

COMMAND_TYPES = ("ackermann", "carla", "twist")
SPEED_SOURCES = ("odom", "speed")
BACKENDS = ("onnxruntime", "torch", "tensorrt", "auto")
COMMAND_MSG_TYPES = {
    "ackermann": "ackermann_msgs/msg/AckermannDriveStamped",
    "carla": "carla_msgs/msg/CarlaEgoVehicleControl",
    "twist": "geometry_msgs/msg/Twist",
}
# Perception results on standard types (RViz / Foxglove), keyed by topic relative to the node's namespace.
# perception/lane is a Vector3Stamped: x = lateral offset [m, + = left of the lane centre], y = heading error
# [rad], z = curvature [1/m]. perception/risk is a Vector3Stamped too: x = time to collision [s] (capped at
# 100; NaN: unknown), y = closing speed [m/s, + = closing] (NaN: unknown), z = level (0 none, 1 warn, 2 brake).
PERCEPTION_TOPICS = {
    "perception/traffic_light": "std_msgs/msg/String",
    "perception/lane": "geometry_msgs/msg/Vector3Stamped",
    "perception/obstacle_distance": "std_msgs/msg/Float32",
    "perception/risk": "geometry_msgs/msg/Vector3Stamped",
}
SESSION_STAGES = (*STAGES, "convert_lidar")
LIDAR_FIELDS = ("x", "y", "z", "intensity")
# Kinds of CountedWarnings that mean a camera frame produced no command.
DROP_KINDS = ("bad_image", "bad_compressed_image", "frame_error", "not_started", "late_frame")
# Callbacks on different executor threads read the clock before they get the session's lock, so their times
# can arrive out of order by about the time a lock hand-over takes; a step back of up to this much is that, not
# a clock jump [s].
REORDER_TOLERANCE_S = 0.1


class _SharedMapper(ControlMapper):
    """The ControlMapper of a session: frames (``map``) and the stop timer (``stop``) use it from different
    threads, so every call holds its lock (for microseconds: it is arithmetic)."""

    def __init__(self, limits: VehicleLimits) -> None:
        super().__init__(limits)
        self._lock = threading.Lock()

    def map(self, steering: float, accel: float, speed: float, stamp_s: float) -> VehicleCommand:
        with self._lock:
            return super().map(steering, accel, speed, stamp_s)

    def stop(self, stamp_s: float, speed: float, reason: str) -> VehicleCommand:
        with self._lock:
            return super().stop(stamp_s, speed, reason)

    def emergency_brake(self, steering: float, speed: float, stamp_s: float, reason: str,
                        stop: bool = False) -> VehicleCommand:
        with self._lock:
            return super().emergency_brake(steering, speed, stamp_s, reason, stop)

    def reset(self) -> None:
        with self._lock:
            super().reset()


class _SharedRisk(CollisionRiskEstimator):
    """The collision-risk estimator of a session: frames update it, a clock jump seen by the stop timer resets
    it and diagnostics read its counts, from different threads; every call holds its lock."""

    def __init__(self, config: RiskConfig, warnings: CountedWarnings) -> None:
        self._lock = threading.RLock()  # update() resets itself on a stamp going back
        super().__init__(config, warnings)

    def set_rules(self, rules: Mapping[str, Any] | None) -> RiskThresholds:
        with self._lock:
            return super().set_rules(rules)

    def update(self, stamp_s: float, distance_m: float | None, ego_speed_mps: float | None = None, *,
               lidar: bool = True) -> RiskEstimate:
        with self._lock:
            return super().update(stamp_s, distance_m, ego_speed_mps, lidar=lidar)

    def reset(self) -> None:
        with self._lock:
            super().reset()

    def count_snapshot(self) -> dict[str, int]:
        with self._lock:
            return super().count_snapshot()


class _SharedGuard(EmergencyBrakeGuard):
    """The emergency-braking guard of a session: frames decide, a clock jump resets, diagnostics read."""

    def __init__(self, enabled: bool) -> None:
        self._lock = threading.RLock()
        super().__init__(enabled)

    def decide(self, risk: RiskEstimate, region: str = "") -> str | None:
        with self._lock:
            return super().decide(risk, region)

    def reset(self) -> None:
        with self._lock:
            super().reset()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return super().status()


class DiagnosticLevel(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class DiagnosticStatusData:
    """One ``diagnostic_msgs/DiagnosticStatus`` as plain data; ``values`` become its KeyValue list."""

    name: str
    level: DiagnosticLevel
    message: str
    values: Mapping[str, str] = field(default_factory=dict)
    hardware_id: str = ""

    def as_entry(self) -> msgconv.DiagnosticEntry:
        """The tuple ``msgconv.build_diagnostic_array`` takes."""
        return (self.name, int(self.level), self.message, self.hardware_id, dict(self.values))


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "none"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class DrivingConfig:
    """Driving parameters (the driving node's parameters of the same names). Seconds, metres, m/s.

    backend: "onnxruntime" | "torch" | "tensorrt" | "auto" (see ``inference.selection``).
    command_type: "ackermann" | "carla" | "twist", the output message type.
    speed_source: "odom" (nav_msgs/Odometry) or "speed" (std_msgs/Float32, CARLA's speedometer).
    lidar_max_age_s: a sweep is used for a frame when its stamp is within this of the image stamp.
    camera_timeout_s: no camera frame for longer than this → ``tick`` returns stop commands.
    speed_max_age_s: a speed older than this is reported as stale (the last value is still used).
    degraded_max_speed: speed cap [m/s] while the lidar is missing or stale.
    clock_jump_s: a forward jump of the clock by more than this counts as a jump (history reset).
    error_hold_s: diagnostics stay ERROR (non-finite output) / WARN (dropped frames) this long after the event.
    frame_id: header frame of stamped outputs, and the vehicle frame lidar clouds are brought into.
    lidar_extrinsic: () or (x, y, z, roll, pitch, yaw) [m, rad], the lidar's pose in the vehicle frame, for
        clouds whose frame ``/tf_static`` does not connect to ``frame_id`` (core.frames).
    ground_z_m: height of the road in the vehicle frame; the BEV grid assumes -1.7 (clouds are shifted by the
        difference: a REP 105 base_link on the road is 0).
    max_image_pixels: a camera frame of more pixels is dropped (counted); for a CompressedImage the encoded
        header is checked before decoding, so the cost of a hostile frame is bounded.
    lidar_max_points: a sweep of more points is strided down to this many before it is read (counted as
        ``pointcloud2.downsampled``), bounding the conversion and BEV cost of one sweep.
    load_timeout_s: a bundle load (the initial one included) that takes longer is abandoned and counted as a
        failed load; the loader process is restarted and later loads go on.
    emergency_brake: the collision-risk guard may override the decision with full braking (on by default; off,
    it still records what it would have done). risk: the vehicle's collision-risk thresholds and filter.
    """

    backend: str = "onnxruntime"
    command_type: str = "ackermann"
    speed_source: str = "odom"
    lidar_max_age_s: float = 0.15
    camera_timeout_s: float = 0.5
    speed_max_age_s: float = 1.0
    degraded_max_speed: float = 5.0
    clock_jump_s: float = 5.0
    error_hold_s: float = 5.0
    frame_id: str = "base_link"
    lidar_extrinsic: tuple[float, ...] = ()
    ground_z_m: float = BEV.z_ground
    max_image_pixels: int = msgconv.DEFAULT_MAX_IMAGE_PIXELS
    lidar_max_points: int = msgconv.DEFAULT_LIDAR_MAX_POINTS
    limits: VehicleLimits = field(default_factory=VehicleLimits)
    warmup_iterations: int = 2
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    rate_window_s: float = 2.0
    load_timeout_s: float = 20.0
    emergency_brake: bool = True
    risk: RiskConfig = field(default_factory=RiskConfig)

    def __post_init__(self) -> None:
        for name, allowed in (("backend", BACKENDS), ("command_type", COMMAND_TYPES),
                              ("speed_source", SPEED_SOURCES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("lidar_max_age_s", "camera_timeout_s", "speed_max_age_s", "clock_jump_s", "error_hold_s",
                     "retry_initial_s", "retry_max_s", "rate_window_s", "load_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                      and value > 0):
                raise ConfigError(name, f"must be a positive number, got {value!r}")
        value = self.degraded_max_speed
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                  and value >= 0):
            raise ConfigError("degraded_max_speed", f"must be a number >= 0, got {value!r}")
        parse_extrinsic(self.lidar_extrinsic)
        if isinstance(self.ground_z_m, bool) or not isinstance(self.ground_z_m, (int, float)) or not math.isfinite(
                self.ground_z_m):
            raise ConfigError("ground_z_m", f"must be a finite height in metres, got {self.ground_z_m!r}")
        for name in ("max_image_pixels", "lidar_max_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        if not isinstance(self.limits, VehicleLimits):
            raise ConfigError("limits", f"must be a VehicleLimits, got {type(self.limits).__name__}")
        if not isinstance(self.emergency_brake, bool):
            raise ConfigError("emergency_brake", f"must be true or false, got {self.emergency_brake!r}")
        if not isinstance(self.risk, RiskConfig):
            raise ConfigError("risk", f"must be a RiskConfig, got {type(self.risk).__name__}")


@dataclass(frozen=True)
class SensorAges:
    """Seconds since the last accepted message of each input (None: never received)."""

    camera: float | None
    lidar: float | None
    speed: float | None


@dataclass(frozen=True)
class DrivingStats:
    """Counters and rates of a session at ``now_s``.

    frames: camera frames that produced a command; dropped_frames: camera messages that did not (bad message,
    frame error, before start); frame_rate_hz: over the last ``rate_window_s``; latency_ms: {stage: {"p50",
    "p99", "count"}} over the last 1000 frames (stages of ``pipeline.STAGES`` plus "convert_lidar");
    stale_stops: stop commands ``tick`` returned; non_finite_stops: frames whose model output was not finite;
    clock_jumps: history resets; swap: ``HotSwapManager.status()`` (empty before start); emergency_brake: the
    guard's counts (``EmergencyBrakeGuard.status()``); risk_counts: the risk estimator's input counts.
    """

    frames: int
    dropped_frames: int
    frame_rate_hz: float
    latency_ms: dict[str, dict[str, float]]
    stale_stops: int
    non_finite_stops: int
    clock_jumps: int
    lidar_frames: int
    ages: SensorAges
    warnings: dict[str, int]
    swap: dict[str, Any]
    emergency_brake: dict[str, Any] = field(default_factory=dict)
    risk_counts: dict[str, int] = field(default_factory=dict)


class DrivingSession:
    """Per-frame driving logic over a ``FramePipeline`` and a ``HotSwapManager``.

    ``loader`` maps a region id to its weights (``inference.loading.bundle_loader(store)``);
    ``initial_region`` is served from ``start()`` on; ``regions`` (optional) are the region ids the loader
    knows, so an unknown ``active_region`` is refused at once instead of failing in the loader;
    ``backend`` overrides ``config.backend`` (an instance, for tests and the replay); ``swap_clock`` is the
    HotSwapManager's clock (swap timestamps and retry back-off).
    """

    def __init__(
        self,
        config: DrivingConfig,
        loader: Loader,
        initial_region: str,
        *,
        backend: InferenceBackend | None = None,
        regions: Collection[str] | None = None,
        warnings: CountedWarnings | None = None,
        swap_clock: Callable[[], float] = time.monotonic,
        name: str = "regionadapt_driving",
        hardware_id: str = "",
    ) -> None:
        self.config = config
        self.initial_region = initial_region
        self.regions = frozenset(regions) if regions is not None else None
        if self.regions is not None and initial_region not in self.regions:
            raise ConfigError("initial_region", f"unknown region {initial_region!r}; known regions: "
                              f"{', '.join(sorted(self.regions))}")
        self.warnings = warnings or CountedWarnings()
        self.name = name
        self.hardware_id = hardware_id
        self._loader = loader
        self._backend = backend
        self._swap_clock = swap_clock
        self.backend_description = ""
        self.swap: HotSwapManager | None = None
        self.pipeline: FramePipeline | None = None
        self.mapper: ControlMapper = _SharedMapper(config.limits)
        self.risk: CollisionRiskEstimator = _SharedRisk(config.risk, self.warnings)
        self.guard: EmergencyBrakeGuard = _SharedGuard(config.emergency_brake)
        self.camera_watchdog = SensorWatchdog("camera", config.camera_timeout_s, config.clock_jump_s,
                                              REORDER_TOLERANCE_S)
        self.lidar_watchdog = SensorWatchdog("lidar", config.lidar_max_age_s, config.clock_jump_s, REORDER_TOLERANCE_S)
        self.speed_watchdog = SensorWatchdog("speed", config.speed_max_age_s, config.clock_jump_s, REORDER_TOLERANCE_S)
        self._lock = threading.RLock()  # the session's state; never held while a frame or conversion runs
        self._frame_lock = threading.Lock()  # held through a frame: close() waits for it, tick() never does
        self.timings = StageTimings(SESSION_STAGES)
        self.frames = 0
        self.lidar_frames = 0
        self.stale_stops = 0
        self.non_finite_stops = 0
        self.clock_jumps = 0
        self.last_result: FrameResult | None = None
        self._lidar: deque[tuple[float, np.ndarray]] = deque(maxlen=8)  # (stamp_s, (N, 4) points)
        self.cloud_frames = CloudFrames(config.frame_id, parse_extrinsic(config.lidar_extrinsic),
                                        float(config.ground_z_m))
        self.unknown_frame_clouds = 0
        # Why the last frame ran without lidar (None: it had a sweep), e.g. "no lidar sweep received yet".
        self.last_lidar_gap: str | None = None
        self._speed: float | None = None
        self._frame_times: deque[float] = deque(maxlen=512)
        self._last_now: float | None = None
        self._last_image_stamp: float | None = None
        self._last_non_finite_t: float | None = None
        self._last_drop_t: float | None = None
        self._active_region: str | None = None

    # ------------------------------------------------------------------------------------------ set-up
    @classmethod
    def from_regions_file(
        cls,
        config: DrivingConfig,
        regions_file: str,
        *,
        bundle_dir: str | None = None,
        initial_region: str | None = None,
        geofence_regions: Collection[str] | None = None,
        **kwargs: Any,
    ) -> DrivingSession:
        """A session over the bundles of ``regions_file`` (regions.yaml); ``initial_region`` defaults to its
        ``default_region``. ConfigError names the file and the problem."""
        from regionadapt_ros.core.bundle_store import BundleStore
        from regionadapt_ros.inference.loading import bundle_loader

        store = BundleStore.load(regions_file, geofence_regions, bundle_dir=bundle_dir or None)
        region = initial_region or store.default_region
        if region not in store.regions:
            raise ConfigError("initial_region", f"unknown region {region!r}; {regions_file} defines "
                              f"{', '.join(store.regions)}")
        return cls(config, bundle_loader(store), region, regions=store.regions, **kwargs)

    def start(self) -> WeightSet:
        """Load, verify and warm up the initial region's models synchronously (node configure). Raises what the
        backend or loader raised (ConfigError, BundleError, BackendError, ...); nothing is left running then."""
        if self.swap is not None and self.swap.serving is not None:
            return self.swap.serving
        backend = self._backend
        if backend is None:
            from regionadapt_ros.inference.selection import select_backend

            backend, reason = select_backend(self.config.backend)
            self.backend_description = f"{backend.describe()} ({reason})"
        else:
            self.backend_description = backend.describe()
        swap = HotSwapManager(backend, self._loader, clock=self._swap_clock,
                              retry_initial_s=self.config.retry_initial_s, retry_max_s=self.config.retry_max_s,
                              warmup_iterations=self.config.warmup_iterations,
                              load_timeout_s=self.config.load_timeout_s)
        try:
            serving = swap.initialize(self.initial_region)
        except BaseException:
            swap.shutdown()
            raise
        with self._lock:
            self.swap = swap
            self.pipeline = FramePipeline(swap, self.mapper, self.config.degraded_max_speed, self.warnings,
                                          record_timings=False, risk=self.risk, guard=self.guard)
            self._active_region = self.initial_region
        return serving

    def close(self) -> None:
        """Stop the loader and free both weight sets (node cleanup), after the frame in progress, if any. The
        session can be started again."""
        with self._frame_lock, self._lock:
            swap, self.swap, self.pipeline = self.swap, None, None
            self._forget_history()
        if swap is not None:
            swap.shutdown()

    @property
    def started(self) -> bool:
        return self.swap is not None

    @property
    def serving(self) -> WeightSet | None:
        """The weights serving frames now (None before ``start``)."""
        return self.swap.serving if self.swap is not None else None

    @property
    def region(self) -> str | None:
        """The region whose weights serve frames now."""
        serving = self.serving
        return serving.region if serving is not None else None

    def update_limits(self, *, lidar_max_age_s: float | None = None, camera_timeout_s: float | None = None,
                      degraded_max_speed: float | None = None) -> None:
        """Change the run-time tunable settings (node parameters changed while running)."""
        changes = {k: v for k, v in (("lidar_max_age_s", lidar_max_age_s), ("camera_timeout_s", camera_timeout_s),
                                     ("degraded_max_speed", degraded_max_speed)) if v is not None}
        with self._lock:
            self.config = replace(self.config, **changes)
            self.camera_watchdog.timeout_s = self.config.camera_timeout_s
            self.lidar_watchdog.timeout_s = self.config.lidar_max_age_s
            if self.pipeline is not None:
                self.pipeline.degraded_max_speed = self.config.degraded_max_speed

    # ------------------------------------------------------------------------------------------ time
    def _observe_time(self, now_s: float) -> None:
        """Call with the lock held."""
        last = self._last_now
        if last is not None and last - REORDER_TOLERANCE_S <= now_s < last:
            return  # another thread's callback read the clock a moment later and got here first
        self._last_now = now_s
        if last is not None and (now_s < last or now_s - last > self.config.clock_jump_s):
            self.clock_jumps += 1
            self._forget_history()
            for watchdog in (self.camera_watchdog, self.lidar_watchdog, self.speed_watchdog):
                watchdog.reset(now_s)

    def _forget_history(self) -> None:
        self.mapper.reset()
        self.risk.reset()
        self.guard.reset()
        self._lidar.clear()
        self._speed = None
        self._frame_times.clear()
        self._last_image_stamp = None

    # ------------------------------------------------------------------------------------------ inputs
    def _drop(self, kind: str, message: str, now_s: float) -> None:
        self.warnings.warn(kind, message)
        self._last_drop_t = now_s

    def on_image(self, msg: Any, now_s: float, compressed: bool = False) -> FrameResult | None:
        """One camera frame (``sensor_msgs/Image``, or ``CompressedImage`` with ``compressed``) → the frame's
        result, whose ``command`` is stamped with the image stamp. None when the frame was dropped (counted)."""
        with self._frame_lock:
            return self._frame(msg, now_s, compressed)

    def _frame(self, msg: Any, now_s: float, compressed: bool) -> FrameResult | None:
        with self._lock:
            self._observe_time(now_s)
            pipeline, jumps = self.pipeline, self.clock_jumps
            if pipeline is None:
                self._drop("not_started", "camera frame before the models were loaded", now_s)
                return None
        t0 = time.perf_counter()
        try:  # outside the lock: a huge image must not hold up the stop timer
            max_pixels = self.config.max_image_pixels
            rgb = msgconv.compressed_image_to_rgb8(msg, max_pixels) if compressed else \
                msgconv.image_to_rgb8(msg, max_pixels)
            stamp = msgconv.stamp_to_s(msg.header)
        except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
            kind = "bad_compressed_image" if compressed else "bad_image"
            with self._lock:
                self._drop(kind, f"{type(exc).__name__}: {exc}", now_s)
            return None
        convert_ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            if self._last_image_stamp is not None and stamp < self._last_image_stamp:
                # Stamps went back without the clock doing so (a restarted camera driver): the rate limits and the
                # lidar buffer refer to another time line.
                self.clock_jumps += 1
                jumps += 1  # this frame's own reset: it starts the new time line
                self._forget_history()
            self._last_image_stamp = stamp
            points = self._lidar_for(stamp)
            self.last_lidar_gap = None if points is not None else self._lidar_gap(stamp)
            speed = self._speed if self._speed is not None else 0.0
            speed_age = self.speed_watchdog.age(now_s)
            speed_valid = (self._speed is not None and speed_age is not None
                           and speed_age <= self.config.speed_max_age_s)
        try:
            result = pipeline.process(FrameInputs(stamp, rgb, points, speed, speed_valid))
        except Exception as exc:  # a backend failure must not take the node down; the camera watchdog stops
            with self._lock:
                self._drop("frame_error", f"{type(exc).__name__}: {exc}", now_s)
            return None
        with self._lock:
            latest = self._last_now if self._last_now is not None else now_s
            if self.clock_jumps != jumps or latest - now_s > self.config.camera_timeout_s:
                # The stop timer took over while this frame ran (or the clock jumped): its command is older than
                # the stops already sent.
                self._drop("late_frame", f"frame of {stamp:.3f} took {latest - now_s:.3f} s (more than "
                           f"camera_timeout_s {self.config.camera_timeout_s:g} s): not published", latest)
                return None
            result.timings_ms["convert"] = convert_ms
            result.timings_ms["total"] = result.timings_ms.get("total", 0.0) + convert_ms
            self.timings.add(result.timings_ms)
            self.camera_watchdog.mark(now_s)
            self.frames += 1
            if points is not None:
                self.lidar_frames += 1
            self._frame_times.append(now_s)
            if result.command.stop and result.command.reason.startswith("non-finite"):
                self.non_finite_stops += 1
                self._last_non_finite_t = now_s
            self.last_result = result
        return result

    def _lidar_for(self, image_stamp: float) -> np.ndarray | None:
        """Points of the newest sweep stamped within ``lidar_max_age_s`` of the image (either side). Lock held."""
        best: tuple[float, np.ndarray] | None = None
        for stamp, points in self._lidar:
            if abs(image_stamp - stamp) <= self.config.lidar_max_age_s and (best is None or stamp > best[0]):
                best = (stamp, points)
        return best[1] if best is not None else None

    def _lidar_gap(self, image_stamp: float) -> str:
        """Why no sweep serves a frame stamped ``image_stamp`` (a category: no numbers, so that reasons count)."""
        if not self._lidar:
            return LIDAR_GAP_NONE_YET
        return f"nearest sweep more than {self.config.lidar_max_age_s:g} s (lidar_max_age_s) from the image"

    def nearest_sweep_offset(self, image_stamp: float) -> float | None:
        """Stamp of the buffered sweep nearest to ``image_stamp`` minus it [s]; None without sweeps."""
        with self._lock:
            if not self._lidar:
                return None
            return min((stamp - image_stamp for stamp, _ in self._lidar), key=abs)

    def on_tf_static(self, msg: Any, now_s: float | None = None) -> int:
        """A ``tf2_msgs/TFMessage`` of ``/tf_static``: its transforms bring lidar clouds into the vehicle frame.
        Returns how many transforms were taken."""
        with self._lock:
            return self.cloud_frames.on_tf_static(msg)

    def on_lidar(self, msg: Any, now_s: float) -> bool:
        """One ``sensor_msgs/PointCloud2`` sweep; converted now (each sweep serves one or more frames).
        False when it was refused (counted as ``bad_pointcloud``)."""
        with self._lock:
            self._observe_time(now_s)
        t0 = time.perf_counter()
        try:  # outside the lock, as a frame's decoding
            points = msgconv.pointcloud2_to_array(msg, LIDAR_FIELDS, warnings=self.warnings,
                                                  max_points=self.config.lidar_max_points)
            stamp = msgconv.stamp_to_s(msg.header)
        except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
            self.warnings.warn("bad_pointcloud", f"{type(exc).__name__}: {exc}")
            return False
        frame = str(getattr(msg.header, "frame_id", "") or "")
        transform, how = self.cloud_frames.transform_for(frame)
        points = self.cloud_frames.apply(points, transform)  # a conversion: outside the lock
        with self._lock:
            if self.cloud_frames.record(frame, how):  # loudly, once per frame name; counted in diagnostics
                text = (f"lidar clouds in frame {frame!r} have no transform to {self.config.frame_id!r}: they are "
                        "used as they are (x forward, y left, z up assumed); publish it on /tf_static or set "
                        "the lidar_extrinsic parameter")
                _LOG.error(text)
                self.warnings.warn("lidar_frame_unknown", text)
            if how == "unknown":
                self.unknown_frame_clouds += 1
            self.timings.add({"convert_lidar": (time.perf_counter() - t0) * 1000.0})
            self._lidar.append((stamp, points))
            self.lidar_watchdog.mark(now_s)
        return True

    def on_odometry(self, msg: Any, now_s: float) -> bool:
        """Ego speed from ``nav_msgs/Odometry`` (``twist.twist.linear.x``); False when refused (``bad_odometry``)."""
        with self._lock:
            self._observe_time(now_s)
            try:
                speed = msgconv.odometry_speed(msg)
            except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
                self.warnings.warn("bad_odometry", f"{type(exc).__name__}: {exc}")
                return False
            return self._set_speed(speed, now_s)

    def on_speed(self, value: Any, now_s: float) -> bool:
        """Ego speed [m/s] as a number or a ``std_msgs/Float32`` (CARLA's speedometer); False when refused
        (``bad_speed``: not a number, or not finite)."""
        with self._lock:
            self._observe_time(now_s)
            try:
                speed = msgconv.float32_speed(value) if hasattr(value, "data") else float(value)
                if not math.isfinite(speed):
                    raise ValueError(f"speed is {speed}")
            except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
                self.warnings.warn("bad_speed", f"{type(exc).__name__}: {exc}")
                return False
            return self._set_speed(speed, now_s)

    def _set_speed(self, speed: float, now_s: float) -> bool:
        self._speed = speed
        self.speed_watchdog.mark(now_s)
        return True

    def _region_id(self, region: Any, kind: str) -> str | None:
        text = region.data if hasattr(region, "data") else region
        if not isinstance(text, str) or not text.strip():
            self.warnings.warn(kind, f"region must be a non-empty string, got {text!r}")
            return None
        text = text.strip()
        if self.regions is not None and text not in self.regions:
            self.warnings.warn("unknown_region", f"region {text!r} has no bundle (known: "
                               f"{', '.join(sorted(self.regions))}); keeping {self.region}")
            return None
        return text

    def on_active_region(self, region: Any, now_s: float) -> bool:
        """``regionadapt/active_region`` (a string or ``std_msgs/String``): switch to its weights at the first
        frame after they are ready. Before ``start`` it replaces the initial region. False when refused."""
        with self._lock:
            self._observe_time(now_s)
            name = self._region_id(region, "bad_region")
            if name is None:
                return False
            self._active_region = name
            if self.swap is None:
                self.initial_region = name
            else:
                self.swap.request(name)
            return True

    def on_next_region(self, region: Any, now_s: float) -> bool:
        """``regionadapt/next_region`` prefetch hint: stage that region's weights early. False when refused."""
        with self._lock:
            self._observe_time(now_s)
            name = self._region_id(region, "bad_region")
            if name is None or self.swap is None:
                return False
            self.swap.hint(name)
            return True

    # ------------------------------------------------------------------------------------------ timer
    def tick(self, now_s: float) -> VehicleCommand | None:
        """Call at a fixed rate: a stop command (stamped ``now_s``) while no camera frame arrived for longer than
        ``camera_timeout_s`` (or none yet), else None. None before ``start``. Safe to call while a frame runs on
        another thread: it never waits for the frame."""
        with self._lock:
            self._observe_time(now_s)
            if self.pipeline is None or not self.camera_watchdog.stale(now_s):
                return None
            age = self.camera_watchdog.age(now_s)
            why = "no camera frame yet" if age is None else f"no camera frame for {age:.2f} s"
            self.stale_stops += 1
            speed = self._speed if self._speed is not None else 0.0
            return self.pipeline.stop_command(now_s, speed, f"stale camera: {why}")

    # ------------------------------------------------------------------------------------------ outputs
    def command_message(self, types: msgconv.TypeResolver, item: FrameResult | VehicleCommand) -> Any:
        """The configured output message for a frame result or a command: AckermannDriveStamped (steering angle,
        target speed, acceleration), CarlaEgoVehicleControl (throttle/steer/brake, header stamp = the source
        image stamp) or Twist (forward speed, yaw rate). ``types`` resolves message classes (rclpy or rosbags).
        The Ackermann fields follow ackermann_msgs: acceleration is a magnitude (the target speed says whether
        to speed up or slow down), steering_angle_velocity and jerk are the configured limits."""
        command = item.command if isinstance(item, FrameResult) else item
        limits = self.config.limits
        kind = self.config.command_type
        if kind == "carla":
            throttle, steer, brake = command.carla(limits)
            return msgconv.build_carla_control(types, throttle, steer, brake, command.stamp_s,
                                               frame_id=self.config.frame_id)
        if kind == "twist":
            linear, angular = command.twist(limits)
            return msgconv.build_twist(types, linear, angular)
        steering, steering_rate, speed, acceleration, jerk = command.ackermann(limits)
        return msgconv.build_ackermann(types, steering, speed, acceleration, command.stamp_s,
                                       frame_id=self.config.frame_id, steering_angle_velocity=steering_rate,
                                       jerk=jerk)

    def perception_messages(self, types: msgconv.TypeResolver, result: FrameResult) -> dict[str, Any]:
        """{topic: message} of ``PERCEPTION_TOPICS`` for one frame. The perception outputs are left out when they
        were not finite (nothing of them is published then); ``perception/risk`` is there for every frame."""
        messages = {} if result.risk is None else {"perception/risk": self.risk_message(types, result.risk)}
        perception = result.perception
        if perception is None:
            return messages
        header = msgconv.build_header(types, result.stamp_s, self.config.frame_id)
        lane = types("geometry_msgs/msg/Vector3Stamped")(
            header=header,
            vector=msgconv.build_vector3(types, perception.lane_offset, perception.heading_error,
                                         perception.curvature),
        )
        return {
            "perception/traffic_light": msgconv.build_string(types, perception.tl_state),
            "perception/lane": lane,
            "perception/obstacle_distance": msgconv.build_float32(types, perception.obstacle_distance),
            **messages,
        }

    def risk_message(self, types: msgconv.TypeResolver, risk: RiskEstimate) -> Any:
        """``perception/risk``: geometry_msgs/Vector3Stamped stamped with the frame's image stamp, x = TTC [s]
        (capped at 100; NaN unknown), y = closing speed [m/s] (NaN unknown), z = level (0 none, 1 warn, 2 brake)."""
        return types("geometry_msgs/msg/Vector3Stamped")(
            header=msgconv.build_header(types, risk.stamp_s, self.config.frame_id),
            vector=msgconv.build_vector3(types, *risk.vector()),
        )

    # ------------------------------------------------------------------------------------------ state
    def sensor_ages(self, now_s: float) -> SensorAges:
        return SensorAges(self.camera_watchdog.age(now_s), self.lidar_watchdog.age(now_s),
                          self.speed_watchdog.age(now_s))

    def frame_rate_hz(self, now_s: float) -> float:
        """Frames per second over the last ``rate_window_s`` (0 with fewer than two frames in it)."""
        with self._lock:
            recent = [t for t in self._frame_times if now_s - self.config.rate_window_s <= t <= now_s]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def dropped_frames(self) -> int:
        return sum(self.warnings.count(kind) for kind in DROP_KINDS)

    def stats(self, now_s: float) -> DrivingStats:
        with self._lock:
            return self._stats(now_s)

    def _stats(self, now_s: float) -> DrivingStats:
        summary = {stage: values for stage, values in self.timings.summary().items() if values["count"]}
        return DrivingStats(
            frames=self.frames,
            dropped_frames=self.dropped_frames(),
            frame_rate_hz=self.frame_rate_hz(now_s),
            latency_ms=summary,
            stale_stops=self.stale_stops,
            non_finite_stops=self.non_finite_stops,
            clock_jumps=self.clock_jumps,
            lidar_frames=self.lidar_frames,
            ages=self.sensor_ages(now_s),
            warnings=self.warnings.counts(),
            swap=self.swap.status() if self.swap is not None else {},
            emergency_brake=self.guard.status(),
            risk_counts=self.risk.count_snapshot(),
        )

    def _recent(self, t: float | None, now_s: float) -> bool:
        return t is not None and 0.0 <= now_s - t <= self.config.error_hold_s

    def diagnostics(self, now_s: float) -> list[DiagnosticStatusData]:
        """Four statuses: ``<name>: pipeline`` (ERROR after non-finite model output produced a stop, WARN after
        dropped frames), ``<name>: sensors`` (STALE while the camera is stale, WARN for missing lidar or speed),
        ``<name>: model`` (region, bundle, swap state; WARN while a load fails or before start) and ``<name>:
        collision risk`` (TTC, level, overrides with their reason; ERROR while the guard brakes, WARN at level
        warn or with the guard off)."""
        with self._lock:
            return self._diagnostics(now_s)

    def _diagnostics(self, now_s: float) -> list[DiagnosticStatusData]:
        stats = self._stats(now_s)
        total = stats.latency_ms.get("total", {})
        pipeline_values = {
            "frames": str(stats.frames),
            "dropped_frames": str(stats.dropped_frames),
            "frame_rate_hz": _fmt(stats.frame_rate_hz, 2),
            "non_finite_stops": str(stats.non_finite_stops),
            "stale_stops": str(stats.stale_stops),
            "clock_jumps": str(stats.clock_jumps),
            "lidar_frames": str(stats.lidar_frames),
        }
        for stage, values in stats.latency_ms.items():
            pipeline_values[f"latency_{stage}_p50_ms"] = _fmt(values["p50"], 2)
            pipeline_values[f"latency_{stage}_p99_ms"] = _fmt(values["p99"], 2)
        for kind, count in sorted(stats.warnings.items()):
            pipeline_values[f"warnings.{kind}"] = str(count)
        if self._recent(self._last_non_finite_t, now_s):
            level, message = DiagnosticLevel.ERROR, (f"non-finite model output: stop commanded "
                                                     f"({stats.non_finite_stops} frames so far)")
        elif self._recent(self._last_drop_t, now_s):
            level, message = DiagnosticLevel.WARN, f"dropped {stats.dropped_frames} camera frames (bad messages)"
        elif not self.started:
            level, message = DiagnosticLevel.WARN, "models not loaded"
        else:
            level = DiagnosticLevel.OK
            message = f"{stats.frame_rate_hz:.1f} fps, total p99 {_fmt(total.get('p99'), 1)} ms"
        pipeline = DiagnosticStatusData(f"{self.name}: pipeline", level, message, pipeline_values, self.hardware_id)

        ages = stats.ages
        sensor_values = {"camera_age_s": _fmt(ages.camera), "lidar_age_s": _fmt(ages.lidar),
                         "speed_age_s": _fmt(ages.speed), "speed_source": self.config.speed_source,
                         "speed_mps": _fmt(self._speed, 2)}
        problems = []
        if ages.lidar is None or ages.lidar > self.config.lidar_max_age_s:
            problems.append(f"lidar missing or stale: speed capped at {self.config.degraded_max_speed:g} m/s")
        if ages.speed is None or ages.speed > self.config.speed_max_age_s:
            problems.append("speed missing or stale")
        frame_problem = []
        if self.cloud_frames.unknown_frames:
            frames = ", ".join(sorted(self.cloud_frames.unknown_frames))
            frame_problem = [f"lidar frame {frames} has no transform to {self.config.frame_id}: clouds used as "
                             "they are (set /tf_static or lidar_extrinsic)"]
            problems += frame_problem
        for frame, how in sorted(self.cloud_frames.used.items()):
            sensor_values[f"lidar_frame.{frame}"] = how
        if ages.camera is None or ages.camera > self.config.camera_timeout_s:
            why = "no camera frame yet" if ages.camera is None else f"no camera frame for {ages.camera:.2f} s"
            sensors = DiagnosticStatusData(f"{self.name}: sensors", DiagnosticLevel.STALE,
                                           "; ".join([f"{why}: stop commanded", *frame_problem]), sensor_values,
                                           self.hardware_id)
        elif problems:
            sensors = DiagnosticStatusData(f"{self.name}: sensors", DiagnosticLevel.WARN, "; ".join(problems),
                                           sensor_values, self.hardware_id)
        else:
            sensors = DiagnosticStatusData(f"{self.name}: sensors", DiagnosticLevel.OK, "camera, lidar and speed "
                                           "fresh", sensor_values, self.hardware_id)

        swap = stats.swap
        model_values = {
            "region": str(swap.get("serving_region") or "none"),
            "active_region": str(self._active_region or "none"),
            "bundle_id": str(swap.get("bundle_id") or "none"),
            "bundle_version": str(swap.get("bundle_version") if swap.get("bundle_version") is not None else "none"),
            "bundle_sha256": str(swap.get("bundle_sha256") or "none"),
            "backend": self.backend_description or self.config.backend,
            "swap_state": str(swap.get("state", "not started")),
            "swaps": str(swap.get("swaps", 0)),
            "failed_loads": str(swap.get("failed_loads", 0)),
        }
        failures = swap.get("failures") or {}
        for region, reason in sorted(failures.items()):
            model_values[f"failure.{region}"] = reason
        if not self.started:
            model = DiagnosticStatusData(f"{self.name}: model", DiagnosticLevel.WARN, "models not loaded",
                                         model_values, self.hardware_id)
        elif failures:
            failed = ", ".join(f"{r}: {why}" for r, why in sorted(failures.items()))
            model = DiagnosticStatusData(f"{self.name}: model", DiagnosticLevel.WARN,
                                         f"serving {model_values['bundle_id']}; loading failed ({failed})",
                                         model_values, self.hardware_id)
        else:
            model = DiagnosticStatusData(f"{self.name}: model", DiagnosticLevel.OK,
                                         f"serving {model_values['bundle_id']} ({model_values['swap_state']})",
                                         model_values, self.hardware_id)
        camera_fresh = ages.camera is not None and ages.camera <= self.config.camera_timeout_s
        last_risk = self.last_result.risk if self.last_result is not None and camera_fresh else None
        risk_level, risk_message, risk_values = risk_status(last_risk, self.guard, stats.risk_counts)
        risk = DiagnosticStatusData(f"{self.name}: collision risk", DiagnosticLevel(risk_level), risk_message,
                                    risk_values, self.hardware_id)
        return [pipeline, sensors, model, risk]

    def diagnostic_array(self, types: msgconv.TypeResolver, now_s: float) -> Any:
        """``diagnostic_msgs/DiagnosticArray`` of ``diagnostics(now_s)`` stamped ``now_s``."""
        return msgconv.build_diagnostic_array(types, now_s, [d.as_entry() for d in self.diagnostics(now_s)])
