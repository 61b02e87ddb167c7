"""What a bundle is made of: names, limits, canonical JSON, weight hashes and architecture fingerprints."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.errors import BundleError

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


REGION_ID_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # \Z: "$" lets "x\n" through


_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")


_HASH_CHUNK = 1 << 20


# Ceilings on what one bundle may make the reader do. A weight or ONNX file larger than DEFAULT_MAX_FILE_BYTES is
# refused before it is read unless the caller raises the limit (regions.yaml: max_bundle_file_mib).
DEFAULT_MAX_FILE_BYTES = 512 * safe_read.MiB


MAX_MANIFEST_BYTES = 8 * safe_read.MiB


MAX_SIGNATURE_BYTES = 64 * 1024


MAX_LISTED_FILES = 32

# Parameter tensors one architecture may declare: the networks here have under 100, a large vision backbone a
# few thousand. Bounds what a manifest can make the reader expect (and so the tensors it lets a file hold).
MAX_ARCHITECTURE_PARAMS = 10_000

# safetensors header bytes allowed per tensor the architecture can need (a name, dtype, shape and offsets take
# about 90 here): the header is bounded by its size, which no JSON escape of a key can hide.
MAX_HEADER_BYTES_PER_TENSOR = 1024


def tensor_header_budget(params: int) -> int:
    """The largest safetensors header (bytes) a weights file of an architecture of ``params`` parameters needs:
    two tensors per parameter (a LoRA pair), plus room for ``__metadata__``."""
    return 2 * params * MAX_HEADER_BYTES_PER_TENSOR + 64 * 1024


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
    if len(params) > MAX_ARCHITECTURE_PARAMS:
        raise BundleError(label, f"architecture.params lists {len(params)} parameters, more than "
                                 f"{MAX_ARCHITECTURE_PARAMS}")
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


_PLAIN_DTYPE_NAME = re.compile(r"[a-z]{1,16}[0-9]{0,3}")


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: str | np.dtype) -> str | None:
    # Cached: numpy builds dtype names in Python, which would dominate the checks of a many-tensor bundle.
    # A manifest's string must be a plain name before numpy parses it: numpy 2.4 dies with SIGFPE on a datetime
    # unit with a zero divisor ('m8[s/0]'), and the manifest is parsed before its signature is checked.
    if isinstance(dtype, str) and not _PLAIN_DTYPE_NAME.fullmatch(dtype):
        return None
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


# ------------------------------------------------------------------------------------------------ file io


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
