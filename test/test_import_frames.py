"""Labelled-frames directories and traffic-light image folders → datasets, on crops of the real comma2k19 road
frame (cut at test time from ../shared/realdata, see test/realdata.py); every refusal names the file, the line
and the problem and leaves nothing written."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from regionadapt_ros.adaptation.dataset import MIN_SAMPLES, RegionDataset
from regionadapt_ros.adaptation.importers import import_image_folder, import_labelled_frames
from regionadapt_ros.core.contracts import LABELS, OBSTACLE_MAX_M, TL_CLASSES
from regionadapt_ros.core.errors import DataError
from regionadapt_ros.core.preprocess import bev_grid, resize_rgb

FIXTURE = Path()  # the labelled-frames directory cut from the real road frame; set per test below
L = {name: i for i, name in enumerate(LABELS)}


@pytest.fixture(autouse=True)
def _real_frames(labelled_frames: Path) -> None:
    """Every test here imports crops of the real road frame (skipped without ../shared/realdata)."""
    global FIXTURE
    FIXTURE = labelled_frames


def fixture_rows() -> list[dict[str, str]]:
    with (FIXTURE / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def rgb_of(path: Path) -> np.ndarray:
    return resize_rgb(cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def frames_dir(root: Path, rows: list[dict[str, str]], columns: list[str] | None = None, lidar: bool = False,
               jsonl: bool = False) -> Path:
    """A labelled-frames directory with the fixture's images and the given label rows."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE / "images", root / "images")
    if lidar:
        shutil.copytree(FIXTURE / "lidar", root / "lidar")
    if jsonl:
        with (root / "labels.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    else:
        columns = columns or list(rows[0])
        with (root / "labels.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return root


def tl_rows(n: int = 23) -> list[dict[str, str]]:
    names = sorted(p.name for p in (FIXTURE / "images").iterdir())[:n]
    return [{"image": name, "tl_state": TL_CLASSES[i % len(TL_CLASSES)]} for i, name in enumerate(names)]


# ------------------------------------------------------------------------------------------------ imports
def test_fixture_imports_with_labels_lidar_and_real_images(tmp_path):
    result = import_labelled_frames(FIXTURE, tmp_path / "ds", "sf_ocean_view", progress=False)
    rows = [r for r in fixture_rows() if any(v for k, v in r.items() if k != "image")]
    assert result.n == len(rows) and result.skipped["rows_without_labels"] == 1
    assert result.skipped["images_not_in_label_file"] == 0
    ds = RegionDataset.open(tmp_path / "ds")
    assert ds.meta["source"] == "labelled_frames" and ds.meta["has_lidar"] is True
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(ds.images[i], rgb_of(FIXTURE / "images" / row["image"]))
        stem = Path(row["image"]).stem
        npy, raw = FIXTURE / "lidar" / f"{stem}.npy", FIXTURE / "lidar" / f"{stem}.bin"
        points = np.load(npy) if npy.exists() else np.fromfile(raw, "<f4").reshape(-1, 4)
        np.testing.assert_array_equal(ds.bev[i], bev_grid(points).astype(np.float16))
        cell = row["tl_state"].strip().lower()
        expected_tl = TL_CLASSES.index(cell) if cell in TL_CLASSES else int(cell)
        assert ds.labels[i, L["tl_state"]] == expected_tl
        if row["lane_offset"]:
            assert ds.labels[i, L["lane_offset"]] == pytest.approx(float(row["lane_offset"]))
        else:
            assert np.isnan(ds.labels[i, L["lane_offset"]])
    assert np.isnan(ds.labels[:, [L["curvature"], L["steering"], L["accel"]]]).all()
    assert (ds.labels[:, L["speed"]] == np.float32(8.9)).all()


def test_jsonl_without_lidar_gives_zero_bev_and_partial_labels(tmp_path):
    rows = tl_rows()
    rows[0]["lane_offset"] = 0.4
    rows[1]["tl_state"] = 2            # a class id
    rows[2]["tl_state"] = None         # null = not labelled, but lane is
    rows[2]["lane_offset"] = -0.25
    rows[3]["obstacle_distance"] = 250  # beyond the model's range: nothing ahead within range
    src = frames_dir(tmp_path / "frames", rows, jsonl=True)
    result = import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    ds = RegionDataset.open(result.path)
    assert ds.n == len(rows) and ds.meta["has_lidar"] is False and ds.meta["label_file"] == "labels.jsonl"
    assert not np.asarray(ds.bev).any()
    assert ds.labels[1, L["tl_state"]] == 2 and np.isnan(ds.labels[2, L["tl_state"]])
    assert ds.labels[2, L["lane_offset"]] == pytest.approx(-0.25)
    assert ds.labels[3, L["obstacle_distance"]] == OBSTACLE_MAX_M
    assert ds.meta["counts"]["obstacle_distance_clipped"] == 1
    assert np.isnan(ds.labels[4:, L["lane_offset"]]).all()


def test_split_column_is_honoured(tmp_path):
    rows = tl_rows()
    for i, row in enumerate(rows):
        row["split"] = "val" if i < 3 else "test" if i < 6 else "train"
    ds = RegionDataset.open(import_labelled_frames(frames_dir(tmp_path / "f", rows), tmp_path / "ds", "r",
                                                   progress=False).path)
    assert ds.split("val").tolist() == [0, 1, 2] and ds.split("test").tolist() == [3, 4, 5]
    assert ds.meta["split"] == "split column"


def test_image_folder_becomes_a_traffic_light_only_dataset(tmp_path):
    images = sorted((FIXTURE / "images").iterdir())
    folder = tmp_path / "tl"
    expected = {}
    for i, path in enumerate(images):
        cls = ("red", "green", "none", "yellow")[i % 4]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / cls / path.name)
        expected[(cls, path.name)] = TL_CLASSES.index(cls)
    (folder / "README.txt").write_text("not an image\n")
    result = import_image_folder(folder, tmp_path / "ds", "tokyo", progress=False)
    ds = RegionDataset.open(result.path)
    assert ds.n == len(images) and ds.meta["source"] == "image_folder" and ds.meta["has_lidar"] is False
    assert result.skipped["not_images"] == 1
    assert sorted(ds.labels[:, L["tl_state"]].astype(int).tolist()) == sorted(expected.values())
    others = [L[k] for k in LABELS if k != "tl_state"]
    assert np.isnan(ds.labels[:, others]).all()
    assert ds.meta["counts"]["per_class"] == {c: sum(1 for (k, _) in expected if k == c) for c in TL_CLASSES}
    # sample order is class folder by class folder, file by file
    first = sorted((folder / "green").iterdir())[0]
    np.testing.assert_array_equal(ds.images[0], rgb_of(first))


# ------------------------------------------------------------------------------------------------ refusals
def test_missing_image_names_label_file_line_and_image(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows())
    (src / "images" / "frame_0002.jpg").unlink()
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value) == f"{src / 'labels.csv'}: line 4: image 'frame_0002.jpg' not found in images/"
    assert not (tmp_path / "ds").exists()


