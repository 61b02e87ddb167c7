"""Builders and type resolvers: messages built with the rosbags Humble type store (plus the carla_msgs and
ackermann_msgs definitions bundled with the package) survive CDR serialisation and a real rosbag2 bag, and
read back through the converters."""

from __future__ import annotations

import array
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.core.errors import MessageConversionError
from regionadapt_ros.core.msgconv import (
    ackermann_to_command,
    build_ackermann,
    build_carla_control,
    build_diagnostic_array,
    build_float32,
    build_image,
    build_navsatfix,
    build_odometry,
    build_pointcloud2,
    build_string,
    build_twist,
    carla_control_to_command,
    float32_speed,
    image_to_rgb8,
    navsatfix_to_fix,
    normalise_type_name,
    odometry_speed,
    pointcloud2_to_array,
    rclpy_types,
    rosbags_typestore,
    stamp_to_s,
)
from regionadapt_ros.core.msgconv.msgtypes import EXTRA_TYPES, msg_definition_path

REPO = Path(__file__).resolve().parents[1]


def cdr(store, msg):
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def field_names(cls) -> list[str]:
    return [name for name, f in cls.__dataclass_fields__.items() if not str(f.type).startswith("ClassVar")]


# --- type store -----------------------------------------------------------------------------------------


def test_bundled_definitions_are_registered_with_their_fields(store):
    for name in EXTRA_TYPES:
        assert msg_definition_path(name).is_file()
        assert name in store.types
    assert field_names(store.types["carla_msgs/msg/CarlaEgoVehicleControl"]) == [
        "header", "throttle", "steer", "brake", "hand_brake", "reverse", "gear", "manual_gear_shift"]
    assert field_names(store.types["ackermann_msgs/msg/AckermannDrive"]) == [
        "steering_angle", "steering_angle_velocity", "speed", "acceleration", "jerk"]
    assert field_names(store.types["ackermann_msgs/msg/AckermannDriveStamped"]) == ["header", "drive"]


def test_jazzy_store_gets_the_same_extra_types():
    jazzy = rosbags_typestore("jazzy")
    assert "carla_msgs/msg/CarlaEgoVehicleControl" in jazzy.types
    with pytest.raises(ValueError, match="unknown ROS 2 distribution"):
        rosbags_typestore("rolling-2030")


