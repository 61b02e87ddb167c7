"""NavSatStatus STATUS_UNKNOWN (-2): Jazzy's default, and what the CARLA ROS bridge sends with every fix (it never
sets the status). Held like no fix unless ``accept_unknown_status`` says the driver's positions are good, and
said so in diagnostics naming the parameter; the same option on ``geofence check`` and ``replay``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from rclpy_double.harness import double_on_path

from regionadapt_ros.cli import main
from regionadapt_ros.core.geo_track import load_track_csv
from regionadapt_ros.core.region_resolver import HoldReason, ResolverConfig
from regionadapt_ros.region_session import RegionSession

REPO = Path(__file__).resolve().parents[1]
GEOFENCES = REPO / "config" / "geofences.geojson"
CROSSING = slice(40, 120)  # the real drive enters Lakeshore between fix 78 and 79
ENTER_MARGIN_M = 1.0  # it then runs along the fence's edge, 1 m inside by fix ~94


@pytest.fixture(scope="module")
def lakeshore(tmp_path_factory) -> Path:
    """The real Lakeshore neighbourhood as the only fence (region highway); outside it: base."""
    from realdata import write_neighbourhood_fences

    return write_neighbourhood_fences(tmp_path_factory.mktemp("lakeshore") / "lakeshore.geojson",
                                      {"Lakeshore": ("highway", 20)})


@pytest.fixture(scope="module")
def track(sf_track_csv):
    return load_track_csv(sf_track_csv)[CROSSING]


def bridge_fixes(distro: str, points: list[tuple[float, float, float]]) -> list:
    """NavSatFix messages as carla_ros_bridge/gnss.py builds them: header, latitude, longitude, altitude set;
    the status and the covariance left at the message defaults of ``distro``. ``points``: (lat, lon, stamp_s)."""
    with double_on_path(distro=distro):
        from sensor_msgs.msg import NavSatFix

        from regionadapt_ros.core import msgconv

        types = msgconv.rclpy_types()
        messages = []
        for lat, lon, stamp_s in points:
            msg = NavSatFix()
            msg.header = msgconv.build_header(types, stamp_s, "hero/gnss")
            msg.latitude, msg.longitude, msg.altitude = lat, lon, 2.0
            messages.append(msg)
        return messages


def drive(fences: Path, track: list, distro: str, accept: bool) -> tuple[list[str], RegionSession]:
    """The real drive across the Lakeshore fence through a RegionSession, its fixes as the bridge sends them."""
    config = ResolverConfig(accept_unknown_status=accept, enter_margin_m=ENTER_MARGIN_M)
    session = RegionSession.from_file(fences, "base", config)
    announced = []
    for f, msg in zip(track, bridge_fixes(distro, [(f.lat, f.lon, f.stamp_s) for f in track]), strict=True):
        update = session.on_fix(msg, f.stamp_s)
        if update.active_region_changed is not None:
            announced.append(update.active_region_changed)
    return announced, session


def test_jazzy_bridge_fixes_are_held_and_diagnostics_name_the_parameter(lakeshore, track):
    announced, session = drive(lakeshore, track, "jazzy", accept=False)
    assert announced == []  # nothing is announced: the region is not known
    assert session.state.hold_reason is HoldReason.UNKNOWN_STATUS
    assert session.counters()["unknown_status"] == len(track)
    status = session.diagnostics(session.state.stamp_s or 0.0)[0]
    assert status.level == 1 and "accept_unknown_status" in status.message and "-2" in status.message


def test_jazzy_bridge_fixes_are_used_with_accept_unknown_status(lakeshore, track):
    announced, session = drive(lakeshore, track, "jazzy", accept=True)
    assert announced == ["base", "highway"]
    assert session.counters()["accepted_unknown_status"] == len(track)
    assert session.diagnostics(session.state.stamp_s)[0].values["accept_unknown_status"] == "true"


def test_humble_bridge_fixes_have_status_fix_and_are_used_either_way(lakeshore, track):
    for accept in (False, True):
        announced, _ = drive(lakeshore, track, "humble", accept=accept)
        assert announced == ["base", "highway"]


def test_no_fix_stays_no_fix_whatever_the_setting():
    session = RegionSession.from_file(GEOFENCES, "base", ResolverConfig(accept_unknown_status=True))
    msg = bridge_fixes("jazzy", [(37.73, -122.47, 10.0)])[0]
    msg.status.status = -1
    session.on_fix(msg, 10.0)
    assert session.state.hold_reason is HoldReason.NO_FIX


def test_accept_unknown_status_must_be_a_bool():
    from regionadapt_ros.core.errors import ConfigError

    with pytest.raises(ConfigError, match="accept_unknown_status"):
        ResolverConfig(accept_unknown_status=1)


def write_track(path: Path, track: list, status: int) -> Path:
    rows = ["t,lat,lon,h_std,status"] + [f"{f.stamp_s},{f.lat},{f.lon},2.0,{status}" for f in track]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_geofence_check_holds_unknown_status_and_says_which_option_uses_it(tmp_path, capsys, lakeshore, track):
    csv = write_track(tmp_path / "carla.csv", track, -2)
    check = ["geofence", "check", str(lakeshore), "--track", str(csv), "--enter-margin", str(ENTER_MARGIN_M)]
    assert main(check) == 0
    out = capsys.readouterr().out
    assert "switches: 0" in out and f"unknown_status {len(track)}" in out and "--accept-unknown-status" in out
    assert main([*check, "--accept-unknown-status"]) == 0
    out = capsys.readouterr().out
    assert "switch base -> highway" in out and "switches: 1" in out and "--accept-unknown-status" not in out


def test_replay_passes_accept_unknown_status_to_the_resolver(monkeypatch, tmp_path):
    from regionadapt_ros import replay
    from regionadapt_ros.commands import replay as command

    seen = {}

    class Runner:
        def __init__(self, cfg):
            seen["cfg"] = cfg

        def run(self, bag):
            return "summary"

    monkeypatch.setattr(replay, "ReplayRunner", Runner)
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    for flag, expected in (([], {}), (["--accept-unknown-status"], {"accept_unknown_status": True})):
        args = parser.parse_args(["replay", str(tmp_path / "bag"), *flag])
        assert command.run_replay(args, tmp_path / "bag", tmp_path / "out", {}) == "summary"
        assert seen["cfg"].resolver == expected
        ResolverConfig(**seen["cfg"].resolver)  # what ReplayRunner.run builds from it
