"""Self-healing cache of serialized TensorRT engines (plans). No tensorrt import: this is the decision logic
that ``tensorrt_backend`` calls, testable without a GPU.

An engine plan is only valid for the exact TensorRT version and GPU architecture that built it, for the
graph it was built from, and for the precision and input-shape profile it was built with. Engines are a
cache, never part of a bundle (DESIGN.md §5), keyed by

    (ONNX sha256, TensorRT version, GPU compute capability, precision, input shapes)

plus the build options that change the plan (refittable, DLA core, INT8 calibration data).

On disk, per engine, in the cache directory::

    <label>.<precision>[.refit][.dlaN].engine   the plan bytes, exactly as the builder serialized them
    <label>.<precision>[.refit][.dlaN].json     sidecar: {"format", "label", "key": {...}, "plan": {"sha256",
                                                "size"}, "built_at", "build_seconds"}

The file name says what the engine is *for* (a label such as ``perception-refit``); the sidecar says what it
was *built from*. ``EngineCache.lookup`` compares the sidecar's key with the wanted key and then the plan's
size and sha256 with the ones recorded at build time, and only then hands the bytes out: a plan from another
TensorRT version, another GPU, another graph, or a truncated/corrupt file is never given to the runtime, it
is rebuilt and replaced (the reason is returned for the log). Both files are written atomically (temporary
file, fsync, rename), the plan first, so a crash leaves either the old pair, or a sidecar whose recorded hash
no longer matches the plan, which the next lookup detects and heals.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from regionadapt_ros.core import safe_read, strict_parse
from regionadapt_ros.core.bundle import atomic_write_bytes
from regionadapt_ros.core.errors import ConfigError, RegionAdaptError
from regionadapt_ros.inference.backend import INPUT_SHAPES, BackendError

_LOG = logging.getLogger("regionadapt_ros.engine_cache")

CACHE_FORMAT = 2  # 2: keys name the device model and gpu_fallback (format-1 plans are rebuilt)
MAX_SIDECAR_BYTES = 1 << 20


class _CacheFileError(RegionAdaptError):
    """A cache file that cannot be used as it is (the caller rebuilds the engine)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
PRECISIONS = ("fp32", "fp16", "int8")
PLAN_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
HASH_KINDS = ("bytes", "structure")

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Shape = tuple[int, ...]
# (min, opt, max) dimensions of one input for the optimisation profile.
ShapeRange = tuple[Shape, Shape, Shape]

