"""Next to the CARLA ROS bridge: both nodes on the bridge's topics, in simulation time.

    ros2 launch regionadapt_ros carla.launch.py [role_name:=hero] [backend:=torch] [region_override:=highway]

Inputs: /carla/<role_name>/rgb_front/image (bgra8), /carla/<role_name>/lidar, /carla/<role_name>/gnss,
/carla/<role_name>/speedometer (std_msgs/Float32). Output: carla_msgs/CarlaEgoVehicleControl on
/carla/<role_name>/vehicle_control_cmd (reliable, header stamp = the camera frame's, as the leaderboard
requires). role_name is "ego_vehicle" for the bridge's examples and "hero" on the CARLA leaderboard; it is also
the frame of stamped outputs (the bridge names the ego vehicle's TF frame after its role name). The bridge never
sets NavSatStatus, so on Jazzy every fix is STATUS_UNKNOWN (-2): the region manager accepts those fixes
(accept_unknown_status, also in carla.yaml).
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "regionadapt_ros"


def _config(name: str) -> PathJoinSubstitution:
    return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", name])


def _text(name: str) -> ParameterValue:
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _bridge(suffix: str) -> list:
    return ["/carla/", LaunchConfiguration("role_name"), suffix]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("role_name", default_value="ego_vehicle",
                              description="the ego vehicle's role name (hero on the leaderboard)"),
        DeclareLaunchArgument("geofence_file", default_value=_config("geofences.geojson"),
                              description="GeoJSON geofences in the CARLA map's geo-reference"),
        DeclareLaunchArgument("regions_file", default_value=_config("regions.yaml"),
                              description="region -> bundle mapping and traffic rules"),
        DeclareLaunchArgument("bundle_dir", default_value="",
                              description="directory of the region bundles; empty: as regions_file says"),
        DeclareLaunchArgument("backend", default_value="auto", choices=["onnxruntime", "torch", "tensorrt", "auto"],
                              description="inference backend"),
        DeclareLaunchArgument("region_override", default_value="",
                              description="force a region (empty: follow the simulated GNSS)"),
    ]
    region_manager = Node(
        package=PACKAGE,
        executable="region_manager_node",
        name="region_manager_node",
        parameters=[
            _config("region_manager.yaml"),
            _config("carla.yaml"),
            {
                "geofence_file": _text("geofence_file"),
                "region_override": _text("region_override"),
                "accept_unknown_status": True,
                "use_sim_time": True,
            },
        ],
        remappings=[("gnss/fix", _bridge("/gnss"))],
        output="screen",
    )
    driving = Node(
        package=PACKAGE,
        executable="driving_node",
        name="driving_node",
        parameters=[
            _config("driving.yaml"),
            _config("vehicle.yaml"),
            _config("carla.yaml"),
            {
                "regions_file": _text("regions_file"),
                "bundle_dir": _text("bundle_dir"),
                "backend": _text("backend"),
                "command_type": "carla",
                "speed_source": "speed",
                "frame_id": _text("role_name"),
                "use_sim_time": True,
            },
        ],
        remappings=[
            ("camera/image", _bridge("/rgb_front/image")),
            ("lidar/points", _bridge("/lidar")),
            ("speed", _bridge("/speedometer")),
            ("control/command", _bridge("/vehicle_control_cmd")),
        ],
        output="screen",
    )
    return LaunchDescription([*arguments, region_manager, driving])
