"""TensorRT backend: the only module that touches ``tensorrt`` (imported lazily; BackendError when missing).

Everything that can be decided without TensorRT lives in tested pure modules that this one calls:
``engine_cache`` (cache keys, sidecars, load-vs-rebuild decisions, load-or-build with self-healing, error
wording), ``refit`` (bundle names → refitter names, validation before an engine is touched, region ONNX,
structure hash). What is left here is the thin layer of TensorRT calls, written against the TensorRT 10
Python API. It cannot be run where TensorRT is absent; ``test/test_tensorrt_gpu.py`` runs it where it is.

API facts this code relies on (TensorRT 10.x Python bindings; sources: the bindings
``python/src/infer/pyCore.cpp``, ``pyFoundationalTypes.cpp``, ``pyInt8.cpp``, ``python/src/parsers/pyOnnx.cpp``
and docstrings ``python/docstrings/infer/pyCoreDoc.h``/``pyInt8Doc.h`` of NVIDIA/TensorRT at tags v10.3.0 and
v10.8.0; the NVIDIA TensorRT Python API pages "Builder", "IExecutionContext", "Refitter"; the developer guide
pages "Refitting an Engine" and "Python Migration Patterns for TensorRT 10.x"; sample
``samples/python/engine_refit_onnx_bidaf/build_and_refit_engine.py``):

Build
- ``trt.Builder(logger)``; ``builder.create_network(flags=0)``: TRT 10 networks are always explicit-batch
  (``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` is deprecated and ignored), so the flags are 0.
- ``trt.OnnxParser(network, logger)``; ``parser.parse(model_bytes) -> bool``; on failure
  ``parser.num_errors`` and ``parser.get_error(i)``.
- ``config = builder.create_builder_config()``;
  ``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)``;
  ``config.set_flag(trt.BuilderFlag.FP16 | INT8 | REFIT | GPU_FALLBACK)``, ``config.clear_flag(BuilderFlag.TF32)``
  (TF32 is "enabled by default" for FLOAT tensors; cleared for fp32 so results match PyTorch FP32).
  ``BuilderFlag.REFIT``: "Enable building a refittable engine"; ``REFIT_IDENTICAL``: "Different weights
  during refits yield unpredictable behavior", hence plain REFIT here.
- DLA: ``config.default_device_type = trt.DeviceType.DLA``, ``config.DLA_core = n``,
  ``builder.num_DLA_cores``; GPU fallback with ``BuilderFlag.GPU_FALLBACK``.
- profile: ``profile = builder.create_optimization_profile()``;
  ``profile.set_shape(input_name, min, opt, max)`` (required for every dynamic input; the exported graphs
  have a dynamic batch axis); ``config.add_optimization_profile(profile)``.
- INT8 (deprecated since 10.1 in favour of explicit quantization, still available in 10.x):
  ``config.int8_calibrator = calibrator``; ``config.set_calibration_profile(profile)`` "must be set if int8
  calibration is used ... for a network with runtime dimensions". A ``trt.IInt8EntropyCalibrator2`` subclass
  calls ``trt.IInt8EntropyCalibrator2.__init__(self)`` and implements ``get_batch_size()`` (pure virtual),
  ``get_batch(names) -> list[int] | None`` (device pointers in the order of ``names``; None/[] = no more
  data), ``read_calibration_cache() -> bytes | None``, ``write_calibration_cache(cache)``.
- ``builder.build_serialized_network(network, config)`` returns an ``IHostMemory`` (buffer protocol, so
  ``bytes(plan)`` works) or None on failure.
- TensorRT 11 removed ``BuilderFlag.FP16``/``INT8`` and ``int8_calibrator`` (strongly typed networks); this
  module raises a BackendError naming that rather than guessing.

Runtime
- ``trt.Runtime(logger).deserialize_cuda_engine(buffer)`` returns the ``ICudaEngine`` "or None if it could
  not be deserialized" (the engine keeps its runtime alive); ``runtime.DLA_core`` selects the DLA core of a
  DLA engine. ``engine.refittable``.
- ``engine.num_io_tensors``, ``engine.get_tensor_name(i)``, ``engine.get_tensor_mode(name)`` →
  ``trt.TensorIOMode.INPUT``/``OUTPUT``, ``engine.get_tensor_shape(name)`` (-1 for dynamic axes),
  ``engine.get_tensor_dtype(name)`` (``trt.nptype`` maps it to numpy).
- ``context = engine.create_execution_context()`` (None when its device memory cannot be allocated);
  ``context.set_input_shape(name, shape) -> bool``; ``context.get_tensor_shape(name)`` gives output shapes
  once the input shapes are set; ``context.set_tensor_address(name, int_pointer) -> bool``;
  ``context.execute_async_v3(stream_handle) -> bool`` (a non-default stream: the default stream makes
  TensorRT add device synchronisations). Registered memory must not be modified before the stream is
  synchronised.

Refit
- ``trt.Refitter(engine, logger)``; ``refitter.get_all_weights() -> list[str]``;
  ``refitter.set_named_weights(name, trt.Weights(np_array)) -> bool`` (rejected for an unknown name or a
  size/dtype that differs from ``get_weights_prototype(name)``; ``trt.Weights(ndarray)`` references the
  array, which must be C-contiguous and stay alive until the refit returns);
  ``refitter.get_missing_weights() -> list[str]`` (weights TensorRT combined with the ones set);
  ``refitter.refit_cuda_engine_async(stream_handle) -> bool`` ("undefined if the engine has pending enqueued
  work on a different stream"; host weights may be released once it returns; contexts stay valid).
  For ONNX-parsed networks the weight names are the ONNX initializer names (the parser names them with
  ``set_weights_name``).
- Note from the TensorRT 11.3 "Refitting an Engine" page: with ``REFIT`` a GEMM bias may be dropped (a known
  issue there); the GPU test compares refitted outputs against PyTorch, which would catch it.

Device buffers are torch CUDA tensors and streams are ``torch.cuda.Stream`` (``stream.cuda_stream`` is the
handle): one CUDA context shared with the pre/post-processing, no pycuda (DESIGN.md §6).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.inference import refit as refit_mod
from regionadapt_ros.inference.backend import (
    INPUT_SHAPES,
    IO,
    BackendError,
    InferenceBackend,
    ModelRunner,
    NamedWeights,
)
from regionadapt_ros.inference.engine_cache import (
    BuildOptions,
    DeviceEnv,
    EngineCache,
    EngineOutcome,
    calibration_cache_path,
    calibration_digest,
    check_calibration_frames,
    compute_capability_str,
    engine_label,
    load_or_build,
    make_key,
    sha256_hex,
    standby_error,
    standby_guard,
)

_LOG = logging.getLogger("regionadapt_ros.tensorrt")

CalibrationFrames = Sequence[Mapping[str, np.ndarray]]


def import_tensorrt():
    """The ``tensorrt`` module, or BackendError saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"tensorrt is not importable ({exc}); on Jetson it ships with JetPack, on x86 "
                           "`pip install tensorrt` (TensorRT 10.x)") from exc
    return tensorrt


