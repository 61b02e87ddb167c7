"""Spawnable loaders for the loader-process tests: the child process rebuilds them from their spawn spec
(``inference.spawn_spec``), so they live in a module it can import (pytest puts test/ on sys.path, and the
child inherits it)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from regionadapt_ros.inference.swap import LoadedWeights


class WrappedLoader:
    """A real loader with hostile behaviour for some regions:
    ``block``: {region: path of a FIFO nobody writes to} — the load creates ``<path>.waiting`` and then opens the
FIFO, which blocks forever;
    ``crash``: regions whose load makes the loader process exit without replying.
    Every successful load records, as rules entries, the loader's pid (``loader_pid``), whether torch is
    imported there (``torch_imported``) and the niceness it ran at (``loader_nice``)."""

    spawnable = True

    def __init__(self, inner, block: dict[str, str] | None = None, crash: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.block = dict(block or {})
        self.crash = tuple(crash)

    def spawn_config(self) -> dict:
        return {"inner": self.inner, "block": self.block, "crash": self.crash}

    @classmethod
    def from_spawn_config(cls, config: dict) -> WrappedLoader:
        return cls(config["inner"], block=config["block"], crash=config["crash"])

    def __call__(self, region: str) -> LoadedWeights:
        if region in self.block:
            Path(self.block[region] + ".waiting").touch()
            Path(self.block[region]).read_bytes()  # a FIFO without a writer: never returns
        if region in self.crash:
            os._exit(3)
        loaded = self.inner(region)
        loaded.rules = {**loaded.rules, "loader_pid": os.getpid(), "torch_imported": "torch" in sys.modules,
                        "loader_nice": os.getpriority(os.PRIO_PROCESS, threading.get_native_id())}
        return loaded