T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$REGIONADAPT_ENGINE_CACHE`` or ``~/.cache/regionadapt/engines``."""
    env = os.environ.get("REGIONADAPT_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "regionadapt" / "engines"


def compute_capability_str(major: int, minor: int) -> str:
    """(8, 7) → "8.7" (the form ``torch.cuda.get_device_capability`` values are reported in)."""
    return f"{int(major)}.{int(minor)}"


@dataclass(frozen=True)
class DeviceEnv:
    """What a plan is tied to besides its graph: the TensorRT library (``tensorrt.__version__``) and the
    GPU architecture (compute capability, e.g. "8.7" for Orin, "9.0" for H100/H200)."""

    tensorrt_version: str
    compute_capability: str
    device_name: str = ""


# --------------------------------------------------------------------------------------------- build options


@dataclass(frozen=True)
class BuildOptions:
    """How an engine is built.

    precision: "fp32" (TF32 disabled so results match PyTorch FP32), "fp16" or "int8" (needs calibration
        frames; FP16 is enabled too for the layers INT8 does not cover).
    refittable: build with ``BuilderFlag.REFIT`` (plain REFIT: any new weights of the same shapes).
    workspace_bytes: ``MemoryPoolType.WORKSPACE`` limit in bytes.
    dla_core: run on this DLA core (Jetson); ``gpu_fallback`` lets unsupported layers run on the GPU.
    opt_batch / max_batch: optimisation profile of every input: min batch 1, opt ``opt_batch``, max
        ``max_batch`` (the other dimensions are those of the model contract, ``backend.INPUT_SHAPES``).
    """

    precision: str = "fp16"
    refittable: bool = False
    workspace_bytes: int = 1 << 30
    dla_core: int | None = None
    gpu_fallback: bool = True
    opt_batch: int = 1
    max_batch: int = 1

    def __post_init__(self) -> None:
        where = "engine build options"
        if self.precision not in PRECISIONS:
            raise ConfigError(where, f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.workspace_bytes <= 0:
            raise ConfigError(where, f"workspace_bytes must be > 0, not {self.workspace_bytes}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(where, f"batch profile needs 1 <= opt_batch ({self.opt_batch}) <= max_batch "
                              f"({self.max_batch})")
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise ConfigError(where, f"dla_core must be >= 0, not {self.dla_core}")
            if self.precision == "fp32":
                raise ConfigError(where, "dla_core: DLA runs FP16 or INT8 only, not fp32")
        if self.refittable and self.precision == "int8":
            # Calibration scales are computed from the base weights' activations; after a refit with a
            # region's weights they would be stale, so INT8 engines are built per region instead.
            raise ConfigError(where, "int8 engines cannot be refittable: calibration scales would not match "
                              "the refitted weights; build per-region INT8 engines (refittable=False)")

    def profiles(self, model_name: str) -> dict[str, ShapeRange]:
        """Optimisation profile of ``model_name``: input name → (min, opt, max) shapes."""
        return input_profiles(model_name, self.opt_batch, self.max_batch)


def input_profiles(model_name: str, opt_batch: int = 1, max_batch: int = 1) -> dict[str, ShapeRange]:
    """input name → (min, opt, max) with batch 1 / ``opt_batch`` / ``max_batch`` and the contract's other
    dimensions. Raises BackendError for an unknown model."""
    if model_name not in INPUT_SHAPES:
        raise BackendError(f"unknown model {model_name!r}; known: {', '.join(INPUT_SHAPES)}")
    out: dict[str, ShapeRange] = {}
    for name, shape in INPUT_SHAPES[model_name].items():
        rest = tuple(shape[1:])
        out[name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
    return out


# --------------------------------------------------------------------------------------------- key


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan's validity depends on. ``onnx_hash_kind`` is "bytes" (sha256 of the ONNX file: a
    per-region engine carries that region's weights) or "structure" (sha256 of the graph without initializer
    values: a refittable engine serves any weights of that graph, its weights are replaced by refitting)."""

    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    precision: str
    input_shapes: tuple[tuple[str, ShapeRange], ...]
    refittable: bool = False
    dla_core: int | None = None
    onnx_hash_kind: str = "bytes"
    calibration_sha256: str = ""
    # A DLA engine built to fall back to the GPU runs other layers than one built without; and a plan is tied to
    # the device model, not only its compute capability (every Orin module reports 8.7; TensorRT warns that a
    # plan used on another model of device may fail or run slowly).
    gpu_fallback: bool = True
    device_name: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx_sha256,
            "onnx_hash_kind": self.onnx_hash_kind,
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "input_shapes": {name: [list(d) for d in rng] for name, rng in self.input_shapes},
            "refittable": self.refittable,
            "dla_core": self.dla_core,
            "calibration_sha256": self.calibration_sha256,
            "gpu_fallback": self.gpu_fallback,
            "device_name": self.device_name,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EngineKey:
        """Inverse of ``as_json``; ValueError/KeyError/TypeError on a malformed document."""
        shapes = doc["input_shapes"]
        if not isinstance(shapes, Mapping):
            raise ValueError("input_shapes must be an object")
        ranges = tuple(sorted(
            (str(name), tuple(tuple(int(x) for x in dims) for dims in rng))  # type: ignore[misc]
            for name, rng in shapes.items()
        ))
        for _, rng in ranges:
            if len(rng) != 3:
                raise ValueError("each input shape range must be [min, opt, max]")
        dla = doc.get("dla_core")
        return cls(
            onnx_sha256=str(doc["onnx_sha256"]),
            tensorrt_version=str(doc["tensorrt_version"]),
            compute_capability=str(doc["compute_capability"]),
            precision=str(doc["precision"]),
            input_shapes=ranges,  # type: ignore[arg-type]
            refittable=bool(doc.get("refittable", False)),
            dla_core=None if dla is None else int(dla),
            onnx_hash_kind=str(doc.get("onnx_hash_kind", "bytes")),
            calibration_sha256=str(doc.get("calibration_sha256", "")),
            # required: a plan recorded before they were keyed may be another device's, so it is rebuilt
            gpu_fallback=bool(doc["gpu_fallback"]),
            device_name=str(doc["device_name"]),
        )

    def file_stem(self, label: str) -> str:
        check_label(label)
        stem = f"{label}.{self.precision}"
        if self.refittable:
            stem += ".refit"
        if self.dla_core is not None:
            stem += f".dla{self.dla_core}"
        return stem


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise BackendError(f"engine label {label!r} must be letters, digits, '_', '.', '-' (no path parts)")
    return label


