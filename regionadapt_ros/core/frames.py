"""Sensor frames: lidar clouds taken into the vehicle frame the BEV grid assumes, without ROS.

The perception model's BEV grid (``core.contracts.BEV``) reads points in the vehicle frame: x forward, y left,
z up (REP 103), metres, with the road at ``BEV.z_ground`` (-1.7 m: a frame at the height of a roof-mounted
sensor). A cloud stamped in another frame (nuScenes' ``LIDAR_TOP`` is x right, y forward) is brought into it
with

- the transforms of ``/tf_static`` (``tf2_msgs/TFMessage``; each ``geometry_msgs/TransformStamped`` gives the
  pose of ``child_frame_id`` in ``header.frame_id``), chained through any number of frames, or
- a static extrinsic given as a parameter (x, y, z [m], roll, pitch, yaw [rad]: the pose of the sensor in the
  vehicle frame), for clouds whose frame ``/tf_static`` does not connect to the vehicle frame;

then shifted so that the road lies where the grid expects it (``ground_z_m``: the road's height in the vehicle
frame; -1.7, the grid's own convention, shifts nothing; a REP 105 ``base_link`` on the road is 0). A cloud in a
frame with no known transform is used as it is and reported (``CloudFrames.unknown_frames``): a model fed a
rotated grid drives badly, so the driver must say so loudly, once per frame name.

Messages are duck-typed on their ROS field names, so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionadapt_ros.core.contracts import BEV
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.safe_read import printable_name

UNKNOWN = "unknown"
IMPLAUSIBLE = "implausible"
TF_STATIC_TOPIC = "/tf_static"  # global, whatever the nodes' namespace
TF_STATIC_TYPE = "tf2_msgs/msg/TFMessage"
# A lidar further than this from the vehicle frame's origin is not on the vehicle (an articulated truck is under
# 25 m): such a transform is a wrong tree or a typo, and would carry every point out of the grid and out of the
# emergency brake's corridor, blinding the lidar without a word.
MAX_SENSOR_OFFSET_M = 50.0


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (normalised here; a zero quaternion is refused)."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) is not a rotation")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) rotation of fixed-axis roll (x), pitch (y), yaw (z) as tf2 and URDF define it: R = Rz Ry Rx."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                              math.sin(yaw))
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


@dataclass(frozen=True)
class RigidTransform:
    """p_parent = rotation @ p_child + translation. rotation (3, 3), translation (3,)."""

    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls) -> RigidTransform:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_xyz_rpy(cls, values: Sequence[float]) -> RigidTransform:
        """(x, y, z, roll, pitch, yaw): the pose of the child frame in the parent frame."""
        v = [float(a) for a in values]
        if len(v) != 6 or not all(math.isfinite(a) for a in v):
            raise ValueError(f"expected 6 finite numbers x, y, z, roll, pitch, yaw, got {list(values)!r}")
        return cls(rotation_from_rpy(*v[3:]), np.array(v[:3]))

    @classmethod
    def from_message(cls, transform: Any) -> RigidTransform:
        """A ``geometry_msgs/Transform`` (translation x/y/z, rotation x/y/z/w)."""
        t, q = transform.translation, transform.rotation
        translation = np.array([float(t.x), float(t.y), float(t.z)])
        if not np.isfinite(translation).all():
            raise ValueError(f"translation {translation.tolist()} is not finite")
        return cls(rotation_from_quaternion(float(q.x), float(q.y), float(q.z), float(q.w)), translation)

    def compose(self, inner: RigidTransform) -> RigidTransform:
        """self ∘ inner: first ``inner`` (child → middle), then self (middle → parent)."""
        return RigidTransform(self.rotation @ inner.rotation, self.rotation @ inner.translation + self.translation)

    def inverse(self) -> RigidTransform:
        rt = self.rotation.T
        return RigidTransform(rt, -rt @ self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3+) points → the same with x, y, z transformed (float32; other columns kept)."""
        out = np.array(points, dtype=np.float32, copy=True)
        if out.size:
            xyz = out[:, :3].astype(np.float64) @ self.rotation.T + self.translation
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, dropped as not finite
                out[:, :3] = xyz.astype(np.float32)
        return out


