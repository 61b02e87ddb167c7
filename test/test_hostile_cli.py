"""Every ``regionadapt`` command on bad input: one clear line on stderr and an exit status other than 0, never a
traceback; the named cases of the data tools (an undecodable message in a bag, a forged ``.npy`` header)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, Writer
from test_bundle_support import write_base
from test_hostile_bundles import needs_fifo, release_fifo

from regionadapt_ros.cli import main

REPO = Path(__file__).resolve().parents[1]
_HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A gallery of bad inputs: nothing there, an empty directory, garbage bytes under many names, a file where a
    directory belongs, a deeply nested YAML, a bundle whose manifest is garbage."""
    root = tmp_path_factory.mktemp("bad")
    garbage = root / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    for name in ("garbage.mcap", "garbage.db3", "garbage.csv", "garbage.geojson", "garbage.yaml", "garbage.pem"):
        (root / name).write_bytes(garbage.read_bytes())
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a directory\n")
    (root / "deep.yaml").write_text("regions: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "broken_bundle").mkdir()
    (root / "broken_bundle" / "manifest.json").write_bytes(b'{"schema_version": 1, "schema_version": 1}')
    base, _ = write_base(root / "base")
    (root / "track.csv").write_text("t,lat,lon\n0,nan,1\n")
    return {"root": root, "missing": root / "does_not_exist", "empty": root / "empty", "file": root / "a_file",
            "garbage": garbage, "deep_yaml": root / "deep.yaml", "broken_bundle": root / "broken_bundle",
            "base": base}


def cases(b: dict[str, Path]) -> dict[str, list[str]]:
    r = b["root"]
    fences = str(REPO / "config" / "geofences.geojson")
    return {
        "replay missing bag": ["replay", str(b["missing"]), "--out", str(r / "o1")],
        "replay empty dir": ["replay", str(b["empty"]), "--out", str(r / "o2")],
        "replay garbage mcap": ["replay", str(r / "garbage.mcap"), "--out", str(r / "o3")],
        "replay rate nan": ["replay", str(b["empty"]), "--rate", "nan"],
        "replay loop 0": ["replay", str(b["empty"]), "--loop", "0"],
        "replay rate 1e-300": ["replay", str(b["empty"]), "--rate", "1e-300"],
        "replay horizon 1e308": ["replay", str(b["empty"]), "--horizon", "1e308", "--out", str(r / "oh")],
        "replay deep regions.yaml": ["replay", str(b["empty"]), "--regions-config", str(b["deep_yaml"]),
                                     "--out", str(r / "o4")],
        "geofence missing": ["geofence", "check", str(b["missing"])],
        "geofence directory": ["geofence", "check", str(b["empty"])],
        "geofence garbage": ["geofence", "check", str(r / "garbage.geojson")],
        "geofence garbage track": ["geofence", "check", fences, "--track", str(r / "garbage.csv")],
        "geofence garbage bag track": ["geofence", "check", fences, "--track", str(r / "garbage.mcap")],
        "geofence margin nan": ["geofence", "check", fences, "--enter-margin", "nan"],
        "geofence plot into a file": ["geofence", "check", fences, "--plot", str(b["file"] / "x.png")],
        "bundle inspect missing": ["bundle", "inspect", str(b["missing"])],
        "bundle inspect garbage manifest": ["bundle", "inspect", str(b["broken_bundle"])],
        "bundle verify garbage key": ["bundle", "verify", str(b["base"]), "--key", str(r / "garbage.pem")],
        "bundle verify max-file nan": ["bundle", "verify", str(b["base"]), "--max-file-mib", "nan"],
        "bundle sign garbage key": ["bundle", "sign", str(b["base"]), "--key", str(r / "garbage.pem")],
        "bundle keygen into a file": ["bundle", "keygen", "--out", str(b["file"])],
        "bundle keygen bad name": ["bundle", "keygen", "--out", str(r / "keys"), "--name", "../up"],
        "data generate unknown region": ["data", "generate", "--region", "moon", "--n", "10", "--out",
                                         str(r / "d1")],
        "data generate negative n": ["data", "generate", "--region", "highway", "--n", "-5", "--out", str(r / "d2")],
        "data generate seed beyond 32 bits": ["data", "generate", "--region", "highway", "--n", "24", "--seed",
                                              "4294967296", "--out", str(r / "d2s")],
        "train-base negative seed": ["train-base", str(b["empty"]), "--out", str(r / "t2"), "--seed", "-1"],
        "drive seed beyond 64 bits": ["drive", "--seed", "18446744073709551616"],
        # (where TensorRT is installed this drives: the case is about a machine without it, as CI)
        "drive tensorrt without tensorrt": ["drive", "--backend", "tensorrt" if not _HAS_TENSORRT else "moon",
                                            "--length", "10", "--no-bag", "--out", str(r / "dt")],
        "data import garbage bag": ["data", "import", "rosbag", str(r / "garbage.mcap"), "--region", "x", "--out",
                                    str(r / "d3")],
        "data import split-block tiny": ["data", "import", "rosbag", str(r / "garbage.mcap"), "--region", "x",
                                         "--out", str(r / "d4b"), "--split-block", "1e-300"],
        "data import max-dt nan": ["data", "import", "rosbag", str(r / "garbage.mcap"), "--region", "x", "--out",
                                   str(r / "d4"), "--max-dt", "nan"],
        "data import frames missing": ["data", "import", "frames", str(b["missing"]), "--region", "x", "--out",
                                       str(r / "d5")],
        "data info missing": ["data", "info", str(b["missing"])],
        "data info empty": ["data", "info", str(b["empty"])],
        "train-base missing data": ["train-base", str(b["missing"]), "--out", str(r / "t1")],
        "finetune lr nan": ["finetune", str(b["missing"]), "--base", str(b["base"]), "--out", str(r / "t2"),
                            "--lr", "nan"],
        "finetune epochs 0": ["finetune", str(b["missing"]), "--base", str(b["base"]), "--out", str(r / "t3"),
                              "--epochs", "0"],
        "finetune missing data": ["finetune", str(b["missing"]), "--base", str(b["base"]), "--out", str(r / "t4"),
                                  "--region", "highway"],
        "finetune garbage key": ["finetune", str(b["missing"]), "--base", str(b["base"]), "--out", str(r / "t5"),
                                 "--region", "highway", "--key", str(r / "garbage.pem")],
        "evaluate missing base": ["evaluate", "--base", str(b["missing"]), "--data", f"highway={b['missing']}"],
        "evaluate bad pair": ["evaluate", "--base", str(b["base"]), "--data", "no-equals-sign"],
        "export missing bundle": ["export", str(b["missing"]), "--out", str(r / "e1")],
        "export out is a file": ["export", str(b["base"]), "--out", str(b["file"])],
        "train-all garbage sign key": ["train-all", "--workdir", str(r / "w"), "--sign-key", str(r / "garbage.pem")],
        "engine missing config": ["engine", "build", "--regions-config", str(b["missing"])],
        "engine garbage config": ["engine", "build", "--regions-config", str(r / "garbage.yaml")],
        "demo garbage config": ["demo", "--regions-config", str(r / "garbage.yaml"), "--cache", str(r / "c")],
        "demo deep config": ["demo", "--regions-config", str(b["deep_yaml"]), "--cache", str(r / "c")],
        "unknown command": ["fly"],
        "unknown option": ["bundle", "verify", str(b["base"]), "--frobnicate"],
    }


CASE_NAMES = list(cases({k: Path("x") for k in ("root", "missing", "empty", "file", "garbage", "deep_yaml",
                                                 "broken_bundle", "base")}))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_ends_in_one_line_and_a_failure_status(bad: dict[str, Path], case: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = cases(bad)[case]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), f"{case}: exit status {code}; stderr: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith(("WARNING ", "INFO "))]
    assert len(lines) == 1, f"{case}: expected one line, got:\n{err}"
    assert lines[0].startswith("regionadapt") and "error" in lines[0] and "internal error" not in lines[0], lines[0]


@needs_fifo
def test_a_fifo_track_is_refused_not_waited_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_hostile_bundles import call_guarded

    fifo = tmp_path / "track.csv"
    os.mkfifo(fifo)
    try:
        code = call_guarded(lambda: main(["geofence", "check", str(REPO / "config" / "geofences.geojson"),
                                          "--track", str(fifo)]), fifo)
    finally:
        release_fifo(fifo)
    assert code == 1 and "is a FIFO" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ data import


def _corrupt_copy(src: Path, dst: Path, *, truncate: dict[str, set[int]]) -> None:
    """Copy a bag, cutting the bytes of the n-th message of the named topics to 7 (undecodable CDR)."""
    with Reader(src) as reader, Writer(dst, version=8) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=None, serialization_format="cdr",
                                             offered_qos_profiles=c.ext.offered_qos_profiles, msgdef=c.msgdef.data,
                                             rihs01=c.digest)
                 for c in reader.connections}
        seen: dict[str, int] = {}
        for conn, log_ns, raw in reader.messages():
            k = seen.get(conn.topic, 0)
            seen[conn.topic] = k + 1
            data = raw[:7] if k in truncate.get(conn.topic, set()) else raw
            writer.write(conns[conn.id], log_ns, data)


