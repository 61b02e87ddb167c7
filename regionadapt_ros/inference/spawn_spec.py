"""How a loader travels to the loader process: as plain data, never as a pickle.

A pickle is a program: whoever can write one can make the process that reads it run anything. The loader
process reads untrusted bundle files, so what it is told to be is kept to data: JSON for the structure, raw
blobs for bytes and arrays, and objects only of classes that say they can be rebuilt from such data.

A spawnable class sets ``spawnable = True`` and defines
- ``spawn_config(self) -> value``: its settings, made of the values below;
- ``from_spawn_config(cls, config) -> instance`` (a classmethod): the object rebuilt from them.

Values: None, bool, int, float, str; lists and tuples (a tuple comes back a tuple); mappings with str keys
(come back as dicts); bytes; numpy arrays of plain number or bool dtypes; ``pathlib`` paths; spawnable
objects. Anything else raises ``SpawnSpecError`` on the sending side, where the mistake is made.

Wire format (one frame): ``!I`` length of a JSON document, the document, then the blobs back to back. The
document is ``{"value": ..., "blobs": [length, ...]}``; tagged values are one-key-plus-fields objects:
``{"$bytes": i}``, ``{"$array": i, "dtype": "<f4", "shape": [...]}``, ``{"$tuple": [...]}``,
``{"$path": "..."}``, ``{"$object": "module:QualName", "config": ...}``. A mapping key may not start with
``$``, so a mapping never reads as a tag.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

_LENGTH = struct.Struct("!I")
_MAX_DEPTH = 64
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PLAIN_KINDS = "biuf"  # bool, signed, unsigned, float: no objects, strings, structs or datetimes


class SpawnSpecError(TypeError):
    """A value that cannot travel as a spawn spec, or a spec that does not describe one."""


def is_spawnable(value: Any) -> bool:
    """Whether ``value`` can travel as a spawn spec object: its own class (not only a base class, whose
    ``spawn_config`` would not carry a subclass's state) says ``spawnable = True`` and has both methods."""
    return _spawnable_class(type(value))


def _spawnable_class(cls: type) -> bool:
    return vars(cls).get("spawnable", False) is True and callable(getattr(cls, "spawn_config", None)) \
        and callable(getattr(cls, "from_spawn_config", None))


# ------------------------------------------------------------------------------------------ encoding
def pack(value: Any) -> bytes:
    """``value`` as one spawn-spec frame; SpawnSpecError naming the first part that cannot travel."""
    blobs: list[bytes] = []
    doc = json.dumps({"value": _encode(value, blobs, "spec", 0), "blobs": [len(b) for b in blobs]},
                     allow_nan=True).encode()
    return _LENGTH.pack(len(doc)) + doc + b"".join(blobs)


def _encode(value: Any, blobs: list[bytes], where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise SpawnSpecError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        blobs.append(bytes(value))
        return {"$bytes": len(blobs) - 1}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _PLAIN_KINDS:
            raise SpawnSpecError(f"{where}: an array of dtype {value.dtype} (only plain numbers travel)")
        blobs.append(np.ascontiguousarray(value).tobytes())
        return {"$array": len(blobs) - 1, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, PurePath):
        return {"$path": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, blobs, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, blobs, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpawnSpecError(f"{where}: a mapping key {key!r} that is not a str")
            if key.startswith("$"):
                raise SpawnSpecError(f"{where}: a mapping key {key!r} starts with '$', reserved for tags")
            out[key] = _encode(item, blobs, f"{where}.{key}", depth + 1)
        return out
    cls = type(value)
    if is_spawnable(value):
        name = f"{cls.__module__}:{cls.__qualname__}"
        config = _encode(value.spawn_config(), blobs, f"{where}<{cls.__qualname__}>", depth + 1)
        return {"$object": name, "config": config}
    what = f"{cls.__module__}.{cls.__qualname__}"
    if callable(value) and isinstance(getattr(value, "__qualname__", None), str):
        what += f" {value.__qualname__}"  # which function: a lambda or closure reads as one
    raise SpawnSpecError(f"{where}: a {what} cannot be sent to the loader process (it is not spawnable: see "
                         "inference.spawn_spec)")


# ------------------------------------------------------------------------------------------ decoding
def unpack(frame: bytes) -> Any:
    """The value ``pack`` made; SpawnSpecError for a frame that is not one, or that names a class that is not
    spawnable (it is imported to be checked, never called)."""
    if len(frame) < _LENGTH.size:
        raise SpawnSpecError("a spawn spec shorter than its header")
    (doc_len,) = _LENGTH.unpack_from(frame)
    end = _LENGTH.size + doc_len
    if end > len(frame):
        raise SpawnSpecError(f"a spawn spec whose document ({doc_len} bytes) runs past its frame")
    try:
        doc = json.loads(frame[_LENGTH.size:end])
    except (ValueError, RecursionError) as exc:
        raise SpawnSpecError(f"a spawn spec whose document is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"value", "blobs"} or not isinstance(doc["blobs"], list) \
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in doc["blobs"]):
        raise SpawnSpecError("a spawn spec document without its value and blob lengths")
    if end + sum(doc["blobs"]) != len(frame):
        raise SpawnSpecError("a spawn spec whose blobs do not add up to its frame")
    blobs, pos = [], end
    for n in doc["blobs"]:
        blobs.append(frame[pos:pos + n])
        pos += n
    return _decode(doc["value"], blobs, "spec", 0)


def _blob(blobs: list[bytes], index: Any, where: str) -> bytes:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(blobs):
        raise SpawnSpecError(f"{where}: blob index {index!r} out of range")
    return blobs[index]


def _decode(value: Any, blobs: list[bytes], where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise SpawnSpecError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, list):
        return [_decode(v, blobs, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k.startswith("$")]
    if not tags:
        return {k: _decode(v, blobs, f"{where}.{k}", depth + 1) for k, v in value.items()}
    tag = tags[0]
    fields = {"$bytes": {"$bytes"}, "$array": {"$array", "dtype", "shape"}, "$tuple": {"$tuple"},
              "$path": {"$path"}, "$object": {"$object", "config"}}.get(tag)
    if fields is None or set(value) != fields:
        raise SpawnSpecError(f"{where}: an unknown or malformed tag {sorted(value)}")
    if tag == "$bytes":
        return _blob(blobs, value["$bytes"], where)
    if tag == "$path":
        if not isinstance(value["$path"], str):
            raise SpawnSpecError(f"{where}: a path that is not a string")
        return Path(value["$path"])
    if tag == "$tuple":
        if not isinstance(value["$tuple"], list):
            raise SpawnSpecError(f"{where}: a tuple that is not a list")
        return tuple(_decode(v, blobs, f"{where}[{i}]", depth + 1) for i, v in enumerate(value["$tuple"]))
    if tag == "$array":
        return _decode_array(value, _blob(blobs, value["$array"], where), where)
    return _decode_object(value["$object"], value["config"], blobs, where, depth)


def _decode_array(value: dict[str, Any], data: bytes, where: str) -> np.ndarray:
    try:
        dtype = np.dtype(value["dtype"])
    except (TypeError, ValueError):
        raise SpawnSpecError(f"{where}: an array dtype {value['dtype']!r} that numpy does not know") from None
    shape = value["shape"]
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise SpawnSpecError(f"{where}: an array of dtype {dtype} (only plain numbers travel)")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in shape):
        raise SpawnSpecError(f"{where}: an array shape {shape!r} that is not a list of sizes")
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != len(data):
        raise SpawnSpecError(f"{where}: an array of shape {shape} and dtype {dtype} in {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # writable, like the array that was sent


def _decode_object(name: Any, config: Any, blobs: list[bytes], where: str, depth: int) -> Any:
    module_name, _, qualname = name.partition(":") if isinstance(name, str) else ("", "", "")
    if not (_NAME.fullmatch(module_name) and _NAME.fullmatch(qualname)):
        raise SpawnSpecError(f"{where}: an object name {name!r} that is not module:QualName")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SpawnSpecError(f"{where}: {name} cannot be found: {exc}") from None
    # Only classes that declare themselves rebuildable from data; a function (os:system) or any other class
    # is refused before it is called.
    if not isinstance(target, type) or not _spawnable_class(target):
        raise SpawnSpecError(f"{where}: {name} is not a spawnable class")
    return target.from_spawn_config(_decode(config, blobs, f"{where}<{qualname}>", depth + 1))