def make_key(onnx_sha256: str, env: DeviceEnv, options: BuildOptions, model_name: str,
             onnx_hash_kind: str = "bytes", calibration_sha256: str = "") -> EngineKey:
    """The key of the engine of ``model_name`` built from a graph with that hash, on ``env``, with
    ``options``."""
    if onnx_hash_kind not in HASH_KINDS:
        raise BackendError(f"onnx_hash_kind {onnx_hash_kind!r} is not one of {', '.join(HASH_KINDS)}")
    shapes = tuple(sorted(options.profiles(model_name).items()))
    return EngineKey(
        onnx_sha256=onnx_sha256,
        tensorrt_version=env.tensorrt_version,
        compute_capability=env.compute_capability,
        precision=options.precision,
        input_shapes=shapes,
        refittable=options.refittable,
        dla_core=options.dla_core,
        onnx_hash_kind=onnx_hash_kind,
        calibration_sha256=calibration_sha256,
        gpu_fallback=options.gpu_fallback,
        device_name=env.device_name,
    )


def engine_label(model_name: str, onnx_sha256: str, refittable: bool) -> str:
    """Cache label shared by the runtime and ``regionadapt engine build`` so that both name an engine alike:
    the architecture's refittable engine is ``<model>-refit`` (one per architecture, whatever the region);
    a per-region engine is content-addressed, ``<model>-<first 16 hex of the ONNX sha256>``."""
    return f"{model_name}-refit" if refittable else f"{model_name}-{onnx_sha256[:16]}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def calibration_digest(frames: Sequence[Mapping[str, np.ndarray]]) -> str:
    """sha256 over the calibration frames (names, shapes, float32 bytes): a new calibration set means a new
    INT8 engine."""
    digest = hashlib.sha256()
    for frame in frames:
        for name in sorted(frame):
            arr = np.ascontiguousarray(frame[name], dtype=np.float32)
            digest.update(json.dumps([name, list(arr.shape)]).encode())
            digest.update(arr.tobytes())
    return digest.hexdigest()


