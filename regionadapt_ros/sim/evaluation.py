"""The regional comparison in closed loop (the seed method's "evaluate against the original", done the way
driving models are judged): for each region, the same seeded routes driven by the base model, by the
region's bundle and by the global region-conditioned model, each through the product's own path; mean
driving score, route completion and infractions per km with 95 % bootstrap confidence intervals, and the
paired difference regional - base (same seeds) with its interval.

Extra agents (``extra_agents``: name → {region: AgentSpec}) add rows without changing the others, e.g. the
same bundle with a driving-session setting switched on (``AgentSpec.driving_overrides``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.sim.course import ROUTE_LENGTH_M, SIM_CRITERIA, region_routes
from regionadapt_ros.sim.dagger import scores_of
from regionadapt_ros.sim.environment import numeric_environment
from regionadapt_ros.sim.jobs import AgentSpec, Job, chunks, run_jobs

EVAL_FIRST_SEED = 1000
MAIN_KINDS = (lb.COLLISION_VEHICLE, lb.COLLISION_LAYOUT, lb.RED_LIGHT, lb.SCENARIO_TIMEOUT, lb.MIN_SPEED,
              lb.ROUTE_DEVIATION, lb.VEHICLE_BLOCKED, lb.ROUTE_TIMEOUT)


@dataclass
class ComparisonConfig:
    routes: int = 20
    first_seed: int = EVAL_FIRST_SEED
    workers: int = 2
    chunk: int = 5
    with_expert: bool = True
    progress: bool = True
    extra_agents: dict[str, dict[str, AgentSpec]] = field(default_factory=dict)


def agent_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate of one agent's routes in one region, plus per-route scores (reproducible from the seeds)."""
    scores = scores_of(rows)
    agg = lb.aggregate(scores)
    stops = [s.extras.get("time_to_stop_s") for s in scores if s.extras.get("time_to_stop_s") is not None]
    agg["speeding_percent"] = float(sum(s.extras.get("speeding_percent", 0.0) for s in scores) / len(scores))
    agg["red_light_stops"] = int(sum(s.extras.get("red_light_stops", 0) for s in scores))
    agg["time_to_stop_s"] = float(sum(stops) / len(stops)) if stops else None
    late = [r.get("agent_stats", {}).get("late_frames", 0) for r in rows]
    dropped = [r.get("agent_stats", {}).get("dropped_frames", 0) for r in rows]
    agg["late_frames"] = int(sum(late))
    agg["dropped_frames"] = int(sum(dropped))
    guard = [r.get("agent_stats", {}).get("emergency_brake", {}) for r in rows]
    agg["emergency_brake"] = {k: int(sum(g.get(k, 0) for g in guard))
                              for k in ("overrides", "override_frames", "suppressed", "suppressed_frames")}
    agg["per_route"] = [{"route_id": s.route_id, "seed": r["seed"], "driving_score": round(s.driving_score, 6),
                         "route_completion": round(s.route_completion, 6),
                         "infraction_penalty": round(s.infraction_penalty, 6), "status": s.status,
                         "infractions": {k: v for k, v in s.counts().items() if v}}
                        for s, r in zip(scores, rows, strict=True)]
    return agg


def compare_regions(regions: Sequence[str], agents_for: Callable[[str], Mapping[str, AgentSpec]],
                    regions_file: str | Path, bundle_dir: str | Path, cfg: ComparisonConfig | None = None
                    ) -> dict[str, Any]:
    """Drive every region's routes with every agent ``agents_for(region)`` names ({row name: AgentSpec}; the
    expert is added when ``cfg.with_expert``); the closed_loop.json document."""
    cfg = cfg or ComparisonConfig()
    t0 = time.time()
    jobs: list[Job] = []
    for region in regions:
        routes = region_routes(region, cfg.routes, cfg.first_seed)
        agents = dict(agents_for(region))
        for name, extra in cfg.extra_agents.items():
            if region in extra:
                agents[name] = extra[region]
        if cfg.with_expert:
            agents["expert"] = AgentSpec("expert", kind="expert")
        for name, spec in agents.items():
            for group in chunks(routes, cfg.chunk):
                jobs.append(Job(spec, group, str(regions_file), str(bundle_dir), tag=f"{region}/{name}"))
    results = run_jobs(jobs, cfg.workers, cfg.progress)
    rows: dict[str, dict[str, list[dict]]] = {}
    for job, result in zip(jobs, results, strict=True):
        region, name = job.tag.split("/", 1)
        rows.setdefault(region, {}).setdefault(name, []).extend(result)
    out_regions = []
    for region in regions:
        entry: dict[str, Any] = {"region": region, "routes": cfg.routes,
                                 "route_length_m": ROUTE_LENGTH_M.get(region)}
        for name, agent_rows in rows[region].items():
            agent_rows.sort(key=lambda r: r["seed"])
            entry[name] = agent_summary(agent_rows)
        if "base" in entry and "regional" in entry:
            a = [r["driving_score"] for r in entry["regional"]["per_route"]]
            b = [r["driving_score"] for r in entry["base"]["per_route"]]
            entry["regional_minus_base"] = lb.paired_difference(a, b)
            entry["regional_above_base_beyond_ci"] = bool(
                entry["regional"]["driving_score_ci"][0] > entry["base"]["driving_score_ci"][1])
        out_regions.append(entry)
    ticks = sum(r["ticks"] for res in results for r in res)
    sim_s = sum(r["sim_s"] for res in results for r in res)
    wall = time.time() - t0
    return {"regions": out_regions, "seeds": list(range(cfg.first_seed, cfg.first_seed + cfg.routes)),
            "criteria": SIM_CRITERIA.__dict__, "route_lengths_m": dict(ROUTE_LENGTH_M),
            "confidence": "95 % percentile bootstrap over routes (2000 resamples, seed 0)",
            "environment": numeric_environment(),
            "wall_s": wall, "ticks": ticks, "simulated_s": sim_s, "workers": cfg.workers,
            "real_time_factor_all_workers": sim_s / wall if wall > 0 else math.inf}