class StaticTransforms:
    """The static transform tree (``/tf_static``): frames as nodes, each transform an edge usable both ways."""

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, RigidTransform]] = {}  # frame → {neighbour: neighbour → frame}
        self.rejected = 0  # transforms that were not rigid (zero quaternion, NaN)

    @property
    def frames(self) -> set[str]:
        return set(self._edges)

    def add(self, parent: str, child: str, child_in_parent: RigidTransform) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        self._edges.setdefault(parent, {})[child] = child_in_parent
        self._edges.setdefault(child, {})[parent] = child_in_parent.inverse()

    def add_message(self, msg: Any) -> int:
        """Every ``TransformStamped`` of a ``tf2_msgs/TFMessage``; returns how many were taken. A transform
        that is not a rotation (zero quaternion, NaN) is skipped and counted in ``rejected``."""
        taken = 0
        for ts in getattr(msg, "transforms", ()):
            try:
                self.add(str(ts.header.frame_id), str(ts.child_frame_id), RigidTransform.from_message(ts.transform))
                taken += 1
            except (ValueError, AttributeError, TypeError):
                self.rejected += 1
        return taken

    def lookup(self, target: str, source: str) -> RigidTransform | None:
        """source → target (points in ``source`` to ``target``) through the tree; None when not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if source == target:
            return RigidTransform.identity()
        if source not in self._edges or target not in self._edges:
            return None
        # breadth-first from the source; each step maps the reached frame's points into the next frame
        found: dict[str, RigidTransform] = {source: RigidTransform.identity()}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            for neighbour in self._edges[frame]:
                if neighbour in found:
                    continue
                step = self._edges[neighbour][frame]  # frame's points into neighbour
                found[neighbour] = step.compose(found[frame])
                if neighbour == target:
                    return found[neighbour]
                queue.append(neighbour)
        return None


def sensor_offset_m(transform: RigidTransform) -> float:
    """How far the transform puts the sensor from the parent frame's origin [m] (inf past float64, no warning)."""
    return math.hypot(*(float(v) for v in transform.translation))


def is_plausible_mount(transform: RigidTransform) -> bool:
    """True when the transform puts the sensor within ``MAX_SENSOR_OFFSET_M`` of the vehicle frame's origin; an
    offset that is not a number (a chain of huge opposite translations) is not."""
    return sensor_offset_m(transform) <= MAX_SENSOR_OFFSET_M


def parse_extrinsic(values: Iterable[float] | None, what: str = "lidar_extrinsic") -> RigidTransform | None:
    """Parameter → transform: empty or None = no extrinsic; else x, y, z, roll, pitch, yaw. ConfigError."""
    v = list(values or [])
    if not v:
        return None
    try:
        transform = RigidTransform.from_xyz_rpy(v)
    except (ValueError, TypeError) as exc:
        raise ConfigError(what, f"{exc} (the sensor's pose in the vehicle frame, metres and radians)") from None
    if not is_plausible_mount(transform):
        raise ConfigError(what, f"puts the sensor {sensor_offset_m(transform):g} m from the vehicle frame's origin "
                                f"(at most {MAX_SENSOR_OFFSET_M:g}): the sensor's pose in the vehicle frame, in "
                                "metres")
    return transform


MAX_RECORDED_FRAMES = 16  # a vehicle has a few lidars; a frame name per sweep is a broken publisher
MAX_FRAME_NAME = 64


def frame_label(frame: str) -> str:
    """A frame name as diagnostics and logs show it: printable, at most ``MAX_FRAME_NAME`` characters."""
    shown = printable_name(frame)
    return shown if len(shown) <= MAX_FRAME_NAME else shown[:MAX_FRAME_NAME - 3] + "..."


