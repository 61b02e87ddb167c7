"""A synthetic multi-region drive written as a real rosbag2, with geofences that match it.

The drive chains one ``DriveGenerator`` per region: each starts where (and as fast as) the previous one ended,
so the ego's pose is continuous. The GNSS track is that pose placed on the map around ``ORIGIN`` (a local
azimuthal-equidistant projection), and each region's geofence is the corridor (± ``FENCE_HALF_WIDTH_M``) of the
stretch of road driven in that region, so the camera shows the region the GNSS says the vehicle is in.

The bag holds what a vehicle records: camera (``sensor_msgs/Image`` bgr8), lidar (``sensor_msgs/PointCloud2``,
x/y/z/intensity float32, NaN for no return), GNSS (``sensor_msgs/NavSatFix``), odometry (``nav_msgs/Odometry``)
and the expert's command (``ackermann_msgs/AckermannDriveStamped`` on ``/expert/command``), so it also serves as
imitation-learning input for ``regionadapt data import``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_ROUTE: tuple[tuple[str, float], ...] = (
    ("urban_day", 12.0),
    ("urban_night", 12.0),
    ("mountain", 14.0),
    ("highway", 12.0),
    ("left_hand", 12.0),
)
ORIGIN = (37.7600, -122.4400)  # lat, lon: San Francisco, where config/geofences.geojson lives too
FENCE_HALF_WIDTH_M = 80.0

TOPICS = {
    "camera": ("/camera/image", "sensor_msgs/msg/Image"),
    "lidar": ("/lidar/points", "sensor_msgs/msg/PointCloud2"),
    "gnss": ("/gnss/fix", "sensor_msgs/msg/NavSatFix"),
    "odom": ("/odom", "nav_msgs/msg/Odometry"),
    "expert": ("/expert/command", "ackermann_msgs/msg/AckermannDriveStamped"),
}


@dataclass
class DemoDrive:
    bag: Path
    geofences: Path
    frames: int
    duration_s: float
    segments: list[dict]


def _projection():
    from pyproj import Transformer

    lat0, lon0 = ORIGIN
    return Transformer.from_crs(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m", "EPSG:4326",
                                always_xy=True)


def write_demo_drive(bag_path: str | Path, geofence_path: str | Path, route: Sequence[tuple[str, float]] = DEMO_ROUTE,
                     seed: int = 0, hz: float = 10.0, image_size: tuple[int, int] = (192, 320),
                     storage: str = "mcap", progress: bool = True, t0: float = 1_700_000_000.0) -> DemoDrive:
    """Render the drive into a rosbag2 at ``bag_path`` (must not exist) and its geofences to ``geofence_path``."""
    import shapely
    from rosbags.rosbag2 import StoragePlugin, Writer
    from shapely.geometry import LineString, mapping
    from tqdm import tqdm

    from regionadapt_ros.adaptation.scene import WHEELBASE_M
    from regionadapt_ros.adaptation.synthetic import DriveGenerator
    from regionadapt_ros.core.msgconv import (
        build_ackermann,
        build_image,
        build_navsatfix,
        build_odometry,
        build_pointcloud2,
        rosbags_types,
        rosbags_typestore,
    )

    store = rosbags_typestore()
    types = rosbags_types(store)
    to_wgs84 = _projection()
    bag_path, geofence_path = Path(bag_path), Path(geofence_path)
    bag_path.parent.mkdir(parents=True, exist_ok=True)
    total = int(sum(round(d * hz) for _, d in route))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(bag_path, version=8, storage_plugin=plugin)
    segments = []
    pose = (0.0, 0.0, 0.0)
    speed = None
    t = 0.0
    frames = 0
    with writer, tqdm(total=total, desc="rendering demo drive", disable=not progress, leave=False) as bar:
        conns = {k: writer.add_connection(topic, msgtype, typestore=store) for k, (topic, msgtype) in TOPICS.items()}
        for i, (region, duration) in enumerate(route):
            gen = DriveGenerator(region, seed + 101 * i, hz=hz, image_size=image_size, start_speed=speed,
                                 start_pose=pose, t0=t)
            path = []
            for frame in gen.frames(int(round(duration * hz))):
                stamp = t0 + frame.t
                ns = int(round(stamp * 1e9))
                x, y, yaw = frame.pose
                lon, lat = to_wgs84.transform(x, y)
                path.append((x, y))
                bgr = np.ascontiguousarray(frame.rgb[:, :, ::-1])
                steer, accel = frame.expert_control
                msgs = {
                    "camera": build_image(types, bgr, "bgr8", stamp, "camera"),
                    "lidar": build_pointcloud2(types, frame.points, ("x", "y", "z", "intensity"), stamp,
                                                "base_link"),
                    "gnss": build_navsatfix(types, lat, lon, 20.0, stamp, h_std_m=1.5, frame_id="gnss"),
                    "odom": build_odometry(types, frame.speed, stamp, x=x, y=y, yaw=yaw,
                                           yaw_rate=frame.speed * math.tan(steer) / WHEELBASE_M),
                    "expert": build_ackermann(types, steer, frame.speed + accel / hz, accel, stamp, "base_link"),
                }
                for key in ("gnss", "odom", "lidar", "camera", "expert"):
                    writer.write(conns[key], ns, store.serialize_cdr(msgs[key], TOPICS[key][1]))
                frames += 1
                bar.update(1)
                pose = (x, y, yaw)
                speed = frame.speed
                t = frame.t + 1.0 / hz
            segments.append({"region": region, "t_start": t0 + t - duration, "t_end": t0 + t,
                             "path_xy": path})

    features = []
    for i, seg in enumerate(segments):
        pts = seg["path_xy"]
        # Extend each corridor to the next one's first point so that neighbouring fences touch.
        if i + 1 < len(segments):
            pts = [*pts, segments[i + 1]["path_xy"][0]]
        line = LineString(pts)
        corridor = line.buffer(FENCE_HALF_WIDTH_M, cap_style="flat")
        if i == 0:
            corridor = line.buffer(FENCE_HALF_WIDTH_M, cap_style="square")
        geo = shapely.transform(corridor.simplify(2.0),
                                lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))
        features.append({"type": "Feature", "properties": {"region": seg["region"], "priority": 10 + i,
                                                           "name": f"demo {seg['region']}"},
                         "geometry": mapping(geo)})
    geofence_path.parent.mkdir(parents=True, exist_ok=True)
    geofence_path.write_text(json.dumps({"type": "FeatureCollection", "name": "regionadapt demo drive",
                                         "features": features}, indent=1))
    for seg in segments:
        seg.pop("path_xy")
    return DemoDrive(bag_path, geofence_path, frames, frames / hz, segments)


def route_length_s(route: Sequence[tuple[str, float]] = DEMO_ROUTE) -> float:
    return float(sum(d for _, d in route))


