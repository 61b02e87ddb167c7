"""package.xml against what the code imports: every dependency has a rosdep key that exists, nothing unused is
declared, and what has no key is installed from requirements.txt.

The rosdep keys below were checked in ros/rosdistro (``rosdep/python.yaml``, ``rosdep/base.yaml`` and the
humble and jazzy ``distribution.yaml``); docs/design-notes.md cites them. The test cannot query rosdistro, so a
new import must be added to one of the tables here, with the key checked upstream.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Python module -> rosdep key (ROS packages are their own keys).
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "ament_index_python": "ament_index_python",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "shapely": "python3-shapely",
    "pyproj": "python3-pyproj",
    "cryptography": "python3-cryptography",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
}
# Imported, but without a rosdep key to use: requirement name in requirements.txt (None: optional, installed
# with the vehicle's GPU stack), and why.
PIP_ONLY = {
    "safetensors": ("safetensors", "no rosdep key"),
    "onnx": ("onnx", "no rosdep key (python3-onnx does not exist)"),
    "torch": ("torch", "pinned to 2.13.0; the distributions' python3-torch is an older release"),
    "tensorrt": (None, "optional TensorRT backend, from the vehicle's TensorRT install"),
    "mcap": ("mcap", "no rosdep key; `bag recover` reads and writes MCAP with it"),
    # rosbags' own decompressors, imported to inflate (bounded) what rosbags would inflate
    "lz4": ("lz4", "installed with rosbags, which requires it; listed since the package imports it"),
    "backports": ("backports.zstd", "zstd before Python 3.14, installed with rosbags, which requires it"),
}
# Standard library from a later Python than 3.11, imported first where present (compression.zstd, 3.14).
LATER_STDLIB = {"compression"}
# Message packages resolved by name ("pkg/msg/Type" strings) that are not released into rosdistro: they come
# from the CARLA ROS bridge workspace and are only needed with command_type:=carla.
NOT_RELEASED = {"carla_msgs"}
# Needed by what the package runs rather than imports: lifecycle services, `ros2 launch`, `ros2 bag` in
# record/replay.launch.py with the MCAP storage plugin.
RUNTIME_ONLY = {"lifecycle_msgs": "rclpy.lifecycle services", "ros2launch": "ros2 launch",
                "ros2bag": "ros2 bag in record/replay.launch.py",
                "rosbag2_storage_mcap": "ros2 bag record -s mcap"}
# Keys that do not exist and once made `rosdep install` abort.
NONEXISTENT_KEYS = {"python3-onnx", "python3-safetensors"}
TEST_DEPENDS = {"python3-pytest", "rosgraph_msgs", "launch_testing"}  # launch_testing: test_nodes_launch_testing.py
_MSG_TYPE = re.compile(r"^([a-z][a-z0-9_]*)/msg/[A-Z][A-Za-z0-9]*$")


def python_files() -> list[Path]:
    return sorted((REPO / "regionadapt_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in the package and the launch files -> files."""
    found: dict[str, set[str]] = {}
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "regionadapt_ros":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def message_packages() -> set[str]:
    """Packages of every ``pkg/msg/Type`` string constant in the code (the nodes resolve classes by name)."""
    packages = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for part in node.value.split("|"):
                    match = _MSG_TYPE.match(part.strip())
                    if match:
                        packages.add(match.group(1))
    return packages


