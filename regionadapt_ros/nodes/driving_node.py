"""driving_node: camera (+ lidar, speed) → perception → decision → control command, as a lifecycle node.

A thin shell around ``DrivingSession`` (all per-frame logic lives there):
- configure: validate the parameters, load regions.yaml, load and warm up the initial region's models, create
  the (lifecycle) output publishers;
- activate: subscribe to the sensors and the region topics, start the stale-camera stop timer;
- deactivate: drop the subscriptions and the timer; cleanup: free the publishers and the models.
With ``autostart`` (default) ``main`` configures and activates at start and exits with status 1 when that fails.
``/diagnostics`` is published in every state, so a node that failed to configure says why.

Topics (relative to the namespace; remap in launch files) and QoS:
- in  ``camera/image`` (sensor_msgs/Image) or ``camera/image/compressed`` (CompressedImage) with
  ``camera_transport:=compressed``; ``lidar/points`` (PointCloud2); ``odom`` (nav_msgs/Odometry), ``speed``
  (std_msgs/Float32) or ``vehicle/twist`` (geometry_msgs/TwistStamped) by ``speed_source`` — all best effort,
  keep last 1: a late frame is dropped, never queued;
  ``regionadapt/active_region`` (std_msgs/String, reliable, transient local, depth 1: latched);
  ``regionadapt/next_region`` (reliable, depth 1); ``/tf_static`` (tf2_msgs/TFMessage, reliable, transient
  local, as tf2's static listener) to bring lidar clouds into the vehicle frame.
- out ``control/command`` (reliable, depth 1): AckermannDriveStamped, CarlaEgoVehicleControl (header stamp =
  the source image stamp) or Twist by ``command_type``; ``perception/traffic_light`` (String),
  ``perception/lane`` (Vector3Stamped: x lateral offset [m], y heading error [rad], z curvature [1/m]),
  ``perception/obstacle_distance`` (Float32 [m]), ``perception/risk`` (Vector3Stamped: x time to collision [s],
  y closing speed [m/s], z level 0 none / 1 warn / 2 brake); ``/diagnostics`` (DiagnosticArray).
The emergency-braking guard (``emergency_brake``, on by default) overrides the command with full braking while
the collision risk is at level brake; its thresholds are the ``risk.*`` parameters.

Threads: ``main`` spins a ``MultiThreadedExecutor``. The sensor and region inputs share one mutually exclusive
callback group (one at a time, in arrival order), the stale-camera stop timer has a group of its own and so
does /diagnostics: a slow frame (a huge image, a slow backend) never delays the stop commands. The session is
safe for that (see driving_session/); command publishing holds a lock so frame and stop commands go out
whole, one at a time.

Parameters: the on-set callback only validates; the effect (run-time limits reaching the session) comes after
the change is accepted, from the post-set callback where rclpy has one (Iron and later, Jazzy), and on Humble,
which has none, at the end of the on-set callback once every check has passed.
"""

from __future__ import annotations

import threading
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.driving_session import COMMAND_MSG_TYPES, PERCEPTION_TOPICS, DiagnosticLevel, DrivingSession
from regionadapt_ros.nodes import _params
from regionadapt_ros.nodes._msgs import message_types
from regionadapt_ros.nodes._ros_logging import RosLogHandler, core_logging_to

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# tf2_ros' StaticListenerQoS: every static transform ever latched reaches a late joiner
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
# Callback groups that may run at once: inputs, stop timer, diagnostics, and rclpy's default group (parameter
# services, lifecycle services, the /clock subscription of use_sim_time).
EXECUTOR_THREADS = 4
# Parameters that may change while the node runs and what they change in the session.
RUNTIME_LIMITS = ("lidar_max_age_s", "camera_timeout_s", "degraded_max_speed")