@dataclass
class CloudFrames:
    """Brings clouds into the vehicle frame (see the module doc). ``extrinsic``: sensor → vehicle, for frames
    ``/tf_static`` does not connect; ``ground_z_m``: the road's height in the vehicle frame."""

    vehicle_frame: str = "base_link"
    extrinsic: RigidTransform | None = None
    ground_z_m: float = BEV.z_ground
    tf: StaticTransforms = field(default_factory=StaticTransforms)
    unknown_frames: set[str] = field(default_factory=set)
    used: dict[str, str] = field(default_factory=dict)   # frame → how it was brought in (for diagnostics)
    unrecorded_clouds: int = 0  # clouds of frames beyond MAX_RECORDED_FRAMES, counted but not named

    def __post_init__(self) -> None:
        if not math.isfinite(self.ground_z_m):
            raise ConfigError("ground_z_m", f"must be a finite height in metres, got {self.ground_z_m!r}")

    def on_tf_static(self, msg: Any) -> int:
        return self.tf.add_message(msg)

    def transform_for(self, frame_id: str) -> tuple[RigidTransform | None, str]:
        """(transform into the vehicle frame or None for the vehicle frame itself, how): how is "vehicle frame",
        "/tf_static", "lidar_extrinsic", "unknown" (no transform: the points are taken as they are) or
        "implausible" (``/tf_static`` puts the sensor beyond ``MAX_SENSOR_OFFSET_M``: the cloud must not be used;
        the transform is returned for the message)."""
        frame = (frame_id or "").lstrip("/")
        if not frame or frame == self.vehicle_frame.lstrip("/"):
            return None, "vehicle frame"
        transform = self.tf.lookup(self.vehicle_frame, frame)
        if transform is not None:
            if not is_plausible_mount(transform):
                return transform, IMPLAUSIBLE
            return transform, "/tf_static"
        if self.extrinsic is not None:
            return self.extrinsic, "lidar_extrinsic"
        return None, UNKNOWN

    def apply(self, points: np.ndarray, transform: RigidTransform | None) -> np.ndarray:
        """``points`` through ``transform`` (None: as they are), then shifted to the grid's road height."""
        out = points if transform is None else transform.apply(points)
        shift = BEV.z_ground - self.ground_z_m
        if shift and out.size:
            out = np.array(out, dtype=np.float32, copy=transform is None)
            out[:, 2] += shift
        return out

    def record(self, frame_id: str, how: str) -> bool:
        """Note how a frame's clouds were brought in; True the first time a frame turns out to be unknown.

        At most ``MAX_RECORDED_FRAMES`` names are kept, each cut to ``MAX_FRAME_NAME`` characters: a publisher
        that puts a counter or garbage in ``frame_id`` must not grow the diagnostics (or the log) without bound.
        Clouds of further frames are counted in ``unrecorded_clouds``."""
        frame = frame_label((frame_id or "").lstrip("/") or self.vehicle_frame)
        if frame not in self.used and len(self.used) >= MAX_RECORDED_FRAMES:
            self.unrecorded_clouds += 1
            return False
        first = how == UNKNOWN and frame not in self.unknown_frames
        if how == UNKNOWN:
            self.unknown_frames.add(frame)
            self.used[frame] = "unknown: used as it is"
        elif how == IMPLAUSIBLE:
            self.used[frame] = f"refused: /tf_static puts it more than {MAX_SENSOR_OFFSET_M:g} m away"
        else:
            self.used[frame] = how
        return first

    def to_vehicle(self, points: np.ndarray, frame_id: str) -> tuple[np.ndarray, bool]:
        """(points in the vehicle frame the grid expects, known). ``known`` False: the frame has no known
        transform and the points are taken as they are (the caller reports it, see ``unknown_frames``).
        ValueError when ``/tf_static`` puts the frame beyond a mount (``is_plausible_mount``): such points are
        used neither moved nor as they are."""
        transform, how = self.transform_for(frame_id)
        self.record(frame_id, how)
        if how == IMPLAUSIBLE:
            assert transform is not None
            raise ValueError(f"/tf_static puts frame {frame_label(frame_id)!r} {sensor_offset_m(transform):.4g} m "
                             f"from {self.vehicle_frame!r} (at most {MAX_SENSOR_OFFSET_M:g})")
        if how == UNKNOWN:
            return points, False
        return self.apply(points, transform), True
