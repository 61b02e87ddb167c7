"""Byte-sequence fields (``uint8[] data``) as numpy arrays, whatever the message library put there.

rclpy gives ``array.array('B')`` (or ``bytes`` when a publisher assigned bytes), rosbags gives a numpy uint8
array, hand-built messages may hold ``bytes``, ``bytearray``, ``memoryview`` or a list of ints. Everything
that exposes the buffer protocol is viewed without a copy.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from regionadapt_ros.core.errors import MessageConversionError


def as_byte_array(data: Any, msg_type: str, field: str = "data") -> np.ndarray:
    """Return ``data`` as a 1-D, C-contiguous uint8 array, sharing memory with it when possible.

    The result is read-only when the underlying buffer is (``bytes``); callers must not write into it.
    """
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous:
            return data
        # A non-uint8 or multi-dimensional array is taken as raw memory, like the buffer protocol would.
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        return np.frombuffer(view, dtype=np.uint8)
    if data is None:
        raise MessageConversionError(msg_type, field, "is missing (None)")
    try:
        # A plain list/tuple of ints: one copy is unavoidable.
        values = np.asarray(data)
        if values.ndim != 1 or values.dtype.kind not in "iub":
            raise ValueError
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError
        return values.astype(np.uint8)
    except (ValueError, TypeError, OverflowError):
        raise MessageConversionError(
            msg_type, field, f"is not a byte sequence (got {type(data).__name__})"
        ) from None