def _torch_cuda(device: str):
    import torch

    if not torch.cuda.is_available():
        raise BackendError(f"TensorRT backend needs a CUDA GPU: torch.cuda.is_available() is False "
                           f"(device {device!r})")
    return torch, torch.device(device)


def device_env(device: str = "cuda:0") -> DeviceEnv:
    """TensorRT version and GPU compute capability of this machine (what cached plans are checked against)."""
    trt = import_tensorrt()
    torch, dev = _torch_cuda(device)
    major, minor = torch.cuda.get_device_capability(dev)
    return DeviceEnv(str(trt.__version__), compute_capability_str(major, minor), torch.cuda.get_device_name(dev))


def make_logger(trt, level: str = "warning"):
    """A ``trt.ILogger`` that forwards to Python logging and keeps the last errors for BackendError texts."""
    # Severity is an arithmetic pybind enum: INTERNAL_ERROR=0 < ERROR < WARNING < INFO < VERBOSE=4.
    error, warning = int(trt.ILogger.ERROR), int(trt.ILogger.WARNING)
    threshold = {"error": error, "warning": warning, "info": int(trt.ILogger.INFO),
                 "verbose": int(trt.ILogger.VERBOSE)}[level]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._lock = threading.Lock()

        def log(self, severity, msg) -> None:
            level = int(severity)
            if level <= error:
                with self._lock:
                    self.errors = [*self.errors[-4:], str(msg)]
            if level > threshold:
                return
            py_level = logging.ERROR if level <= error else (logging.WARNING if level == warning else logging.DEBUG)
            _LOG.log(py_level, "TensorRT: %s", msg)

        def last_errors(self) -> str:
            with self._lock:
                return " | ".join(self.errors[-3:]) or "no TensorRT error logged"

    return _Logger()


