"""ROS 2 parameter files as rcl reads them for one node: which sections apply (the node-key rule of
rclpy/src/rclpy/node.cpp, humble and jazzy) and the names of nested parameters. Plain Python (no double state),
so the launch tests use it too."""

from __future__ import annotations

import re
from typing import Any


def node_key_matches(key: str, fully_qualified_name: str) -> bool:
    """Whether a parameter-file node key applies to a node, as rclpy/src/rclpy/node.cpp decides it (humble and
    jazzy): a leading '/' is added when missing, every "/*" becomes "(/\\w+)" (so "/**" is "(/\\w+)*") and
    the result must match the whole fully qualified name."""
    if not key:
        raise ValueError("expected node name to have at least one character")
    name = key if key.startswith("/") else "/" + key
    pattern = name.replace("/*", r"(/\w+)")
    return re.fullmatch(pattern, fully_qualified_name) is not None


def flatten_parameters(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``ros__parameters`` mappings as rcl names them: ``vehicle: {max_accel: 2.5}`` -> vehicle.max_accel."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, name + "."))
        else:
            flat[name] = value
    return flat


def parameters_for(document: Any, fully_qualified_name: str, source: str = "parameter file") -> dict[str, Any]:
    """The parameters a ROS 2 parameter file (parsed YAML) sets for the node, sections applied in file order."""
    if not isinstance(document, dict):
        raise ValueError(f"{source}: a parameter file maps node names to {{ros__parameters: ...}}")
    found: dict[str, Any] = {}
    for key, entry in document.items():
        if not isinstance(entry, dict) or set(entry) != {"ros__parameters"}:
            raise ValueError(f"{source}: {key}: expected exactly one key ros__parameters")
        if node_key_matches(str(key), fully_qualified_name):
            found.update(flatten_parameters(entry["ros__parameters"]))
    return found
