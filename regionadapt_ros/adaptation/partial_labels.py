"""Fine-tuning on partial labels: what the labels reach, and how the outputs they do not reach stay the base's.

A regional dataset may label only some outputs (an image folder sorted by traffic-light state labels
``tl_state`` and nothing else). The task losses then only see what is labelled, but the networks share their
trunks: training the trunk for traffic lights moves every other output with it, and nothing in the loss pulls
them back. Two mechanisms keep the unlabelled outputs where the base model had them:

- **freezing what no label reaches**: an output group that no training sample labels has its own parameters
  frozen (its head; for the control outputs the whole decision network and the perception's feature head),
  so the bundle does not even carry them;
- **distillation towards the base on the unlabelled outputs**: for every sample and output that is not
  labelled, the fine-tuned model is pulled towards the base model's output on the same input (the base is
  the teacher), so the shared trunk may change only in ways the unlabelled outputs do not see.

Output groups and their label columns (``core.contracts.LABELS``):

- ``tl``: ``tl_state`` (distilled with the KL divergence of the class distributions);
- ``lane``: ``lane_offset``, ``heading_error``, ``curvature`` (smooth L1 on the scaled difference);
- ``obstacle``: ``obstacle_distance``, ``free_space`` (smooth L1 on the scaled difference);
- ``control``: ``steering``, ``accel`` (squared scaled difference, and the perception's feature vector, the
  decision network's input, so that the control outputs stay the base's at every speed, not only at the
  speeds the region's data carries).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from regionadapt_ros.core.contracts import LABELS, OBSTACLE_MAX_M

L = {name: i for i, name in enumerate(LABELS)}

GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "tl": ("tl_state",),
    "lane": ("lane_offset", "heading_error", "curvature"),
    "obstacle": ("obstacle_distance", "free_space"),
    "control": ("steering", "accel"),
}
# Parameters (names in DrivingPair) that serve one output group only: frozen when no sample labels it.
GROUP_PARAMETERS: dict[str, tuple[str, ...]] = {
    "tl": ("perception.tl_head.",),
    "lane": ("perception.lane_head.",),
    "obstacle": ("perception.obstacle_head.",),
    "control": ("decision.", "perception.feature_head."),
}
# Scales that make the differences of each output comparable (the task losses use the same ones).
LANE_SCALE = (1.0, 0.05, 0.01)
OBSTACLE_SCALE = (OBSTACLE_MAX_M / 6.0, 0.2)
CONTROL_SCALE = (0.1, 1.0)


def group_columns(group: str) -> list[int]:
    return [L[name] for name in GROUP_COLUMNS[group]]


def label_coverage(labels: np.ndarray) -> dict[str, int]:
    """Per output group, how many label cells (samples x columns) of ``labels`` (N, len(LABELS)) are given."""
    return {g: int((~np.isnan(labels[:, group_columns(g)])).sum()) for g in GROUP_COLUMNS}


def unlabelled_groups(labels: np.ndarray) -> list[str]:
    """Output groups that no sample of ``labels`` labels at all."""
    return [g for g, n in label_coverage(labels).items() if n == 0]


def has_unlabelled_cells(labels: np.ndarray) -> bool:
    """True when any sample leaves any trained output unlabelled (distillation has something to do)."""
    cols = [c for g in GROUP_COLUMNS for c in group_columns(g)]
    return bool(np.isnan(labels[:, cols]).any())


def frozen_parameter_prefixes(labels: np.ndarray) -> tuple[str, ...]:
    """Prefixes of the parameters that no label of ``labels`` reaches (see GROUP_PARAMETERS)."""
    return tuple(p for g in unlabelled_groups(labels) for p in GROUP_PARAMETERS[g])


def _trained_columns() -> list[int]:
    return [c for g in GROUP_COLUMNS for c in group_columns(g)]


def anchor_rows(y: np.ndarray | torch.Tensor):
    """(B,) bool: rows that label nothing at all — the base's home samples added for rehearsal (an importer never
    keeps a region sample without a label). Distillation averages over them and over the region's rows apart,
    so a small region set is not drowned by the home anchors, nor the other way round."""
    cols = _trained_columns()
    if isinstance(y, torch.Tensor):
        return torch.isnan(y[:, cols]).all(dim=1)
    return np.isnan(y[:, cols]).all(axis=1)


def distill_counts(y: np.ndarray) -> dict[str, float]:
    """Per distillation term and per part (region rows "<term>", anchor rows "<term>@anchor"), the number of
    unlabelled cells (for features: rows with a control label missing) in the GLOBAL batch ``y``
    (B, len(LABELS)), so ranks of a distributed run add up exactly."""
    anchor = anchor_rows(y)
    out: dict[str, float] = {}
    for part, rows in (("", ~anchor), ("@anchor", anchor)):
        sub = y[rows]
        for group in GROUP_COLUMNS:
            out[group + part] = max(1.0, float(np.isnan(sub[:, group_columns(group)]).sum()))
        out["features" + part] = max(1.0, float(np.isnan(sub[:, group_columns("control")]).any(axis=1).sum()))
    return out


def distillation_loss(out: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], y: torch.Tensor,
                      weights: dict[str, float], counts: dict[str, float], feature_scale: float) -> torch.Tensor:
    """Distillation towards the teacher on the cells that ``y`` (B, len(LABELS)) leaves unlabelled (NaN).

    ``out`` / ``teacher``: the pair's outputs, tl_logits (B, 4), lane (B, 3), obstacle (B, 2), control (B, 2),
    features (B, FEATURE_DIM); the teacher's are constants. Each term is a sum over the unlabelled cells of the
    region's rows divided by ``counts[term]``, plus the same over the anchor rows divided by
    ``counts[term@anchor]`` (``distill_counts`` of the global batch), weighted like its task loss.
    """
    total = out["control"].new_zeros(())
    anchor = anchor_rows(y)
    for part, rows in (("", ~anchor), ("@anchor", anchor)):
        if not rows.any():
            continue
        total = total + _distill_part({k: v[rows] for k, v in out.items()},
                                      {k: v[rows] for k, v in teacher.items()}, y[rows], weights, counts, part,
                                      feature_scale)
    return total


def _distill_part(out: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], y: torch.Tensor,
                  weights: dict[str, float], counts: dict[str, float], part: str, feature_scale: float
                  ) -> torch.Tensor:
    total = out["control"].new_zeros(())
    tl_missing = torch.isnan(y[:, L["tl_state"]])
    if tl_missing.any():
        log_p = nn.functional.log_softmax(out["tl_logits"][tl_missing], dim=1)
        q = nn.functional.softmax(teacher["tl_logits"][tl_missing], dim=1)
        kl = nn.functional.kl_div(log_p, q, reduction="sum")
        total = total + weights["tl"] * kl / counts["tl" + part]
    for group, scale, loss in (("lane", LANE_SCALE, "smooth_l1"), ("obstacle", OBSTACLE_SCALE, "smooth_l1"),
                               ("control", CONTROL_SCALE, "squared")):
        missing = torch.isnan(y[:, group_columns(group)])
        if not missing.any():
            continue
        s = out[group].new_tensor(scale).expand_as(out[group])
        diff = (out[group] - teacher[group]) / s
        if loss == "smooth_l1":
            err = nn.functional.smooth_l1_loss(diff[missing], torch.zeros_like(diff[missing]), reduction="sum")
        else:
            err = (diff[missing] ** 2).sum()
        total = total + weights[group] * err / counts[group + part]
    no_control = torch.isnan(y[:, group_columns("control")]).any(dim=1)
    if no_control.any():
        diff = (out["features"][no_control] - teacher["features"][no_control]) / feature_scale
        total = total + weights["control"] * (diff ** 2).mean(dim=1).sum() / counts["features" + part]
    return total
