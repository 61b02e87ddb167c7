"""region_manager_node: GNSS fixes (+ optional odometry) → active region (latched) and a prefetch hint.

A thin shell around ``RegionSession`` (resolution, hysteresis and diagnostics live there).

Topics (relative to the namespace) and QoS:
- in  ``gnss/fix`` (sensor_msgs/NavSatFix) and, with ``use_odometry``, ``odom`` (nav_msgs/Odometry; its frame
  must be ENU-aligned), both with the sensor-data profile (best effort, keep last 5);
- out ``regionadapt/active_region`` (std_msgs/String, reliable, transient local, depth 1: a late joiner gets
  it), ``regionadapt/next_region`` (std_msgs/String, reliable, depth 1), ``/diagnostics``.
The geofence file and the resolver parameters are read once at start (a bad file or an unknown
``region_override`` ends the process with a message naming it, as does a parameter rclpy refuses);
``region_override`` can change at run time (``ros2 param set /region_manager_node region_override highway``;
an empty string, ``region_override "''"`` (Humble's ``ros2 param set`` fails on a bare ``""``): follow GNSS
again): the on-set callback validates it, the switch is made once the change is
accepted (the post-set callback on Jazzy; on Humble, which has none, at the end of the on-set callback).
Fixes with NavSatStatus STATUS_UNKNOWN (-2: Jazzy's default, so the CARLA bridge's fixes on Jazzy, which never
set the status) are held unless
``accept_unknown_status`` is true; diagnostics say so, naming the parameter.
"""

from __future__ import annotations

from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.nodes import _params
from regionadapt_ros.nodes._msgs import message_types
from regionadapt_ros.nodes._ros_logging import RosLogHandler, core_logging_to
from regionadapt_ros.region_session import RegionSession, resolver_config_from

LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
HINT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


class RegionManagerNode(Node):
    """Raises ConfigError from the constructor for a bad geofence file or parameter (main reports it)."""

    def __init__(self, node_name: str = _params.REGION_MANAGER_NODE, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        specs = _params.REGION_MANAGER_PARAMETERS
        self.params: dict[str, Any] = _params.declare(self, specs)
        _params.check_values(specs, self.params, f"{self.get_name()} parameters")
        p = self.params
        self.session = RegionSession.from_file(
            p["geofence_file"] or _params.default_config_path("geofences.geojson"), p["default_region"],
            resolver_config_from(p), repair=p["repair_geofences"], override=p["region_override"] or None,
            fix_timeout_s=p["fix_timeout_s"], clock_jump_s=p["clock_jump_s"], use_odometry=p["use_odometry"],
            name=self.get_name())
        self._apply_when_validated = not _params.add_parameter_callbacks(self, self._validate_parameters,
                                                                         self._apply_parameters)
        self.types = message_types()
        string = self.types("std_msgs/msg/String")
        self._active_pub = self.create_publisher(string, "regionadapt/active_region", LATCHED_QOS)
        self._next_pub = self.create_publisher(string, "regionadapt/next_region", HINT_QOS)
        self._diagnostics_pub = self.create_publisher(self.types("diagnostic_msgs/msg/DiagnosticArray"),
                                                      "/diagnostics", DIAGNOSTICS_QOS)
        self.create_subscription(self.types("sensor_msgs/msg/NavSatFix"), "gnss/fix", self._on_fix,
                                 qos_profile_sensor_data)
        if p["use_odometry"]:
            self.create_subscription(self.types("nav_msgs/msg/Odometry"), "odom", self._on_odometry,
                                     qos_profile_sensor_data)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)
        initial = self.session.initial_announcement()
        if initial is not None:
            self._publish_region(initial)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish_region(self, region: str) -> None:
        self._active_pub.publish(self.session.region_message(self.types, region))
        self.get_logger().info(f"active region: {region}")

    def _on_fix(self, msg: Any) -> None:
        update = self.session.on_fix(msg, self.now_s())
        if update.active_region_changed is not None:
            self._publish_region(update.active_region_changed)
        if update.next_region_hint is not None:
            self._next_pub.publish(self.session.region_message(self.types, update.next_region_hint))

    def _on_odometry(self, msg: Any) -> None:
        self.session.on_odometry(msg, self.now_s())

    def _publish_diagnostics(self) -> None:
        self._diagnostics_pub.publish(self.session.diagnostic_array(self.types, self.now_s()))

    def _validate_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """rclpy's on-set callback: accept or refuse, no side effect (but on Humble, see the module docstring)."""
        for parameter in parameters:
            if parameter.name != "region_override":
                continue
            if not isinstance(parameter.value, str):
                return SetParametersResult(successful=False, reason="region_override must be a string")
            region = parameter.value.strip()
            if region and region not in self.session.known_regions:
                return SetParametersResult(successful=False, reason=(
                    f"region_override: unknown region {region!r}; known regions: "
                    f"{', '.join(self.session.known_regions)}"))
        if self._apply_when_validated:
            self._apply_parameters(parameters)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Any]) -> None:
        """After a change was accepted: switch to (or release) the override and announce the region."""
        for parameter in parameters:
            if parameter.name == "region_override":
                changed = self.session.set_override(parameter.value.strip() or None, self.now_s())
                if changed is not None:
                    self._publish_region(changed)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    with core_logging_to(get_logger(_params.REGION_MANAGER_NODE)) as handler:
        return _run(handler)


def _run(handler: RosLogHandler) -> int:
    try:
        node = RegionManagerNode()
    except ConfigError as exc:  # a bad geofence file, or a parameter rclpy refused at declaration, named
        # A node that cannot know its region must not pretend to: report and stop.
        get_logger(_params.REGION_MANAGER_NODE).fatal(f"could not start: {exc}")
        rclpy.try_shutdown()
        return 1
    handler.use(node.get_logger())  # the name rcl gave it: namespaced and remapped
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
