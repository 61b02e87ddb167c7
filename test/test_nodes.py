"""The two rclpy nodes end to end, with real message classes, real bundles and real geofences.

Where rclpy is not importable (no ROS 2 here) the nodes run on the strict rclpy double under test/rclpy_double,
which implements only the rclpy API the nodes use and raises on anything else; where a real rclpy is importable
(a sourced ROS 2 workspace) the same tests run against it instead and the double is not installed (see
rclpy_double/harness.py). Time is ROS sim time driven by the test.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from rclpy_double.harness import ros_environment
from test_driving_session_support import camera_image, lidar_cloud, write_region_bundles

from regionadapt_ros.core import msgconv
from regionadapt_ros.core.geo_track import load_track_csv

REPO = Path(__file__).resolve().parents[1]
GEOFENCES = REPO / "config" / "geofences.geojson"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def env(request):
    """The nodes on the message definitions of each distribution (the double's); a real rclpy serves only the
    sourced one."""
    with ros_environment(request.param) as environment:
        if environment.real and environment.distro != request.param:
            pytest.skip(f"a real rclpy of ROS_DISTRO={environment.distro!r} is sourced, not {request.param}")
        yield environment


@pytest.fixture(scope="module")
def regions_file(tmp_path_factory) -> Path:
    return write_region_bundles(tmp_path_factory.mktemp("node_regions"), ("base", "highway", "urban_day"))


@pytest.fixture
def h(env):
    harness = env.harness()
    yield harness
    harness.close()


@pytest.fixture
def qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    class Profiles:
        sensor = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        policies = (ReliabilityPolicy, DurabilityPolicy, HistoryPolicy)

    return Profiles


def driving_node(h, regions_file, **parameters):
    from regionadapt_ros.nodes import driving_node as module

    node = h.make(module.DrivingNode, regions_file=str(regions_file), **parameters)
    if parameters.get("autostart", True):
        assert module.autostart(node), node.configure_error or getattr(node, "transition_errors", None)
    h.spin()
    return node


def region_manager(h, **parameters):
    from regionadapt_ros.nodes.region_manager_node import RegionManagerNode

    defaults = {"geofence_file": str(GEOFENCES), "min_dwell_s": 1.0, "confirm_s": 0.3, "use_odometry": False}
    return h.make(RegionManagerNode, **{**defaults, **parameters})


# A real rclpy node also has /clock (sim time), /rosout and /parameter_events entities; ours are the rest.
INFRASTRUCTURE = {"/clock", "/rosout", "/parameter_events"}


def topics_of(entities) -> set[str]:
    return {e.topic_name for e in entities} - INFRASTRUCTURE


def level_of(status) -> int:
    """DiagnosticStatus.level is a ``byte`` field: rclpy holds it as ``bytes`` of length 1."""
    assert isinstance(status.level, bytes) and len(status.level) == 1, status.level
    return status.level[0]


def by_topic(entities, topic):
    found = [e for e in entities if e.topic_name == topic]
    assert len(found) == 1, f"{len(found)} entities on {topic}"
    return found[0]


@pytest.fixture(scope="module")
def lakeshore_highway(tmp_path_factory) -> Path:
    """The real Lakeshore neighbourhood as the only fence (region highway); outside it: base."""
    from realdata import write_neighbourhood_fences

    return write_neighbourhood_fences(tmp_path_factory.mktemp("lakeshore") / "lakeshore.geojson",
                                      {"Lakeshore": ("highway", 20)})


def test_a_gnss_fence_crossing_swaps_the_driving_node_without_missing_a_frame(h, regions_file, qos, sf_track_csv,
                                                                              lakeshore_highway):
    # The real drive enters Lakeshore between fix 78 and 79 and runs along its edge, 1 m inside by fix ~94.
    track = load_track_csv(sf_track_csv)[40:120]
    h.set_time(track[0].stamp_s)
    manager = region_manager(h, geofence_file=str(lakeshore_highway), enter_margin_m=1.0)
    driver = driving_node(h, regions_file)
    fix_pub = h.publisher("gnss/fix", "sensor_msgs/msg/NavSatFix", qos.sensor)
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    lidar_pub = h.publisher("lidar/points", "sensor_msgs/msg/PointCloud2", qos.sensor)
    odom_pub = h.publisher("odom", "nav_msgs/msg/Odometry", qos.sensor)
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    hints = h.recorder("regionadapt/next_region", "std_msgs/msg/String", qos.reliable)
    regions_served, image_stamps = [], []
    for k, f in enumerate(track):
        h.set_time(f.stamp_s)
        h.publish(fix_pub, msgconv.build_navsatfix(h.types, f.lat, f.lon, 30.0, f.stamp_s, h_std_m=1.5))
        h.publish(lidar_pub, lidar_cloud(h.types, f.stamp_s, seed=k))
        h.publish(odom_pub, msgconv.build_odometry(h.types, 9.0, f.stamp_s))
        h.publish(image_pub, camera_image(h.types, f.stamp_s, seed=k))
        image_stamps.append(f.stamp_s)
        h.spin(until=lambda: len(commands) == len(image_stamps))
        regions_served.append(driver.session.last_result.region)
        if driver.session.swap.staged is not None or driver.session.swap.status()["state"].startswith("loading"):
            driver.session.swap.wait_idle(60)  # keep the test deterministic; serving never waited meanwhile
    # One command per camera frame, stamped with that frame's stamp, none a stop: no gap through the swap.
    assert len(commands) == len(image_stamps)
    assert [msgconv.stamp_to_s(c.header) for c in commands] == pytest.approx(image_stamps, abs=1e-6)
    assert all(math.isfinite(c.drive.speed) and 0.0 < c.drive.acceleration < 3.0 for c in commands)
    assert regions_served[0] == "base" and regions_served[-1] == "highway"
    switch = regions_served.index("highway")
    assert set(regions_served[switch:]) == {"highway"}  # switched once, between two frames
    assert [m.data for m in hints][:1] == ["highway"]  # the prefetch hint came before the switch
    record = driver.session.swap.history[-1]
    assert record.region == "highway" and record.prefetched
    # A late joiner still gets the active region: the topic is latched.
    late = h.recorder("regionadapt/active_region", "std_msgs/msg/String", qos.latched)
    h.spin(until=lambda: len(late) == 1)
    assert late[0].data == "highway" and manager.session.active_region == "highway"


def test_a_stale_camera_gives_stop_commands_at_the_fixed_rate(h, regions_file, qos):
    h.set_time(T0)
    driver = driving_node(h, regions_file, stop_rate_hz=20.0, camera_timeout_s=0.5)
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    h.publish(image_pub, camera_image(h.types, T0))
    h.spin(until=lambda: len(commands) == 1)
    h.advance(1.5, step=0.01)
    stops = commands[1:]
    stamps = [msgconv.stamp_to_s(c.header) for c in stops]
    assert stamps and stamps[0] > T0 + 0.5 and stamps[-1] <= T0 + 1.5 + 1e-6
    assert len(stops) == pytest.approx(20, abs=2)  # 20 Hz for the second after the timeout
    assert all(b - a == pytest.approx(0.05, abs=0.011) for a, b in itertools.pairwise(stamps))
    limits = driver.session.config.limits
    # ackermann_msgs: acceleration is a magnitude, the direction comes from the speed (which only decreases).
    assert all(c.drive.acceleration == pytest.approx(limits.stop_decel) for c in stops)
    assert all(b.drive.speed <= a.drive.speed for a, b in itertools.pairwise(stops))
    assert all(c.drive.jerk == pytest.approx(limits.max_jerk) for c in stops)
    h.publish(image_pub, camera_image(h.types, h.now))
    count = len(commands)
    h.advance(0.3, step=0.01)
    assert len(commands) == count  # frames are back: no more stops


def test_the_carla_configuration_publishes_reliable_control_stamped_with_the_image(h, regions_file, qos):
    reliability = qos.policies[0]
    h.set_time(T0)
    driver = driving_node(h, regions_file, command_type="carla", speed_source="speed")
    publisher = by_topic(driver.publishers, "/control/command")
    assert publisher.qos_profile.reliability == reliability.RELIABLE
    assert publisher.msg_type is h.types("carla_msgs/msg/CarlaEgoVehicleControl")
    assert topics_of(driver.subscriptions) & {"/odom", "/speed"} == {"/speed"}
    controls = h.recorder("control/command", "carla_msgs/msg/CarlaEgoVehicleControl", qos.reliable)
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    speed_pub = h.publisher("speed", "std_msgs/msg/Float32", qos.sensor)
    for k in range(3):
        stamp = T0 + 0.05 * k
        h.set_time(stamp + 0.02)  # the frame arrives after it was taken
        h.publish(speed_pub, msgconv.build_float32(h.types, 6.0))
        h.publish(image_pub, camera_image(h.types, stamp, encoding="bgra8", width=320, height=240, seed=k))
    h.spin(until=lambda: len(controls) == 3)
    assert [msgconv.stamp_to_s(c.header) for c in controls] == pytest.approx([T0, T0 + 0.05, T0 + 0.1], abs=1e-6)
    assert all(0.0 <= c.throttle <= 1.0 and 0.0 <= c.brake <= 1.0 and -1.0 <= c.steer <= 1.0 for c in controls)
    assert driver.session.speed_watchdog.age(h.now) is not None


def test_speed_source_twist_reads_the_vehicle_interfaces_twist(h, regions_file, qos):
    h.set_time(T0)
    driver = driving_node(h, regions_file, speed_source="twist")
    subscription = by_topic(driver.subscriptions, "/vehicle/twist")
    assert subscription.msg_type is h.types("geometry_msgs/msg/TwistStamped")
    assert subscription.qos_profile.reliability == qos.sensor.reliability
    assert not topics_of(driver.subscriptions) & {"/odom", "/speed"}
    twist_pub = h.publisher("vehicle/twist", "geometry_msgs/msg/TwistStamped", qos.sensor)
    h.publish(twist_pub, msgconv.build_twist_stamped(h.types, 8.25, 0.1, T0))
    h.spin(until=lambda: driver.session.speed_watchdog.age(h.now) is not None)
    assert driver.session.diagnostics(h.now)[1].values["speed_mps"] == "8.25"


def test_bad_messages_are_counted_in_diagnostics_and_the_node_keeps_going(h, regions_file, qos):
    h.set_time(T0)
    driving_node(h, regions_file, diagnostics_period_s=0.5)
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    diagnostics = h.recorder("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", qos.reliable)
    good = camera_image(h.types, T0)
    bad = type(good)(header=good.header, height=good.height, width=good.width, encoding="yuv9000",
                     is_bigendian=0, step=good.step, data=good.data)
    h.publish(image_pub, bad)
    h.advance(0.05)
    h.publish(image_pub, camera_image(h.types, h.now))
    h.spin(until=lambda: len(commands) == 1)
    h.advance(0.5, step=0.05)
    h.spin(until=lambda: len(diagnostics) >= 1)
    statuses = {s.name: s for s in diagnostics[-1].status}
    pipeline = statuses["driving_node: pipeline"]
    values = {kv.key: kv.value for kv in pipeline.values}
    assert values["dropped_frames"] == "1" and values["warnings.bad_image"] == "1" and values["frames"] == "1"
    assert level_of(pipeline) == 1 and "dropped 1" in pipeline.message
    assert level_of(statuses["driving_node: lifecycle"]) == 0


def test_the_driving_node_publishes_the_collision_risk_and_its_diagnostic(h, regions_file, qos):
    h.set_time(T0)
    driver = driving_node(h, regions_file, diagnostics_period_s=0.5)
    assert driver.params["emergency_brake"] is True and driver.session.guard.enabled
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    lidar_pub = h.publisher("lidar/points", "sensor_msgs/msg/PointCloud2", qos.sensor)
    risk = h.recorder("perception/risk", "geometry_msgs/msg/Vector3Stamped", qos.reliable)
    diagnostics = h.recorder("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", qos.reliable)
    stamps = []
    for k in range(6):
        h.publish(lidar_pub, lidar_cloud(h.types, h.now, seed=k))
        h.publish(image_pub, camera_image(h.types, h.now, seed=k))
        stamps.append(h.now)
        h.spin(until=lambda: len(risk) == len(stamps))
        h.advance(0.1)
    # one message per frame, stamped with the frame's image, level as the session estimated it
    assert [msgconv.stamp_to_s(m.header) for m in risk] == pytest.approx(stamps, abs=1e-6)
    assert risk[-1].vector.z == float(int(driver.session.last_result.risk.level))
    h.spin(until=lambda: any(s.name == "driving_node: collision risk" for d in diagnostics for s in d.status))
    status = next(s for d in diagnostics for s in d.status if s.name == "driving_node: collision risk")
    assert {kv.key for kv in status.values} >= {"level", "ttc_s", "guard_enabled", "overrides"}


def test_the_emergency_brake_parameter_switches_the_guard_off(h, regions_file):
    h.set_time(T0)
    driver = driving_node(h, regions_file, emergency_brake=False, **{"risk.ttc_brake_s": 1.5})
    assert not driver.session.guard.enabled and driver.session.risk.config.ttc_brake_s == 1.5


def test_the_tensorrt_parameters_say_which_engines_the_session_looks_up(h, regions_file, tmp_path):
    h.set_time(T0)
    driver = driving_node(h, regions_file, tensorrt_precision="fp16", tensorrt_refit=False, tensorrt_dla_core=1,
                          tensorrt_cache_dir=str(tmp_path / "engines"))
    assert driver.session.config.tensorrt_options() == {
        "precision": "fp16", "refittable": False, "dla_core": 1, "cache": str(tmp_path / "engines")}
    default = driving_node(h, regions_file, node_name="second").session.config.tensorrt_options()
    assert default == {"precision": "fp16", "refittable": True, "dla_core": None, "cache": None}
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.driving_session import DrivingConfig
    from regionadapt_ros.nodes import driving_node as module

    with pytest.raises(ConfigError, match="tensorrt_precision"):
        DrivingConfig(tensorrt_precision="int4")
    with pytest.raises(ConfigError, match="DLA runs fp16 or int8 only"):
        DrivingConfig(tensorrt_precision="fp32", tensorrt_dla_core=0)
    with pytest.raises(Exception, match="tensorrt_dla_core"):  # outside the declared range
        h.make(module.DrivingNode, node_name="third", regions_file=str(regions_file), tensorrt_dla_core=9)


def test_qos_of_sensor_inputs_and_of_the_latched_region_topic(h, regions_file, qos):
    reliability, durability, history = qos.policies
    h.set_time(T0)
    driver = driving_node(h, regions_file)
    manager = region_manager(h)
    for topic in ("/camera/image", "/lidar/points", "/odom"):
        profile = by_topic(driver.subscriptions, topic).qos_profile
        assert (profile.reliability, profile.history, profile.depth) == (reliability.BEST_EFFORT,
                                                                         history.KEEP_LAST, 1)
    for entities in (driver.subscriptions, manager.publishers):
        profile = by_topic(entities, "/regionadapt/active_region").qos_profile
        assert (profile.reliability, profile.durability, profile.depth) == (reliability.RELIABLE,
                                                                            durability.TRANSIENT_LOCAL, 1)
    assert by_topic(manager.subscriptions, "/gnss/fix").qos_profile.reliability == reliability.BEST_EFFORT


def test_compressed_transport_subscribes_to_the_compressed_topic(h, regions_file, qos):
    h.set_time(T0)
    driver = driving_node(h, regions_file, camera_transport="compressed")
    topics = topics_of(driver.subscriptions)
    assert "/camera/image/compressed" in topics and "/camera/image" not in topics
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    pub = h.publisher("camera/image/compressed", "sensor_msgs/msg/CompressedImage", qos.sensor)
    rgb = msgconv.image_to_rgb8(camera_image(h.types, T0)).copy()
    h.publish(pub, msgconv.build_compressed_image(h.types, rgb, "jpeg", T0))
    h.spin(until=lambda: len(commands) == 1)


def test_deactivate_and_cleanup_release_inputs_outputs_and_models(h, regions_file, qos):
    from regionadapt_ros.nodes.driving_node import SUCCESS

    h.set_time(T0)
    driver = driving_node(h, regions_file)
    assert topics_of(driver.subscriptions) == {
        "/camera/image", "/lidar/points", "/odom", "/tf_static", "/regionadapt/active_region",
        "/regionadapt/next_region"}
    timers = len(list(driver.timers))  # diagnostics + stale-camera stop
    session, swap = driver.session, driver.session.swap
    assert swap.resident_sets() == 1
    assert driver.trigger_deactivate() == SUCCESS
    assert topics_of(driver.subscriptions) == set() and len(list(driver.timers)) == timers - 1
    assert driver.session is session  # models stay loaded while inactive
    assert driver.trigger_cleanup() == SUCCESS
    assert driver.session is None and swap.serving is None and swap.resident_sets() == 0
    assert topics_of(driver.publishers) == {"/diagnostics"}
    # And it can be brought up again.
    assert driver.trigger_configure() == SUCCESS and driver.trigger_activate() == SUCCESS
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    h.publish(h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor), camera_image(h.types, T0))
    h.spin(until=lambda: len(commands) == 1)


def test_a_configure_failure_names_the_file_in_diagnostics(h, tmp_path, qos):
    from regionadapt_ros.nodes import driving_node as module

    h.set_time(T0)
    missing = tmp_path / "regions.yaml"
    node = h.make(module.DrivingNode, regions_file=str(missing))
    diagnostics = h.recorder("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", qos.reliable)
    assert not module.autostart(node)
    assert node.session is None and str(missing) in node.configure_error
    h.advance(1.0, step=0.1)
    h.spin(until=lambda: len(diagnostics) >= 1)
    lifecycle = diagnostics[-1].status[0]
    assert level_of(lifecycle) == 2 and "configure failed" in lifecycle.message and str(missing) in lifecycle.message


def test_a_bad_parameter_value_fails_configure_or_declaration(h, regions_file):
    from regionadapt_ros.nodes import driving_node as module

    h.set_time(T0)
    node = h.make(module.DrivingNode, regions_file=str(regions_file), command_type="tank")
    assert not module.autostart(node)
    assert "command_type" in node.configure_error and "'tank'" in node.configure_error
    with pytest.raises(Exception, match="lidar_max_age_s"):  # rclpy refuses a value outside the declared range
        h.make(module.DrivingNode, node_name="second", regions_file=str(regions_file), lidar_max_age_s=50.0)


def test_runtime_parameters_reach_the_session_and_read_only_ones_are_refused(h, regions_file):
    from rclpy.parameter import Parameter

    h.set_time(T0)
    driver = driving_node(h, regions_file)
    results = driver.set_parameters([Parameter("camera_timeout_s", value=1.25)])
    assert results[0].successful and driver.session.config.camera_timeout_s == 1.25
    assert driver.session.camera_watchdog.timeout_s == 1.25
    refused = driver.set_parameters([Parameter("command_type", value="twist")])
    assert not refused[0].successful and "read-only" in refused[0].reason


def test_region_override_parameter_switches_and_unknown_regions_are_refused(h, qos):
    from rclpy.parameter import Parameter

    h.set_time(T0)
    manager = region_manager(h)
    latched = h.recorder("regionadapt/active_region", "std_msgs/msg/String", qos.latched)
    result = manager.set_parameters([Parameter("region_override", value="mountain")])[0]
    assert result.successful
    h.spin(until=lambda: [m.data for m in latched] == ["mountain"])
    refused = manager.set_parameters([Parameter("region_override", value="moon")])[0]
    assert not refused.successful and "unknown region 'moon'" in refused.reason
    assert manager.get_parameter("region_override").value == "mountain"
    read_only = manager.set_parameters([Parameter("enter_margin_m", value=1.0)])[0]
    assert not read_only.successful


def test_a_region_manager_started_with_an_override_announces_it_at_once(h, qos):
    h.set_time(T0)
    region_manager(h, region_override="left_hand")
    latched = h.recorder("regionadapt/active_region", "std_msgs/msg/String", qos.latched)
    h.spin(until=lambda: [m.data for m in latched] == ["left_hand"])


def test_main_reports_a_bad_configuration_and_returns_1(env, tmp_path):
    if env.real:
        pytest.skip("main() with ROS arguments runs as a process in test_nodes_launch_testing.py on a ROS 2 machine")
    from regionadapt_ros.nodes import driving_node, region_manager_node

    broken = tmp_path / "broken.geojson"
    broken.write_text("{")
    assert region_manager_node.main(["--ros-args", "-p", f"geofence_file:={broken}"]) == 1
    assert driving_node.main(["--ros-args", "-p", f"regions_file:={tmp_path / 'none.yaml'}"]) == 1
    from rclpy.logging import get_logger

    assert any(str(broken) in message for _, message in get_logger("region_manager_node").records)


def test_the_cores_log_records_reach_the_nodes_ros_logger_while_main_runs(env, monkeypatch):
    """The ROS-free core logs with Python logging: in main() its records go to rcutils under the node's name
    (console, /rosout), by severity, and nowhere else; afterwards the core logger is as it was."""
    if env.real:
        pytest.skip("main() with ROS arguments runs as a process in test_nodes_launch_testing.py on a ROS 2 machine")
    import logging

    from rclpy.logging import get_logger

    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.nodes import region_manager_node

    core = logging.getLogger("regionadapt_ros")
    before = (core.level, core.propagate, list(core.handlers))
    seen_by_python: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen_by_python.append(record)

    catch = Catch()
    logging.getLogger().addHandler(catch)

    def starts_then_fails(*args, **kwargs):
        logging.getLogger("regionadapt_ros.swap").warning("loading region %r failed", "highway")
        logging.getLogger("regionadapt_ros.swap").info("retrying")
        logging.getLogger("regionadapt_ros.swap").debug("not at the default level")
        logging.getLogger("regionadapt_ros").critical("gone")
        raise ConfigError("geofence_file", "unreadable")

    monkeypatch.setattr(region_manager_node, "RegionManagerNode", starts_then_fails)
    ros_logger = get_logger("region_manager_node")
    ros_logger.records.clear()
    try:
        assert region_manager_node.main([]) == 1
    finally:
        logging.getLogger().removeHandler(catch)
    assert ros_logger.records[:3] == [("WARNING", "[regionadapt_ros.swap] loading region 'highway' failed"),
                                      ("INFO", "[regionadapt_ros.swap] retrying"),
                                      ("FATAL", "[regionadapt_ros] gone")]
    assert ros_logger.records[3][0] == "FATAL" and "could not start" in ros_logger.records[3][1]
    # not also printed bare by Python (the double's own forwarding logs under rclpy_double.*)
    assert not [r for r in seen_by_python if r.name.startswith("regionadapt_ros")]
    assert (core.level, core.propagate, list(core.handlers)) == before


def test_under_a_namespace_the_cores_records_reach_the_nodes_own_logger(env, monkeypatch):
    """rcl names a node's logger "<namespace>.<name>" and /rosout publishes only for that name: once the node
    exists, main() must send the core's records there, not to a logger fetched by the bare node name."""
    if env.real:
        pytest.skip("main() with ROS arguments runs as a process in test_nodes_launch_testing.py on a ROS 2 machine")
    import logging

    from rclpy.logging import get_logger

    from regionadapt_ros.nodes import region_manager_node

    def spin_and_log(node):
        logging.getLogger("regionadapt_ros.swap").warning("after start")

    monkeypatch.setattr(region_manager_node.rclpy, "spin", spin_and_log)
    namespaced, bare = get_logger("ego.region_manager_node"), get_logger("region_manager_node")
    namespaced.records.clear()
    bare.records.clear()
    assert region_manager_node.main(["--ros-args", "-r", "__ns:=/ego", "-p", f"geofence_file:={GEOFENCES}"]) == 0
    assert ("WARNING", "[regionadapt_ros.swap] after start") in namespaced.records
    assert not [r for r in bare.records if "after start" in r[1]]


def test_main_spins_until_interrupted_and_shuts_down(env):
    if env.real:
        pytest.skip("a real rclpy.spin blocks until Ctrl-C")
    import rclpy

    from regionadapt_ros.nodes import region_manager_node

    assert region_manager_node.main(["--ros-args", "-p", f"geofence_file:={GEOFENCES}"]) == 0
    assert not rclpy.ok()


@pytest.mark.parametrize("accept", [False, True])
def test_carla_bridge_fixes_and_accept_unknown_status(h, env, qos, accept, sf_track_csv, lakeshore_highway):
    """Fixes as the CARLA bridge sends them (status left at the message default: STATUS_UNKNOWN on Jazzy): held
    with a WARN naming accept_unknown_status unless it is set; on Humble the default is STATUS_FIX."""
    track = load_track_csv(sf_track_csv)[40:120]
    h.set_time(track[0].stamp_s)
    region_manager(h, geofence_file=str(lakeshore_highway), enter_margin_m=1.0, accept_unknown_status=accept,
                   diagnostics_period_s=0.5)
    fix_pub = h.publisher("gnss/fix", "sensor_msgs/msg/NavSatFix", qos.sensor)
    regions = h.recorder("regionadapt/active_region", "std_msgs/msg/String", qos.latched)
    diagnostics = h.recorder("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", qos.reliable)
    fix_class = h.types("sensor_msgs/msg/NavSatFix")
    for f in track:
        h.set_time(f.stamp_s)
        msg = fix_class()
        msg.header = msgconv.build_header(h.types, f.stamp_s, "hero/gnss")
        msg.latitude, msg.longitude, msg.altitude = f.lat, f.lon, 2.0
        h.publish(fix_pub, msg)
    held = env.distro == "jazzy" and not accept
    status = next(s for s in diagnostics[-1].status if s.name == "region_manager_node: region")
    if held:
        assert regions == [] and level_of(status) == 1 and "accept_unknown_status" in status.message
    else:
        assert [m.data for m in regions][-1] == "highway" and level_of(status) == 0


def test_a_slow_frame_does_not_delay_the_stop_commands(h, env, regions_file, qos):
    """The node as main() runs it (MultiThreadedExecutor, callback groups): while one camera frame is held in
    the pipeline (an image that takes seconds to decode, a stuck backend), the stale-camera timer keeps
    publishing stop commands at its rate; the held frame, when it ends, is not published after them."""
    if env.real:
        pytest.skip("holds a callback of the double's executor on purpose")
    import threading

    from regionadapt_ros.nodes import driving_node as module

    h.set_time(T0)
    driver = h.make_multi_threaded(module.DrivingNode, module.EXECUTOR_THREADS, regions_file=str(regions_file),
                                   stop_rate_hz=20.0, camera_timeout_s=0.5)
    assert module.autostart(driver)
    image_pub = h.publisher("camera/image", "sensor_msgs/msg/Image", qos.sensor)
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    h.publish(image_pub, camera_image(h.types, T0))
    assert len(commands) == 1 and not driver.session.last_result.command.stop

    pipeline = driver.session.pipeline
    process, entered, release = pipeline.process, threading.Event(), threading.Event()

    def held_process(inputs):
        entered.set()
        assert release.wait(60), "the test never released the frame"
        return process(inputs)

    pipeline.process = held_process
    try:
        h.advance(0.05)
        image_pub.publish(camera_image(h.types, h.now))
        h.dispatch()
        assert entered.wait(60)  # the frame runs on an executor thread and is held there
        h.advance(1.5, step=0.01)
    finally:
        release.set()
    stops = commands[1:]
    stamps = [msgconv.stamp_to_s(c.header) for c in stops]
    # Stale 0.5 s after the last frame that produced a command (T0): 20 Hz from then to the end.
    assert len(stops) == pytest.approx(20, abs=2) and T0 + 0.5 < stamps[0] <= T0 + 0.56
    assert all(b - a == pytest.approx(0.05, abs=0.011) for a, b in itertools.pairwise(stamps))
    assert all(c.drive.speed == 0.0 or c.drive.acceleration > 0 for c in stops)
    # The held frame ends now; its command would be older than the stops already sent: not published.
    h.settle()
    assert driver.session.warnings.count("late_frame") == 1
    assert all(msgconv.stamp_to_s(c.header) >= stamps[0] for c in commands[1:])
    # Frames that arrive now are served again.
    pipeline.process = process
    count = len(commands)
    h.publish(image_pub, camera_image(h.types, h.now))
    assert len(commands) == count + 1 and not driver.session.last_result.command.stop


@pytest.mark.parametrize("node, arguments, parameter", [
    ("driving_node", ["-p", "lidar_max_age_s:=50.0"], "lidar_max_age_s"),  # outside the declared range
    ("driving_node", ["-p", "camera_timeout_s:=1"], "camera_timeout_s"),  # an integer for a double
    ("region_manager_node", ["-p", "enter_margin_m:=wide"], "enter_margin_m"),
    ("region_manager_node", ["-p", "accept_unknown_status:=1"], "accept_unknown_status"),
    ("driving_node", ["--params-file", "{bad_yaml}"], "max_accel"),  # from a YAML file, as launch passes it
])
def test_main_ends_a_parameter_rclpy_refuses_with_one_fatal_line(env, tmp_path, node, arguments, parameter):
    if env.real:
        pytest.skip("main() with ROS arguments runs as a process in test_nodes_launch_testing.py on a ROS 2 machine")
    import importlib

    import rclpy
    from rclpy.logging import get_logger

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("/**/driving_node:\n  ros__parameters:\n    vehicle:\n      max_accel: 50.0\n")
    arguments = [a.format(bad_yaml=bad_yaml) for a in arguments]
    module = importlib.import_module(f"regionadapt_ros.nodes.{node}")
    logger = get_logger(node)
    before = len(logger.records)
    assert module.main(["--ros-args", "-p", f"geofence_file:={GEOFENCES}", *arguments]) == 1
    records = logger.records[before:]
    assert [severity for severity, _ in records] == ["FATAL"]
    assert parameter in records[0][1] and "Traceback" not in records[0][1]
    assert not rclpy.ok()


def test_on_set_parameter_callbacks_only_validate_on_jazzy(h, env, regions_file, qos):
    """rclpy documents the on-set callback as validation; the effect belongs in the post-set callback, which
    Jazzy has (Humble has none, and the nodes apply there at the end of validation)."""
    from rclpy.parameter import Parameter

    if env.real or env.distro != "jazzy":
        pytest.skip("the double's Jazzy Node lets the test call the on-set callbacks alone")
    h.set_time(T0)
    manager = region_manager(h)
    driver = driving_node(h, regions_file)
    latched = h.recorder("regionadapt/active_region", "std_msgs/msg/String", qos.latched)
    for node, parameter in ((manager, Parameter("region_override", value="mountain")),
                            (driver, Parameter("camera_timeout_s", value=1.25))):
        for validate in node._parameters_callbacks:  # what rclpy calls before it accepts a change
            assert validate([parameter]).successful
    h.spin()
    assert latched == [] and manager.session.override is None
    assert driver.session.config.camera_timeout_s == 0.5
    assert manager.set_parameters([Parameter("region_override", value="mountain")])[0].successful
    assert driver.set_parameters([Parameter("camera_timeout_s", value=1.25)])[0].successful
    h.spin(until=lambda: [m.data for m in latched] == ["mountain"])
    assert driver.session.config.camera_timeout_s == 1.25


def test_tf_static_and_the_lidar_extrinsic_reach_the_session(h, regions_file, qos):
    import numpy as np

    from regionadapt_ros.nodes import driving_node as module

    h.set_time(T0)
    driver = driving_node(h, regions_file)
    ts = h.types("geometry_msgs/msg/TransformStamped")(
        header=msgconv.build_header(h.types, T0, "base_link"), child_frame_id="LIDAR_TOP",
        transform=h.types("geometry_msgs/msg/Transform")(
            translation=msgconv.build_vector3(h.types, 0.0, 0.0, 0.0),
            rotation=h.types("geometry_msgs/msg/Quaternion")(x=0.0, y=0.0, z=-math.sqrt(0.5), w=math.sqrt(0.5))))
    h.publish(h.publisher("/tf_static", "tf2_msgs/msg/TFMessage", qos.latched),
              h.types("tf2_msgs/msg/TFMessage")(transforms=[ts]))
    h.spin(until=lambda: "LIDAR_TOP" in driver.session.cloud_frames.tf.frames)
    cloud = msgconv.build_pointcloud2(h.types, np.array([[0.0, 20.0, 0.0, 1.0]], np.float32),
                                      ("x", "y", "z", "intensity"), T0, "LIDAR_TOP")
    h.publish(h.publisher("lidar/points", "sensor_msgs/msg/PointCloud2", qos.sensor), cloud)
    h.spin(until=lambda: len(driver.session._lidar) == 1)
    assert driver.session._lidar[0][1][0, :3].tolist() == pytest.approx([20.0, 0.0, 0.0], abs=1e-5)

    node = h.make(module.DrivingNode, node_name="third", regions_file=str(regions_file), lidar_extrinsic="1 2 x")
    assert not module.autostart(node) and "lidar_extrinsic" in node.configure_error


def test_close_does_not_destroy_a_publisher_a_frame_is_publishing_on(h, regions_file):
    """On Jazzy executor.shutdown() returns while callbacks run, so main's close() can meet a frame still
    publishing its perception outputs: the publishers must outlive that publish."""
    import threading

    h.set_time(T0)
    driver = driving_node(h, regions_file)
    publisher = next(iter(driver._perception_pubs.values()))
    order: list[str] = []
    publishing, destroyed, release = threading.Event(), threading.Event(), threading.Event()
    original_publish, original_destroy = publisher.publish, driver.destroy_lifecycle_publisher

    def slow_publish(message):
        publishing.set()
        release.wait(60)
        original_publish(message)
        order.append("published")

    def recorded_destroy(pub):
        order.append("destroyed")
        destroyed.set()
        return original_destroy(pub)

    publisher.publish = slow_publish
    driver.destroy_lifecycle_publisher = recorded_destroy
    frame = threading.Thread(target=driver._on_image, args=(camera_image(h.types, T0),))
    frame.start()
    assert publishing.wait(60)
    closer = threading.Thread(target=driver.close)
    closer.start()
    destroyed.wait(2.0)  # returns at once if close() does not wait for the publish
    release.set()
    frame.join(60)
    closer.join(60)
    assert order[0] == "published" and "destroyed" in order, order


def test_reactivating_after_a_long_pause_is_not_a_clock_jump_and_stops_at_once(h, regions_file, qos):
    """While inactive nothing observes the clock: the pause must not count as a jump, and a camera that never
    sent a frame must not look fresh after it (the stop timer commands stops on its first tick)."""
    from regionadapt_ros.nodes.driving_node import SUCCESS

    h.set_time(T0)
    driver = driving_node(h, regions_file)  # the camera never publishes
    h.advance(1.0, step=0.05)
    assert driver.trigger_deactivate() == SUCCESS
    commands = h.recorder("control/command", "ackermann_msgs/msg/AckermannDriveStamped", qos.reliable)
    h.advance(6.0, step=0.05)  # longer than clock_jump_s
    assert commands == []  # inactive: nothing is commanded
    assert driver.trigger_activate() == SUCCESS
    h.advance(0.3, step=0.05)
    assert driver.session.clock_jumps == 0
    assert len(commands) >= 5 and all(c.drive.speed == 0.0 for c in commands)