def test_an_undecodable_message_is_counted_by_the_rosbag_import(tmp_path: Path) -> None:
    from test_import_rosbag import write_drive_bag

    from regionadapt_ros.adaptation.importers.rosbag import import_rosbag

    bag = write_drive_bag(tmp_path / "bag", n=40)
    corrupt = tmp_path / "corrupt"
    _corrupt_copy(bag.path, corrupt, truncate={bag.topics["speed"]: {5, 6}, bag.topics["camera"]: {3},
                                               "/vehicle/command": {2}})
    result = import_rosbag(corrupt, tmp_path / "ds", "r", progress=False)
    assert result.refused["unreadable_speed_messages"] == 2
    assert result.refused["unreadable_command_messages"] == 1
    assert result.skipped["unreadable_frames"] == 1 and result.n == 39


def _npy(path: Path, shape: tuple[int, ...], payload: bytes, dtype: str = "<f4") -> Path:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    path.write_bytes(b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n"
                     + payload)
    return path


def test_a_npy_sweep_declaring_a_huge_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    from regionadapt_ros.adaptation.importers.common import read_lidar_file
    from regionadapt_ros.core.errors import DataError

    forged = _npy(tmp_path / "forged.npy", (10**12, 4), b"\x00" * 64)
    with pytest.raises(DataError, match=r"forged\.npy: header declares shape \(1000000000000, 4\) float32 = "
                       r"16000000000000 bytes but the file holds 64 \(truncated or forged\)"):
        read_lidar_file(forged)
    good = _npy(tmp_path / "good.npy", (2, 4), np.arange(8, dtype="<f4").tobytes())
    np.testing.assert_array_equal(read_lidar_file(good), np.arange(8, dtype=np.float32).reshape(2, 4))
    np.save(tmp_path / "saved.npy", np.ones((5, 3), np.float64))
    assert read_lidar_file(tmp_path / "saved.npy").shape == (5, 4)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects"):
        read_lidar_file(pickled)


