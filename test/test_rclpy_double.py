"""The strict rclpy double refuses what real rclpy refuses: message field types (rosidl_generator_py's setter
checks) and each distribution's field defaults, lifecycle callback returns, parameter-file keys as rcl matches
them, declare-time parameter exceptions, callback groups and the multi-threaded executor."""

from __future__ import annotations

import array
import threading

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
    # byte constants are bytes too (rosidl_generator_py), so they fit the field and are no ints
    assert (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE) == \
        (b"\x00", b"\x01", b"\x02", b"\x03")
    assert DiagnosticStatus(level=DiagnosticStatus.ERROR).level == b"\x02"
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


# ------------------------------------------------------------------------------------------------ lifecycle
def test_a_lifecycle_callback_must_return_a_transition_callback_return(ros):
    from rclpy.lifecycle import Node, TransitionCallbackReturn

    class Sloppy(Node):
        def on_configure(self, state):
            return True  # not a TransitionCallbackReturn

    node = Sloppy("sloppy")
    with pytest.raises(AttributeError, match="to_label"):  # rclpy: cb_return_code.to_label()
        node.trigger_configure()
    with pytest.raises(RuntimeError, match="not valid"):  # left in the transition state
        node.trigger_activate()

    class Raising(Node):
        def on_configure(self, state):
            raise ValueError("broken")

    raising = Raising("raising")
    assert raising.trigger_configure() == TransitionCallbackReturn.ERROR  # an exception is ERROR, not a raise
    assert raising.trigger_configure() == TransitionCallbackReturn.ERROR  # on_error -> unconfigured again


def test_only_managed_entities_join_the_lifecycle(ros):
    from rclpy.lifecycle import ManagedEntity, Node, TransitionCallbackReturn

    class Counting(ManagedEntity):
        def __init__(self) -> None:
            self.activations = 0

        def on_activate(self, state):
            self.activations += 1
            return TransitionCallbackReturn.SUCCESS

    node = Node("managed")
    with pytest.raises(TypeError, match="ManagedEntity"):  # rclpy's LifecycleNodeMixin.add_managed_entity
        node.add_managed_entity(object())
    entity = Counting()
    node.add_managed_entity(entity)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS and entity.activations == 1


# ------------------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("key, fqn, matches", [
    ("/**", "/driving_node", True),
    ("/**", "/ego/a/driving_node", True),
    ("/**/driving_node", "/driving_node", True),
    ("/**/driving_node", "/ego/driving_node", True),
    ("/**/driving_node", "/ego/other_driving_node", False),
    ("driving_node", "/driving_node", True),
    ("driving_node", "/ego/driving_node", False),  # no leading slash: from the root, not "any namespace"
    ("/ego/driving_node", "/ego/driving_node", True),
    ("/*/driving_node", "/ego/driving_node", True),
    ("/*/driving_node", "/driving_node", False),
    ("/*/driving_node", "/a/b/driving_node", False),
    ("/ego/*", "/ego/driving_node", True),
])
def test_parameter_file_keys_match_node_names_as_rcl_does(distro, key, fqn, matches):
    import ros_double

    assert ros_double.node_key_matches(key, fqn) is matches


def test_params_files_apply_to_the_nodes_their_keys_match(distro, tmp_path):
    import rclpy
    from rclpy.node import Node

    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    a: 1.0\n"
                    "/ego/node_x:\n  ros__parameters:\n    a: 2.0\n    nested: {b: 3}\n"
                    "node_y:\n  ros__parameters:\n    a: 4.0\n")
    rclpy.init(args=["--ros-args", "--params-file", str(path), "-p", "c:=5"])
    try:
        x = Node("node_x", namespace="ego")
        y = Node("node_y", namespace="ego")
        z = Node("node_y")
        assert x.declare_parameter("a", 0.0).value == 2.0 and x.declare_parameter("nested.b", 0).value == 3
        assert y.declare_parameter("a", 0.0).value == 1.0  # "node_y" is /node_y only
        assert z.declare_parameter("a", 0.0).value == 4.0 and z.declare_parameter("c", 0).value == 5
    finally:
        rclpy.shutdown()


