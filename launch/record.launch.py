"""Record the inputs and outputs of both nodes into an MCAP rosbag2 (``ros2 bag record -s mcap``).

    ros2 launch regionadapt_ros record.launch.py [output:=drive_0001] [namespace:=ego]

Without ``output`` rosbag2 names the bag rosbag2_<date>_<time>. Replay it with replay.launch.py, or without
ROS with ``regionadapt replay BAG``.
"""

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression

from launch import LaunchDescription

# Relative to the namespace: sensor inputs, region topics, outputs.
TOPICS = (
    "camera/image", "camera/image/compressed", "lidar/points", "odom", "speed", "vehicle/twist", "gnss/fix",
    "regionadapt/active_region", "regionadapt/next_region",
    "control/command", "perception/traffic_light", "perception/lane", "perception/obstacle_distance",
    "perception/risk",
)
GLOBAL_TOPICS = ("/diagnostics", "/tf", "/tf_static")


def generate_launch_description() -> LaunchDescription:
    topics = [PathJoinSubstitution(["/", LaunchConfiguration("namespace"), t]) for t in TOPICS]
    record = ["ros2", "bag", "record", "-s", "mcap"]
    has_output = PythonExpression(["'", LaunchConfiguration("output"), "' != ''"])
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the recorded nodes"),
        DeclareLaunchArgument("output", default_value="", description="bag directory (must not exist yet)"),
        ExecuteProcess(cmd=[*record, "-o", LaunchConfiguration("output"), *topics, *GLOBAL_TOPICS],
                       output="screen", condition=IfCondition(has_output)),
        ExecuteProcess(cmd=[*record, *topics, *GLOBAL_TOPICS], output="screen",
                       condition=UnlessCondition(has_output)),
    ])
