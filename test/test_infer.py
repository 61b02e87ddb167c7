"""``regionadapt infer``: a bundle (or base + delta) on image files and folders, with a lidar sweep per image
when there is one; every output of both networks in CSV and JSON, and the annotated images. The images and
sweeps are made here; the bundles are the shipped ones."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from regionadapt_ros.cli import main
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.preprocess import bev_grid, image_tensor
from regionadapt_ros.file_inference import COLUMNS
from regionadapt_ros.models.registry import build_model, load_named_weights

REPO = Path(__file__).resolve().parents[1]
BASE, DELTA = REPO / "bundles" / "base", REPO / "bundles" / "highway"  # highway is a LoRA delta on the base
BOX = np.array([[18.0 + 0.1 * i, -0.5 + 0.05 * i, -0.8, 0.6] for i in range(40)]
               + [[5.0 + i, 6.0, -1.7, 0.2] for i in range(30)], np.float32)   # a car ahead and a kerb line


def road_image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    img = np.zeros((240, 400, 3), np.uint8)
    img[:110] = (220, 170, 120)
    img[110:] = (80, 80, 80)
    cv2.line(img, (200, 110), (120 + 20 * seed, 239), (240, 240, 240), 4)
    img = np.clip(img.astype(np.int16) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("infer")
    images = root / "images"
    road_image(images / "a.png", 0)
    road_image(images / "night" / "b.jpg", 1)
    (images / "README.txt").write_text("not an image")
    lidar = root / "lidar"
    lidar.mkdir()
    BOX.astype("<f4").tofile(lidar / "a.bin")                         # KITTI layout: x, y, z, intensity
    return {"root": root, "images": images, "lidar": lidar}


def expected_outputs(image: Path, points: np.ndarray | None, speed: float = 0.0) -> dict[str, float]:
    """The resolved bundle run directly in PyTorch on the same preprocessing as serving."""
    weights = bundle_io.read_bundle(DELTA).resolve(bundle_io.read_bundle(BASE).resolve())
    perception = load_named_weights(build_model("perception"), dict(weights["perception"]))
    decision = load_named_weights(build_model("decision"), dict(weights["decision"]))
    rgb = cv2.cvtColor(cv2.imread(str(image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    bev = np.zeros((1, 3, 64, 64), np.float32) if points is None else bev_grid(points)[None]
    with torch.no_grad():
        p = perception(torch.from_numpy(image_tensor(rgb)), torch.from_numpy(bev))
        d = decision(p["features"], torch.tensor([[speed]]))
    return {"lane_offset": float(p["lane"][0, 0]), "obstacle_distance": float(p["obstacle"][0, 0]),
            "steering": float(d["control"][0, 0]), "accel": float(d["control"][0, 1])}


def test_a_delta_bundle_on_a_folder_writes_every_output_and_annotated_images(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(DELTA), str(inputs["images"]), "--base", str(BASE), "--lidar", str(inputs["lidar"]),
                 "--out", str(out), "--speed", "8.0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "highway@v" in printed and "1 file(s) in the folders are not images" in printed
    assert f"1 image(s) have no sweep in {inputs['lidar'].name} and ran camera-only" in printed
    with (out / "outputs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS) and [Path(r["image"]).name for r in rows] == ["a.png", "b.jpg"]
    a, b = rows
    assert a["lidar"].endswith("a.bin") and a["lidar_points"] == str(len(BOX)) and b["lidar"] == ""
    probs = [float(a[f"tl_p_{c}"]) for c in ("none", "red", "yellow", "green")]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5) and float(a["tl_confidence"]) == pytest.approx(max(probs))
    want = expected_outputs(inputs["images"] / "a.png", BOX, speed=8.0)
    for key, value in want.items():
        assert float(a[key]) == pytest.approx(value, rel=1e-4, abs=1e-5), key
    data = json.loads((out / "outputs.json").read_text())
    assert len(data["outputs"]) == 2
    assert data["skipped"] == {"not_images": 1, "not_regular": 0, "unreadable_folders": 0, "no_sweep": 1}
    for name in ("a.png", "night/b.png"):
        img = cv2.imread(str(out / "annotated" / name))
        assert img is not None and img.shape[:2] == (240, 400)


def test_a_delta_bundle_without_its_base_is_refused_by_name(inputs, tmp_path, capsys):
    assert main(["infer", str(DELTA), str(inputs["images"] / "a.png"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "is a delta bundle" in err and "--base" in err and "Traceback" not in err


def test_a_sweep_in_the_sensor_frame_with_its_extrinsic_gives_the_same_outputs(inputs, tmp_path, capsys):
    # The same sweep in nuScenes' LIDAR_TOP convention (x right, y forward) as a 5-field .pcd.bin
    lidar = tmp_path / "lidar"
    lidar.mkdir()
    sensor = np.column_stack([-BOX[:, 1], BOX[:, 0], BOX[:, 2], BOX[:, 3], np.zeros(len(BOX))]).astype("<f4")
    sensor.tofile(lidar / "a.bin")
    image = str(inputs["images"] / "a.png")
    assert main(["infer", str(BASE), image, "--lidar", str(inputs["lidar"]), "--out", str(tmp_path / "plain"),
                 "--json", "--no-annotate", "--no-progress"]) == 0
    plain = json.loads(capsys.readouterr().out)["outputs"][0]
    assert main(["infer", str(BASE), image, "--lidar", str(lidar), "--bin-fields", "5", "--lidar-extrinsic", "0",
                 "0", "0", "0", "0", str(-math.pi / 2), "--out", str(tmp_path / "ext"), "--json", "--no-annotate",
                 "--no-progress"]) == 0
    rotated = json.loads(capsys.readouterr().out)["outputs"][0]
    for key in ("obstacle_distance", "free_space", "lane_offset", "steering", "accel"):
        assert rotated[key] == pytest.approx(plain[key], abs=1e-5), key
    assert main(["infer", str(BASE), image, "--lidar", str(lidar), "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 1   # 5-field records read as 4 fields do not divide
    assert "is not a whole number of 4-float32 records" in capsys.readouterr().err


def test_a_file_name_that_is_not_utf8_is_served_and_written_back_as_its_bytes(tmp_path, capsys):
    # cv2.imwrite crashed the process on such a path; the CSV writer raised half-way through.
    folder = tmp_path / "names"
    folder.mkdir()
    odd = road_image(tmp_path / "odd.png", 2).read_bytes()
    raw = os.fsencode(folder) + b"/\xff\xfe.png"
    with open(raw, "wb") as handle:
        handle.write(odd)
    out = tmp_path / "out"
    assert main(["infer", str(BASE), str(folder), "--out", str(out), "--no-progress"]) == 0
    assert "\\udcff\\udcfe.png" in capsys.readouterr().out  # its bytes, escaped
    annotated = [n for n in os.listdir(os.fsencode(out / "annotated")) if not n.startswith(b".")]
    assert annotated == [b"\xff\xfe.png"]
    table = (out / "outputs.csv").read_bytes()
    assert b"/\xff\xfe.png," in table and len(table.splitlines()) == 2


def test_images_that_share_a_stem_get_annotated_images_of_their_own(tmp_path):
    folder = tmp_path / "same"
    road_image(folder / "a.png", 0)
    road_image(folder / "a.jpg", 3)
    road_image(folder / "b.png", 1)
    out = tmp_path / "out"
    assert main(["infer", str(BASE), str(folder), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [".regionadapt-infer", "a.jpg.png", "a.png.png",
                                                                     "b.png"]


def test_a_run_that_fails_on_an_image_leaves_the_previous_outputs_as_they_were(tmp_path, capsys):
    folder = tmp_path / "mix"
    road_image(folder / "a.png", 0)
    out = tmp_path / "out"
    assert main(["infer", str(BASE), str(folder), "--out", str(out), "--no-progress"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    road_image(folder / "b.png", 1)
    good = (folder / "b.png").read_bytes()
    (folder / "c.png").write_bytes(good[: len(good) // 2])  # cut short
    assert main(["infer", str(BASE), str(folder), "--out", str(out), "--no-progress"]) == 1
    assert "c.png" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # no annotated b.png beside the old table, no staging folder left
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("speed", ["1e308", "-1", "nan", "151"])
def test_a_speed_no_road_vehicle_reaches_is_an_argument_error(speed, tmp_path, capsys):
    # 1e308 m/s became inf as the float32 model input, and every output NaN.
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(BASE), str(tmp_path), "--speed", speed])
    assert exit_info.value.code == 2
    assert f"argument --speed: '{speed}' must be a number in [0, 150]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_lidar_file_of_only_non_finite_points_is_refused_and_non_finite_points_are_not_counted(inputs, tmp_path,
                                                                                                  capsys):
    lidar = tmp_path / "lidar"
    lidar.mkdir()
    np.full((70, 4), np.nan, "<f4").tofile(lidar / "a.bin")
    image = inputs["images"] / "a.png"
    assert main(["infer", str(BASE), str(image), "--lidar", str(lidar), "--out", str(tmp_path / "o"),
                 "--no-progress", "--no-annotate"]) == 1
    assert "a.bin: none of its 70 points has a finite x, y, z" in capsys.readouterr().err
    mixed = np.vstack([BOX, np.full((25, 4), np.inf, np.float32)]).astype("<f4")
    mixed.tofile(lidar / "a.bin")
    assert main(["infer", str(DELTA), str(image), "--base", str(BASE), "--lidar", str(lidar),
                 "--out", str(tmp_path / "o"), "--no-progress", "--no-annotate"]) == 0
    with (tmp_path / "o" / "outputs.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["lidar_points"] == str(len(BOX))
    assert float(row["obstacle_distance"]) == pytest.approx(expected_outputs(image, BOX)["obstacle_distance"],
                                                            abs=1e-4)


def test_entries_named_like_images_that_are_not_files_are_counted_and_never_opened(tmp_path):
    from regionadapt_ros.file_inference import collect_inputs

    folder = tmp_path / "images"
    road_image(folder / "a.png", 0)
    os.mkfifo(folder / "fifo.png")              # opening it would block
    os.symlink("nowhere.png", folder / "dangling.jpg")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink("/dev/zero", folder / "zero.png")  # endless
    (folder / "notes.txt").write_text("x")
    items, skipped = collect_inputs([folder], None)
    assert [i.name for i in items] == ["a.png"]
    assert skipped == {"not_images": 1, "not_regular": 4, "unreadable_folders": 0, "no_sweep": 0}


def test_an_input_or_sweep_that_is_not_a_regular_file_is_refused_naming_what_it_is(tmp_path, capsys):
    road_image(tmp_path / "a.png", 0)
    os.mkfifo(tmp_path / "pipe.png")
    assert main(["infer", str(BASE), str(tmp_path / "pipe.png"), "--out", str(tmp_path / "o")]) == 1
    assert f"{tmp_path / 'pipe.png'}: is a FIFO (named pipe), not an image file or folder" in capsys.readouterr().err
    lidar = tmp_path / "lidar"
    lidar.mkdir()
    os.mkfifo(lidar / "a.bin")  # the sweep was meant: running camera-only would hide it
    assert main(["infer", str(BASE), str(tmp_path / "a.png"), "--lidar", str(lidar), "--out",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{lidar / 'a.bin'}: is a FIFO (named pipe), not a regular file (the sweep of a.png)" in err


def test_two_images_that_would_share_one_sweep_are_refused(tmp_path, capsys):
    folder = tmp_path / "images"
    road_image(folder / "a.png", 0)
    road_image(folder / "a.jpg", 1)
    lidar = tmp_path / "lidar"
    lidar.mkdir()
    BOX.astype("<f4").tofile(lidar / "a.bin")
    assert main(["infer", str(BASE), str(folder), "--lidar", str(lidar), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{lidar / 'a.bin'}: is the sweep of both a.jpg and a.png" in err and len(err.strip().splitlines()) == 1


def test_extreme_but_finite_sweeps_run_without_numpy_warnings(tmp_path, capsys):
    """Coordinates past float32's range, an all-NaN intensity channel and an extrinsic that throws the sweep
    far away: the points are off the grid (or not finite) and the run says nothing else on stderr."""
    import warnings

    from regionadapt_ros.adaptation.importers.common import read_lidar_file
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.core.frames import CloudFrames, RigidTransform, parse_extrinsic

    near = np.array([[10.0, 0.0, -1.0, np.nan]] * 5, np.float32)
    far = np.array([[3e38, -3e38, 0.0, np.nan], [-3e38, 3e38, 1e30, np.nan]], np.float32)
    np.save(tmp_path / "f64.npy", np.array([[1e300, 0.0, 0.0, 0.5]] * 3 + [[12.0, 1.0, -1.0, 0.5]], np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        grid = bev_grid(np.concatenate([near, far]))
        assert grid[0].sum() > 0 and np.count_nonzero(grid[0]) == 1  # the near points, in one cell
        assert np.isfinite(grid).all() and grid[2].max() == 0.0       # no intensity to infer
        swept = read_lidar_file(tmp_path / "f64.npy")
        assert np.isinf(swept[:3, 0]).all() and swept[3, 0] == 12.0
        with pytest.raises(ConfigError, match=r"puts the sensor 1e\+300 m from"):  # no sensor is mounted there
            parse_extrinsic([1e300, 0, 0, 0, 0, 0], "--lidar-extrinsic")
        frames = CloudFrames(extrinsic=RigidTransform.from_xyz_rpy([1e300, 0, 0, 0, 0, 0]))
        moved, _ = frames.to_vehicle(near, "sensor")
        assert not np.isfinite(moved[:, 0]).any()
        assert not bev_grid(moved).any()
    road_image(tmp_path / "a.png", 0)
    lidar = tmp_path / "lidar"
    lidar.mkdir()
    np.concatenate([near, far]).astype("<f4").tofile(lidar / "a.bin")
    assert main(["infer", str(BASE), str(tmp_path / "a.png"), "--lidar", str(lidar), "--out", str(tmp_path / "o"),
                 "--no-annotate", "--no-progress"]) == 0
    assert "Warning" not in capsys.readouterr().err
