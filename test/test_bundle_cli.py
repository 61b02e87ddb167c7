"""``regionadapt bundle`` inspect / verify / sign / keygen, run as the user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_bundle_support import SHAPES, random_weights, rewrite_manifest, write_base, write_head_delta

from regionadapt_ros.cli import main
from regionadapt_ros.commands import bundle as bundle_command
from regionadapt_ros.core import bundle as bundle_io

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bundles(tmp_path: Path) -> dict[str, Path]:
    base_path, base = write_base(tmp_path / "base")
    delta_path, _ = write_head_delta(tmp_path / "highway", base, version=3)
    return {"base": base_path, "delta": delta_path, "keys": tmp_path / "keys"}


def test_keygen_sign_verify_round_trip(bundles: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "keygen", "--out", str(bundles["keys"]), "--name", "fleet"]) == 0
    key_id = capsys.readouterr().out.split()[2]
    private_key, public_key = bundles["keys"] / "fleet.private.pem", bundles["keys"] / "fleet.public.pem"
    assert main(["bundle", "sign", str(bundles["delta"]), "--key", str(private_key)]) == 0
    assert f"with key {key_id}" in capsys.readouterr().out
    code = main(["bundle", "verify", str(bundles["delta"]), "--key", str(public_key), "--require-signature",
                 "--base", str(bundles["base"])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"OK    signature: verified (key {key_id})" in out
    assert "OK    perception.safetensors: sha256 matches" in out
    assert "OK    resolve: resolved to full weights of the architecture on the matching base" in out
    assert "ACCEPTED  highway@v3:" in out


def test_verify_refuses_a_tampered_bundle_with_exit_1(bundles: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    main(["bundle", "keygen", "--out", str(bundles["keys"])])
    main(["bundle", "sign", str(bundles["delta"]), "--key", str(bundles["keys"] / "regionadapt.private.pem")])
    rewrite_manifest(bundles["delta"], lambda m: m["metrics"].__setitem__("finetuned", 0.01))
    capsys.readouterr()
    code = main(["bundle", "verify", str(bundles["delta"]), "--key", str(bundles["keys"] / "regionadapt.public.pem")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  refused:" in out and "signature does not match (manifest altered after signing?)" in out
    assert f"REFUSED  {bundles['delta']}" in out


def test_verify_requires_a_signature_when_asked(bundles: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(bundles["base"])]) == 0
    assert "WARN  signature: unsigned" in capsys.readouterr().out
    main(["bundle", "keygen", "--out", str(bundles["keys"])])
    capsys.readouterr()
    code = main(["bundle", "verify", str(bundles["base"]), "--require-signature", "--key",
                 str(bundles["keys"] / "regionadapt.public.pem")])
    assert code == 1
    assert "unsigned and signatures are required" in capsys.readouterr().out


def test_verify_against_a_base_of_another_architecture_fails(tmp_path: Path, bundles: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    shapes = {model: dict(s) for model, s in SHAPES.items()}
    shapes["decision"]["out.weight"] = ((3, 16), "float32")
    weights = random_weights(0)
    weights["decision"]["out.weight"] = weights["decision"]["out.weight"][:1].repeat(3, axis=0)
    other = bundle_io.write_bundle(tmp_path / "other_base", "base", 1, weights, "full", None,
                                   {m: bundle_io.fingerprint(s) for m, s in shapes.items()}, {})
    code = main(["bundle", "verify", str(bundles["delta"]), "--architecture-from", str(other)])
    out = capsys.readouterr().out
    assert code == 1
    assert "decision.safetensors: tensor 'out.weight' has shape (2, 16), architecture expects (3, 16)" in out


def test_inspect_json_reports_files_sizes_metrics_and_signature(bundles: dict[str, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "inspect", str(bundles["delta"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bundle_id"] == bundle_io.bundle_id(bundle_io.read_manifest(bundles["delta"]))
    for name, entry in summary["files"].items():
        assert entry["size"] == (bundles["delta"] / name).stat().st_size
    assert summary["models"]["perception"]["kind"] == "subset"
    assert summary["models"]["perception"]["tensors"] == 2
    assert summary["models"]["perception"]["parameters"] == 3 * 8 + 3
    assert summary["models"]["perception"]["architecture_tensors"] == len(SHAPES["perception"])
    assert summary["manifest"]["metrics"] == {"primary": "mae", "base": 0.5, "finetuned": 0.4}
    assert summary["signature"] == {"signed": False, "key_id": None, "state": "unsigned"}


def test_inspect_text_shows_a_missing_file_instead_of_failing(bundles: dict[str, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (bundles["delta"] / "decision.safetensors").unlink()
    assert main(["bundle", "inspect", str(bundles["delta"])]) == 0
    out = capsys.readouterr().out
    assert "region      highway  (bundle_version 3)" in out
    assert "decision.safetensors" in out and "MISSING" in out
    assert "finetuned: 0.4" in out


def test_user_errors_are_reported_without_a_traceback(tmp_path: Path, bundles: dict[str, Path]) -> None:
    result = subprocess.run([sys.executable, "-m", "regionadapt_ros.cli", "bundle", "inspect", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "manifest.json: missing: the directory is not a bundle" in result.stderr
    assert "Traceback" not in result.stderr
    assert main(["bundle", "keygen", "--out", str(bundles["keys"])]) == 0
    assert main(["bundle", "keygen", "--out", str(bundles["keys"])]) == 1  # refuses to overwrite the key


def test_extra_subcommands_plug_into_the_bundle_group(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def add_hello(bundle_subparsers: object) -> None:
        hello = bundle_subparsers.add_parser("hello")  # type: ignore[attr-defined]
        hello.set_defaults(func=lambda args: print("hello from an extra subcommand") or 0)

    monkeypatch.setattr(bundle_command, "_extra_registrars", [add_hello])
    assert main(["bundle", "hello"]) == 0
    assert "hello from an extra subcommand" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["fleet\nkey", "a\x00b", "../escape", ".hidden", "", "k" * 65, "two words"])
def test_keygen_refuses_a_name_that_is_not_a_plain_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             name: str) -> None:
    # A NUL reached os.open as ValueError (an internal error); a newline made file names that print as two lines.
    code = main(["bundle", "keygen", "--out", str(tmp_path / "keys"), "--name", name])
    err = capsys.readouterr().err
    assert code == 1 and "internal error" not in err and "must be 1-64 letters, digits" in err, err
    assert not (tmp_path / "keys").exists() or not any((tmp_path / "keys").iterdir())


def test_keygen_never_writes_through_a_link_at_a_key_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, elsewhere = tmp_path / "keys", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "regionadapt.public.pem").symlink_to(elsewhere / "planted")  # dangling: exists() is False
    assert main(["bundle", "keygen", "--out", str(out)]) == 1
    assert "regionadapt.public.pem: already exists" in capsys.readouterr().err
    assert not (elsewhere / "planted").exists() and not (out / "regionadapt.private.pem").exists()
    victim = elsewhere / "victim.txt"
    victim.write_text("keep")
    (out / "regionadapt.public.pem").unlink()
    (out / "regionadapt.public.pem").symlink_to(victim)
    assert main(["bundle", "keygen", "--out", str(out), "--force"]) == 0
    assert victim.read_text() == "keep" and not (out / "regionadapt.public.pem").is_symlink()
    assert (out / "regionadapt.private.pem").stat().st_mode & 0o777 == 0o600
    assert (out / "regionadapt.public.pem").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["regionadapt.private.pem", "regionadapt.public.pem"]


@pytest.mark.parametrize("damage", ['{"key_id": "27', "[]", ""])
def test_signing_replaces_a_damaged_signature(bundles: dict[str, Path], damage: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    main(["bundle", "keygen", "--out", str(bundles["keys"])])
    (bundles["base"] / bundle_io.SIGNATURE_NAME).write_text(damage)
    assert main(["bundle", "sign", str(bundles["base"]), "--key",
                 str(bundles["keys"] / "regionadapt.private.pem")]) == 0
    assert main(["bundle", "verify", str(bundles["base"]), "--key",
                 str(bundles["keys"] / "regionadapt.public.pem")]) == 0


def test_verify_says_when_no_serving_architecture_was_compared_and_tiny_size_limits_stay_limits(
        bundles: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundles["base"])]) == 0
    assert "NOTE  architecture: not compared with a serving network (give --base BASE_BUNDLE)" in \
        capsys.readouterr().out
    assert main(["bundle", "verify", str(bundles["delta"]), "--base", str(bundles["base"])]) == 0
    assert "NOTE  architecture" not in capsys.readouterr().out
    # 1e-9 MiB rounds to 0 bytes, which used to read as "no limit given" (512 MiB)
    assert main(["bundle", "verify", str(bundles["base"]), "--max-file-mib=1e-9"]) == 1
    assert "REFUSED" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to read the bundle as another user")
def test_a_bundle_folder_that_can_be_entered_but_not_listed_still_verifies(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory() as where:  # not under pytest's 0700 folder: the other user must reach it
        root = Path(where)
        root.chmod(0o755)
        bundle = shutil.copytree(REPO / "bundles" / "base", root / "base")
        bundle.chmod(0o311)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                 "-m", "regionadapt_ros.cli", "bundle", "verify", str(bundle)], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        bundle.chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN  unlisted files: the folder cannot be listed (Permission denied)" in result.stdout


def test_keygen_force_onto_a_directory_keeps_the_old_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["bundle", "keygen", "--out", str(out)]) == 0
    old = (out / "regionadapt.private.pem").read_bytes()
    (out / "regionadapt.public.pem").unlink()
    (out / "regionadapt.public.pem").mkdir()
    assert main(["bundle", "keygen", "--out", str(out), "--force"]) == 1
    assert "regionadapt.public.pem: is a directory" in capsys.readouterr().err
    assert (out / "regionadapt.private.pem").read_bytes() == old
    assert sorted(p.name for p in out.iterdir()) == ["regionadapt.private.pem", "regionadapt.public.pem"]
