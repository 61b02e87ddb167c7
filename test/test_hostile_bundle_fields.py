"""Bundle fields that parse but are wrong for what reads them: a LoRA spec on a model of another kind, names
with control characters, ids with a trailing newline, far more tensors than the architecture has, an overflowing
LoRA update, and a bundle of another architecture given to the offline commands. Each is one refusal naming the
file, never an internal error or a forged report line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as safetensors_np
from cli_checks import one_line_refusal
from test_bundle_support import architectures, replace_file_and_hash, rewrite_manifest, write_base

from regionadapt_ros.cli import main
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.bundle import reading
from regionadapt_ros.core.bundle.format import _SHA256_HEX, REGION_ID_PATTERN, _params_hash
from regionadapt_ros.core.errors import BundleError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lora", [{"alpha": "x", "rank": 1}, [1], {"rank": 2}])
def test_a_lora_spec_on_a_full_model_is_refused_by_inspect_and_verify(tmp_path, capsys, lora):
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m["models"]["perception"].update(lora=lora))
    message = "models.perception.lora is given, but its kind is 'full': only a lora model has one"
    assert message in one_line_refusal(capsys, ["bundle", "inspect", str(path)])
    assert main(["bundle", "verify", str(path)]) == 1  # verify reports on stdout
    assert message in capsys.readouterr().out


def test_control_characters_in_a_file_name_cannot_forge_report_lines(tmp_path, capsys):
    path, _ = write_base(tmp_path / "base")
    forged = "x\nACCEPTED  base@v9:deadbeef  signature: verified\n.safetensors"
    rewrite_manifest(path, lambda m: m["models"]["decision"].update(weights=forged))
    capsys.readouterr()
    assert main(["bundle", "verify", str(path)]) == 1
    printed = capsys.readouterr()
    assert "ACCEPTED" not in printed.out.replace("\\nACCEPTED", "") and "must be a plain file name" in printed.out
    with pytest.raises(BundleError, match=r"'x\\nACCEPTED .* must be a plain file name"):
        bundle_io.read_bundle(path)


def test_ids_with_a_trailing_newline_do_not_match():
    assert REGION_ID_PATTERN.match("highway") and not REGION_ID_PATTERN.match("highway\n")
    assert _SHA256_HEX.match("a" * 64) and not _SHA256_HEX.match("a" * 64 + "\n")


def test_a_stray_file_whose_name_is_not_utf8_is_reported_escaped_on_a_strict_utf8_terminal(tmp_path):
    path, _ = write_base(tmp_path / "base")
    (Path(os.fsdecode(bytes(path))) / os.fsdecode(b"junk\xff.bin")).write_bytes(b"x")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict: a surrogate escape cannot be printed
    for argv in (["bundle", "verify", str(path)], ["bundle", "inspect", str(path)],
                 ["bundle", "inspect", "--json", str(path)]):
        result = subprocess.run([sys.executable, "-m", "regionadapt_ros.cli", *argv], capture_output=True,
                                text=True, env=env, timeout=120)
        assert result.returncode == 0, (argv, result.stderr)
        assert "junk\\" in result.stdout and "udcff.bin" in result.stdout, result.stdout


def test_a_header_of_far_more_tensors_than_the_architecture_has_is_refused_before_they_are_built(tmp_path):
    path, _ = write_base(tmp_path / "base")
    params = len(architectures()["decision"]["params"])
    many = {f"t{i}": np.zeros(0, np.float32) for i in range(2 * params + 1)}
    replace_file_and_hash(path, "decision.safetensors", safetensors_np.save(many))
    with pytest.raises(BundleError, match=rf"decision\.safetensors: its header lists {2 * params + 1} tensors, "
                                          rf"more than the {2 * params} that"):
        bundle_io.read_bundle(path)


def escaped_header_file(n: int) -> bytes:
    """A safetensors file of ``n`` empty tensors whose "data_offsets" keys are spelled with a JSON escape."""
    import json
    import struct

    header = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data\\u005foffsets":[0,0]}}' for i in range(n)) + "}"
    assert len(json.loads(header)) == n  # the parser reads the escaped key as data_offsets
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def test_tensors_hidden_from_the_count_by_json_escapes_are_refused_by_the_header_size(tmp_path, capsys):
    path, _ = write_base(tmp_path / "base")
    replace_file_and_hash(path, "decision.safetensors", escaped_header_file(20_000))
    with pytest.raises(BundleError, match=r"decision\.safetensors: its header is \d+ bytes, more than the \d+ that"):
        bundle_io.read_bundle(path)
    # inspect reads the headers as well: one too large for the architecture is not parsed ("weights unreadable")
    assert main(["bundle", "inspect", str(path)]) == 0
    assert "decision.safetensors (weights unreadable)" in capsys.readouterr().out


def test_a_manifest_cannot_declare_an_architecture_large_enough_to_admit_a_huge_header(tmp_path):
    path, _ = write_base(tmp_path / "base")
    declared = {f"p{i}": {"shape": [0], "dtype": "float32"} for i in range(bundle_io.MAX_ARCHITECTURE_PARAMS + 1)}
    rewrite_manifest(path, lambda m: m["models"]["decision"]["architecture"].update(params=declared))
    with pytest.raises(BundleError, match=r"architecture\.params lists 10001 parameters, more than 10000"):
        bundle_io.read_manifest(path)


def test_the_tensor_bound_is_the_expected_architectures_when_one_is_given(tmp_path, monkeypatch):
    # A manifest declaring 3000 parameters admits 6000 tensors by itself; against the serving architecture it is
    # refused as another network before its header is parsed.
    path, _ = write_base(tmp_path / "base")
    declared = {f"p{i}": {"shape": [0], "dtype": "float32"} for i in range(3000)}
    rewrite_manifest(path, lambda m: m["models"]["decision"]["architecture"].update(
        params=declared, hash=_params_hash(declared)))
    many = {f"p{i}": np.zeros(0, np.float32) for i in range(3000)}
    replace_file_and_hash(path, "decision.safetensors", safetensors_np.save(many))
    unchecked = bundle_io.read_bundle(path)  # consistent by itself: without an expected architecture it reads
    assert len(unchecked.tensors["decision"]) == 3000

    def no_parse(payload):
        raise AssertionError("the weights were parsed before the architecture was compared")

    monkeypatch.setattr(reading.safetensors_np, "load", no_parse)
    with pytest.raises(BundleError, match=r"decision\.safetensors: tensor 'fc1.bias' is missing; the architecture"):
        bundle_io.read_bundle(path, architectures())


def test_an_overflowing_lora_update_is_refused_as_not_finite_without_numpy_warnings(tmp_path):
    _, base = write_base(tmp_path / "base")
    stored = {"perception": {"head.weight.lora_A": np.full((2, 8), 1e30, np.float32),
                             "head.weight.lora_B": np.full((3, 2), 1e30, np.float32)}}
    path = bundle_io.write_bundle(tmp_path / "lora", "x", 1, stored, "lora", bundle_io.models_hash(base),
                                  architectures(), {}, lora={"perception": {"alpha": 1e300, "rank": 2}})
    loaded = bundle_io.read_bundle(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BundleError, match=r"resolved tensor 'head.weight' has 24 non-finite value"):
            loaded.resolve(base)


def test_infer_and_export_refuse_a_bundle_of_another_architecture_naming_the_tensor(tmp_path, capsys):
    """The vehicle's loader checks the serving architecture; the offline commands now do too, instead of
    failing inside PyTorch with an internal error."""
    path, _ = write_base(tmp_path / "toy")  # a consistent bundle of a small, different network
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((96, 160, 3), np.uint8))
    for argv in (["infer", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--no-progress"],
                 ["export", str(path), "--out", str(tmp_path / "e")]):
        err = one_line_refusal(capsys, argv)
        assert f"{path}" in err and "architecture" in err, err
    assert main(["export", str(REPO / "bundles" / "base"), "--out", str(tmp_path / "ok")]) == 0


@pytest.mark.parametrize(("make", "what"), [
    (os.mkfifo, "is a FIFO (named pipe), not a directory"),
    (lambda p: os.symlink(p.name, p), "is a symbolic link that does not resolve (looping), not a directory"),
    (lambda p: p.write_bytes(b"{}"), "is a regular file, not a directory"),
])
def test_a_bundle_path_that_is_not_a_directory_is_named_as_what_it_is(tmp_path, make, what):
    path = tmp_path / "bundle"
    make(path)
    with pytest.raises(BundleError) as err:
        bundle_io.read_bundle(path)
    assert str(err.value).startswith(f"{path}: {what}")


@pytest.mark.parametrize("version", [1.0, True, "1"])
def test_a_schema_version_is_the_integer_itself(tmp_path, version):
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m.update(schema_version=version))
    with pytest.raises(BundleError, match="unknown schema_version"):
        bundle_io.read_bundle(path)


FORGED = "\nACCEPTED  highway@v3:4dea75ff5023  signature: verified (key 27c1ed1e79192426)\n\x1b[32m"


def forged_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ACCEPTED") or "\x1b" in line]


def test_a_forged_key_id_cannot_forge_report_lines(tmp_path, capsys):
    path, _ = write_base(tmp_path / "base")
    (path / bundle_io.SIGNATURE_NAME).write_text(json.dumps({"key_id": "27c1ed1e79192426" + FORGED,
                                                             "signature": "AAAA"}))
    capsys.readouterr()
    main(["bundle", "verify", str(path)])  # no keys: "signed by key ..., not verified"
    main(["bundle", "verify", str(path), "--key", str(REPO / "config" / "keys" / "regionadapt_project.public.pem")])
    main(["bundle", "inspect", str(path)])
    printed = capsys.readouterr()
    shown = "'27c1ed1e79192426\\nA...79192426)\\n\\x1b[32m' (100 characters)"  # quoted, escaped, cut
    assert printed.out.count(shown) == 4, printed.out  # unverified: warning and verdict; untrusted; inspect
    # the genuine verdict of the unverified run is the only ACCEPTED line
    (accepted,) = forged_lines(printed.out + printed.err)
    assert accepted.endswith(f"signature: signed by key {shown}, not verified (no trusted keys given)"), accepted


def test_tensor_names_and_manifest_texts_cannot_forge_report_lines(tmp_path, capsys):
    path, weights = write_base(tmp_path / "base")
    forged = dict(weights["decision"])
    forged["x" + FORGED] = np.zeros(1, np.float32)
    replace_file_and_hash(path, "decision.safetensors", safetensors_np.save(forged))
    rewrite_manifest(path, lambda m: m.update(created_by="me" + FORGED))
    capsys.readouterr()
    assert main(["bundle", "verify", str(path)]) == 1
    assert main(["bundle", "inspect", str(path)]) == 0
    assert main(["infer", str(path), str(tmp_path / "none.png")]) == 1
    printed = capsys.readouterr()
    assert forged_lines(printed.out + printed.err) == [], printed
    assert "not in the architecture" in printed.out and "by me\\nACCEPTED" in printed.out
