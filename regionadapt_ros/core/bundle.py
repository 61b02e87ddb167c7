"""Region bundles: manifest, writing, reading, verification and delta resolution (numpy only).

A bundle is a directory::

    manifest.json            what the bundle is (schema below); every other file is listed with its sha256
    signature.json           optional ed25519 signature over the canonical manifest bytes
    perception.safetensors   weights, safetensors (never pickle)
    decision.safetensors
    perception.onnx          optional ONNX exports

Manifest (JSON object, ``SCHEMA_VERSION`` 1)::

    schema_version  1
    region          region id, e.g. "highway"
    bundle_version  int >= 1, increases monotonically per region (rollback protection compares it)
    created         ISO 8601 UTC time;  created_by  tool/version string
    base_model      {"hash": models_hash(base bundle weights), "id": optional bundle_id of the base}
    models          {"perception": {"kind": "full"|"subset"|"lora", "weights": "perception.safetensors",
                                     "onnx": optional file name, "architecture": fingerprint,
                                     "lora": {"alpha": float, "rank": int} (kind "lora" only)}, ...}
    files           {file name: sha256 hex} for every file except manifest.json and signature.json
    sizes           {file name: size in bytes} for the same files (bundles written before sizes were recorded
                    lack it; then only the ceiling bounds a read)
    metrics         free dict: evaluation against the base model (non-finite numbers stored as null)
    override        optional {"forced": true, "reason": str}: kept although it did not beat the base
    rules           optional dict (speed limit, driving side, ...)

Weight kinds, resolved to full named weights by ``LoadedBundle.resolve``:

- ``full``: the file holds every tensor of the architecture.
- ``subset``: the file holds some tensors (a head, or head + adapter parameters); the others keep the base's.
- ``lora``: for an adapted weight ``W`` named ``X`` the file holds ``X.lora_A`` (r, prod(W.shape[1:])) and
  ``X.lora_B`` (W.shape[0], r), plus optional plain tensors as in ``subset``;
  ``W' = W + (alpha / r) * (B @ A).reshape(W.shape)`` (conv weights (out, in, kh, kw) flatten to (out, in*kh*kw)).

The signature covers ``canonical_json(manifest)`` (sorted keys, no whitespace, UTF-8); the manifest covers
every file by sha256, so one signature authenticates the whole bundle. With trusted keys given, a bundle must be
signed: deleting ``signature.json`` never turns a tampered bundle into an accepted "unsigned" one.

Reading is bounded (see ``core/safe_read.py``): only regular files inside the bundle directory are opened (a
symbolic link only when it resolves inside the directory the manifest resolves into, see ``bundle_root``; a FIFO
or a device is refused without being opened), each no larger
than its size in the manifest and ``max_file_bytes``; the manifest and the signature are parsed strictly
(duplicate keys, excessive depth refused; ``core/strict_parse.py``). Peak memory of a read: the weight files'
sizes (at most ``max_file_bytes`` each) twice over (the bytes and the parsed tensors); ONNX files are hashed in
1 MiB chunks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as safetensors_np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from regionadapt_ros import __version__
from regionadapt_ros.core import safe_read, signing, strict_parse
from regionadapt_ros.core.errors import BundleError, ConfigError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
MODEL_NAMES = ("perception", "decision")
KINDS = ("full", "subset", "lora")
LORA_A_SUFFIX = ".lora_A"
LORA_B_SUFFIX = ".lora_B"
WEIGHTS_SUFFIX = ".safetensors"
ONNX_SUFFIX = ".onnx"

# name → (shape, dtype name); what ``fingerprint`` takes and what ``models.registry.architecture`` returns.
NamedShapes = Mapping[str, tuple[tuple[int, ...], str]]
NamedArrays = Mapping[str, np.ndarray]
# A fingerprint dict {"params": ..., "hash": ...} or the NamedShapes it is computed from.
ArchitectureLike = Mapping[str, Any] | NamedShapes
TrustedKeys = Mapping[str, Ed25519PublicKey] | Iterable[str | os.PathLike]

REGION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20
# Ceilings on what one bundle may make the reader do. A weight or ONNX file larger than DEFAULT_MAX_FILE_BYTES is
# refused before it is read unless the caller raises the limit (regions.yaml: max_bundle_file_mib).
DEFAULT_MAX_FILE_BYTES = 512 * safe_read.MiB
MAX_MANIFEST_BYTES = 8 * safe_read.MiB
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_LISTED_FILES = 32


# ----------------------------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no whitespace, UTF-8, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def weights_hash(named_arrays: NamedArrays) -> str:
    """sha256 hex over the tensors in sorted name order: name, dtype, shape and little-endian C-order bytes.

    Each header and data block is length-prefixed so that no two different weight sets share a byte stream.
    """
    digest = hashlib.sha256()
    for name in sorted(named_arrays):
        array = np.asarray(named_arrays[name])
        little = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
        header = canonical_json([name, array.dtype.name, list(array.shape)])
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        digest.update(little.nbytes.to_bytes(8, "little"))
        digest.update(memoryview(little).cast("B"))
    return digest.hexdigest()


def models_hash(models: Mapping[str, NamedArrays]) -> str:
    """Hash of a bundle's full weights, all models together (``base_model.hash`` of bundles built on it):
    ``weights_hash`` over tensors named "<model>/<tensor>"."""
    flat = {f"{model}/{name}": array for model, arrays in models.items() for name, array in arrays.items()}
    return weights_hash(flat)


def fingerprint(named_shapes: NamedShapes) -> dict[str, Any]:
    """Architecture fingerprint {"params": {name: {"shape": [...], "dtype": "float32"}}, "hash": sha256 hex}.

    ``hash`` is the sha256 of ``canonical_json(params)``, so equal architectures have equal hashes whatever
    the order of the input.
    """
    params: dict[str, dict[str, Any]] = {}
    for name, (shape, dtype) in named_shapes.items():
        dtype_name = _dtype_name(dtype)
        if dtype_name is None:
            raise TypeError(f"tensor '{name}': {dtype!r} is not a numpy dtype")
        params[str(name)] = {"shape": [int(n) for n in shape], "dtype": dtype_name}
    return {"params": params, "hash": _params_hash(params)}


def fingerprint_of(named_arrays: NamedArrays) -> dict[str, Any]:
    """Fingerprint of concrete arrays (their names, shapes and dtypes)."""
    return fingerprint({name: (tuple(a.shape), a.dtype.name) for name, a in named_arrays.items()})


def bundle_id(manifest: Mapping[str, Any]) -> str:
    """Short, content-addressed name of a bundle: ``"<region>@v<version>:<sha256(canonical manifest)[:12]>"``."""
    sha = hashlib.sha256(canonical_json(manifest)).hexdigest()
    return f"{manifest.get('region')}@v{manifest.get('bundle_version')}:{sha[:12]}"


# ---------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Check:
    """One verification step: ``status`` is "ok", "warn" (accepted, worth knowing) or "fail"."""

    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status.upper():4s}  {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class VerificationReport:
    """Every check run on a bundle, in order; the first failure stops the checks that depend on it."""

    path: Path
    checks: list[Check] = field(default_factory=list)
    bundle_id: str | None = None
    signature_state: str = "unknown"
    error: BundleError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.status != "fail" for c in self.checks)

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedBundle:
    """A verified bundle: its manifest and, per model, the tensors exactly as stored (a delta for
    kinds "subset" and "lora"). ``resolve`` turns them into full weights."""

    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, dict[str, np.ndarray]]
    signature_state: str
    signer_key_id: str | None = None

    @property
    def region(self) -> str:
        return self.manifest["region"]

    @property
    def bundle_version(self) -> int:
        return self.manifest["bundle_version"]

    @property
    def bundle_id(self) -> str:
        return bundle_id(self.manifest)

    @property
    def kinds(self) -> dict[str, str]:
        return {name: entry["kind"] for name, entry in self.manifest["models"].items()}

    @property
    def is_delta(self) -> bool:
        """True when resolving needs base weights."""
        return any(kind != "full" for kind in self.kinds.values())

    def architecture(self, model: str) -> dict[str, Any]:
        """The declared fingerprint of ``model``."""
        return self.manifest["models"][model]["architecture"]

    def architectures(self) -> dict[str, dict[str, Any]]:
        return {name: entry["architecture"] for name, entry in self.manifest["models"].items()}

    def onnx_path(self, model: str) -> Path | None:
        """The ONNX export of ``model`` if the bundle has one (its sha256 was verified on read)."""
        name = self.manifest["models"][model].get("onnx")
        return self.path / name if name else None

    def resolve(self, base_weights: Mapping[str, NamedArrays] | None = None, check_base_hash: bool = True
                ) -> dict[str, dict[str, np.ndarray]]:
        """Full named weights per model: {model: {tensor name: array}}, shapes as the architecture.

        ``base_weights`` are the full weights of ALL models of the base bundle (needed unless every model is
        kind "full"); with ``check_base_hash`` their ``models_hash`` must equal ``base_model.hash``, since a
        delta applied to another base gives a plausible-looking but wrong model. Returned arrays are new
        (never the base's objects), so changing them cannot corrupt a cached base.
        """
        manifest_path = self.path / MANIFEST_NAME
        if self.is_delta:
            if base_weights is None:
                raise BundleError(manifest_path, "is a delta bundle (kinds "
                                  f"{sorted(set(self.kinds.values()))}); resolving it needs the base weights")
            if check_base_hash:
                expected = self.manifest["base_model"]["hash"]
                actual = models_hash(base_weights)
                if actual != expected:
                    raise BundleError(manifest_path, f"base_model.hash {expected[:16]}… does not match the base "
                                      f"weights given ({actual[:16]}…): the delta was built on a different base")
        resolved: dict[str, dict[str, np.ndarray]] = {}
        for model, entry in self.manifest["models"].items():
            label = self.path / entry["weights"]
            arch = _architecture_params(entry["architecture"])
            stored = self.tensors[model]
            kind = entry["kind"]
            if kind == "full":
                weights = {name: np.array(stored[name], copy=True) for name in arch}
            else:
                assert base_weights is not None  # checked above
                if model not in base_weights:
                    raise BundleError(label, f"base weights have no model '{model}' to apply the {kind} delta to")
                base = base_weights[model]
                problem = _first_difference(_shapes_of(base), arch, complete=True)
                if problem:
                    raise BundleError(label, f"base weights for '{model}' do not fit the architecture: {problem}")
                weights = {name: np.array(base[name], copy=True) for name in arch}
                for name, array in stored.items():
                    if not name.endswith((LORA_A_SUFFIX, LORA_B_SUFFIX)):
                        weights[name] = np.array(array, copy=True)
                if kind == "lora":
                    _apply_lora(label, weights, stored, entry["lora"])
            problem = _first_difference(_shapes_of(weights), arch, complete=True)
            if problem:  # cannot happen for a bundle that passed read_bundle; kept as the last line of defence
                raise BundleError(label, problem)
            _check_finite(label, weights, what="resolved tensor")
            resolved[model] = weights
        return resolved


def read_bundle(path: str | os.PathLike[str], expected_architectures: Mapping[str, ArchitectureLike] | None = None,
                trusted_keys: TrustedKeys | None = None, require_signature: bool = False, *,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> LoadedBundle:
    """Read and verify a bundle; BundleError naming the file and the problem on the first failure.

    Checks, in order: manifest schema; signature (when ``trusted_keys`` are given the bundle must be signed by
    one of them; without keys, unsigned is refused with ``require_signature``); every listed file a regular file
    inside the bundle, of the manifest's size and at most ``max_file_bytes``; sha256 of every listed file;
    safetensors parse; tensors against the declared architecture for the model's kind; finite values; declared
    architecture against ``expected_architectures`` ({model: fingerprint or named shapes}).
    Each weight file is read once: its sha256 and its tensors come from the same bytes.
    """
    return _read(Path(path), expected_architectures, trusted_keys, require_signature, checks=[],
                 max_file_bytes=max_file_bytes)


def verify_bundle(path: str | os.PathLike[str], expected_architectures: Mapping[str, ArchitectureLike] | None = None,
                  trusted_keys: TrustedKeys | None = None, require_signature: bool = False,
                  base_weights: Mapping[str, NamedArrays] | None = None, *,
                  max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> VerificationReport:
    """Run every check of ``read_bundle`` (and, with ``base_weights``, the resolution) and report them
    instead of raising. ``report.ok`` says whether the bundle would be accepted."""
    report = VerificationReport(Path(path))
    try:
        loaded = _read(Path(path), expected_architectures, trusted_keys, require_signature, checks=report.checks,
                       max_file_bytes=max_file_bytes)
        report.bundle_id = loaded.bundle_id
        report.signature_state = loaded.signature_state
        if base_weights is not None or not loaded.is_delta:
            loaded.resolve(base_weights)
            report.checks.append(Check("resolve", "ok", "resolved to full weights of the architecture"
                                       + (" on the matching base" if loaded.is_delta else "")))
        else:
            report.checks.append(Check("resolve", "warn", "delta bundle: not resolved (no base weights given)"))
    except BundleError as exc:
        report.error = exc
        report.checks.append(Check("refused", "fail", str(exc)))
    except ConfigError as exc:  # unreadable trusted key files
        report.error = BundleError(exc.path, exc.problem)
        report.checks.append(Check("refused", "fail", str(exc)))
    return report


def sign_bundle(path: str | os.PathLike[str], private_key_path: str | os.PathLike[str]) -> str:
    """Verify the bundle's integrity, then write ``signature.json`` over its canonical manifest (replacing any
    previous signature, atomically). Returns the signing key id."""
    bundle_dir = Path(path)
    private_key = signing.load_private_key(private_key_path)
    loaded = _read(bundle_dir, None, None, False, checks=[])  # never sign a corrupt bundle
    document = signing.sign(private_key, canonical_json(loaded.manifest))
    atomic_write_bytes(bundle_dir / SIGNATURE_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return document["key_id"]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate ``manifest.json`` of a bundle without touching its other files."""
    bundle_dir = Path(path)
    return _parse_manifest(bundle_dir, _read_manifest_bytes(bundle_dir))


