"""Writing and signing bundles; every file reaches its place atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as safetensors_np

from regionadapt_ros import __version__
from regionadapt_ros.core import signing
from regionadapt_ros.core.bundle.format import (
    _SHA256_HEX,
    KINDS,
    MANIFEST_NAME,
    MODEL_NAMES,
    ONNX_SUFFIX,
    REGION_ID_PATTERN,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    WEIGHTS_SUFFIX,
    ArchitectureLike,
    NamedArrays,
    _architecture_params,
    _json_safe,
    _sha256_of_file,
    as_fingerprint,
    canonical_json,
    models_hash,
)
from regionadapt_ros.core.bundle.loaded import _check_finite, _check_stored_tensors
from regionadapt_ros.core.bundle.reading import _read, _validate_lora_spec, _validate_override
from regionadapt_ros.core.errors import BundleError
from regionadapt_ros.core.output_dir import replaceable_dir


def sign_bundle(path: str | os.PathLike[str], private_key_path: str | os.PathLike[str]) -> str:
    """Verify the bundle's integrity, then write ``signature.json`` over its canonical manifest (replacing any
    previous signature, atomically). Returns the signing key id."""
    bundle_dir = Path(path)
    private_key = signing.load_private_key(private_key_path)
    # never sign a corrupt bundle; the signature there is not read (a damaged one is what signing repairs)
    loaded = _read(bundle_dir, None, None, False, checks=[], signature=False)
    document = signing.sign(private_key, canonical_json(loaded.manifest))
    atomic_write_bytes(bundle_dir / SIGNATURE_NAME, (json.dumps(document, indent=2) + "\n").encode())
    return document["key_id"]


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

    # Returned by name as given; written to a symbolic link's target, and never over a directory of other files.
    given, out = out, replaceable_dir(out, lambda d: (d / MANIFEST_NAME).is_file(), "bundle", BundleError)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    # mkdtemp makes it 0700, and the rename keeps that: a node running as another user could not read the
    # bundle. Bundles are world-readable like the package's own (their integrity is the manifest's hashes).
    staging.chmod(0o755)
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
    return given


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


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a partial file. The
    file gets ``mode`` (mkstemp's 0600 would lock a node of another user out of a signature or an engine)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, mode)
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
