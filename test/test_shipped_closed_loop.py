"""docs/results/closed_loop.json (from the same ``regionadapt train-all`` run as the bundles) is complete and
internally consistent: every region compares base, regional and global on at least 20 seeded routes, every
mean is the mean of its routes' scores, every driving score is RC × penalty, intervals contain their means,
and a route's score is reproduced by driving it again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.adaptation.recipe import REGION_ORDER

REPO = Path(__file__).resolve().parents[1]
DOC = json.loads((REPO / "docs" / "results" / "closed_loop.json").read_text())
ENTRIES = {e["region"]: e for e in DOC["regions"]}
AGENTS = ("base", "regional", "global")


def test_every_region_and_model_is_there():
    assert set(ENTRIES) == set(REGION_ORDER)
    for entry in ENTRIES.values():
        assert entry["routes"] >= 20
        for agent in AGENTS:
            assert len(entry[agent]["per_route"]) == entry["routes"]
            assert set(entry[agent]["infractions_per_km"]) >= {"collisions_vehicle", "red_light",
                                                                "collisions_layout", "route_dev"}


@pytest.mark.parametrize("region", REGION_ORDER)
def test_means_intervals_and_arithmetic(region):
    entry = ENTRIES[region]
    seeds = None
    for agent in (*AGENTS, "expert"):
        v = entry[agent]
        routes = v["per_route"]
        ds = np.array([r["driving_score"] for r in routes])
        rc = np.array([r["route_completion"] for r in routes])
        pen = np.array([r["infraction_penalty"] for r in routes])
        assert np.allclose(ds, rc * pen, atol=2e-6)
        assert v["driving_score"] == pytest.approx(ds.mean(), abs=1e-6)
        assert v["route_completion"] == pytest.approx(rc.mean(), abs=1e-6)
        lo, hi = v["driving_score_ci"]
        assert lo - 1e-9 <= v["driving_score"] <= hi + 1e-9
        # the same seeded routes for every model
        agent_seeds = [r["seed"] for r in routes]
        seeds = seeds or agent_seeds
        assert agent_seeds == seeds
    diff = entry["regional_minus_base"]
    assert diff["mean"] == pytest.approx(entry["regional"]["driving_score"] - entry["base"]["driving_score"],
                                         abs=1e-6)


def test_the_expert_scores_at_least_095_everywhere():
    for entry in ENTRIES.values():
        assert entry["expert"]["driving_score"] >= 0.95


def test_a_route_of_the_table_reproduces_from_its_seed():
    """The first highway route of the expert row, driven again, gives the recorded score (the models' rows
    are produced by the same runner from the shipped bundles)."""
    from regionadapt_ros.sim.agents import ExpertAgent
    from regionadapt_ros.sim.course import region_routes
    from regionadapt_ros.sim.runner import run_route

    entry = ENTRIES["highway"]
    row = entry["expert"]["per_route"][0]
    spec = region_routes("highway", 1, row["seed"])[0]
    score = run_route(spec, ExpertAgent()).score
    assert score.driving_score == pytest.approx(row["driving_score"], abs=1e-6)
    assert score.route_completion == pytest.approx(row["route_completion"], abs=1e-6)


def test_a_model_route_of_the_table_reproduces_from_its_seed():
    """The first highway route of the regional row, driven again by the shipped highway bundle through the
    product's path, gives the recorded score."""
    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    from regionadapt_ros.sim.agents import ProductAgent
    from regionadapt_ros.sim.course import region_routes
    from regionadapt_ros.sim.runner import run_route

    row = ENTRIES["highway"]["regional"]["per_route"][0]
    agent = ProductAgent("regional", REPO / "config" / "regions.yaml", bundle_dir=REPO / "bundles",
                         backend=OnnxRuntimeBackend(intra_op_threads=1), regions=["highway"])
    try:
        score = run_route(region_routes("highway", 1, row["seed"])[0], agent).score
    finally:
        agent.close()
    assert score.driving_score == pytest.approx(row["driving_score"], abs=1e-6)
    assert score.status == row["status"]
