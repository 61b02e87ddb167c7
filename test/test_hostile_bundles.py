"""Bundle files that never end, block or leave the bundle: refused before they are opened or read, with the
reason, and with a bounded peak memory (DESIGN.md §7: every input is bounded before it is processed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from mutations import mutations
from test_bundle_support import architectures, rewrite_manifest, write_base

from regionadapt_ros.cli import main
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.errors import BundleError

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")


def release_fifo(path: Path) -> None:
    """Give a reader blocked on the FIFO its end of file (only needed when a check failed to refuse it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # nobody is reading it
    os.close(fd)


def call_guarded(fn: Callable[[], object], fifo: Path, limit_s: float = 60.0) -> object:
    """``fn()`` on a helper thread; if it is still blocked after ``limit_s`` (the defect this file is about), the
    FIFO is released so the suite does not hang, and the test fails. No wall-clock result is asserted."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit_s)
    if worker.is_alive():
        release_fifo(fifo)
        worker.join(10)
        pytest.fail(f"blocked on the FIFO {fifo.name}: it was opened instead of refused")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@needs_fifo
def test_a_fifo_in_place_of_a_weights_file_is_refused_without_being_opened(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    fifo = path / "decision.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match=r"decision\.safetensors: is a FIFO \(named pipe\), not a regular file; "
                       "refused without opening it"):
        call_guarded(lambda: bundle_io.read_bundle(path, architectures()), fifo)


@needs_fifo
def test_bundle_verify_and_inspect_refuse_a_fifo_with_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = write_base(tmp_path / "base")
    fifo = path / "perception.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    assert call_guarded(lambda: main(["bundle", "verify", str(path)]), fifo) == 1
    out = capsys.readouterr().out
    assert "FAIL  refused:" in out and "is a FIFO" in out and out.rstrip().endswith(f"REFUSED  {path}")
    assert call_guarded(lambda: main(["bundle", "inspect", str(path)]), fifo) == 0
    assert "REFUSED" in capsys.readouterr().out


@needs_fifo
def test_a_fifo_as_manifest_or_signature_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    signature = path / "signature.json"
    os.mkfifo(signature)
    with pytest.raises(BundleError, match=r"signature\.json: is a FIFO"):
        call_guarded(lambda: bundle_io.read_bundle(path), signature)
    signature.unlink()
    manifest = path / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    with pytest.raises(BundleError, match=r"manifest\.json: is a FIFO"):
        call_guarded(lambda: bundle_io.read_manifest(path), manifest)


def test_a_symlink_leaving_the_bundle_is_refused_even_to_the_right_bytes(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    outside = tmp_path / "elsewhere.safetensors"
    (path / "decision.safetensors").rename(outside)
    (path / "decision.safetensors").symlink_to(outside)
    with pytest.raises(BundleError, match=r"decision\.safetensors: is a symbolic link to .*elsewhere\.safetensors, "
                       "outside"):
        bundle_io.read_bundle(path)


def test_a_symlink_inside_the_bundle_and_a_symlinked_bundle_directory_are_read(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (path / "decision.safetensors").rename(path / "decision-v1.safetensors")
    (path / "decision.safetensors").symlink_to("decision-v1.safetensors")
    linked = tmp_path / "current"
    linked.symlink_to(path)  # the usual "current -> release" deployment
    assert bundle_io.read_bundle(linked, architectures()).region == "base"


def test_a_bundle_of_links_into_one_directory_is_read_there_as_symlink_install_lays_it_out(tmp_path: Path
                                                                                           ) -> None:
    source, _ = write_base(tmp_path / "src" / "base")
    installed = tmp_path / "install" / "base"
    installed.mkdir(parents=True)
    for item in source.iterdir():
        (installed / item.name).symlink_to(item)  # colcon build --symlink-install: every file a link
    assert bundle_io.bundle_root(installed) == source.resolve()
    assert bundle_io.read_bundle(installed, architectures()).region == "base"
    # One file linked elsewhere than where the manifest is: refused, as any link out of the bundle.
    (installed / "decision.safetensors").unlink()
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes((source / "decision.safetensors").read_bytes())
    (installed / "decision.safetensors").symlink_to(elsewhere)
    with pytest.raises(BundleError, match=r"decision\.safetensors: is a symbolic link to .*elsewhere\.safetensors, "
                       "outside"):
        bundle_io.read_bundle(installed)


def test_a_directory_in_place_of_a_file_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (path / "decision.safetensors").unlink()
    (path / "decision.safetensors").mkdir()
    with pytest.raises(BundleError, match=r"decision\.safetensors: is a directory, not a regular file"):
        bundle_io.read_bundle(path)


def test_a_manifest_listing_too_many_files_or_bad_sizes_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m["sizes"].__setitem__("decision.safetensors", -1))
    with pytest.raises(BundleError, match=r"sizes\['decision\.safetensors'\] -1 must be an integer >= 0"):
        bundle_io.read_bundle(path)
    rewrite_manifest(path, lambda m: m["files"].update({f"extra{i}.bin": "0" * 64 for i in range(40)}))
    with pytest.raises(BundleError, match=r"files lists 42 files; a bundle holds at most 32"):
        bundle_io.read_bundle(path)


_MEMORY_CHILD = """
import os, resource, sys
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.errors import BundleError

def vm_bytes():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))

