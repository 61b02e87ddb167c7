"""The perception and decision networks (plain PyTorch), their weight naming and their ONNX export."""

from regionadapt_ros.models.decision import DecisionNet
from regionadapt_ros.models.perception import PerceptionNet

__all__ = ["DecisionNet", "PerceptionNet"]
