"""The weight loader in its own process: reading, verifying and resolving bundles never takes the serving
thread's time, and a load that blocks is killed instead of wedging the swap.

Why a process (docs/design-notes.md, "Loading in a separate process"): the loader's work is mostly Python
(manifest and safetensors parsing, signature and architecture checks, delta resolution). On a loader thread of
the serving process it holds the GIL the serving thread needs; lowering that thread's OS priority made it
worse on a busy CPU, since a low-priority thread holding the GIL is preempted by other processes and the
serving thread waits for it. A separate process has its own GIL, can run at a lower priority without that
inversion, can be bounded in memory (RLIMIT_AS) and can be killed when a load does not end.

Protocol, over a Unix socket pair (length-prefixed frames; no pickle in either direction):
- parent → child, once: the child's settings (JSON), then the loader and the backend's stages as a spawn spec
  (``inference.spawn_spec``: plain data naming spawnable classes, e.g. ``inference.loading.BundleLoader``);
  child → parent: ``("ready", pid)``.
- parent → child: ``("load", request_id, region)``; child → parent: ``("ok", request_id, meta, size, table)``
  with the shared weights block's file descriptor attached (SCM_RIGHTS, see ``inference.weight_transfer``), or
  ``("error", request_id, error)``.
The child is started with ``python -m regionadapt_ros.inference.loader_process FD``: nothing of the parent's
``__main__`` (a ROS node, pytest) is imported again; torch is never imported there, onnxruntime only when
the backend's stages need it (``OnnxRuntimeBackend.loader_stages``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from regionadapt_ros.inference import spawn_spec
from regionadapt_ros.inference.weight_source import LoadError, LoadTimeoutError, SourceClosedError, WeightSource
from regionadapt_ros.inference.weight_transfer import TensorEntry, pack_weights, unpack_weights

_HEADER = struct.Struct("!Q")
_MAX_MESSAGE = 64 * 2**20  # a reply carries a tensor table, never tensor data
# Errors raised on purpose by the package are rebuilt with their type in the parent (callers catch them).
_REBUILT_ERRORS = ("BundleError", "ConfigError", "DataError")
_STAGED = "__staged__"  # the model name under which stage outputs travel in the shared block


class LoaderProcessError(LoadError):
    """The loader process could not be started or died."""


# ------------------------------------------------------------------------------------------ framing
def _send_frame(sock: socket.socket, payload: bytes, fds: tuple[int, ...] = ()) -> None:
    data = _HEADER.pack(len(payload)) + payload
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def _recv_exact(sock: socket.socket, n: int, deadline: float | None, first: bytes = b"") -> bytes:
    buf = bytearray(first)
    while len(buf) < n:
        _wait_readable(sock, deadline)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the other end closed the connection")
        buf += chunk
    return bytes(buf)


def _wait_readable(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
        raise TimeoutError


def _recv_frame(sock: socket.socket, deadline: float | None) -> tuple[bytes, list[int]]:
    """One frame and the file descriptors sent with it. TimeoutError at ``deadline`` (time.monotonic())."""
    _wait_readable(sock, deadline)
    data, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, 4)
    if not data:
        raise EOFError("the other end closed the connection")
    try:
        (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline, data))
        if length > _MAX_MESSAGE:
            raise EOFError(f"a frame of {length} bytes is larger than any the protocol sends")
        return _recv_exact(sock, length, deadline), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


# Messages are JSON: the parent never unpickles what the child, which reads untrusted files, sends.
def _send(sock: socket.socket, obj: Any, fds: tuple[int, ...] = ()) -> None:
    _send_frame(sock, json.dumps(obj).encode(), fds)


def _recv(sock: socket.socket, deadline: float | None) -> tuple[Any, list[int]]:
    data, fds = _recv_frame(sock, deadline)
    try:
        return json.loads(data), fds
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise EOFError("a message that is not JSON") from None


def _encode_error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
            "path": getattr(exc, "path", None), "problem": getattr(exc, "problem", None)}


def _decode_error(info: dict[str, Any]) -> Exception:
    if info.get("module") == "regionadapt_ros.core.errors" and info.get("type") in _REBUILT_ERRORS \
            and isinstance(info.get("path"), str) and isinstance(info.get("problem"), str):
        from regionadapt_ros.core import errors

        return getattr(errors, info["type"])(info["path"], info["problem"])
    return LoadError(str(info.get("type", "Error")), str(info.get("message", "")))


# ------------------------------------------------------------------------------------------ parent side
class LoaderProcess(WeightSource):
    """A ``WeightSource`` that runs ``loader`` (spawnable: ``inference.spawn_spec``) in a child process.

    ``nice``: added to the niceness of prefetch loads (0..19); ``sched_idle``: run them under SCHED_IDLE
    instead (only when no other work wants the CPU: on a fully loaded machine a load may then take very long).
    An urgent load (the region is already active and waits for its weights) runs at the serving process's
    priority, in this separate process all the same;
    ``memory_limit_mb``: the child's address-space limit (RLIMIT_AS; 0 = none), so a bundle that would make it
    allocate without bound fails with MemoryError in the child. A load that exceeds its time limit kills the
    child; the next load starts a new one. ``stages``: the backend's loader stages
    (``InferenceBackend.loader_stages``), run in the child on each model's weights after the loader.
    """

    def __init__(self, loader: Callable[[str], Any], *, nice: int = 10, sched_idle: bool = False,
                 memory_limit_mb: int = 2048, python: str | None = None,
                 stages: Mapping[str, Callable[[Any], bytes]] | None = None) -> None:
        self.loader = loader
        self.stages = dict(stages or {})
        self.nice = int(nice)
        self.sched_idle = bool(sched_idle)
        self.memory_limit_mb = int(memory_limit_mb)
        self.python = python or sys.executable
        self.starts = 0
        self.kills = 0
        # SpawnSpecError here, naming what cannot travel, rather than a failed start later
        self._spec = spawn_spec.pack({"loader": loader, "stages": self.stages})
        self._load_lock = threading.Lock()  # one load at a time
        self._state_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        self._request_id = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def describe(self) -> str:
        policy = "SCHED_IDLE" if self.sched_idle else f"nice +{self.nice}"
        return f"loader process (prefetch at {policy})"

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 30.0) -> None:
        with self._load_lock:
            self._ensure_started(time.monotonic() + timeout_s)

    def _ensure_started(self, deadline: float) -> socket.socket:
        with self._state_lock:
            if self._closed:
                raise SourceClosedError()
            if self._sock is not None and self._proc is not None and self._proc.poll() is None:
                return self._sock
        self._stop_child()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The child imports what the parent imports (a source checkout, a colcon install, pytest's rootdir).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"  # one core's worth of work, never a thread per core
        try:
            proc = subprocess.Popen(
                [self.python, "-m", "regionadapt_ros.inference.loader_process", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            parent_sock.close()
            child_sock.close()
            raise LoaderProcessError("LoaderProcessError", f"cannot start the loader process: {exc}") from None
        finally:
            child_sock.close()
        with self._state_lock:
            self._proc, self._sock = proc, parent_sock
            closed = self._closed
        if closed:
            self._stop_child()
            raise SourceClosedError()
        self.starts += 1
        settings = {"nice": self.nice, "sched_idle": self.sched_idle, "memory_limit_mb": self.memory_limit_mb,
                    "parent_pid": os.getpid()}
        try:
            _send(parent_sock, settings)
            _send_frame(parent_sock, self._spec)
            reply, fds = _recv(parent_sock, deadline)
        except TimeoutError:
            self._kill()
            raise LoaderProcessError("LoaderProcessError", "the loader process did not start in time") from None
        except (OSError, EOFError, ValueError) as exc:  # ValueError: socket closed under select
            self._stop_child()
            if self._closed:
                raise SourceClosedError() from None
            raise LoaderProcessError("LoaderProcessError", f"the loader process failed to start: "
                                     f"{self._exit_text() or exc}") from None
        for fd in fds:
            os.close(fd)
        if not isinstance(reply, list) or reply[:1] != ["ready"]:
            self._stop_child()
            raise _decode_error(reply[2] if isinstance(reply, list) and len(reply) == 3 else {})
        return parent_sock

    def close(self) -> None:
        with self._state_lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # a load waiting on it returns at once
        self._stop_child()

    def _exit_text(self) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if code is None:
            return ""
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _kill(self) -> None:
        self.kills += 1
        self._stop_child(kill=True)

    def _stop_child(self, kill: bool = False) -> None:
        with self._state_lock:
            proc, sock = self._proc, self._sock
            self._sock = None
        if sock is not None:
            sock.close()  # the child sees EOF and exits
        if proc is None:
            return
        if kill:
            with contextlib.suppress(OSError):
                proc.kill()
        try:
            proc.wait(timeout=0.5 if kill else 2.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)  # a child stuck in the kernel (D state) is left to the OS

    # ---------------------------------------------------------------- loading
    in_process = False

    def load(self, region: str, timeout_s: float, checkpoint: Callable[[], None] = lambda: None,
             urgent: bool = True) -> Any:
        from regionadapt_ros.inference.swap import LoadedWeights

        with self._load_lock:
            sock = self._ensure_started(time.monotonic() + max(30.0, timeout_s))
            deadline = time.monotonic() + timeout_s  # starting a new loader process is not the load's time
            self._request_id += 1
            request_id = self._request_id
            try:
                _send(sock, ["load", request_id, region, bool(urgent)])
                while True:
                    reply, fds = _recv(sock, deadline)
                    if isinstance(reply, list) and len(reply) >= 2 and reply[1] == request_id:
                        break
                    for fd in fds:  # a reply to an earlier request (cannot happen; cheap to be sure)
                        os.close(fd)
            except TimeoutError:
                self._kill()
                raise LoadTimeoutError(f"loading region {region!r} did not finish within {timeout_s:g} s (a "
                                       "bundle file that blocks or never ends?); the loader process was killed "
                                       "and later loads go on in a new one") from None
            except (OSError, EOFError, ValueError) as exc:  # ValueError: socket closed under select
                closed = self._closed
                self._stop_child()
                if closed:
                    raise SourceClosedError() from None
                raise LoaderProcessError("LoaderProcessError", f"the loader process died while loading region "
                                         f"{region!r} ({self._exit_text() or exc}); later loads go on in a new "
                                         "one") from None
        if reply[0] == "error" and len(reply) == 3 and isinstance(reply[2], dict):
            for fd in fds:
                os.close(fd)
            raise _decode_error(reply[2])
        try:
            if reply[0] != "ok" or len(reply) != 5 or len(fds) != 1:
                raise LoaderProcessError("LoaderProcessError", f"region {region!r}: malformed reply from the "
                                         "loader process")
            _kind, _rid, meta, size, table = reply
            checkpoint()  # what follows runs in this process
            fd = fds.pop()
            weights = unpack_weights(fd, int(size), tuple(TensorEntry.from_json(e) for e in table))
            staged = {model: blob.data for model, blob in weights.pop(_STAGED, {}).items()}
            return LoadedWeights(region=str(meta["region"]), bundle_id=str(meta["bundle_id"]),
                                 weights=weights, version=int(meta["version"]), sha256=str(meta["sha256"]),
                                 rules=dict(meta["rules"]), staged=staged)
        except (KeyError, TypeError, ValueError) as exc:
            raise LoaderProcessError("LoaderProcessError", f"region {region!r}: malformed reply from the "
                                     f"loader process ({exc})") from None
        finally:
            for fd in fds:
                os.close(fd)


# ------------------------------------------------------------------------------------------ child side
def _lower_priority(nice: int, sched_idle: bool) -> None:
    """Lower the calling thread's priority (Linux: nice and SCHED_IDLE are per thread)."""
    if sched_idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:
            pass
    if nice > 0:
        with contextlib.suppress(OSError, AttributeError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


def _run_load(loader: Callable[[str], Any], region: str, lower: tuple[int, bool] | None) -> tuple[Any, Any]:
    """``loader(region)`` on a thread of its own, at a lower priority when ``lower`` = (nice, sched_idle): a
    thread's priority can be lowered but never raised again, so the main thread keeps the base priority for
    the next urgent load. Returns (result, exception)."""
    box: dict[str, Any] = {}

    def work() -> None:
        if lower is not None:
            _lower_priority(*lower)
        try:
            box["value"] = loader(region)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"load-{region}")
    worker.start()
    worker.join()
    return box.get("value"), box.get("error")


