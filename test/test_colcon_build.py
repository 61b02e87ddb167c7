"""A real ``colcon build`` of the package (colcon from PyPI) and a check of its install tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", ".cache", "__pycache__",
                                "*.egg-info", "bundles", "docs", "bench", ".pytest_cache", ".ruff_cache", "out")


@pytest.fixture(scope="module")
def install_tree(tmp_path_factory) -> Path:
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail("colcon is not installed in this environment (requirements-dev.txt installs it)")
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(REPO, ws / "src" / "regionadapt_ros", ignore=IGNORE)
    env = dict(os.environ, PATH=f"{colcon.parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(colcon), "build", "--event-handlers", "console_direct-"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws / "install" / "regionadapt_ros"


def test_executables_installed(install_tree):
    for exe in ("driving_node", "region_manager_node", "regionadapt"):
        path = install_tree / "lib" / "regionadapt_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), path


def test_ament_index_marker_and_package_xml(install_tree):
    assert (install_tree / "share" / "ament_index" / "resource_index" / "packages" / "regionadapt_ros").is_file()
    assert (install_tree / "share" / "regionadapt_ros" / "package.xml").is_file()


def test_launch_and_config_installed(install_tree):
    for sub, pattern in (("launch", "*.launch.py"), ("config", "*.yaml")):
        src = sorted(p.name for p in (REPO / sub).glob(pattern))
        assert src, f"no {pattern} in {sub}/"
        got = sorted(p.name for p in (install_tree / "share" / "regionadapt_ros" / sub).glob(pattern))
        assert got == src


def test_installed_package_imports(install_tree):
    site = next((install_tree / "lib").glob("python3*/site-packages"))
    proc = subprocess.run(
        [sys.executable, "-c", "import regionadapt_ros.pipeline, regionadapt_ros.cli; print('ok')"],
        env=dict(os.environ, PYTHONPATH=str(site)), cwd=install_tree, capture_output=True, text=True,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
