"""launch.launch_description_sources of the launch double."""

from launch._double import PythonLaunchDescriptionSource

__all__ = ["PythonLaunchDescriptionSource"]
