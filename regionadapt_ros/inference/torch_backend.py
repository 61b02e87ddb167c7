"""PyTorch backend: the reference implementation (CPU, and CUDA where available).

On CUDA each runner owns a stream and static input/output buffers, and (``cuda_graphs``, the default) captures
its forward once as a CUDA graph that every frame replays: a batch-1 forward of these networks is some forty
small kernels whose launch cost exceeds their run time, and a replay launches them as one. Capture happens in
``prepare``, i.e. on the swap loader's thread while another runner serves, so it uses the "thread_local"
capture mode (the serving thread's CUDA calls must not invalidate, nor be refused by, the capture).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from regionadapt_ros.inference.backend import (
    INPUT_SHAPES,
    IO,
    BackendError,
    InferenceBackend,
    ModelRunner,
    NamedWeights,
)
from regionadapt_ros.models.registry import build_model, load_named_weights


class TorchRunner(ModelRunner):
    def __init__(self, model_name: str, module: torch.nn.Module, device: torch.device,
                 cuda_graph: bool = False) -> None:
        self.model_name = model_name
        self.input_names, self.output_names = IO[model_name]
        self.module: torch.nn.Module | None = module
        self.device = device
        self.stream: Any = None
        self.graph: Any = None
        self._static_in: dict[str, torch.Tensor] = {}
        self._static_out: dict[str, torch.Tensor] = {}
        if device.type == "cuda":
            self.stream = torch.cuda.Stream(device=device)
            self._static_in = {n: torch.zeros(INPUT_SHAPES[model_name][n], device=device)
                               for n in self.input_names}
            if cuda_graph:
                self._capture()

    def _capture(self) -> None:
        assert self.module is not None
        args = [self._static_in[n] for n in self.input_names]
        with torch.no_grad():
            # Warm up on the side stream first: cuDNN/cuBLAS handles and workspaces are created lazily, and
            # creating them inside a capture is an error. The buffers were zeroed on the current stream.
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                for _ in range(3):
                    self.module(*args)
            self.stream.synchronize()
            # capture_begin/end rather than the torch.cuda.graph context manager: that one also synchronises
            # the whole device, runs gc.collect() (holding the GIL the serving thread needs) and empties the
            # allocator's cache (so the serving stream's next allocations would be synchronising cudaMallocs).
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(self.stream):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    out = self.module(*args)
                finally:
                    graph.capture_end()
        self.graph = graph
        self._static_out = {n: out[n] for n in self.output_names}

    def _forward_cuda(self, args: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
        """The forward of ``args`` (host or device tensors, in input order) on ``self.stream``, which must be
        current. Returns the outputs and whether they are the graph's static buffers, which the next frame
        overwrites. Inputs of the captured shapes go through the static buffers (and the graph); another batch
        size runs eagerly on new buffers."""
        assert self.module is not None
        if all(tuple(a.shape) == tuple(self._static_in[n].shape) for n, a in zip(self.input_names, args,
                                                                                   strict=True)):
            for n, a in zip(self.input_names, args, strict=True):
                self._static_in[n].copy_(a)
            if self.graph is not None:
                self.graph.replay()
                return self._static_out, True
            return self.module(*[self._static_in[n] for n in self.input_names]), False
        return self.module(*[a.to(self.device, torch.float32) for a in args]), False

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.module is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=np.float32)) for n in self.input_names]
        if self.stream is None:
            with torch.inference_mode():
                out = self.module(*args)
            return {n: out[n].detach().numpy() for n in self.output_names}
        with torch.no_grad(), torch.cuda.stream(self.stream):
            out, _ = self._forward_cuda(args)
            # .cpu() on this stream waits for the forward; the static outputs are then free for the next frame
            return {n: out[n].cpu().numpy() for n in self.output_names}

    def run_torch(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CUDA tensors in → CUDA tensors out (preprocessing and postprocessing stay on the GPU). Ordered after
        the caller's current stream; the caller's current stream waits for the result."""
        if self.module is None:
            raise BackendError(f"{self.model_name}: runner is closed")
        if self.stream is None:
            raise BackendError(f"{self.model_name}: run_torch needs a CUDA device (this runner is on CPU)")
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.no_grad(), torch.cuda.stream(self.stream):
            out, static = self._forward_cuda([inputs[n] for n in self.input_names])
            # static outputs are overwritten by the next frame: hand out copies
            result = {n: out[n].clone() if static else out[n] for n in self.output_names}
        caller.wait_stream(self.stream)
        for t in result.values():
            t.record_stream(caller)  # allocated on self.stream, used on the caller's
        return result

    def close(self) -> None:
        if self.stream is not None and self.module is not None:
            self.stream.synchronize()  # nothing of ours may still run when the buffers go back to the pool
        self.module = None
        self.graph = None
        self._static_in, self._static_out = {}, {}


class TorchBackend(InferenceBackend):
    """Runs the PyTorch modules. ``device`` is "cpu", "cuda" or "cuda:N"; ``cuda_graphs``: on CUDA, capture
    each runner's forward as a CUDA graph (eager otherwise)."""

    name = "torch"

    def __init__(self, device: str = "cpu", threads: int | None = None, cuda_graphs: bool = True) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch backend: device {device!r} requested but CUDA is not available")
        self.device = torch.device(device)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        if threads:
            torch.set_num_threads(threads)

    def prepare(self, model_name: str, weights: NamedWeights) -> ModelRunner:
        module = build_model(model_name)
        try:
            load_named_weights(module, dict(weights))
        except RuntimeError as exc:
            raise BackendError(f"{model_name}: weights do not fit the architecture: {exc}") from exc
        module = module.to(self.device).eval()
        try:
            return TorchRunner(model_name, module, self.device, cuda_graph=self.cuda_graphs)
        except torch.cuda.OutOfMemoryError as exc:
            raise BackendError(f"{model_name}: out of GPU memory while preparing the runner: {exc}") from exc
        except RuntimeError as exc:
            if self.device.type != "cuda":
                raise
            raise BackendError(f"{model_name}: could not prepare the CUDA runner: {exc}") from exc

    def describe(self) -> str:
        if self.device.type == "cuda":
            graphs = ", CUDA graphs" if self.cuda_graphs else ""
            return f"torch cuda ({torch.cuda.get_device_name(self.device)}{graphs})"
        return f"torch cpu ({torch.get_num_threads()} threads)"