def calibration_cache_path(directory: Path, model_name: str, onnx: bytes,
                           frames: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """Where TensorRT's INT8 calibration table of this graph (weights included) and these frames is kept. The
    builder skips calibration whenever ``read_calibration_cache`` returns a table, and a table is only valid
    for the network and the data it was measured on (TensorRT ``IInt8Calibrator`` docs: recalibrating when
    either changes is the application's job), so the name carries both: one table per model would hand the
    first region's scales to every region."""
    check_label(model_name)
    return directory / (f"{model_name}-{sha256_hex(onnx)[:16]}-{calibration_digest(frames)[:16]}"
                        ".int8-calibration.cache")


def check_calibration_frames(model_name: str, frames: Sequence[Mapping[str, np.ndarray]],
                             options: BuildOptions) -> None:
    """INT8 calibration frames must be non-empty, name every input of the model, have batch 1 and the
    contract's shape, and be finite. BackendError naming the frame and input otherwise."""
    if not frames:
        raise BackendError(f"{model_name}: int8 needs calibration frames (none given)")
    profiles = options.profiles(model_name)
    for i, frame in enumerate(frames):
        missing = sorted(set(profiles) - set(frame))
        if missing:
            raise BackendError(f"{model_name}: calibration frame {i} has no input {', '.join(missing)}")
        for name, (shape, _, _) in profiles.items():
            arr = np.asarray(frame[name])
            if tuple(arr.shape) != tuple(shape):
                raise BackendError(f"{model_name}: calibration frame {i} input {name!r} has shape "
                                   f"{tuple(arr.shape)}, expected {tuple(shape)}")
            if not np.all(np.isfinite(arr)):
                raise BackendError(f"{model_name}: calibration frame {i} input {name!r} is not finite")


# --------------------------------------------------------------------------------------------- errors


def standby_error(model_name: str, stage: str, detail: str) -> BackendError:
    """The BackendError raised when the standby engine of ``model_name`` cannot be prepared; the swap manager
    then keeps the serving runner and reports this text."""
    return BackendError(f"{model_name}: standby engine not prepared ({stage}): {detail}")


@contextlib.contextmanager
def standby_guard(model_name: str, stage: str) -> Iterator[None]:
    """Turns GPU out-of-memory and other device failures raised inside into ``standby_error``.

    torch raises ``torch.cuda.OutOfMemoryError`` (a RuntimeError) when a buffer cannot be allocated; it is
    recognised by class name so that this module does not import torch.
    """
    try:
        yield
    except BackendError:
        raise
    except MemoryError as exc:
        raise standby_error(model_name, stage, f"out of host memory ({exc})") from exc
    except RuntimeError as exc:
        if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
            raise standby_error(model_name, stage, f"out of GPU memory ({_first_line(exc)})") from exc
        raise standby_error(model_name, stage, f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class CacheDecision:
    """Result of ``EngineCache.lookup``: ``load`` with the verified ``plan`` bytes, or rebuild and why."""

    load: bool
    reason: str
    plan_path: Path
    sidecar_path: Path
    plan: bytes | None = field(default=None, repr=False)


class EngineCache:
    """Engine plans in one directory, validated against their sidecar before use. Safe across processes
    (an advisory lock per engine serialises lookups and stores of the same engine)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(self.directory, f"engine cache directory cannot be created ({exc.strerror})") from None

    def paths(self, label: str, key: EngineKey) -> tuple[Path, Path]:
        stem = key.file_stem(label)
        return self.directory / (stem + PLAN_SUFFIX), self.directory / (stem + SIDECAR_SUFFIX)

    # ------------------------------------------------------------------ lookup
    def lookup(self, label: str, key: EngineKey) -> CacheDecision:
        """Decide whether the cached engine for ``label`` can be loaded for ``key``.

        Checked in order: both files exist; sidecar parses; TensorRT version; compute capability; precision,
        input shapes and build options; ONNX sha256; plan size and sha256 as recorded at build time. The
        returned ``plan`` is the very bytes that were hashed (read once), so nothing unverified reaches the
        runtime.
        """
        plan_path, sidecar_path = self.paths(label, key)
        with self._locked(plan_path, shared_ok=True):
            return self._lookup_locked(key, plan_path, sidecar_path)

    def _lookup_locked(self, key: EngineKey, plan_path: Path, sidecar_path: Path) -> CacheDecision:
        def rebuild(reason: str) -> CacheDecision:
            return CacheDecision(False, reason, plan_path, sidecar_path)

        if not plan_path.is_file():
            return rebuild("no cached engine")
        if not sidecar_path.is_file():
            return rebuild(f"no sidecar {sidecar_path.name} for the cached engine (cannot verify it)")
        try:
            doc = strict_parse.load_json_file(sidecar_path, max_bytes=MAX_SIDECAR_BYTES, error=_CacheFileError)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            if doc.get("format") != CACHE_FORMAT:
                return rebuild(f"sidecar format {doc.get('format')!r} != {CACHE_FORMAT}")
            cached = EngineKey.from_json(doc["key"])
            recorded_sha = str(doc["plan"]["sha256"])
            recorded_size = int(doc["plan"]["size"])
        except _CacheFileError as exc:
            return rebuild(f"corrupt sidecar {sidecar_path.name} ({exc.problem})")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return rebuild(f"corrupt sidecar {sidecar_path.name} ({type(exc).__name__}: {exc})")

        if cached.tensorrt_version != key.tensorrt_version:
            return rebuild(f"TensorRT version {cached.tensorrt_version} != {key.tensorrt_version} "
                           "(cached engine vs this runtime)")
        if cached.compute_capability != key.compute_capability:
            return rebuild(f"compute capability {cached.compute_capability} != {key.compute_capability} "
                           "(cached engine vs this GPU)")
        if cached.device_name != key.device_name:
            return rebuild(f"device {cached.device_name!r} != {key.device_name!r} (cached engine vs this GPU: a plan "
                           "is not portable across device models)")
        if cached.precision != key.precision:
            return rebuild(f"precision {cached.precision} != {key.precision}")
        if cached.input_shapes != key.input_shapes:
            return rebuild(f"input shapes changed ({_shapes_text(cached)} != {_shapes_text(key)})")
        if (cached.refittable, cached.dla_core, cached.gpu_fallback) != (key.refittable, key.dla_core,
                                                                          key.gpu_fallback):
            return rebuild(f"build options changed (refittable={cached.refittable}, dla_core={cached.dla_core}, "
                           f"gpu_fallback={cached.gpu_fallback} != refittable={key.refittable}, dla_core="
                           f"{key.dla_core}, gpu_fallback={key.gpu_fallback})")
        if cached.calibration_sha256 != key.calibration_sha256:
            return rebuild("int8 calibration frames changed")
        if (cached.onnx_sha256, cached.onnx_hash_kind) != (key.onnx_sha256, key.onnx_hash_kind):
            return rebuild(f"onnx sha256 changed ({cached.onnx_sha256[:12]}… → {key.onnx_sha256[:12]}…)")

        try:
            # Bounded by the size recorded at build time: a replaced or sparse plan is not read whole.
            plan = safe_read.read_bytes(plan_path, max_bytes=max(recorded_size, 0), error=_CacheFileError)
        except _CacheFileError as exc:
            if "more than the limit" in exc.problem:
                return rebuild(f"corrupt engine file (size/hash mismatch: {plan_path.stat().st_size} bytes, "
                               f"{recorded_size} recorded at build time)")
            return rebuild(f"cached engine unreadable ({exc.problem})")
        except OSError as exc:
            return rebuild(f"cached engine unreadable ({exc.strerror})")
        if len(plan) != recorded_size:
            return rebuild(f"corrupt engine file (size/hash mismatch: {len(plan)} bytes, "
                           f"{recorded_size} recorded at build time)")
        actual_sha = sha256_hex(plan)
        if actual_sha != recorded_sha:
            return rebuild(f"corrupt engine file (size/hash mismatch: sha256 {actual_sha[:12]}… != "
                           f"{recorded_sha[:12]}… recorded at build time)")
        return CacheDecision(True, "cached engine matches", plan_path, sidecar_path, plan)

    # ------------------------------------------------------------------ store / invalidate
    def store(self, label: str, key: EngineKey, plan: bytes, build_seconds: float | None = None) -> Path:
        """Write the plan and its sidecar atomically; returns the plan path."""
        if not plan:
            raise BackendError(f"{label}: refusing to cache an empty engine plan")
        plan_path, sidecar_path = self.paths(label, key)
        sidecar = {
            "format": CACHE_FORMAT,
            "label": label,
            "key": key.as_json(),
            "plan": {"sha256": sha256_hex(plan), "size": len(plan)},
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": None if build_seconds is None else round(float(build_seconds), 3),
        }
        with self._locked(plan_path):
            atomic_write_bytes(plan_path, plan)
            atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        return plan_path

    def invalidate(self, label: str, key: EngineKey, reason: str) -> None:
        """Remove a cached engine that must not be used again (e.g. it failed to deserialize)."""
        plan_path, sidecar_path = self.paths(label, key)
        _LOG.warning("dropping cached engine %s: %s", plan_path.name, reason)
        with self._locked(plan_path):
            for path in (sidecar_path, plan_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    @contextlib.contextmanager
    def _locked(self, plan_path: Path, shared_ok: bool = False) -> Iterator[None]:
        """The plan's cross-process lock. ``shared_ok`` (a lookup): a cache this process cannot write (a
        read-only image of prebuilt engines) is read without it, since no writer can be racing through it; a
        store or an invalidation there fails with the permission error."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, atomic renames remain
            yield
            return
        lock_path = plan_path.with_name(plan_path.name + ".lock")
        try:
            handle = open(lock_path, "a+b")  # noqa: SIM115 - closed below, after the body ran
        except OSError as exc:
            if shared_ok and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                yield
                return
            raise
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _shapes_text(key: EngineKey) -> str:
    return ", ".join(f"{name} {list(rng[0])}..{list(rng[2])}" for name, rng in key.input_shapes)


# --------------------------------------------------------------------------------------------- load or build


@dataclass
class EngineOutcome:
    """How an engine was obtained: ``action`` "cached" (verified plan loaded) or "built" (and why)."""

    label: str
    action: str
    reason: str
    plan_path: Path
    build_s: float | None = None
    deserialize_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "action": self.action, "reason": self.reason,
                "plan_path": str(self.plan_path), "build_s": self.build_s, "deserialize_s": self.deserialize_s}


