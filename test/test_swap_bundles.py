"""Hot swap with real signed bundles from the BundleStore: every refused bundle keeps the previous weights
serving every frame, with the reason reported (DESIGN.md §5, §6)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from bundle_factory import write_bundle_set
from safetensors.numpy import load_file, save_file

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.bundle import format as bundle_format
from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.inference.backend import INPUT_SHAPES
from regionadapt_ros.inference.loading import bundle_loader
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager
from regionadapt_ros.inference.torch_backend import TorchBackend


@pytest.fixture(scope="module")
def backend():
    return OnnxRuntimeBackend()


def feeds():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES["perception"].items()}


def control_of(weights, backend):
    p = backend.prepare("perception", weights["perception"])
    d = backend.prepare("decision", weights["decision"])
    f = p.run(feeds())["features"]
    return d.run({"features": f, "speed": np.full((1, 1), 9.0, np.float32)})["control"]


def serve_frames(mgr, n=5):
    out = []
    for _ in range(n):
        ws = mgr.begin_frame()
        f = ws.runners["perception"].run(feeds())["features"]
        c = ws.runners["decision"].run({"features": f, "speed": np.full((1, 1), 9.0, np.float32)})["control"]
        mgr.end_frame()
        out.append((ws.region, c))
    return out


def test_every_delta_kind_resolves_and_serves_its_weights(tmp_path, backend):
    s = write_bundle_set(tmp_path)
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store))
    mgr.initialize("base")
    ref = TorchBackend()
    for region in ("highway", "mountain", "left_hand"):
        mgr.request(region)
        assert mgr.wait_idle(30)
        region_served, control = serve_frames(mgr, 1)[0]
        assert region_served == region, mgr.failures
        np.testing.assert_allclose(control, control_of(s["weights"][region], ref), atol=1e-4)
        assert mgr.serving.rules["driving_side"] == ("left" if region == "left_hand" else "right")
    assert store.installed_versions()["mountain"] == 1
    mgr.shutdown()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_shape(bundle):
    # a consistent bundle (hashes fixed up, re-signed) whose tensor does not fit the architecture
    f = bundle / "decision.safetensors"
    t = load_file(str(f))
    t["head.weight"] = np.zeros((3, 64), np.float32)
    save_file(t, str(f))
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["decision.safetensors"] = bundle_format._sha256_of_file(f)
    m["sizes"]["decision.safetensors"] = f.stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(m))


def _unsigned(bundle):
    (bundle / "signature.json").unlink()


def _alter_manifest(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["metrics"] = {"accuracy": 1.0}
    (bundle / "manifest.json").write_text(json.dumps(m))


CASES = {
    "truncated safetensors": (lambda b: _truncate(b / "perception.safetensors"), "perception.safetensors"),
    "sha256 mismatch": (lambda b: _flip_byte(b / "decision.safetensors"), "sha256"),
    "wrong tensor shape": (_wrong_shape, "head.weight"),
    "unsigned where required": (_unsigned, "signature"),
    "manifest altered after signing": (_alter_manifest, "signature"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_bundle_keeps_previous_weights_serving(tmp_path, backend, case):
    # the shape case is checked on an unsigned store, where the fingerprint check is what refuses it
    signed = case != "wrong tensor shape"
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=signed)
    damage, needle = CASES[case]
    damage(s["bundle_dir"] / "left_hand")
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store))
    mgr.initialize("base")
    before = serve_frames(mgr, 1)[0][1]
    mgr.request("left_hand")
    assert mgr.wait_idle(30)
    frames = serve_frames(mgr, 10)
    assert all(region == "base" for region, _ in frames)  # every frame computed, on the previous weights
    for _, control in frames:
        np.testing.assert_array_equal(control, before)
    reason = mgr.failures["left_hand"]
    assert needle in reason and "left_hand" in reason, reason
    assert mgr.status()["state"].startswith("waiting for left_hand")
    mgr.shutdown()


def test_older_bundle_version_is_refused(tmp_path, backend):
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store))
    mgr.initialize("base")
    mgr.request("left_hand")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "left_hand"
    # bundle v3 installed, then v2 shows up on disk: refused, v3 keeps serving
    for version in (3, 2):
        tmp = tmp_path / f"v{version}"
        w = s["weights"]["left_hand"]
        bundle_io.write_bundle(tmp, "left_hand", version, w, "full",
                               bundle_io.models_hash(s["weights"]["base"]),
                               bundle_io.read_bundle(s["bundle_dir"] / "left_hand").architectures(), {})
        shutil.rmtree(s["bundle_dir"] / "left_hand")
        shutil.copytree(tmp, s["bundle_dir"] / "left_hand")
        mgr.request("base")
        mgr.wait_idle(30)
        serve_frames(mgr, 1)
        mgr.request("left_hand")
        mgr.wait_idle(30)
        serve_frames(mgr, 1)
    frames = serve_frames(mgr, 3)
    assert all(r == "base" for r, _ in frames), (frames[0][0], mgr.failures, mgr.status())
    assert "older than installed version 3" in mgr.failures["left_hand"]
    mgr.shutdown()


def test_a_bundle_that_fails_its_warm_up_does_not_raise_the_installed_version(tmp_path, backend):
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    store = BundleStore.from_yaml(s["yaml"])
    now = [0.0]
    mgr = HotSwapManager(backend, bundle_loader(store), clock=lambda: now[0], isolation="thread")
    mgr.initialize("base")
    mgr.request("left_hand")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "left_hand"
    assert mgr.wait_idle(30)  # the version is recorded after the frame that switched
    good = store.installed_versions()["left_hand"]
    # version good+1 verifies (finite weights, right shapes) but its decision head overflows at warm-up
    bad = {m: {k: np.array(v) for k, v in w.items()} for m, w in s["weights"]["left_hand"].items()}
    bad["decision"]["head.weight"] = np.full_like(bad["decision"]["head.weight"], 3e38)
    keep = tmp_path / "good"
    shutil.move(s["bundle_dir"] / "left_hand", keep)
    bundle_io.write_bundle(s["bundle_dir"] / "left_hand", "left_hand", good + 1, bad, "full",
                           bundle_io.models_hash(s["weights"]["base"]),
                           bundle_io.read_bundle(keep).architectures(), {})
    mgr.request("base")
    mgr.wait_idle(30)
    serve_frames(mgr, 1)
    mgr.request("left_hand")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "base"
    assert "non-finite warm-up output" in mgr.failures["left_hand"]
    assert store.installed_versions()["left_hand"] == good
    # the operator puts the good bundle back: it is not refused as a rollback
    shutil.rmtree(s["bundle_dir"] / "left_hand")
    shutil.copytree(keep, s["bundle_dir"] / "left_hand")
    now[0] += 60.0  # past the failed load's retry back-off
    mgr.request("left_hand")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "left_hand", mgr.failures
    mgr.shutdown()


def test_base_bundle_may_serve_another_region_but_no_other_bundle_may(tmp_path, backend):
    s = write_bundle_set(tmp_path, regions=("highway", "mountain"), signed=False)
    import yaml

    cfg = yaml.safe_load(s["yaml"].read_text())
    cfg["regions"]["urban_day"] = {"bundle": "base", "rules": {"speed_limit_kph": 50, "driving_side": "right"}}
    cfg["regions"]["mountain"]["bundle"] = "highway"  # a bundle made for another region
    s["yaml"].write_text(yaml.safe_dump(cfg))
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store))
    mgr.initialize("base")
    mgr.request("urban_day")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "urban_day"  # served by the base model
    mgr.request("mountain")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "urban_day"
    assert "is for region 'highway'" in mgr.failures["mountain"]
    mgr.shutdown()


def test_a_delta_that_fails_to_serve_does_not_raise_the_base_bundles_installed_version(tmp_path, backend):
    s = write_bundle_set(tmp_path, regions=("highway",), signed=False)
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store), isolation="thread")
    mgr.initialize("base")
    assert store.installed_versions() == {"base": 1}
    arch = bundle_io.read_bundle(s["bundle_dir"] / "base").architectures()
    base_hash = bundle_io.models_hash(s["weights"]["base"])
    shutil.rmtree(s["bundle_dir"] / "base")  # an update puts base v2 on disk; v1 keeps serving
    bundle_io.write_bundle(s["bundle_dir"] / "base", "base", 2, s["weights"]["base"], "full", None, arch, {})
    shutil.rmtree(s["bundle_dir"] / "highway")  # a highway delta that verifies but overflows at warm-up
    head = np.full_like(s["weights"]["base"]["decision"]["head.weight"], 3e38)
    bundle_io.write_bundle(s["bundle_dir"] / "highway", "highway", 1, {"perception": {}, "decision": {
        "head.weight": head}}, "subset", base_hash, arch, {})
    mgr.request("highway")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "base" and "non-finite warm-up output" in mgr.failures["highway"]
    mgr.shutdown()
    assert store.installed_versions() == {"base": 1}  # v2 was only read as the delta's reference


def test_a_set_switched_to_just_before_shutdown_is_still_recorded_as_installed(tmp_path, backend):
    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store), isolation="thread")
    mgr.initialize("base")
    mgr.request("left_hand")
    assert mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "left_hand"
    mgr.shutdown()  # the commit queued behind the switching frame is cancelled with the loader's queue
    assert store.installed_versions() == {"base": 1, "left_hand": 1}


def test_an_unwritable_rollback_registry_fails_the_start_and_is_reported_while_driving(tmp_path, backend,
                                                                                       monkeypatch):
    import yaml

    from regionadapt_ros.core.errors import ConfigError

    s = write_bundle_set(tmp_path, regions=("left_hand",), signed=False)
    doc = yaml.safe_load(s["yaml"].read_text())
    # absent, so it reads as a first start; its folder cannot be made (procfs)
    s["yaml"].write_text(yaml.safe_dump({**doc, "state_file": "/proc/regionadapt_test/installed.json"}))
    mgr = HotSwapManager(backend, bundle_loader(BundleStore.from_yaml(s["yaml"])), isolation="thread")
    with pytest.raises(ConfigError, match="rollback protection needs a writable state_file"):
        mgr.initialize("base")
    mgr.shutdown()
    s["yaml"].write_text(yaml.safe_dump({**doc, "state_file": str(tmp_path / "state" / "installed.json")}))
    store = BundleStore.from_yaml(s["yaml"])
    mgr = HotSwapManager(backend, bundle_loader(store), isolation="thread")
    mgr.initialize("base")

    def disk_full(region, bundle_id, version):  # the registry stays readable; writing it now fails
        raise ConfigError(store.state_file, "cannot record the installed bundle version (No space left on device)")

    monkeypatch.setattr(store, "record_installed", disk_full)
    mgr.request("left_hand")
    mgr.wait_idle(30)
    assert serve_frames(mgr, 1)[0][0] == "left_hand"  # the set serves: taking it back would be worse
    assert mgr.wait_idle(30)
    status = mgr.status()
    assert status["commit_failures"] == 1 and "cannot record the installed bundle version" in \
        status["last_commit_error"]
    from regionadapt_ros.driving_session.outputs import model_status

    diag = model_status("driving_node", "hw", status, "left_hand", "onnxruntime", True)
    assert diag.level == 1 and "could not be recorded as installed" in diag.message
    mgr.shutdown()
