"""A ``.npy`` header read without handing its text to numpy first.

numpy parses the header's ``descr`` with ``np.dtype``, and some strings kill the process outright: numpy 2.4
dies with SIGFPE on a datetime unit with a zero divisor (``'m8[s/0]'``), before any Python error can be
raised. A header also declares a shape that may be far larger than the file. So the header is parsed here
(``ast.literal_eval`` of at most ``MAX_HEADER_BYTES``, as numpy's own limit), ``descr`` must be one plain
numeric type, and only then does numpy see it.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"\x93NUMPY"
# numpy's default ``max_header_size``; a real header is about a hundred bytes.
MAX_HEADER_BYTES = 10_000
MAX_DIMS = 32
MAX_ARRAY_BYTES = 2**62  # below numpy's own bound (the signed 64-bit index), with room for its arithmetic
# Booleans, integers and IEEE floats: what lidar sweeps, labels and images are. No datetimes (the crash), no
# structured or object types (pickle), no complex numbers, no strings.
_PLAIN_DESCR = re.compile(r"[<>|=]?(?:b1|[iu][1248]|f[248])")


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int  # bytes from the start of the file to the first element

    @property
    def data_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(head: bytes) -> NpyHeader:
    """Parse the header at the start of ``head`` (the file's first bytes, at least the whole header). Raises
    ValueError saying what is wrong."""
    if len(head) < 10 or head[:6] != MAGIC:
        raise ValueError("not a .npy file (no \\x93NUMPY magic)")
    major, minor = head[6], head[7]
    if (major, minor) == (1, 0):
        (length,), start, encoding = struct.unpack_from("<H", head, 8), 10, "latin1"
    elif major in (2, 3) and minor == 0:
        if len(head) < 12:
            raise ValueError("header cut short")
        (length,), start, encoding = struct.unpack_from("<I", head, 8), 12, "latin1" if major == 2 else "utf8"
    else:
        raise ValueError(f"unknown .npy format version {major}.{minor}")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"header of {length} bytes (at most {MAX_HEADER_BYTES})")
    if len(head) < start + length:
        raise ValueError("header cut short")
    try:
        text = head[start:start + length].decode(encoding)
        header = ast.literal_eval(text.strip())
    except (UnicodeDecodeError, ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"header is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("header must be a dict of exactly 'descr', 'fortran_order' and 'shape'")
    descr, fortran_order, shape = header["descr"], header["fortran_order"], header["shape"]
    if "O" in repr(descr):
        raise ValueError("holds Python objects (pickle); only numeric arrays are read")
    if not isinstance(descr, str) or not _PLAIN_DESCR.fullmatch(descr):
        raise ValueError(f"dtype {descr!r} is not a plain boolean, integer or float type (structured, object, "
                         "datetime, complex and string arrays are not read)")
    if not isinstance(fortran_order, bool):
        raise ValueError("fortran_order must be True or False")
    if (not isinstance(shape, tuple) or len(shape) > MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ValueError(f"shape must be a tuple of at most {MAX_DIMS} integers >= 0, got {shape!r}")
    dtype = np.dtype(descr)
    # numpy refuses a shape whose sizes, zero ones passed over, multiply past a signed 64-bit index, even when
    # another size is 0 and the array holds nothing: such a shape is not one any array has.
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        shown = repr(shape) if len(repr(shape)) <= 80 else repr(shape)[:77] + "..."
        raise ValueError(f"shape {shown} cannot be an array: its sizes multiply past what an array can index")
    return NpyHeader(shape, fortran_order, dtype, start + length)
