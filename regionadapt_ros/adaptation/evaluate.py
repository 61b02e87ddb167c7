"""Evaluation of a model pair on a region's held-out split, and the base-vs-fine-tuned comparison.

Metrics (all on the samples that label them):
- ``tl_macro_f1``: macro F1 over the traffic-light classes present in the labels (higher is better);
- ``lane_offset_mae`` [m], ``heading_mae`` [rad], ``obstacle_distance_mae`` [m], ``steering_mae`` [rad],
  ``accel_mae`` [m/s^2] (lower is better).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from regionadapt_ros.adaptation.train import TrainArrays, normalised_images, one_hot
from regionadapt_ros.core.contracts import LABELS, TL_CLASSES
from regionadapt_ros.models.registry import build_model, load_named_weights

L = {name: i for i, name in enumerate(LABELS)}
HIGHER_IS_BETTER = {
    "tl_macro_f1": True,
    "lane_offset_mae": False,
    "heading_mae": False,
    "obstacle_distance_mae": False,
    "steering_mae": False,
    "accel_mae": False,
}


@torch.no_grad()
def predict(weights: dict[str, dict[str, np.ndarray]], data: TrainArrays, region_dim: int = 0,
            batch: int = 256) -> dict[str, np.ndarray]:
    """Run the pair (PyTorch, CPU) over ``data``: tl (N,) class ids, lane (N,3), obstacle (N,2), control (N,2)."""
    perception = load_named_weights(build_model("perception", region_dim), weights["perception"])
    decision = load_named_weights(build_model("decision", region_dim), weights["decision"])
    outs: dict[str, list[np.ndarray]] = {"tl": [], "lane": [], "obstacle": [], "control": []}
    for s in range(0, len(data), batch):
        idx = np.arange(s, min(len(data), s + batch))
        region = one_hot(None if data.region_ids is None else data.region_ids[idx], region_dim)
        p = perception(torch.from_numpy(normalised_images(data.images[idx])),
                       torch.from_numpy(np.asarray(data.bev[idx], np.float32)), region)
        speed = torch.from_numpy(np.nan_to_num(data.labels[idx, L["speed"]:L["speed"] + 1]))
        d = decision(p["features"], speed, region)
        tl = p["tl_logits"].argmax(1)
        # NaN logits argmax to class 0 ("none"): a model that outputs NaN would score a perfect F1 on data where
        # no light is seen. They predict no class at all, which is wrong for every label.
        tl[~torch.isfinite(p["tl_logits"]).all(1)] = -1
        outs["tl"].append(tl.numpy())
        outs["lane"].append(p["lane"].numpy())
        outs["obstacle"].append(p["obstacle"].numpy())
        outs["control"].append(d["control"].numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in outs.items()}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(TL_CLASSES)) -> float:
    """Macro F1 over the classes present in ``y_true``."""
    scores = []
    for c in range(n_classes):
        if not np.any(y_true == c):
            continue
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def _mae(pred: np.ndarray, truth: np.ndarray) -> float:
    m = ~np.isnan(truth)
    return float(np.mean(np.abs(pred[m] - truth[m]))) if m.any() else float("nan")


def metrics(pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    tl = labels[:, L["tl_state"]]
    m = ~np.isnan(tl)
    return {
        "tl_macro_f1": macro_f1(tl[m].astype(int), pred["tl"][m]) if m.any() else float("nan"),
        "lane_offset_mae": _mae(pred["lane"][:, 0], labels[:, L["lane_offset"]]),
        "heading_mae": _mae(pred["lane"][:, 1], labels[:, L["heading_error"]]),
        "obstacle_distance_mae": _mae(pred["obstacle"][:, 0], labels[:, L["obstacle_distance"]]),
        "steering_mae": _mae(pred["control"][:, 0], labels[:, L["steering"]]),
        "accel_mae": _mae(pred["control"][:, 1], labels[:, L["accel"]]),
    }


# regression metric → (prediction key, column, label), for the detailed report
REGRESSION_OUTPUTS: dict[str, tuple[str, int, str]] = {
    "lane_offset_mae": ("lane", 0, "lane_offset"),
    "heading_mae": ("lane", 1, "heading_error"),
    "obstacle_distance_mae": ("obstacle", 0, "obstacle_distance"),
    "steering_mae": ("control", 0, "steering"),
    "accel_mae": ("control", 1, "accel"),
}
ERROR_PERCENTILES = (50, 90, 95, 99)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(TL_CLASSES)
                          ) -> dict[str, Any]:
    """Accuracy, macro F1 (over the classes present in ``y_true``), per-class precision / recall / F1 / support
    and the confusion matrix (rows = labelled class, columns = predicted class, order TL_CLASSES). A prediction of
    -1 (non-finite outputs: no class) is in no column: it counts against its class's recall and as
    ``no_prediction``, not as the last class."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    truth, predicted_class = y_true.astype(int), y_pred.astype(int)
    valid = predicted_class >= 0
    np.add.at(confusion, (truth[valid], predicted_class[valid]), 1)
    per_class = {}
    for c, name in enumerate(TL_CLASSES[:n_classes]):
        tp = int(confusion[c, c])
        predicted, support = int(confusion[:, c].sum()), int(np.sum(truth == c))
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = 2 * tp / (predicted + support) if predicted + support else float("nan")
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"samples": int(len(y_true)), "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else math.nan,
            "macro_f1": macro_f1(y_true, y_pred, n_classes), "per_class": per_class,
            "confusion": confusion.tolist(), "classes": list(TL_CLASSES[:n_classes]),
            "no_prediction": int(np.sum(~valid))}


