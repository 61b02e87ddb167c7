"""What `regionadapt demo` does with the options it shares with replay: those that apply reach the run, those
that cannot apply are refused (they were silently ignored), and --cache never loses files the demo did not
write."""

from __future__ import annotations

import pytest

from regionadapt_ros.cli import main


class Stop(BaseException):  # not an Exception: the CLI would report it and return
    pass


def test_closed_loop_options_reach_the_agent(tmp_path, monkeypatch):
    from regionadapt_ros.sim import agents

    seen = {}

    class Recording(agents.ProductAgent):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            raise Stop

    monkeypatch.setattr(agents, "ProductAgent", Recording)
    with pytest.raises(Stop):
        main(["demo", "--closed-loop", "--cache", str(tmp_path), "--no-emergency-brake", "--enter-margin", "3",
              "--lidar-max-age", "0.2", "--no-progress"])
    assert seen["driving_overrides"]["emergency_brake"] is False
    assert seen["driving_overrides"]["lidar_max_age_s"] == 0.2
    assert seen["resolver"]["enter_margin_m"] == 3.0


@pytest.mark.parametrize(("extra", "needle"), [
    (["--closed-loop", "--rate", "1"], "--rate: the closed loop runs as fast as it can"),
    (["--closed-loop", "--ground-z", "0"], "--ground-z: the simulated lidar publishes in the vehicle frame"),
    (["--geofences", "fences.geojson"], "--geofences: the demo drives its own course"),
])
def test_options_that_cannot_apply_are_refused(tmp_path, capsys, extra, needle):
    assert main(["demo", "--cache", str(tmp_path), "--no-progress", *extra]) == 1
    assert needle in capsys.readouterr().err


def test_a_cache_folder_of_other_files_is_not_emptied(tmp_path, capsys):
    mine = tmp_path / "closed-loop"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    assert main(["demo", "--closed-loop", "--cache", str(tmp_path), "--no-progress"]) == 1
    assert "holds files an earlier demo run did not write (thesis.tex)" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "months of work\n"


def test_a_damaged_cached_demo_drive_is_rendered_again(tmp_path, capsys, monkeypatch):
    from regionadapt_ros.commands import demo

    calls = []
    real_drive = demo._drive

    def counting_drive(*args, **kwargs):
        calls.append(1)
        return real_drive(*args, **kwargs)

    monkeypatch.setattr(demo, "_drive", counting_drive)
    assert main(["demo", "--cache", str(tmp_path), "--no-progress"]) == 0
    (storage,) = list(tmp_path.glob("drive-*/bag/*.mcap"))
    storage.write_bytes(storage.read_bytes()[:200])  # cut short: a disk error, an interrupted copy
    capsys.readouterr()
    assert main(["demo", "--cache", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the cached demo drive is damaged" in out and "rendering it again" in out
    assert len(calls) == 3  # rendered, found damaged when cached, rendered again


def test_a_plot_of_another_seeds_run_is_the_demos_own(tmp_path, capsys):
    from regionadapt_ros.commands.demo import _fresh_run_dir

    run = tmp_path / "closed-loop"
    run.mkdir()
    (run / "demo-0.png").write_bytes(b"png")
    (run / "report.md").write_text("# report\n")
    assert _fresh_run_dir(run, ("report.md",)) == run and not run.exists()
