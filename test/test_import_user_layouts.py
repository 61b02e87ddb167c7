"""A user's own image folders import as they are laid out: their own train/val/test split folders (either
spelling), flat class folders with the seeded split, and images that are symbolic links to files elsewhere.
The images are drawn here (a lamp on a dark housing), so nothing depends on outside data."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from regionadapt_ros.adaptation.dataset import RegionDataset
from regionadapt_ros.adaptation.importers import import_image_folder, import_labelled_frames
from regionadapt_ros.cli import main
from regionadapt_ros.core.contracts import LABELS, TL_CLASSES
from regionadapt_ros.core.errors import DataError

TL = LABELS.index("tl_state")
COLOURS = {"none": (90, 90, 90), "red": (0, 0, 230), "yellow": (0, 200, 230), "green": (60, 220, 0)}  # BGR


def draw(path: Path, cls: str, k: int) -> Path:
    img = np.full((60, 40, 3), 20 + 5 * (k % 7), np.uint8)
    cv2.circle(img, (20, 15 + 15 * (k % 3)), 8, COLOURS[cls], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def class_folders(root: Path, per_class: int, start: int = 0, classes=TL_CLASSES) -> dict[str, int]:
    for cls in classes:
        for k in range(per_class):
            draw(root / cls / f"{cls}_{start + k:03d}.png", cls, start + k)
    return {cls: per_class for cls in classes}


@pytest.mark.parametrize("names", [("train", "val", "test"), ("training", "validation", "testing")])
def test_split_folders_give_the_users_split(tmp_path, names):
    folder = tmp_path / "crops"
    for split, n, start in zip(names, (8, 3, 4), (0, 100, 200), strict=True):
        class_folders(folder / split, n, start)
    result = import_image_folder(folder, tmp_path / "ds", "tokyo", progress=False)
    ds = RegionDataset.open(result.path)
    assert {k: len(ds.split(k)) for k in ("train", "val", "test")} == {"train": 32, "val": 12, "test": 16}
    assert ds.meta["split"].startswith("folders train: " + names[0] + "/")
    # every test sample is one of the test folder's images: its label matches its class folder
    test_classes = ds.labels[ds.split("test"), TL].astype(int)
    assert sorted(np.bincount(test_classes, minlength=4).tolist()) == [4, 4, 4, 4]
    others = [i for i in range(len(LABELS)) if i != TL]
    assert np.isnan(ds.labels[:, others]).all()


def test_a_missing_val_split_is_carved_from_train(tmp_path):
    folder = tmp_path / "crops"
    class_folders(folder / "train", 10)
    class_folders(folder / "test", 3, 100)
    ds = RegionDataset.open(import_image_folder(folder, tmp_path / "ds", "r", progress=False).path)
    assert len(ds.split("test")) == 12 and len(ds.split("val")) == 6 and len(ds.split("train")) == 34
    assert "val: 15% of train (seeded)" in ds.meta["split"]


def test_flat_class_folders_keep_the_seeded_split(tmp_path):
    folder = tmp_path / "crops"
    class_folders(folder, 6)
    ds = RegionDataset.open(import_image_folder(folder, tmp_path / "ds", "r", progress=False).path)
    assert ds.meta["split"] == "seeded random" and ds.n == 24


@pytest.mark.parametrize("layout, message", [
    (("train/red", "red"), "mixes split folders (train) with class folders (red)"),
    (("train/red", "training/red"), "both train/ and training/ hold the train split"),
    (("val/red", "test/red"), "has split folders but no train/ (or training/)"),
])
def test_inconsistent_split_layouts_are_refused(tmp_path, layout, message):
    folder = tmp_path / "crops"
    for k, sub in enumerate(layout):
        for j in range(12):
            draw(folder / sub / f"{k}_{j}.png", "red", j)
    with pytest.raises(DataError) as err:
        import_image_folder(folder, tmp_path / "ds", "r", progress=False)
    assert message in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_symlinked_images_are_imported_wherever_their_targets_are(tmp_path):
    store = tmp_path / "shared_store"
    folder = tmp_path / "crops"
    for cls in TL_CLASSES:
        (folder / cls).mkdir(parents=True)
        for k in range(6):
            target = draw(store / f"{cls}_{k}.png", cls, k)
            (folder / cls / f"{k}.png").symlink_to(target)
    ds = RegionDataset.open(import_image_folder(folder, tmp_path / "ds", "r", progress=False).path)
    assert ds.n == 24 and ds.meta["counts"]["not_images"] == 0


def test_labelled_frames_may_link_anywhere_but_names_may_not_leave_images(tmp_path):
    store = tmp_path / "store"
    frames = tmp_path / "frames"
    (frames / "images").mkdir(parents=True)
    rows = []
    for k in range(24):
        cls = TL_CLASSES[k % 4]
        (frames / "images" / f"f{k:02d}.png").symlink_to(draw(store / f"{k}.png", cls, k))
        rows.append([f"f{k:02d}.png", cls])
    with (frames / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "tl_state"], *rows])
    ds = RegionDataset.open(import_labelled_frames(frames, tmp_path / "ds", "r", progress=False).path)
    assert ds.n == 24 and ds.meta["counts"]["images_not_in_label_file"] == 0

    draw(tmp_path / "outside.png", "red", 0)
    with (frames / "labels.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(["../../outside.png", "red"])
    with pytest.raises(DataError, match=r"line 26: image '../../outside.png' is outside images/"):
        import_labelled_frames(frames, tmp_path / "ds2", "r", progress=False)


def test_cli_prints_the_split_it_used(tmp_path, capsys):
    folder = tmp_path / "crops"
    class_folders(folder / "train", 6)
    class_folders(folder / "val", 2, 50)
    class_folders(folder / "test", 2, 80)
    assert main(["data", "import", "image-folder", str(folder), "--out", str(tmp_path / "ds"), "--region", "r",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "splits: train 24, val 8, test 8 (folders train: train/, val: val/, test: test/)" in out
