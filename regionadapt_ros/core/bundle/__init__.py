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

Modules: ``format`` (constants, canonical JSON, hashes, fingerprints), ``reading`` (bounded reading,
verification, signatures), ``loaded`` (``LoadedBundle`` and delta resolution), ``writing`` (writing and signing,
atomically).
"""

from regionadapt_ros.core.bundle.format import (
    DEFAULT_MAX_FILE_BYTES,
    KINDS,
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    MANIFEST_NAME,
    MAX_ARCHITECTURE_PARAMS,
    MAX_LISTED_FILES,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    MODEL_NAMES,
    ONNX_SUFFIX,
    REGION_ID_PATTERN,
    SCHEMA_VERSION,
    SIGNATURE_NAME,
    WEIGHTS_SUFFIX,
    ArchitectureLike,
    NamedArrays,
    NamedShapes,
    TrustedKeys,
    as_fingerprint,
    bundle_id,
    canonical_json,
    fingerprint,
    fingerprint_of,
    models_hash,
    tensor_header_budget,
    weights_hash,
)
from regionadapt_ros.core.bundle.loaded import LoadedBundle
from regionadapt_ros.core.bundle.reading import (
    Check,
    VerificationReport,
    bundle_root,
    read_bundle,
    read_manifest,
    verify_bundle,
)
from regionadapt_ros.core.bundle.writing import atomic_write_bytes, sign_bundle, write_bundle

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "KINDS",
    "LORA_A_SUFFIX",
    "LORA_B_SUFFIX",
    "MANIFEST_NAME",
    "MAX_ARCHITECTURE_PARAMS",
    "MAX_LISTED_FILES",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_BYTES",
    "MODEL_NAMES",
    "ONNX_SUFFIX",
    "REGION_ID_PATTERN",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "WEIGHTS_SUFFIX",
    "ArchitectureLike",
    "Check",
    "LoadedBundle",
    "NamedArrays",
    "NamedShapes",
    "TrustedKeys",
    "VerificationReport",
    "as_fingerprint",
    "atomic_write_bytes",
    "bundle_id",
    "bundle_root",
    "canonical_json",
    "fingerprint",
    "fingerprint_of",
    "models_hash",
    "read_bundle",
    "read_manifest",
    "sign_bundle",
    "tensor_header_budget",
    "verify_bundle",
    "weights_hash",
    "write_bundle",
]
