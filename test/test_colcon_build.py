"""A real ``colcon build`` of the package (colcon from PyPI) and a check of its install tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import LAUNCH_FILES, check_node, console_scripts, effective_parameters, run_launch_file

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", ".cache", "__pycache__",
                                "*.egg-info", ".installed.json", "docs", "bench", ".pytest_cache", ".ruff_cache", "out")


@pytest.fixture(scope="module", params=["copy", "symlink"])
def install_tree(request, tmp_path_factory) -> Path:
    """The install tree of ``colcon build`` and of ``colcon build --symlink-install``."""
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        pytest.fail("colcon is not installed in this environment (requirements-dev.txt installs it)")
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(REPO, ws / "src" / "regionadapt_ros", ignore=IGNORE)
    env = dict(os.environ, PATH=f"{colcon.parent}:{os.environ.get('PATH', '')}")
    extra = ["--symlink-install"] if request.param == "symlink" else []
    proc = subprocess.run([str(colcon), "build", *extra, "--event-handlers", "console_direct-"], cwd=ws, env=env,
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


def share_of(install_tree: Path) -> Path:
    return install_tree / "share" / "regionadapt_ros"


def check_regions_file(regions_file: str, bundle_dir: str = "") -> list[str]:
    """Load ``regions_file`` as driving_node's configure does (the same BundleStore call) and resolve and verify
    every region's bundle; returns the regions checked."""
    from regionadapt_ros.core.bundle_store import BundleStore

    store = BundleStore.load(regions_file, bundle_dir=bundle_dir or None)
    for region in store.regions:
        weights = store.load_region(region, None)
        assert weights.weights and weights.bundle_version >= 1, region
    return list(store.regions)


def test_the_installed_regions_file_resolves_and_verifies_every_bundle(install_tree):
    regions_file = share_of(install_tree) / "config" / "regions.yaml"
    regions = check_regions_file(str(regions_file))
    assert {"base", "highway", "mountain", "urban_night", "left_hand"} <= set(regions)
    for bundle in ("base", "highway"):
        assert (share_of(install_tree) / "bundles" / bundle / "manifest.json").is_file(), bundle


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_launch_file_default_works_in_the_install_tree(install_tree, name):
    """Each launch file with its default arguments, evaluated in the install tree: the parameter files are the
    installed ones and valid, the regions file resolves every bundle, the geofence file loads."""
    from rclpy_double.harness import double_on_path

    from regionadapt_ros.nodes import _params
    from regionadapt_ros.region_session import RegionSession

    share = share_of(install_tree)
    with double_on_path(("launch", "launch_ros")):
        collected = run_launch_file(name, share=share)
    scripts = console_scripts()
    for info in collected.nodes:
        check_node(info, scripts, config_dir=share / "config")
        values = effective_parameters(info)
        if info.executable == _params.DRIVING_NODE:
            regions_file = values["regions_file"] or str(share / "config" / "regions.yaml")
            assert Path(regions_file).is_relative_to(share), regions_file
            check_regions_file(regions_file, values["bundle_dir"])
        else:
            geofences = values["geofence_file"] or str(share / "config" / "geofences.geojson")
            assert Path(geofences).is_relative_to(share), geofences
            RegionSession.from_file(geofences, values["default_region"])