def _load_and_stage(loader: Callable[[str], Any], stages: Mapping[str, Callable[[Any], bytes]], region: str) -> Any:
    """``loader(region)``, with the backend's stage outputs added to its weights as uint8 blobs (under the
    reserved model name ``_STAGED``), so that they travel in the same shared block."""
    loaded = loader(region)
    if stages:
        blobs = {model: np.frombuffer(stage(loaded.weights[model]), dtype=np.uint8)
                 for model, stage in stages.items() if model in loaded.weights}
        loaded.weights = {**loaded.weights, _STAGED: blobs}
    return loaded


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL when the parent dies, so a load blocked forever cannot outlive its session."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _limit_memory(limit_mb: int) -> None:
    if limit_mb <= 0:
        return
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = limit_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _child_main(fd: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (it closes the connection or
    # kills this process), so a KeyboardInterrupt traceback from here would only add noise to its exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    settings, _ = _recv(sock, None)
    spec, _ = _recv_frame(sock, None)
    _die_with_parent(int(settings["parent_pid"]))
    background = (int(settings["nice"]), bool(settings["sched_idle"]))  # the priority of prefetch loads
    limit_mb = int(settings["memory_limit_mb"])
    _limit_memory(limit_mb)
    try:
        rebuilt = spawn_spec.unpack(spec)
        loader, stages = rebuilt["loader"], rebuilt["stages"]
    except Exception as exc:
        _send(sock, ["error", 0, _encode_error(exc)])
        return
    _send(sock, ["ready", os.getpid()])
    while True:
        try:
            request, _ = _recv(sock, None)
        except (EOFError, OSError):
            return  # the parent closed the connection or died
        _kind, request_id, region, urgent = request
        try:
            loaded, error = _run_load(lambda r: _load_and_stage(loader, stages, r), region,
                                      None if urgent else background)
            if error is not None:
                raise error
            packed = pack_weights(loaded.weights)
        except MemoryError as exc:
            detail = f" ({exc})" if str(exc) else ""
            message = (f"loading region {region!r} needed more memory than the loader process's limit of "
                       f"{limit_mb} MiB{detail}")
            _send(sock, ["error", request_id, {"type": "MemoryError", "module": "builtins", "message": message}])
            continue
        except Exception as exc:  # every refusal is the parent's to report; the child goes on
            _send(sock, ["error", request_id, _encode_error(exc)])
            continue
        meta = {"region": loaded.region, "bundle_id": loaded.bundle_id, "version": int(loaded.version),
                "sha256": loaded.sha256, "rules": dict(loaded.rules)}
        del loaded
        try:
            _send(sock, ["ok", request_id, meta, packed.size, [e.to_json() for e in packed.table]], (packed.fd,))
        except (OSError, TypeError, ValueError) as exc:
            if isinstance(exc, OSError):
                return
            _send(sock, ["error", request_id, _encode_error(exc)])  # rules that JSON cannot carry
        finally:
            os.close(packed.fd)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