def test_the_forged_npy_in_a_frames_import_ends_in_one_line(tmp_path: Path) -> None:
    # Through the command, in a child process under a memory limit: no MemoryError traceback, one line.
    frames = tmp_path / "frames"
    (frames / "images").mkdir(parents=True)
    (frames / "lidar").mkdir()
    import cv2

    rows = ["image,steering"]
    for i in range(40):
        cv2.imwrite(str(frames / "images" / f"f{i}.png"), np.full((96, 160, 3), 5 * i, np.uint8))
        if i == 4:
            _npy(frames / "lidar" / f"f{i}.npy", (10**12, 4), b"\x00" * 64)
        else:
            np.save(frames / "lidar" / f"f{i}.npy", np.zeros((10, 4), np.float32))
        rows.append(f"f{i}.png,0.0")
    (frames / "labels.csv").write_text("\n".join(rows) + "\n")
    child = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY)); "
             "from regionadapt_ros.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = ["data", "import", "frames", str(frames), "--region", "x", "--out", str(tmp_path / "ds"), "--no-progress"]
    result = subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "f4.npy: header declares shape (1000000000000, 4)" in result.stderr


# numpy 2.4 dies with SIGFPE parsing this dtype: a regression would kill the process, so the checks that reach
# numpy run in a child and the parent asserts on its exit.
CRASHING_DTYPE = "m8[s/0]"


