"""The keep-only-if-better gate for what the region's data does not label.

A fine-tune is compared with the base on the region's held-out split, but only where that split has labels.
The outputs it leaves unlabelled are checked here instead, by comparing the fine-tuned model's outputs with
the base model's outputs on the same inputs:

- on the region's held-out split (the samples that leave the output unlabelled): the mean absolute
  difference ``drift = mean |fine-tuned - base|`` must stay within ``output_fraction`` (default 0.5) of the
  base's own error on that output at home (``reference``); by the triangle inequality the fine-tuned error
  then differs from the base's by at most that much;
- on the base's home data (held-out split): the same drift limit, and where the home data labels the output,
  the fine-tuned error may be at most ``max_regression`` (default 5 %) worse than the base's;
- the traffic-light state, when unlabelled: the fine-tuned and base classes may disagree on at most
  ``tl_disagreement`` (default 10 %) of the samples.

Any check that fails refuses the bundle, with the output, the data, the measured value and the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from regionadapt_ros.adaptation.evaluate import REGRESSION_OUTPUTS, metrics, predict
from regionadapt_ros.adaptation.train import TrainArrays
from regionadapt_ros.core.contracts import LABELS

L = {name: i for i, name in enumerate(LABELS)}
TL_OUTPUT = "tl_macro_f1"


@dataclass(frozen=True)
class DriftTolerance:
    output_fraction: float = 0.5     # drift ≤ this x the base's home error of the output
    max_regression: float = 0.05     # labelled home data: fine-tuned error ≤ (1 + this) x the base's
    tl_disagreement: float = 0.10    # traffic-light classes differing from the base's on at most this fraction

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def unlabelled_outputs(train_labels: np.ndarray) -> list[str]:
    """Metrics whose label the region's training data leaves unlabelled on at least one sample."""
    out = [TL_OUTPUT] if np.isnan(train_labels[:, L["tl_state"]]).any() else []
    out += [m for m, (_, _, col) in REGRESSION_OUTPUTS.items() if np.isnan(train_labels[:, L[col]]).any()]
    return out


def _drift(base: Mapping[str, np.ndarray], tuned: Mapping[str, np.ndarray], metric: str, mask: np.ndarray
           ) -> float:
    if metric == TL_OUTPUT:
        return float(np.mean(base["tl"][mask] != tuned["tl"][mask]))
    key, col, _ = REGRESSION_OUTPUTS[metric]
    return float(np.mean(np.abs(tuned[key][mask, col] - base[key][mask, col])))


def check_unlabelled_outputs(
    base: Mapping[str, Mapping[str, np.ndarray]],
    tuned: Mapping[str, Mapping[str, np.ndarray]],
    region_test: TrainArrays,
    outputs: list[str],
    home_test: TrainArrays | None,
    reference: Mapping[str, float] | None,
    tolerance: DriftTolerance = DriftTolerance(),
    home_name: str = "home",
) -> dict[str, Any]:
    """Check ``outputs`` (metric names, see ``unlabelled_outputs``) of the fine-tuned weights against the base's.

    ``reference``: the base's error per metric on its home data (from ``home_test`` where it is labelled, else
    what the base bundle recorded); a regression output without a reference cannot be bounded and is reported
    as not checked. Returns {"outputs", "tolerance", "reference", "checks": [...], "refusals": [reasons],
    "not_checked": [reasons]}; the bundle is refused when "refusals" is not empty.
    """
    reference = dict(reference or {})
    checks: list[dict[str, Any]] = []
    not_checked: list[str] = []
    datasets: list[tuple[str, TrainArrays, bool]] = [("region", region_test, True)]
    home_metrics_base = home_metrics_tuned = None
    if home_test is not None and len(home_test):
        datasets.append((home_name, home_test, False))
        home_metrics_base = metrics(predict(base, home_test), home_test.labels)
        for m in outputs:
            value = home_metrics_base.get(m)
            if m != TL_OUTPUT and value is not None and np.isfinite(value):
                reference[m] = float(value)  # measured on the home data at hand: better than the recorded one
    elif home_test is None:
        not_checked.append("home data: none available (pass --home-data), so the outputs the region's data does "
                           "not label were checked on the region's data only")
    for name, data, only_unlabelled in datasets:
        pb, pt = predict(base, data), predict(tuned, data)
        for m in outputs:
            col = L["tl_state"] if m == TL_OUTPUT else L[REGRESSION_OUTPUTS[m][2]]
            mask = np.isnan(data.labels[:, col]) if only_unlabelled else np.ones(len(data), bool)
            if not mask.any():
                continue
            value = _drift(pb, pt, m, mask)
            if m == TL_OUTPUT:
                limit, what = tolerance.tl_disagreement, "traffic-light classes differing from the base's"
            else:
                if m not in reference or not np.isfinite(reference[m]) or reference[m] <= 0:
                    not_checked.append(f"{m} on {name}: no reference error of the base to bound its drift")
                    continue
                limit = tolerance.output_fraction * reference[m]
                what = f"mean |fine-tuned - base| (limit {tolerance.output_fraction:g} x the base's home error " \
                       f"{reference[m]:.4g})"
            checks.append({"data": name, "output": m, "kind": "drift", "value": value, "limit": limit,
                           "samples": int(mask.sum()), "ok": bool(value <= limit), "what": what})
        if not only_unlabelled and home_metrics_base is not None:
            home_metrics_tuned = metrics(pt, data.labels)
            for m in outputs:
                if m == TL_OUTPUT:
                    continue
                b, t = home_metrics_base.get(m), home_metrics_tuned.get(m)
                if b is None or t is None or not (np.isfinite(b) and np.isfinite(t)) or b <= 0:
                    continue
                change = (t - b) / b
                checks.append({"data": name, "output": m, "kind": "labelled error", "value": change,
                               "limit": tolerance.max_regression, "base": b, "fine_tuned": t,
                               "ok": bool(change <= tolerance.max_regression),
                               "what": "relative change of the error against the labels"})
    refusals = [_reason(c) for c in checks if not c["ok"]]
    return {"outputs": outputs, "tolerance": tolerance.as_dict(), "reference": reference, "checks": checks,
            "refusals": refusals, "not_checked": not_checked}


def _reason(check: dict[str, Any]) -> str:
    if check["kind"] == "labelled error":
        return (f"{check['output']} on {check['data']} data: {check['base']:.4g} → {check['fine_tuned']:.4g} "
                f"({check['value']:+.1%}, limit +{check['limit']:.0%})")
    if check["output"] == TL_OUTPUT:
        return (f"traffic-light state on {check['data']} data: {check['value']:.1%} of {check['samples']} "
                f"samples differ from the base (limit {check['limit']:.0%})")
    return (f"{check['output'].removesuffix('_mae')} on {check['data']} data drifted from the base by "
            f"{check['value']:.4g} on average over {check['samples']} samples (limit {check['limit']:.4g})")