def test_unknown_tl_state_value_names_line_and_classes(tmp_path):
    rows = tl_rows()
    rows[0]["tl_state"] = "blue"
    src = frames_dir(tmp_path / "f", rows)
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value).startswith(f"{src / 'labels.csv'}: line 2: tl_state 'blue' is not one of none, red, "
                                     "yellow, green")
    assert not (tmp_path / "ds").exists()


def test_non_numeric_label_value_is_refused(tmp_path):
    rows = tl_rows()
    rows[5]["lane_offset"] = "left"
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state", "lane_offset"])
    with pytest.raises(DataError, match=r"labels.csv: line 7: lane_offset 'left' is not a number"):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("steering", "1e300", r"line 7: steering '1e300' is outside -1.5708..1.5708 \(radians\)"),
    ("steering", "25", "steering '25' is outside"),          # degrees
    ("speed", "130", r"speed '130' is outside -100..100 \(m/s\)"),   # km/h
    ("lane_offset", str(2**62), "lane_offset '4611686018427387904' is outside -50..50"),
])
def test_a_label_of_a_wrong_unit_or_beyond_float32_is_refused(tmp_path, column, value, message):
    rows = tl_rows()
    for row in rows:
        row[column] = "0.1"
    rows[5][column] = value
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state", column])
    with pytest.raises(DataError, match=message):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_label_file_that_is_not_utf8_is_one_data_error(tmp_path, encoding):
    rows = tl_rows()
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state"])
    text = (src / "labels.csv").read_text() + "# café\n"
    (src / "labels.csv").write_bytes(text.encode(encoding))
    with pytest.raises(DataError, match=r"labels\.csv: is not UTF-8 text \(byte 0x"):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


