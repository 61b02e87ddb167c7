"""Imported data on the training side: partial labels fine-tune only what they label, and a base bundle of
another architecture is refused before any training starts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.adaptation import workflow
from regionadapt_ros.adaptation.importers import import_labelled_frames
from regionadapt_ros.adaptation.train import TrainConfig, Trainer
from regionadapt_ros.adaptation.workflow import load_split
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.contracts import TL_CLASSES
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.models.registry import build_model, named_weights


def tl_only_dataset(tmp_path: Path, labelled_frames: Path) -> Path:
    """The real-frame crops labelled with traffic-light state only."""
    src = tmp_path / "frames"
    shutil.copytree(labelled_frames / "images", src / "images")
    names = sorted(p.name for p in (src / "images").iterdir())
    with (src / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "tl_state"])
        for i, name in enumerate(names):
            writer.writerow([name, TL_CLASSES[i % len(TL_CLASSES)]])
    return import_labelled_frames(src, tmp_path / "ds", "tl_only", progress=False).path


def base_weights(seed: int = 5) -> dict[str, dict[str, np.ndarray]]:
    import torch

    torch.manual_seed(seed)
    return {m: named_weights(build_model(m)) for m in ("perception", "decision")}


def test_traffic_light_labels_fine_tune_only_the_traffic_light_head(tmp_path, labelled_frames):
    data = tl_only_dataset(tmp_path, labelled_frames)
    base = base_weights()
    cfg = TrainConfig(method="head", epochs=1, batch_size=8, lr=1e-2, progress=False, seed=1)
    result = Trainer(cfg, base).fit(load_split(data, "train"), load_split(data, "val"))
    changed = {(m, name) for m in base for name, w in base[m].items()
               if not np.array_equal(w, result.weights[m][name])}
    assert changed, "the traffic-light head did not train at all"
    assert all(m == "perception" and name.startswith("tl_head.") for m, name in changed), sorted(changed)


def test_finetune_refuses_a_base_bundle_of_another_architecture_before_training(tmp_path, monkeypatch,
                                                                                labelled_frames):
    data = tl_only_dataset(tmp_path, labelled_frames)
    base = base_weights()
    # A perception net with a 5-class traffic-light head: a different architecture
    other = {m: dict(w) for m, w in base.items()}
    other["perception"]["tl_head.weight"] = np.zeros((5, 128), np.float32)
    other["perception"]["tl_head.bias"] = np.zeros(5, np.float32)
    bundle = tmp_path / "base_bundle"
    bundle_io.write_bundle(bundle, "base", 1, other, "full", None,
                           {m: bundle_io.fingerprint_of(w) for m, w in other.items()}, {"kind": "base"})

    class NoTraining:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("training started although the base bundle does not fit")

    monkeypatch.setattr(workflow, "Trainer", NoTraining)
    with pytest.raises(DataError) as err:
        workflow.finetune("tl_only", data, bundle, tmp_path / "out", TrainConfig(method="head", progress=False),
                          "tl_macro_f1")
    assert str(bundle) in str(err.value) and "base bundle refused" in str(err.value)
    assert "tl_head" in str(err.value)
    assert not (tmp_path / "out").exists()