def test_overrides_follow_rcls_table_order_not_the_argument_order(distro, tmp_path):
    """rcl keeps one table keyed by node name (-p without a node is "/**"); a key keeps the place of its first
    appearance, so a later -p does not beat a file's more specific key that came after the first -p."""
    import rclpy
    from rclpy.node import Node

    path = tmp_path / "params.yaml"
    path.write_text("/**/node_x:\n  ros__parameters:\n    backend: onnxruntime\n")
    rclpy.init(args=["--ros-args", "-p", "use_sim_time:=true", "--params-file", str(path), "-p", "backend:=torch",
                     "-p", "node_y:only_y:=7"])
    try:
        x, y = Node("node_x"), Node("node_y")
        assert x.declare_parameter("backend", "").value == "onnxruntime"
        assert y.declare_parameter("backend", "").value == "torch"
        assert y.declare_parameter("only_y", 0).value == 7 and x.declare_parameter("only_y", 0).value == 0
    finally:
        rclpy.shutdown()


def test_namespace_and_name_remaps_rename_every_node_and_its_logger(distro):
    import rclpy
    from rclpy.logging import get_logger
    from rclpy.node import Node

    rclpy.init(args=["--ros-args", "-r", "__ns:=/fleet/ego", "-r", "__node:=renamed"])
    try:
        node = Node("node_x")
        assert node.get_fully_qualified_name() == "/fleet/ego/renamed"
        assert node.get_logger().name == "fleet.ego.renamed" and node.get_logger() is get_logger("fleet.ego.renamed")
    finally:
        rclpy.shutdown()
    rclpy.init()
    try:
        assert Node("plain").get_logger().name == "plain"
    finally:
        rclpy.shutdown()
    for rule, error in (("camera:=/cam", NotImplementedError), ("__ns:=ego", ValueError)):
        with pytest.raises(error):
            rclpy.init(args=["--ros-args", "-r", rule])


def test_parameter_values_get_rcls_types_not_pyyamls(distro, tmp_path):
    """rcl_yaml_param_parser types an unquoted scalar itself (parse.c get_value): y/n are bools, 1e3 a double,
    1_000 a string; quoted scalars are strings. ``-p`` values are read the same way."""
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.node import Node

    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    word: n\n    exponent: 1e3\n    underscored: 1_000\n"
                    "    quoted: '1'\n    hexadecimal: 0x10\n")
    rclpy.init(args=["--ros-args", "--params-file", str(path), "-p", "flag:=y", "-p", "scale:=2e-1"])
    try:
        node = Node("n")
        with pytest.raises(InvalidParameterTypeException, match="expecting type 'STRING'"):
            node.declare_parameter("word", "base")
        with pytest.raises(InvalidParameterTypeException, match="expecting type 'INTEGER'"):
            node.declare_parameter("underscored", 0)
        assert node.declare_parameter("exponent", 0.0).value == 1000.0
        assert node.declare_parameter("quoted", "").value == "1"
        assert node.declare_parameter("hexadecimal", 0).value == 16
        assert node.declare_parameter("flag", False).value is True
        assert node.declare_parameter("scale", 0.0).value == 0.2
    finally:
        rclpy.shutdown()


@pytest.mark.parametrize("content", ["/**:\n  ros__parameters:\n    a:\n",
                                     "/**:\n  ros__parameters:\n    a: [1, 2.5]\n"])
def test_parameter_files_rcl_cannot_read_fail_init(distro, tmp_path, content):
    import rclpy

    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"No value|same type"):
        rclpy.init(args=["--ros-args", "--params-file", str(path)])
    with pytest.raises(ValueError, match="override rule"):
        rclpy.init(args=["--ros-args", "-p", "a:="])