def declared(kind: str) -> list[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return [e.text.strip() for e in root.findall(kind)]


def requirement_names(file_name: str = "requirements.txt") -> set[str]:
    names = set()
    for line in (REPO / file_name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower())
    return names


def expected_exec_depends() -> set[str]:
    modules = imported_modules()
    unknown = sorted(set(modules) - set(ROSDEP_KEYS) - set(PIP_ONLY) - LATER_STDLIB)
    assert not unknown, f"imports without a dependency decision (add to ROSDEP_KEYS or PIP_ONLY): " \
                        f"{ {m: sorted(modules[m]) for m in unknown} }"
    keys = {ROSDEP_KEYS[m] for m in modules if m in ROSDEP_KEYS}
    keys |= message_packages() - NOT_RELEASED
    keys |= {"builtin_interfaces"}  # builtin_interfaces/msg/Time inside every header (build_time)
    return keys | set(RUNTIME_ONLY)


def test_exec_depends_are_exactly_what_the_code_needs():
    depends = declared("exec_depend")
    assert len(depends) == len(set(depends)), "a key is declared twice"
    expected = expected_exec_depends()
    assert set(depends) - expected == set(), "declared but not used"
    assert expected - set(depends) == set(), "used but not declared"


def test_no_key_that_rosdistro_lacks_and_no_unused_test_depends():
    for kind in ("depend", "exec_depend", "build_depend", "test_depend"):
        assert not set(declared(kind)) & (NONEXISTENT_KEYS | NOT_RELEASED), kind
    assert set(declared("test_depend")) == TEST_DEPENDS


def test_what_has_no_key_comes_from_requirements_txt():
    for file_name in ("requirements.txt", "requirements-ros.txt"):
        requirements = requirement_names(file_name)
        for module, (requirement, _) in PIP_ONLY.items():
            if requirement is not None:
                assert requirement in requirements, f"{module}: {requirement} is not in {file_name}"
    # The ROS workspace's pip step installs only what has no rosdep key: nothing rosdep installs as well.
    # shapely is the exception: the distribution's is too old on Humble (see the next test).
    rosdep_installed = {"numpy", "opencv-python-headless", "pyyaml", "pyproj", "cryptography",
                        "matplotlib", "tqdm", "onnxruntime", "rosbags"}
    assert not requirement_names("requirements-ros.txt") & rosdep_installed
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Build and launch in a ROS 2 workspace"):]
    section = section[:section.index("\n## ", 3)]
    assert "pip install -r src/regionadapt_ros/requirements-ros.txt" in section and "requirements.txt" in section
    for name in ("safetensors", "onnx", "torch", "carla_msgs"):
        assert name in section, f"the README's ROS 2 section does not say where {name} comes from"


def test_the_ros_install_brings_shapely_2_where_the_distributions_is_older():
    from packaging.requirements import Requirement

    from regionadapt_ros.core.geofence_features import require_shapely_2

    lines = [line.split("#", 1)[0].strip() for line in (REPO / "requirements-ros.txt").read_text().splitlines()]
    shapely = next(Requirement(line) for line in lines if line and Requirement(line).name.lower() == "shapely")
    # Ubuntu 22.04 (Humble) ships python3-shapely 1.8, Ubuntu 24.04 (Jazzy) 2.0.3.
    assert not shapely.specifier.contains("1.8.0") and shapely.specifier.contains("2.0.3")
    for old in ("1.8.0", "1.7.1", "", "unknown"):
        with pytest.raises(ImportError, match=r"needs shapely >= 2\.0.*requirements-ros\.txt"):
            require_shapely_2(old, "/usr/lib/python3/dist-packages/shapely/__init__.py")
    for new in ("2.0.3", "2.1.2", "10.0"):
        require_shapely_2(new)


def test_the_ros_install_keeps_the_distributions_numpy_and_a_setuptools_colcon_supports():
    from packaging.requirements import Requirement

    constraints = {}
    for line in (REPO / "constraints-ros.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            constraints[requirement.name.lower()] = requirement.specifier
    # Humble's numpy is 1.21.5 (onnxruntime needs 1.21.6), Jazzy's 1.26.4: both 1.x, and the
    # distribution's OpenCV does not import under numpy 2.
    assert "1.26.4" in constraints["numpy"] and "1.21.6" in constraints["numpy"]
    assert "2.0.0" not in constraints["numpy"]
    # torch needs setuptools >= 77; colcon-core's --symlink-install breaks at 80.
    assert "79.0.1" in constraints["setuptools"] and "80.0.0" not in constraints["setuptools"]
    # The constraints only hold back; they name nothing to install that requirements-ros.txt lacks.
    assert not set(constraints) & requirement_names("requirements-ros.txt")
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Build and launch in a ROS 2 workspace"):]
    commands = section[:section.index("```", section.index("```bash") + 7)]
    export = commands.index("export PIP_CONSTRAINT=~/ws/src/regionadapt_ros/constraints-ros.txt")
    assert export < commands.index("rosdep install") < commands.index("pip install -r")


def test_the_check_sees_the_imports_it_must():
    # The scan finds the node's rclpy imports and the lazily imported heavy libraries.
    modules = imported_modules()
    assert {"rclpy", "rcl_interfaces", "torch", "onnxruntime", "tensorrt", "safetensors"} <= set(modules)
    assert {"sensor_msgs", "ackermann_msgs", "carla_msgs", "diagnostic_msgs"} <= message_packages()
