"""Reading a bundle, bounded and strict: the manifest, the signature, every listed file, and the report of what was
checked."""

from __future__ import annotations

import math
import numbers
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as safetensors_np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from regionadapt_ros.core import safe_read, signing, strict_parse

# ---------------------------------------------------------------------------------------------- reports
from regionadapt_ros.core.bundle.format import (
    _SHA256_HEX,
    DEFAULT_MAX_FILE_BYTES,
    KINDS,
    MANIFEST_NAME,
    MAX_LISTED_FILES,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    MODEL_NAMES,
    REGION_ID_PATTERN,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    WEIGHTS_SUFFIX,
    ArchitectureLike,
    NamedArrays,
    TrustedKeys,
    _architecture_params,
    _first_difference,
    _params_hash,
    as_fingerprint,
    canonical_json,
    tensor_header_budget,
)
from regionadapt_ros.core.bundle.loaded import LoadedBundle, _check_finite, _check_stored_tensors
from regionadapt_ros.core.errors import BundleError, ConfigError


@dataclass(frozen=True)
class Check:
    """One verification step: ``status`` is "ok", "warn" (accepted, worth knowing) or "fail"."""

    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        # a detail may quote a hostile file's text (a tensor name, a key id): it must not forge report lines
        text = f"{self.status.upper():4s}  {self.name}" + (f": {self.detail}" if self.detail else "")
        return safe_read.printable_text(text)


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


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate ``manifest.json`` of a bundle without touching its other files."""
    bundle_dir = Path(path)
    return _parse_manifest(bundle_dir, _read_manifest_bytes(bundle_dir))


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
        state, what = safe_read.file_state(bundle_dir)
        if state == "missing":
            raise BundleError(bundle_dir, "bundle directory does not exist")
        raise BundleError(bundle_dir, f"is {what or 'a regular file'}, not a directory (a bundle is a directory "
                                      "with manifest.json)")
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
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, not 1.0
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
        elif entry.get("lora") is not None:
            raise refuse(f"{where}.lora is given, but its kind is {entry['kind']!r}: only a lora model has one")
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


def _check_tensor_count(label: Path, payload: bytes, params: int) -> None:
    """At most two tensors per parameter of the architecture (a LoRA pair), checked on the safetensors header
    before any array is built: a header of a million empty tensors is within safetensors' own limit, and
    building them all costs tens of times the file's size in memory. The header's size is bounded (a key
    spelled with JSON escapes is still a key); the count of plain keys gives the clearer message."""
    if len(payload) < 8:
        return  # the parse says what is wrong
    header_len = struct.unpack_from("<Q", payload)[0]
    budget = tensor_header_budget(params)
    if header_len > budget:
        raise BundleError(label, f"its header is {header_len} bytes, more than the {budget} that the architecture's "
                                 f"{params} parameters can need: refused before reading it")
    count = payload.count(b'"data_offsets"', 8, 8 + min(header_len, len(payload)))
    if count > 2 * params:
        raise BundleError(label, f"its header lists {count} tensors, more than the {2 * params} that the "
                                 f"declared architecture's {params} parameters can need: refused before reading them")


def _check_file_name(label: Path, where: str, name: object) -> None:
    # Names come from a possibly hostile manifest: only plain names inside the bundle directory.
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name) > 255:
        # control characters (a newline would forge lines in a report) and names no file system holds
        shown = safe_read.shown_name(name, 80) if isinstance(name, str) else repr(name)
        raise BundleError(label, f"{where}: {shown} must be a plain file name inside the bundle")
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
    claimed = signing.shown_key_id(document.get("key_id"))
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
          max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, *, signature: bool = True) -> LoadedBundle:
    """``signature=False`` (signing): the present signature is not read; it is about to be replaced."""
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 1:
        raise BundleError(bundle_dir, f"max_file_bytes {max_file_bytes!r} must be a positive integer")
    manifest = _parse_manifest(bundle_dir, _read_manifest_bytes(bundle_dir))
    checks.append(Check(MANIFEST_NAME, "ok", f"schema_version {SCHEMA_VERSION}, region '{manifest['region']}', "
                        f"bundle_version {manifest['bundle_version']}"))
    keys = _normalise_trusted_keys(trusted_keys)
    state, signer = (_check_signature(bundle_dir, manifest, keys, require_signature, checks) if signature
                     else ("unsigned", None))

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
    try:
        unlisted = sorted(p.name for p in bundle_dir.iterdir()
                          if p.name not in manifest["files"] and p.name not in (MANIFEST_NAME, SIGNATURE_NAME))
    except OSError as exc:  # a folder that can be entered but not listed (mode 0311): its files still read
        unlisted = []
        checks.append(Check("unlisted files", "warn", f"the folder cannot be listed ({exc.strerror or exc}): stray "
                            "files are not looked for"))
    if unlisted:
        # Never loaded: only files named by the manifest are read. Reported so a stray file is noticed.
        shown = ", ".join(safe_read.printable_name(n) for n in unlisted)
        checks.append(Check("unlisted files", "warn", f"ignored, not covered by the manifest: {shown}"))

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
        declared = _architecture_params(entry["architecture"])
        if model in expected_fps:
            # Compare the declared architecture first so that a bundle built for another network names the
            # first tensor that differs, whatever subset of tensors the file holds, and so that the tensor
            # bound below is the serving architecture's, not whatever the manifest declares.
            problem = _first_difference(declared, _architecture_params(expected_fps[model]), complete=True)
            if problem:
                raise BundleError(label, problem)
        _check_tensor_count(label, payloads[weights_name], len(declared))
        try:
            arrays = safetensors_np.load(payloads[weights_name])
        except Exception as exc:  # safetensors raises its own SafetensorError (not importable as a stable name)
            raise BundleError(label, f"not a valid safetensors file ({exc})") from None
        _check_stored_tensors(label, entry["kind"], arrays, declared, entry.get("lora"))
        _check_finite(label, arrays, what="tensor")
        checks.append(Check(weights_name, "ok", f"{entry['kind']}: {len(arrays)} tensor(s) fit architecture "
                            f"{entry['architecture']['hash'][:12]}"
                            + (" (the expected one)" if model in expected_fps else "")))
        tensors[model] = arrays
    return LoadedBundle(bundle_dir, manifest, tensors, state, signer)
