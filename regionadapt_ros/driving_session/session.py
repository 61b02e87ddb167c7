"""``DrivingSession``: what the driving node does per message (see the package docstring)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.collision_risk import CollisionRiskEstimator, RiskEstimate
from regionadapt_ros.core.control import ControlMapper, VehicleCommand
from regionadapt_ros.core.diagnostics import CountedWarnings
from regionadapt_ros.core.emergency_brake import EmergencyBrakeGuard, risk_status
from regionadapt_ros.core.errors import ConfigError, MessageConversionError
from regionadapt_ros.core.frames import (
    IMPLAUSIBLE,
    MAX_SENSOR_OFFSET_M,
    CloudFrames,
    frame_label,
    parse_extrinsic,
    sensor_offset_m,
)
from regionadapt_ros.core.lidar_corridor import LidarCorridor
from regionadapt_ros.core.preprocess import IntensityScale, bev_grid
from regionadapt_ros.core.timing import StageTimings
from regionadapt_ros.core.watchdog import SensorWatchdog
from regionadapt_ros.driving_session.config import (
    DROP_KINDS,
    LIDAR_FIELDS,
    LIDAR_GAP_NONE_YET,
    REORDER_TOLERANCE_S,
    SESSION_STAGES,
    DrivingConfig,
)
from regionadapt_ros.driving_session.diagnostic import DiagnosticLevel, DiagnosticStatusData
from regionadapt_ros.driving_session.locked import _SharedGuard, _SharedMapper, _SharedRisk
from regionadapt_ros.driving_session.outputs import (
    build_command_message,
    build_perception_messages,
    build_risk_message,
    model_status,
    pipeline_status,
    sensors_status,
)
from regionadapt_ros.inference.backend import InferenceBackend
from regionadapt_ros.inference.swap import HotSwapManager, Loader, WeightSet
from regionadapt_ros.pipeline import FrameInputs, FramePipeline, FrameResult

_LOG = logging.getLogger("regionadapt_ros.driving")


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
    guard's counts (``EmergencyBrakeGuard.status()``); risk_counts: the risk estimators' input counts (the
    lidar channel's prefixed ``lidar.``).
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
        try:  # the tightest turn a measured yaw rate may imply: the vehicle limits are fixed for the session
            self._max_turn_curvature = msgconv.max_turn_curvature(config.limits.max_steering_angle,
                                                                  config.limits.wheelbase)
        except ValueError as exc:
            raise ConfigError("vehicle.max_steering_angle", str(exc)) from None
        self.risk: CollisionRiskEstimator = _SharedRisk(config.risk, self.warnings)
        self.guard: EmergencyBrakeGuard = _SharedGuard(config.emergency_brake)
        # the guard's second channel: the nearest lidar return in the path corridor, found once per sweep
        self.lidar_risk: CollisionRiskEstimator = _SharedRisk(config.risk, self.warnings, "lidar")
        self.corridor = LidarCorridor(config.corridor)
        self._yaw_rate: float | None = None
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
        self._refused_region: str | None = None  # the last active_region refused, until one is taken
        self._last_frame_error_t: float | None = None  # the models failed on a frame (not a bad message)
        self._last_camera_msg_t: float | None = None  # a camera message arrived (whether or not it gave a command)
        # One scale for the sensor's life: a time jump does not change what its intensity values mean.
        self.intensity_scale = IntensityScale(config.lidar_intensity_max or None)
        self.last_result: FrameResult | None = None
        # (stamp_s, (N, 4) points, (1, C, rows, cols) BEV grid): a sweep's grid is computed once, when the sweep
        # arrives, and serves every camera frame it is matched with (a 30 Hz camera over a 10 Hz lidar: three)
        self._lidar: deque[tuple[float, np.ndarray, np.ndarray]] = deque(maxlen=8)
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

            backend, reason = select_backend(self.config.backend, tensorrt_options=self.config.tensorrt_options())
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
                                          record_timings=False, risk=self.risk, guard=self.guard,
                                          lidar_risk=self.lidar_risk, corridor=self.corridor)
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

    def resume(self, now_s: float) -> None:
        """The node became active again after ``now_s`` minus however long it was inactive: a new time line that
        is not a clock jump (nothing observed the clock meanwhile), so history is forgotten without counting a
        jump, and the sensors keep their ages (a camera silent since before the pause is stale at once, and
        the stop timer says so on its first tick)."""
        with self._lock:
            self._last_now = now_s
            self._forget_history()
            for watchdog in (self.camera_watchdog, self.lidar_watchdog, self.speed_watchdog):
                watchdog.resume(now_s)

    def _forget_history(self) -> None:
        self.mapper.reset()
        if self.pipeline is not None:
            self.pipeline.reset_risk()
        else:
            self.risk.reset()
            self.lidar_risk.reset()
            self.guard.reset()
        self._lidar.clear()
        self._speed = None
        self._yaw_rate = None
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
            self._last_camera_msg_t = now_s
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
            last_stamp = self._last_image_stamp
            if last_stamp is not None and last_stamp - self.config.camera_timeout_s <= stamp < last_stamp:
                # A frame older than one already driven on (two publishers on one topic, a reordering relay): its
                # command would go out after a newer one. Within camera_timeout_s it is the same time line, so
                # the history stays; the frame is dropped and counted.
                self._drop("out_of_order_frame", f"frame stamped {stamp:.3f} s arrived after one stamped "
                           f"{last_stamp:.3f} s: not driven on", now_s)
                return None
            if last_stamp is not None and stamp < last_stamp:
                # Stamps went back further without the clock doing so (a restarted camera driver, a looped
                # source): the rate limits and the lidar buffer refer to another time line.
                self.clock_jumps += 1
                jumps += 1  # this frame's own reset: it starts the new time line
                self._forget_history()
            self._last_image_stamp = stamp
            sweep = self._lidar_for(stamp)
            points, bev, sweep_stamp = sweep if sweep is not None else (None, None, None)
            self.last_lidar_gap = None if points is not None else self._lidar_gap(stamp)
            speed = self._speed if self._speed is not None else 0.0
            speed_age = self.speed_watchdog.age(now_s)
            speed_valid = (self._speed is not None and speed_age is not None
                           and speed_age <= self.config.speed_max_age_s)
        try:
            yaw_rate = self._yaw_rate if speed_valid else None
            result = pipeline.process(FrameInputs(stamp, rgb, points, speed, speed_valid, bev, sweep_stamp, yaw_rate))
        except Exception as exc:  # a backend failure must not take the node down; the camera watchdog stops
            with self._lock:
                self._drop("frame_error", f"{type(exc).__name__}: {exc}", now_s)
                self._last_frame_error_t = now_s
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

    def _lidar_for(self, image_stamp: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(points, BEV grid, sweep stamp) of the newest sweep stamped within ``lidar_max_age_s`` of the image
        (either side), None without one. Lock held."""
        best = None
        for sweep in self._lidar:
            if abs(image_stamp - sweep[0]) <= self.config.lidar_max_age_s and (best is None or sweep[0] > best[0]):
                best = sweep
        return (best[1], best[2], best[0]) if best is not None else None

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
            return min((sweep[0] - image_stamp for sweep in self._lidar), key=abs)

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
        frame = str(getattr(getattr(msg, "header", None), "frame_id", "") or "")
        transform, how = self.cloud_frames.transform_for(frame)
        if how == IMPLAUSIBLE:  # before the conversion: the sweep is not used whatever its points
            assert transform is not None
            offset = sensor_offset_m(transform)
            with self._lock:
                # Refused, not used: the lidar goes stale, the speed is capped and the sensors diagnostic names
                # the frame (lidar_frame.<frame>: refused).
                self.cloud_frames.record(frame, how)
                self.warnings.warn("lidar_transform_implausible",
                                   f"/tf_static puts lidar frame {frame_label(frame)!r} {offset:.4g} m from "
                                   f"{self.config.frame_id!r} (at most {MAX_SENSOR_OFFSET_M:g}): its clouds are "
                                   "refused")
            return False
        try:  # outside the lock, as a frame's decoding
            # A sweep with no finite point is refused: the lidar goes stale and frames run degraded.
            points = msgconv.lidar_sweep_points(msg, LIDAR_FIELDS, warnings=self.warnings,
                                                max_points=self.config.lidar_max_points)
            stamp = msgconv.stamp_to_s(msg.header)
        except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
            self.warnings.warn("bad_pointcloud", f"{type(exc).__name__}: {exc}")
            return False
        points = self.cloud_frames.apply(points, transform)  # a conversion: outside the lock
        t1 = time.perf_counter()
        bev = bev_grid(points, intensity=self.intensity_scale)[None]
        t2 = time.perf_counter()
        with self._lock:
            if self.cloud_frames.record(frame, how):  # loudly, once per frame name; counted in diagnostics
                text = (f"lidar clouds in frame {frame_label(frame)!r} have no transform to "
                        f"{self.config.frame_id!r}: they are used as they are (x forward, y left, z up assumed); "
                        "publish it on /tf_static or set the lidar_extrinsic parameter")
                _LOG.error(text)
                self.warnings.warn("lidar_frame_unknown", text)
            if how == "unknown":
                self.unknown_frame_clouds += 1
            self.timings.add({"convert_lidar": (t1 - t0) * 1000.0, "preprocess_lidar": (t2 - t1) * 1000.0})
            self._lidar.append((stamp, points, bev))
            self.lidar_watchdog.mark(now_s)
        return True

    def on_odometry(self, msg: Any, now_s: float) -> bool:
        """Ego speed and yaw rate from ``nav_msgs/Odometry`` (``twist.twist.linear.x``, ``twist.twist.angular.z``,
        in the vehicle frame by REP 105); False when refused (``bad_odometry``)."""
        return self._on_vehicle_twist(msg, now_s, msgconv.odometry_speed, msgconv.odometry_yaw_rate, "bad_odometry")

    def on_twist(self, msg: Any, now_s: float) -> bool:
        """Ego speed and yaw rate from ``geometry_msgs/TwistStamped`` in the vehicle frame (``twist.linear.x``,
        ``twist.angular.z``); False when refused (``bad_twist``)."""
        return self._on_vehicle_twist(msg, now_s, msgconv.twist_speed, msgconv.twist_yaw_rate, "bad_twist")

    def _on_vehicle_twist(self, msg: Any, now_s: float, read_speed: Any, read_yaw_rate: Any, counter: str) -> bool:
        """The speed of a message with a twist (refused: counted as ``counter``) and its yaw rate, or None (the
        motion path falls back to the steering) when it has none or an implausible one (counted as
        ``bad_yaw_rate``; the speed may still be good)."""
        with self._lock:
            self._observe_time(now_s)
            try:
                speed = read_speed(msg)
            except (MessageConversionError, AttributeError, TypeError, ValueError) as exc:
                self.warnings.warn(counter, f"{type(exc).__name__}: {exc}")
                return False
            try:
                self._yaw_rate = read_yaw_rate(msg, self._max_turn_curvature)
            except MessageConversionError as exc:
                self._yaw_rate = None
                self.warnings.warn("bad_yaw_rate", f"{type(exc).__name__}: {exc}")
            return self._set_speed(speed, now_s)

    def on_speed(self, value: Any, now_s: float) -> bool:
        """Ego speed [m/s] as a number or a ``std_msgs/Float32`` (CARLA's speedometer); False when refused
        (``bad_speed``: not a number, not finite, or beyond any road vehicle)."""
        with self._lock:
            self._observe_time(now_s)
            try:
                if hasattr(value, "data"):
                    speed = msgconv.float32_speed(value)
                else:
                    speed = msgconv.plausible_speed(float(value), "speed", "value")
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
            self.warnings.warn(kind, f"region must be a non-empty string, got {frame_label(repr(text))}")
            return None
        text = text.strip()
        if self.regions is not None and text not in self.regions:
            self.warnings.warn("unknown_region", f"region {frame_label(text)!r} has no bundle (known: "
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
                # Kept, and said in the model diagnostic until a region that has a bundle comes: the vehicle is
                # driving with another region's model than the region manager asked for.
                text = region.data if hasattr(region, "data") else region
                self._refused_region = frame_label(text if isinstance(text, str) else repr(text))
                return False
            self._refused_region = None
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
        """The configured output message for a frame result or a command (``outputs.build_command_message``)."""
        return build_command_message(self.config, types, item)

    def perception_messages(self, types: msgconv.TypeResolver, result: FrameResult) -> dict[str, Any]:
        """{topic: message} of ``PERCEPTION_TOPICS`` for one frame (``outputs.build_perception_messages``)."""
        return build_perception_messages(self.config, types, result)

    def risk_message(self, types: msgconv.TypeResolver, risk: RiskEstimate) -> Any:
        """``perception/risk`` for one estimate (``outputs.build_risk_message``)."""
        return build_risk_message(self.config, types, risk)

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
            risk_counts=self.risk.count_snapshot() | {f"lidar.{k}": v for k, v in
                                                      self.lidar_risk.count_snapshot().items()},
        )

    def _recent(self, t: float | None, now_s: float) -> bool:
        return t is not None and 0.0 <= now_s - t <= self.config.error_hold_s

    def diagnostics(self, now_s: float, commanding: bool = True) -> list[DiagnosticStatusData]:
        """Four statuses: ``<name>: pipeline`` (ERROR after non-finite model output produced a stop, WARN after
        dropped frames), ``<name>: sensors`` (STALE while the camera is stale, WARN for missing lidar or speed),
        ``<name>: model`` (region, bundle, swap state; WARN while a load fails or before start) and ``<name>:
        collision risk`` (TTC, level, overrides with their reason; ERROR while the guard brakes, WARN at level
        warn or with the guard off). ``commanding``: False while the node is inactive, when a stale camera
        commands no stop."""
        with self._lock:
            return self._diagnostics(now_s, commanding)

    def _diagnostics(self, now_s: float, commanding: bool = True) -> list[DiagnosticStatusData]:
        stats = self._stats(now_s)
        name, hardware_id = self.name, self.hardware_id
        ages = stats.ages
        camera_fresh = ages.camera is not None and ages.camera <= self.config.camera_timeout_s
        last_risk = self.last_result.risk if self.last_result is not None and camera_fresh else None
        risk_level, risk_message, risk_values = risk_status(last_risk, self.guard, stats.risk_counts)
        frame_error = (self.warnings.last_message("frame_error")
                       if self._recent(self._last_frame_error_t, now_s) else None)
        received_age = None if self._last_camera_msg_t is None else max(0.0, now_s - self._last_camera_msg_t)
        return [
            pipeline_status(name, hardware_id, stats, non_finite_recent=self._recent(self._last_non_finite_t, now_s),
                            drop_recent=self._recent(self._last_drop_t, now_s), started=self.started,
                            frame_error=frame_error),
            sensors_status(name, hardware_id, self.config, ages, self._speed, self.cloud_frames,
                           self.intensity_scale, camera_received_age_s=received_age, commanding=commanding),
            model_status(name, hardware_id, stats.swap, self._active_region,
                         self.backend_description or self.config.backend, self.started, self._refused_region),
            DiagnosticStatusData(f"{name}: collision risk", DiagnosticLevel(risk_level), risk_message, risk_values,
                                 hardware_id),
        ]

    def diagnostic_array(self, types: msgconv.TypeResolver, now_s: float) -> Any:
        """``diagnostic_msgs/DiagnosticArray`` of ``diagnostics(now_s)`` stamped ``now_s``."""
        return msgconv.build_diagnostic_array(types, now_s, [d.as_entry() for d in self.diagnostics(now_s)])
