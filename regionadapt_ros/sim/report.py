"""The report of ``regionadapt drive`` / ``regionadapt demo --closed-loop``: one JSON with every route's score,
a Markdown summary, and per route a plot of the drive (the route, the ego's path coloured by speed, where each
infraction happened; speed over time)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.scoring import leaderboard as lb
from regionadapt_ros.sim.environment import numeric_environment
from regionadapt_ros.sim.runner import RouteResult


def plot_route(result: RouteResult, path: str | Path) -> Path:
    from regionadapt_ros.core.plotting import pyplot, save_figure

    plt = pyplot()

    traj = result.trajectory
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.3, 1]})
    if result.route_xy is not None:
        ax.plot(result.route_xy[:, 0], result.route_xy[:, 1], color="#bbbbbb", lw=6, label="route", zorder=1)
    if traj is not None and len(traj):
        sc = ax.scatter(traj[:, 1], traj[:, 2], c=traj[:, 3], s=4, cmap="viridis", zorder=2)
        fig.colorbar(sc, ax=ax, label="speed m/s")
        ax2.plot(traj[:, 0], traj[:, 3], color="#1f77b4")
    for event in result.score.events:
        if event.x is not None and event.y is not None:
            ax.scatter([event.x], [event.y], marker="x", s=60, color="#d62728", zorder=3)
            ax.annotate(event.kind, (event.x, event.y), fontsize=7, color="#d62728")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x m")
    ax.set_ylabel("y m")
    s = result.score
    ax.set_title(f"{result.spec.route_id} ({result.agent}): DS {s.driving_score:.3f}, RC {s.route_completion:.3f}, "
                 f"P {s.infraction_penalty:.3f}", fontsize=9)
    ax2.set_xlabel("time s")
    ax2.set_ylabel("speed m/s")
    ax2.set_title(s.status, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_report(results: Sequence[RouteResult], out_dir: str | Path, plots: bool = True) -> dict[str, Any]:
    """report.json (every route, and the aggregate) and report.md in ``out_dir``; a plot per route."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = [r.score for r in results]
    agg = lb.aggregate(scores)
    doc = {"aggregate": agg, "routes": [r.as_dict() for r in results], "environment": numeric_environment()}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=2, default=_json) + "\n")
    lines = ["# Closed-loop drive", "",
             f"{len(results)} route(s); mean driving score {agg['driving_score']:.3f} "
             f"[{agg['driving_score_ci'][0]:.3f}, {agg['driving_score_ci'][1]:.3f}], route completion "
             f"{agg['route_completion']:.3f}, infraction penalty {agg['infraction_penalty']:.3f}.", "",
             "| route | agent | DS | RC | penalty | status | infractions | simulated s | × real time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s = r.score
        infr = ", ".join(f"{k} {v}" for k, v in s.counts().items() if v) or "none"
        lines.append(f"| {r.spec.route_id} | {r.agent} | {s.driving_score:.3f} | {s.route_completion:.3f} | "
                     f"{s.infraction_penalty:.3f} | {s.status} | {infr} | {r.sim_s:.1f} | {r.real_time_factor:.1f} |")
        if plots and r.trajectory is not None:
            plot_route(r, out_dir / f"{r.spec.route_id}.png")
            lines.append(f"\n![{r.spec.route_id}]({r.spec.route_id}.png)\n")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return doc


def _json(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))
