"""The engine cache's load-vs-rebuild decisions, self-healing, and the `regionadapt engine build`
orchestration, with a fake engine builder and runtime injected where TensorRT would be (no GPU needed).

The fake builder returns a "plan" that encodes what it was built from, so a test can tell which plan the fake
runtime was handed; the fake runtime refuses anything that is not such a plan, as TensorRT refuses a plan
from another version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import perturbed_weights

from regionadapt_ros.commands import engine as engine_cmd
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.inference.backend import INPUT_SHAPES, BackendError, InferenceBackend
from regionadapt_ros.inference.engine_cache import (
    CACHE_FORMAT,
    BuildOptions,
    DeviceEnv,
    EngineCache,
    calibration_cache_path,
    calibration_digest,
    check_calibration_frames,
    engine_label,
    ensure_plan,
    load_or_build,
    make_key,
    sha256_hex,
    standby_guard,
)
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.refit import onnx_structure_sha256, onnx_with_weights
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights
from regionadapt_ros.models.export import export_onnx_bytes
from regionadapt_ros.models.registry import MODEL_NAMES, reference_architectures

ORIN = DeviceEnv("10.3.0", "8.7", "Orin")
SHA_A = "a" * 64
SHA_B = "b" * 64


class FakeBuilder:
    """Stands in for ``build_serialized_engine``: b"PLAN|<what>|<padding>", or None to simulate a failed
    build (TensorRT's build_serialized_network returns None when it runs out of GPU memory)."""

    def __init__(self, what: str = "v1") -> None:
        self.what = what
        self.calls = 0
        self.fail = False

    def __call__(self) -> bytes | None:
        self.calls += 1
        if self.fail:
            return None
        return f"PLAN|{self.what}|".encode() + bytes(range(256)) * 4


class FakeRuntime:
    """Stands in for ``Runtime.deserialize_cuda_engine``: returns an engine object for a fake plan, None
    otherwise; remembers every plan it was handed."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.refuse = False

    def __call__(self, plan: bytes):
        self.seen.append(plan)
        if self.refuse or not plan.startswith(b"PLAN|"):
            return None
        return {"engine_of": plan.split(b"|")[1].decode()}


def key_for(env: DeviceEnv = ORIN, onnx_sha: str = SHA_A, **options) -> object:
    return make_key(onnx_sha, env, BuildOptions(**options), "perception")


@pytest.fixture()
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "engines")


def test_first_lookup_builds_then_the_cached_engine_is_loaded(cache: EngineCache) -> None:
    key = key_for()
    builder, runtime = FakeBuilder(), FakeRuntime()
    engine, _, outcome = load_or_build(cache, "perception-x", key, builder, runtime)
    assert (outcome.action, outcome.reason) == ("built", "no cached engine")
    assert engine == {"engine_of": "v1"}
    sidecar = json.loads(outcome.plan_path.with_suffix(".json").read_text())
    assert sidecar["key"]["tensorrt_version"] == "10.3.0" and sidecar["key"]["compute_capability"] == "8.7"
    assert sidecar["key"]["input_shapes"]["image"] == [[1, 3, 96, 160]] * 3
    assert sidecar["plan"] == {"sha256": sha256_hex(outcome.plan_path.read_bytes()),
                               "size": outcome.plan_path.stat().st_size}

    engine, _, outcome = load_or_build(cache, "perception-x", key, builder, runtime)
    assert (outcome.action, outcome.reason) == ("cached", "cached engine matches")
    assert builder.calls == 1 and engine == {"engine_of": "v1"}
    assert not list(cache.directory.glob("*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize(
    ("built_with", "wanted", "reason"),
    [
        (dict(env=DeviceEnv("10.3.0", "8.7")), dict(env=DeviceEnv("10.5.0", "8.7")),
         "TensorRT version 10.3.0 != 10.5.0"),
        (dict(env=DeviceEnv("10.3.0", "8.7")), dict(env=DeviceEnv("10.3.0", "9.0")),
         "compute capability 8.7 != 9.0"),
        (dict(onnx_sha=SHA_A), dict(onnx_sha=SHA_B), "onnx sha256 changed"),
        (dict(max_batch=1), dict(max_batch=4), "input shapes changed"),
        # every Orin module reports compute capability 8.7: the device model is keyed too
        (dict(env=DeviceEnv("10.3.0", "8.7", "AGX Orin")), dict(env=DeviceEnv("10.3.0", "8.7", "Orin Nano")),
         "device 'AGX Orin' != 'Orin Nano'"),
        (dict(dla_core=0, gpu_fallback=True), dict(dla_core=0, gpu_fallback=False), "gpu_fallback=True != "),
    ],
    ids=["tensorrt-version", "compute-capability", "onnx-sha256", "input-shapes", "device-model", "gpu-fallback"],
)
def test_engine_built_for_something_else_is_rebuilt_not_deserialized(cache, built_with, wanted, reason) -> None:
    old_builder, runtime = FakeBuilder("old"), FakeRuntime()
    load_or_build(cache, "perception-x", key_for(**built_with), old_builder, runtime)
    runtime.seen.clear()

    new_builder = FakeBuilder("new")
    decision = cache.lookup("perception-x", key_for(**wanted))
    assert not decision.load and reason in decision.reason
    engine, _, outcome = load_or_build(cache, "perception-x", key_for(**wanted), new_builder, runtime)
    assert outcome.action == "built" and reason in outcome.reason
    assert engine == {"engine_of": "new"}
    assert all(b"|old|" not in plan for plan in runtime.seen)  # the stale plan never reached the runtime
    # Healed: the replacement is now the cached engine for the new key.
    assert cache.lookup("perception-x", key_for(**wanted)).load


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "append"])
def test_corrupt_engine_file_is_detected_by_its_recorded_hash(cache: EngineCache, damage: str) -> None:
    key = key_for()
    _, outcome = ensure_plan(cache, "perception-x", key, FakeBuilder())
    data = bytearray(outcome.plan_path.read_bytes())
    if damage == "flip-byte":
        data[100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data += b"garbage"
    outcome.plan_path.write_bytes(bytes(data))

    decision = cache.lookup("perception-x", key)
    assert not decision.load and decision.plan is None
    assert "corrupt engine file (size/hash mismatch" in decision.reason
    runtime = FakeRuntime()
    _, _, healed = load_or_build(cache, "perception-x", key, FakeBuilder("rebuilt"), runtime)
    assert healed.action == "built" and "corrupt engine file" in healed.reason
    assert runtime.seen == [healed.plan_path.read_bytes()]  # only the rebuilt plan was deserialized


def test_crash_between_plan_and_sidecar_is_healed(cache: EngineCache) -> None:
    """A new plan renamed into place without its sidecar (a crash in store) no longer matches the recorded
    hash, so it is rebuilt instead of trusted."""
    key = key_for()
    _, first = ensure_plan(cache, "perception-x", key, FakeBuilder("first"))
    first.plan_path.write_bytes(FakeBuilder("second")())
    assert "corrupt engine file" in cache.lookup("perception-x", key).reason


@pytest.mark.parametrize("sidecar_text", ["{not json", "[]", json.dumps({"format": CACHE_FORMAT, "key": {},
                                                                          "plan": {}})])
def test_corrupt_sidecar_means_rebuild(cache: EngineCache, sidecar_text: str) -> None:
    key = key_for()
    _, outcome = ensure_plan(cache, "perception-x", key, FakeBuilder())
    outcome.plan_path.with_suffix(".json").write_text(sidecar_text)
    decision = cache.lookup("perception-x", key)
    assert not decision.load
    assert "corrupt sidecar perception-x.fp16.json" in decision.reason


def test_missing_sidecar_means_rebuild(cache: EngineCache) -> None:
    key = key_for()
    _, outcome = ensure_plan(cache, "perception-x", key, FakeBuilder())
    outcome.plan_path.with_suffix(".json").unlink()
    decision = cache.lookup("perception-x", key)
    assert not decision.load and "no sidecar perception-x.fp16.json" in decision.reason


def test_failed_build_raises_and_caches_nothing(cache: EngineCache) -> None:
    builder = FakeBuilder()
    builder.fail = True
    with pytest.raises(BackendError, match=r"perception-x: TensorRT engine build failed .*out of GPU memory"):
        load_or_build(cache, "perception-x", key_for(), builder, FakeRuntime())
    assert not list(cache.directory.glob("*.engine")) and not list(cache.directory.glob("*.json"))


def test_out_of_memory_during_the_standby_build_becomes_a_backend_error(cache: EngineCache) -> None:
    def build() -> bytes:
        with standby_guard("perception", "engine build"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")

    with pytest.raises(BackendError, match=r"perception: standby engine not prepared \(engine build\): out of "
                                           r"GPU memory \(CUDA out of memory. Tried to allocate 64.00 MiB\)"):
        load_or_build(cache, "perception-x", key_for(), build, FakeRuntime())


def test_cached_plan_that_fails_to_deserialize_is_dropped_and_rebuilt_once(cache: EngineCache) -> None:
    key = key_for()
    ensure_plan(cache, "perception-x", key, FakeBuilder("bad"))
    runtime = FakeRuntime()
    calls = {"n": 0}

    def deserialize(plan: bytes):
        calls["n"] += 1
        return None if calls["n"] == 1 else runtime(plan)  # e.g. a driver update invalidated the plan

    builder = FakeBuilder("good")
    engine, _, outcome = load_or_build(cache, "perception-x", key, builder, deserialize)
    assert engine == {"engine_of": "good"} and builder.calls == 1
    assert (outcome.action, outcome.reason) == ("built", "cached engine failed to deserialize")


def test_fresh_plan_that_fails_to_deserialize_is_an_error(cache: EngineCache) -> None:
    runtime = FakeRuntime()
    runtime.refuse = True
    with pytest.raises(BackendError, match="perception-x: freshly built TensorRT engine could not be deserialized"):
        load_or_build(cache, "perception-x", key_for(), FakeBuilder(), runtime)


def test_precision_and_refit_options_get_their_own_files(cache: EngineCache) -> None:
    fp16 = key_for(precision="fp16")
    fp32 = key_for(precision="fp32")
    refit = key_for(precision="fp16", refittable=True)
    paths = {cache.paths("perception-x", k)[0].name for k in (fp16, fp32, refit)}
    assert paths == {"perception-x.fp16.engine", "perception-x.fp32.engine", "perception-x.fp16.refit.engine"}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (dict(precision="fp8"), "precision 'fp8' is not one of fp32, fp16, int8"),
        (dict(precision="int8", refittable=True), "int8 engines cannot be refittable"),
        (dict(precision="fp32", dla_core=0), "DLA runs FP16 or INT8 only"),
        (dict(opt_batch=4, max_batch=2), "opt_batch (4) <= max_batch (2)"),
        (dict(workspace_bytes=0), "workspace_bytes must be > 0"),
    ],
)
def test_bad_build_options_are_refused(options: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        BuildOptions(**options)
    assert "engine build options" in str(err.value) and problem in str(err.value)


def test_label_with_path_parts_is_refused(cache: EngineCache) -> None:
    with pytest.raises(BackendError, match=r"engine label '../escape' must be"):
        cache.lookup("../escape", key_for())


def test_calibration_frames_are_checked_and_change_the_key() -> None:
    options = BuildOptions(precision="int8")
    good = [{n: np.zeros(s, np.float32) for n, s in INPUT_SHAPES["decision"].items()}]
    check_calibration_frames("decision", good, options)
    with pytest.raises(BackendError, match="decision: int8 needs calibration frames"):
        check_calibration_frames("decision", [], options)
    bad_shape = [{"features": np.zeros((2, 64), np.float32), "speed": np.zeros((1, 1), np.float32)}]
    with pytest.raises(BackendError, match=r"calibration frame 0 input 'features' has shape \(2, 64\)"):
        check_calibration_frames("decision", bad_shape, options)
    with pytest.raises(BackendError, match="calibration frame 0 has no input speed"):
        check_calibration_frames("decision", [{"features": np.zeros((1, 64), np.float32)}], options)
    other = [{n: np.ones(s, np.float32) for n, s in INPUT_SHAPES["decision"].items()}]
    assert calibration_digest(good) != calibration_digest(other)
    k1 = make_key(SHA_A, ORIN, options, "decision", calibration_sha256=calibration_digest(good))
    k2 = make_key(SHA_A, ORIN, options, "decision", calibration_sha256=calibration_digest(other))
    assert k1 != k2


# ------------------------------------------------------------------ a failing standby keeps the serving runner


class StandbyFailsBackend(InferenceBackend):
    """ONNX Runtime serves; once ``fail`` is set, ``prepare`` raises exactly what the TensorRT path raises:
    an out-of-memory during the standby buffer allocation, or a build that returned no plan."""

    name = "standby-fails"

    def __init__(self, cache: EngineCache, mode: str) -> None:
        self.inner = OnnxRuntimeBackend()
        self.cache = cache
        self.mode = mode
        self.fail = False
        self.failed = 0

    def prepare(self, model_name, weights):
        if self.fail:
            self.failed += 1
            if self.mode == "oom":
                with standby_guard(model_name, "allocate I/O buffers"):
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
            builder = FakeBuilder()
            builder.fail = True
            key = make_key(SHA_A, ORIN, BuildOptions(), model_name)
            load_or_build(self.cache, engine_label(model_name, SHA_A, False), key, builder, FakeRuntime())
        return self.inner.prepare(model_name, weights)


@pytest.mark.parametrize(("mode", "reason"), [("oom", "out of GPU memory"), ("build-none", "engine build failed")])
def test_failed_standby_keeps_the_serving_runner_serving_every_frame(cache: EngineCache, mode: str,
                                                                     reason: str) -> None:
    seeds = {"base": 1, "highway": 2}

    def loader(region: str) -> LoadedWeights:
        return LoadedWeights(region, f"{region}@v1", {m: perturbed_weights(m, seeds[region]) for m in MODEL_NAMES})

    now = {"t": 0.0}
    backend = StandbyFailsBackend(cache, mode)
    mgr = HotSwapManager(backend, loader, clock=lambda: now["t"], retry_initial_s=1.0)
    mgr.initialize("base")
    backend.fail = True
    rng = np.random.default_rng(0)
    computed, regions = 0, []
    for frame in range(12):
        now["t"] = frame / 30.0
        if frame == 2:
            mgr.request("highway")
        if frame == 3:
            assert mgr.wait_idle(30)
        ws = mgr.begin_frame()
        feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES["perception"].items()}
        perception = ws.runners["perception"].run(feeds)
        control = ws.runners["decision"].run({"features": perception["features"],
                                              "speed": np.full((1, 1), 10.0, np.float32)})["control"]
        mgr.end_frame()
        assert np.all(np.isfinite(control))
        computed += 1
        regions.append(ws.region)
    assert computed == 12 and set(regions) == {"base"}
    assert backend.failed >= 1
    failure = mgr.failures["highway"]
    assert failure.startswith("BackendError: ") and reason in failure
    # The device recovers: after the back-off the region is retried and switched to between frames.
    backend.fail = False
    now["t"] = 5.0
    mgr.begin_frame()
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.begin_frame().region == "highway"
    mgr.shutdown()


# ------------------------------------------------------------------ `regionadapt engine build` orchestration


@pytest.fixture(scope="module")
def graphs() -> dict[str, bytes]:
    return {name: export_onnx_bytes(name) for name in MODEL_NAMES}


def _write_regions(tmp_path: Path) -> tuple[Path, dict[str, dict[str, dict[str, np.ndarray]]]]:
    """A base bundle (full weights) and a highway bundle (head-only subset), plus regions.yaml."""
    architectures = reference_architectures()
    base = {m: perturbed_weights(m, 1) for m in MODEL_NAMES}
    highway_full = {m: perturbed_weights(m, 2) for m in MODEL_NAMES}
    heads = {"perception": ("tl_head.", "lane_head.", "obstacle_head.", "feature_head."), "decision": ("head.",)}
    highway_subset = {m: {k: v for k, v in highway_full[m].items() if k.startswith(heads[m])} for m in MODEL_NAMES}
    bundles = tmp_path / "bundles"
    bundle_io.write_bundle(bundles / "base", "base", 1, base, "full", None, architectures, {"mae": 0.5})
    bundle_io.write_bundle(bundles / "highway", "highway", 1, highway_subset, "subset", bundle_io.models_hash(base),
                           architectures, {"mae": 0.4})
    config = tmp_path / "regions.yaml"
    config.write_text(yaml.safe_dump({
        "default_region": "base", "base_region": "base", "bundle_dir": "bundles",
        "regions": {"base": {"bundle": "base", "rules": {"speed_limit_kph": 50, "driving_side": "right"}},
                    "highway": {"bundle": "highway", "rules": {"speed_limit_kph": 110, "driving_side": "right"}}},
    }))
    resolved = {"base": base,
                "highway": {m: {**base[m], **highway_subset[m]} for m in MODEL_NAMES}}
    return config, resolved


class RecordingBuilder:
    def __init__(self) -> None:
        self.built: list[tuple[str, str]] = []
        self.fail_models: set[str] = set()

    def __call__(self, onnx: bytes, model_name: str, options: BuildOptions) -> bytes | None:
        self.built.append((model_name, sha256_hex(onnx)))
        if model_name in self.fail_models:
            return None
        return b"PLAN|" + sha256_hex(onnx).encode()


def test_engine_build_per_region_builds_what_the_runtime_looks_up(tmp_path: Path, graphs) -> None:
    config, resolved = _write_regions(tmp_path)
    cache = EngineCache(tmp_path / "engines")
    builder = RecordingBuilder()
    options = BuildOptions(precision="fp16")
    results = engine_cmd.build_from_regions_config(config, options, cache, ORIN, builder, graphs)
    assert [(r.region, r.model_name, r.action) for r in results] == [
        ("base", "perception", "built"), ("base", "decision", "built"),
        ("highway", "perception", "built"), ("highway", "decision", "built")]
    # Each engine is named and keyed exactly as TensorRTBackend.prepare derives it from the resolved weights.
    for result in results:
        region_onnx = onnx_with_weights(graphs[result.model_name], resolved[result.region][result.model_name],
                                        result.model_name)
        sha = sha256_hex(region_onnx)
        assert result.label == engine_label(result.model_name, sha, refittable=False)
        assert cache.lookup(result.label, make_key(sha, ORIN, options, result.model_name)).load
    # Run again: nothing to build.
    again = engine_cmd.build_from_regions_config(config, options, cache, ORIN, builder, graphs)
    assert {r.action for r in again} == {"cached"} and len(builder.built) == 4
    # A TensorRT upgrade makes every engine stale: all rebuilt, and the reason says why.
    upgraded = engine_cmd.build_from_regions_config(config, options, cache, DeviceEnv("10.5.0", "8.7"), builder,
                                                    graphs)
    assert {r.action for r in upgraded} == {"built"}
    assert all("TensorRT version 10.3.0 != 10.5.0" in r.reason for r in upgraded)


def test_engine_build_refit_builds_one_engine_per_architecture(tmp_path: Path, graphs) -> None:
    config, _ = _write_regions(tmp_path)
    cache = EngineCache(tmp_path / "engines")
    builder = RecordingBuilder()
    options = BuildOptions(precision="fp16", refittable=True)
    results = engine_cmd.build_from_regions_config(config, options, cache, ORIN, builder, graphs)
    assert [(r.region, r.model_name, r.label, r.action) for r in results] == [
        ("*", "perception", "perception-refit", "built"), ("*", "decision", "decision-refit", "built")]
    key = make_key(onnx_structure_sha256(graphs["perception"]), ORIN, options, "perception", "structure")
    assert cache.lookup("perception-refit", key).load


def test_engine_build_reports_a_refused_bundle_and_a_failed_build_and_builds_the_rest(tmp_path: Path,
                                                                                      graphs) -> None:
    config, _ = _write_regions(tmp_path)
    head = tmp_path / "bundles" / "highway" / "perception.safetensors"
    head.write_bytes(head.read_bytes()[:-8] + b"tampered")
    cache = EngineCache(tmp_path / "engines")
    builder = RecordingBuilder()
    builder.fail_models = {"decision"}
    results = engine_cmd.build_from_regions_config(config, BuildOptions(), cache, ORIN, builder, graphs)
    by = {(r.region, r.model_name): r for r in results}
    refused = by[("highway", "-")]
    assert refused.action == "failed" and "perception.safetensors" in refused.reason
    assert "sha256" in refused.reason
    assert by[("base", "perception")].action == "built"
    assert by[("base", "decision")].action == "failed"
    assert "TensorRT engine build failed" in by[("base", "decision")].reason


def test_engine_build_refit_refuses_a_region_whose_weights_do_not_fit_the_graph(graphs) -> None:
    weights = {"base": {m: perturbed_weights(m, 1) for m in MODEL_NAMES}}
    weights["odd"] = {m: dict(w) for m, w in weights["base"].items()}
    weights["odd"]["decision"]["head.weight"] = np.zeros((3, 64), np.float32)
    jobs, refused = engine_cmd.plan_jobs(weights, graphs, refit=True)
    assert [(j.region, j.model_name) for j in jobs] == [("*", "perception"), ("*", "decision")]
    assert len(refused) == 1 and refused[0].region == "odd"
    assert "head.weight: shape (3, 64) != ONNX initializer 'head.weight' shape (2, 64)" in refused[0].reason


def test_engine_build_command_without_tensorrt_says_so(tmp_path: Path, capsys) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here: the command would build real engines")
    from regionadapt_ros.cli import main

    config, _ = _write_regions(tmp_path)
    code = main(["engine", "build", "--regions-config", str(config), "--cache-dir", str(tmp_path / "engines")])
    assert code == 1
    assert "regionadapt engine build: error: tensorrt is not importable" in capsys.readouterr().err


def test_a_plan_cached_before_device_models_were_keyed_is_rebuilt(cache: EngineCache) -> None:
    key = key_for()
    _, outcome = ensure_plan(cache, "perception-x", key, FakeBuilder("old"))
    sidecar = outcome.plan_path.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    doc["format"] = 1
    for name in ("device_name", "gpu_fallback"):
        del doc["key"][name]
    sidecar.write_text(json.dumps(doc))
    decision = cache.lookup("perception-x", key)
    assert not decision.load and decision.reason == f"sidecar format 1 != {CACHE_FORMAT}"


def test_int8_calibration_tables_are_kept_per_graph_and_per_frame_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames_a = [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}]
    frames_b = [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}]
    paths = {calibration_cache_path(tmp_path, "perception", onnx, frames)
             for onnx in (b"graph of highway", b"graph of mountain") for frames in (frames_a, frames_b)}
    assert len(paths) == 4 and all(p.parent == tmp_path and p.name.startswith("perception-") for p in paths)
    assert calibration_cache_path(tmp_path, "perception", b"g", frames_a) == \
        calibration_cache_path(tmp_path, "perception", b"g", [dict(f) for f in frames_a])
    with pytest.raises(BackendError):
        calibration_cache_path(tmp_path, "../x", b"g", frames_a)


def test_engine_build_builds_by_default_what_the_driving_node_looks_up(tmp_path: Path) -> None:
    from regionadapt_ros.cli import build_parser
    from regionadapt_ros.driving_session import DrivingConfig

    args = build_parser().parse_args(["engine", "build", "--regions-config", "r.yaml"])
    node = DrivingConfig(backend="tensorrt").tensorrt_options()
    assert (args.refit, args.precision, args.dla_core) == (node["refittable"], node["precision"], node["dla_core"])
    options = BuildOptions(precision=args.precision, refittable=args.refit, dla_core=args.dla_core)
    assert engine_cmd.node_parameters_line(options, None) == (
        "the driving node serves these engines with: backend: tensorrt, tensorrt_precision: fp16, tensorrt_refit: "
        "true, tensorrt_dla_core: -1, tensorrt_cache_dir: ''")
    per_region = build_parser().parse_args(["engine", "build", "--regions-config", "r.yaml", "--no-refit",
                                            "--dla-core", "1"])
    line = engine_cmd.node_parameters_line(BuildOptions(precision=per_region.precision, refittable=per_region.refit,
                                                        dla_core=per_region.dla_core), tmp_path)
    assert "tensorrt_precision: fp16, tensorrt_refit: false, tensorrt_dla_core: 1" in line and str(tmp_path) in line
    assert "serves batch 1" in engine_cmd.node_parameters_line(BuildOptions(max_batch=4), None)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to look the cache up as another user")
def test_a_read_only_cache_of_prebuilt_engines_is_read_without_its_lock() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as where:  # not under pytest's 0700 folder: the other user must reach it
        _read_only_lookup(Path(where))


def _read_only_lookup(tmp_path: Path) -> None:
    cache_dir = tmp_path / "engines"
    key = key_for()
    ensure_plan(EngineCache(cache_dir), "perception-x", key, FakeBuilder("prebuilt"))
    for path in (tmp_path, cache_dir, *cache_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for lock in cache_dir.glob("*.lock"):
        lock.unlink()  # as an image of prebuilt engines ships: no lock files, nothing writable
    script = (f"import json, sys; from regionadapt_ros.inference.engine_cache import EngineCache, EngineKey; "
              f"key = EngineKey.from_json(json.loads(sys.argv[1])); "
              f"d = EngineCache({str(cache_dir)!r}).lookup('perception-x', key); print(d.load, d.reason)")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                             script, json.dumps(key.as_json())], capture_output=True, text=True, timeout=120,
                            cwd=str(Path(__file__).resolve().parents[1]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True cached engine matches"