class DrivingNode(LifecycleNode):
    """The driving lifecycle node; ``session`` is the DrivingSession while configured (None otherwise)."""

    def __init__(self, node_name: str = _params.DRIVING_NODE, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: dict[str, Any] = _params.declare(self, _params.DRIVING_PARAMETERS)
        self._apply_when_validated = not _params.add_parameter_callbacks(self, self._validate_parameters,
                                                                         self._apply_parameters)
        self.types = message_types()
        # Inputs one at a time; the stop timer and diagnostics beside them, so a slow frame cannot delay them.
        self.input_group = MutuallyExclusiveCallbackGroup()
        self.stop_timer_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics_group = MutuallyExclusiveCallbackGroup()
        self._command_lock = threading.Lock()
        self.session: DrivingSession | None = None
        self.state_label = "unconfigured"
        self.configure_error: str | None = None
        self._command_pub: Any = None
        self._perception_pubs: dict[str, Any] = {}
        self._subscriptions_made: list[Any] = []
        self._stop_timer: Any = None
        self._diagnostics_pub = self.create_publisher(self.types("diagnostic_msgs/msg/DiagnosticArray"),
                                                      "/diagnostics", DIAGNOSTICS_QOS)
        self._diagnostics_timer = self.create_timer(self.params["diagnostics_period_s"], self._publish_diagnostics,
                                                    callback_group=self.diagnostics_group)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---------------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            _params.check_values(_params.DRIVING_PARAMETERS, self.params, f"{self.get_name()} parameters")
            config = _params.driving_config(self.params)
            command_class = self.types(COMMAND_MSG_TYPES[config.command_type])
            perception_classes = {topic: self.types(name) for topic, name in PERCEPTION_TOPICS.items()}
            regions_file = self.params["regions_file"] or _params.default_config_path("regions.yaml")
            session = DrivingSession.from_regions_file(
                config, regions_file, bundle_dir=self.params["bundle_dir"] or None,
                initial_region=self.params["initial_region"] or None, name=self.get_name())
            session.start()
        except Exception as exc:  # every configuration problem ends here, named, instead of in a traceback
            self.configure_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.configure_error}")
            return FAILURE
        self.session = session
        self.configure_error = None
        self._command_pub = self.create_lifecycle_publisher(command_class, "control/command", COMMAND_QOS)
        self._perception_pubs = {topic: self.create_lifecycle_publisher(cls, topic, COMMAND_QOS)
                                 for topic, cls in perception_classes.items()}
        self.state_label = "inactive"
        self.get_logger().info(f"configured: serving {session.serving.bundle_id} on {session.backend_description}")
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        p, t = self.params, self.types
        if self.session is not None:
            # before any input can arrive (a latched active_region comes at once): the time inactive is not a
            # clock jump
            self.session.resume(self.now_s())
        try:
            if p["camera_transport"] == "compressed":
                self._subscribe(t("sensor_msgs/msg/CompressedImage"), "camera/image/compressed",
                                self._on_compressed, SENSOR_QOS)
            else:
                self._subscribe(t("sensor_msgs/msg/Image"), "camera/image", self._on_image, SENSOR_QOS)
            self._subscribe(t("sensor_msgs/msg/PointCloud2"), "lidar/points", self._on_lidar, SENSOR_QOS)
            self._subscribe(t("tf2_msgs/msg/TFMessage"), "/tf_static", self._on_tf_static, TF_STATIC_QOS)
            if p["speed_source"] == "speed":
                self._subscribe(t("std_msgs/msg/Float32"), "speed", self._on_speed, SENSOR_QOS)
            elif p["speed_source"] == "twist":
                self._subscribe(t("geometry_msgs/msg/TwistStamped"), "vehicle/twist", self._on_twist, SENSOR_QOS)
            else:
                self._subscribe(t("nav_msgs/msg/Odometry"), "odom", self._on_odometry, SENSOR_QOS)
            self._subscribe(t("std_msgs/msg/String"), "regionadapt/active_region", self._on_active_region,
                            LATCHED_QOS)
            self._subscribe(t("std_msgs/msg/String"), "regionadapt/next_region", self._on_next_region, COMMAND_QOS)
            self._stop_timer = self.create_timer(1.0 / p["stop_rate_hz"], self._on_stop_timer,
                                                 callback_group=self.stop_timer_group)
        except Exception as exc:  # rclpy would swallow it into an unexplained ERROR transition
            self.configure_error = f"activate failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.configure_error)
            self._stop_inputs()
            return FAILURE
        self.state_label = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self.state_label = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.state_label = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        self.state_label = "finalized"
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        self.state_label = "unconfigured"
        return SUCCESS

    def _subscribe(self, msg_type: Any, topic: str, callback: Any, qos: QoSProfile) -> None:
        self._subscriptions_made.append(self.create_subscription(msg_type, topic, callback, qos,
                                                                 callback_group=self.input_group))

    def _stop_inputs(self) -> None:
        for subscription in self._subscriptions_made:
            self.destroy_subscription(subscription)
        self._subscriptions_made = []
        if self._stop_timer is not None:
            self.destroy_timer(self._stop_timer)
            self._stop_timer = None

    def _release(self) -> None:
        """Destroy the output publishers and free the models (both weight slots, the loader thread). A frame or
        stop command in progress on another executor thread finishes first."""
        with self._command_lock:
            publishers = [self._command_pub, *self._perception_pubs.values()]
            self._command_pub, self._perception_pubs = None, {}
        session, self.session = self.session, None
        if session is not None:
            session.close()  # waits for the frame in progress
        for publisher in publishers:
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)

    def close(self) -> None:
        """Free everything before the process exits (main's finally)."""
        self._stop_inputs()
        self._release()

    # ---------------------------------------------------------------------------------------- callbacks
    def _on_image(self, msg: Any) -> None:
        self._frame(msg, compressed=False)

    def _on_compressed(self, msg: Any) -> None:
        self._frame(msg, compressed=True)

    def _frame(self, msg: Any, compressed: bool) -> None:
        session = self.session
        if session is None:
            return
        result = session.on_image(msg, self.now_s(), compressed)
        if result is None:
            return
        self._publish_command(session.command_message(self.types, result))
        perception = session.perception_messages(self.types, result)
        # Under the lock _release takes: on Jazzy up to rclpy 7.1.11 executor.shutdown() does not wait for
        # running callbacks (7.1.12 waits), so close() may destroy these publishers while this frame publishes.
        with self._command_lock:
            for topic, message in perception.items():
                publisher = self._perception_pubs.get(topic)
                if publisher is not None:
                    publisher.publish(message)

    def _publish_command(self, message: Any) -> None:
        with self._command_lock:
            publisher = self._command_pub
            if publisher is not None:
                publisher.publish(message)

    def _on_lidar(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_lidar(msg, self.now_s())

    def _on_tf_static(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_tf_static(msg, self.now_s())

    def _on_odometry(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_odometry(msg, self.now_s())

    def _on_twist(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_twist(msg, self.now_s())

    def _on_speed(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_speed(msg, self.now_s())

    def _on_active_region(self, msg: Any) -> None:
        if self.session is not None and self.session.on_active_region(msg, self.now_s()):
            self.get_logger().info(f"active region: {msg.data}")

    def _on_next_region(self, msg: Any) -> None:
        if self.session is not None:
            self.session.on_next_region(msg, self.now_s())

    def _on_stop_timer(self) -> None:
        session = self.session
        if session is None:
            return
        command = session.tick(self.now_s())
        if command is not None:
            self._publish_command(session.command_message(self.types, command))

    def _publish_diagnostics(self) -> None:
        now = self.now_s()
        if self.state_label == "active":
            lifecycle = (DiagnosticLevel.OK, "active")
        elif self.configure_error:
            lifecycle = (DiagnosticLevel.ERROR, f"{self.state_label}: configure failed: {self.configure_error}")
        else:
            lifecycle = (DiagnosticLevel.WARN, self.state_label)
        entries = [(f"{self.get_name()}: lifecycle", int(lifecycle[0]), lifecycle[1], "",
                    {"state": self.state_label})]
        if self.session is not None:
            entries += [status.as_entry()
                        for status in self.session.diagnostics(now, commanding=self.state_label == "active")]
        self._diagnostics_pub.publish(msgconv.build_diagnostic_array(self.types, now, entries))

    def _validate_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """rclpy's on-set callback: accept or refuse, no side effect (but on Humble, see the module docstring)."""
        for parameter in parameters:
            spec = _params.spec_of(_params.DRIVING_PARAMETERS, parameter.name)
            if spec is None:
                continue
            problem = spec.problem(parameter.value)
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
        if self._apply_when_validated:
            self._apply_parameters(parameters)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: list[Any]) -> None:
        """After a change was accepted: the run-time limits reach the session."""
        changes = {p.name: p.value for p in parameters if _params.spec_of(_params.DRIVING_PARAMETERS, p.name)}
        self.params.update(changes)
        session = self.session
        if session is not None:
            session.update_limits(**{k: v for k, v in changes.items() if k in RUNTIME_LIMITS})


def autostart(node: DrivingNode) -> bool:
    """configure + activate; False (the reason is logged and in diagnostics) when either fails."""
    return node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS


def main(args: list[str] | None = None) -> int:
    """Run the node on a multi-threaded executor until shut down; 1 when it cannot start (one fatal line naming
    the parameter or file, no traceback)."""
    rclpy.init(args=args)
    with core_logging_to(get_logger(_params.DRIVING_NODE)) as handler:
        return _run(handler)


def _run(handler: RosLogHandler) -> int:
    try:
        node = DrivingNode()
    except ConfigError as exc:  # a parameter rclpy refused at declaration (type, range), named
        get_logger(_params.DRIVING_NODE).fatal(f"could not start: {exc}")
        rclpy.try_shutdown()
        return 1
    handler.use(node.get_logger())  # the name rcl gave it: namespaced and remapped
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    try:
        executor.add_node(node)
        if node.params["autostart"] and not autostart(node):
            node.get_logger().fatal(f"could not start: {node.configure_error or 'activation failed'}")
            return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