def ensure_plan(cache: EngineCache, label: str, key: EngineKey, build: Callable[[], bytes | None],
                clock: Callable[[], float] = time.perf_counter) -> tuple[bytes, EngineOutcome]:
    """Verified cached plan bytes, or build (``build()`` → plan bytes), store and return them.

    ``build`` returning None or empty bytes (TensorRT's ``build_serialized_network`` returns None when it runs
    out of GPU memory or meets an unsupported layer) raises BackendError; nothing is cached then.
    """
    decision = cache.lookup(label, key)
    if decision.load:
        assert decision.plan is not None
        return decision.plan, EngineOutcome(label, "cached", decision.reason, decision.plan_path)
    return _build_and_store(cache, label, key, build, decision.reason, clock)


def _build_and_store(cache: EngineCache, label: str, key: EngineKey, build: Callable[[], bytes | None],
                     reason: str, clock: Callable[[], float]) -> tuple[bytes, EngineOutcome]:
    _LOG.info("building engine %s: %s", label, reason)
    t0 = clock()
    plan = build()
    build_s = clock() - t0
    if not plan:
        raise BackendError(f"{label}: TensorRT engine build failed (the builder returned no plan: out of GPU "
                           f"memory, workspace too small or an unsupported layer) — rebuilt because {reason}")
    plan = bytes(plan)
    plan_path = cache.store(label, key, plan, build_s)
    return plan, EngineOutcome(label, "built", reason, plan_path, build_s=build_s)


