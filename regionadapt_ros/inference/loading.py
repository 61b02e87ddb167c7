"""Glue between the bundle store (core) and the hot-swap manager: region → verified, resolved weights.

``BundleLoader`` is spawnable (``inference.spawn_spec``: the store travels as its settings, trusted keys as raw
public bytes), so the swap manager can run it in a separate loader process (``inference.loader_process``).
Importing this module imports neither torch nor onnxruntime: the loader process imports it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from regionadapt_ros.core.bundle import canonical_json
from regionadapt_ros.core.bundle_store import BundleStore, RegionConfig
from regionadapt_ros.inference.swap import LoadedWeights, Loader, WeightSet


class BundleLoader:
    """A ``Loader`` that reads, verifies (signature policy, sha256, architecture, rollback) and resolves a
    region's bundle from ``store``, with the region's traffic rules from regions.yaml. Every refusal raises and
    leaves the serving weights in place. ``architectures``: the serving models' fingerprints (default: the
    reference architectures, which needs torch once, here and not in the loader process).

    Runs where the swap manager puts it: a loader process by default, where it is rebuilt from its spawn spec.
    """

    spawnable = True  # HotSwapManager: may run in a separate loader process

    def __init__(self, store: BundleStore, architectures: Mapping[str, Any] | None = None) -> None:
        if architectures is None:
            from regionadapt_ros.models.registry import reference_architectures

            architectures = reference_architectures()
        self.store = store
        self.architectures = dict(architectures)

    def __call__(self, region: str) -> LoadedWeights:
        # The version is recorded by ``commit`` once the set serves, not here: a bundle that verifies and then
        # fails its warm-up would otherwise lock out the version still serving.
        loaded = self.store.load_region(region, self.architectures, record=False)
        sha = hashlib.sha256(canonical_json(loaded.manifest)).hexdigest()
        return LoadedWeights(region=region, bundle_id=loaded.bundle_id, weights=loaded.weights,
                             version=loaded.bundle_version, sha256=sha, rules=self.store.rules(region))

    def commit(self, weights: WeightSet) -> None:
        """``weights`` (loaded by this loader) serve now: their bundle version is the region's installed one.
        Called by the swap manager in the serving process."""
        self.store.record_installed(weights.region, weights.bundle_id, weights.version)

    # The store holds a lock, a cache and key objects: it travels as its settings, the trusted keys as their
    # raw public bytes; the rollback state is the store's file, which both processes share.
    def spawn_config(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives import serialization

        settings = {f.name: getattr(self.store, f.name) for f in dataclasses.fields(self.store)
                    if not f.name.startswith("_")}
        settings["region_configs"] = {
            region: {"region": rc.region, "bundle_path": rc.bundle_path, "rules": dict(rc.rules)}
            for region, rc in self.store.region_configs.items()}
        settings["trusted_keys"] = {
            key_id: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            for key_id, key in self.store.trusted_keys.items()}
        return {"store": settings, "architectures": self.architectures}

    @classmethod
    def from_spawn_config(cls, config: Mapping[str, Any]) -> BundleLoader:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        settings = dict(config["store"])
        settings["region_configs"] = {region: RegionConfig(**rc) for region, rc in settings["region_configs"].items()}
        settings["trusted_keys"] = {key_id: Ed25519PublicKey.from_public_bytes(raw)
                                    for key_id, raw in settings["trusted_keys"].items()}
        return cls(BundleStore(**settings), config["architectures"])


def bundle_loader(store: BundleStore) -> Loader:
    """The ``Loader`` of ``store`` (a ``BundleLoader``)."""
    return BundleLoader(store)
