"""``DriveGenerator``: a world along an endless road, with lights that cycle and traffic that moves, and an ego on
a kinematic bicycle, one ``DriveFrame`` per tick."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from regionadapt_ros.adaptation.regions import RegionSpec, get_region
from regionadapt_ros.adaptation.render import render_camera, simulate_lidar
from regionadapt_ros.adaptation.scene import (
    STOP_LINE_MARGIN_M,
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    WHEELBASE_M,
    CurvatureProfile,
    Facade,
    Guardrail,
    LaneLayout,
    Scene,
    TrafficLight,
    Vehicle,
    light_requires_stop,
    longitudinal_accel,
    scene_labels,
    target_speed,
)
from regionadapt_ros.adaptation.synthetic.scenes import (
    _append_segment,
    _light,
    _look,
    _region_code,
    _roadside,
    _rock,
    _vehicle,
)
from regionadapt_ros.core.contracts import LABELS

_DRIVE_STREAM = 0x5D0F  # separates the drive generator's random stream from the samples'


# --------------------------------------------------------------------------------------------------------
# Drives


@dataclass
class DriveFrame:
    """One tick of a drive. ``points`` is the lidar sweep (N, 4) [x, y, z, intensity] with NaN rows for rays
    without a return; ``labels`` follow LABELS; ``expert_control`` = (steering rad, accel m/s^2) commanded at
    this frame; ``pose`` = (x m, y m, yaw rad) of the ego in the drive's local world frame."""

    t: float
    rgb: np.ndarray
    points: np.ndarray
    speed: float
    labels: np.ndarray
    expert_control: tuple[float, float]
    pose: tuple[float, float, float]
    region: str


@dataclass
class _WorldLight:
    stop_station: float
    light: TrafficLight  # stop_s/housing_s relative to stop_station (stations as offsets)
    phase: float
    green_s: float
    yellow_s: float
    red_s: float

    def state(self, t: float) -> int:
        cycle = self.green_s + self.yellow_s + self.red_s
        x = (t + self.phase) % cycle
        if x < self.green_s:
            return TL_GREEN
        if x < self.green_s + self.yellow_s:
            return TL_YELLOW
        return TL_RED


@dataclass
class _WorldVehicle:
    vehicle: Vehicle  # s = world station of the centre
    desired_speed: float
    lane_key: tuple[str, int]  # ("ego"|"oncoming"|"parked"|"rock", lane)


@dataclass
class _World:
    knots_station: list[float] = field(default_factory=list)
    knots_k: list[float] = field(default_factory=list)
    built_to: float = -100.0
    lights: list[_WorldLight] = field(default_factory=list)
    vehicles: list[_WorldVehicle] = field(default_factory=list)
    facades: list[Facade] = field(default_factory=list)
    guardrails: list[Guardrail] = field(default_factory=list)
    lamps: list[tuple[float, float]] = field(default_factory=list)


