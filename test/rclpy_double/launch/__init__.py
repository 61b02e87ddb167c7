"""A launch double for the launch-file tests: the launch API the package's launch files use, with launch's
(Humble) signatures; constructors record their arguments, substitutions can be performed against a
``LaunchContext`` (launch configurations + package share directories). Nothing is executed."""

from launch._double import LaunchContext, LaunchDescription

__all__ = ["LaunchContext", "LaunchDescription"]