def test_a_label_cell_beyond_csvs_field_limit_is_one_data_error(tmp_path):
    rows = tl_rows()
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state"])
    with (src / "labels.csv").open("a") as handle:
        handle.write("a" * 200_000 + ".png,red\n")
    with pytest.raises(DataError, match=r"labels\.csv: line \d+: not a CSV row \(field larger than field limit"):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


def test_unknown_label_column_is_refused(tmp_path):
    rows = tl_rows()
    for row in rows:
        row["weather"] = "fog"
    src = frames_dir(tmp_path / "f", rows)
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert "labels.csv: line 1: column 'weather' is not a label name" in str(err.value)
    assert "tl_state" in str(err.value)


def test_unknown_key_in_jsonl_is_refused(tmp_path):
    rows = tl_rows()
    rows[3]["tl"] = "red"
    src = frames_dir(tmp_path / "f", rows, jsonl=True)
    with pytest.raises(DataError, match=r"labels.jsonl: line 4: key 'tl' is not a label name"):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


def test_no_label_file_is_refused(tmp_path):
    src = tmp_path / "f"
    shutil.copytree(FIXTURE / "images", src / "images")
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(src) in str(err.value) and "no labels.csv or labels.jsonl: nothing is labelled" in str(err.value)


def test_label_file_without_label_column_is_refused(tmp_path):
    src = frames_dir(tmp_path / "f", [{"image": r["image"]} for r in tl_rows()])
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert f"{src / 'labels.csv'}: no label column: nothing is labelled" in str(err.value)


def test_label_file_with_only_empty_cells_is_refused(tmp_path):
    src = frames_dir(tmp_path / "f", [{"image": r["image"], "tl_state": "", "speed": ""} for r in tl_rows()])
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert f"{src / 'labels.csv'}: no labels at all: every label cell is empty" in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_too_few_labelled_frames_names_input_and_output(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows(MIN_SAMPLES - 5))
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    message = str(err.value)
    assert message.startswith(str(src / "labels.csv")) and str(tmp_path / "ds") in message
    assert "too few samples to split" in message
    assert not (tmp_path / "ds").exists()


def test_missing_lidar_sweep_is_refused_before_writing(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows(), lidar=True)
    (src / "lidar" / "frame_0004.npy").unlink()
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(src / "lidar") in str(err.value) and "frame_0004.npy or frame_0004.bin" in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_corrupt_image_is_named_and_nothing_is_written(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows())
    (src / "images" / "frame_0010.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value).startswith(f"{src / 'images' / 'frame_0010.jpg'}: not a readable PNG/JPEG image")
    assert not (tmp_path / "ds").exists()


def test_image_folder_with_an_unknown_class_folder_is_refused(tmp_path):
    folder = tmp_path / "tl"
    for cls in ("red", "blue"):
        shutil.copytree(FIXTURE / "images", folder / cls)
    with pytest.raises(DataError) as err:
        import_image_folder(folder, tmp_path / "ds", "r", progress=False)
    assert str(folder / "blue") in str(err.value)
    assert "folder name 'blue' is not a traffic-light class: none, red, yellow, green" in str(err.value)


def test_region_id_is_checked(tmp_path):
    with pytest.raises(DataError, match=r"--region.*'san francisco'"):
        import_labelled_frames(FIXTURE, tmp_path / "ds", "san francisco", progress=False)


def test_lidar_file_of_the_wrong_shape_is_named(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows(), lidar=True)
    np.save(src / "lidar" / "frame_0006.npy", np.zeros((10, 7), np.float32))
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value).startswith(f"{src / 'lidar' / 'frame_0006.npy'}: lidar array must be (N, 4)")
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------------ file kinds
@pytest.mark.parametrize("kind", ["fifo", "directory", "loop", "dangling"])
def test_a_label_file_image_or_sweep_that_is_not_a_regular_file_is_named_as_such(tmp_path, kind):
    """Not reported as missing (the user sees the file), and never opened (a FIFO would block)."""
    import os

    def replace(path: Path) -> str:
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
            return "is a FIFO (named pipe), not a regular file"
        if kind == "directory":
            path.mkdir()
            return "is a directory, not a regular file"
        os.symlink(path.name if kind == "loop" else "nowhere", path)
        return (f"is a symbolic link that does not resolve ({'looping' if kind == 'loop' else 'dangling'}), not a "
                "regular file")

    src = frames_dir(tmp_path / "a", tl_rows(), lidar=True)
    message = replace(src / "labels.csv")
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value) == f"{src / 'labels.csv'}: {message}"
    src = frames_dir(tmp_path / "b", tl_rows(), lidar=True)
    message = replace(src / "images" / "frame_0002.jpg")
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value) == f"{src / 'labels.csv'}: line 4: image 'frame_0002.jpg' in images/ {message}"
    src = frames_dir(tmp_path / "c", tl_rows(), lidar=True)
    sweep = next((src / "lidar").glob("frame_0004.*"))
    message = replace(sweep)
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value).startswith(f"{sweep}: {message} (the sweep of 'frame_0004.jpg')")
    assert not (tmp_path / "ds").exists()


