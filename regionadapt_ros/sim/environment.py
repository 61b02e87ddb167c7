"""What a closed-loop result was computed on, recorded beside it.

A closed loop feeds the models' own outputs back into the world, so a difference in the last bit of one
activation can grow into a different route: the CPU's vector kernels (ONNX Runtime and PyTorch choose them by
instruction set) and the library versions decide those bits. The same seeds reproduce a result bit for bit on
the same kind of machine and libraries; elsewhere a route close to an infraction's threshold (a minimum-speed
checkpoint, a red light turning) may score differently. The record says which case a reader is in.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = ("numpy", "onnxruntime", "torch", "opencv-python-headless", "shapely")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` says; "" when neither knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def numeric_environment() -> dict[str, Any]:
    """The machine and library versions a result's floating-point arithmetic depended on."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "libraries": versions}
