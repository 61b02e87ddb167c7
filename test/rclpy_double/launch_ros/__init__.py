"""launch_ros of the launch double (see launch/__init__.py)."""
