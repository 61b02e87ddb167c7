"""Region bundles: writing, reading, verification, delta resolution, and every refused input."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as safetensors_np
from test_bundle_support import (
    PERCEPTION_SHAPES,
    SHAPES,
    architectures,
    random_weights,
    replace_file_and_hash,
    rewrite_manifest,
    write_base,
    write_head_delta,
)

from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.errors import BundleError

REPO = Path(__file__).resolve().parents[1]


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), path)
    return path


# ------------------------------------------------------------------------------------------- round trips


def test_full_bundle_round_trip_keeps_every_tensor_exactly(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    loaded = bundle_io.read_bundle(path, expected_architectures=architectures())
    resolved = loaded.resolve()
    assert set(resolved) == {"perception", "decision"}
    for model in resolved:
        assert set(resolved[model]) == set(weights[model])
        for name, array in weights[model].items():
            assert resolved[model][name].dtype == array.dtype
            assert resolved[model][name].shape == array.shape
            np.testing.assert_array_equal(resolved[model][name], array)
    manifest = loaded.manifest
    assert manifest["schema_version"] == 1
    assert manifest["region"] == "base" and manifest["bundle_version"] == 1
    assert manifest["base_model"]["hash"] == bundle_io.models_hash(weights)  # a base is its own base
    assert datetime.fromisoformat(manifest["created"]).tzinfo is not None
    assert manifest["created_by"].startswith("regionadapt_ros")
    assert loaded.signature_state == "unsigned"


def test_manifest_lists_every_file_with_its_sha256(tmp_path: Path) -> None:
    onnx_path = _tiny_onnx(tmp_path / "exported.onnx")
    weights = random_weights(3)
    path = bundle_io.write_bundle(tmp_path / "b", "urban_day", 4, weights, "full", None, architectures(),
                                  {"primary": "mae"}, onnx_files={"perception": onnx_path})
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk == {"perception.safetensors", "decision.safetensors", "perception.onnx"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    assert (path / "perception.onnx").read_bytes() == onnx_path.read_bytes()
    loaded = bundle_io.read_bundle(path)
    assert loaded.onnx_path("perception") == path / "perception.onnx"
    assert loaded.onnx_path("decision") is None


def test_weight_files_are_plain_safetensors(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    direct = safetensors_np.load_file(str(path / "perception.safetensors"))
    np.testing.assert_array_equal(direct["head.weight"], weights["perception"]["head.weight"])


def test_subset_bundle_keeps_base_tensors_it_does_not_hold(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base")
    path, stored = write_head_delta(tmp_path / "highway", base)
    resolved = bundle_io.read_bundle(path, architectures()).resolve(base)
    perception = resolved["perception"]
    np.testing.assert_array_equal(perception["head.weight"], stored["perception"]["head.weight"])
    np.testing.assert_array_equal(perception["head.bias"], stored["perception"]["head.bias"])
    for name in set(PERCEPTION_SHAPES) - {"head.weight", "head.bias"}:
        np.testing.assert_array_equal(perception[name], base["perception"][name])
    # The resolved weights are new arrays: changing them must not corrupt the (cached) base.
    before = base["perception"]["stem.weight"].copy()
    perception["stem.weight"] += 1.0
    np.testing.assert_array_equal(base["perception"]["stem.weight"], before)


def test_lora_bundle_resolves_linear_and_conv_weights(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base")
    rng = np.random.default_rng(7)
    rank, alpha = 2, 6.0
    stored = {
        "perception": {
            "stem.weight.lora_A": rng.standard_normal((rank, 3 * 3 * 3)).astype(np.float32),
            "stem.weight.lora_B": rng.standard_normal((8, rank)).astype(np.float32),
            "head.weight.lora_A": rng.standard_normal((rank, 8)).astype(np.float32),
            "head.weight.lora_B": rng.standard_normal((3, rank)).astype(np.float32),
            "head.bias": rng.standard_normal(3).astype(np.float32),
        },
        "decision": {},
    }
    kinds = {"perception": "lora", "decision": "subset"}
    path = bundle_io.write_bundle(tmp_path / "lora", "mountain", 2, stored, kinds, bundle_io.models_hash(base),
                                  architectures(), {}, lora={"perception": {"alpha": alpha, "rank": rank}})
    resolved = bundle_io.read_bundle(path, architectures()).resolve(base)["perception"]
    scale = alpha / rank
    a, b = stored["perception"]["stem.weight.lora_A"], stored["perception"]["stem.weight.lora_B"]
    # Conv delta written out per output channel, input channel and kernel position.
    conv_delta = np.einsum("or,rcij->ocij", b, a.reshape(rank, 3, 3, 3))
    np.testing.assert_allclose(resolved["stem.weight"], base["perception"]["stem.weight"] + scale * conv_delta,
                               rtol=1e-5, atol=1e-5)
    head_delta = stored["perception"]["head.weight.lora_B"] @ stored["perception"]["head.weight.lora_A"]
    np.testing.assert_allclose(resolved["head.weight"], base["perception"]["head.weight"] + scale * head_delta,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(resolved["head.bias"], stored["perception"]["head.bias"])
    np.testing.assert_array_equal(resolved["stem.bias"], base["perception"]["stem.bias"])
    assert resolved["stem.weight"].dtype == np.float32
    assert not any(name.endswith((".lora_A", ".lora_B")) for name in resolved)


def test_real_networks_round_trip_and_load_strictly(tmp_path: Path) -> None:
    from conftest import perturbed_weights

    from regionadapt_ros.models.registry import build_model, load_named_weights, reference_architectures

    expected = reference_architectures()
    weights = {name: perturbed_weights(name, seed=5) for name in expected}
    path = bundle_io.write_bundle(tmp_path / "base", "base", 1, weights, "full", None, expected, {})
    resolved = bundle_io.read_bundle(path, expected_architectures=expected).resolve()
    for name, named in resolved.items():
        model = load_named_weights(build_model(name), named)  # strict: every tensor, same shapes
        state = model.state_dict()
        for tensor_name, array in weights[name].items():
            np.testing.assert_array_equal(state[tensor_name].numpy(), array)


# ------------------------------------------------------------------------------------- hashes and names


def test_weights_hash_depends_on_names_dtypes_shapes_and_values_not_order() -> None:
    a = np.arange(12, dtype=np.float32)
    b = np.ones((2, 2), dtype=np.float32)
    reference = bundle_io.weights_hash({"a": a, "b": b})
    assert bundle_io.weights_hash({"b": b, "a": a}) == reference
    assert bundle_io.weights_hash({"a": a.reshape(3, 4), "b": b}) != reference  # same bytes, other shape
    assert bundle_io.weights_hash({"a": a.view(np.int32), "b": b}) != reference  # same bytes, other dtype
    assert bundle_io.weights_hash({"a2": a, "b": b}) != reference
    changed = a.copy()
    changed[5] += 1e-3
    assert bundle_io.weights_hash({"a": changed, "b": b}) != reference
    assert bundle_io.weights_hash({"a": a.astype(">f4"), "b": b}) == reference  # byte order is normalised


def test_fingerprint_is_order_independent_and_shape_sensitive() -> None:
    shapes = dict(PERCEPTION_SHAPES)
    fp = bundle_io.fingerprint(shapes)
    assert fp["params"]["head.weight"] == {"shape": [3, 8], "dtype": "float32"}
    assert bundle_io.fingerprint(dict(reversed(list(shapes.items()))))["hash"] == fp["hash"]
    shapes["head.weight"] = ((4, 8), "float32")
    assert bundle_io.fingerprint(shapes)["hash"] != fp["hash"]


def test_bundle_id_names_region_version_and_content(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base")
    path, _ = write_head_delta(tmp_path / "hw", base, region="highway", version=7)
    manifest = bundle_io.read_manifest(path)
    identifier = bundle_io.bundle_id(manifest)
    assert re.fullmatch(r"highway@v7:[0-9a-f]{12}", identifier)
    manifest["metrics"]["finetuned"] = 0.41
    assert bundle_io.bundle_id(manifest) != identifier


def test_non_finite_metrics_are_stored_as_null(tmp_path: Path) -> None:
    path = bundle_io.write_bundle(tmp_path / "b", "base", 1, random_weights(0), "full", None, architectures(),
                                  {"tl_accuracy": float("nan"), "mae": np.float32(0.25), "per_class": [1.0, np.inf]})
    metrics = bundle_io.read_manifest(path)["metrics"]
    assert metrics == {"tl_accuracy": None, "mae": 0.25, "per_class": [1.0, None]}


# ----------------------------------------------------------------------------------------- atomic writes


def test_existing_bundle_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base", seed=0)
    before = (path / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        write_base(tmp_path / "base", seed=1)
    assert (path / "manifest.json").read_bytes() == before
    bundle_io.write_bundle(path, "base", 2, random_weights(1), "full", None, architectures(), {}, overwrite=True)
    assert bundle_io.read_manifest(path)["bundle_version"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]  # nothing left beside it


def test_failed_write_leaves_no_bundle_and_no_partial_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        bundle_io.write_bundle(tmp_path / "b", "base", 1, random_weights(0), "full", None, architectures(), {},
                               onnx_files={"perception": tmp_path / "no_such.onnx"})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    weights = random_weights(0)
    weights["perception"]["head.weight"][0, 0] = np.nan
    with pytest.raises(BundleError, match=r"perception\.safetensors: tensor 'head.weight' has 1 non-finite"):
        bundle_io.write_bundle(tmp_path / "b", "base", 1, weights, "full", None, architectures(), {})
    weights = random_weights(0)
    weights["perception"]["extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(BundleError, match=r"tensor 'extra.weight' is not in the architecture"):
        bundle_io.write_bundle(tmp_path / "b", "base", 1, weights, "full", None, architectures(), {})
    with pytest.raises(BundleError, match="base_hash is required for a delta bundle"):
        bundle_io.write_bundle(tmp_path / "b", "x", 1, {"perception": {}}, "subset", None, architectures(), {})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- bad inputs


def test_truncated_safetensors_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    data = (path / "perception.safetensors").read_bytes()
    (path / "perception.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"perception\.safetensors: is \d+ B but the manifest lists \d+ B "
                       r"\(truncated or replaced\)") as info:
        bundle_io.read_bundle(path)
    assert info.value.path.endswith("perception.safetensors")


def test_same_size_file_with_other_content_is_refused_by_its_hash(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    data = bytearray((path / "perception.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "perception.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"perception\.safetensors: sha256 mismatch"):
        bundle_io.read_bundle(path)


def test_truncated_safetensors_file_with_matching_hash_is_refused_by_the_parser(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    data = (path / "decision.safetensors").read_bytes()
    replace_file_and_hash(path, "decision.safetensors", data[:-10])
    with pytest.raises(BundleError, match=r"decision\.safetensors: not a valid safetensors file"):
        bundle_io.read_bundle(path)


def test_file_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    data = bytearray((path / "decision.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (path / "decision.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"decision\.safetensors: sha256 mismatch: manifest\.json lists [0-9a-f]{16}"):
        bundle_io.read_bundle(path)


def test_listed_file_that_is_missing_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (path / "decision.safetensors").unlink()
    with pytest.raises(BundleError, match=r"decision\.safetensors: listed in manifest\.json but missing"):
        bundle_io.read_bundle(path)


def test_tensor_with_wrong_shape_for_the_architecture_is_refused(tmp_path: Path) -> None:
    shapes = {model: dict(s) for model, s in SHAPES.items()}
    shapes["perception"]["head.weight"] = ((4, 8), "float32")  # a 4-class head
    shapes["perception"]["head.bias"] = ((4,), "float32")
    weights = random_weights(0)
    weights["perception"]["head.weight"] = np.zeros((4, 8), np.float32)
    weights["perception"]["head.bias"] = np.zeros(4, np.float32)
    fps = {model: bundle_io.fingerprint(s) for model, s in shapes.items()}
    path = bundle_io.write_bundle(tmp_path / "b", "base", 1, weights, "full", None, fps, {})
    with pytest.raises(BundleError) as info:
        bundle_io.read_bundle(path, expected_architectures=architectures())
    assert str(info.value).endswith("perception.safetensors: tensor 'head.bias' has shape (4,), "
                                    "architecture expects (3,)")


def test_file_tensor_contradicting_the_declared_architecture_is_refused(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    tensors = dict(weights["perception"])
    tensors["head.weight"] = np.zeros((4, 8), np.float32)
    replace_file_and_hash(path, "perception.safetensors", safetensors_np.save(tensors))
    with pytest.raises(BundleError) as info:
        bundle_io.read_bundle(path)
    assert str(info.value).endswith("perception.safetensors: tensor 'head.weight' has shape (4, 8), "
                                    "architecture expects (3, 8)")


def test_unknown_tensor_name_is_refused(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    tensors = dict(weights["decision"])
    tensors["fc9.weight"] = np.zeros((2, 2), np.float32)
    replace_file_and_hash(path, "decision.safetensors", safetensors_np.save(tensors))
    with pytest.raises(BundleError, match=r"decision\.safetensors: tensor 'fc9.weight' is not in the architecture"):
        bundle_io.read_bundle(path)


def test_nan_in_weights_is_refused(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    tensors = dict(weights["perception"])
    tensors["stem.bias"] = tensors["stem.bias"].copy()
    tensors["stem.bias"][[1, 4]] = [np.nan, np.inf]
    replace_file_and_hash(path, "perception.safetensors", safetensors_np.save(tensors))
    with pytest.raises(BundleError, match=r"perception\.safetensors: tensor 'stem.bias' has 2 non-finite value"):
        bundle_io.read_bundle(path)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        bundle_io.read_bundle(path)
    with pytest.raises(BundleError, match="bundle directory does not exist"):
        bundle_io.read_bundle(tmp_path / "nowhere")


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m.__setitem__("schema_version", 2))
    with pytest.raises(BundleError, match=r"manifest\.json: unknown schema_version 2 \(this reader understands 1\)"):
        bundle_io.read_bundle(path)


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (path / "manifest.json").write_text('{"schema_version": 1,')
    with pytest.raises(BundleError, match=r"manifest\.json: not valid JSON"):
        bundle_io.read_bundle(path)


def test_file_names_escaping_the_bundle_are_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    (tmp_path / "outside.safetensors").write_bytes((path / "decision.safetensors").read_bytes())

    def escape(manifest: dict) -> None:
        manifest["files"]["../outside.safetensors"] = manifest["files"].pop("decision.safetensors")
        manifest["models"]["decision"]["weights"] = "../outside.safetensors"

    rewrite_manifest(path, escape)
    with pytest.raises(BundleError, match=r"manifest\.json: files: '\.\./outside\.safetensors' must be a plain file"):
        bundle_io.read_bundle(path)


def test_edited_architecture_hash_is_refused(tmp_path: Path) -> None:
    path, _ = write_base(tmp_path / "base")
    rewrite_manifest(path, lambda m: m["models"]["perception"]["architecture"]["params"]["head.bias"]
                     .__setitem__("shape", [4]))
    with pytest.raises(BundleError, match=r"models\.perception\.architecture\.hash does not match its params"):
        bundle_io.read_bundle(path)


def test_unlisted_weight_files_are_never_loaded(tmp_path: Path) -> None:
    path, weights = write_base(tmp_path / "base")
    evil = {name: np.full(a.shape, 9, a.dtype) for name, a in weights["perception"].items()}
    (path / "perception.v2.safetensors").write_bytes(safetensors_np.save(evil))
    report = bundle_io.verify_bundle(path)
    assert report.ok
    assert any(c.status == "warn" and "perception.v2.safetensors" in c.detail for c in report.checks)
    resolved = bundle_io.read_bundle(path).resolve()
    np.testing.assert_array_equal(resolved["perception"]["head.weight"], weights["perception"]["head.weight"])


def test_bundle_missing_a_model_the_serving_architecture_needs_is_refused(tmp_path: Path) -> None:
    weights = random_weights(0)
    path = bundle_io.write_bundle(tmp_path / "b", "base", 1, {"perception": weights["perception"]}, "full", None,
                                  architectures(), {})
    with pytest.raises(BundleError, match=r"manifest\.json: models: the bundle has no model 'decision'"):
        bundle_io.read_bundle(path, expected_architectures=architectures())


def test_lora_factor_with_wrong_rank_or_missing_partner_is_refused(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base")
    stored = {"perception": {"head.weight.lora_A": np.zeros((2, 8), np.float32),
                             "head.weight.lora_B": np.zeros((3, 2), np.float32)}}
    path = bundle_io.write_bundle(tmp_path / "lora", "x", 1, stored, "lora", bundle_io.models_hash(base),
                                  architectures(), {}, lora={"perception": {"alpha": 1.0, "rank": 2}})
    replace_file_and_hash(path, "perception.safetensors", safetensors_np.save(
        {"head.weight.lora_A": np.zeros((3, 8), np.float32), "head.weight.lora_B": np.zeros((3, 3), np.float32)}))
    with pytest.raises(BundleError, match=r"perception\.safetensors: tensor 'head.weight.lora_A' has shape \(3, 8\), "
                       r"architecture and LoRA rank 2 expect \(2, 8\)"):
        bundle_io.read_bundle(path)
    replace_file_and_hash(path, "perception.safetensors", safetensors_np.save(
        {"head.weight.lora_A": np.zeros((2, 8), np.float32)}))
    with pytest.raises(BundleError, match=r"tensor 'head.weight.lora_B' is missing; LoRA factors come in pairs"):
        bundle_io.read_bundle(path)


def test_delta_resolved_on_a_different_base_is_refused(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base", seed=0)
    path, _ = write_head_delta(tmp_path / "hw", base)
    loaded = bundle_io.read_bundle(path)
    with pytest.raises(BundleError, match=r"manifest\.json: base_model\.hash [0-9a-f]{16}… does not match the base"):
        loaded.resolve(random_weights(99))
    with pytest.raises(BundleError, match="resolving it needs the base weights"):
        loaded.resolve(None)


def test_verify_bundle_reports_each_check_and_the_refusal(tmp_path: Path) -> None:
    _, base = write_base(tmp_path / "base")
    delta, _ = write_head_delta(tmp_path / "hw", base)
    report = bundle_io.verify_bundle(delta, architectures(), base_weights=base)
    assert report.ok, report.lines()
    names = [c.name for c in report.checks]
    assert names[0] == "manifest.json" and "decision.safetensors" in names and names[-1] == "resolve"
    (delta / "decision.safetensors").write_bytes(b"x")
    report = bundle_io.verify_bundle(delta, architectures(), base_weights=base)
    assert not report.ok
    assert isinstance(report.error, BundleError)
    assert report.checks[-1].status == "fail" and "but the manifest lists 1048 B" in report.checks[-1].detail


# ------------------------------------------------------------------------------------------- layering


def test_bundle_code_never_uses_pickle() -> None:
    # On the syntax tree, so that prose saying "never pickle" does not count and aliases cannot hide a use.
    forbidden_modules = {"pickle", "cPickle", "dill", "joblib", "torch", "shelve", "marshal"}
    core = REPO / "regionadapt_ros" / "core"
    inference = REPO / "regionadapt_ros" / "inference"
    # and the way bundles reach the serving process: the loader process, what it is told, what it hands back
    files = [*sorted((core / "bundle").glob("*.py")), core / "bundle_store.py", core / "signing.py",
             *(inference / f"{m}.py" for m in ("loading", "loader_process", "spawn_spec", "weight_transfer",
                                               "weight_source"))]
    assert len(files) > 8 and all(p.is_file() for p in files)
    for path in files:
        name = path.name
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & forbidden_modules, name
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in forbidden_modules, name
            elif isinstance(node, ast.keyword):
                assert node.arg != "allow_pickle", name
            elif isinstance(node, ast.Attribute):
                # numpy's .npy/.npz loader is the one that can unpickle; weights come from safetensors only.
                is_numpy = isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")
                assert not (is_numpy and node.attr == "load"), name
            elif isinstance(node, ast.Name):
                assert node.id not in ("pickle", "load_pickle"), name


def test_core_bundle_modules_import_without_torch() -> None:
    code = ("import sys; import regionadapt_ros.core.bundle, regionadapt_ros.core.bundle_store, "
            "regionadapt_ros.core.signing; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
