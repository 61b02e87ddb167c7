"""The demo drive (its real route and geofences, replayed through the whole stack as ``regionadapt demo`` does):
every region change is prefetched, i.e. a next_region hint staged the new region's weights before the vehicle
reached the fence, on the curved stretches too (DESIGN.md §6.4)."""

from __future__ import annotations

import json

import pytest
import yaml
from bundle_factory import RULES, write_bundle_set

from regionadapt_ros.adaptation.demo_drive import DEMO_ROUTE, write_demo_drive
from regionadapt_ros.cli import main


@pytest.mark.slow
def test_every_crossing_of_the_demo_drive_is_prefetched(tmp_path):
    bundles = write_bundle_set(tmp_path, signed=True)
    cfg = yaml.safe_load(bundles["yaml"].read_text())
    for region, _ in DEMO_ROUTE:  # the demo's city regions are served by the base model, as in config/
        cfg["regions"].setdefault(region, {"bundle": "base", "rules": dict(RULES["base"])})  # no YAML aliases
    bundles["yaml"].write_text(yaml.safe_dump(cfg))
    # small images: this test is about where the vehicle goes, not what it sees
    drive = write_demo_drive(tmp_path / "bag", tmp_path / "fences.geojson", image_size=(24, 40), progress=False)
    summary = tmp_path / "summary.json"
    code = main(["replay", str(drive.bag), "--out", str(tmp_path / "run"), "--regions-config",
                 str(bundles["yaml"]), "--geofences", str(drive.geofences), "--json", str(summary),
                 "--no-progress"])
    assert code == 0
    s = json.loads(summary.read_text())
    assert s["regions"] == [r for r, _ in DEMO_ROUTE]
    assert s["region_changes"] == len(DEMO_ROUTE) - 1 == 4
    assert s["prefetched_changes"] == 4, s["swap_events"]
    assert s["failed_loads"] == 0
