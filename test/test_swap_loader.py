"""The loader process (DESIGN.md §6.7): bundles are read, verified and resolved in another process and handed
over in shared memory; one bad load (a file that blocks, a file that never ends, a crash) is bounded, and later
requests are still served; closing always returns."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from bundle_factory import write_bundle_set
from swap_loaders import WrappedLoader

from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.core.errors import BundleError, ConfigError
from regionadapt_ros.inference import spawn_spec
from regionadapt_ros.inference.loader_process import LoaderProcess, LoaderProcessError
from regionadapt_ros.inference.loading import BundleLoader, bundle_loader
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager
from regionadapt_ros.inference.weight_source import LoadTimeoutError, SourceClosedError, ThreadWeightSource
from regionadapt_ros.inference.weight_transfer import TensorEntry, pack_weights, unpack_weights

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs and fd passing")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return write_bundle_set(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def backend():
    return OnnxRuntimeBackend(intra_op_threads=1)


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "never-written.fifo"
    os.mkfifo(path)
    return str(path)


def loader_of(bundles, **kwargs) -> WrappedLoader:
    return WrappedLoader(bundle_loader(BundleStore.from_yaml(bundles["yaml"])), **kwargs)


def assert_weights_equal(got, want):
    assert set(got) == set(want)
    for model in want:
        assert set(got[model]) == set(want[model])
        for name, arr in want[model].items():
            np.testing.assert_allclose(got[model][name], arr, atol=1e-6, err_msg=f"{model}.{name}")


def test_bundles_are_loaded_in_another_process_without_torch(bundles):
    source = LoaderProcess(loader_of(bundles))
    try:
        for region in ("highway", "mountain", "left_hand"):  # subset, LoRA and full bundles
            loaded = source.load(region, 60)
            assert_weights_equal(loaded.weights, bundles["weights"][region])
            assert loaded.rules["loader_pid"] != os.getpid() and loaded.rules["loader_pid"] == source.pid
            assert loaded.rules["torch_imported"] is False
            assert loaded.rules["speed_limit_kph"] > 0 and loaded.bundle_id.startswith(region)
        assert source.starts == 1 and source.kills == 0
    finally:
        source.close()
    assert source.pid is None


def test_a_refusal_in_the_loader_process_keeps_its_type_and_message(tmp_path):
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    data = bytearray((s["bundle_dir"] / "left_hand" / "decision.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (s["bundle_dir"] / "left_hand" / "decision.safetensors").write_bytes(bytes(data))
    source = LoaderProcess(bundle_loader(BundleStore.from_yaml(s["yaml"])))
    try:
        with pytest.raises(BundleError, match="sha256"):
            source.load("left_hand", 60)
        with pytest.raises(ConfigError, match="unknown region 'atlantis'"):
            source.load("atlantis", 60)
        assert source.load("base", 60).region == "base"  # the same process goes on
        assert source.starts == 1
    finally:
        source.close()


def test_a_load_that_blocks_is_killed_and_later_loads_go_on(bundles, fifo):
    source = LoaderProcess(loader_of(bundles, block={"mountain": fifo}))
    try:
        first_pid = source.load("highway", 60).rules["loader_pid"]
        with pytest.raises(LoadTimeoutError, match="'mountain' did not finish within 1 s"):
            source.load("mountain", 1.0)
        assert source.kills == 1
        loaded = source.load("left_hand", 60)  # a new loader process serves the next request
        assert loaded.rules["loader_pid"] != first_pid and source.starts == 2
        assert_weights_equal(loaded.weights, bundles["weights"]["left_hand"])
    finally:
        source.close()


def test_a_crashing_loader_process_is_replaced(bundles):
    source = LoaderProcess(loader_of(bundles, crash=("mountain",)))
    try:
        with pytest.raises(LoaderProcessError, match=r"died while loading region 'mountain'.*exit code 3"):
            source.load("mountain", 60)
        assert source.load("highway", 60).region == "highway"
        assert source.starts == 2
    finally:
        source.close()


def test_close_returns_while_a_load_is_blocked(bundles, fifo):
    source = LoaderProcess(loader_of(bundles, block={"mountain": fifo}))
    source.start(60)
    errors = []

    def load():
        try:
            source.load("mountain", 3600)
        except Exception as exc:
            errors.append(exc)

    waiting = threading.Thread(target=load)
    waiting.start()
    for _ in range(6000):  # until the loader process is blocked on the FIFO (bounded: 60 s)
        if os.path.exists(fifo + ".waiting"):
            break
        threading.Event().wait(0.01)
    assert os.path.exists(fifo + ".waiting")
    source.close()
    waiting.join(60)
    assert not waiting.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SourceClosedError)
    with pytest.raises(SourceClosedError):
        source.load("highway", 60)


def test_a_blocked_bundle_never_wedges_the_swap_manager(bundles, backend, fifo):
    mgr = HotSwapManager(backend, loader_of(bundles, block={"mountain": fifo}), load_timeout_s=1.0)
    mgr.initialize("base")
    mgr.request("mountain")
    assert mgr.wait_idle(60)
    assert mgr.begin_frame().region == "base"  # frames kept being served on the previous weights
    mgr.end_frame()
    assert mgr.failures["mountain"].startswith("LoadTimeout: loading region 'mountain' did not finish")
    assert mgr.status()["load_timeouts"] == 1 and mgr.status()["failed_loads"] == 1
    mgr.request("highway")  # a later request is served
    assert mgr.wait_idle(60)
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    # a new blocked load is in flight while the session shuts down: shutdown still returns
    mgr.request("mountain")
    done = threading.Event()
    closer = threading.Thread(target=lambda: (mgr.shutdown(), done.set()))
    closer.start()
    closer.join(60)
    assert done.is_set()


def test_an_initial_region_that_blocks_fails_start_up_with_the_reason(bundles, backend, fifo):
    mgr = HotSwapManager(backend, loader_of(bundles, block={"base": fifo}), load_timeout_s=1.0)
    with pytest.raises(LoadTimeoutError, match="loading region 'base' did not finish within 1 s"):
        mgr.initialize("base")
    mgr.shutdown()


def test_a_bundle_file_that_is_a_fifo_never_wedges_the_loader(tmp_path, backend):
    """A FIFO named like a weight file: refused before reading, or, if a read blocks anyway, timed out."""
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    target = s["bundle_dir"] / "left_hand" / "decision.safetensors"
    target.unlink()
    os.mkfifo(target)
    mgr = HotSwapManager(backend, bundle_loader(BundleStore.from_yaml(s["yaml"])), load_timeout_s=2.0)
    mgr.initialize("base")
    mgr.request("left_hand")
    assert mgr.wait_idle(60)
    assert "left_hand" in mgr.failures
    assert mgr.begin_frame().region == "base"
    mgr.end_frame()
    mgr.request("base")
    assert mgr.wait_idle(60)
    mgr.shutdown()


def test_a_bundle_file_that_never_ends_is_bounded_in_memory(tmp_path, backend):
    """decision.safetensors → /dev/zero: the loader process hits its memory limit (or the bundle check refuses
    the symlink first); this process's memory does not grow, and the next request is served."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    s = write_bundle_set(tmp_path, regions=("left_hand", "highway"), signed=False)
    target = s["bundle_dir"] / "left_hand" / "decision.safetensors"
    target.unlink()
    target.symlink_to("/dev/zero")
    mgr = HotSwapManager(backend, bundle_loader(BundleStore.from_yaml(s["yaml"])), load_timeout_s=60.0,
                         loader_memory_limit_mb=768)
    mgr.initialize("base")
    rss_before = _rss_mb()
    mgr.request("left_hand")
    assert mgr.wait_idle(120)
    reason = mgr.failures["left_hand"]
    assert "memory" in reason or reason.startswith("BundleError"), reason
    assert _rss_mb() < rss_before + 64  # the 768 MiB of zeros were read in the other process, if at all
    mgr.request("highway")
    assert mgr.wait_idle(60)
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    mgr.shutdown()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_thread_source_abandons_a_blocked_load_and_serves_the_next(fifo):
    calls = []

    def loader(region):
        calls.append(region)
        if region == "stuck":
            with open(fifo, "rb") as f:
                f.read()
        return region

    source = ThreadWeightSource(loader)
    with pytest.raises(LoadTimeoutError, match=r"'stuck' did not finish within 0\.5 s"):
        source.load("stuck", 0.5)
    assert source.load("fine", 30) == "fine" and source.abandoned == 1
    source.close()
    with pytest.raises(SourceClosedError):
        source.load("fine", 30)
    with open(fifo, "wb"):  # release the abandoned thread
        pass


