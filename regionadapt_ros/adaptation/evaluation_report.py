"""What ``regionadapt evaluate`` shows: per region, base vs fine-tuned, as a text table, JSON and a plot.

Traffic lights: accuracy, macro F1, per-class precision / recall / F1 / support and the confusion matrix.
Regression outputs: MAE, bias and percentiles of the absolute error. Each result is one dict:

    {"region", "data", "samples", "primary_metric", "primary_reason", "bundle" (path or None),
     "comparison" (evaluate.compare, None without a bundle),
     "base": {"metrics": {...}, "details": evaluate.detailed_metrics},
     "fine_tuned": the same, or None without a bundle}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

UNITS = {"lane_offset": "m", "heading": "rad", "obstacle_distance": "m", "steering": "rad", "accel": "m/s²"}


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def _models(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    models = [("base", result["base"])]
    if result.get("fine_tuned") is not None:
        models.append(("fine-tuned", result["fine_tuned"]))
    return models


def text_report(results: Sequence[dict[str, Any]]) -> str:
    """Plain-text tables for people, one section per region."""
    lines: list[str] = []
    for r in results:
        models = _models(r)
        lines.append(f"== {r['region']}: {r['data']} (test split, {r['samples']} samples)")
        lines.append(f"   primary metric: {r['primary_metric']} ({r['primary_reason']})")
        c = r.get("comparison")
        if c is not None:
            verdict = "better" if c["beats_base"] else "NOT better"
            lines.append(f"   base {_num(c['base'])} → fine-tuned {_num(c['fine_tuned'])} "
                         f"({c['relative_improvement']:+.1%}): {verdict} than the base")
            if c["regressions"]:
                lines.append("   worse by more than 5 %: " + ", ".join(
                    f"{k} {v:+.1%}" for k, v in sorted(c["regressions"].items())))
        tl = [(name, m["details"].get("traffic_light")) for name, m in models]
        if tl[0][1]:
            lines.append("   traffic light      " + "".join(f"{name:>12s}" for name, _ in tl))
            lines.append("     accuracy         " + "".join(f"{_num(t['accuracy']):>12s}" for _, t in tl))
            lines.append("     macro F1         " + "".join(f"{_num(t['macro_f1']):>12s}" for _, t in tl))
            for cls in tl[0][1]["classes"]:
                support = tl[0][1]["per_class"][cls]["support"]
                cells = "".join(
                    f"{'/'.join(_num(t['per_class'][cls][k], 2) for k in ('precision', 'recall', 'f1')):>18s}"
                    for _, t in tl)
                lines.append(f"     {cls:<7s} P/R/F1 (n={support}) {cells}")
            for name, t in tl:
                lines.append(f"     confusion ({name}; rows = label, columns = predicted "
                             f"{' '.join(t['classes'])}):")
                for cls, row in zip(t["classes"], t["confusion"], strict=True):
                    lines.append(f"       {cls:<7s}" + "".join(f"{v:>7d}" for v in row))
        outputs = [k for k in r["base"]["details"] if k != "traffic_light"]
        if outputs:
            lines.append(f"   {'output':<22s} {'model':<11s} {'n':>5s} {'MAE':>9s} {'bias':>9s} "
                         f"{'p50':>9s} {'p90':>9s} {'p95':>9s} {'p99':>9s} {'max':>9s}")
            for out in outputs:
                for name, m in models:
                    e = m["details"][out]
                    lines.append(f"   {out + ' [' + UNITS.get(out, '') + ']':<22s} {name:<11s} {e['samples']:>5d} "
                                 + " ".join(f"{_num(e[k]):>9s}" for k in ("mae", "bias", "p50", "p90", "p95",
                                                                           "p99", "max")))
        lines.append("")
    return "\n".join(lines)


def plot_evaluation(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One row per region: the traffic-light confusion matrices (base, fine-tuned) and the absolute-error
    percentiles of every labelled regression output, relative to the base's MAE (so units do not matter)."""
    from regionadapt_ros.core.plotting import pyplot, save_figure

    plt = pyplot()
    import numpy as np

    n = max(1, len(results))
    fig, axes = plt.subplots(n, 3, figsize=(13, 3.6 * n), squeeze=False)
    for row, r in zip(axes, results, strict=False):
        models = _models(r)
        for ax, (name, m) in zip(row[:2], models + [("", None)] * (2 - len(models)), strict=False):
            tl = None if m is None else m["details"].get("traffic_light")
            if tl is None:
                ax.axis("off")
                continue
            conf = np.asarray(tl["confusion"], dtype=float)
            shown = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
            ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
            for i in range(conf.shape[0]):
                for j in range(conf.shape[1]):
                    ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if shown[i, j] > 0.6 else "black")
            ax.set_xticks(range(len(tl["classes"])), tl["classes"], fontsize=7)
            ax.set_yticks(range(len(tl["classes"])), tl["classes"], fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("labelled", fontsize=8)
            ax.set_title(f"{r['region']}: {name}\naccuracy {_num(tl['accuracy'], 3)}, macro F1 "
                         f"{_num(tl['macro_f1'], 3)}", fontsize=9)
        ax = row[2]
        outputs = [k for k in r["base"]["details"] if k != "traffic_light"]
        if not outputs:
            ax.axis("off")
            continue
        stats = ("mae", "p50", "p90", "p99")
        width = 0.8 / (len(models) * len(stats))
        colours = {"base": "#999999", "fine-tuned": "#2b7bba"}
        for k, (name, m) in enumerate(models):
            for j, stat in enumerate(stats):
                values = [m["details"][o][stat] / max(1e-12, r["base"]["details"][o]["mae"]) for o in outputs]
                x = np.arange(len(outputs)) + (k * len(stats) + j) * width - 0.4 + width / 2
                ax.bar(x, values, width, color=colours[name], alpha=0.4 + 0.15 * j,
                       label=f"{name} {stat}")
        ax.axhline(1.0, color="black", lw=0.6, ls=":")
        ax.set_xticks(range(len(outputs)), outputs, fontsize=7, rotation=20)
        ax.set_ylabel("|error| / base MAE", fontsize=8)
        ax.set_title(f"{r['region']}: absolute error (MAE, p50, p90, p99)", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
