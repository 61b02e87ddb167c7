"""Launch files and parameter files, checked without ROS 2.

launch and launch_ros are not installable from PyPI, so each launch file is executed against the launch double
in test/rclpy_double (launch's Humble signatures; constructors record their arguments and substitutions can be
performed), with FindPackageShare("regionadapt_ros") pointing at the source tree, whose launch/ and config/ are
what setup.py installs into the share directory. Every node a launch file starts must be an installed executable
of this package, get only parameters that node declares (nodes/_params.py, the table the nodes declare from),
with values of the declared type and range, from config files that exist; remappings must name topics the node
uses; the rosbag2 commands must be well formed. The config YAMLs are checked the same way on their own.
Values are typed as the node will get them: parameter files as rcl_yaml_param_parser types their scalars, and
inline values as launch_ros evaluates them, dumps them into a parameter file and rcl reads that file back.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from rclpy_double.harness import double_on_path
from rclpy_double.param_files import (
    flatten_parameters,
    load_parameters_yaml,
    merged_overrides,
    node_key_matches,
    parameters_for,
)

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.nodes import _params

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / "launch"
CONFIG_DIR = REPO / "config"
LAUNCH_FILES = sorted(p.name for p in LAUNCH_DIR.glob("*.launch.py"))
SHARE = {_params.PACKAGE: str(REPO)}
REQUIRED = {"replay.launch.py": {"bag": "/data/drive_0001"}}
PARAM_FILES = ("driving.yaml", "vehicle.yaml", "carla.yaml", "region_manager.yaml")


def console_scripts() -> set[str]:
    """Executable names of setup.py's console_scripts entry points (read from its AST)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return {ast.literal_eval(item).split("=")[0].strip() for item in value.elts}
    raise AssertionError("setup.py has no console_scripts")


@pytest.fixture(scope="module")
def launch_api():
    with double_on_path(("launch", "launch_ros")):
        yield


@dataclass
class NodeInfo:
    source: str
    package: str
    executable: str
    name: str
    namespace: str
    parameter_files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)  # inline values, after launch_ros evaluation
    remappings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Collected:
    nodes: list[NodeInfo] = field(default_factory=list)
    commands: list[tuple[list[str], bool]] = field(default_factory=list)  # (cmd, condition holds)
    arguments: dict[str, Any] = field(default_factory=dict)