def test_bundle_loader_travels_as_its_settings_not_a_pickle(tmp_path):
    s = write_bundle_set(tmp_path, regions=("highway",), signed=True, require_signatures=True)
    loader = bundle_loader(BundleStore.from_yaml(s["yaml"]))
    frame = spawn_spec.pack(loader)
    assert b"\x80\x04" not in frame[:2] and b"Ed25519PublicKey" not in frame  # data, not pickled objects
    copy = spawn_spec.unpack(frame)
    assert isinstance(copy, BundleLoader) and copy is not loader
    assert copy.store.require_signatures and set(copy.store.trusted_keys) == set(loader.store.trusted_keys)
    assert copy.store.state_file == loader.store.state_file
    assert copy.store.region_configs == loader.store.region_configs
    assert copy.architectures == loader.architectures  # shapes stay tuples, so the architecture check matches
    assert_weights_equal(copy("highway").weights, s["weights"]["highway"])


def test_a_loader_that_is_not_spawnable_is_refused_in_the_parent(bundles):
    inner = bundle_loader(BundleStore.from_yaml(bundles["yaml"]))
    with pytest.raises(spawn_spec.SpawnSpecError, match=r"spec\.loader: .*function .*<lambda> .*not spawnable"):
        LoaderProcess(lambda region: inner(region))  # a closure cannot be rebuilt from data
    nested = r"spec\.loader<WrappedLoader>\.inner: .*<lambda> .*not spawnable"
    with pytest.raises(spawn_spec.SpawnSpecError, match=nested):
        LoaderProcess(WrappedLoader(lambda region: inner(region)))


