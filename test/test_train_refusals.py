"""Training that cannot produce a model says so instead of writing the weights it started from: a loss that
diverges (NaN or inf on every validation) and data without a label the models learn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.adaptation.dataset import RegionDataset, write_dataset
from regionadapt_ros.cli import main
from regionadapt_ros.core.contracts import LABELS

TINY = ["--no-onnx", "--epochs", "1", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "highway"
    assert main(["data", "generate", "--region", "highway", "--n", "24", "--out", str(out), "--workers", "1"]) == 0
    return out


def test_a_diverging_loss_is_refused_and_no_bundle_is_written(tiny, tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["train-base", str(tiny), "--out", str(out), *TINY, "--lr", "1e12"]) == 1
    err = capsys.readouterr().err
    assert "the loss diverged: no epoch gave a finite validation loss" in err and "lower --lr" in err
    assert not out.exists()


def test_data_without_a_label_to_learn_from_is_refused(tiny, tmp_path, capsys):
    data = RegionDataset.open(tiny)
    labels = np.full(np.shape(data.labels), np.nan, np.float32)
    labels[:, LABELS.index("speed")] = data.labels[:, LABELS.index("speed")]  # the input alone
    unlabelled = write_dataset(tmp_path / "unlabelled", np.asarray(data.images), np.asarray(data.bev), labels,
                               {"region": "highway", "seed": 0})
    out = tmp_path / "base"
    assert main(["train-base", str(unlabelled), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "no sample has a label the trained outputs learn from" in err and "Traceback" not in err
    assert not out.exists()


def test_nan_outputs_are_wrong_for_every_light_and_a_base_scoring_zero_can_be_beaten(tiny):
    from regionadapt_ros.adaptation.evaluate import compare, macro_f1, predict, relative_improvement
    from regionadapt_ros.adaptation.train import TrainArrays
    from regionadapt_ros.core import bundle as bundle_io

    data = RegionDataset.open(tiny)
    arrays = TrainArrays(np.asarray(data.images), np.asarray(data.bev), np.asarray(data.labels, np.float32))
    base = bundle_io.read_bundle(Path(__file__).resolve().parents[1] / "bundles" / "base").resolve()
    poisoned = {m: {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in base[m].items()}
                for m in ("perception", "decision")}
    pred = predict(poisoned, arrays)
    assert (pred["tl"] == -1).all()  # argmax of NaN logits is class 0, "none"
    truth = np.zeros(len(pred["tl"]), int)  # "none" everywhere: NaN outputs would have matched it perfectly
    assert macro_f1(truth, pred["tl"]) == 0.0
    from regionadapt_ros.adaptation.evaluate import classification_report

    report = classification_report(truth, pred["tl"])
    assert report["no_prediction"] == len(truth) and sum(map(sum, report["confusion"])) == 0
    assert report["per_class"]["none"]["recall"] == 0.0  # missed, not counted as the last class
    assert relative_improvement("tl_macro_f1", 0.0, 0.9) == pytest.approx(0.9)
    from regionadapt_ros.adaptation.evaluate import HIGHER_IS_BETTER

    others = dict.fromkeys(HIGHER_IS_BETTER, 0.5)
    assert compare("tl_macro_f1", {**others, "tl_macro_f1": 0.0}, {**others, "tl_macro_f1": 0.9})["beats_base"]
    assert relative_improvement("steering_mae", 0.0, 0.1) == pytest.approx(-0.1)


@pytest.mark.parametrize("seed", ["-1", "4294967296", "18446744073709551616"])
def test_a_seed_beyond_32_bits_is_refused_before_anything_runs(tiny, tmp_path, capsys, seed):
    """Seeds are cut to 32 bits by the generators: 2**32 gave the dataset of seed 0 (a train/held-out leak), and
    one beyond 64 bits wrote a dataset that could not be read back."""
    for argv in (["data", "generate", "--region", "highway", "--n", "24", "--out", str(tmp_path / "d")],
                 ["train-base", str(tiny), "--out", str(tmp_path / "b"), *TINY]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--seed", seed])
        assert exit_.value.code == 2
        assert f"argument --seed: '{seed}' must be an integer in [0, 4294967295]" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "b").exists()


def test_outputs_are_checked_before_anything_trains(tiny, tmp_path, capsys, monkeypatch):
    from regionadapt_ros.adaptation import workflow

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained before the outputs were checked")

    monkeypatch.setattr(workflow, "train_base", must_not_train)
    monkeypatch.setattr(workflow, "finetune", must_not_train)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("someone's files\n")
    assert main(["train-base", str(tiny), "--out", str(other), *TINY]) == 1
    assert "exists, holds files and is not a bundle" in capsys.readouterr().err
    base = Path(__file__).resolve().parents[1] / "bundles" / "base"
    for argv, needle in (
        (["--out", str(base)], "is the --base bundle: the fine-tune would replace the base"),
        (["--out", str(tmp_path / "ft"), "--region", "bad name"], "--region: 'bad name' must be letters"),
        (["--out", str(tmp_path / "ft"), "--json", str(tmp_path)], "is a directory; give a file name"),
        (["--out", str(tmp_path / "ft"), "--json", str(tiny / "meta.json")], "it would overwrite a file there"),
        (["--out", str(tmp_path / "ft"), "--report", str(base / "manifest.json")], "it would overwrite a file"),
        (["--out", str(tmp_path / "ft"), "--json", str(tmp_path / "ft" / "manifest.json")],
         "it would overwrite a file there"),
        (["--out", str(tmp_path / "notes.txt" / "ft")], "is not a directory"),
    ):
        (tmp_path / "notes.txt").write_text("a file")
        before = {p: p.read_bytes() for p in (tiny / "meta.json", base / "manifest.json")}
        assert main(["finetune", str(tiny), "--base", str(base), *argv, "--epochs", "1", "--no-progress"]) == 1
        assert needle in capsys.readouterr().err
        assert {p: p.read_bytes() for p in before} == before
    assert (base / "manifest.json").is_file() and (other / "notes.txt").is_file()
    # evaluate: none of its outputs lands on an input, nor reaches one through a link
    (tmp_path / "link.png").symlink_to(base / "perception.safetensors")
    weights = (base / "perception.safetensors").read_bytes()
    for option, path in (("--json", tiny / "meta.json"), ("--markdown", base / "manifest.json"),
                         ("--plot", tmp_path / "link.png")):
        assert main(["evaluate", "--base", str(base), "--data", f"highway={tiny}", option, str(path)]) == 1
        assert "it would overwrite a file there" in capsys.readouterr().err
    assert (base / "perception.safetensors").read_bytes() == weights


def test_export_does_not_overwrite_a_bundles_onnx_files(tmp_path, capsys):
    import shutil

    repo = Path(__file__).resolve().parents[1]
    copy = tmp_path / "highway"
    shutil.copytree(repo / "bundles" / "highway", copy)
    assert main(["export", str(repo / "bundles" / "highway"), "--base", str(repo / "bundles" / "base"),
                 "--out", str(copy)]) == 1
    assert "--out is a bundle; export writes its ONNX files into a directory of their own" in capsys.readouterr().err
    assert main(["bundle", "verify", str(copy), "--base", str(repo / "bundles" / "base")]) == 0  # untouched


def test_evaluate_refuses_a_region_given_twice(tiny, capsys):
    base = Path(__file__).resolve().parents[1] / "bundles" / "base"
    assert main(["evaluate", "--base", str(base), "--data", f"highway={tiny}", "--data", f"highway={tiny}"]) == 1
    assert "--data: region 'highway' is given twice" in capsys.readouterr().err


def test_two_datasets_of_one_region_are_both_in_the_base_test_metrics(tiny, tmp_path):
    from regionadapt_ros.adaptation.evaluate import evaluate
    from regionadapt_ros.adaptation.train import TrainArrays
    from regionadapt_ros.adaptation.workflow import load_split
    from regionadapt_ros.core import bundle as bundle_io

    second = tmp_path / "highway_2"
    data = RegionDataset.open(tiny)
    flipped = np.asarray(data.images)[:, :, ::-1].copy()  # another drive of the region: other test samples
    write_dataset(second, flipped, np.asarray(data.bev), np.asarray(data.labels), {"region": "highway", "seed": 0})
    out = tmp_path / "base"
    assert main(["train-base", str(tiny), str(second), "--out", str(out), *TINY]) == 0
    bundle = bundle_io.read_bundle(out)
    reported = bundle.manifest["metrics"]["test"]
    assert set(reported) == {"highway"}
    weights = bundle.resolve()
    both = evaluate({m: dict(weights[m]) for m in weights}, TrainArrays.concat([load_split(tiny, "test"),
                                                                               load_split(second, "test")]))
    only_second = evaluate({m: dict(weights[m]) for m in weights}, load_split(second, "test"))
    same = [k for k in both if np.isfinite(both[k])]
    assert same and all(reported["highway"][k] == pytest.approx(both[k]) for k in same)
    assert any(reported["highway"][k] != pytest.approx(only_second[k]) for k in same)  # not the last one alone


def test_a_written_bundle_is_readable_by_other_users_and_format_version_must_be_the_integer(tiny, tmp_path):
    import json
    import stat

    out = tmp_path / "base"
    assert main(["train-base", str(tiny), "--out", str(out), *TINY]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # mkdtemp's 0700 kept a node of another user out
    meta = json.loads((tiny / "meta.json").read_text())
    from regionadapt_ros.core.errors import DataError

    for wrong in (True, 1.0):
        copy = tmp_path / f"copy_{wrong!r}"
        copy.mkdir()
        for f in tiny.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        (copy / "meta.json").write_text(json.dumps({**meta, "format_version": wrong}))
        with pytest.raises(DataError, match="format_version"):
            RegionDataset.open(copy)


def test_a_batch_larger_than_the_data_names_the_option(tiny, tmp_path, capsys):
    assert main(["train-base", str(tiny), "--out", str(tmp_path / "b"), "--no-onnx", "--epochs", "1",
                 "--batch-size", "100000", "--no-progress"]) == 1
    assert "training needs at least batch size / 4 = 25000 training samples (--batch-size 100000)" in \
        capsys.readouterr().err


def test_a_primary_metric_the_data_does_not_label_is_refused(tiny, tmp_path, capsys):
    data = RegionDataset.open(tiny)
    labels = np.array(data.labels)
    labels[:, LABELS.index("steering")] = np.nan
    no_steering = write_dataset(tmp_path / "no_steering", np.asarray(data.images), np.asarray(data.bev), labels,
                                {"region": "highway", "seed": 0})
    base = Path(__file__).resolve().parents[1] / "bundles" / "base"
    assert main(["evaluate", "--base", str(base), "--data", f"highway={no_steering}",
                 "--primary-metric", "steering_mae"]) == 1
    assert "--primary-metric: steering_mae: the data labels no steering" in capsys.readouterr().err


def test_evaluating_a_bundle_or_dataset_under_another_regions_name_is_warned_about(tiny, capsys):
    repo = Path(__file__).resolve().parents[1]
    assert main(["evaluate", "--base", str(repo / "bundles" / "base"), "--data", f"urban_night={tiny}",
                 "--bundle", f"urban_night={repo / 'bundles' / 'highway'}"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {tiny} is a dataset of region 'highway', used as 'urban_night'" in err
    assert "is a bundle of region 'highway', evaluated as 'urban_night'" in err
