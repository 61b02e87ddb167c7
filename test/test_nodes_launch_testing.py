"""The installed nodes as processes, under launch_testing (``colcon test`` on a ROS 2 machine): what the double
cannot show, main() run by ``ros2 run`` with real ROS arguments and a real rcl underneath.

- a configuration the node cannot load (a broken geofence file) ends it with exit code 1 and a line naming it;
- a parameter rclpy refuses (an integer for a double, as a launch file's dict passes it) ends it with exit
  code 1 and one line naming the parameter, not a traceback;
- under a namespace, with ``region_override``, the region manager publishes the region latched on
  ``<namespace>/regionadapt/active_region``, where a late subscriber (TRANSIENT_LOCAL) still gets it, and it
  exits 0 when launch stops it.

Where launch_testing is not installed (the CPU-only test run) the module is skipped; the same mechanisms are
tested against the rclpy double in test_nodes.py.
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip("launch_testing", reason="launch_testing tests need a ROS 2 install "
                    "(colcon test); the double covers these mechanisms in test_nodes.py")
import launch_ros.actions
import launch_testing.actions
import launch_testing.asserts

import launch

PACKAGE = "regionadapt_ros"
NAMESPACE = "launch_test"


def _node(executable: str, name: str, parameters: list[dict]) -> launch_ros.actions.Node:
    env = {"PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    return launch_ros.actions.Node(package=PACKAGE, executable=executable, name=name, namespace=NAMESPACE,
                                   parameters=parameters, additional_env=env)


@pytest.mark.launch_test
def generate_test_description():
    broken = Path(tempfile.mkdtemp(prefix="regionadapt_launch_test_")) / "broken.geojson"
    broken.write_text("{")
    broken_fences = _node("region_manager_node", "broken_fences", [{"geofence_file": str(broken)}])
    refused_parameter = _node("driving_node", "refused_parameter", [{"camera_timeout_s": 1}])
    overridden = _node("region_manager_node", "region_manager_node", [{"region_override": "left_hand"}])
    description = launch.LaunchDescription([broken_fences, refused_parameter, overridden,
                                            launch_testing.actions.ReadyToTest()])
    return description, {"broken": broken, "broken_fences": broken_fences, "refused_parameter": refused_parameter,
                         "overridden": overridden}


class TestTheNodesAsProcesses(unittest.TestCase):

    def test_a_configuration_it_cannot_load_ends_the_node_naming_it(self, proc_info, proc_output, broken,
                                                                     broken_fences):
        proc_info.assertWaitForShutdown(process=broken_fences, timeout=60)
        proc_output.assertWaitFor(str(broken), process=broken_fences, timeout=10, stream="stderr")

    def test_a_parameter_rclpy_refuses_ends_the_node_naming_it(self, proc_info, proc_output, refused_parameter):
        proc_info.assertWaitForShutdown(process=refused_parameter, timeout=60)
        proc_output.assertWaitFor("camera_timeout_s", process=refused_parameter, timeout=10, stream="stderr")

    def test_the_overridden_region_is_published_latched_in_the_namespace(self, overridden):
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        rclpy.init()
        try:
            probe = rclpy.create_node("launch_test_probe")
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            received: list[str] = []
            probe.create_subscription(String, f"/{NAMESPACE}/regionadapt/active_region",
                                      lambda msg: received.append(msg.data), latched)
            deadline = time.monotonic() + 60.0  # the node loads its geofences first
            while not received and time.monotonic() < deadline:
                rclpy.spin_once(probe, timeout_sec=0.2)
            probe.destroy_node()
        finally:
            rclpy.shutdown()
        self.assertEqual(received[:1], ["left_hand"])


@launch_testing.post_shutdown_test()
class TestAfterShutdown(unittest.TestCase):

    def test_exit_codes(self, proc_info, broken_fences, refused_parameter, overridden):
        launch_testing.asserts.assertExitCodes(proc_info, [1], process=broken_fences)
        launch_testing.asserts.assertExitCodes(proc_info, [1], process=refused_parameter)
        launch_testing.asserts.assertExitCodes(proc_info, [launch_testing.asserts.EXIT_OK], process=overridden)

    def test_no_process_printed_a_traceback(self, proc_output):
        for output in proc_output:
            self.assertNotIn(b"Traceback", output.text, output.process_name)

    def test_the_refusal_is_one_fatal_line(self, proc_output, refused_parameter):
        fatal = [line for output in proc_output[refused_parameter]
                 for line in output.text.decode(errors="replace").splitlines() if "FATAL" in line]
        self.assertEqual(len(fatal), 1, fatal)
        self.assertIn("camera_timeout_s", fatal[0])
