"""``regionadapt data``: generate, import (rosbag, frames, image-folder) and info, run as the user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_import_rosbag import write_drive_bag

from regionadapt_ros.adaptation.dataset import RegionDataset
from regionadapt_ros.cli import main
from regionadapt_ros.core.contracts import LABELS

REPO = Path(__file__).resolve().parents[1]


def test_generate_then_info(tmp_path, capsys):
    out = tmp_path / "highway"
    assert main(["data", "generate", "--region", "highway", "--n", "24", "--seed", "3", "--out", str(out),
                 "--workers", "1", "--no-progress"]) == 0
    assert "24 synthetic samples of highway (seed 3)" in capsys.readouterr().out
    ds = RegionDataset.open(out)
    assert ds.meta["source"] == "synthetic" and ds.meta["seed"] == 3
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 24 and info["source"] == "synthetic"
    assert sum(info["splits"].values()) == 24
    assert {k: v["fraction"] for k, v in info["labels"].items()} == dict.fromkeys(LABELS, 1.0)


def test_import_frames_then_info_reports_labelled_fractions(tmp_path, capsys, labelled_frames):
    out = tmp_path / "ds"
    assert main(["data", "import", "frames", str(labelled_frames), "--out", str(out), "--region", "sf_ocean_view",
                 "--no-progress"]) == 0
    assert f"23 samples written to {out}" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    labels = np.asarray(RegionDataset.open(out).labels)
    lane_fraction = float((~np.isnan(labels[:, LABELS.index("lane_offset")])).mean())
    assert "region    sf_ocean_view  (source labelled_frames" in text
    lane_row = next(line for line in text.splitlines() if line.startswith("lane_offset"))
    assert f"{lane_fraction:.1%}" in lane_row
    assert next(line for line in text.splitlines() if line.startswith("steering")).split()[1:3] == ["0", "0.0%"]
    assert "lidar: yes" in text


def test_import_image_folder(tmp_path, capsys, labelled_frames):
    folder = tmp_path / "tl"
    for i, path in enumerate(sorted((labelled_frames / "images").iterdir())):
        cls = ("red", "green")[i % 2]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / cls)
    assert main(["data", "import", "image-folder", str(folder), "--out", str(tmp_path / "ds"), "--region", "tokyo",
                 "--no-progress"]) == 0
    assert "per class: none 0, red 12, yellow 0, green 12" in capsys.readouterr().out


def test_import_rosbag_with_topic_options(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / "bag", storage="mcap", command="twist")
    code = main(["data", "import", "rosbag", str(bag.path), "--out", str(tmp_path / "ds"), "--region", "sf",
                 "--camera-topic", "/camera/image", "--lidar-topic", "/lidar/points", "--speed-topic", "/odom",
                 "--command-topic", "/cmd_vel", "--max-dt", "0.08", "--wheelbase", "3.1", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "command /cmd_vel" in out
    ds = RegionDataset.open(tmp_path / "ds")
    assert ds.meta["vehicle"]["wheelbase_m"] == 3.1 and ds.meta["matching"]["max_dt_s"] == 0.08
    assert ds.n == bag.camera_t.size


def test_import_rosbag_odometry_source_and_no_lidar(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / "bag", command=None)
    assert main(["data", "import", "rosbag", str(bag.path), "--out", str(tmp_path / "ds"), "--region", "sf",
                 "--command-source", "odometry", "--no-lidar", "--no-progress"]) == 0
    ds = RegionDataset.open(tmp_path / "ds")
    assert ds.meta["has_lidar"] is False and ds.meta["commands"]["source"] == "odometry"


def test_errors_exit_1_with_the_file_and_the_problem(tmp_path, capsys):
    assert main(["data", "import", "rosbag", str(tmp_path / "missing"), "--out", str(tmp_path / "ds"),
                 "--region", "sf"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regionadapt data: error: ") and "missing: rosbag2 path does not exist" in err
    bag = write_drive_bag(tmp_path / "bag", command=None)
    assert main(["data", "import", "rosbag", str(bag.path), "--out", str(tmp_path / "ds"), "--region", "sf",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no command topic" in err and "/odom (nav_msgs/msg/Odometry)" in err
    assert main(["data", "generate", "--region", "atlantis", "--n", "30", "--out", str(tmp_path / "g")]) == 1
    assert "--region: 'atlantis' is not a synthetic region" in capsys.readouterr().err
    assert main(["data", "generate", "--region", "highway", "--n", "5", "--out", str(tmp_path / "g"),
                 "--no-progress"]) == 1
    assert "too few samples to split" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path / "nothing")]) == 1
    assert "not a dataset directory" in capsys.readouterr().err
    assert main(["data", "import", "rosbag", str(bag.path), "--out", str(tmp_path / "ds"), "--region", "sf",
                 "--max-dt", "-1"]) == 1
    assert "--max-dt: must be a positive number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "generate" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["data", "import", "rosbag", "--help"], ["data", "info", "--help"]])
def test_help_runs_as_a_process(argv):
    proc = subprocess.run([sys.executable, "-m", "regionadapt_ros.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: regionadapt data" in proc.stdout
