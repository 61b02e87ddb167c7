"""On-policy data for imitation (DAgger, Ross et al. 2011): the model drives, the expert labels the states it
visits, the next model is trained on everything collected so far.

Models trained on independent samples are judged on states the expert would be in; driving themselves, their
errors take them elsewhere (a little off the lane centre, closer to a stop line than the expert ever is at
that speed), where they were never taught what to do, and the errors compound. One round here: drive
``routes`` seeded routes (seeds of their own, never those of the evaluation) with the current bundle, keep
every ``stride``-th state with the expert's labels of it (``jobs._Collector``), and write them as a dataset
(source ``closed_loop``; split by route: the last route is the test split, the one before it validation). The
closed-loop score of those rollouts is the round's measure of the policy that drove them. Round 0 also has the
expert drive (DAgger's first iteration: β = 1), with noise on what it executes (DART), so that the data hold
the states an expert passes through (standing at a red light, close to its stop line) and its recoveries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.sim.course import region_routes
from regionadapt_ros.sim.jobs import AgentSpec, Job, chunks, run_jobs

_LOG = logging.getLogger("regionadapt_ros.dagger")
DAGGER_FIRST_SEED = 50_000  # rollout routes; evaluation routes use other seeds
SEEDS_PER_ROUND = 1000


@dataclass(frozen=True)
class DaggerConfig:
    """``expert_routes``: in round 0 the expert drives too (DAgger's first iteration, β = 1), with
    ``expert_noise`` on what it executes so that its recoveries are in the data."""

    rounds: int = 2
    routes_per_round: int = 8
    stride: int = 2
    workers: int = 2
    chunk: int = 2
    length_m: float | None = None  # route length (default: the region's)
    expert_routes: int = 8
    expert_noise: tuple[float, float] = (0.03, 0.3)


def scores_of(rows: Sequence[Mapping[str, Any]]) -> list[lb.RouteScore]:
    return [score_from_dict(r["score"]) for r in rows]


def score_from_dict(d: Mapping[str, Any]) -> lb.RouteScore:
    events = [lb.InfractionEvent(e["kind"], e["t"], e.get("message", ""), e.get("value"), e.get("x"), e.get("y"))
              for e in d["events"]]
    return lb.RouteScore(d["route_id"], d["route_length_m"], d["route_completion"], d["infraction_penalty"],
                         d["driving_score"], d["status"], d["duration_s"], events, dict(d.get("extras", {})))


def collect_round(region: str, agent: AgentSpec, round_index: int, out_dir: str | Path, regions_file: str | Path,
                  bundle_dir: str | Path, cfg: DaggerConfig, progress: bool = True) -> tuple[list[dict], Path | None]:
    """Roll ``agent`` out on the round's routes (and, in round 0, the noisy expert on routes of its own) and
    write the visited states as a dataset at out_dir/data; (route rows, tagged "policy" or "expert"; dataset
    path or None when too few states were collected)."""
    from regionadapt_ros.adaptation.dataset import MIN_SAMPLES, write_dataset

    out_dir = Path(out_dir)
    raw = out_dir / "states"
    raw.mkdir(parents=True, exist_ok=True)
    first = DAGGER_FIRST_SEED + SEEDS_PER_ROUND * round_index
    routes = region_routes(region, cfg.routes_per_round, first, cfg.length_m)
    jobs = [Job(agent, group, str(regions_file), str(bundle_dir), str(raw), cfg.stride, tag="policy")
            for group in chunks(routes, cfg.chunk)]
    if round_index == 0 and cfg.expert_routes:
        expert = AgentSpec("expert (noisy)", kind="expert", expert_noise=cfg.expert_noise)
        expert_routes = region_routes(region, cfg.expert_routes, first + SEEDS_PER_ROUND // 2, cfg.length_m)
        jobs += [Job(expert, group, str(regions_file), str(bundle_dir), str(raw), cfg.stride, tag="expert")
                 for group in chunks(expert_routes, cfg.chunk)]
    rows = [row for result in run_jobs(jobs, cfg.workers, progress) for row in result]
    parts = [np.load(r["collected_path"], allow_pickle=False) for r in rows if r.get("collected_path")]
    if not parts:
        return rows, None
    sizes = [len(p["labels"]) for p in parts]
    n = sum(sizes)
    if n < MIN_SAMPLES or len(parts) < 3:
        return rows, None
    starts = np.cumsum([0, *sizes])
    splits = {"train": np.arange(0, starts[-3]), "val": np.arange(starts[-3], starts[-2]),
              "test": np.arange(starts[-2], starts[-1])}
    data = write_dataset(out_dir / "data", np.concatenate([p["images"] for p in parts]),
                         np.concatenate([p["bev"] for p in parts]), np.concatenate([p["labels"] for p in parts]),
                         {"region": region, "seed": DAGGER_FIRST_SEED + SEEDS_PER_ROUND * round_index,
                          "source": "closed_loop", "policy": agent.name, "round": round_index,
                          "routes": [r["route_id"] for r in rows], "stride": cfg.stride}, splits)
    return rows, data


def round_summary(round_index: int, policy: str, rows: Sequence[Mapping[str, Any]], samples: int) -> dict[str, Any]:
    """The round's closed-loop score: the policy's rollouts only (not the expert's)."""
    rows = [r for r in rows if r.get("tag", "policy") == "policy"]
    agg = lb.aggregate(scores_of(rows))
    return {"round": round_index, "policy": policy, "routes": len(rows), "samples": samples,
            "driving_score": agg["driving_score"], "driving_score_ci": agg["driving_score_ci"],
            "route_completion": agg["route_completion"], "infractions_per_km": agg["infractions_per_km"],
            "seeds": [r["seed"] for r in rows]}