# --------------------------------------------------------------------------------------------- build


def _make_calibrator(trt, torch, device, model_name: str, frames: CalibrationFrames,
                     cache_path: Path | None):
    """An ``IInt8EntropyCalibrator2`` feeding ``frames`` (batch 1 each) through torch CUDA tensors."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            first = frames[0]
            # One device buffer per input, allocated once and refilled per batch.
            self.buffers = {name: torch.empty(tuple(np.shape(first[name])), dtype=torch.float32, device=device)
                            for name in first}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= len(frames):
                return None
            frame = frames[self.index]
            self.index += 1
            for name in names:
                host = torch.from_numpy(np.ascontiguousarray(frame[name], dtype=np.float32))
                self.buffers[name].copy_(host)
            torch.cuda.synchronize(device)  # the builder reads the buffers on its own stream
            return [int(self.buffers[name].data_ptr()) for name in names]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_path is not None:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                cache_path.write_bytes(bytes(cache))

    _LOG.info("%s: INT8 calibration over %d frames", model_name, len(frames))
    return EntropyCalibrator()


def build_serialized_engine(onnx_model: bytes, model_name: str, options: BuildOptions, *, logger=None,
                            calibration_frames: CalibrationFrames | None = None,
                            calibration_cache: Path | None = None, device: str = "cuda:0") -> bytes:
    """Build a plan from ONNX bytes with ``options`` (precision, REFIT, workspace, DLA, profile).
    BackendError with TensorRT's own error text when parsing or building fails."""
    trt = import_tensorrt()
    torch, dev = _torch_cuda(device)
    logger = logger or make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{model_name}: TensorRT could not parse the ONNX graph: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_bytes))
    if options.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif not hasattr(trt.BuilderFlag, "FP16"):
        raise BackendError(f"{model_name}: TensorRT {trt.__version__} has no BuilderFlag.FP16 (TensorRT 11 "
                           "networks are strongly typed); use precision fp32 or an FP16 ONNX export")
    else:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise BackendError(f"{model_name}: DLA core {options.dla_core} requested but this device has "
                               f"{builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    profile = builder.create_optimization_profile()
    for name, (shape_min, shape_opt, shape_max) in options.profiles(model_name).items():
        profile.set_shape(name, shape_min, shape_opt, shape_max)
    config.add_optimization_profile(profile)

    calibrator = None
    if options.precision == "int8":
        frames = list(calibration_frames or [])
        check_calibration_frames(model_name, frames, options)
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, torch, dev, model_name, frames, calibration_cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)

    with torch.cuda.device(dev):
        plan = builder.build_serialized_network(network, config)
    del calibrator
    if plan is None:
        last = logger.last_errors() if hasattr(logger, "last_errors") else ""
        raise BackendError(f"{model_name}: TensorRT engine build failed (build_serialized_network returned None:"
                           f" out of GPU memory, workspace too small or an unsupported layer): {last}")
    return bytes(plan)


