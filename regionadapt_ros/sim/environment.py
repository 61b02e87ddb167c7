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
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# module -> the distributions that install it (a ROS install's OpenCV is apt's, a GPU machine's ONNX Runtime is
# onnxruntime-gpu): a loaded module says its own version, else the first distribution installed does.
_LIBRARIES = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
    "cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "shapely": ("shapely",),
}
_CPU_NAME_KEYS = ("model name", "hardware", "cpu model")  # x86; some Arm kernels; MIPS and others


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; on Arm boards such as a Jetson, whose cpuinfo names no
    model, the device tree's model), else what ``platform`` says; "" when nothing does."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in _CPU_NAME_KEYS and value.strip():
                return value.strip()
    except OSError:
        pass
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00 \n")
        if model:
            return model
    except OSError:
        pass
    return platform.processor()


def library_version(module: str, distributions: tuple[str, ...]) -> str | None:
    """The version of ``module``: its ``__version__`` when loaded, else its distribution's; None when absent."""
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None)
    if isinstance(version, str):
        return version
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def numeric_environment() -> dict[str, Any]:
    """The machine and library versions a result's floating-point arithmetic depended on."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "libraries": {module: library_version(module, dists) for module, dists in _LIBRARIES.items()}}
