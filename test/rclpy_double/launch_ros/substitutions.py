"""launch_ros.substitutions of the launch double."""

from __future__ import annotations

from typing import Any

from launch._double import LaunchContext, Substitution, SubstitutionFailure, as_substitutions, perform


class FindPackageShare(Substitution):
    def __init__(self, package: Any) -> None:
        self.package = as_substitutions(package, "package")

    def perform(self, context: LaunchContext) -> str:
        package = perform(context, self.package)
        if package not in context.share:
            raise SubstitutionFailure(f"package '{package}' not found")
        return context.share[package]