# ----------------------------------------------------------------------------------------------- writing


def write_bundle(out_dir: str | os.PathLike[str], region: str, bundle_version: int,
                 models: Mapping[str, NamedArrays], kinds: Mapping[str, str] | str, base_hash: str | None,
                 architectures: Mapping[str, ArchitectureLike], metrics: Mapping[str, Any],
                 rules: Mapping[str, Any] | None = None,
                 onnx_files: Mapping[str, str | os.PathLike[str]] | None = None,
                 lora: Mapping[str, Mapping[str, Any]] | None = None,
                 override: Mapping[str, Any] | None = None, *, base_id: str | None = None,
                 created_by: str | None = None, overwrite: bool = False) -> Path:
    """Write a bundle directory atomically and return its path.

    ``models``: {model: {tensor: array}} as stored (full weights, a subset, or LoRA factors + plain tensors);
    ``kinds``: {model: kind} or one kind for all; ``architectures``: {model: fingerprint or named shapes} of
    the full model; ``base_hash``: ``models_hash`` of the base bundle's weights, or None for a base bundle
    (every kind "full": the hash of its own weights); ``lora``: {model: {"alpha", "rank"}} for kind "lora";
    ``override``: {"forced": True, "reason": ...} when kept although it did not beat the base.
    Everything is validated as ``read_bundle`` would, then written into a hidden directory beside ``out_dir``
    and renamed into place, so a half-written bundle is never visible under ``out_dir``.
    """
    out = Path(out_dir)
    if not isinstance(region, str) or not REGION_ID_PATTERN.match(region):
        raise BundleError(out / MANIFEST_NAME, f"region {region!r} must be letters, digits, '_', '-' or '.'")
    if isinstance(bundle_version, bool) or not isinstance(bundle_version, int) or bundle_version < 1:
        raise BundleError(out / MANIFEST_NAME, f"bundle_version {bundle_version!r} must be an integer >= 1")
    if not models:
        raise BundleError(out / MANIFEST_NAME, "a bundle needs at least one model")
    kind_of = {name: kinds for name in models} if isinstance(kinds, str) else dict(kinds)
    lora = dict(lora or {})
    onnx_files = dict(onnx_files or {})
    if out.exists() and not overwrite:
        raise BundleError(out, "already exists; pass overwrite=True to replace it")

    entries: dict[str, dict[str, Any]] = {}
    payloads: dict[str, bytes] = {}
    for model, tensors in models.items():
        weights_name = f"{model}{WEIGHTS_SUFFIX}"
        label = out / weights_name
        if model not in MODEL_NAMES:
            raise BundleError(label, f"unknown model '{model}'; bundles hold {', '.join(MODEL_NAMES)}")
        if model not in architectures:
            raise BundleError(label, f"no architecture given for model '{model}'")
        kind = kind_of.get(model)
        if kind not in KINDS:
            raise BundleError(label, f"kind {kind!r} must be one of {', '.join(KINDS)}")
        arch_fp = as_fingerprint(label, architectures[model])
        entry: dict[str, Any] = {"kind": kind, "weights": weights_name, "architecture": arch_fp}
        if kind == "lora":
            if model not in lora:
                raise BundleError(label, "kind 'lora' needs lora={'alpha': ..., 'rank': ...}")
            _validate_lora_spec(label, lora[model])
            entry["lora"] = {"alpha": float(lora[model]["alpha"]), "rank": int(lora[model]["rank"])}
        arrays = {str(name): np.asarray(array, order="C") for name, array in tensors.items()}
        _check_stored_tensors(label, kind, arrays, _architecture_params(arch_fp), entry.get("lora"))
        _check_finite(label, arrays, what="tensor")
        payloads[weights_name] = safetensors_np.save(arrays)
        if model in onnx_files:
            entry["onnx"] = f"{model}{ONNX_SUFFIX}"
        entries[model] = entry
    unknown_onnx = set(onnx_files) - set(models)
    if unknown_onnx:
        raise BundleError(out / MANIFEST_NAME, f"ONNX files given for models not in the bundle: {sorted(unknown_onnx)}")

    if base_hash is None:
        if any(entry["kind"] != "full" for entry in entries.values()):
            raise BundleError(out / MANIFEST_NAME, "base_hash is required for a delta bundle")
        base_hash = models_hash({name: models[name] for name in entries})
    if not isinstance(base_hash, str) or not _SHA256_HEX.match(base_hash):
        raise BundleError(out / MANIFEST_NAME, f"base_hash {base_hash!r} must be 64 lowercase hex digits")
    if override is not None:
        override = _json_safe(dict(override))
        _validate_override(out / MANIFEST_NAME, override)

    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        files: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for name, payload in payloads.items():
            _write_synced(staging / name, payload)
            files[name] = hashlib.sha256(payload).hexdigest()
            sizes[name] = len(payload)
        for model, source in onnx_files.items():
            name = entries[model]["onnx"]
            shutil.copyfile(source, staging / name)
            files[name] = _sha256_of_file(staging / name)
            sizes[name] = (staging / name).stat().st_size
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "region": region,
            "bundle_version": bundle_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_by": created_by or f"regionadapt_ros {__version__}",
            "base_model": {"hash": base_hash, "id": base_id},
            "models": entries,
            "files": files,
            "sizes": sizes,
            "metrics": _json_safe(dict(metrics)),
        }
        if override is not None:
            manifest["override"] = override
        if rules is not None:
            manifest["rules"] = _json_safe(dict(rules))
        canonical_json(manifest)  # refuse anything JSON cannot carry exactly before it reaches the disk
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        _write_synced(staging / MANIFEST_NAME, text.encode())
        _fsync_dir(staging)
        _move_into_place(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------------- architecture checks


def as_fingerprint(label: object, architecture: ArchitectureLike) -> dict[str, Any]:
    """A validated fingerprint dict from a fingerprint dict or the named shapes it is computed from."""
    if isinstance(architecture, Mapping) and set(architecture) == {"params", "hash"} \
            and isinstance(architecture["params"], Mapping):
        params = _architecture_params(architecture, label)
        if architecture["hash"] != _params_hash(architecture["params"]):
            raise BundleError(label, "architecture hash does not match its params (edited by hand?)")
        return fingerprint(params)
    try:
        return fingerprint(architecture)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise BundleError(label, f"architecture must be a fingerprint or {{name: (shape, dtype)}} ({exc})") from None


def _params_hash(params_json: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(params_json)).hexdigest()


def _architecture_params(architecture: Mapping[str, Any], label: object = "architecture"
                         ) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, dtype)} of a fingerprint dict, validating its structure."""
    params = architecture.get("params") if isinstance(architecture, Mapping) else None
    if not isinstance(params, Mapping):
        raise BundleError(label, "architecture.params must be an object {name: {shape, dtype}}")
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, spec in params.items():
        shape = spec.get("shape") if isinstance(spec, Mapping) else None
        dtype = spec.get("dtype") if isinstance(spec, Mapping) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                   for n in shape):
            raise BundleError(label, f"architecture.params['{name}'].shape must be a list of integers >= 0")
        if not isinstance(dtype, str) or _dtype_name(dtype) != dtype:
            raise BundleError(label, f"architecture.params['{name}'].dtype {dtype!r} must be a numpy dtype name "
                              "such as 'float32'")
        out[name] = (tuple(shape), dtype)
    return out


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: str | np.dtype) -> str | None:
    # Cached: numpy builds dtype names in Python, which would dominate the checks of a many-tensor bundle.
    try:
        return np.dtype(dtype).name
    except TypeError:
        return None


def _shapes_of(arrays: NamedArrays) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(a.shape), _dtype_name(a.dtype)) for name, a in arrays.items()}


def _first_difference(actual: Mapping[str, tuple[tuple[int, ...], str]],
                      expected: Mapping[str, tuple[tuple[int, ...], str]], complete: bool) -> str | None:
    """The first tensor (in name order) where ``actual`` and the architecture ``expected`` differ, in words;
    with ``complete`` every tensor of ``expected`` must be present."""
    for name in sorted(set(actual) | set(expected)):
        if name not in expected:
            return f"tensor '{name}' is not in the architecture (unknown tensor name)"
        if name not in actual:
            if complete:
                shape, dtype = expected[name]
                return f"tensor '{name}' is missing; the architecture expects shape {shape} {dtype}"
            continue
        (shape, dtype), (want_shape, want_dtype) = actual[name], expected[name]
        if tuple(shape) != tuple(want_shape):
            return f"tensor '{name}' has shape {tuple(shape)}, architecture expects {tuple(want_shape)}"
        if dtype != want_dtype:
            return f"tensor '{name}' has dtype {dtype}, architecture expects {want_dtype}"
    return None


def _check_stored_tensors(label: Path, kind: str, tensors: NamedArrays,
                          arch: Mapping[str, tuple[tuple[int, ...], str]], lora_spec: Mapping[str, Any] | None
                          ) -> None:
    """The tensors of a weight file fit the architecture for their kind; BundleError naming ``label``."""
    if kind in ("full", "subset"):
        problem = _first_difference(_shapes_of(tensors), arch, complete=kind == "full")
        if problem:
            raise BundleError(label, problem)
        return
    assert lora_spec is not None
    rank = lora_spec["rank"]
    plain = {n: a for n, a in tensors.items() if not n.endswith((LORA_A_SUFFIX, LORA_B_SUFFIX))}
    targets = sorted({n[: -len(LORA_A_SUFFIX)] for n in tensors if n.endswith(LORA_A_SUFFIX)}
                     | {n[: -len(LORA_B_SUFFIX)] for n in tensors if n.endswith(LORA_B_SUFFIX)})
    problem = _first_difference(_shapes_of(plain), arch, complete=False)
    if problem:
        raise BundleError(label, problem)
    for target in targets:
        name_a, name_b = target + LORA_A_SUFFIX, target + LORA_B_SUFFIX
        if target not in arch:
            raise BundleError(label, f"LoRA factors for tensor '{target}', which is not in the architecture "
                              "(unknown tensor name)")
        if target in plain:
            raise BundleError(label, f"tensor '{target}' is stored both in full and as LoRA factors")
        if name_a not in tensors or name_b not in tensors:
            missing = name_b if name_a in tensors else name_a
            raise BundleError(label, f"tensor '{missing}' is missing; LoRA factors come in pairs")
        shape, dtype = arch[target]
        if len(shape) < 2 or not np.issubdtype(np.dtype(dtype), np.floating):
            raise BundleError(label, f"tensor '{target}' ({shape} {dtype}) cannot take LoRA factors: "
                              "only floating-point weights with 2 or more dimensions can")
        want_a = (rank, math.prod(shape[1:]))
        want_b = (shape[0], rank)
        for name, want in ((name_a, want_a), (name_b, want_b)):
            got = tuple(tensors[name].shape)
            if got != want:
                raise BundleError(label, f"tensor '{name}' has shape {got}, architecture and LoRA rank {rank} "
                                  f"expect {want}")
            if not np.issubdtype(tensors[name].dtype, np.floating):
                raise BundleError(label, f"tensor '{name}' has dtype {tensors[name].dtype.name}, "
                                  "LoRA factors must be floating point")


def _apply_lora(label: Path, weights: dict[str, np.ndarray], stored: NamedArrays, spec: Mapping[str, Any]
                ) -> None:
    """W += (alpha / rank) * (B @ A).reshape(W.shape), computed in float32 at least, stored in W's dtype."""
    scale = float(spec["alpha"]) / int(spec["rank"])
    for name in stored:
        if not name.endswith(LORA_A_SUFFIX):
            continue
        target = name[: -len(LORA_A_SUFFIX)]
        base = weights[target]
        compute = np.promote_types(base.dtype, np.float32)
        factor_a = stored[name].astype(compute, copy=False)
        factor_b = stored[target + LORA_B_SUFFIX].astype(compute, copy=False)
        delta = (factor_b @ factor_a).reshape(base.shape)
        weights[target] = (base.astype(compute, copy=False) + scale * delta).astype(base.dtype, copy=False)