budget = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + budget, resource.RLIM_INFINITY))
for path in sys.argv[2:]:
    try:
        bundle_io.read_bundle(path)
        print("ACCEPTED", path)
    except BundleError as exc:
        print("REFUSED", exc)
    except MemoryError:
        print("MEMORY", path)
"""
MEMORY_BUDGET = 128 << 20
needs_proc = pytest.mark.skipif(not (Path("/proc/self/status").exists() and Path("/dev/zero").exists()),
                                reason="needs Linux /proc and /dev/zero")


def read_with_memory_budget(*paths: Path) -> list[str]:
    """``read_bundle`` of each path in a child process whose address space may grow by MEMORY_BUDGET at most (a
    reader that follows /dev/zero or reads a sparse file whole gets a MemoryError there, never the test machine's
    memory); one line per path: ACCEPTED, REFUSED <reason> or MEMORY."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(MEMORY_BUDGET), *map(str, paths)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(paths), result.stdout
    return lines


def sparse_weights(bundle: Path, size: int = 2 << 30) -> None:
    with open(bundle / "perception.safetensors", "r+b") as fh:
        fh.truncate(size)  # sparse: no disk used, but a plain read would allocate it all


@needs_proc
def test_peak_memory_on_endless_and_huge_files_stays_within_a_small_budget(tmp_path: Path) -> None:
    """With 128 MiB of address space above the interpreter's: weights linked to /dev/zero, a 2 GiB sparse file
    (refused by its manifest size) and the same in an old-style bundle without sizes (refused by the 512 MiB
    ceiling) are refused before they are read, never a MemoryError."""
    zero, _ = write_base(tmp_path / "zero")
    (zero / "perception.safetensors").unlink()
    (zero / "perception.safetensors").symlink_to("/dev/zero")
    sized, _ = write_base(tmp_path / "sized")
    sparse_weights(sized)
    unsized, _ = write_base(tmp_path / "unsized")
    rewrite_manifest(unsized, lambda m: m.pop("sizes"))
    sparse_weights(unsized)
    dev_zero, by_size, by_ceiling = read_with_memory_budget(zero, sized, unsized)
    assert dev_zero.startswith("REFUSED") and "perception.safetensors: is a symbolic link to /dev/zero, outside" \
        in dev_zero, dev_zero
    assert by_size.startswith("REFUSED") and "perception.safetensors: is 2147483648 B but the manifest lists" \
        in by_size, by_size
    assert by_ceiling.startswith("REFUSED") and "is 2.0 GiB, more than the limit of 512.0 MiB; refused before " \
        "reading" in by_ceiling, by_ceiling


def test_a_device_is_refused_without_being_opened() -> None:
    from regionadapt_ros.core import safe_read
    from regionadapt_ros.core.errors import ConfigError

    if not Path("/dev/null").exists():
        pytest.skip("needs /dev/null")
    with pytest.raises(ConfigError, match=r"/dev/null: is a character device, not a regular file"):
        safe_read.read_bytes("/dev/null", max_bytes=1024)


def test_without_sizes_in_the_manifest_a_bundle_reads_with_a_warning_and_the_ceiling_applies(tmp_path: Path
                                                                                             ) -> None:
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m.pop("sizes"))  # a bundle written before sizes were recorded
    assert bundle_io.read_bundle(path).region == "base"
    report = bundle_io.verify_bundle(path)
    assert report.ok and any(c.name == "sizes" and c.status == "warn" for c in report.checks)
    with pytest.raises(BundleError, match=r"\.safetensors: is \d+ B, more than the limit of 1024 B"):
        bundle_io.read_bundle(path, max_file_bytes=1024)


