"""launch.substitutions of the launch double."""

from launch._double import LaunchConfiguration, PathJoinSubstitution, PythonExpression, TextSubstitution

__all__ = ["LaunchConfiguration", "PathJoinSubstitution", "PythonExpression", "TextSubstitution"]
