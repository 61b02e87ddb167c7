"""The spawn spec: how a loader travels to the loader process as data (inference.spawn_spec). What goes in comes
out equal and of the same kinds; what cannot travel is refused where it is sent; a frame that is not a spec, or
that names something other than a spawnable class, is refused without anything in it being called."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from regionadapt_ros.inference.spawn_spec import SpawnSpecError, is_spawnable, pack, unpack


class Settings:
    """A spawnable class of this test module (the loader process imports such classes by name)."""

    spawnable = True

    def __init__(self, name: str, table: dict) -> None:
        self.name, self.table = name, table

    def spawn_config(self) -> dict:
        return {"name": self.name, "table": self.table}

    @classmethod
    def from_spawn_config(cls, config: dict) -> Settings:
        return cls(config["name"], config["table"])


class InheritsSpawnable(Settings):
    """Spawnable only by inheritance: its own state would be lost, so it does not travel."""

    def __init__(self) -> None:
        super().__init__("x", {})
        self.extra = 1


class SaysMaybe(Settings):
    spawnable = "yes"  # only True counts


def frame(doc: object, blobs: bytes = b"") -> bytes:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return struct.pack("!I", len(data)) + data + blobs


def test_every_kind_of_value_comes_back_equal_and_of_its_kind():
    arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "bool": np.array([True, False]),
              "u8": np.zeros((0, 4), np.uint8), "i64": np.array(-7, dtype=np.int64)}
    value = {"none": None, "flag": True, "n": 3, "x": 0.25, "inf": float("inf"), "s": "é", "np_scalar": np.float32(2),
             "list": [1, [2]], "tuple": (1, (2, 3)), "bytes": b"\x00\x80\xff", "path": Path("/a/b c"),
             "arrays": arrays, "object": Settings("n", {"shape": (3, 4)})}
    out = unpack(pack(value))
    assert out["none"] is None and out["flag"] is True and out["n"] == 3 and out["x"] == 0.25
    assert out["inf"] == float("inf") and out["s"] == "é" and out["np_scalar"] == 2.0
    assert out["list"] == [1, [2]] and out["tuple"] == (1, (2, 3)) and isinstance(out["tuple"][1], tuple)
    assert out["bytes"] == b"\x00\x80\xff" and out["path"] == Path("/a/b c")
    for name, arr in arrays.items():
        got = out["arrays"][name]
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr), name
        assert got.flags.writeable, name
    assert isinstance(out["object"], Settings) and out["object"].table == {"shape": (3, 4)}


@pytest.mark.parametrize(("value", "message"), [
    (lambda region: region, r"spec: a builtins\.function .*<lambda> .*not spawnable"),
    ({"a": {"b": object()}}, r"spec\.a\.b: a builtins\.object "),
    ({1: "x"}, "key 1 that is not a str"),
    ({"$bytes": 0}, "starts with '\\$'"),
    (np.array([{"a": 1}], dtype=object), "dtype object"),
    (np.array(["s"]), "dtype <U1"),
    ({1, 2}, "builtins.set"),
    (InheritsSpawnable(), r"InheritsSpawnable cannot be sent"),
    (SaysMaybe("x", {}), r"SaysMaybe cannot be sent"),
    (Settings("x", {"k": object()}), r"spec<Settings>\.table\.k: a builtins\.object"),
])
def test_what_cannot_travel_is_refused_where_it_is_sent(value, message):
    with pytest.raises(SpawnSpecError, match=message):
        pack(value)


def test_is_spawnable_asks_the_class_itself():
    assert is_spawnable(Settings("a", {}))
    assert not is_spawnable(InheritsSpawnable()) and not is_spawnable(SaysMaybe("a", {}))
    assert not is_spawnable(lambda region: region) and not is_spawnable(object())


def test_a_named_function_or_plain_class_is_refused_without_being_called(tmp_path):
    marker = tmp_path / "ran"
    calls = [{"$object": "os:system", "config": f"touch {marker}"},
             {"$object": "subprocess:Popen", "config": ["touch", str(marker)]},
             {"$object": "pathlib:Path", "config": str(marker)},
             {"$object": "builtins:eval", "config": "1"},
             {"$object": f"{__name__}:InheritsSpawnable", "config": {}},
             {"$object": f"{__name__}:SaysMaybe", "config": {"name": "a", "table": {}}}]
    for call in calls:
        with pytest.raises(SpawnSpecError, match="is not a spawnable class"):
            unpack(frame({"value": call, "blobs": []}))
    assert not marker.exists()
    got = unpack(frame({"value": {"$object": f"{__name__}:Settings", "config": {"name": "a", "table": {}}},
                        "blobs": []}))
    assert isinstance(got, Settings) and got.name == "a"


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00\x00", "shorter than its header"),
    (struct.pack("!I", 100) + b"{}", "runs past its frame"),
    (frame(b"\x80\x04K\x01."), "not JSON"),  # a pickle of 1
    (frame({"value": 1}), "without its value and blob lengths"),
    (frame({"value": 1, "blobs": [-1]}), "without its value and blob lengths"),
    (frame({"value": 1, "blobs": [4]}, b"ab"), "do not add up"),
    (frame({"value": 1, "blobs": []}, b"extra"), "do not add up"),
    (frame({"value": {"$bytes": 1}, "blobs": [2]}, b"ab"), "blob index 1 out of range"),
    (frame({"value": {"$bytes": True}, "blobs": [2]}, b"ab"), "blob index True out of range"),
    (frame({"value": {"$pickle": 0}, "blobs": []}), "unknown or malformed tag"),
    (frame({"value": {"$path": "/x", "extra": 1}, "blobs": []}), "unknown or malformed tag"),
    (frame({"value": {"$path": 3}, "blobs": []}), "path that is not a string"),
    (frame({"value": {"$tuple": {"a": 1}}, "blobs": []}), "tuple that is not a list"),
    (frame({"value": {"$array": 0, "dtype": "<f4", "shape": [3]}, "blobs": [8]}, bytes(8)), "in 8 bytes"),
    (frame({"value": {"$array": 0, "dtype": "|O", "shape": [1]}, "blobs": [8]}, bytes(8)), "dtype object"),
    (frame({"value": {"$array": 0, "dtype": "no-such", "shape": [1]}, "blobs": [4]}, bytes(4)), "does not know"),
    (frame({"value": {"$array": 0, "dtype": "<f4", "shape": [-1]}, "blobs": [4]}, bytes(4)), "not a list of"),
    (frame({"value": {"$array": 0, "dtype": "<f4", "shape": 4}, "blobs": [16]}, bytes(16)), "not a list of"),
    (frame({"value": {"$object": "os.system", "config": None}, "blobs": []}), "not module:QualName"),
    (frame({"value": {"$object": "os:__import__('x')", "config": None}, "blobs": []}), "not module:QualName"),
    (frame({"value": {"$object": "no_such_module_x:Thing", "config": None}, "blobs": []}), "cannot be found"),
    (frame({"value": {"$object": f"{__name__}:Nothing", "config": None}, "blobs": []}), "cannot be found"),
])
def test_a_frame_that_is_not_a_spec_is_refused(data, message):
    with pytest.raises(SpawnSpecError, match=message):
        unpack(data)


def test_nesting_is_bounded_both_ways():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(SpawnSpecError, match="nested more than 64"):
        pack(deep)
    with pytest.raises(SpawnSpecError, match="nested more than 64"):
        unpack(frame({"value": json.loads(json.dumps(deep)), "blobs": []}))
    with pytest.raises(SpawnSpecError, match="not JSON"):  # deeper than the JSON parser itself goes
        unpack(frame(b'{"value": ' + b"[" * 200_000 + b"]" * 200_000 + b', "blobs": []}'))
