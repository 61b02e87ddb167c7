"""Shared fixtures. Tests run from the repository root without ROS 2."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Two cores: keep the math libraries from oversubscribing them when pytest runs threads of its own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_ros_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vehicle state (the rollback registry of stores with trusted keys) goes under $ROS_HOME: one per test, never
    the developer's ~/.ros, and no test sees another's accepted bundle versions."""
    monkeypatch.setenv("ROS_HOME", str(tmp_path_factory.mktemp("ros_home")))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def store():
    """The rosbags typestore with the project's message types (ROS 2 core + CARLA + Ackermann); read-only."""
    from regionadapt_ros.core.msgconv import rosbags_typestore

    return rosbags_typestore()


@pytest.fixture(scope="session")
def types(store):
    """Message classes of ``store`` (what the msgconv builders take)."""
    from regionadapt_ros.core.msgconv import rosbags_types

    return rosbags_types(store)


def perturbed_weights(model_name: str, seed: int, scale: float = 0.02) -> dict[str, np.ndarray]:
    """Full named weights of ``model_name``: a fresh init (seeded) plus seeded noise on every tensor, so that
    different seeds give clearly different outputs (the adapters' zero up-projections included)."""
    import torch

    from regionadapt_ros.models.registry import build_model, named_weights

    torch.manual_seed(seed)
    weights = named_weights(build_model(model_name))
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0.0, scale, v.shape)).astype(np.float32) for k, v in weights.items()}
