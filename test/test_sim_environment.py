"""What a closed-loop result records of the machine it was computed on (``sim.environment``)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from regionadapt_ros.sim import environment


def test_a_loaded_module_says_its_own_version_else_its_distribution_does(monkeypatch):
    # A ROS install's OpenCV is apt's (no pip distribution), a GPU machine's ONNX Runtime is onnxruntime-gpu.
    monkeypatch.setitem(sys.modules, "fake_cv", types.SimpleNamespace(__version__="4.5.4"))
    assert environment.library_version("fake_cv", ("no-such-distribution",)) == "4.5.4"
    import numpy

    assert environment.library_version("not_loaded_module", ("no-such-distribution", "numpy")) == numpy.__version__
    assert environment.library_version("not_loaded_module", ("no-such-distribution",)) is None


def test_an_arm_board_without_a_model_name_is_named_by_its_device_tree(monkeypatch):
    jetson_cpuinfo = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n"
    files = {"/proc/cpuinfo": jetson_cpuinfo, "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00"}

    def read_text(self: Path, *args, **kwargs) -> str:
        if str(self) not in files:
            raise FileNotFoundError(str(self))
        return files[str(self)]

    monkeypatch.setattr(Path, "read_text", read_text)
    assert environment.cpu_model() == "NVIDIA Jetson AGX Orin Developer Kit"
    files["/proc/cpuinfo"] = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    assert environment.cpu_model() == "Intel(R) Xeon(R) Platinum 8480+"
    del files["/proc/cpuinfo"], files["/proc/device-tree/model"]
    monkeypatch.setattr(environment.platform, "processor", lambda: "arm")
    assert environment.cpu_model() == "arm"
