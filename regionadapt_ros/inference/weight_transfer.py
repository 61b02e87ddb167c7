"""Named weights of both models handed from the loader process to the serving process in shared memory.

The loader process writes every tensor into one anonymous memory file (``memfd_create``; an unlinked temporary
file where that is missing) and passes its file descriptor over a Unix socket (SCM_RIGHTS) with a small table
of (model, tensor name, dtype, shape, offset). The serving process maps it copy-on-write and builds numpy views
on it: no copy, no parsing, no hashing on its side. The memory has no name, so it cannot leak: it is freed when
the last mapping and descriptor are gone, whichever process dies first.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_PLAIN_KINDS = "biuf"  # bool, int, uint, float: never object pointers read back from raw memory
ALIGNMENT = 64  # bytes: every tensor starts on a cache line, as numpy and the backends like it


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the shared block."""

    model: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int

    def to_json(self) -> list:
        return [self.model, self.name, self.dtype, list(self.shape), self.offset]

    @classmethod
    def from_json(cls, value: list) -> TensorEntry:
        model, name, dtype, shape, offset = value
        return cls(str(model), str(name), str(dtype), tuple(int(d) for d in shape), int(offset))


@dataclass(frozen=True)
class PackedWeights:
    """A shared block of named weights: ``fd`` (owned by the holder, close it once sent or mapped), its size in
    bytes and the table of tensors in it."""

    fd: int
    size: int
    table: tuple[TensorEntry, ...]


def _anonymous_fd(size: int) -> int:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("regionadapt-weights", os.MFD_CLOEXEC)
    else:  # macOS and others: an unlinked temporary file is as anonymous
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    try:
        os.ftruncate(fd, max(size, 1))
    except BaseException:
        os.close(fd)
        raise
    return fd


def pack_weights(weights: Mapping[str, Mapping[str, np.ndarray]]) -> PackedWeights:
    """Copy ``weights`` ({model: {tensor name: array}}) into a new anonymous shared block."""
    table: list[TensorEntry] = []
    offset = 0
    arrays: list[np.ndarray] = []
    for model, tensors in weights.items():
        for name, value in tensors.items():
            arr = np.ascontiguousarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"{model}.{name}: object arrays cannot be shared")
            offset = -(-offset // ALIGNMENT) * ALIGNMENT
            table.append(TensorEntry(str(model), str(name), arr.dtype.str, tuple(int(d) for d in arr.shape), offset))
            arrays.append(arr)
            offset += arr.nbytes
    fd = _anonymous_fd(offset)
    try:
        with mmap.mmap(fd, max(offset, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as block:
            for entry, arr in zip(table, arrays, strict=True):
                block[entry.offset:entry.offset + arr.nbytes] = arr.reshape(-1).view(np.uint8)
    except BaseException:
        os.close(fd)
        raise
    return PackedWeights(fd, offset, tuple(table))


def unpack_weights(fd: int, size: int, table: tuple[TensorEntry, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Map the block behind ``fd`` (closed here) and return numpy views on it, {model: {tensor name: array}}.

    The mapping is private (copy-on-write): a backend may modify its arrays without touching the loader's
    block. It is unmapped when the last view is garbage, so the arrays may be kept as long as needed."""
    try:
        if os.fstat(fd).st_size < size:
            raise ValueError(f"shared weights block is {os.fstat(fd).st_size} bytes, the table needs {size}")
        block = mmap.mmap(fd, max(size, 1), mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    out: dict[str, dict[str, np.ndarray]] = {}
    for entry in table:
        dtype = np.dtype(entry.dtype)
        if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None:
            raise ValueError(f"{entry.model}.{entry.name}: dtype {entry.dtype!r} is not a plain number type")
        if any(d < 0 for d in entry.shape):
            raise ValueError(f"{entry.model}.{entry.name}: negative dimension in {entry.shape}")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.offset < 0 or entry.offset + count * dtype.itemsize > size:
            raise ValueError(f"{entry.model}.{entry.name}: lies outside the shared weights block")
        view = np.frombuffer(block, dtype=dtype, count=count, offset=entry.offset).reshape(entry.shape)
        out.setdefault(entry.model, {})[entry.name] = view
    return out
