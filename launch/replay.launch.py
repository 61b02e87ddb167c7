"""Replay a recorded bag through both nodes in the bag's time (``ros2 bag play --clock``, use_sim_time).

    ros2 launch regionadapt_ros replay.launch.py bag:=drive_0001 [rate:=0.5] [loop:=true] [backend:=torch]

Only the sensor inputs and ``/tf_static`` are played (the recorded outputs would collide with the nodes' own);
the regions come from the replayed GNSS. ``/tf_static`` carries the lidar's mounting: without it a lidar frame
other than ``base_link`` is unknown to the driving node, as it is not to ``regionadapt replay``. Playback starts
``start_delay`` seconds after launch so the models are loaded first. A looped bag sends the clock back at every
loop: the nodes treat that as a clock jump (history reset, no spurious stop).
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, TimerAction
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "regionadapt_ros"
INPUTS = ("camera/image", "camera/image/compressed", "lidar/points", "odom", "speed", "vehicle/twist", "gnss/fix")
GLOBAL_INPUTS = ("/tf_static",)  # not namespaced: the driving node subscribes to the global one
FORWARDED = ("namespace", "backend", "command_type", "camera_transport", "speed_source", "regions_file",
             "bundle_dir", "geofence_file")


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    inputs = [*(PathJoinSubstitution(["/", LaunchConfiguration("namespace"), t]) for t in INPUTS), *GLOBAL_INPUTS]
    play = ["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", LaunchConfiguration("clock_hz"),
            "--rate", LaunchConfiguration("rate")]
    arguments = [
        DeclareLaunchArgument("bag", description="the rosbag2 directory to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("loop", default_value="false", choices=["true", "false"], description="loop the bag"),
        DeclareLaunchArgument("clock_hz", default_value="100.0", description="rate of /clock [Hz]"),
        DeclareLaunchArgument("start_delay", default_value="5.0",
                              description="seconds before playback starts (model loading)"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("backend", default_value="onnxruntime",
                              choices=["onnxruntime", "torch", "tensorrt", "auto"]),
        DeclareLaunchArgument("command_type", default_value="ackermann", choices=["ackermann", "carla", "twist"]),
        DeclareLaunchArgument("camera_transport", default_value="raw", choices=["raw", "compressed"]),
        DeclareLaunchArgument("speed_source", default_value="odom", choices=["odom", "speed", "twist"]),
        DeclareLaunchArgument("regions_file", default_value=PathJoinSubstitution([share, "config", "regions.yaml"])),
        DeclareLaunchArgument("bundle_dir", default_value=""),
        DeclareLaunchArgument("geofence_file",
                              default_value=PathJoinSubstitution([share, "config", "geofences.geojson"])),
    ]
    nodes = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "onboard.launch.py"])),
        launch_arguments=[*((name, LaunchConfiguration(name)) for name in FORWARDED), ("use_sim_time", "true")],
    )
    player = TimerAction(period=LaunchConfiguration("start_delay"), actions=[
        ExecuteProcess(cmd=[*play, "--loop", "--topics", *inputs], output="screen",
                       condition=IfCondition(LaunchConfiguration("loop"))),
        ExecuteProcess(cmd=[*play, "--topics", *inputs], output="screen",
                       condition=UnlessCondition(LaunchConfiguration("loop"))),
    ])
    return LaunchDescription([*arguments, nodes, player])