def _check_finite(label: Path, arrays: NamedArrays, what: str) -> None:
    for name in sorted(arrays):
        array = arrays[name]
        if array.dtype.kind in "fc":  # integer and bool tensors cannot hold NaN
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise BundleError(label, f"{what} '{name}' has {bad} non-finite value(s) (NaN or inf)")


def _validate_lora_spec(label: object, spec: object) -> None:
    if not isinstance(spec, Mapping):
        raise BundleError(label, "lora must be an object {'alpha': float, 'rank': int}")
    alpha, rank = spec.get("alpha"), spec.get("rank")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise BundleError(label, f"lora.rank {rank!r} must be an integer >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise BundleError(label, f"lora.alpha {alpha!r} must be a finite number")


def _validate_override(label: object, override: object) -> None:
    if not isinstance(override, Mapping) or override.get("forced") is not True:
        raise BundleError(label, "override must be {'forced': true, 'reason': '...'}")
    reason = override.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BundleError(label, "override.reason must say why the bundle is kept although it did not beat the base")


# ----------------------------------------------------------------------------------------------- reading


def bundle_root(bundle_dir: str | os.PathLike[str]) -> Path:
    """Where a bundle really is: the directory its ``manifest.json`` resolves into. Every file the bundle lists
    must resolve inside it. A bundle whose files are all links into one directory (``colcon build
    --symlink-install`` installs it so) is read there; a link from a bundle's file to anywhere else (another
    directory, ``/dev/zero``) is refused."""
    return Path(os.path.realpath(Path(bundle_dir) / MANIFEST_NAME)).parent


def _read_manifest_bytes(bundle_dir: Path) -> bytes:
    if not bundle_dir.is_dir():
        raise BundleError(bundle_dir, "bundle directory does not exist" if not bundle_dir.exists()
                          else "is not a directory (a bundle is a directory with manifest.json)")
    manifest_path = bundle_dir / MANIFEST_NAME
    try:
        return safe_read.read_bytes(manifest_path, max_bytes=MAX_MANIFEST_BYTES, within=bundle_root(bundle_dir),
                                    error=BundleError)
    except FileNotFoundError:
        raise BundleError(manifest_path, "missing: the directory is not a bundle") from None


def _parse_manifest(bundle_dir: Path, raw: bytes) -> dict[str, Any]:
    """Parse manifest.json and validate its structure; BundleError naming manifest.json and the field."""
    label = bundle_dir / MANIFEST_NAME

    def refuse(problem: str) -> BundleError:
        return BundleError(label, problem)

    manifest = strict_parse.loads_json(raw, label, error=BundleError)
    if not isinstance(manifest, dict):
        raise refuse("must be a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise refuse(f"unknown schema_version {version!r} (this reader understands {SCHEMA_VERSION})")
    region = manifest.get("region")
    if not isinstance(region, str) or not REGION_ID_PATTERN.match(region):
        raise refuse(f"region {region!r} must be a region id (letters, digits, '_', '-', '.')")
    bundle_version = manifest.get("bundle_version")
    if isinstance(bundle_version, bool) or not isinstance(bundle_version, int) or bundle_version < 1:
        raise refuse(f"bundle_version {bundle_version!r} must be an integer >= 1")
    base = manifest.get("base_model")
    if not isinstance(base, dict) or not isinstance(base.get("hash"), str) or not _SHA256_HEX.match(base["hash"]):
        raise refuse("base_model.hash must be 64 lowercase hex digits")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise refuse("files must be an object {file name: sha256}")
    if len(files) > MAX_LISTED_FILES:
        raise refuse(f"files lists {len(files)} files; a bundle holds at most {MAX_LISTED_FILES}")
    for name, digest in files.items():
        _check_file_name(label, "files", name)
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise refuse(f"files['{name}'] must be a sha256 of 64 lowercase hex digits")
    sizes = manifest.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, dict) or set(sizes) != set(files):
            raise refuse("sizes must be an object {file name: bytes} with the same names as files")
        for name, size in sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise refuse(f"sizes['{name}'] {size!r} must be an integer >= 0")
    models = manifest.get("models")
    if not isinstance(models, dict) or not models:
        raise refuse("models must be a non-empty object {model name: entry}")
    for model, entry in models.items():
        where = f"models.{model}"
        if model not in MODEL_NAMES:
            raise refuse(f"{where}: unknown model '{model}'; bundles hold {', '.join(MODEL_NAMES)}")
        if not isinstance(entry, dict):
            raise refuse(f"{where} must be an object")
        if entry.get("kind") not in KINDS:
            raise refuse(f"{where}.kind {entry.get('kind')!r} must be one of {', '.join(KINDS)}")
        weights = entry.get("weights")
        _check_file_name(label, f"{where}.weights", weights)
        if not weights.endswith(WEIGHTS_SUFFIX):
            raise refuse(f"{where}.weights '{weights}' must be a {WEIGHTS_SUFFIX} file")
        if weights not in files:
            raise refuse(f"{where}.weights '{weights}' is not listed in files (no sha256 for it)")
        onnx = entry.get("onnx")
        if onnx is not None:
            _check_file_name(label, f"{where}.onnx", onnx)
            if onnx not in files:
                raise refuse(f"{where}.onnx '{onnx}' is not listed in files (no sha256 for it)")
        architecture = entry.get("architecture")
        params = _architecture_params(architecture, f"{label}: {where}") if isinstance(architecture, dict) else None
        if params is None:
            raise refuse(f"{where}.architecture must be a fingerprint object")
        if architecture.get("hash") != _params_hash(architecture["params"]):
            raise refuse(f"{where}.architecture.hash does not match its params (edited by hand?)")
        if entry["kind"] == "lora":
            _validate_lora_spec(f"{label}: {where}", entry.get("lora"))
    weight_files = [entry["weights"] for entry in models.values()]
    if len(set(weight_files)) != len(weight_files):
        raise refuse("two models name the same weights file")
    if not isinstance(manifest.get("metrics", {}), dict):
        raise refuse("metrics must be an object")
    if "override" in manifest:
        _validate_override(label, manifest["override"])
    if "rules" in manifest and not isinstance(manifest["rules"], dict):
        raise refuse("rules must be an object")
    return manifest


def _check_file_name(label: Path, where: str, name: object) -> None:
    # Names come from a possibly hostile manifest: only plain names inside the bundle directory.
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name:
        raise BundleError(label, f"{where}: {name!r} must be a plain file name inside the bundle")
    if name in (MANIFEST_NAME, SIGNATURE_NAME):
        raise BundleError(label, f"{where}: {name} cannot be listed (it is not covered by the manifest's hashes)")


def _normalise_trusted_keys(trusted_keys: TrustedKeys | None) -> dict[str, Ed25519PublicKey]:
    if trusted_keys is None:
        return {}
    if isinstance(trusted_keys, Mapping):
        return dict(trusted_keys)
    if isinstance(trusted_keys, (str, os.PathLike)):
        trusted_keys = [trusted_keys]
    return signing.load_trusted_keys(trusted_keys)


def _check_signature(bundle_dir: Path, manifest: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey],
                     require_signature: bool, checks: list[Check]) -> tuple[str, str | None]:
    """Returns (signature state in words, signer key id)."""
    signature_path = bundle_dir / SIGNATURE_NAME
    manifest_path = bundle_dir / MANIFEST_NAME
    try:
        document = strict_parse.load_json_file(signature_path, max_bytes=MAX_SIGNATURE_BYTES,
                                               within=bundle_root(bundle_dir),
                                               error=BundleError)
    except FileNotFoundError:
        if require_signature:
            raise BundleError(signature_path, "missing: the bundle is unsigned and signatures are required") from None
        if keys:
            # Trusted keys mean "only bundles signed by these": deleting the signature of a tampered bundle must
            # not turn it into an accepted unsigned one.
            raise BundleError(signature_path, "missing: the bundle is unsigned, and with trusted keys configured "
                              "every bundle must be signed by one of them") from None
        checks.append(Check("signature", "warn", "unsigned"))
        return "unsigned", None
    if not isinstance(document, dict):
        raise BundleError(signature_path, "must be a JSON object {key_id, signature}")
    claimed = str(document.get("key_id"))
    if not keys:
        if require_signature:
            raise BundleError(signature_path, "signatures are required but no trusted public keys are configured")
        state = f"signed by key {claimed}, not verified (no trusted keys given)"
        checks.append(Check("signature", "warn", state))
        return state, claimed
    result = signing.verify(document, canonical_json(manifest), keys)
    if not result.ok:
        if result.problem == "signature does not match":
            raise BundleError(manifest_path, "signature does not match (manifest altered after signing?)")
        raise BundleError(signature_path, result.problem)
    state = f"verified (key {result.key_id})"
    checks.append(Check("signature", "ok", state))
    return state, result.key_id


