"""On the vehicle: region_manager_node + driving_node with the package's configuration.

    ros2 launch regionadapt_ros onboard.launch.py [namespace:=ego] [backend:=tensorrt] [command_type:=twist]
        [params_file:=...] [vehicle_params_file:=...] [region_params_file:=...] [geofence_file:=...]
        [regions_file:=...] [bundle_dir:=...] [camera_transport:=compressed] [speed_source:=twist]
        [use_sim_time:=true] [region_override:=highway]

Topics are the nodes' defaults (camera/image, lidar/points, odom, gnss/fix, control/command, ...) in
``namespace``; remap them with a launch file of your own, as carla.launch.py does for the CARLA ROS bridge.
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
    # Strings stay strings (a region called "1" or an empty path must not be parsed as YAML).
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of both nodes"),
        DeclareLaunchArgument("params_file", default_value=_config("driving.yaml"),
                              description="driving_node parameters"),
        DeclareLaunchArgument("vehicle_params_file", default_value=_config("vehicle.yaml"),
                              description="vehicle limits of driving_node"),
        DeclareLaunchArgument("region_params_file", default_value=_config("region_manager.yaml"),
                              description="region_manager_node parameters"),
        DeclareLaunchArgument("geofence_file", default_value=_config("geofences.geojson"),
                              description="GeoJSON region geofences"),
        DeclareLaunchArgument("regions_file", default_value=_config("regions.yaml"),
                              description="region -> bundle mapping and traffic rules"),
        DeclareLaunchArgument("bundle_dir", default_value="",
                              description="directory of the region bundles; empty: as regions_file says"),
        DeclareLaunchArgument("backend", default_value="onnxruntime",
                              choices=["onnxruntime", "torch", "tensorrt", "auto"], description="inference backend"),
        DeclareLaunchArgument("command_type", default_value="ackermann", choices=["ackermann", "carla", "twist"],
                              description="control/command message type"),
        DeclareLaunchArgument("camera_transport", default_value="raw", choices=["raw", "compressed"],
                              description="camera/image or camera/image/compressed"),
        DeclareLaunchArgument("speed_source", default_value="odom", choices=["odom", "speed", "twist"],
                              description="nav_msgs/Odometry on odom, std_msgs/Float32 on speed or "
                              "geometry_msgs/TwistStamped on vehicle/twist"),
        DeclareLaunchArgument("region_override", default_value="",
                              description="force a region (empty: follow GNSS)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="run on /clock (replay, simulation)"),
    ]
    region_manager = Node(
        package=PACKAGE,
        executable="region_manager_node",
        name="region_manager_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("region_params_file"),
            {
                "geofence_file": _text("geofence_file"),
                "region_override": _text("region_override"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        output="screen",
    )
    driving = Node(
        package=PACKAGE,
        executable="driving_node",
        name="driving_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            LaunchConfiguration("vehicle_params_file"),
            {
                "regions_file": _text("regions_file"),
                "bundle_dir": _text("bundle_dir"),
                "backend": _text("backend"),
                "command_type": _text("command_type"),
                "camera_transport": _text("camera_transport"),
                "speed_source": _text("speed_source"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        output="screen",
    )
    return LaunchDescription([*arguments, region_manager, driving])
