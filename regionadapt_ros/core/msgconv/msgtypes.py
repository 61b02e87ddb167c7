"""Message classes by name, for the builders: ``resolver("sensor_msgs/msg/Image") -> class``.

Two sources:
- ``rosbags_types(rosbags_typestore())``: the rosbags type store with the ROS 2 Humble definitions, plus the
  types the product publishes or reads that the store lacks (``ackermann_msgs/msg/AckermannDrive(Stamped)``, and
  the ``carla_msgs`` the CARLA ROS bridge publishes and the scorer reads: the vehicle control, collision and
  lane-invasion events, the actor list, traffic-light info and status), registered from the ``.msg`` files next
  to this module.
  Used by the ROS-less replay, bag writing and the tests. rosbags is imported inside the functions, so this
  module imports on a vehicle without it.
- ``rclpy_types()``: the generated rclpy classes, imported lazily with importlib from ``<package>.msg`` when
  first asked for; rclpy itself is never imported here (the nodes do that).

Names may be given as ``pkg/msg/Type`` or ``pkg/Type``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regionadapt_ros.core.errors import MessageConversionError

TypeResolver = Callable[[str], Any]

MSG_DIR = Path(__file__).resolve().parent / "msg"
# Registered in dependency order (AckermannDriveStamped uses AckermannDrive, the list types their elements).
EXTRA_TYPES = (
    "ackermann_msgs/msg/AckermannDrive",
    "ackermann_msgs/msg/AckermannDriveStamped",
    "carla_msgs/msg/CarlaEgoVehicleControl",
    "carla_msgs/msg/CarlaCollisionEvent",
    "carla_msgs/msg/CarlaLaneInvasionEvent",
    "carla_msgs/msg/CarlaActorInfo",
    "carla_msgs/msg/CarlaActorList",
    "carla_msgs/msg/CarlaBoundingBox",
    "carla_msgs/msg/CarlaTrafficLightInfo",
    "carla_msgs/msg/CarlaTrafficLightInfoList",
    "carla_msgs/msg/CarlaTrafficLightStatus",
    "carla_msgs/msg/CarlaTrafficLightStatusList",
)
_DISTROS = {"humble": "ROS2_HUMBLE", "iron": "ROS2_IRON", "jazzy": "ROS2_JAZZY"}


def normalise_type_name(name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` → ``pkg/msg/Type``; ValueError for anything else."""
    parts = str(name).strip().strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS message type name: {name!r} (expected pkg/msg/Type)")
    return "/".join(parts)


def msg_definition_path(name: str) -> Path:
    """Path of the bundled ``.msg`` file of one of ``EXTRA_TYPES`` (flat: ``msg/<Type>.msg``)."""
    full = normalise_type_name(name)
    if full not in EXTRA_TYPES:
        raise ValueError(f"{name!r} is not one of the bundled definitions ({', '.join(EXTRA_TYPES)})")
    return MSG_DIR / f"{full.rsplit('/', 1)[1]}.msg"


def rosbags_typestore(distro: str = "humble") -> Any:
    """A fresh rosbags ``Typestore`` for ``distro`` (humble, iron, jazzy) with ``EXTRA_TYPES`` registered.

    Types the store already defines are left as they are.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    if distro not in _DISTROS:
        raise ValueError(f"unknown ROS 2 distribution {distro!r} (one of {', '.join(_DISTROS)})")
    store = get_typestore(getattr(Stores, _DISTROS[distro]))
    for name in EXTRA_TYPES:
        if name in store.types:
            continue
        text = msg_definition_path(name).read_text(encoding="utf-8")
        store.register(get_types_from_msg(text, name))
    return store


def rosbags_types(store: Any) -> TypeResolver:
    """Resolver over a rosbags type store; unknown names raise MessageConversionError (field ``type``)."""

    def resolve(name: str) -> Any:
        full = normalise_type_name(name)
        try:
            return store.types[full]
        except KeyError:
            raise MessageConversionError(
                full, "type", "is not in the rosbags type store (use rosbags_typestore() or register it)"
            ) from None

    return resolve


def rclpy_types() -> TypeResolver:
    """Resolver importing ``<pkg>.msg`` modules lazily; a missing package raises MessageConversionError."""
    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def resolve(name: str) -> Any:
        full = normalise_type_name(name)
        with lock:
            found = cache.get(full)
        if found is not None:
            return found
        pkg, kind, type_name = full.split("/")
        try:
            module = importlib.import_module(f"{pkg}.{kind}")
        except ImportError as exc:
            raise MessageConversionError(
                full, "type", f"package {pkg}.{kind} is not importable ({exc}); build it and source the workspace"
            ) from None
        cls = getattr(module, type_name, None)
        if cls is None:
            raise MessageConversionError(full, "type", f"{pkg}.{kind} has no {type_name}")
        with lock:
            cache[full] = cls
        return cls

    return resolve
