"""Byte-level mutations of a file for the fuzz tests of the readers (manifests, regions.yaml, GeoJSON)."""

from __future__ import annotations

from collections.abc import Iterator


def mutations(original: bytes, seed: int, count: int, alphabet: bytes, max_delete: int = 30) -> Iterator[bytes]:
    """``count`` seeded variants of ``original``, each with 1-3 edits: a byte overwritten, up to ``max_delete``
    bytes deleted, or 1-7 bytes of ``alphabet`` (the format's syntax characters) inserted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for _ in range(count):
        data = bytearray(original)
        for _ in range(int(rng.integers(1, 4))):
            kind, at = int(rng.integers(0, 3)), int(rng.integers(0, len(data)))
            if kind == 0:
                data[at] = int(rng.integers(0, 256))
            elif kind == 1:
                del data[at:at + int(rng.integers(1, max_delete))]
            else:
                data[at:at] = bytes(rng.choice(list(alphabet), int(rng.integers(1, 8))))
        yield bytes(data)
