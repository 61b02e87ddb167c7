"""Shared fixtures. Tests run from the repository root without ROS 2."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Two cores: keep the math libraries from oversubscribing them when pytest runs threads of its own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------------------------- real data, in place
@pytest.fixture(scope="session")
def sf_track_csv() -> Path:
    """The real comma2k19 u-blox GNSS track (579 fixes, Ocean View → Lakeshore at fix 78/79)."""
    from realdata import SF_TRACK, realdata_file

    return realdata_file(*SF_TRACK)


@pytest.fixture(scope="session")
def road_frame_png() -> Path:
    """The real comma2k19 road-camera frame (1164×874 PNG)."""
    from realdata import ROAD_FRAME, realdata_file

    return realdata_file(*ROAD_FRAME)


@pytest.fixture(scope="session")
def sf_neighbourhoods_geojson() -> Path:
    """The real SF neighbourhood boundaries as published (no region/priority properties)."""
    from realdata import SF_NEIGHBOURHOODS, realdata_file

    return realdata_file(*SF_NEIGHBOURHOODS)


@pytest.fixture(scope="session")
def sf_all_fences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 37 real SF neighbourhoods as fences (region = name, priority 0; three self-intersect)."""
    from realdata import write_neighbourhood_fences

    return write_neighbourhood_fences(tmp_path_factory.mktemp("sf_all") / "sf_neighbourhoods.geojson")


@pytest.fixture(scope="session")
def sf_boundary_fences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real neighbourhoods as product regions: Ocean View = urban_day (priority 10), Lakeshore = highway
    (priority 20). The real drive starts in urban_day and crosses into highway between fix 78 and 79."""
    from realdata import BOUNDARY_REGIONS, write_neighbourhood_fences

    return write_neighbourhood_fences(tmp_path_factory.mktemp("sf_boundary") / "sf_boundary.geojson",
                                      BOUNDARY_REGIONS)


@pytest.fixture(scope="session")
def labelled_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled-frames directory cut from the real road frame at test time (read-only by convention)."""
    from realdata import write_labelled_frames

    return write_labelled_frames(tmp_path_factory.mktemp("labelled_frames"))