class DriveGenerator:
    """An endless, temporally coherent drive through one region.

    Each ``step()`` (or iteration) renders the current instant, records the expert's command, then advances
    the world by 1/hz seconds: the ego follows a kinematic bicycle model (wheelbase WHEELBASE_M) with the
    expert's steering and acceleration (plus small actuation noise and heading disturbances), traffic lights
    cycle green → yellow → red, other vehicles drive, follow and stop at lights, and the road, buildings,
    rocks and guardrails are extended ahead as the ego advances.
    """

    _BUILD_AHEAD = 260.0  # m of road kept built ahead of the ego

    def __init__(
        self,
        region: str | RegionSpec,
        seed: int,
        hz: float = 10.0,
        image_size: tuple[int, int] = (192, 320),
        start_speed: float | None = None,
        start_pose: tuple[float, float, float] = (0.0, 0.0, 0.0),
        t0: float = 0.0,
    ) -> None:
        if hz <= 0:
            raise ValueError(f"hz must be > 0, got {hz}")
        self.spec = get_region(region)
        self.hz = float(hz)
        self.dt = 1.0 / self.hz
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.rng = np.random.default_rng(
            np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _region_code(self.spec.name), _DRIVE_STREAM])
        )
        spec = self.spec
        lanes = int(self.rng.choice(spec.lanes_per_direction))
        self.layout = LaneLayout(
            spec.lane_width_m,
            lanes,
            lanes if spec.oncoming_lanes else 0,
            int(self.rng.integers(lanes)),
            spec.driving_side,
        )
        self.valley_side = 1 if self.rng.random() < 0.5 else -1
        self.t = float(t0)
        self.S = 0.0
        self.d = self.layout.ego_lane_centre + float(self.rng.normal(0.0, 0.3))
        self.psi = float(self.rng.normal(0.0, 0.02))
        self.v = float(start_speed) if start_speed is not None else 0.7 * spec.speed_limit_mps
        self.x, self.y, self.yaw = (float(c) for c in start_pose)
        self.road_yaw = self.yaw - self.psi
        self.look = _look(spec, self.rng)
        self.world = _World()
        self._gaps: list[tuple[float, float]] = []  # cross streets (no buildings there)
        # A straight start so the ego begins settled.
        self.world.knots_station += [-100.0, 30.0]
        self.world.knots_k += [0.0, 0.0]
        self.world.built_to = 30.0
        self._extend(self.S + self._BUILD_AHEAD)
        self._build_roadside(-80.0, 30.0)

    # -- world building --------------------------------------------------------------------------------

    def _extend(self, to: float) -> None:
        w = self.world
        start = w.built_to
        while w.built_to < to:
            w.built_to = _append_segment(self.spec, self.rng, w.built_to, w.knots_station, w.knots_k)
        if start > 30.0 or w.built_to > 30.0:
            self._populate(max(start, 30.0), w.built_to)

    def _populate(self, a: float, b: float) -> None:
        """Lights, parked cars, rocks and lamps between world stations a and b, and buildings beside them."""
        spec, rng, lay = self.spec, self.rng, self.layout
        gaps = []
        if spec.tl_prob > 0:
            last = self.world.lights[-1].stop_station if self.world.lights else 0.0
            s = max(a, last + 120.0) + rng.uniform(0.0, 120.0)
            while s < b:
                light = _light(spec, lay, rng, 0.0, TL_GREEN, True)
                light.arrow_panel = rng.random() < spec.tl_arrow_panel_prob
                self.world.lights.append(
                    _WorldLight(
                        s, light, float(rng.uniform(0.0, 40.0)), rng.uniform(10.0, 16.0), 3.0, rng.uniform(8.0, 12.0)
                    )
                )
                gaps.append((s - 3.0, s + 15.0))
                s += rng.uniform(140.0, 320.0)
        lo, hi = lay.road_bounds
        for _ in range(int(rng.poisson(spec.parked_cars_mean * (b - a) / 60.0))):
            kerb = hi + 1.0 if rng.random() < 0.5 else lo - 1.0
            veh = _vehicle(rng, spec, float(rng.uniform(a, b)), kerb, 0.0, 0.0)
            if veh.kind == "car":
                self.world.vehicles.append(_WorldVehicle(veh, 0.0, ("parked", 0)))
        if spec.rock_prob > 0:
            for _ in range(int(rng.poisson(spec.rock_prob * 2.0 * (b - a) / 100.0))):
                # Rocks in a drive lie off the ego lane (the expert does not steer around obstacles).
                lane_lo, lane_hi = lay.ego_lane_bounds
                choices = [x for x in np.linspace(lo - 0.5, hi + 0.5, 12) if x < lane_lo - 0.9 or x > lane_hi + 0.9]
                if choices:
                    rock = _rock(rng, spec, float(rng.uniform(a, b)), float(choices[rng.integers(len(choices))]))
                    self.world.vehicles.append(_WorldVehicle(rock, 0.0, ("rock", 0)))
        self._gaps += gaps
        self._build_roadside(a, b)

    def _build_roadside(self, a: float, b: float) -> None:
        facades, rails, lamps = _roadside(self.spec, self.layout, self.rng, a, b, self._gaps, self.valley_side)
        self.world.facades += facades
        self.world.guardrails += rails
        self.world.lamps += lamps

    def _spawn_traffic(self, rng: np.random.Generator | None = None) -> None:
        """New vehicles ahead in the ego's lanes and oncoming, drawn from ``rng`` (default: the world's)."""
        spec, lay = self.spec, self.layout
        rng = rng if rng is not None else self.rng
        moving = [wv for wv in self.world.vehicles if wv.lane_key[0] in ("ego", "oncoming")]
        for lane in range(lay.lanes_ego):
            ahead = [wv for wv in moving if wv.lane_key == ("ego", lane) and wv.vehicle.s > self.S]
            p_spawn = (spec.lead_prob if lane == lay.ego_lane else 0.5 * spec.other_vehicles_mean) * self.dt / 4.0
            if not any(wv.vehicle.s - self.S < 160.0 for wv in ahead) and rng.random() < p_spawn:
                desired = spec.speed_limit_mps * rng.uniform(0.65, 0.95)
                veh = _vehicle(rng, spec, self.S + rng.uniform(90.0, 150.0), lay.lane_centre(lane), 0.0, desired)
                self.world.vehicles.append(_WorldVehicle(veh, desired, ("ego", lane)))
        for lane in range(lay.lanes_oncoming):
            p_spawn = 0.5 * spec.other_vehicles_mean * self.dt / 3.0
            if rng.random() < p_spawn:
                speed = spec.speed_limit_mps * rng.uniform(0.6, 1.0)
                veh = _vehicle(rng, spec, self.S + 165.0, lay.oncoming_lane_centre(lane), math.pi, speed)
                self.world.vehicles.append(_WorldVehicle(veh, speed, ("oncoming", lane)))

    # -- snapshot ----------------------------------------------------------------------------------------

    def _light_states(self) -> list[tuple[_WorldLight, int]]:
        return [(wl, wl.state(self.t)) for wl in self.world.lights]

    def scene(self) -> Scene:
        """The current instant as a Scene (stations relative to the ego)."""
        w, S = self.world, self.S
        profile = CurvatureProfile(np.asarray(w.knots_station) - S, np.asarray(w.knots_k))
        lights = []
        for wl, state in self._light_states():
            rel = wl.stop_station - S
            if -20.0 < rel < 170.0:
                src = wl.light
                lights.append(
                    TrafficLight(
                        stop_s=rel,
                        state=state,
                        housing_s=rel + src.housing_s,
                        housing_lat=src.housing_lat,
                        housing_height=src.housing_height,
                        pole_lat=src.pole_lat,
                        horizontal=src.horizontal,
                        red_on_right=src.red_on_right,
                        facing_ego=True,
                        governs_ego=True,
                        arrow_panel=src.arrow_panel and state == TL_RED,
                        go_colour=src.go_colour,
                        yellow_colour=src.yellow_colour,
                    )
                )
        vehicles = []
        for wv in w.vehicles:
            rel = wv.vehicle.s - S
            if -60.0 < rel < 170.0:
                v = wv.vehicle
                vehicles.append(
                    Vehicle(
                        v.kind,
                        rel,
                        v.lat,
                        v.length,
                        v.width,
                        v.height,
                        v.heading,
                        v.speed,
                        v.accel,
                        v.colour,
                        v.shape_seed,
                    )
                )
        facades = [
            Facade(f.s0 - S, f.s1 - S, f.lat, f.depth, f.height, f.colour, f.kind, f.seed)
            for f in w.facades
            if f.s1 - S > -60.0 and f.s0 - S < 170.0
        ]
        rails = [Guardrail(g.lat, g.s0 - S, g.s1 - S) for g in w.guardrails if g.s1 - S > -60.0 and g.s0 - S < 170.0]
        lamps = [(s - S, lat) for s, lat in w.lamps if -20.0 < s - S < 170.0]
        return Scene(
            region=self.spec,
            profile=profile,
            layout=self.layout,
            ego_lat=self.d,
            ego_heading=self.psi,
            speed=self.v,
            vehicles=vehicles,
            lights=lights,
            facades=facades,
            guardrails=rails,
            street_lamps=lamps,
            dash_phase=S,
            world_yaw=self.yaw,
            look=self.look,
        )

    # -- dynamics ----------------------------------------------------------------------------------------

    def _move_traffic(self, dt: float) -> None:
        spec = self.spec
        states = self._light_states()
        knots_s = np.asarray(self.world.knots_station)
        knots_k = np.asarray(self.world.knots_k)
        by_lane: dict[tuple[str, int], list[_WorldVehicle]] = {}
        for wv in self.world.vehicles:
            by_lane.setdefault(wv.lane_key, []).append(wv)
        for key, group in by_lane.items():
            if key[0] == "oncoming":
                for wv in group:
                    wv.vehicle.s -= wv.vehicle.speed * dt
                continue
            if key[0] != "ego":
                continue
            group.sort(key=lambda wv: wv.vehicle.s)
            for i, wv in enumerate(group):
                veh = wv.vehicle
                leads = []
                if i + 1 < len(group):
                    nxt = group[i + 1].vehicle
                    leads.append((nxt.rear_s - veh.front_s, nxt.speed))
                stops = []
                for wl, state in states:
                    dist = wl.stop_station - veh.front_s
                    if 0.0 < dist < 80.0:
                        probe = TrafficLight(dist, state, 0, 0, 0, 0, False)
                        if light_requires_stop(spec, probe, veh.speed):
                            stops.append(dist - STOP_LINE_MARGIN_M)
                # Other drivers slow down for curves too (same lateral-acceleration budget as the expert).
                ahead = CurvatureProfile(knots_s - veh.s, knots_k)
                v_target = min(wv.desired_speed, target_speed(spec, ahead))
                accel = longitudinal_accel(spec, veh.speed, v_target, leads, stops)
                veh.accel = accel
                veh.speed = max(0.0, veh.speed + accel * dt)
                veh.s += veh.speed * dt
        # Moving traffic far ahead is forgotten; parked cars and rocks stay until the ego has passed them (they
        # may have been built further ahead than the moving traffic is kept).
        self.world.vehicles = [
            wv for wv in self.world.vehicles
            if wv.vehicle.s - self.S > -80.0
            and (wv.vehicle.s - self.S < self._BUILD_AHEAD + 20.0 or wv.lane_key[0] in ("parked", "rock"))
        ]

    def _move_ego(self, steer: float, accel: float, dt: float, rng: np.random.Generator | None = None) -> None:
        """Advance the kinematic bicycle by ``dt`` with steering angle ``steer`` [rad] and ``accel`` [m/s^2];
        the heading disturbance is drawn from ``rng`` (default: the world's)."""
        w = self.world
        n_sub = 4
        h = dt / n_sub
        ks = np.asarray(w.knots_station)
        kk = np.asarray(w.knots_k)
        for _ in range(n_sub):
            k = float(np.interp(self.S, ks, kk))
            s_dot = self.v * math.cos(self.psi) / max(1.0 - k * self.d, 0.2)
            yaw_rate = self.v * math.tan(steer) / WHEELBASE_M
            self.d += self.v * math.sin(self.psi) * h
            self.psi += (yaw_rate - k * s_dot) * h
            self.S += s_dot * h
            self.road_yaw += k * s_dot * h
            self.yaw = self.road_yaw + self.psi
            self.x += self.v * math.cos(self.yaw) * h
            self.y += self.v * math.sin(self.yaw) * h
            self.v = max(0.0, self.v + accel * h)
        # Wind, camber and road roughness (while moving): the expert has to keep correcting.
        self.psi += float((rng if rng is not None else self.rng).normal(0.0, 0.004)) * min(1.0, self.v / 5.0)

    def step(self) -> DriveFrame:
        """Render and label the current instant, then advance the world by one tick."""
        scene = self.scene()
        labels = scene_labels(scene)
        steer = float(labels[LABELS.index("steering")])
        accel = float(labels[LABELS.index("accel")])
        rgb = render_camera(scene, self.image_size)
        points = simulate_lidar(scene, self.rng)
        frame = DriveFrame(
            t=self.t,
            rgb=rgb,
            points=points,
            speed=self.v,
            labels=labels,
            expert_control=(steer, accel),
            pose=(self.x, self.y, self.yaw),
            region=self.spec.name,
        )
        applied_steer = steer + float(self.rng.normal(0.0, 0.003))
        self._move_ego(applied_steer, accel, self.dt)
        self._move_traffic(self.dt)
        self._spawn_traffic()
        self._extend(self.S + self._BUILD_AHEAD)
        self._forget_behind()
        self.t += self.dt
        return frame

    def _forget_behind(self) -> None:
        w, S = self.world, self.S
        keep = [i for i, s in enumerate(w.knots_station) if s > S - 150.0]
        if keep and keep[0] > 2:
            cut = keep[0] - 2
            del w.knots_station[:cut], w.knots_k[:cut]
        w.lights = [wl for wl in w.lights if wl.stop_station - S > -40.0]
        w.facades = [f for f in w.facades if f.s1 - S > -80.0]
        w.guardrails = [g for g in w.guardrails if g.s1 - S > -80.0]
        w.lamps = [lp for lp in w.lamps if lp[0] - S > -40.0]
        self._gaps = [g for g in self._gaps if g[1] - S > -80.0]

    def __iter__(self) -> Iterator[DriveFrame]:
        while True:
            yield self.step()

    def frames(self, n: int) -> Iterator[DriveFrame]:
        """The next ``n`` frames."""
        for _ in range(n):
            yield self.step()
