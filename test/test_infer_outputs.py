"""``regionadapt infer``'s outputs against the files around them: the run never deletes or overwrites what it
did not write (an annotated/ folder of someone's files, an input, a --json that is an image), refuses before any
image runs, gives every image an annotated file of its own, matches sweeps by their relative path first and
shows hostile file names escaped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_infer import BASE, BOX, road_image

from regionadapt_ros.cli import main
from regionadapt_ros.file_inference import InferenceItem, annotated_names


def refusal(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_annotated_folder_of_someone_elses_files_is_refused_before_the_run_and_left_as_it_was(tmp_path, capsys):
    project = tmp_path / "proj"
    road_image(project / "annotated" / "photo1.png", 0)
    road_image(project / "annotated" / "sub" / "photo2.jpg", 1)
    (project / "annotated" / "notes.txt").write_text("notes")
    before = tree(project)
    # the inputs are the annotated folder itself, and then another folder: both refused, nothing touched
    err = refusal(capsys, ["infer", str(BASE), str(project / "annotated"), "--out", str(project), "--no-progress"])
    assert "the run replaces" in err and "annotated" in err
    other = tmp_path / "images"
    road_image(other / "a.png", 2)
    err = refusal(capsys, ["infer", str(BASE), str(other), "--out", str(project), "--no-progress"])
    assert "holds files that no earlier `regionadapt infer` run wrote" in err
    assert tree(project) == before and not (project / "outputs.csv").exists()


def test_an_earlier_runs_annotated_images_are_replaced_and_dropped_with_no_annotate(tmp_path):
    images = tmp_path / "images"
    road_image(images / "a.png", 0)
    road_image(images / "b.png", 1)
    out = tmp_path / "out"
    assert main(["infer", str(BASE), str(images), "--out", str(out), "--no-progress"]) == 0
    (images / "b.png").unlink()
    assert main(["infer", str(BASE), str(images), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [".regionadapt-infer", "a.png"]
    assert main(["infer", str(BASE), str(images), "--out", str(out), "--no-annotate", "--no-progress"]) == 0
    assert not (out / "annotated").exists() and (out / "outputs.csv").is_file()


def test_an_out_folder_inside_an_input_is_passed_over_and_one_inside_the_bundle_is_refused(tmp_path, capsys,
                                                                                          monkeypatch):
    images = tmp_path / "images"
    road_image(images / "a.png", 0)
    monkeypatch.chdir(images)
    # the default --out (infer_base) inside the input folder ".": its annotated images are not searched
    for _ in range(2):
        assert main(["infer", str(BASE), ".", "--json", "--no-progress"]) == 0
        assert [Path(r["image"]).name for r in json.loads(capsys.readouterr().out)["outputs"]] == ["a.png"]
    err = refusal(capsys, ["infer", str(BASE), str(images), "--out", str(BASE / "x"), "--no-progress"])
    assert f"is inside the input {BASE}" in err
    # a JSON file beside the images is no input
    assert main(["infer", str(BASE), str(images), "--json", str(images / "preds.json"), "--no-progress"]) == 0
    assert json.loads((images / "preds.json").read_text())["outputs"]


@pytest.mark.parametrize("case", ["image_swallowed", "bundle_manifest", "directory"])
def test_a_json_path_that_would_overwrite_an_input_is_refused_before_the_run(tmp_path, capsys, case):
    images = tmp_path / "nq"
    a, b = road_image(images / "a.png", 0), road_image(images / "b.jpg", 1)
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(BASE, bundle)
    argv = {"image_swallowed": ["--json", str(a), str(b)],           # --json took a.png as its value
            "bundle_manifest": [str(b), "--json", str(bundle / "manifest.json")],
            "directory": [str(b), "--json", str(images)]}[case]
    before = tree(tmp_path)
    err = refusal(capsys, ["infer", str(bundle), *argv, "--out", str(tmp_path / "out"), "--no-progress"])
    assert "--json" in err
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_every_image_gets_an_annotated_file_of_its_own_whatever_the_names(tmp_path):
    names = ["a.png", "a.jpg", "a.png.png", "x" * 251 + ".png", "x" * 251 + ".jpg", "d/c.png", "d/c.jpg"]
    annotated = annotated_names([InferenceItem(Path(n), n) for n in names])
    assert len(set(annotated)) == len(names), annotated
    assert all(len(os.fsencode(Path(n).name)) <= 255 for n in annotated)
    assert annotated[:3] == ["a.png.png", "a.jpg.png", "a.png~2.png"]
    folder = tmp_path / "same"
    for i, name in enumerate(names[:5]):
        road_image(folder / name, i)
    out = tmp_path / "out"
    assert main(["infer", str(BASE), str(folder), "--out", str(out), "--no-progress"]) == 0
    assert len([p for p in (out / "annotated").iterdir() if p.suffix == ".png"]) == 5


def test_a_sweep_at_the_images_relative_path_wins_over_one_of_its_bare_name(tmp_path, capsys):
    images, lidar = tmp_path / "img", tmp_path / "lid"
    road_image(images / "a.png", 0)
    road_image(images / "day" / "a.png", 1)
    road_image(images / "day" / "c.png", 2)
    lidar.mkdir()
    (lidar / "day").mkdir()
    BOX.astype("<f4").tofile(lidar / "a.bin")
    BOX[:10].astype("<f4").tofile(lidar / "day" / "a.bin")
    BOX[:20].astype("<f4").tofile(lidar / "day" / "c.BIN")  # suffixes match in either case, as images' do
    assert main(["infer", str(BASE), str(images), "--lidar", str(lidar), "--out", str(tmp_path / "o"), "--json",
                 "--no-progress"]) == 0
    rows = {Path(r["image"]).relative_to(images).as_posix(): r for r in json.loads(capsys.readouterr().out)["outputs"]}
    assert {k: r["lidar_points"] for k, r in rows.items()} == {"a.png": len(BOX), "day/a.png": 10, "day/c.png": 20}


def test_images_without_a_sweep_are_counted_and_a_lidar_file_is_not_a_folder(tmp_path, capsys):
    images, lidar = tmp_path / "img", tmp_path / "lid"
    road_image(images / "a.png", 0)
    lidar.mkdir()
    BOX.astype("<f4").tofile(lidar / "z.bin")
    assert main(["infer", str(BASE), str(images), "--lidar", str(lidar), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert "1 image(s) have no sweep in lid and ran camera-only" in capsys.readouterr().out
    err = refusal(capsys, ["infer", str(BASE), str(images), "--lidar", str(lidar / "z.bin"), "--out",
                           str(tmp_path / "o2"), "--no-progress"])
    assert "is a regular file" in err or "not a folder of sweeps" in err


def test_a_file_name_with_a_newline_cannot_forge_a_row_of_the_table(tmp_path, capsys):
    folder = tmp_path / "names"
    road_image(folder / "a\nFAKE  green 99% +0.00\x1b[31m.png", 0)
    assert main(["infer", str(BASE), str(folder), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "a\\nFAKE" in out and "\x1b" not in out
    assert not any(line.startswith("FAKE") for line in out.splitlines())


def test_a_lidar_sweep_folder_with_nan_only_points_still_refuses(tmp_path, capsys):
    # unchanged by the matching rules: the sweep found at the relative path is the one read
    images, lidar = tmp_path / "img", tmp_path / "lid"
    road_image(images / "a.png", 0)
    lidar.mkdir()
    np.full((5, 4), np.nan, "<f4").tofile(lidar / "a.bin")
    err = refusal(capsys, ["infer", str(BASE), str(images), "--lidar", str(lidar), "--out", str(tmp_path / "o"),
                           "--no-progress"])
    assert "none of its 5 points has a finite x, y, z" in err


def test_with_trusted_keys_an_unsigned_or_foreign_bundle_is_refused(tmp_path, capsys):
    import shutil

    from regionadapt_ros.core.signing import generate_keypair

    images = tmp_path / "images"
    road_image(images / "a.png", 0)
    _, public, _ = generate_keypair(tmp_path / "keys", "fleet")
    project_key = BASE.parents[1] / "config" / "keys" / "regionadapt_project.public.pem"
    unsigned = shutil.copytree(BASE, tmp_path / "unsigned")
    (unsigned / "signature.json").unlink()
    err = refusal(capsys, ["infer", str(unsigned), str(images), "--key", str(project_key), "--out",
                           str(tmp_path / "o1"), "--no-progress"])
    assert "signature.json: missing: the bundle is unsigned" in err
    err = refusal(capsys, ["infer", str(BASE), str(images), "--key", str(public), "--out", str(tmp_path / "o2"),
                           "--no-progress"])
    assert "which is not a trusted key" in err
    assert main(["infer", str(BASE), str(images), "--key", str(project_key), "--out", str(tmp_path / "o3"),
                 "--no-progress"]) == 0
