"""The frame pipeline on arrays: one bundle per frame, degraded lidar, non-finite output → stop."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import perturbed_weights

from regionadapt_ros.core.control import ControlMapper, VehicleLimits
from regionadapt_ros.inference.backend import InferenceBackend, ModelRunner
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights
from regionadapt_ros.pipeline import STAGES, FrameInputs, FramePipeline


def loader(region: str) -> LoadedWeights:
    seed = {"base": 1, "highway": 2}[region]
    rules = {"highway": {"speed_limit_kph": 110}}.get(region, {"speed_limit_kph": 50})
    return LoadedWeights(region, f"{region}@v1", {m: perturbed_weights(m, seed) for m in ("perception", "decision")},
                         rules=rules)


def frame(t: float, with_lidar: bool = True, speed: float = 10.0) -> FrameInputs:
    rng = np.random.default_rng(int(t * 1000))
    rgb = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    pts = None
    if with_lidar:
        pts = np.c_[rng.uniform(0, 40, (500, 2)) - [0, 20], rng.uniform(-1.7, 0.5, 500), rng.uniform(0, 1, 500)]
        pts = pts.astype(np.float32)
    return FrameInputs(t, rgb, pts, speed)


@pytest.fixture
def pipeline():
    mgr = HotSwapManager(OnnxRuntimeBackend(), loader)
    mgr.initialize("base")
    pipe = FramePipeline(mgr, ControlMapper(VehicleLimits()))
    yield pipe
    mgr.shutdown()


def test_frames_produce_limited_commands_and_timings(pipeline):
    for i in range(5):
        res = pipeline.process(frame(i * 0.1))
        assert res.region == "base" and res.bundle_id == "base@v1"
        assert not res.command.stop
        assert abs(res.command.steering_angle) <= 0.5
        assert set(STAGES) - {"convert"} <= set(res.timings_ms)
        assert res.perception is not None and res.perception.tl_state in ("none", "red", "yellow", "green")
    summary = pipeline.timings.summary()
    assert summary["total"]["count"] == 5 and summary["perception"]["p50"] > 0


def test_region_rules_cap_speed(pipeline):
    res = pipeline.process(frame(0.0, speed=20.0))
    assert res.command.target_speed <= 50 / 3.6 + 1e-6
    pipeline.swap.request("highway")
    pipeline.swap.wait_idle(30)
    res = pipeline.process(frame(0.1, speed=20.0))
    assert res.region == "highway"
    assert pipeline.mapper.speed_limit == pytest.approx(110 / 3.6)


def test_missing_lidar_degrades_to_a_low_speed_cap(pipeline):
    res = pipeline.process(frame(0.0, with_lidar=False, speed=3.0))
    assert res.degraded and not res.lidar_used
    assert pipeline.mapper.speed_limit == pytest.approx(pipeline.degraded_max_speed)
    assert res.command.target_speed <= pipeline.degraded_max_speed


class NanAfterWarmup(InferenceBackend):
    """A backend whose perception turns non-finite after warm-up (a numerically unstable engine)."""

    name = "nan-after-warmup"

    def __init__(self, output: str = "lane", value: float = np.nan) -> None:
        self.inner = OnnxRuntimeBackend()
        self.output, self.value = output, value

    def prepare(self, model_name, weights):
        runner = self.inner.prepare(model_name, weights)
        output, value = self.output, self.value

        class Runner(ModelRunner):
            calls = 0

            def __init__(self):
                self.model_name, self.input_names, self.output_names = (
                    runner.model_name, runner.input_names, runner.output_names)

            def run(self, inputs):
                out = runner.run(inputs)
                Runner.calls += 1
                if model_name == "perception" and Runner.calls > 5:
                    out[output] = out[output].copy()
                    out[output][0, 0] = value
                return out

        return Runner()


@pytest.mark.parametrize(("output", "value"), [("lane", np.nan), ("tl_logits", np.inf), ("tl_logits", np.nan),
                                               ("obstacle", -np.inf), ("features", np.nan)])
def test_non_finite_model_output_is_never_published(output, value):
    mgr = HotSwapManager(NanAfterWarmup(output, value), loader)
    mgr.initialize("base")
    pipe = FramePipeline(mgr)
    results = [pipe.process(frame(i * 0.1)) for i in range(6)]
    last = results[-1]
    assert last.command.stop and "non-finite" in last.command.reason
    assert np.isfinite(last.command.steering_angle) and np.isfinite(last.command.accel)
    assert pipe.errors >= 1 and pipe.warnings.count("non_finite_output") >= 1
    mgr.shutdown()