# ------------------------------------------------------------------------------------------ report
def _ci(v: Mapping[str, Any], key: str, digits: int = 3) -> str:
    lo, hi = v[f"{key}_ci"]
    return f"{v[key]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(doc: Mapping[str, Any], order: Sequence[str] = ("base", "regional", "global", "expert")) -> str:
    lines = ["| region | model | DS [95 % CI] | RC [95 % CI] | penalty | " +
             " | ".join(k.replace("_", " ") for k in MAIN_KINDS) + " | speeding % | time to stop s |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in MAIN_KINDS) + " | --- | --- |"]
    for entry in doc["regions"]:
        names = [n for n in order if n in entry] + [n for n in entry if isinstance(entry[n], dict)
                                                    and "driving_score" in entry[n] and n not in order]
        for name in names:
            v = entry[name]
            per_km = " | ".join(f"{v['infractions_per_km'][k]:.2f}" for k in MAIN_KINDS)
            tts = "" if v.get("time_to_stop_s") is None else f"{v['time_to_stop_s']:.1f}"
            lines.append(f"| {entry['region']} | {name} | {_ci(v, 'driving_score')} | {_ci(v, 'route_completion')} | "
                         f"{v['infraction_penalty']:.3f} | {per_km} | {v['speeding_percent']:.1f} | {tts} |")
    return "\n".join(lines) + "\n"


def plot(doc: Mapping[str, Any], path: str | Path, order: Sequence[str] = ("base", "regional", "global", "expert")
         ) -> Path:
    from regionadapt_ros.core.plotting import pyplot, save_figure

    plt = pyplot()
    import numpy as np

    regions = [e["region"] for e in doc["regions"]]
    names = [n for n in order if any(n in e for e in doc["regions"])]
    dagger = doc.get("dagger") or {}
    fig, axes = plt.subplots(1, 2 if dagger else 1, figsize=(13 if dagger else 8, 4.2), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / max(1, len(names))
    colours = {"base": "#9e9e9e", "regional": "#1f77b4", "global": "#ff7f0e", "expert": "#2ca02c"}
    for i, name in enumerate(names):
        vals = [e[name]["driving_score"] if name in e else np.nan for e in doc["regions"]]
        lo = [e[name]["driving_score"] - e[name]["driving_score_ci"][0] if name in e else 0 for e in doc["regions"]]
        hi = [e[name]["driving_score_ci"][1] - e[name]["driving_score"] if name in e else 0 for e in doc["regions"]]
        x = np.arange(len(regions)) + (i - (len(names) - 1) / 2) * width
        ax.bar(x, vals, width, yerr=[lo, hi], capsize=3, label=name, color=colours.get(name))
    ax.axhline(0.8, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(regions)), regions)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("driving score (mean, 95 % CI)")
    ax.set_title(f"Closed loop, {doc['regions'][0]['routes']} seeded routes per region")
    ax.legend(loc="lower right", fontsize=8)
    if dagger:
        ax2 = axes[0][1]
        for region, hist in dagger.items():
            rounds = [h["round"] for h in hist["rounds"]]
            ds = [h["driving_score"] for h in hist["rounds"]]
            ax2.plot(rounds, ds, marker="o", label=region)
        ax2.set_xlabel("DAgger round (policy trained on the data of the rounds before it)")
        ax2.set_ylabel("driving score of the round's rollouts")
        ax2.set_ylim(0, 1.05)
        ax2.set_title("On-policy data, per round")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def dagger_markdown(dagger: Mapping[str, Any]) -> str:
    lines = ["| model | round | policy | routes | states collected | DS [95 % CI] | RC |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for region, hist in dagger.items():
        for h in hist["rounds"]:
            lines.append(f"| {region} | {h['round']} | {h['policy']} | {h['routes']} | {h['samples']} | "
                         f"{_ci(h, 'driving_score')} | {h['route_completion']:.3f} |")
    return "\n".join(lines) + "\n"
