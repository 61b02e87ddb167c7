"""The strict rclpy double refuses what real rclpy refuses: message field types (rosidl_generator_py's setter
checks) and each distribution's field defaults, lifecycle callback returns, parameter-file keys as rcl matches
them, declare-time parameter exceptions, callback groups and the multi-threaded executor."""

from __future__ import annotations

import array

import numpy as np
import pytest
from rclpy_double.harness import double_on_path


@pytest.fixture(params=["humble", "jazzy"])
def distro(request):
    with double_on_path(distro=request.param):
        yield request.param


@pytest.fixture
def ros(distro):
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


# ------------------------------------------------------------------------------------------------ messages
def test_field_defaults_are_the_distributions(distro):
    from geometry_msgs.msg import Quaternion
    from sensor_msgs.msg import NavSatFix, NavSatStatus

    assert NavSatStatus().status == {"humble": 0, "jazzy": -2}[distro]
    assert NavSatFix().status.status == NavSatStatus().status
    assert (distro == "jazzy") == hasattr(NavSatStatus, "STATUS_UNKNOWN")
    assert Quaternion().w == 1.0 and Quaternion().x == 0.0
    assert isinstance(NavSatFix().position_covariance, np.ndarray) and NavSatFix().position_covariance.shape == (9,)


def test_byte_fields_need_bytes_of_length_one(distro):
    from diagnostic_msgs.msg import DiagnosticStatus

    assert DiagnosticStatus().level == b"\x00"
    assert DiagnosticStatus(level=b"\x02").level == b"\x02"
    for bad in (2, b"", b"\x01\x02"):
        with pytest.raises(AssertionError, match="'level' field must be of type 'bytes'"):
            DiagnosticStatus(level=bad)


def test_uint8_sequences_take_arrays_or_int_sequences_but_not_numpy(distro):
    from sensor_msgs.msg import Image

    assert isinstance(Image(data=b"\x01\x02").data, array.array)
    assert list(Image(data=[1, 2, 255]).data) == [1, 2, 255]
    assert Image(data=array.array("B", [7])).data[0] == 7
    with pytest.raises(AssertionError):
        Image(data=np.zeros(4, np.uint8))
    with pytest.raises(AssertionError):
        Image(data=[256])
    with pytest.raises(AssertionError, match="type code"):
        Image(data=array.array("b", [1]))


def test_numbers_are_type_and_range_checked(distro):
    from ackermann_msgs.msg import AckermannDrive
    from sensor_msgs.msg import Image, NavSatFix

    with pytest.raises(AssertionError, match="'speed' field must be of type 'float'"):
        AckermannDrive(speed=1)
    with pytest.raises(AssertionError, match="'speed' field must be a float in"):
        AckermannDrive(speed=1e39)
    assert AckermannDrive(speed=float("inf")).speed == float("inf")
    with pytest.raises(AssertionError, match=r"'height' field must be an integer in \[0, 4294967295\]"):
        Image(height=-1)
    with pytest.raises(AssertionError):
        NavSatFix(position_covariance=np.zeros(8))
    with pytest.raises(AssertionError, match="Invalid arguments passed to constructor: colour"):
        Image(colour="red")
    image = Image()
    with pytest.raises(AttributeError):
        image.colour = "red"
    with pytest.raises(AssertionError, match="sub message of type 'Header'"):
        image.header = "now"


def test_the_builders_make_messages_the_double_accepts(distro):
    from regionadapt_ros.core import msgconv

    types = msgconv.rclpy_types()
    status = msgconv.build_diagnostic_array(types, 1.5, [("a", 2, "m", "", {"k": "v"})]).status[0]
    assert status.level == b"\x02"
    image = msgconv.build_image(types, np.zeros((2, 3, 3), np.uint8), "rgb8", 1.0)
    assert isinstance(image.data, array.array) and len(image.data) == 18
