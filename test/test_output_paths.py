"""Output files of every command that writes a summary, report or plot: checked before the run against the
command's inputs and what the run itself writes, through symbolic links too, so no run overwrites a geofence
file, regions.yaml, a route, a bundle or a dataset, or fails at its end on a folder that cannot exist."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cli_checks import one_line_refusal

from regionadapt_ros.cli import main
from regionadapt_ros.commands.output_paths import check_file_output
from regionadapt_ros.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_a_link_to_an_input_or_into_a_folder_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "inputs" / "route.json"
    source.parent.mkdir()
    source.write_text("{}")
    (tmp_path / "to_input.json").symlink_to(source)
    with pytest.raises(ConfigError, match="it would be overwritten"):
        check_file_output("--json", tmp_path / "to_input.json", protected=[source])
    (tmp_path / "dangling.json").symlink_to(tmp_path / "no_such_dir" / "x.json")
    with pytest.raises(ConfigError, match="whose folder does not exist"):
        check_file_output("--json", tmp_path / "dangling.json", protected=[])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile is not a directory"):
        check_file_output("--json", tmp_path / "afile" / "s.json", protected=[None])
    check_file_output("--json", tmp_path / "new" / "s.json", protected=[source, None])  # a folder to be made


def test_a_pipe_or_a_device_is_never_replaced_by_an_output_file(tmp_path: Path, capsys) -> None:
    # Outputs are written by a rename over the target: /dev/null given with --force would become a plain file.
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to_pipe").symlink_to(tmp_path / "pipe")
    for target in ("pipe", "to_pipe"):
        with pytest.raises(ConfigError, match=r"is not a regular file \(a device, pipe or socket\)"):
            check_file_output("--out", tmp_path / target, protected=[], written_by_rename=True)
    with pytest.raises(ConfigError, match="is not a regular file"):
        check_file_output("--out", "/dev/null", protected=[], written_by_rename=True)
    # A summary written in place may go to a device or a pipe (--json /dev/stdout, >(jq .)).
    check_file_output("--json", "/dev/null", protected=[])
    check_file_output("--json", tmp_path / "pipe", protected=[])
    fence = tmp_path / "b.geojson"
    fence.write_text('{"type": "Feature", "properties": {"name": "a"}, "geometry": {"type": "Polygon", '
                     '"coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0]]]}}')
    message = one_line_refusal(capsys, ["geofence", "import", str(fence), "--out", str(tmp_path / "pipe"),
                                      "--force"])
    assert "is not a regular file" in message
    assert (tmp_path / "pipe").is_fifo()


def copies(tmp_path: Path) -> dict[str, Path]:
    config = shutil.copytree(REPO / "config", tmp_path / "config")
    return {"regions": config / "regions.yaml", "fences": config / "geofences.geojson", "route": tmp_path / "r.json"}


@pytest.mark.parametrize("target", ["regions", "fences"])
def test_replay_summary_never_lands_on_its_geofences_or_regions_yaml(tmp_path, capsys, target):
    files = copies(tmp_path)
    before = files[target].read_bytes()
    err = one_line_refusal(capsys, ["replay", str(tmp_path / "some.mcap"), "--out", str(tmp_path / "rp"),
                                    "--regions-config", str(files["regions"]), "--geofences", str(files["fences"]),
                                    "--json", str(files[target])])
    assert "--json" in err and "it would be overwritten" in err
    assert files[target].read_bytes() == before and not (tmp_path / "rp").exists()


def test_drive_score_and_demo_summaries_never_land_on_their_inputs(tmp_path, capsys):
    files = copies(tmp_path)
    files["route"].write_text("{}")
    before = {name: path.read_bytes() for name, path in files.items()}
    err = one_line_refusal(capsys, ["drive", "--region", "urban_day", "--regions-config", str(files["regions"]),
                                    "--out", str(tmp_path / "d"), "--summary-json", str(files["regions"])])
    assert "--summary-json" in err and "it would be overwritten" in err
    err = one_line_refusal(capsys, ["drive", "--region", "urban_day", "--out", str(tmp_path / "d"),
                                    "--summary-json", str(tmp_path / "d" / "urban_day-0" / "route.json")])
    assert "it would overwrite a file there" in err
    err = one_line_refusal(capsys, ["score", str(tmp_path / "bag"), "--route", str(files["route"]), "--json",
                                    str(files["route"])])
    assert "it would be overwritten" in err
    err = one_line_refusal(capsys, ["demo", "--regions-config", str(files["regions"]), "--cache",
                                    str(tmp_path / "cache"), "--summary-json", str(files["regions"])])
    assert "it would be overwritten" in err
    assert {name: path.read_bytes() for name, path in files.items()} == before


def test_a_geofence_plot_through_a_link_to_the_geofence_file_is_refused(tmp_path, capsys):
    fences = shutil.copy(REPO / "config" / "geofences.geojson", tmp_path / "gf.geojson")
    before = Path(fences).read_bytes()
    (tmp_path / "p.png").symlink_to(fences)
    err = one_line_refusal(capsys, ["geofence", "check", str(fences), "--plot", str(tmp_path / "p.png")])
    assert "--plot" in err and "it would be overwritten" in err
    assert Path(fences).read_bytes() == before


def test_export_writes_through_no_link_planted_at_a_temporary_name(tmp_path):
    out = tmp_path / "exo"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    (out / "perception.onnx.tmp").symlink_to(precious)
    assert main(["export", str(REPO / "bundles" / "highway"), "--base", str(REPO / "bundles" / "base"), "--out",
                 str(out)]) == 0
    assert precious.read_text() == "keep" and (out / "perception.onnx").stat().st_mode & 0o777 == 0o644


def test_train_all_checks_its_bundle_and_results_folders_before_generating_anything(tmp_path, capsys):
    (tmp_path / "bundles" / "highway").mkdir(parents=True)
    (tmp_path / "bundles" / "highway" / "notes.txt").write_text("mine")
    argv = ["train-all", "--quick", "--regions", "highway", "--no-global", "--workdir", str(tmp_path / "work")]
    err = one_line_refusal(capsys, [*argv, "--bundles", str(tmp_path / "bundles"), "--results", str(tmp_path / "r")])
    assert "highway: exists, holds files and is not a bundle" in err
    (tmp_path / "afile").write_text("x")
    err = one_line_refusal(capsys, [*argv, "--bundles", str(tmp_path / "b2"), "--results",
                                    str(tmp_path / "afile" / "res")])
    assert "afile is not a directory" in err
    assert not (tmp_path / "work").exists()  # no data was generated


def test_an_import_refuses_its_output_folder_before_reading_a_frame(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    err = one_line_refusal(capsys, ["data", "import", "rosbag", str(tmp_path / "no_such_bag"), "--out",
                                    str(tmp_path / "out"), "--region", "x"])
    assert "exists, holds files and is not a dataset" in err  # said before the (missing) bag is opened


def test_replay_and_drive_refuse_a_file_where_they_write_a_folder_before_running(tmp_path, capsys):
    (tmp_path / "rp").mkdir()
    (tmp_path / "rp" / "report").write_text("a file")
    err = one_line_refusal(capsys, ["replay", str(tmp_path / "some.mcap"), "--out", str(tmp_path / "rp")])
    assert "report exists and is not a directory" in err and not (tmp_path / "rp" / "bag").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "urban_day-1").write_text("a file")
    err = one_line_refusal(capsys, ["drive", "--region", "urban_day", "--routes", "2", "--out", str(tmp_path / "d")])
    assert "urban_day-1 exists and is not a directory" in err and not (tmp_path / "d" / "urban_day-0").exists()
