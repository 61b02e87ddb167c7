"""Who drives: the product (``ProductAgent``: sensor messages through ``DrivingSession``, exactly the driving
node's path, with a ``RegionSession`` resolving GNSS against geofences on routes through several regions), or
the rule-based expert that labelled the training data (``ExpertAgent``, the reference).

Every agent gets, once per tick, the observation and the messages the runner built from it, and returns a
``Command``: the steering angle and acceleration the vehicle executes. The product's command is the limited
``VehicleCommand`` the node would publish; a frame the session drops (counted) leaves the last command in force,
as an actuator holds the last command it received, until the session's stale-camera watchdog commands a stop.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from regionadapt_ros.adaptation.scene import expert_control
from regionadapt_ros.core.bundle_store import load_regions_document, parse_region
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.sim.course import RouteSpec
from regionadapt_ros.sim.world import EgoPose, Observation


@dataclass
class Command:
    """What the vehicle executes for one period, and how it came about."""

    steer: float
    accel: float
    stop: bool = False
    reason: str = ""
    region: str | None = None
    bundle_id: str | None = None
    latency_ms: float | None = None
    dropped: bool = False
    message: Any = None  # the published command message (product), for recording


@dataclass
class SensorMessages:
    """The messages of one tick, built once by the runner (rosbags message classes)."""

    stamp_s: float
    image: Any
    cloud: Any
    odom: Any
    gnss: Any | None = None


class Agent(Protocol):
    name: str
    needs_messages: bool

    def begin(self, spec: RouteSpec, now_s: float) -> None: ...

    def act(self, obs: Observation, pose: EgoPose, msgs: SensorMessages | None) -> Command: ...

    def end(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ExpertAgent:
    """The rule-based expert on the true scene (the demonstrations the models imitate).

    ``noise`` = (steering std [rad], acceleration std [m/s^2]) adds slowly varying noise (AR(1), correlation
    0.9 per tick) to what the vehicle executes, seeded by the route: the expert then also shows how it recovers
    from small errors (as in DART, Laskey et al. 2017), while its labels stay the clean command.
    """

    needs_messages = False

    def __init__(self, noise: tuple[float, float] = (0.0, 0.0), name: str = "expert") -> None:
        self.name = name
        self.noise = (float(noise[0]), float(noise[1]))
        self._rng = np.random.default_rng(0)
        self._n = np.zeros(2)

    def begin(self, spec: RouteSpec, now_s: float) -> None:
        self._rng = np.random.default_rng([int(spec.seed) & 0xFFFFFFFF, 0xDA27])
        self._n = np.zeros(2)

    def act(self, obs: Observation, pose: EgoPose, msgs: SensorMessages | None) -> Command:
        steer, accel = expert_control(obs.scene)
        if self.noise != (0.0, 0.0):
            rho = 0.9
            self._n = rho * self._n + math.sqrt(1 - rho * rho) * self._rng.normal(0.0, 1.0, 2) * self.noise
            steer, accel = steer + float(self._n[0]), accel + float(self._n[1])
        return Command(steer, accel, region=obs.scene.region.name)

    def end(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


@dataclass
class _RouteStats:
    frames: int = 0
    dropped: int = 0
    late: int = 0
    stops: int = 0
    latencies: list[float] = field(default_factory=list)
    swaps: list[dict[str, Any]] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    per_region: dict[str, dict[str, int]] = field(default_factory=dict)
    gnss_fixes: int = 0


def regions_file_for(regions_file: str | Path, bundles: Mapping[str, str], bundle_dir: str | Path,
                     out_dir: str | Path, keep: Collection[str] | None = None) -> Path:
    """A copy of ``regions_file`` in ``out_dir`` whose regions are served by ``bundles`` ({region: bundle
    directory, absolute or relative to ``bundle_dir``}); rules, signature policy and keys are kept; the
    installed-version registry goes to ``out_dir`` (an evaluation must not write into the shipped bundles)
    and rollback is allowed (one region is served by several bundles in turn). ``keep``: only these regions
    (and the default and base regions) stay, e.g. those a route's geofences define."""
    src = Path(regions_file)
    doc = load_regions_document(src)
    regions = {}
    for region, entry in doc["regions"].items():
        # checked here, so that a problem is reported in the user's file rather than in the copy
        parse_region(src, region, entry, Path(bundle_dir), require_bundles=False)
        regions[region] = dict(entry)
    listed = doc.get("trusted_keys") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError(src, "trusted_keys must be a list of public-key PEM paths")
    if keep is not None:
        always = {doc.get("default_region"), doc.get("base_region", "base")}
        regions = {r: e for r, e in regions.items() if r in set(keep) | always}
    for region, bundle in bundles.items():
        if region not in regions:
            raise ConfigError(src, f"region {region!r} is not in the regions file; it defines {', '.join(regions)}")
        regions[region]["bundle"] = str(Path(bundle) if Path(bundle).is_absolute() else Path(bundle_dir) / bundle)
    for entry in regions.values():
        if not Path(entry["bundle"]).is_absolute():
            entry["bundle"] = str((Path(bundle_dir) / entry["bundle"]).resolve())
    keys = [str(p if Path(p).is_absolute() else (src.parent / p).resolve()) for p in listed]
    doc.update(regions=regions, bundle_dir=str(Path(bundle_dir).resolve()), trusted_keys=keys,
               state_file=str(Path(out_dir).resolve() / "installed.json"), allow_rollback=True)
    out = Path(out_dir) / "regions.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


