"""Where the package's config/ and the shipped bundles are: the source tree (this repository, or an
editable install of it), else the ament share directory of an installed workspace."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "regionadapt_ros"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    here = _SOURCE_ROOT / "config"
    if here.is_dir():
        return here
    try:  # an installed workspace: share/regionadapt_ros/config
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "config"
    except Exception:  # not in a ROS 2 environment either
        return here


def bundles_dir() -> Path:
    return _SOURCE_ROOT / "bundles"


def cache_dir() -> Path:
    """Demo and training cache: $REGIONADAPT_CACHE, else .cache/ in the source tree."""
    env = os.environ.get("REGIONADAPT_CACHE")
    return Path(env) if env else _SOURCE_ROOT / ".cache"