def load_description(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.name.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def parameter_value(context: Any, value: Any) -> Any:
    """An inline parameter value as the node gets it: launch_ros evaluates it (utilities/evaluate_parameters.py:
    a substitution's text through yaml.safe_load unless value_type=str), writes the dictionary into a parameter
    file with yaml.dump (Node._create_params_file_from_dict) and rcl reads that file with its own typing rules."""
    from launch._double import Substitution, perform
    from launch_ros.parameter_descriptions import ParameterValue

    if isinstance(value, ParameterValue):
        if value.value_type is str:
            return rcl_reread(perform(context, value.value))
        value = value.value
    if isinstance(value, (Substitution, list)):
        text = perform(context, value)
        value = yaml.safe_load(text) if text else ""
    return rcl_reread(value)


def rcl_reread(value: Any) -> Any:
    """``value`` after launch_ros's yaml.dump into a parameter file and rcl's reading of it."""
    return load_parameters_yaml(yaml.dump({"value": value}, default_flow_style=False), "launch parameters")["value"]


def collect(description: Any, context: Any, source: str, out: Collected | None = None) -> Collected:
    """Walk a launch description the way launch visits it (arguments in order, includes recursively); every
    action is collected whatever its condition, and the condition is evaluated (it must be valid)."""
    from launch._double import (
        DeclareLaunchArgument,
        ExecuteProcess,
        GroupAction,
        IncludeLaunchDescription,
        LaunchContext,
        TimerAction,
        perform,
    )
    from launch_ros.actions import Node

    out = out or Collected()
    for entity in description.entities:
        holds = entity.condition.evaluate(context) if getattr(entity, "condition", None) else True
        if isinstance(entity, DeclareLaunchArgument):
            out.arguments[entity.name] = entity
            if entity.name not in context.launch_configurations:
                assert entity.default_value is not None, f"{source}: argument {entity.name} has no default"
                context.launch_configurations[entity.name] = perform(context, entity.default_value)
            value = context.launch_configurations[entity.name]
            assert entity.choices is None or value in entity.choices, f"{source}: {entity.name}={value!r}"
        elif isinstance(entity, Node):
            info = NodeInfo(source, perform(context, entity.package), perform(context, entity.executable),
                            perform(context, entity.name), perform(context, entity.namespace or ""))
            for item in entity.parameters:
                if isinstance(item, dict):
                    for key, value in item.items():
                        info.parameters[perform(context, key)] = parameter_value(context, value)
                else:
                    info.parameter_files.append(perform(context, item))
            info.remappings = [(perform(context, a), perform(context, b)) for a, b in entity.remappings]
            out.nodes.append(info)
        elif isinstance(entity, ExecuteProcess):
            out.commands.append((entity.performed_cmd(context), holds))
        elif isinstance(entity, (TimerAction, GroupAction)):
            if isinstance(entity, TimerAction) and not isinstance(entity.period, float):
                assert float(perform(context, entity.period)) >= 0
            collect(type("D", (), {"entities": entity.actions})(), context, source, out)
        elif isinstance(entity, IncludeLaunchDescription):
            path = Path(perform(context, entity.launch_description_source.launch_file_path))
            assert path.is_file(), f"{source}: includes {path}, which does not exist"
            child = LaunchContext(dict(context.launch_configurations), context.share)
            for key, value in entity.launch_arguments:
                child.launch_configurations[perform(context, key)] = perform(context, value)
            collect(load_description(path), child, f"{source} > {path.name}", out)
        else:
            raise AssertionError(f"{source}: the launch test does not know {type(entity).__name__}")
    return out


def run_launch_file(name: str, arguments: dict[str, str] | None = None, share: Path = REPO) -> Collected:
    """Evaluate ``share``/launch/``name`` with FindPackageShare pointing at ``share`` (the source tree, or an
    installed share directory)."""
    from launch._double import LaunchContext

    context = LaunchContext({**REQUIRED.get(name, {}), **(arguments or {})}, {_params.PACKAGE: str(share)})
    return collect(load_description(share / "launch" / name), context, name)


def fully_qualified_name(name: str, namespace: str = "") -> str:
    namespace = namespace.strip("/")
    return f"/{namespace}/{name}" if namespace else f"/{name}"


def parameters_in_file(path: Path, fqn: str) -> dict[str, Any]:
    """The parameters a ROS 2 parameter file sets for the node ``fqn`` (e.g. "/ego/driving_node"): the sections
    whose keys rcl matches to it (``/**``, ``/*`` wildcards; see rclpy_double/param_files.py)."""
    try:
        return parameters_for(load_parameters_yaml(path.read_text(), str(path)), fqn, str(path))
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def check_parameter_file(path: Path) -> None:
    """Every node section of a parameter file names a node of this package (``/**/<node>`` reaches it in any
    namespace, as rcl matches keys) and sets only its declared parameters with valid values; ConfigError names
    the file and the problem."""
    parameters_in_file(path, "/")  # the file's shape, and what rcl reads from it
    doc = load_parameters_yaml(path.read_text(), str(path))
    for key, entry in doc.items():
        nodes = [n for n in _params.PARAMETERS if node_key_matches(str(key), f"/ego/{n}")]
        if len(nodes) != 1 or not node_key_matches(str(key), f"/{nodes[0]}"):
            raise ConfigError(path, f"section {key!r} must reach exactly one of this package's nodes "
                              f"({', '.join(_params.PARAMETERS)}) in any namespace: write '/**/<node>'")
        _params.check_values(_params.PARAMETERS[nodes[0]], flatten_parameters(entry["ros__parameters"]), str(path))


def check_node(info: NodeInfo, scripts: set[str], config_dir: Path = CONFIG_DIR) -> None:
    where = f"{info.source}: {info.executable}"
    assert info.package == _params.PACKAGE, f"{where}: package {info.package!r}"
    assert info.executable in scripts, f"{where}: not a console_scripts executable of setup.py"
    assert info.name == info.executable, f"{where}: node name {info.name!r} (the parameter files key on it)"
    specs = _params.PARAMETERS[info.executable]
    for file_name in info.parameter_files:
        path = Path(file_name)
        assert path.is_file(), f"{where}: parameter file {path} does not exist"
        assert path.parent == config_dir and path.suffix == ".yaml", f"{where}: {path} is not installed (config/*.yaml)"
        check_parameter_file(path)
    _params.check_values(specs, info.parameters, where)
    topics = _params.TOPICS[info.executable]
    for source, target in info.remappings:
        assert source in topics, f"{where}: remaps {source!r}, which is not a topic of the node"
        assert re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", target), f"{where}: remaps to invalid name {target!r}"


def effective_parameters(info: NodeInfo) -> dict[str, Any]:
    """What the node ends up with: the declared defaults, then the overrides rcl builds from the files and the
    inline values in order (``merged_overrides``). launch_ros passes the inline values as one more parameter
    file, keyed by the node's full name when the launch file gives name and namespace, else ``/**``
    (launch_ros ``actions/node.py`` ``_create_params_file_from_dict``)."""
    values = {spec.name: spec.default for spec in _params.PARAMETERS[info.executable]}
    fqn = fully_qualified_name(info.name, info.namespace)
    sources = []
    for file_name in info.parameter_files:
        parameters_in_file(Path(file_name), fqn)  # the file's shape, named on refusal
        sources.append(("--params-file", load_parameters_yaml(Path(file_name).read_text(), file_name)))
    if info.parameters:
        inline_key = fqn if info.namespace else "/**"
        sources.append(("--params-file", {inline_key: {"ros__parameters": info.parameters}}))
    values.update(merged_overrides(sources, fqn))
    return values


# ------------------------------------------------------------------------------------------------- tests
def test_the_four_launch_files_and_param_files_exist():
    assert LAUNCH_FILES == ["carla.launch.py", "onboard.launch.py", "record.launch.py", "replay.launch.py"]
    for name in PARAM_FILES:
        assert (CONFIG_DIR / name).is_file()


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_start_only_installed_nodes_with_declared_parameters_and_existing_files(launch_api, name):
    scripts = console_scripts()
    collected = run_launch_file(name)
    for info in collected.nodes:
        check_node(info, scripts)
    if name in ("onboard.launch.py", "carla.launch.py", "replay.launch.py"):
        assert sorted(n.executable for n in collected.nodes) == ["driving_node", "region_manager_node"]


def test_onboard_arguments_reach_the_nodes(launch_api, tmp_path):
    collected = run_launch_file("onboard.launch.py", {"namespace": "ego", "backend": "torch",
                                                       "command_type": "twist", "bundle_dir": str(tmp_path),
                                                       "region_override": "highway"})
    nodes = {n.executable: n for n in collected.nodes}
    driving = effective_parameters(nodes["driving_node"])
    assert (driving["backend"], driving["command_type"], driving["bundle_dir"]) == ("torch", "twist", str(tmp_path))
    assert driving["use_sim_time"] is False and driving["vehicle.max_accel"] == 2.5
    assert effective_parameters(nodes["region_manager_node"])["region_override"] == "highway"
    assert {n.namespace for n in collected.nodes} == {"ego"}
    for info in collected.nodes:
        check_node(info, console_scripts())
    # Empty strings stay strings (launch_ros would otherwise parse them as YAML).
    assert run_launch_file("onboard.launch.py").nodes[1].parameters["bundle_dir"] == ""


@pytest.mark.parametrize("role", ["ego_vehicle", "hero"])
def test_carla_launch_speaks_the_bridge_topics_in_sim_time(launch_api, role):
    collected = run_launch_file("carla.launch.py", {"role_name": role})
    nodes = {n.executable: n for n in collected.nodes}
    driving, manager = nodes["driving_node"], nodes["region_manager_node"]
    assert dict(driving.remappings) == {
        "camera/image": f"/carla/{role}/rgb_front/image",
        "lidar/points": f"/carla/{role}/lidar",
        "speed": f"/carla/{role}/speedometer",
        "control/command": f"/carla/{role}/vehicle_control_cmd",
    }
    assert dict(manager.remappings) == {"gnss/fix": f"/carla/{role}/gnss"}
    values = effective_parameters(driving)
    assert (values["command_type"], values["speed_source"], values["use_sim_time"]) == ("carla", "speed", True)
    # carla.yaml comes after vehicle.yaml; the import reads CARLA control recordings with the same angle
    from regionadapt_ros.core.control import CARLA_MAX_STEERING_ANGLE

    assert values["vehicle.max_steering_angle"] == pytest.approx(1.22) == CARLA_MAX_STEERING_ANGLE
    assert values["frame_id"] == role  # the bridge's TF frame of the ego vehicle is its role name
    manager_values = effective_parameters(manager)
    assert manager_values["use_sim_time"] is True
    assert manager_values["accept_unknown_status"] is True  # the bridge's fixes are STATUS_UNKNOWN on Jazzy


# What the CARLA ROS bridge (carla-simulator/ros-bridge, carla_spawn_objects/config/objects.json sensor ids)
# publishes and subscribes for an ego vehicle with role name R: topic -> (message type, QoS of the bridge's
# entity). Every bridge entity is ``QoSProfile(depth=10)`` through ros_compatibility: reliable, volatile.
BRIDGE_PUBLISHES = {
    "/carla/{role}/rgb_front/image": "sensor_msgs/msg/Image",
    "/carla/{role}/lidar": "sensor_msgs/msg/PointCloud2",
    "/carla/{role}/gnss": "sensor_msgs/msg/NavSatFix",
    "/carla/{role}/speedometer": "std_msgs/msg/Float32",
}
BRIDGE_SUBSCRIBES = {"/carla/{role}/vehicle_control_cmd": "carla_msgs/msg/CarlaEgoVehicleControl"}


def test_carla_launch_with_role_hero_matches_the_bridge_topics_types_and_qos(launch_api):
    with double_on_path():
        from rclpy.qos import QoSProfile
        from ros_double import Graph

        from regionadapt_ros.driving_session import COMMAND_MSG_TYPES
        from regionadapt_ros.nodes import driving_node, region_manager_node

        bridge_qos = QoSProfile(depth=10)
        collected = run_launch_file("carla.launch.py", {"role_name": "hero"})
        nodes = {n.executable: n for n in collected.nodes}
        ours = {
            # remapped topic of ours -> (our type, our QoS, we publish?)
            dict(nodes["driving_node"].remappings)["camera/image"]: ("sensor_msgs/msg/Image",
                                                                     driving_node.SENSOR_QOS, False),
            dict(nodes["driving_node"].remappings)["lidar/points"]: ("sensor_msgs/msg/PointCloud2",
                                                                     driving_node.SENSOR_QOS, False),
            dict(nodes["driving_node"].remappings)["speed"]: ("std_msgs/msg/Float32", driving_node.SENSOR_QOS, False),
            dict(nodes["region_manager_node"].remappings)["gnss/fix"]: (
                "sensor_msgs/msg/NavSatFix", region_manager_node.qos_profile_sensor_data, False),
            dict(nodes["driving_node"].remappings)["control/command"]: (
                COMMAND_MSG_TYPES["carla"], driving_node.COMMAND_QOS, True),
        }
        expected = {t.format(role="hero"): (m, False) for t, m in BRIDGE_PUBLISHES.items()}
        expected |= {t.format(role="hero"): (m, True) for t, m in BRIDGE_SUBSCRIBES.items()}
        assert {topic: (m, pub) for topic, (m, _, pub) in ours.items()} == expected
        for topic, (_, qos, we_publish) in ours.items():
            publisher, subscriber = (qos, bridge_qos) if we_publish else (bridge_qos, qos)
            assert Graph.compatible(publisher, subscriber), topic


# The namespaced topics the nodes subscribe to (all but their own outputs and the global ones).
NODE_INPUTS = {t for node in _params.TOPICS.values() for t in node
               if not t.startswith(("/", "control/", "perception/", "regionadapt/"))}


def test_record_writes_mcap_of_the_nodes_topics(launch_api):
    for arguments, expect_output in (({}, False), ({"output": "drive_0001", "namespace": "ego"}, True)):
        collected = run_launch_file("record.launch.py", arguments)
        active = [cmd for cmd, holds in collected.commands if holds]
        assert len(active) == 1
        cmd = active[0]
        assert cmd[:5] == ["ros2", "bag", "record", "-s", "mcap"]
        assert ("-o" in cmd) == expect_output and (not expect_output or cmd[cmd.index("-o") + 1] == "drive_0001")
        topics = [t for t in cmd[5:] if t.startswith("/")]
        prefix = "/ego/" if arguments.get("namespace") else "/"
        known = {prefix + t for node in _params.TOPICS.values() for t in node if not t.startswith("/")}
        known |= {"/diagnostics", "/tf", "/tf_static"}
        assert set(topics) <= known and {prefix + "control/command", prefix + "camera/image"} <= set(topics)
        # every output of the driving node is recorded, the collision risk included
        outputs = {prefix + t for t in _params.DRIVING_TOPICS if t.startswith(("control/", "perception/"))}
        assert outputs <= set(topics) and prefix + "perception/risk" in outputs
        assert {prefix + t for t in NODE_INPUTS} <= set(topics)  # and every input, to replay the drive


def test_replay_plays_only_the_inputs_with_the_clock_and_the_nodes_use_sim_time(launch_api):
    for loop in ("false", "true"):
        collected = run_launch_file("replay.launch.py", {"loop": loop, "rate": "0.5"})
        active = [cmd for cmd, holds in collected.commands if holds]
        assert len(active) == 1
        cmd = active[0]
        assert cmd[:4] == ["ros2", "bag", "play", "/data/drive_0001"]
        # --clock takes an optional rate: the bag must not follow it, a number does.
        assert float(cmd[cmd.index("--clock") + 1]) > 0 and cmd[cmd.index("--rate") + 1] == "0.5"
        assert ("--loop" in cmd) == (loop == "true")
        played = cmd[cmd.index("--topics") + 1:]
        # every topic either node reads, whichever camera_transport and speed_source it runs with
        inputs = {"/" + t for t in NODE_INPUTS}
        assert {"/camera/image/compressed", "/vehicle/twist", "/speed", "/gnss/fix"} <= inputs
        # /tf_static too: the lidar's mounting, which the driving node reads as `regionadapt replay` does
        assert set(played) == inputs | {"/tf_static"}
        assert all(effective_parameters(n)["use_sim_time"] is True for n in collected.nodes)


def test_namespaced_replay_plays_the_namespaced_inputs_and_the_global_tf_static(launch_api):
    collected = run_launch_file("replay.launch.py", {"namespace": "car1"})
    (cmd,) = [cmd for cmd, holds in collected.commands if holds]
    played = set(cmd[cmd.index("--topics") + 1:])
    assert {"/car1/camera/image", "/car1/lidar/points", "/car1/gnss/fix", "/tf_static"} <= played
    assert "/car1/tf_static" not in played and "/camera/image" not in played


def test_replay_without_a_bag_is_refused(launch_api):
    from launch._double import LaunchContext

    with pytest.raises(AssertionError, match="argument bag has no default"):
        collect(load_description(LAUNCH_DIR / "replay.launch.py"), LaunchContext({}, SHARE), "replay.launch.py")


@pytest.mark.parametrize("name", PARAM_FILES)
def test_parameter_files_set_only_declared_parameters_within_their_ranges(name):
    check_parameter_file(CONFIG_DIR / name)
    for namespace in ("", "ego", "fleet/car7"):  # /**/ keys reach the nodes wherever launch puts them
        assert parameters_in_file(CONFIG_DIR / name, fully_qualified_name("driving_node", namespace)) or \
            parameters_in_file(CONFIG_DIR / name, fully_qualified_name("region_manager_node", namespace))


def test_every_declared_parameter_has_a_valid_default_and_a_description():
    for node, specs in _params.PARAMETERS.items():
        names = [s.name for s in specs]
        assert len(names) == len(set(names)), node
        for spec in specs:
            assert spec.problem(spec.default) is None and spec.description, spec.name
            assert spec.name not in _params.BUILTIN_PARAMETERS


# ------------------------------------------------------------------------- the checks catch what they must
def test_an_integer_for_a_double_parameter_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("/**/driving_node:\n  ros__parameters:\n    camera_timeout_s: 1\n")
    with pytest.raises(ConfigError) as info:
        check_parameter_file(path)
    assert str(path) in str(info.value) and "camera_timeout_s: expected DOUBLE" in str(info.value)


def test_parameter_file_values_are_typed_as_rcl_types_them(tmp_path):
    # rcl_yaml_param_parser: an unquoted n is false and 5e-1 a double (PyYAML: two strings).
    path = tmp_path / "values.yaml"
    path.write_text("/**/region_manager_node:\n  ros__parameters:\n    default_region: n\n")
    with pytest.raises(ConfigError, match="default_region: expected STRING, got False"):
        check_parameter_file(path)
    path.write_text("/**/driving_node:\n  ros__parameters:\n    camera_timeout_s: 5e-1\n    frame_id: 'n'\n")
    check_parameter_file(path)
    assert parameters_in_file(path, "/driving_node") == {"camera_timeout_s": 0.5, "frame_id": "n"}


def test_inline_launch_values_are_typed_as_the_node_gets_them(launch_api):
    # value_type=str keeps "y" a str in launch_ros, but its yaml.dump writes it unquoted and rcl reads it as true.
    collected = run_launch_file("onboard.launch.py", {"region_override": "y"})
    info = next(n for n in collected.nodes if n.executable == "region_manager_node")
    assert info.parameters["region_override"] is True
    with pytest.raises(ConfigError, match="region_override: expected STRING, got True"):
        check_node(info, console_scripts())
    collected = run_launch_file("onboard.launch.py", {"region_override": "1", "use_sim_time": "true"})
    info = next(n for n in collected.nodes if n.executable == "region_manager_node")
    assert info.parameters["region_override"] == "1" and info.parameters["use_sim_time"] is True


def test_an_undeclared_parameter_in_a_file_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("/**/region_manager_node:\n  ros__parameters:\n    enter_margin: 10.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown parameter 'enter_margin'"):
        check_parameter_file(path)


def test_a_value_outside_the_declared_range_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("/**/driving_node:\n  ros__parameters:\n    vehicle:\n      max_accel: 50.0\n")
    with pytest.raises(ConfigError, match=r"vehicle\.max_accel: 50\.0 is outside \[0\.1, 10\]"):
        check_parameter_file(path)


def test_a_section_for_an_unknown_node_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("planner_node:\n  ros__parameters:\n    speed: 1.0\n")
    with pytest.raises(ConfigError, match="'planner_node' must reach exactly one of this package's nodes"):
        check_parameter_file(path)


def test_a_section_that_misses_namespaced_nodes_is_refused(tmp_path):
    # rcl reads "driving_node" as /driving_node: with namespace:=ego the node would silently get nothing.
    path = tmp_path / "bad.yaml"
    path.write_text("driving_node:\n  ros__parameters:\n    camera_timeout_s: 1.0\n")
    with pytest.raises(ConfigError, match="in any namespace"):
        check_parameter_file(path)
    assert parameters_in_file(path, "/driving_node") == {"camera_timeout_s": 1.0}
    assert parameters_in_file(path, "/ego/driving_node") == {}


def test_a_launch_file_with_an_unknown_executable_or_parameter_or_missing_file_is_refused(launch_api, tmp_path):
    from launch._double import LaunchContext

    scripts = console_scripts()
    cases = {
        "executable='planner_node', name='planner_node'": "not a console_scripts executable",
        "executable='driving_node', name='driving_node', parameters=[{'camera_timeout': 0.5}]":
            "unknown parameter 'camera_timeout'",
        "executable='driving_node', name='driving_node', parameters=["
        "PathJoinSubstitution([FindPackageShare('regionadapt_ros'), 'config', 'missing.yaml'])]": "does not exist",
        "executable='driving_node', name='driving_node', remappings=[('camera', '/cam')]":
            "'camera', which is not a topic of the node",
    }
    for arguments, problem in cases.items():
        path = tmp_path / "bad.launch.py"
        path.write_text(
            "from launch import LaunchDescription\n"
            "from launch.substitutions import PathJoinSubstitution\n"
            "from launch_ros.actions import Node\n"
            "from launch_ros.substitutions import FindPackageShare\n"
            "def generate_launch_description():\n"
            f"    return LaunchDescription([Node(package='regionadapt_ros', {arguments})])\n")
        collected = collect(load_description(path), LaunchContext({}, SHARE), "bad.launch.py")
        with pytest.raises((AssertionError, ConfigError), match=re.escape(problem)):
            check_node(collected.nodes[0], scripts)


def test_the_launch_double_refuses_arguments_launch_does_not_have(launch_api):
    from launch.actions import DeclareLaunchArgument, ExecuteProcess
    from launch_ros.actions import Node

    with pytest.raises(TypeError, match="remaps"):
        Node(executable="driving_node", remaps=[])
    with pytest.raises(TypeError):
        ExecuteProcess(cmd=["ros2"], stdout="screen")
    with pytest.raises(RuntimeError, match="not in provided choices"):
        DeclareLaunchArgument("backend", default_value="cuda", choices=["torch"])
    from launch.actions import TimerAction

    with pytest.raises(TypeError, match="period"):  # launch takes a float or substitutions, not an int
        TimerAction(period=5, actions=[])
    assert TimerAction(period=5.0, actions=[]).period == 5.0