class ProductAgent:
    """The driving stack as on the vehicle: ``DrivingSession`` over the bundles of ``regions_file``.

    ``bundles`` ({region: bundle dir}) overrides which bundle serves a region (base vs regional vs global
    comparisons); ``geofence_file`` adds a ``RegionSession`` that resolves each tick's GNSS fix (routes across
    regions; without it the session is told the route's region at the start); ``driving_overrides`` replace
    fields of the ``DrivingConfig`` (the hook for comparing session settings, e.g. a guard on or off);
    ``backend`` is the backend name or an ``InferenceBackend`` instance; ``regions``: only these regions of the
    regions file are served (the others' bundles need not exist). ``strict``: a single-region route whose region
    cannot be served (not in the regions file, or its bundle fails to load) is a ConfigError at ``begin``
    instead of being driven by the base's model (what a user of ``drive`` asked for is not what would be
    scored); evaluations that compare models set their bundles explicitly and leave it off.
    """

    needs_messages = True

    def __init__(self, name: str, regions_file: str | Path, *, bundle_dir: str | Path | None = None,
                 bundles: Mapping[str, str] | None = None, geofence_file: str | Path | None = None,
                 backend: Any = "onnxruntime", driving_overrides: Mapping[str, Any] | None = None,
                 resolver: Mapping[str, Any] | None = None, initial_region: str | None = None,
                 regions: Collection[str] | None = None, strict: bool = False) -> None:
        from regionadapt_ros.driving_session import DrivingConfig, DrivingSession

        self.name = name
        self.strict = strict
        self._user_regions_file = Path(regions_file)
        self._tmp = tempfile.TemporaryDirectory(prefix="regionadapt-sim-")
        regions_file = Path(regions_file)
        if bundle_dir is None:
            listed_dir = load_regions_document(regions_file).get("bundle_dir", ".")
            if not isinstance(listed_dir, str) or not listed_dir:
                raise ConfigError(regions_file, "bundle_dir must be a path string")
            bundle_dir = regions_file.parent / listed_dir
        self.region_session = None
        geofence_regions = None
        if geofence_file is not None:
            from regionadapt_ros.core.region_resolver import ResolverConfig
            from regionadapt_ros.region_session import RegionSession
            from regionadapt_ros.replay import _default_region

            self.region_session = RegionSession.from_file(geofence_file, _default_region(regions_file),
                                                          ResolverConfig(**resolver) if resolver else None)
            geofence_regions = self.region_session.geofences.regions
        keep = geofence_regions if geofence_regions is not None else regions
        self.regions_file = regions_files = regions_file_for(regions_file, dict(bundles or {}), bundle_dir,
                                                             self._tmp.name, keep)
        config = DrivingConfig(backend=backend if isinstance(backend, str) else "onnxruntime")
        if driving_overrides:
            try:
                config = replace(config, **dict(driving_overrides))
            except TypeError as exc:
                raise ConfigError("driving_overrides", str(exc)) from None
        instance = None if isinstance(backend, str) else backend
        try:
            self.session = DrivingSession.from_regions_file(config, str(regions_files), initial_region=initial_region,
                                                            geofence_regions=geofence_regions, backend=instance)
        except ConfigError as exc:
            if exc.path != str(regions_files):
                raise
            # the copy is this agent's own detail: the user acts on the file they gave
            raise ConfigError(regions_file, exc.problem) from None
        self.session.start()
        self._stats = _RouteStats()
        self._last: Command | None = None
        self._served: str | None = None
        self._period_ms = 100.0
        self._now = 0.0

    # ------------------------------------------------------------------------------------------ per route
    def begin(self, spec: RouteSpec, now_s: float) -> None:
        self._stats = _RouteStats()
        self._last = None
        self._now = now_s
        self._period_ms = 1000.0 / spec.hz  # a frame later than its tick period is late, at any rate
        if self.region_session is None:
            taken = self.session.on_active_region(spec.regions[0], now_s)
            self._settle()
            if self.strict:
                self._check_served(spec, taken)
        self._served = self.session.region

    def _check_served(self, spec: RouteSpec, taken: bool) -> None:
        """ConfigError unless the route's region serves now or at the first frame (its set is staged)."""
        region, swap = spec.regions[0], self.session.swap
        staged = swap.staged.region if swap is not None and swap.staged is not None else None
        if taken and region in (self.session.region, staged):
            return
        failures = swap.failures if swap is not None else {}
        why = (failures.get(region) or "its bundle did not load") if taken else "it is not in the regions file"
        raise ConfigError(self._user_regions_file, f"route {spec.route_id}: region {region!r} cannot be served "
                                                   f"({why}); it would be driven by {self.session.region}")

    def _settle(self) -> None:
        # faster than real time: a load just asked for finishes before the next tick (reproducible runs)
        if self.session.swap is not None:
            self.session.swap.wait_idle(60)

    def act(self, obs: Observation, pose: EgoPose, msgs: SensorMessages | None) -> Command:
        if msgs is None:
            raise ValueError("ProductAgent needs the tick's sensor messages")
        session, now = self.session, msgs.stamp_s
        self._now = now
        if self.region_session is not None and msgs.gnss is not None:
            self._stats.gnss_fixes += 1
            update = self.region_session.on_fix(msgs.gnss, now)
            self.region_session.on_odometry(msgs.odom, now)
            if update.next_region_hint:
                session.on_next_region(update.next_region_hint, now)
                self._settle()
            if update.active_region_changed:
                session.on_active_region(update.active_region_changed, now)
                self._settle()
        session.on_odometry(msgs.odom, now)
        session.on_lidar(msgs.cloud, now)
        result = session.on_image(msgs.image, now)
        stats = self._stats
        if result is None:
            stats.dropped += 1
            stop = session.tick(now)
            if stop is not None:
                stats.stops += 1
                cmd = Command(stop.steering_angle, stop.accel, True, stop.reason, session.region, None, None, True)
            elif self._last is not None:
                cmd = replace(self._last, dropped=True, message=None)
            else:
                cmd = Command(0.0, 0.0, True, "no command yet", session.region, None, None, True)
            self._last = cmd
            return cmd
        stats.frames += 1
        total = result.timings_ms.get("total", math.nan)
        stats.latencies.append(total)
        if total > self._period_ms:
            stats.late += 1
        if result.command.stop:
            stats.stops += 1
        if result.region != self._served:
            rec = session.swap.history[-1] if session.swap and session.swap.history else None
            # a switch on the first frame served is the acquisition of the start region from the first fix
            stats.swaps.append({"t": now, "from": self._served, "to": result.region,
                                "prefetched": bool(rec.prefetched) if rec is not None else None,
                                "startup": stats.frames == 1})
            self._served = result.region
        if not stats.regions or stats.regions[-1] != result.region:
            stats.regions.append(result.region)
        counts = stats.per_region.setdefault(result.region, {"frames": 0, "late": 0})
        counts["frames"] += 1
        counts["late"] += int(total > self._period_ms)
        command = result.command
        cmd = Command(command.steering_angle, command.accel, command.stop, command.reason, result.region,
                      result.bundle_id, total, False, result)
        self._last = cmd
        return cmd

    def end(self) -> dict[str, Any]:
        s = self._stats
        lat = np.asarray(s.latencies, float)
        lat = lat[np.isfinite(lat)]
        stats = self.session.stats(self._now)
        return {"frames": s.frames, "dropped_frames": s.dropped, "late_frames": s.late, "stop_commands": s.stops,
                "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
                "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
                "swaps": list(s.swaps), "regions": list(s.regions), "per_region": s.per_region,
                "gnss_fixes": s.gnss_fixes,
                "failed_loads": int(stats.swap.get("failed_loads", 0)), "clock_jumps": stats.clock_jumps,
                "stage_latency_ms": stats.latency_ms, "warnings": self.session.warnings.counts(),
                "emergency_brake": _guard_counts(self.session.guard.status())}

    @property
    def command_type(self) -> str:
        """The configured output message kind ("ackermann", "carla" or "twist")."""
        return self.session.config.command_type

    def command_message(self, types: Any, cmd: Command) -> Any:
        """The configured command message of a tick (the node's output)."""
        from regionadapt_ros.pipeline import FrameResult

        if isinstance(cmd.message, FrameResult):
            return self.session.command_message(types, cmd.message)
        return None

    def close(self) -> None:
        self.session.close()
        self._tmp.cleanup()


def _guard_counts(status: dict[str, Any]) -> dict[str, int]:
    """The guard's counters of a route (overrides while on; suppressed: the overrides it would have made off)."""
    return {k: int(status.get(k, 0)) for k in ("overrides", "override_frames", "suppressed", "suppressed_frames")}