def _cli_in_child(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    child = "import sys; from regionadapt_ros.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", child, *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def test_a_npy_header_numpy_would_crash_on_is_refused_before_numpy_parses_it(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "lidar").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((96, 160, 3), np.uint8))
    _npy(tmp_path / "lidar" / "a.npy", (1, 4), b"\x00" * 32, dtype=CRASHING_DTYPE)
    result = _cli_in_child(["infer", str(REPO / "bundles" / "base"), "a.png", "--lidar", "lidar", "--no-annotate",
                            "--out", "out"], tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert f"a.npy: not a readable .npy array (dtype '{CRASHING_DTYPE}' is not a plain" in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, -4), }",
     r"shape must be a tuple of at most 32 integers >= 0, got \(-1, -4\)"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,) * 100, }", "header is not a Python literal"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': " + repr((1,) * 100) + ", }",
     "shape must be a tuple of at most 32 integers"),
    ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 4), }", "fortran_order must be True or False"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), 'x': 1}",
     "exactly 'descr', 'fortran_order' and 'shape'"),
    ("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 4), }",
     "'<c8' is not a plain boolean, integer or float type"),
    ("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1, 4), }", "is not a plain boolean"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), }" + "(" * 5000, "header is not a Python literal"),
    # no elements, yet sizes no array can have: numpy's reshape and mmap would raise their own errors
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 10000000000000000000000000), }",
     r"shape \(0, 1000.*cannot be an array"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': " + repr((0,) + (2**62,) * 31) + ", }",
     r"\.\.\. cannot be an array"),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': " + repr((0, 2**60)) + ", }", "cannot be an array"),
])
def test_malformed_npy_headers_are_one_data_error(tmp_path: Path, text: str, message: str) -> None:
    from regionadapt_ros.adaptation.importers.common import read_lidar_file
    from regionadapt_ros.core.errors import DataError

    path = tmp_path / "bad.npy"
    raw = text.encode("latin1") + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + b"\x00" * 64)
    with pytest.raises(DataError, match=message):
        read_lidar_file(path)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x93NUMPY\x01\x00\xff\x00{'descr': '<f4'", "header cut short"),  # says 255 bytes, holds 15
    (b"\x93NUMPY\x07\x00\x00\x00", r"unknown \.npy format version 7\.0"),
    (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f", r"header of 2147483647 bytes \(at most 10000\)"),
    (b"NUMPY", "no .x93NUMPY magic"),
])
def test_npy_headers_cut_short_or_of_unknown_versions_are_refused(tmp_path: Path, raw: bytes, message: str) -> None:
    from regionadapt_ros.adaptation.importers.common import read_lidar_file
    from regionadapt_ros.core.errors import DataError

    path = tmp_path / "bad.npy"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message):
        read_lidar_file(path)


