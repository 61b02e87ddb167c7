"""Output directories that are replaced as a whole (datasets, bundles): ``.``, a directory of someone else's
files, a file, a symbolic link, the current directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bundle_support import architectures, random_weights

from regionadapt_ros.adaptation.dataset import BEV_SHAPE, RegionDataset, write_dataset
from regionadapt_ros.cli import main
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.contracts import IMAGE_H, IMAGE_W, LABELS
from regionadapt_ros.core.errors import BundleError, DataError


def tiny_dataset(n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
    bev = rng.random((n, *BEV_SHAPE), dtype=np.float32)
    labels = rng.random((n, len(LABELS)), dtype=np.float32)
    labels[:, LABELS.index("tl_state")] = rng.integers(0, 4, n)
    return images, bev, labels


def write(out: Path, seed: int = 0) -> Path:
    return write_dataset(out, *tiny_dataset(), {"region": "highway", "seed": seed, "source": "synthetic"})


def test_a_directory_of_other_files_is_never_replaced(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "Documents"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="holds files and is not a dataset"):
        write(home)
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]  # no staging directory left behind

    with pytest.raises(BundleError, match="holds files and is not a bundle"):
        bundle_io.write_bundle(home, "base", 1, random_weights(1), "full", None, architectures(), {},
                               overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Documents"]


def test_an_earlier_dataset_and_an_empty_directory_are_replaced(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ds", seed=1)
    write(tmp_path / "ds", seed=2)
    assert RegionDataset.open(tmp_path / "ds").meta["seed"] == 2
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty")
    assert (tmp_path / "empty" / "meta.json").is_file()


@pytest.mark.parametrize("name", [".", "..", "/"])
def test_a_path_with_no_name_of_its_own_is_one_error(tmp_path: Path, monkeypatch, capsys, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="names no directory of its own"):
        write(Path(name))
    code = main(["data", "generate", "--region", "highway", "--n", "40", "--out", name])
    err = capsys.readouterr().err
    assert code != 0 and "internal error" not in err and "names no directory of its own" in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_current_directory_by_another_name_is_refused(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (Path("../work"), work, tmp_path):
        with pytest.raises(DataError, match="current directory"):
            write(out)
    assert work.is_dir() and list(work.iterdir()) == []


def test_a_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a directory"):
        write(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_a_symbolic_link_keeps_pointing_at_the_replaced_target(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    big_disk = tmp_path / "mnt" / "datasets" / "highway"
    write(big_disk, seed=1)
    link = tmp_path / "highway"
    link.symlink_to(big_disk)
    assert write(link, seed=2) == link
    assert link.is_symlink() and link.resolve() == big_disk.resolve()
    assert json.loads((big_disk / "meta.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["highway", "mnt"]  # nothing parked beside the link
    assert sorted(p.name for p in big_disk.parent.iterdir()) == ["highway"]

    bundle_dir = tmp_path / "mnt" / "bundles" / "base"
    bundle_io.write_bundle(bundle_dir, "base", 1, random_weights(1), "full", None, architectures(), {})
    bundle_link = tmp_path / "base"
    bundle_link.symlink_to(bundle_dir)
    returned = bundle_io.write_bundle(bundle_link, "base", 2, random_weights(2), "full", None, architectures(), {},
                                      overwrite=True)
    assert returned == bundle_link and bundle_link.is_symlink()
    assert bundle_io.read_bundle(bundle_dir).manifest["bundle_version"] == 2


def test_a_dangling_symbolic_link_gets_its_target_created(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "ds"
    link.symlink_to(tmp_path / "elsewhere" / "ds")
    write(link)
    assert link.is_symlink() and (tmp_path / "elsewhere" / "ds" / "meta.json").is_file()
