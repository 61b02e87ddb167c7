"""The on-disk regional dataset format: round trip, splits, and refusal of small or corrupt datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.adaptation.dataset import (
    BEV_FILE,
    IMAGES_FILE,
    LABELS_FILE,
    META_FILE,
    MIN_SAMPLES,
    SPLITS_FILE,
    RegionDataset,
    build_region_dataset,
    split_indices,
    write_dataset,
)
from regionadapt_ros.adaptation.synthetic import GENERATOR_VERSION, generate_samples
from regionadapt_ros.core.contracts import BEV, LABELS
from regionadapt_ros.core.errors import DataError


def arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 96, 160, 3), dtype=np.uint8)
    bev = rng.random((n, BEV.channels, BEV.rows, BEV.cols), dtype=np.float32)
    labels = rng.uniform(-0.9, 0.9, size=(n, len(LABELS))).astype(np.float32)  # within every label's range
    labels[:, LABELS.index("tl_state")] = rng.integers(0, 4, n)
    labels[:, LABELS.index("obstacle_distance")] = rng.uniform(0.0, 60.0, n)
    labels[:, LABELS.index("free_space")] = rng.random(n)
    return images, bev, labels


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    images, bev, labels = arrays(40)
    labels[::3, LABELS.index("tl_state")] = np.nan
    return write_dataset(tmp_path / "ds", images, bev, labels, {"region": "urban_day", "seed": 7})


def test_round_trip_keeps_arrays_and_meta(dataset_dir: Path):
    images, bev, labels = arrays(40)
    labels[::3, LABELS.index("tl_state")] = np.nan
    ds = RegionDataset.open(dataset_dir)
    assert ds.n == len(ds) == 40 and ds.region == "urban_day"
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.bev, bev.astype(np.float16))
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.meta["label_names"] == list(LABELS) and ds.meta["source"] == "synthetic"
    assert ds.meta["format_version"] == 1 and ds.meta["seed"] == 7 and "created" in ds.meta
    assert isinstance(ds.images, np.memmap)


def test_splits_are_disjoint_cover_everything_and_are_deterministic(dataset_dir: Path):
    ds = RegionDataset.open(dataset_dir)
    parts = [ds.split(name) for name in ("train", "val", "test")]
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(40))
    assert [len(p) for p in parts] == [28, 6, 6]
    again = split_indices(40, 7)
    for name, part in zip(("train", "val", "test"), parts, strict=True):
        np.testing.assert_array_equal(part, again[name])
    assert not np.array_equal(split_indices(40, 8)["test"], again["test"])
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        ds.split("holdout")


def test_labelled_mask_follows_nan(dataset_dir: Path):
    ds = RegionDataset.open(dataset_dir)
    mask = ds.labelled_mask("tl_state")
    assert mask.dtype == bool and mask.shape == (40,)
    assert not mask[::3].any() and mask.sum() == 40 - len(range(0, 40, 3))
    assert ds.labelled_mask("speed").all()
    with pytest.raises(ValueError, match="unknown label 'colour'"):
        ds.labelled_mask("colour")


def test_rewriting_replaces_the_dataset_without_leftovers(dataset_dir: Path):
    images, bev, labels = arrays(25, seed=1)
    write_dataset(dataset_dir, images, bev, labels, {"region": "highway", "seed": 1})
    ds = RegionDataset.open(dataset_dir)
    assert ds.n == 25 and ds.region == "highway"
    np.testing.assert_array_equal(ds.images, images)
    assert [p.name for p in dataset_dir.parent.iterdir()] == ["ds"]


def test_too_few_samples_to_split_is_refused_naming_the_directory(tmp_path: Path):
    images, bev, labels = arrays(MIN_SAMPLES - 1)
    out = tmp_path / "tiny"
    with pytest.raises(DataError, match="too few samples to split") as exc:
        write_dataset(out, images, bev, labels, {"region": "urban_day"})
    assert exc.value.path == str(out)
    assert not out.exists()
    with pytest.raises(DataError, match="too few samples") as exc:
        build_region_dataset("mountain", 5, 0, out, workers=1, progress=False)
    assert exc.value.path == str(out)


def test_an_existing_dataset_with_too_few_samples_is_refused_on_open(dataset_dir: Path):
    meta = json.loads((dataset_dir / META_FILE).read_text())
    meta["n"] = 10
    (dataset_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="too few samples to split: n=10") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir)


def test_an_empty_split_is_refused_naming_splits_json(dataset_dir: Path):
    splits = json.loads((dataset_dir / SPLITS_FILE).read_text())
    splits["train"] += splits["val"]
    splits["val"] = []
    (dataset_dir / SPLITS_FILE).write_text(json.dumps(splits))
    with pytest.raises(DataError, match="split 'val' is empty") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir / SPLITS_FILE)


def test_overlapping_splits_are_refused(dataset_dir: Path):
    splits = json.loads((dataset_dir / SPLITS_FILE).read_text())
    splits["test"].append(splits["train"][0])
    (dataset_dir / SPLITS_FILE).write_text(json.dumps(splits))
    with pytest.raises(DataError, match="overlaps"):
        RegionDataset.open(dataset_dir)


def test_missing_splits_json_falls_back_to_the_seeded_split(dataset_dir: Path):
    (dataset_dir / SPLITS_FILE).unlink()
    ds = RegionDataset.open(dataset_dir)
    np.testing.assert_array_equal(ds.split("val"), split_indices(40, 7)["val"])


def test_missing_images_file_is_named(dataset_dir: Path):
    (dataset_dir / IMAGES_FILE).unlink()
    with pytest.raises(DataError, match="file is missing") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir / IMAGES_FILE)


def test_truncated_bev_file_is_named(dataset_dir: Path):
    path = dataset_dir / BEV_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"not a readable \.npy array") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path)


def test_garbage_header_is_named(dataset_dir: Path):
    path = dataset_dir / IMAGES_FILE
    path.write_bytes(b"this is not numpy data at all")
    with pytest.raises(DataError, match=r"not a readable \.npy array") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path)


def test_corrupt_meta_json_is_named(dataset_dir: Path):
    (dataset_dir / META_FILE).write_text("{ not json")
    with pytest.raises(DataError, match="not valid JSON") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir / META_FILE)


def test_meta_without_a_required_key_is_named(dataset_dir: Path):
    meta = json.loads((dataset_dir / META_FILE).read_text())
    del meta["region"]
    (dataset_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="key 'region' is missing") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir / META_FILE)


def test_wrong_label_dtype_or_shape_is_named(dataset_dir: Path):
    path = dataset_dir / LABELS_FILE
    np.save(path, np.zeros((40, len(LABELS)), dtype=np.float64))
    with pytest.raises(DataError, match="dtype float64, expected float32") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path)
    np.save(path, np.zeros((40, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"shape \(40, 3\)") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path)


def test_pickled_object_array_is_refused_without_unpickling(dataset_dir: Path):
    path = dataset_dir / LABELS_FILE
    np.save(path, np.array([{"x": 1}] * 40, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"not a readable \.npy array") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path)


def test_missing_directory_is_named(tmp_path: Path):
    with pytest.raises(DataError, match="not a dataset directory") as exc:
        RegionDataset.open(tmp_path / "nowhere")
    assert exc.value.path == str(tmp_path / "nowhere")


def test_build_region_dataset_writes_the_generated_samples(tmp_path: Path):
    ds = build_region_dataset("left_hand", 40, 9, tmp_path / "lh", workers=1, progress=False)
    ref = generate_samples("left_hand", 40, 9, workers=1, progress=False)
    assert ds.region == "left_hand" and ds.n == 40 and ds.meta["seed"] == 9
    assert ds.meta["generator"]["version"] == GENERATOR_VERSION and ds.meta["has_lidar"] is True
    np.testing.assert_array_equal(ds.images, ref["images"])
    np.testing.assert_array_equal(ds.bev, ref["bev"])
    np.testing.assert_array_equal(ds.labels, ref["labels"])
    reopened = RegionDataset.open(tmp_path / "lh")
    np.testing.assert_array_equal(reopened.split("train"), ds.split("train"))


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("label_names", 5, "label_names 5 differ"),
        ("region", [1], "must be a region id"),
        ("region", "../../etc", "must be a region id"),
        ("seed", "7", "seed '7' must be an integer or null"),
        ("seed", True, "seed True must be an integer"),
        ("has_lidar", "yes", "has_lidar 'yes' must be true, false or null"),
        ("has_lidar", 1, "has_lidar 1 must be"),
        ("created", 5, "created 5 must be a timestamp string"),
        ("bev_shape", "a", "bev_shape 'a' differs from the model contract"),
        ("source", {"a": 1}, "is not one of"),
    ],
)
def test_a_hand_edited_meta_value_of_the_wrong_type_is_named(dataset_dir: Path, key, value, needle) -> None:
    meta = json.loads((dataset_dir / META_FILE).read_text())
    meta[key] = value
    (dataset_dir / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError) as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(dataset_dir / META_FILE) and needle in exc.value.problem, exc.value.problem


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [("tl_state", 7.0, "tl_state 7.0 is not a class id"), ("tl_state", 1.5, "tl_state 1.5"),
     ("obstacle_distance", np.inf, "obstacle_distance is infinite")],
)
def test_label_values_the_trainer_cannot_take_are_refused_on_write_and_on_open(dataset_dir: Path, tmp_path: Path,
                                                                                column, value, needle) -> None:
    path = dataset_dir / LABELS_FILE
    labels = np.load(path)
    labels[5, LABELS.index(column)] = value
    np.save(path, labels)
    with pytest.raises(DataError, match="sample 5: ") as exc:
        RegionDataset.open(dataset_dir)
    assert exc.value.path == str(path) and needle in exc.value.problem
    images, bev, _ = arrays(40)
    with pytest.raises(DataError, match=needle):
        write_dataset(tmp_path / "other", images, bev, labels, {"region": "urban_day", "seed": 7})
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("meta", ["[]", '{"generator": 5}', '"x"', "{"])
def test_a_damaged_cached_dataset_is_generated_again(tmp_path: Path, meta: str) -> None:
    from regionadapt_ros.adaptation.recipe import Recipe, generate

    cached = tmp_path / "data" / "highway"
    cached.mkdir(parents=True)
    (cached / "meta.json").write_text(meta)
    recipe = Recipe(base_mix={}, region_samples=24, workers=1)
    out = generate(tmp_path, recipe, ("highway",))
    assert out == {"highway": cached}
    assert json.loads((cached / "meta.json").read_text())["generator"]["version"] == GENERATOR_VERSION


@pytest.mark.parametrize(("label", "value"), [("steering", 50.0), ("speed", -3e38), ("free_space", 5.0),
                                              ("obstacle_distance", -100.0)])
def test_a_label_beyond_any_vehicles_range_is_refused_when_the_dataset_is_opened(tmp_path, label, value):
    path = write_dataset(tmp_path / "ds", *arrays(40), {"region": "highway", "seed": 0})
    on_disk = np.load(path / "labels.npy", mmap_mode="r+")  # written by another tool, or edited by hand
    on_disk[7, LABELS.index(label)] = value
    on_disk.flush()
    del on_disk
    with pytest.raises(DataError, match=rf"labels\.npy: sample 7: {label} .* is outside .*: a wrong unit\?"):
        RegionDataset.open(path)


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0, 2.0])
def test_a_bev_cell_that_is_not_finite_or_outside_0_1_is_refused(tmp_path, value):
    path = write_dataset(tmp_path / "ds", *arrays(40), {"region": "highway", "seed": 0})
    on_disk = np.load(path / "bev.npy", mmap_mode="r+")
    on_disk[33, 1, 5, 9] = value
    on_disk.flush()
    del on_disk
    with pytest.raises(DataError, match=r"bev\.npy: sample 33: a grid cell is"):
        RegionDataset.open(path)


@pytest.mark.parametrize("planted", ["imported", "notes", "link"])
def test_train_all_never_replaces_a_dataset_it_did_not_generate(tmp_path: Path, planted: str) -> None:
    from regionadapt_ros.adaptation.recipe import Recipe, generate

    mine = write_dataset(tmp_path / "mine", *arrays(40), {"region": "highway", "seed": 0, "source": "rosbag"})
    cached = tmp_path / "work" / "data" / "highway"
    cached.parent.mkdir(parents=True)
    if planted == "imported":
        shutil.copytree(mine, cached)
    elif planted == "notes":
        cached.mkdir()
        (cached / "notes.txt").write_text("mine")
    else:
        cached.symlink_to(mine)
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    with pytest.raises(DataError, match="another --workdir"):
        generate(tmp_path / "work", Recipe(base_mix={}, region_samples=24, workers=1), ("highway",))
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    if planted == "notes":
        assert (cached / "notes.txt").read_text() == "mine"