# --------------------------------------------------------------------------------------------- runner


class TensorRTRunner(ModelRunner):
    """One engine + execution context with I/O buffers allocated once as torch CUDA tensors, run on the
    runner's own ``torch.cuda.Stream``. ``prepare_stats`` records how it was prepared (refit/deserialize)."""

    def __init__(self, model_name: str, trt, engine, logger, device, shapes: Mapping[str, tuple[int, ...]]) -> None:
        import torch

        self.model_name = model_name
        self.input_names, self.output_names = IO[model_name]
        self.prepare_stats: dict[str, Any] = {}
        self._trt = trt
        self._torch = torch
        self._logger = logger
        self.device = device
        self.engine = engine
        self.context = None
        self.stream = None
        with standby_guard(model_name, "create execution context"):
            self.stream = torch.cuda.Stream(device=device)
            self.context = engine.create_execution_context()
        if self.context is None:
            raise standby_error(model_name, "create execution context", "create_execution_context returned None "
                                "(out of GPU memory?)")
        io = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            io[name] = engine.get_tensor_mode(name)
        inputs = {n for n, mode in io.items() if mode == trt.TensorIOMode.INPUT}
        outputs = {n for n, mode in io.items() if mode == trt.TensorIOMode.OUTPUT}
        if inputs != set(self.input_names) or outputs != set(self.output_names):
            raise BackendError(f"{model_name}: engine I/O {sorted(inputs)} → {sorted(outputs)} does not match the "
                               f"model contract {list(self.input_names)} → {list(self.output_names)}")
        self._dev_in: dict[str, Any] = {}
        self._dev_out: dict[str, Any] = {}
        self._host_in: dict[str, Any] = {}
        self._host_out: dict[str, Any] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._bind(dict(shapes))

    def _torch_dtype(self, name: str):
        np_dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        return self._torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype

    def _bind(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Set input shapes, allocate device + pinned host buffers once per shape, register addresses."""
        torch = self._torch
        with standby_guard(self.model_name, "allocate I/O buffers"), torch.cuda.device(self.device):
            for name in self.input_names:
                shape = tuple(int(d) for d in shapes[name])
                if not self.context.set_input_shape(name, shape):
                    raise BackendError(f"{self.model_name}: input {name!r} shape {shape} is outside the engine's "
                                       "optimisation profile")
                dtype = self._torch_dtype(name)
                self._dev_in[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self._host_in[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
                self._shapes[name] = shape
            for name in self.output_names:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise BackendError(f"{self.model_name}: output {name!r} shape {shape} unresolved after setting "
                                       "the input shapes")
                dtype = self._torch_dtype(name)
                self._dev_out[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self._host_out[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
            for name, tensor in (*self._dev_in.items(), *self._dev_out.items()):
                if not self.context.set_tensor_address(name, int(tensor.data_ptr())):
                    raise BackendError(f"{self.model_name}: set_tensor_address({name!r}) was refused")

    def _ensure_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        if any(tuple(shapes[n]) != self._shapes[n] for n in self.input_names):
            self.stream.synchronize()  # the old buffers may still be in use by the last enqueue
            self._bind(shapes)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.model_name}: execute_async_v3 failed: {self._last_errors()}")

    def _last_errors(self) -> str:
        return self._logger.last_errors() if hasattr(self._logger, "last_errors") else "see the TensorRT log"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host float32 arrays in → host arrays out; the stream is synchronised before returning."""
        if self.context is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        torch = self._torch
        arrays = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in self.input_names}
        self._ensure_shapes({n: a.shape for n, a in arrays.items()})
        with torch.cuda.stream(self.stream):
            for name, arr in arrays.items():
                self._host_in[name].copy_(torch.from_numpy(arr))
                self._dev_in[name].copy_(self._host_in[name], non_blocking=True)
            self._enqueue()
            for name in self.output_names:
                self._host_out[name].copy_(self._dev_out[name], non_blocking=True)
        self.stream.synchronize()
        return {n: self._host_out[n].numpy().copy() for n in self.output_names}

    def run_torch(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """CUDA tensors in → new CUDA tensors out, without a host round trip (preprocessing can stay on the
        GPU). Ordered after the caller's current stream; the caller's current stream waits for the result."""
        if self.context is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        torch = self._torch
        self._ensure_shapes({n: tuple(inputs[n].shape) for n in self.input_names})
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            for name in self.input_names:
                self._dev_in[name].copy_(inputs[name], non_blocking=True)
            self._enqueue()
            outs = {n: self._dev_out[n].clone() for n in self.output_names}
        caller.wait_stream(self.stream)
        for tensor in outs.values():
            tensor.record_stream(caller)  # the allocator must not reuse them before the caller is done
        return outs

    def refit(self, plan: refit_mod.RefitPlan, base_values: Mapping[str, np.ndarray],
              initializers: Mapping[str, refit_mod.InitializerSpec]) -> float:
        """Refit this (standby) engine with ``plan`` on the runner's own stream; returns seconds taken.
        The plan was validated before the engine was created; TensorRT's own refusals raise BackendError."""
        trt = self._trt
        if not self.engine.refittable:
            raise BackendError(f"{self.model_name}: cached engine is not refittable (built without REFIT)")
        t0 = time.perf_counter()
        refitter = trt.Refitter(self.engine, self._logger)
        refittable = set(refitter.get_all_weights())
        unknown = sorted(set(plan.from_bundle) - refittable)
        if unknown:
            raise refit_mod.RefitError(self.model_name, [(n, "is not a refittable weight of this engine (TensorRT "
                                                             "folded it into a constant)") for n in unknown])
        held = []  # trt.Weights reference the numpy memory: keep both alive until the refit has run
        # Base values only where the engine can take them; the others stay as built.
        for name, arr in ((n, a) for n, a in plan.weights.items() if n in refittable):
            weights = trt.Weights(arr)
            held.append((arr, weights))
            if not refitter.set_named_weights(name, weights):
                raise refit_mod.RefitError(self.model_name, [(name, f"refused by the TensorRT refitter "
                                                                    f"({self._last_errors()})")])
        missing = list(refitter.get_missing_weights())
        if missing:
            extra = refit_mod.fill_missing(plan, missing, base_values, initializers)
            for name, arr in extra.items():
                weights = trt.Weights(arr)
                held.append((arr, weights))
                if not refitter.set_named_weights(name, weights):
                    raise refit_mod.RefitError(self.model_name, [(name, "refused by the TensorRT refitter")])
            still = list(refitter.get_missing_weights())
            if still:
                raise refit_mod.RefitError(self.model_name, [(n or "<unnamed>", "still missing for the refit")
                                                             for n in still])
        with standby_guard(self.model_name, "refit"):
            ok = refitter.refit_cuda_engine_async(self.stream.cuda_stream)
            self.stream.synchronize()
        del held
        if not ok:
            raise standby_error(self.model_name, "refit", f"refit_cuda_engine_async returned False "
                                f"({self._last_errors()})")
        return time.perf_counter() - t0

    def close(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None and getattr(self, "context", None) is not None:
            try:
                stream.synchronize()
            except Exception:
                pass
        self.context = None
        self.engine = None
        self._dev_in, self._dev_out, self._host_in, self._host_out = {}, {}, {}, {}


# --------------------------------------------------------------------------------------------- backend


class TensorRTBackend(InferenceBackend):
    """InferenceBackend on TensorRT engines from the engine cache.

    refittable=True: one REFIT engine per architecture (cached as ``<model>-refit``); ``prepare`` deserializes
    a standby engine from the in-memory verified plan and refits it with the region's weights on the runner's
    own stream. refittable=False: ``prepare`` builds the region's ONNX (base graph + weights), and loads or
    builds its content-addressed engine. ``onnx_models``: model → base graph bytes/path (default: the
    reference architecture exported by ``models.export``). ``runner.prepare_stats`` and ``last_prepare_stats``
    record the path taken and refit/deserialize/build seconds.
    """

    name = "tensorrt"

    def __init__(self, cache: EngineCache | str | Path | None = None, precision: str = "fp16",
                 refittable: bool = True, *, onnx_models: Mapping[str, bytes | str | Path] | None = None,
                 workspace_bytes: int = 1 << 30, dla_core: int | None = None, gpu_fallback: bool = True,
                 max_batch: int = 1, device: str = "cuda:0",
                 calibration_frames: Mapping[str, CalibrationFrames] | None = None,
                 log_level: str = "warning") -> None:
        from regionadapt_ros.inference.engine_cache import default_cache_dir

        self.options = BuildOptions(precision=precision, refittable=refittable, workspace_bytes=workspace_bytes,
                                    dla_core=dla_core, gpu_fallback=gpu_fallback, max_batch=max_batch)
        self._trt = import_tensorrt()
        self._torch, self.device = _torch_cuda(device)
        self.env = device_env(device)
        self.cache = cache if isinstance(cache, EngineCache) else EngineCache(cache or default_cache_dir())
        self.logger = make_logger(self._trt, log_level)
        self.runtime = self._trt.Runtime(self.logger)
        if dla_core is not None:
            self.runtime.DLA_core = int(dla_core)  # the core DLA engines are deserialized onto
        self.calibration_frames = dict(calibration_frames or {})
        self._lock = threading.Lock()
        self._graphs: dict[str, bytes] = {}
        self._initializers: dict[str, dict[str, refit_mod.InitializerSpec]] = {}
        self._base_values: dict[str, dict[str, np.ndarray]] = {}
        self._refit_plans: dict[str, bytes] = {}
        self.engine_outcomes: dict[str, EngineOutcome] = {}
        self.last_prepare_stats: dict[str, Any] = {}
        for model_name, src in (onnx_models or {}).items():
            self.set_graph(model_name, src)

    # ------------------------------------------------------------------ graphs
    def set_graph(self, model_name: str, src: bytes | str | Path) -> None:
        data = refit_mod.onnx_bytes(src)
        with self._lock:
            self._graphs[model_name] = data
            self._initializers[model_name] = refit_mod.graph_initializers(data)
            self._base_values[model_name] = refit_mod.initializer_values(data)
            self._refit_plans.pop(model_name, None)

    def _graph(self, model_name: str) -> bytes:
        if model_name not in IO:
            raise BackendError(f"unknown model {model_name!r}; known: {', '.join(IO)}")
        if model_name not in self._graphs:
            from regionadapt_ros.models.export import export_onnx_bytes

            self.set_graph(model_name, export_onnx_bytes(model_name))
        return self._graphs[model_name]

    # ------------------------------------------------------------------ engines
    def _deserializer(self, model_name: str) -> Callable[[bytes], Any]:
        def deserialize(plan: bytes):
            # One Runtime, used by the loader thread; the lock keeps a second caller from racing it.
            with self._lock, standby_guard(model_name, "deserialize"):
                return self.runtime.deserialize_cuda_engine(plan)
        return deserialize

    def _builder(self, onnx_model: bytes, model_name: str) -> Callable[[], bytes]:
        def build() -> bytes:
            with standby_guard(model_name, "engine build"):
                return build_serialized_engine(
                    onnx_model, model_name, self.options, logger=self.logger,
                    calibration_frames=self.calibration_frames.get(model_name),
                    calibration_cache=calibration_cache_path(self.cache.directory, model_name, onnx_model,
                                                             self.calibration_frames.get(model_name, [])),
                    device=str(self.device))
        return build

    def _key(self, model_name: str, onnx_sha: str, hash_kind: str):
        calib = ""
        if self.options.precision == "int8":
            calib = calibration_digest(self.calibration_frames.get(model_name, []))
        return make_key(onnx_sha, self.env, self.options, model_name, hash_kind, calib)

    def standby_refit_engine(self, model_name: str) -> tuple[Any, float]:
        """A fresh engine of the architecture's refittable plan, and the seconds the deserialization took.

        The first call per model goes through the cache (verified plan, or build and store; a cached plan
        that fails to deserialize is dropped and rebuilt); later calls deserialize the verified plan bytes
        kept in memory, which is the standby engine's "clone".
        """
        deserialize = self._deserializer(model_name)
        with self._lock:
            plan = self._refit_plans.get(model_name)
        if plan is None:
            graph = self._graph(model_name)
            sha = refit_mod.onnx_structure_sha256(graph)
            label = engine_label(model_name, sha, refittable=True)
            key = self._key(model_name, sha, "structure")
            engine, plan, outcome = load_or_build(self.cache, label, key, self._builder(graph, model_name),
                                                  deserialize)
            _LOG.info("%s engine %s: %s", outcome.action, label, outcome.reason)
            with self._lock:
                self._refit_plans[model_name] = plan
                self.engine_outcomes[model_name] = outcome
            return engine, float(outcome.deserialize_s or 0.0)
        t0 = time.perf_counter()
        engine = deserialize(plan)
        seconds = time.perf_counter() - t0
        if engine is None:
            raise standby_error(model_name, "deserialize", f"deserialize_cuda_engine returned None "
                                f"({self.logger.last_errors()})")
        return engine, seconds

    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        graph = self._graph(model_name)  # BackendError for an unknown model
        shapes = INPUT_SHAPES[model_name]
        initializers = self._initializers[model_name]
        base_values = self._base_values[model_name]
        stats: dict[str, Any] = {"model": model_name, "precision": self.options.precision}
        t_start = time.perf_counter()
        if self.options.refittable:
            # Validate before any engine exists: a refused bundle never touches the GPU.
            plan = refit_mod.plan_refit(model_name, weights, initializers, base_values)
            engine, stats["deserialize_s"] = self.standby_refit_engine(model_name)
            runner = TensorRTRunner(model_name, self._trt, engine, self.logger, self.device, shapes)
            try:
                stats["refit_s"] = runner.refit(plan, base_values, initializers)
            except BaseException:
                runner.close()
                raise
            stats["path"] = "refit"
            outcome = self.engine_outcomes.get(model_name)
            stats["engine"] = outcome.as_dict() if outcome is not None else None
        else:
            region_onnx = refit_mod.onnx_with_weights(graph, weights, model_name)
            sha = sha256_hex(region_onnx)
            label = engine_label(model_name, sha, refittable=False)
            key = self._key(model_name, sha, "bytes")
            engine, _, outcome = load_or_build(self.cache, label, key, self._builder(region_onnx, model_name),
                                               self._deserializer(model_name))
            runner = TensorRTRunner(model_name, self._trt, engine, self.logger, self.device, shapes)
            stats["path"] = "deserialize" if outcome.action == "cached" else "build+deserialize"
            stats["deserialize_s"] = outcome.deserialize_s
            stats["build_s"] = outcome.build_s
            stats["engine"] = outcome.as_dict()
        stats["prepare_s"] = time.perf_counter() - t_start
        runner.prepare_stats = stats
        self.last_prepare_stats = stats
        _LOG.info("%s: standby engine ready by %s in %.1f ms (%s)", model_name, stats["path"],
                  stats["prepare_s"] * 1e3, ", ".join(f"{k}={v * 1e3:.1f} ms" for k, v in stats.items()
                                                       if k.endswith("_s") and isinstance(v, float)))
        return runner

    def describe(self) -> str:
        mode = "refit" if self.options.refittable else "per-region engines"
        return (f"tensorrt {self.env.tensorrt_version} {self.options.precision} {mode} on "
                f"{self.env.device_name} (compute capability {self.env.compute_capability})")
