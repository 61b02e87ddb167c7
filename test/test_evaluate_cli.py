"""``regionadapt evaluate`` and ``finetune`` on a custom region: any region name, the primary metric from the
labels or ``--primary-metric``, ``--data`` required, and a report people can act on (per-class precision /
recall / F1, confusion matrix, error percentiles; JSON for machines, a plot for people)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.adaptation.dataset import build_region_dataset
from regionadapt_ros.adaptation.evaluate import classification_report, error_report, infer_primary_metric
from regionadapt_ros.cli import main
from regionadapt_ros.core.contracts import LABELS

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "bundles" / "base")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from test_partial_labels import tl_only_copy

    root = tmp_path_factory.mktemp("evaluate")
    full = build_region_dataset("urban_night", 120, 21, root / "full", workers=1, progress=False).path
    return {"full": full, "tl": tl_only_copy(full, root / "tl", "kyoto_lights")}


def test_classification_and_error_reports_are_computed_from_the_counts():
    y_true = np.array([1, 1, 1, 3, 3, 0])
    y_pred = np.array([1, 1, 3, 3, 2, 0])
    r = classification_report(y_true, y_pred)
    assert r["confusion"] == [[1, 0, 0, 0], [0, 2, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["red"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": 0.8, "support": 3}
    assert r["per_class"]["green"]["precision"] == 0.5 and np.isnan(r["per_class"]["yellow"]["recall"])
    e = error_report(np.array([0.0, 1.0, 2.0, 10.0]), np.array([0.0, 0.0, np.nan, 0.0]))
    assert e["samples"] == 3 and e["mae"] == pytest.approx(11 / 3) and e["max"] == 10.0
    assert e["p50"] == 1.0 and e["bias"] == pytest.approx(11 / 3)


def test_primary_metric_follows_the_labels():
    labels = np.full((4, len(LABELS)), np.nan, np.float32)
    labels[:, LABELS.index("tl_state")] = 1
    assert infer_primary_metric(labels)[0] == "tl_macro_f1"
    labels[:, LABELS.index("steering")] = 0.1
    assert infer_primary_metric(labels)[0] == "steering_mae"
    with pytest.raises(ValueError, match="labels none"):
        infer_primary_metric(np.full((4, len(LABELS)), np.nan, np.float32))


def test_evaluate_a_custom_region_with_json_and_plot(data, tmp_path, capsys):
    plot = tmp_path / "eval.png"
    assert main(["evaluate", "--base", BASE, "--data", f"kyoto_lights={data['tl']}",
                 "--data", f"my_city={data['full']}", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    kyoto, city = out["regions"]
    assert kyoto["region"] == "kyoto_lights" and kyoto["primary_metric"] == "tl_macro_f1"
    assert kyoto["primary_reason"].startswith("inferred")
    tl = kyoto["base"]["details"]["traffic_light"]
    assert set(tl) >= {"accuracy", "macro_f1", "per_class", "confusion"} and len(tl["confusion"]) == 4
    assert sum(map(sum, tl["confusion"])) == kyoto["samples"]
    assert set(kyoto["base"]["details"]) == {"traffic_light"}          # nothing else is labelled there
    assert city["primary_metric"] == "steering_mae"                     # inferred: the data has commands
    accel = city["base"]["details"]["accel"]
    assert accel["p50"] <= accel["p90"] <= accel["p99"] <= accel["max"]
    assert plot.stat().st_size > 10_000


def test_evaluate_takes_a_primary_metric_and_needs_data(data, capsys):
    assert main(["evaluate", "--base", BASE, "--data", f"my_city={data['full']}",
                 "--primary-metric", "lane_offset_mae"]) == 0
    text = capsys.readouterr().out
    assert "primary metric: lane_offset_mae (--primary-metric)" in text
    assert "lane_offset [m]" in text and "p90" in text
    assert main(["evaluate", "--base", BASE]) == 1
    err = capsys.readouterr().err
    assert "--data: nothing to evaluate" in err and "Traceback" not in err
    assert main(["evaluate", "--base", BASE, "--data", f"a={data['full']}", "--bundle", f"b={BASE}"]) == 1
    assert "no --data for region(s) b" in capsys.readouterr().err


def test_finetune_a_custom_region_infers_its_primary_metric_and_prints_the_gate(data, tmp_path, capsys):
    report = tmp_path / "outcome.json"
    code = main(["finetune", str(data["tl"]), "--base", BASE, "--out", str(tmp_path / "bundle"), "--method", "head",
                 "--epochs", "2", "--home-data", str(data["full"]), "--json", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert "kyoto_lights: primary metric tl_macro_f1 (inferred: the data labels tl_state)" in out
    assert "home data: --home-data" in out
    outcome = json.loads(report.read_text())
    gate = outcome["comparison"]["unlabelled_outputs"]
    assert gate["home_data"] == [str(data["full"])] and gate["checks"]
    # head-only with traffic-light labels changes no other output at all: every drift is zero
    assert all(c["value"] == 0 for c in gate["checks"] if c["kind"] == "drift" and c["output"] != "tl_macro_f1")
    assert code == (0 if outcome["kept"] else 3)
