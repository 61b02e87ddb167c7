"""Glue between the bundle store (core) and the hot-swap manager: region → verified, resolved weights."""

from __future__ import annotations

import hashlib

from regionadapt_ros.core.bundle import canonical_json
from regionadapt_ros.core.bundle_store import BundleStore
from regionadapt_ros.inference.swap import LoadedWeights, Loader
from regionadapt_ros.models.registry import reference_architectures


def bundle_loader(store: BundleStore) -> Loader:
    """A ``Loader`` that reads, verifies (signature policy, sha256, architecture, rollback) and resolves a
    region's bundle from ``store``, with the region's traffic rules from regions.yaml. Runs on the loader
    thread; every refusal raises and leaves the serving weights in place."""
    architectures = reference_architectures()

    def load(region: str) -> LoadedWeights:
        loaded = store.load_region(region, architectures)
        sha = hashlib.sha256(canonical_json(loaded.manifest)).hexdigest()
        return LoadedWeights(region=region, bundle_id=loaded.bundle_id, weights=loaded.weights,
                             version=loaded.bundle_version, sha256=sha, rules=store.rules(region))

    return load