def error_report(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """MAE, bias (mean signed error) and percentiles of the absolute error over the labelled samples."""
    m = ~np.isnan(truth)
    if not m.any():
        return {"samples": 0}
    err = pred[m] - truth[m]
    out: dict[str, Any] = {"samples": int(m.sum()), "mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err))}
    for q in ERROR_PERCENTILES:
        out[f"p{q}"] = float(np.percentile(np.abs(err), q))
    out["max"] = float(np.max(np.abs(err)))
    return out


def detailed_metrics(pred: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """Everything a person acts on: the traffic-light classification report and, per regression output, the
    error report; outputs the data does not label are left out."""
    out: dict[str, Any] = {}
    tl = labels[:, L["tl_state"]]
    m = ~np.isnan(tl)
    if m.any():
        out["traffic_light"] = classification_report(tl[m].astype(int), pred["tl"][m])
    for metric, (key, col, label) in REGRESSION_OUTPUTS.items():
        report = error_report(pred[key][:, col], labels[:, L[label]])
        if report["samples"]:
            out[metric.removesuffix("_mae")] = report
    return out


def infer_primary_metric(labels: np.ndarray) -> tuple[str, str]:
    """The primary metric a dataset's labels support, and why: imitation data (steering labelled) →
    steering_mae; else traffic-light labels → tl_macro_f1; else the first labelled regression output."""
    present = {name for name in LABELS if name != "speed" and not np.isnan(labels[:, L[name]]).all()}
    order = (("steering", "steering_mae"), ("tl_state", "tl_macro_f1"), ("lane_offset", "lane_offset_mae"),
             ("accel", "accel_mae"), ("obstacle_distance", "obstacle_distance_mae"), ("heading_error", "heading_mae"))
    for label, metric in order:
        if label in present:
            return metric, f"the data labels {', '.join(sorted(present))}"
    raise ValueError("the data labels none of the evaluated outputs (tl_state, lane_offset, heading_error, "
                     "obstacle_distance, steering, accel)")


def evaluate(weights: dict[str, dict[str, np.ndarray]], data: TrainArrays, region_dim: int = 0) -> dict[str, float]:
    return metrics(predict(weights, data, region_dim), data.labels)


def relative_improvement(metric: str, base: float, tuned: float) -> float:
    """Positive = better, as a fraction of the base value (F1: of the base's distance to 1 is NOT used; the
    plain relative change is reported so that the ≥ 20 % bar reads the same for every metric). A base of 0 has
    no fraction: the change is then absolute (an F1 from 0 to 0.9 is +0.9), so a fine-tune can still beat a
    base that scores nothing on the region."""
    if not np.isfinite(base) or not np.isfinite(tuned):
        return float("nan")
    change = (tuned - base) / abs(base) if base != 0 else tuned - base
    return change if HIGHER_IS_BETTER[metric] else -change


def compare(primary: str, base: dict[str, float], tuned: dict[str, float], min_gain: float = 0.0,
            max_regression: float = 0.05) -> dict[str, Any]:
    """Base vs fine-tuned on one region: does the fine-tuned model beat the base on the primary metric, and
    which other metrics got worse by more than ``max_regression`` (relative)."""
    gain = relative_improvement(primary, base[primary], tuned[primary])
    regressions = {}
    for k in HIGHER_IS_BETTER:
        if k == primary:
            continue
        r = relative_improvement(k, base[k], tuned[k])
        if np.isfinite(r) and r < -max_regression:
            regressions[k] = r
    return {
        "primary_metric": primary,
        "base": base[primary],
        "fine_tuned": tuned[primary],
        "relative_improvement": gain,
        "beats_base": bool(np.isfinite(gain) and gain > min_gain),
        "regressions": regressions,
    }