def test_resolver_names_and_unknown_types(types):
    assert normalise_type_name("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    assert types("sensor_msgs/Image") is types("sensor_msgs/msg/Image")
    with pytest.raises(MessageConversionError) as err:
        types("no_such_msgs/msg/Thing")
    assert err.value.field == "type" and "no_such_msgs/msg/Thing" in str(err.value)
    with pytest.raises(ValueError, match="not a ROS message type name"):
        normalise_type_name("Image")


# --- builders → CDR → readers ---------------------------------------------------------------------------


def test_ackermann_round_trip(store, types):
    msg = cdr(store, build_ackermann(types, 0.125, 8.5, -1.5, 42.25, "base_link", steering_angle_velocity=0.5,
                                     jerk=2.0))
    command = ackermann_to_command(msg)
    # acceleration is a magnitude by the message's definition: the deceleration of -1.5 is written as 1.5.
    assert (command.steering_angle, command.speed, command.acceleration) == (0.125, 8.5, 1.5)
    assert (command.steering_angle_velocity, command.jerk, command.stamp_s) == (0.5, 2.0, 42.25)
    assert msg.header.frame_id == "base_link"


def test_carla_control_round_trip(store, types):
    msg = cdr(store, build_carla_control(types, 0.75, -0.25, 0.0, 7.5, hand_brake=True, gear=2))
    control = carla_control_to_command(msg)
    assert (control.throttle, control.steer, control.brake, control.stamp_s) == (0.75, -0.25, 0.0, 7.5)
    assert control.hand_brake and not control.reverse and control.gear == 2 and not control.manual_gear_shift


def test_twist_string_float32_odometry_round_trip(store, types):
    twist = cdr(store, build_twist(types, 3.5, -0.25))
    assert (twist.linear.x, twist.linear.y, twist.angular.z) == (3.5, 0.0, -0.25)
    assert cdr(store, build_string(types, "lakeshore")).data == "lakeshore"
    assert float32_speed(cdr(store, build_float32(types, 12.5))) == 12.5
    odom = cdr(store, build_odometry(types, 9.75, 3.0, x=1.0, y=2.0, yaw=np.pi / 2, yaw_rate=0.1))
    assert odometry_speed(odom) == 9.75
    assert odom.pose.pose.orientation.z == pytest.approx(np.sin(np.pi / 4))
    assert odom.child_frame_id == "base_link" and stamp_to_s(odom.header) == 3.0


def test_diagnostic_array_round_trip(store, types):
    statuses = [("regionadapt: region", 1, "no fix; holding region", "gnss0", {"region": "lakeshore", "age_s": "3"}),
                ("regionadapt: model", 0, "ok", "", {})]
    msg = cdr(store, build_diagnostic_array(types, 5.0, statuses))
    assert [s.level for s in msg.status] == [1, 0]
    assert msg.status[0].name == "regionadapt: region" and msg.status[0].hardware_id == "gnss0"
    assert {kv.key: kv.value for kv in msg.status[0].values} == {"region": "lakeshore", "age_s": "3"}
    with pytest.raises(ValueError, match="level"):
        build_diagnostic_array(types, 0.0, [("x", 7, "", "", {})])


def test_non_finite_command_fields_are_named(types):
    with pytest.raises(MessageConversionError) as err:
        ackermann_to_command(build_ackermann(types, float("nan"), 1.0, 0.0, 0.0))
    assert err.value.field == "drive.steering_angle"
    with pytest.raises(MessageConversionError) as err:
        odometry_speed(build_odometry(types, float("inf"), 0.0))
    assert err.value.field == "twist.twist.linear.x"


def test_messages_survive_a_real_rosbag2_bag(tmp_path, store, types):
    from rosbags.rosbag2 import Reader, Writer

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    points = rng.normal(0, 10, size=(300, 4)).astype(np.float32)
    messages = {
        "/camera/image": build_image(types, rgb, "rgb8", 1.0, "camera"),
        "/lidar/points": build_pointcloud2(types, points, ["x", "y", "z", "intensity"], 1.0, "lidar"),
        "/gnss/fix": build_navsatfix(types, 37.7210, -122.4723, 33.4, 1.0, h_std_m=2.0, frame_id="gnss"),
        "/control/command": build_ackermann(types, 0.1, 5.0, 0.5, 1.0),
        "/carla/ego/vehicle_control_cmd": build_carla_control(types, 0.4, 0.1, 0.0, 1.0),
    }
    bag = tmp_path / "bag"
    with Writer(bag, version=9) as writer:
        for topic, msg in messages.items():
            connection = writer.add_connection(topic, msg.__msgtype__, typestore=store)
            writer.write(connection, 1_000_000_000, store.serialize_cdr(msg, msg.__msgtype__))
    read = {}
    with Reader(bag) as reader:
        for connection, _timestamp, raw in reader.messages():
            read[connection.topic] = store.deserialize_cdr(raw, connection.msgtype)
    assert set(read) == set(messages)
    np.testing.assert_array_equal(image_to_rgb8(read["/camera/image"]), rgb)
    np.testing.assert_array_equal(pointcloud2_to_array(read["/lidar/points"]), points)
    fix = navsatfix_to_fix(read["/gnss/fix"])
    assert (fix.lat, fix.lon, fix.h_std_m) == (37.7210, -122.4723, 2.0)
    assert ackermann_to_command(read["/control/command"]).speed == 5.0
    assert carla_control_to_command(read["/carla/ego/vehicle_control_cmd"]).throttle == pytest.approx(0.4)


# --- rclpy-style classes --------------------------------------------------------------------------------

# The generated rclpy classes declare field types with get_fields_and_field_types(), take keyword arguments
# only for declared fields, store uint8[] sequences as array.array('B') and byte fields as bytes. The few
# classes below follow those conventions strictly so that the builders' adaptation is exercised without ROS.


def rosidl_like_class(type_name: str, fields: dict[str, str]):
    def init(self, **kwargs):
        unknown = set(kwargs) - set(fields)
        assert not unknown, f"Invalid arguments passed to constructor: {unknown}"
        for name, kind in fields.items():
            value = kwargs[name]
            if kind.startswith("sequence<uint8"):
                assert isinstance(value, array.array) and value.typecode == "B", f"{name} must be array('B')"
            elif kind == "octet":
                assert isinstance(value, bytes) and len(value) == 1, f"{name} must be one byte"
            setattr(self, name, value)

    declared = classmethod(lambda cls: dict(fields))
    return type(type_name, (), {"__init__": init, "get_fields_and_field_types": declared})


RCLPY_LIKE = {
    "builtin_interfaces/msg/Time": rosidl_like_class("Time", {"sec": "int32", "nanosec": "uint32"}),
    "std_msgs/msg/Header": rosidl_like_class("Header", {"stamp": "builtin_interfaces/Time", "frame_id": "string"}),
    "sensor_msgs/msg/Image": rosidl_like_class("Image", {
        "header": "std_msgs/Header", "height": "uint32", "width": "uint32", "encoding": "string",
        "is_bigendian": "uint8", "step": "uint32", "data": "sequence<uint8>"}),
    "diagnostic_msgs/msg/KeyValue": rosidl_like_class("KeyValue", {"key": "string", "value": "string"}),
    "diagnostic_msgs/msg/DiagnosticStatus": rosidl_like_class("DiagnosticStatus", {
        "level": "octet", "name": "string", "message": "string", "hardware_id": "string",
        "values": "sequence<diagnostic_msgs/KeyValue>"}),
    "diagnostic_msgs/msg/DiagnosticArray": rosidl_like_class("DiagnosticArray", {
        "header": "std_msgs/Header", "status": "sequence<diagnostic_msgs/DiagnosticStatus>"}),
}


def test_builders_adapt_byte_fields_for_rclpy_classes():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = build_image(RCLPY_LIKE.__getitem__, rgb, "rgb8", 2.5, "camera")
    assert isinstance(msg.data, array.array) and msg.data.tobytes() == rgb.tobytes()
    np.testing.assert_array_equal(image_to_rgb8(msg), rgb)  # and the reader takes rclpy's array.array
    diagnostics = build_diagnostic_array(RCLPY_LIKE.__getitem__, 1.0, [("a", 2, "bad", "hw", {"k": "v"})])
    assert diagnostics.status[0].level == b"\x02"


def test_rclpy_resolver_imports_message_modules_lazily(tmp_path, monkeypatch):
    package = tmp_path / "regionadapt_probe_msgs"
    (package / "msg").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "msg" / "__init__.py").write_text("class Probe:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    resolve = rclpy_types()
    assert "regionadapt_probe_msgs.msg" not in sys.modules
    probe = resolve("regionadapt_probe_msgs/Probe")
    assert probe.__name__ == "Probe" and "regionadapt_probe_msgs.msg" in sys.modules
    assert resolve("regionadapt_probe_msgs/msg/Probe") is probe
    with pytest.raises(MessageConversionError) as err:
        resolve("regionadapt_probe_msgs/msg/Missing")
    assert err.value.field == "type" and "has no Missing" in str(err.value)
    with pytest.raises(MessageConversionError) as err:
        resolve("regionadapt_absent_msgs/msg/Thing")
    assert "not importable" in str(err.value)
    sys.modules.pop("regionadapt_probe_msgs.msg", None)
    sys.modules.pop("regionadapt_probe_msgs", None)


def test_importing_the_converters_pulls_in_neither_rclpy_torch_nor_rosbags():
    code = textwrap.dedent("""
        import sys
        import regionadapt_ros.core.msgconv
        print(sorted(m for m in ("rclpy", "torch", "rosbags") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