def test_a_zero_element_npy_with_impossible_sizes_is_one_line_in_import_infer_and_info(tmp_path: Path) -> None:
    import cv2

    from regionadapt_ros.adaptation.dataset import LABELS_FILE, write_dataset
    from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABELS

    (tmp_path / "lidar").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((96, 160, 3), np.uint8))
    _npy(tmp_path / "lidar" / "a.npy", (0, 10**25), b"")
    result = _cli_in_child(["infer", str(REPO / "bundles" / "base"), "a.png", "--lidar", "lidar", "--no-annotate",
                            "--out", "out"], tmp_path)
    assert result.returncode == 1 and "internal error" not in result.stderr, result.stderr
    assert "a.npy: not a readable .npy array (shape (0, 10000000000000000000000000) cannot" in result.stderr
    n = 40
    dataset = write_dataset(tmp_path / "ds", np.zeros((n, IMAGE_H, IMAGE_W, 3), np.uint8),
                            np.zeros((n, BEV.channels, BEV.rows, BEV.cols), np.float32),
                            np.zeros((n, len(LABELS)), np.float32), {"region": "urban_day", "seed": 0})
    _npy(dataset / LABELS_FILE, (0, 10**25), b"")
    result = _cli_in_child(["data", "info", str(dataset)], tmp_path)
    assert result.returncode == 1 and "internal error" not in result.stderr, result.stderr
    assert "labels.npy: not a readable .npy array (shape (0, 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_dataset_whose_labels_numpy_would_crash_on_is_refused(tmp_path: Path) -> None:
    from regionadapt_ros.adaptation.dataset import LABELS_FILE, write_dataset
    from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABELS

    n = 40
    dataset = write_dataset(tmp_path / "ds", np.zeros((n, IMAGE_H, IMAGE_W, 3), np.uint8),
                            np.zeros((n, BEV.channels, BEV.rows, BEV.cols), np.float32),
                            np.zeros((n, len(LABELS)), np.float32), {"region": "urban_day", "seed": 0})
    _npy(dataset / LABELS_FILE, (n, len(LABELS)), b"\x00" * (8 * n * len(LABELS)), dtype=CRASHING_DTYPE)
    result = _cli_in_child(["data", "info", str(dataset)], tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "not a readable .npy array" in result.stderr and CRASHING_DTYPE in result.stderr


def test_a_manifest_dtype_numpy_would_crash_on_is_refused_before_numpy_parses_it(tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(REPO / "bundles" / "base", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    params = manifest["models"]["decision"]["architecture"]["params"]
    params[next(iter(params))]["dtype"] = CRASHING_DTYPE
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = _cli_in_child(["bundle", "verify", str(bundle)], tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert f"dtype '{CRASHING_DTYPE}' must be a numpy dtype name such as 'float32'" in result.stdout


def test_the_readme_verify_line_accepts_the_shipped_bundles(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "regionadapt bundle verify" in ln and "--require-signature" in ln)
    argv = line.split("regionadapt", 1)[1].split("#")[0].split()
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK    signature: verified" in out and "ACCEPTED" in out


def test_every_shipped_bundle_is_signed_by_the_shipped_project_key() -> None:
    from regionadapt_ros.core import bundle as bundle_io
    from regionadapt_ros.core.signing import load_public_key

    key = REPO / "config" / "keys" / "regionadapt_project.public.pem"
    load_public_key(key)
    for manifest in sorted((REPO / "bundles").glob("*/manifest.json")):
        loaded = bundle_io.read_bundle(manifest.parent, trusted_keys=[key], require_signature=True)
        assert loaded.signature_state.startswith("verified"), manifest
        assert "sizes" in json.loads(manifest.read_text()), manifest
    assert not list(REPO.rglob("*.private.pem")), "a private key must never be committed"


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--lr", "nan", "argument --lr: 'nan' must be a finite number > 0"),
    ("--lr", "-1", "argument --lr: '-1' must be a finite number > 0"),
    ("--weight-decay", "inf", "argument --weight-decay: 'inf' must be a finite number >= 0"),
    ("--epochs", "0", "argument --epochs: '0' must be a finite number >= 1"),
    ("--lora-rank", "x", "argument --lora-rank: 'x' is not an integer"),
])
def test_finetune_refuses_bad_hyperparameters_before_any_work(bad: dict[str, Path], option: str, value: str,
                                                              needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Checked by the parser, so even with a valid dataset nothing is loaded or trained (it used to reach the
    # optimizer and end in a ValueError traceback).
    with pytest.raises(SystemExit) as info:
        main(["finetune", str(bad["empty"]), "--base", str(bad["base"]), "--out", str(bad["root"] / "t"), option,
              value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@needs_fifo
@pytest.mark.parametrize("layout", ["bare", "directory"])
@pytest.mark.parametrize("command", ["replay", "import", "track", "score"])
def test_a_fifo_bag_is_refused_before_the_bag_reader_opens_it(tmp_path: Path, command: str, layout: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from test_hostile_bundles import call_guarded

    if layout == "bare":  # a bare .mcap the bag library would open (and block on) straight away
        bag = fifo = tmp_path / "bag_0.mcap"
    else:
        bag = tmp_path / "bag"
        bag.mkdir()
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
        fifo = bag / "bag_0.mcap"
    os.mkfifo(fifo)
    route = tmp_path / "route.csv"
    route.write_text("x,y\n0,0\n100,0\n")
    argv = {"replay": ["replay", str(bag), "--out", str(tmp_path / "out")],
            "import": ["data", "import", "rosbag", str(bag), "--region", "x", "--out", str(tmp_path / "ds")],
            "track": ["geofence", "check", str(REPO / "config" / "geofences.geojson"), "--track", str(bag)],
            "score": ["score", str(bag), "--route", str(route)]}[command]
    try:
        code = call_guarded(lambda: main(argv), fifo)
    finally:
        release_fifo(fifo)
    err = capsys.readouterr().err.strip()
    assert code == 1 and "bag_0.mcap: is a FIFO (named pipe)" in err and len(err.splitlines()) == 1, err


def test_a_dataset_file_that_is_a_fifo_or_a_folder_is_named_as_such_not_as_missing(tmp_path: Path) -> None:
    from regionadapt_ros.adaptation.dataset import LABELS_FILE, META_FILE, RegionDataset, write_dataset
    from regionadapt_ros.core.contracts import BEV, IMAGE_H, IMAGE_W, LABELS
    from regionadapt_ros.core.errors import DataError

    n = 40
    for name, make, what in ((META_FILE, os.mkfifo, "a FIFO (named pipe)"), (LABELS_FILE, os.mkdir, "a directory")):
        dataset = write_dataset(tmp_path / name, np.zeros((n, IMAGE_H, IMAGE_W, 3), np.uint8),
                                np.zeros((n, BEV.channels, BEV.rows, BEV.cols), np.float32),
                                np.zeros((n, len(LABELS)), np.float32), {"region": "urban_day", "seed": 0})
        (dataset / name).unlink()
        make(dataset / name)
        with pytest.raises(DataError) as err:
            RegionDataset.open(dataset)
        assert str(err.value) == f"{dataset / name}: is {what}, not a regular file"


def test_a_reader_that_closes_stdout_ends_the_command_quietly_as_sigpipe_would(monkeypatch, capsys) -> None:
    """`regionadapt ... | head -1`: the next write to stdout raises BrokenPipeError; that is no error of the
    command's (exit 128 + SIGPIPE, nothing on stderr), as for any tool the pipe's reader stops reading."""
    import io

    from regionadapt_ros.cli import main

    class ClosedPipe(io.TextIOBase):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["bundle", "inspect", str(REPO / "bundles" / "base")]) == 141
    assert capsys.readouterr().err == ""