def test_shared_weights_round_trip_and_bad_tables_are_refused():
    weights = {"m": {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([True, False]),
                     "c": np.zeros((0, 5), np.float32)}}
    packed = pack_weights(weights)
    out = unpack_weights(os.dup(packed.fd), packed.size, packed.table)
    assert_weights_equal(out, weights)
    out["m"]["a"][0, 0] = 99.0  # copy-on-write: the block itself is not changed
    again = unpack_weights(os.dup(packed.fd), packed.size, packed.table)
    assert again["m"]["a"][0, 0] == 0.0
    bad_dtype = (TensorEntry("m", "x", "|O", (1,), 0),)
    with pytest.raises(ValueError, match="not a plain number type"):
        unpack_weights(os.dup(packed.fd), packed.size, bad_dtype)
    outside = (TensorEntry("m", "x", "<f4", (packed.size,), 0),)
    with pytest.raises(ValueError, match="outside the shared weights block"):
        unpack_weights(os.dup(packed.fd), packed.size, outside)
    os.close(packed.fd)


def test_the_driving_session_loads_through_the_loader_process(bundles):
    """The node, the replay and the demo drive a DrivingSession: its bundles come through the loader process,
    which stops with the session."""
    from regionadapt_ros.driving_session import DrivingConfig, DrivingSession

    session = DrivingSession.from_regions_file(DrivingConfig(load_timeout_s=60.0), str(bundles["yaml"]))
    session.start()
    try:
        source = session.swap.source
        assert isinstance(source, LoaderProcess) and source.pid is not None and source.pid != os.getpid()
        assert session.swap.status()["loader"].startswith("loader process (prefetch at nice +")
        assert session.swap.load_timeout_s == 60.0
        pid = source.pid
    finally:
        session.close()
    assert source.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_prefetch_loads_run_at_the_lower_priority_and_urgent_ones_do_not(bundles, backend):
    base_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    mgr = HotSwapManager(backend, loader_of(bundles), loader_nice=7)
    mgr.initialize("base")  # urgent: nothing serves yet
    assert mgr.serving.rules["loader_nice"] == base_nice
    mgr.hint("highway")  # a prefetch
    assert mgr.wait_idle(60)
    assert mgr.staged.rules["loader_nice"] == min(19, base_nice + 7)
    mgr.request("mountain")  # active without a hint: the vehicle waits for these weights
    assert mgr.wait_idle(60)
    assert mgr.staged.rules["loader_nice"] == base_nice
    assert "prefetch at nice +7" in mgr.status()["loader"]
    mgr.shutdown()


def test_the_onnx_graph_is_written_and_optimised_in_the_loader_process(bundles, backend):
    """The ONNX Runtime backend's stage runs in the loader process; a session from its optimised graph computes
    what a session built in this process from the same weights computes."""
    from regionadapt_ros.inference.backend import INPUT_SHAPES

    source = LoaderProcess(loader_of(bundles), stages=backend.loader_stages())
    try:
        loaded = source.load("mountain", 120)
        assert set(loaded.staged) == {"perception", "decision"}
        rng = np.random.default_rng(3)
        inputs = {k: rng.standard_normal(v).astype(np.float32) for k, v in INPUT_SHAPES["perception"].items()}
        staged = backend.prepare_staged("perception", loaded.weights["perception"], loaded.staged["perception"])
        local = backend.prepare("perception", bundles["weights"]["mountain"]["perception"])
        for name, value in local.run(inputs).items():
            np.testing.assert_allclose(staged.run(inputs)[name], value, rtol=1e-5, atol=1e-6)
    finally:
        source.close()


def test_ctrl_c_in_the_terminal_leaves_the_loader_process_to_its_parent(bundles):
    """A terminal sends SIGINT to the whole process group; the child ignores it (no traceback of its own) and
    goes on serving until the parent closes it."""
    import signal

    source = LoaderProcess(loader_of(bundles))
    try:
        source.load("highway", 60)
        pid = source.pid
        os.kill(pid, signal.SIGINT)
        assert source.load("mountain", 60).bundle_id.startswith("mountain")
        assert source.pid == pid and source.starts == 1
    finally:
        source.close()
