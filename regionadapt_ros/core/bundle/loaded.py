"""A bundle read and verified: its manifest, its stored tensors, and their resolution against a base."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------- loading
from regionadapt_ros.core.bundle.format import (
    LORA_A_SUFFIX,
    LORA_B_SUFFIX,
    MANIFEST_NAME,
    NamedArrays,
    _architecture_params,
    _first_difference,
    _shapes_of,
    bundle_id,
    models_hash,
)
from regionadapt_ros.core.errors import BundleError


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
        # A finite but huge alpha or factor overflows to inf here; the merged weights are then refused as not
        # finite, which says more than numpy's warning would.
        with np.errstate(over="ignore", invalid="ignore"):
            delta = (factor_b @ factor_a).reshape(base.shape)
            weights[target] = (base.astype(compute, copy=False) + scale * delta).astype(base.dtype, copy=False)


def _check_finite(label: Path, arrays: NamedArrays, what: str) -> None:
    for name in sorted(arrays):
        array = arrays[name]
        if array.dtype.kind in "fc":  # integer and bool tensors cannot hold NaN
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise BundleError(label, f"{what} '{name}' has {bad} non-finite value(s) (NaN or inf)")