def load_or_build(cache: EngineCache, label: str, key: EngineKey, build: Callable[[], bytes | None],
                  deserialize: Callable[[bytes], T | None],
                  clock: Callable[[], float] = time.perf_counter) -> tuple[T, bytes, EngineOutcome]:
    """The engine for ``key``: the cached plan if it verifies and deserializes, else a fresh build.

    A verified plan that still fails to deserialize (``deserialize`` returns None, as
    ``Runtime.deserialize_cuda_engine`` does) is dropped from the cache and rebuilt once; a freshly built
    plan that fails to deserialize raises BackendError. Returns (engine, plan bytes, outcome).
    """
    plan, outcome = ensure_plan(cache, label, key, build, clock)
    t0 = clock()
    engine = deserialize(plan)
    outcome.deserialize_s = clock() - t0
    if engine is not None:
        return engine, plan, outcome
    if outcome.action == "built":
        raise BackendError(f"{label}: freshly built TensorRT engine could not be deserialized "
                           "(out of GPU memory?)")
    reason = "cached engine failed to deserialize"
    cache.invalidate(label, key, reason)
    plan, outcome = _build_and_store(cache, label, key, build, reason, clock)
    t0 = clock()
    engine = deserialize(plan)
    outcome.deserialize_s = clock() - t0
    if engine is None:
        raise BackendError(f"{label}: freshly built TensorRT engine could not be deserialized "
                           "(out of GPU memory?)")
    return engine, plan, outcome
