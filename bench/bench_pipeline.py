"""Frame pipeline overhead and backend comparison, measured side by side in one run (CPU).

Prints:
- frame pipeline time / bare model forward time, same backend (ONNX Runtime), same sessions and same input
  tensors (goal <= 1.15): what the pipeline adds around the two forward passes (weight-set lookup, control
  mapping, decoding, timing);
- the whole frame from an Image + PointCloud2 message (conversion + preprocessing + inference + control) /
  bare forward, for information;
- ONNX Runtime vs PyTorch eager, perception + decision, batch 1 (goal: ONNX Runtime >= 1.3x faster).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from regionadapt_ros.core.msgconv import build_image, build_pointcloud2, rosbags_types, rosbags_typestore
from regionadapt_ros.core.preprocess import bev_grid, image_tensor
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights
from regionadapt_ros.inference.torch_backend import TorchBackend
from regionadapt_ros.models.registry import build_model, named_weights
from regionadapt_ros.pipeline import FramePipeline

REPEATS = int(os.environ.get("BENCH_REPEATS", "400"))


def interleaved_ms(fns: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Median time of each function, run in alternation so that machine noise hits all of them alike."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    torch.manual_seed(0)
    weights = {m: named_weights(build_model(m)) for m in ("perception", "decision")}
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (192, 320, 3), dtype=np.uint8)
    points = np.c_[rng.uniform(0, 50, (20000, 1)), rng.uniform(-25, 25, (20000, 1)),
                   rng.uniform(-1.8, 1.0, (20000, 1)), rng.uniform(0, 1, (20000, 1))].astype(np.float32)
    image, bev = image_tensor(rgb), bev_grid(points)[None]
    speed = np.asarray([[10.0]], np.float32)

    def loader(region):
        return LoadedWeights(region, f"{region}@bench", weights, rules={"speed_limit_kph": 50})

    # 1. The pipeline's overhead: the same serving runners (same sessions, same thread pools, same caches)
    #    called bare and through the pipeline, in alternation.
    swap = HotSwapManager(OnnxRuntimeBackend(), loader)
    swap.initialize("base")
    pipe = FramePipeline(swap)
    runners = swap.serving.runners

    def bare_serving():
        f = runners["perception"].run({"image": image, "bev": bev})["features"]
        runners["decision"].run({"features": f, "speed": speed})

    t = [0.0]

    def pipeline_tensors():
        t[0] += 0.05
        pipe.process_tensors(image, bev, 10.0, t[0])

    types = rosbags_types(rosbags_typestore())
    img_msg = build_image(types, rgb[:, :, ::-1].copy(), "bgr8", 1.0, "camera")
    cloud_msg = build_pointcloud2(types, points, ("x", "y", "z", "intensity"), 1.0, "lidar")

    def pipeline_messages():
        pipe.process_messages(img_msg, cloud_msg, 10.0)

    res = interleaved_ms({"bare": bare_serving, "pipeline": pipeline_tensors})
    res["messages"] = interleaved_ms({"messages": pipeline_messages})["messages"]
    swap.shutdown()

    # 2. Backends side by side, each with its own prepared models.
    fns = {}
    for name, backend in (("onnxruntime", OnnxRuntimeBackend()), ("torch", TorchBackend())):
        p = backend.prepare("perception", weights["perception"])
        d = backend.prepare("decision", weights["decision"])

        def bare(p=p, d=d):
            f = p.run({"image": image, "bev": bev})["features"]
            d.run({"features": f, "speed": speed})

        fns[name] = bare
    res.update(interleaved_ms(fns))

    bare_ms, pipe_ms, full_ms = res["bare"], res["pipeline"], res["messages"]
    ort_ms, torch_ms = res["onnxruntime"], res["torch"]
    print(f"torch threads: {torch.get_num_threads()}, repeats: {REPEATS}")
    print(f"bare forward (ONNX Runtime, perception+decision): {bare_ms:.3f} ms")
    print(f"pipeline from tensors (ONNX Runtime):              {pipe_ms:.3f} ms")
    print(f"pipeline from messages 320x192 bgr8 + 20k points:  {full_ms:.3f} ms")
    print(f"bare forward, separate sessions: ONNX Runtime {ort_ms:.3f} ms, PyTorch eager {torch_ms:.3f} ms")
    print(f"pipeline's own work per frame (pipeline - bare):    {(pipe_ms - bare_ms) * 1000:.0f} us")
    print(f"RATIO pipeline/bare forward (goal <= 1.15):        {pipe_ms / bare_ms:.3f}")
    print(f"RATIO full frame from messages/bare forward:       {full_ms / bare_ms:.3f}")
    print(f"RATIO PyTorch eager/ONNX Runtime (goal >= 1.3):    {torch_ms / ort_ms:.3f}")


if __name__ == "__main__":
    main()
