"""Message classes of the nodes, resolved by ROS type name from the generated message packages.

The nodes never import ``sensor_msgs.msg`` and friends directly: they resolve ``pkg/msg/Type`` names through
``msgconv.rclpy_types`` (the same names the session builders use), so an optional package such as
``carla_msgs`` is only needed when the configuration uses it, and a missing one fails configure with an error
naming the package.
"""

from __future__ import annotations

from regionadapt_ros.core.msgconv import TypeResolver, rclpy_types


def message_types() -> TypeResolver:
    """A resolver ``"sensor_msgs/msg/Image" -> class`` over the generated (rclpy) message packages."""
    return rclpy_types()