def _read(bundle_dir: Path, expected_architectures: Mapping[str, ArchitectureLike] | None,
          trusted_keys: TrustedKeys | None, require_signature: bool, checks: list[Check],
          max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> LoadedBundle:
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 1:
        raise BundleError(bundle_dir, f"max_file_bytes {max_file_bytes!r} must be a positive integer")
    manifest = _parse_manifest(bundle_dir, _read_manifest_bytes(bundle_dir))
    checks.append(Check(MANIFEST_NAME, "ok", f"schema_version {SCHEMA_VERSION}, region '{manifest['region']}', "
                        f"bundle_version {manifest['bundle_version']}"))
    keys = _normalise_trusted_keys(trusted_keys)
    state, signer = _check_signature(bundle_dir, manifest, keys, require_signature, checks)

    weight_files = {entry["weights"]: model for model, entry in manifest["models"].items()}
    sizes = manifest.get("sizes")
    if sizes is None:
        checks.append(Check("sizes", "warn", "the manifest lists no file sizes (an older bundle): reads are bounded "
                            f"by the {safe_read.human_bytes(max_file_bytes)} ceiling only"))
    payloads: dict[str, bytes] = {}
    root = bundle_root(bundle_dir)
    for name in sorted(manifest["files"]):
        file_path = bundle_dir / name
        expected = manifest["files"][name]
        bounds = {"max_bytes": max_file_bytes, "within": root, "error": BundleError,
                  "expected_size": sizes[name] if sizes is not None else None}
        try:
            if name in weight_files:
                payloads[name], actual = safe_read.read_bytes_and_sha256(file_path, **bounds)
            else:
                actual = safe_read.sha256_of(file_path, **bounds)
        except FileNotFoundError:
            raise BundleError(file_path, "listed in manifest.json but missing") from None
        if actual != expected:
            raise BundleError(file_path, f"sha256 mismatch: manifest.json lists {expected[:16]}…, the file has "
                              f"{actual[:16]}… (corrupted or replaced)")
        checks.append(Check(name, "ok", "sha256 matches"))
    unlisted = sorted(p.name for p in bundle_dir.iterdir()
                      if p.name not in manifest["files"] and p.name not in (MANIFEST_NAME, SIGNATURE_NAME))
    if unlisted:
        # Never loaded: only files named by the manifest are read. Reported so a stray file is noticed.
        checks.append(Check("unlisted files", "warn", f"ignored, not covered by the manifest: {', '.join(unlisted)}"))

    expected_fps: dict[str, dict[str, Any]] = {}
    if expected_architectures is not None:
        for model, architecture in expected_architectures.items():
            expected_fps[model] = as_fingerprint(f"expected architecture of '{model}'", architecture)
            if model not in manifest["models"]:
                raise BundleError(bundle_dir / MANIFEST_NAME, f"models: the bundle has no model '{model}', "
                                  "which the serving architecture needs")

    tensors: dict[str, dict[str, np.ndarray]] = {}
    for model, entry in manifest["models"].items():
        weights_name = entry["weights"]
        label = bundle_dir / weights_name
        try:
            arrays = safetensors_np.load(payloads[weights_name])
        except Exception as exc:  # safetensors raises its own SafetensorError (not importable as a stable name)
            raise BundleError(label, f"not a valid safetensors file ({exc})") from None
        declared = _architecture_params(entry["architecture"])
        if model in expected_fps:
            # Compare the declared architecture first so that a bundle built for another network names the
            # first tensor that differs, whatever subset of tensors the file holds.
            problem = _first_difference(declared, _architecture_params(expected_fps[model]), complete=True)
            if problem:
                raise BundleError(label, problem)
        _check_stored_tensors(label, entry["kind"], arrays, declared, entry.get("lora"))
        _check_finite(label, arrays, what="tensor")
        checks.append(Check(weights_name, "ok", f"{entry['kind']}: {len(arrays)} tensor(s) fit architecture "
                            f"{entry['architecture']['hash'][:12]}"
                            + (" (the expected one)" if model in expected_fps else "")))
        tensors[model] = arrays
    return LoadedBundle(bundle_dir, manifest, tensors, state, signer)


# ------------------------------------------------------------------------------------------------ file io


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes renames durable on power loss; not every platform allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a partial file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    # os.replace cannot replace a non-empty directory: move the old bundle aside first, then swap in the
    # new one. Readers may briefly see no bundle, never a mixed one.
    retired: Path | None = None
    if out.exists():
        if not overwrite:
            raise BundleError(out, "already exists; pass overwrite=True to replace it")
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, retired / out.name)
    try:
        os.replace(staging, out)
    except BaseException:
        if retired is not None:
            os.replace(retired / out.name, out)
        raise
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    _fsync_dir(out.parent)


def _json_safe(value: Any) -> Any:
    """Metrics and rules as JSON can carry them: numpy scalars to Python, non-finite floats to null."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