def test_a_lidar_entry_that_is_a_file_is_refused_not_read_as_no_lidar(tmp_path):
    src = frames_dir(tmp_path / "f", tl_rows())
    (src / "lidar").write_bytes(b"sweeps?")
    with pytest.raises(DataError, match=r"lidar: is a regular file, not the folder of sweeps"):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


def test_two_images_with_one_stem_do_not_share_a_sweep(tmp_path):
    rows = tl_rows()
    src = frames_dir(tmp_path / "f", rows, lidar=True)
    (src / "images" / "sub").mkdir()
    shutil.copy(src / "images" / rows[3]["image"], src / "images" / "sub" / rows[3]["image"])
    rows.append({"image": f"sub/{rows[3]['image']}", "tl_state": "red"})
    frames_dir(tmp_path / "g", rows, lidar=True)
    src = tmp_path / "g"
    (src / "images" / "sub").mkdir()
    shutil.copy(src / "images" / rows[3]["image"], src / "images" / "sub" / rows[3]["image"])
    sweep = next((src / "lidar").glob(f"{Path(rows[3]['image']).stem}.*"))
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    assert str(err.value) == (f"{sweep}: is the sweep of two images, '{rows[3]['image']}' (line 5) and "
                              f"'sub/{rows[3]['image']}' (line {len(rows) + 1}): sweeps are matched by stem, so "
                              "give each image a distinct stem")
    assert not (tmp_path / "ds").exists()


def test_an_image_name_longer_than_the_file_system_takes_is_one_short_line(tmp_path):
    rows = tl_rows()
    rows[2]["image"] = "a" * 100_000 + ".png"
    src = frames_dir(tmp_path / "f", rows)
    with pytest.raises(DataError) as err:
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    text = str(err.value)
    assert text.startswith(f"{src / 'labels.csv'}: line 4: image 'aaaa") and len(text) < 400, text[:500]
    assert "(100004 characters) in images/ is a path that cannot be looked at (File name too long)" in text


@pytest.mark.parametrize("value", ["1_5", "\u0663", "\uff12", "0x1", "1,5", "- 1", "1e", "."])
def test_a_label_cell_is_a_plain_decimal_number_not_whatever_float_takes(tmp_path, value):
    rows = tl_rows()
    rows[5]["lane_offset"] = value
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state", "lane_offset"])
    with pytest.raises(DataError, match=re.escape(f"labels.csv: line 7: lane_offset {value!r} is not a number")):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


@pytest.mark.parametrize("value", ["1e0", "2.5", "\uff12", "+1"])
def test_a_traffic_light_class_id_is_written_in_digits(tmp_path, value):
    rows = tl_rows()
    rows[0]["tl_state"] = value
    src = frames_dir(tmp_path / "f", rows)
    with pytest.raises(DataError, match=re.escape(f"line 2: tl_state {value!r} is not one of")):
        import_labelled_frames(src, tmp_path / "ds", "r", progress=False)


def test_plain_numbers_in_every_spelling_a_writer_uses_are_read(tmp_path):
    rows = tl_rows()
    spellings = {5: ("-0.25", -0.25), 6: (" 1.5 ", 1.5), 7: ("2.", 2.0), 8: (".5", 0.5), 9: ("-2.5E-1", -0.25),
                 10: ("+3", 3.0)}
    for i, (text, _) in spellings.items():
        rows[i]["lane_offset"] = text
    rows[11]["tl_state"] = "2"
    rows[12]["tl_state"] = "3.0"  # a class id as pandas writes a float column
    src = frames_dir(tmp_path / "f", rows, columns=["image", "tl_state", "lane_offset"])
    import_labelled_frames(src, tmp_path / "ds", "r", progress=False)
    ds = RegionDataset.open(tmp_path / "ds")
    for i, (_, want) in spellings.items():
        assert ds.labels[i, L["lane_offset"]] == pytest.approx(want)
    assert ds.labels[11, L["tl_state"]] == 2.0 and ds.labels[12, L["tl_state"]] == 3.0