# ------------------------------------------------------------------------------------- strict manifests


def test_a_manifest_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    text = (path / "manifest.json").read_text()
    # A second bundle_version: json.loads would keep the last one, a first-wins parser the first.
    (path / "manifest.json").write_text(text.replace('"bundle_version": 1,', '"bundle_version": 1, '
                                                     '"bundle_version": 9,', 1))
    with pytest.raises(BundleError, match=r"manifest\.json: refused JSON: duplicate key 'bundle_version'"):
        bundle_io.read_bundle(path)


@pytest.mark.parametrize("depth", [100, 100_000])
def test_a_deeply_nested_manifest_names_the_file_and_never_raises_recursion_error(tmp_path: Path, depth: int
                                                                                    ) -> None:
    path, _ = write_base(tmp_path / "base")
    manifest = json.loads((path / "manifest.json").read_text())
    text = json.dumps(manifest)[:-1] + ', "metrics2": ' + "[" * depth + "]" * depth + "}"
    (path / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=r"manifest\.json: refused JSON: nested more than 64 levels deep"):
        bundle_io.read_bundle(path)


def test_a_lone_surrogate_in_a_manifest_is_refused_not_a_unicode_error(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m["metrics"].__setitem__("note", "\ud800"))
    with pytest.raises(BundleError, match=r"manifest\.json: refused JSON: string '\\ud800' holds a lone UTF-16 "
                       "surrogate"):
        bundle_io.read_bundle(path)


def test_a_signature_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    from regionadapt_ros.core.signing import generate_keypair

    private, public, _ = generate_keypair(tmp_path / "keys")
    path, _ = write_base(tmp_path / "base")
    bundle_io.sign_bundle(path, private)
    document = json.loads((path / "signature.json").read_text())
    (path / "signature.json").write_text('{"key_id": "0000000000000000", ' + json.dumps(document)[1:])
    with pytest.raises(BundleError, match=r"signature\.json: refused JSON: duplicate key 'key_id'"):
        bundle_io.read_bundle(path, trusted_keys=[public])


# ------------------------------------------------------------------------------------- serving side


@needs_fifo
def test_the_hot_swap_refuses_a_fifo_bundle_and_keeps_serving(tmp_path: Path) -> None:
    from bundle_factory import write_bundle_set

    from regionadapt_ros.core.bundle_store import BundleStore
    from regionadapt_ros.inference.loading import bundle_loader
    from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
    from regionadapt_ros.inference.swap import HotSwapManager

    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=True)
    fifo = s["bundle_dir"] / "left_hand" / "decision.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    mgr = HotSwapManager(OnnxRuntimeBackend(), bundle_loader(BundleStore.from_yaml(s["yaml"])))
    try:
        mgr.initialize("base")
        mgr.request("left_hand")
        if not mgr.wait_idle(60):
            release_fifo(fifo)
            pytest.fail("the loader is blocked on a FIFO bundle file")
        weights = mgr.begin_frame()
        mgr.end_frame()
        assert weights.region == "base"  # the previous weights keep serving
        assert "decision.safetensors: is a FIFO" in mgr.failures["left_hand"], mgr.failures
    finally:
        release_fifo(fifo)
        mgr.shutdown()


@needs_fifo
def test_a_driving_session_whose_initial_region_is_a_fifo_bundle_fails_to_start_with_the_reason(tmp_path: Path
                                                                                                 ) -> None:
    from bundle_factory import write_bundle_set

    from regionadapt_ros.driving_session import DrivingConfig, DrivingSession

    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    fifo = s["bundle_dir"] / "left_hand" / "perception.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    session = DrivingSession.from_regions_file(DrivingConfig(), str(s["yaml"]), initial_region="left_hand")
    try:
        with pytest.raises(BundleError, match=r"left_hand/perception\.safetensors: is a FIFO"):
            call_guarded(session.start, fifo)
    finally:
        release_fifo(fifo)
        call_guarded(session.close, fifo)


def test_a_mutated_manifest_is_accepted_or_refused_never_an_unexpected_exception(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    original = (path / "manifest.json").read_bytes()
    outcomes = {"accepted": 0, "refused": 0}
    for data in mutations(original, 5, 400, b'{}[]",:0123456789eE.-\\u', max_delete=40):
        (path / "manifest.json").write_bytes(data)
        try:
            bundle_io.read_bundle(path, architectures())
            outcomes["accepted"] += 1
        except BundleError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300, outcomes  # most mutations break something, each with a BundleError
