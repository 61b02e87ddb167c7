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


@pytest.fixture(scope="module")
def env():
    with ros_environment() as environment:
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
    assert all(math.isfinite(c.drive.speed) and c.drive.acceleration > -3.0 for c in commands)
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
    assert all(c.drive.acceleration == pytest.approx(-driver.session.config.limits.stop_decel) for c in stops)
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
    assert pipeline.level == 1 and "dropped 1" in pipeline.message
    assert statuses["driving_node: lifecycle"].level == 0


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
        "/camera/image", "/lidar/points", "/odom", "/regionadapt/active_region", "/regionadapt/next_region"}
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
    assert lifecycle.level == 2 and "configure failed" in lifecycle.message and str(missing) in lifecycle.message


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
        pytest.skip("main() with ROS arguments is exercised by the launch_testing tests on a ROS 2 machine")
    from regionadapt_ros.nodes import driving_node, region_manager_node

    broken = tmp_path / "broken.geojson"
    broken.write_text("{")
    assert region_manager_node.main(["--ros-args", "-p", f"geofence_file:={broken}"]) == 1
    assert driving_node.main(["--ros-args", "-p", f"regions_file:={tmp_path / 'none.yaml'}"]) == 1
    from rclpy.logging import get_logger

    assert any(str(broken) in message for _, message in get_logger("region_manager_node").records)


def test_main_spins_until_interrupted_and_shuts_down(env):
    if env.real:
        pytest.skip("a real rclpy.spin blocks until Ctrl-C")
    import rclpy

    from regionadapt_ros.nodes import region_manager_node

    assert region_manager_node.main(["--ros-args", "-p", f"geofence_file:={GEOFENCES}"]) == 0
    assert not rclpy.ok()