def test_declare_refuses_overrides_of_the_wrong_type_or_range_with_rclpys_exceptions(distro):
    import rclpy
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, ParameterException
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    rclpy.init()
    try:
        bounded = ParameterDescriptor(floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)])
        node = Node("n", parameter_overrides=[Parameter("x", value=1), Parameter("y", value=2.0)])
        with pytest.raises(InvalidParameterTypeException, match="expecting type 'DOUBLE'") as wrong_type:
            node.declare_parameter("x", 0.5)
        with pytest.raises(InvalidParameterValueException, match="out of range") as wrong_value:
            node.declare_parameter("y", 0.5, bounded)
        assert isinstance(wrong_type.value, ParameterException) and isinstance(wrong_value.value, ParameterException)
    finally:
        rclpy.shutdown()


def test_range_steps_and_bounds_are_applied_as_rclpy_applies_them(ros):
    """rclpy's _apply_floating_point_range / _apply_integer_range: a bound (or within PARAM_REL_TOL of one) is
    always accepted, a value between them only on a step from the lower bound; NaN is out of range."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    def floats(step: float) -> ParameterDescriptor:
        return ParameterDescriptor(floating_point_range=[FloatingPointRange(from_value=1.0, to_value=0.0,
                                                                            step=step)])

    def integers(step: int) -> ParameterDescriptor:
        return ParameterDescriptor(integer_range=[IntegerRange(from_value=0, to_value=9, step=step)])

    node = Node("n", parameter_overrides=[Parameter("off_step", value=0.3), Parameter("int_off_step", value=3),
                                          Parameter("nan", value=float("nan"))])
    with pytest.raises(InvalidParameterValueException, match="not close enough to a valid step"):
        node.declare_parameter("off_step", 0.5, floats(0.25))
    with pytest.raises(InvalidParameterValueException, match="not a valid step"):
        node.declare_parameter("int_off_step", 4, integers(2))
    with pytest.raises(InvalidParameterValueException, match="out of range"):
        node.declare_parameter("nan", 0.5, floats(0.0))
    assert node.declare_parameter("on_step", 0.75, floats(0.25)).value == 0.75
    assert node.declare_parameter("edge", 1.0 + 1e-9, floats(0.3)).value == 1.0 + 1e-9  # a bound, off the steps
    assert node.declare_parameter("int_edge", 9, integers(2)).value == 9  # the upper bound, off the steps
    assert not node.set_parameters([Parameter("on_step", value=0.6)])[0].successful
    assert node.set_parameters([Parameter("on_step", value=0.5)])[0].successful


def test_integer_range_fields_are_int64_and_uint64(distro):
    from rcl_interfaces.msg import IntegerRange

    assert IntegerRange(from_value=-(2**63), to_value=2**63 - 1, step=2**64 - 1).step == 2**64 - 1
    for bad in ({"from_value": 2**63}, {"to_value": -(2**63) - 1}, {"step": 2**64}, {"step": -1}):
        with pytest.raises(AssertionError, match="field must be an"):
            IntegerRange(**bad)


def test_an_empty_parameter_name_is_rclpys_invalid_parameter_exception(ros):
    from rclpy.exceptions import InvalidParameterException, ParameterException
    from rclpy.node import Node

    node = Node("n")
    with pytest.raises(InvalidParameterException) as empty:
        node.declare_parameter("", 1.0)
    assert isinstance(empty.value, ParameterException)
    with pytest.raises(TypeError):
        node.declare_parameter(7, 1.0)


def test_post_set_parameter_callbacks_exist_on_jazzy_only(ros, distro):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    node = Node("n")
    assert hasattr(node, "add_post_set_parameters_callback") == (distro == "jazzy")
    if distro == "jazzy":
        seen = []
        node.add_post_set_parameters_callback(seen.append)
        node.declare_parameter("p", 1)
        node.set_parameters([Parameter("p", value=2)])
        assert [[p.value for p in ps] for ps in seen] == [[1], [2]]


# ------------------------------------------------------------------------------------------------ executors
def test_callback_groups_on_a_multi_threaded_executor(ros):
    """A callback that blocks holds only its own mutually exclusive group: a timer in another group keeps
    firing; a second callback of the blocked group waits for it."""
    import ros_double
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String

    node = Node("n")
    slow_group, timer_group = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
    entered, release, received, ticks = threading.Event(), threading.Event(), [], []

    def slow(msg):
        received.append(msg.data)
        if msg.data == "first":
            entered.set()
            assert release.wait(60)

    node.create_subscription(String, "t", slow, 10, callback_group=slow_group)
    node.create_timer(0.1, lambda: ticks.append(ros_double.now()), callback_group=timer_group)
    publisher = node.create_publisher(String, "t", 10)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        publisher.publish(String(data="first"))
        ros_double.graph().spin_all(wait_s=None)
        assert entered.wait(60)
        publisher.publish(String(data="second"))
        for k in range(1, 6):
            ros_double.set_time(0.1 * k)  # the timer fires and is waited for; "second" cannot start
        assert len(ticks) == 5 and received == ["first"]
    finally:
        release.set()
    for future in list(executor.outstanding):
        future.result(timeout=60)
    ros_double.spin_all()
    assert received == ["first", "second"]
    executor.shutdown()


def test_without_groups_one_blocked_callback_holds_the_whole_node(ros):
    """The default group is mutually exclusive per node (rclpy): a timer of the same node cannot fire while a
    subscription callback of it runs, even on a multi-threaded executor."""
    import ros_double
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String

    node = Node("n")
    entered, release, done, ticks = threading.Event(), threading.Event(), threading.Event(), []
    node.create_subscription(String, "t", lambda msg: (entered.set(), release.wait(60), done.set()), 10)
    node.create_timer(0.1, lambda: ticks.append(1))
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        node.create_publisher(String, "t", 10).publish(String(data="x"))
        ros_double.graph().spin_all(wait_s=None)
        assert entered.wait(60)
        for k in range(1, 4):
            ros_double.set_time(0.1 * k)
        assert ticks == []
        if ros_double.DISTRO != "humble":
            # Jazzy's Executor.shutdown tests _is_shutdown after setting it, so it never waits for callbacks
            executor.shutdown()
            assert not done.is_set()
    finally:
        release.set()
    if ros_double.DISTRO == "humble":
        executor.shutdown()  # waits for the callback in progress
        assert done.is_set()
    else:
        executor.pool.shutdown(wait=True)
    ros_double.spin_all()
    assert ticks == [1]


def test_each_subscriber_gets_its_own_copy_of_a_message(ros):
    import ros_double
    from rclpy.node import Node
    from std_msgs.msg import String

    node = Node("n")
    got = []
    node.create_subscription(String, "t", got.append, 10)
    msg = String(data="sent")
    node.create_publisher(String, "t", 10).publish(msg)
    msg.data = "changed after publish"
    ros_double.spin_all()
    assert [m.data for m in got] == ["sent"] and got[0] is not msg


def test_only_a_latched_late_joiner_gets_the_latched_message(ros):
    import ros_double
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String

    node = Node("n")
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, "t", latched).publish(String(data="before"))
    volatile, transient = [], []
    node.create_subscription(String, "t", volatile.append, 10)  # VOLATILE: no past samples, as in DDS
    node.create_subscription(String, "t", transient.append, latched)
    ros_double.spin_all()
    assert [m.data for m in transient] == ["before"] and volatile == []


def test_jazzy_differs_in_builtin_parameters_exception_args_and_the_str_tag(distro, tmp_path):
    import rclpy
    from rclpy.exceptions import ParameterNotDeclaredException
    from rclpy.node import Node

    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    tagged: !!str 1\n")
    rclpy.init(args=["--ros-args", "--params-file", str(path)])
    try:
        node = Node("n")
        assert node.has_parameter("start_type_description_service") is (distro != "humble")
        tagged = node.declare_parameter("tagged", "" if distro != "humble" else 0).value
        assert tagged == ("1" if distro != "humble" else 1)  # rcl 5.7+ (ros2/rcl#999) reads the tag
        with pytest.raises(ParameterNotDeclaredException) as err:
            node.get_parameter("undeclared")
        expected = (("Invalid access to undeclared parameter(s)", "undeclared") if distro == "humble"
                    else ("Invalid access to undeclared parameter(s): undeclared",))
        assert err.value.args == expected
    finally:
        rclpy.shutdown()
