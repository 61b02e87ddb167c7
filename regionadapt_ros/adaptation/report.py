"""Base vs fine-tuned tables (Markdown, JSON) and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regionadapt_ros.adaptation.evaluate import HIGHER_IS_BETTER, relative_improvement

METRIC_ORDER = tuple(HIGHER_IS_BETTER)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def region_entry(outcome: dict[str, Any], global_metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON entry of one region: primary metric, base, fine-tuned, relative improvement, other metrics."""
    primary = outcome["comparison"]["primary_metric"]
    entry = {
        "region": outcome["region"],
        "method": outcome["method"],
        "primary_metric": primary,
        "higher_is_better": HIGHER_IS_BETTER[primary],
        "base": outcome["base_metrics"][primary],
        "fine_tuned": outcome["tuned_metrics"][primary],
        "relative_improvement": outcome["comparison"]["relative_improvement"],
        "kept": outcome["kept"],
        "forced": outcome["forced"],
        "other_metrics": {
            m: {"base": outcome["base_metrics"][m], "fine_tuned": outcome["tuned_metrics"][m],
                "relative_improvement": relative_improvement(m, outcome["base_metrics"][m],
                                                             outcome["tuned_metrics"][m])}
            for m in METRIC_ORDER if m != primary
        },
        "delta_bytes": outcome.get("delta_bytes"),
        "full_bytes": outcome.get("full_bytes"),
    }
    if global_metrics is not None:
        entry["global_model"] = {"primary": global_metrics[primary], "metrics": global_metrics}
    return entry


def markdown_table(entries: Sequence[dict[str, Any]], base_home: dict[str, Any] | None = None) -> str:
    lines = ["| region | method | primary metric | base | fine-tuned | improvement | global model | kept |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        g = e.get("global_model", {}).get("primary")
        lines.append(
            f"| {e['region']} | {e['method']} | {e['primary_metric']} {'↑' if e['higher_is_better'] else '↓'} | "
            f"{_fmt(e['base'])} | {_fmt(e['fine_tuned'])} | {e['relative_improvement']:+.1%} | {_fmt(g)} | "
            f"{'yes' if e['kept'] else 'no'}{' (forced)' if e['forced'] else ''} |")
    lines += ["", "All metrics, base → fine-tuned (relative change, + = better):", "",
              "| region | " + " | ".join(METRIC_ORDER) + " |", "| --- |" + " --- |" * len(METRIC_ORDER)]
    for e in entries:
        cells = []
        for m in METRIC_ORDER:
            if m == e["primary_metric"]:
                b, t, r = e["base"], e["fine_tuned"], e["relative_improvement"]
            else:
                o = e["other_metrics"][m]
                b, t, r = o["base"], o["fine_tuned"], o["relative_improvement"]
            rel = "" if not (isinstance(r, float) and math.isfinite(r)) else f" ({r:+.1%})"
            cells.append(f"{_fmt(b)} → {_fmt(t)}{rel}")
        lines.append(f"| {e['region']} | " + " | ".join(cells) + " |")
    if base_home:
        lines += ["", "Base model on its home region (`urban_day`, held-out test split):", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in base_home.items()]
    return "\n".join(lines) + "\n"


def plot_comparison(entries: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Bar chart: primary metric per region, base vs fine-tuned (vs global model when present)."""
    from regionadapt_ros.core.plotting import pyplot, save_figure

    plt = pyplot()

    n = len(entries)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, e in zip(axes[0], entries, strict=True):
        labels, values, colours = ["base", "fine-tuned"], [e["base"], e["fine_tuned"]], ["#999999", "#2b7bba"]
        if "global_model" in e:
            labels.append("global")
            values.append(e["global_model"]["primary"])
            colours.append("#e69f00")
        ax.bar(labels, values, color=colours)
        ax.set_title(f"{e['region']}\n{e['primary_metric']} ({'higher' if e['higher_is_better'] else 'lower'}"
                     " is better)", fontsize=9)
        ax.tick_params(labelsize=8)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle("Base vs regional fine-tuning on each region's held-out split", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
