"""The hot-swap protocol (DESIGN.md §6) with real ONNX Runtime runners."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import perturbed_weights

from regionadapt_ros.inference.backend import INPUT_SHAPES, InferenceBackend, ModelRunner
from regionadapt_ros.inference.onnxruntime_backend import OnnxRuntimeBackend
from regionadapt_ros.inference.swap import HotSwapManager, LoadedWeights, SwapError

SEEDS = {"base": 1, "highway": 2, "mountain": 3, "left_hand": 4}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CountingBackend(InferenceBackend):
    """Wraps a real backend and counts live runners, to check the two-resident-sets rule."""

    name = "counting"

    def __init__(self, inner: InferenceBackend) -> None:
        self.inner = inner
        self.live: dict[str, int] = {"perception": 0, "decision": 0}
        self.peak = 0
        self.lock = threading.Lock()
        self.closed_on: list[int] = []  # thread ids that freed a runner

    def prepare(self, model_name, weights):
        runner = self.inner.prepare(model_name, weights)
        backend = self

        class Counted(ModelRunner):
            def __init__(self):
                self.model_name = runner.model_name
                self.input_names, self.output_names = runner.input_names, runner.output_names
                self.closed = False
                with backend.lock:
                    backend.live[model_name] += 1
                    backend.peak = max(backend.peak, backend.live[model_name])

            def run(self, inputs):
                return runner.run(inputs)

            def close(self):
                if not self.closed:
                    self.closed = True
                    runner.close()
                    with backend.lock:
                        backend.live[model_name] -= 1
                        backend.closed_on.append(threading.get_ident())

        return Counted()


def make_loader(calls: list[str] | None = None, broken: set[str] | None = None):
    broken = broken if broken is not None else set()

    def load(region: str) -> LoadedWeights:
        if calls is not None:
            calls.append(region)
        if region in broken:
            raise FileNotFoundError(f"bundles/{region}/manifest.json: no such file")
        seed = SEEDS[region]
        return LoadedWeights(
            region=region,
            bundle_id=f"{region}@v1",
            weights={m: perturbed_weights(m, seed) for m in ("perception", "decision")},
            version=1,
        )

    return load


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in INPUT_SHAPES["perception"].items()}


@pytest.fixture(scope="module")
def ort_backend():
    return OnnxRuntimeBackend()


def test_begin_frame_without_initialize_is_an_error(ort_backend):
    mgr = HotSwapManager(ort_backend, make_loader())
    with pytest.raises(SwapError, match="initialize"):
        mgr.begin_frame()
    mgr.shutdown()


def test_hint_then_request_switches_at_the_next_frame(ort_backend):
    clock = Clock()
    mgr = HotSwapManager(ort_backend, make_loader(), clock=clock)
    mgr.initialize("base")
    assert mgr.begin_frame().region == "base"
    mgr.end_frame()
    clock.t = 1.0
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    assert mgr.staged is not None and mgr.staged.region == "highway"
    assert mgr.begin_frame().region == "base"  # staged, not requested: base keeps serving
    mgr.end_frame()
    clock.t = 2.0
    mgr.request("highway")
    clock.t = 2.01
    ws = mgr.begin_frame()
    assert ws.region == "highway" and ws.bundle_id == "highway@v1"
    clock.t = 2.02
    mgr.end_frame()
    rec = mgr.history[-1]
    assert rec.prefetched
    assert rec.hint_t == 1.0 and rec.request_t == 2.0 and rec.switched_t == 2.01 and rec.first_frame_t == 2.02
    assert rec.load_start_t is not None and rec.ready_t is not None
    assert rec.hint_t <= rec.load_start_t <= rec.ready_t <= rec.switched_t
    assert mgr.wait_idle(30)  # the replaced set is freed on the loader thread
    assert mgr.resident_sets() == 1
    mgr.shutdown()


def test_frames_keep_serving_old_weights_while_loading(ort_backend):
    gate = threading.Event()
    base_loader = make_loader()

    def slow_loader(region):
        if region != "base":
            gate.wait(10)
        return base_loader(region)

    mgr = HotSwapManager(ort_backend, slow_loader)
    mgr.initialize("base")
    mgr.request("mountain")
    for _ in range(5):  # loading is blocked: every frame is still computed, on base
        ws = mgr.begin_frame()
        ws.runners["perception"].run(feeds())
        mgr.end_frame()
        assert ws.region == "base"
    gate.set()
    assert mgr.wait_idle(30)
    assert mgr.begin_frame().region == "mountain"
    mgr.shutdown()


def test_failed_load_keeps_serving_and_retries_with_backoff(ort_backend):
    clock = Clock()
    calls: list[str] = []
    broken = {"left_hand"}
    mgr = HotSwapManager(ort_backend, make_loader(calls, broken), clock=clock, retry_initial_s=1.0)
    mgr.initialize("base")
    mgr.request("left_hand")
    assert mgr.wait_idle(30)
    assert "manifest.json" in mgr.failures["left_hand"]
    assert mgr.status()["failed_loads"] == 1
    assert mgr.begin_frame().region == "base"
    mgr.end_frame()
    clock.t = 0.5  # back-off not expired: no new attempt
    mgr.begin_frame()
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert calls.count("left_hand") == 1
    clock.t = 1.1  # expired: retried, fails again, back-off doubles
    mgr.begin_frame()
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert calls.count("left_hand") == 2
    assert mgr.status()["retry_in_s"]["left_hand"] == pytest.approx(2.0, abs=0.2)
    broken.clear()  # the bundle gets fixed on disk
    clock.t = 3.2
    mgr.begin_frame()
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.begin_frame().region == "left_hand"
    assert "left_hand" not in mgr.failures
    mgr.shutdown()


def test_non_finite_warmup_refused_previous_keeps_serving(ort_backend):
    good = make_loader()

    def loader(region):
        loaded = good(region)
        if region == "highway":
            loaded.weights["decision"]["head.bias"][:] = np.nan
        return loaded

    mgr = HotSwapManager(ort_backend, loader)
    mgr.initialize("base")
    mgr.request("highway")
    assert mgr.wait_idle(30)
    assert "non-finite" in mgr.failures["highway"]
    assert mgr.begin_frame().region == "base"
    mgr.shutdown()


def test_at_most_two_resident_sets(ort_backend):
    backend = CountingBackend(ort_backend)
    mgr = HotSwapManager(backend, make_loader())
    mgr.initialize("base")
    for region in ("highway", "mountain", "left_hand", "highway", "base", "mountain"):
        mgr.hint(region)
        mgr.wait_idle(30)
        mgr.request(region)
        mgr.wait_idle(30)
        mgr.begin_frame()
        mgr.end_frame()
    assert backend.peak <= 2
    assert mgr.wait_idle(30)  # the last replaced set is freed on the loader thread
    assert backend.live == {"perception": 1, "decision": 1}
    mgr.shutdown()
    assert backend.live == {"perception": 0, "decision": 0}


def test_replaced_weights_are_freed_off_the_serving_thread(ort_backend):
    backend = CountingBackend(ort_backend)
    mgr = HotSwapManager(backend, make_loader())
    mgr.initialize("base")
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    mgr.request("highway")
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert backend.live == {"perception": 1, "decision": 1} and mgr.resident_sets() == 1
    assert len(backend.closed_on) == 2 and threading.get_ident() not in backend.closed_on
    mgr.shutdown()


def test_both_models_switch_together(ort_backend):
    """Decision output of every frame equals the reference of the bundle the frame reports."""
    from regionadapt_ros.inference.torch_backend import TorchBackend

    ref = {r: {m: TorchBackend().prepare(m, perturbed_weights(m, s)) for m in ("perception", "decision")}
           for r, s in SEEDS.items() if r in ("base", "highway")}
    mgr = HotSwapManager(ort_backend, make_loader())
    mgr.initialize("base")
    mgr.request("highway")
    speed = np.full((1, 1), 8.0, np.float32)
    seen = set()
    for _ in range(200):
        ws = mgr.begin_frame()
        feats = ws.runners["perception"].run(feeds())["features"]
        control = ws.runners["decision"].run({"features": feats, "speed": speed})["control"]
        mgr.end_frame()
        r = ref[ws.region]
        want = r["decision"].run({"features": r["perception"].run(feeds())["features"], "speed": speed})
        np.testing.assert_allclose(control, want["control"], atol=1e-4)
        seen.add(ws.region)
        if ws.region == "highway":
            break
        mgr.wait_idle(0.05)
    assert seen == {"base", "highway"}
    mgr.shutdown()


def serve(mgr, n, on_frame=lambda i: None, until=None):
    """Serve up to ``n`` frames, letting the loader use each gap (``settle_gap``) before the next frame: the
    interleaving of frames and loader steps is then the same on any machine, however loaded. Checks on every
    frame that the weights did not change under it and that at most two sets are resident."""
    served = []
    for i in range(n):
        ws = mgr.begin_frame()
        on_frame(i)
        ws.runners["perception"].run(feeds())
        assert mgr.serving is ws  # the switch happens at begin_frame, never while a frame is computed
        assert mgr.resident_sets() <= 2
        mgr.end_frame()
        served.append(ws.region)
        assert mgr.settle_gap(60)
        if until is not None and until(ws):
            break
    return served


def assert_steps_between_frames(steps):
    local = [s for s in steps if s.in_process]
    assert local
    for step in local:
        assert not step.in_frame_at_start, step
        assert step.frames_begun_at_end == step.frames_begun_at_start, step  # no frame began during it


def test_loader_steps_run_in_the_gaps_between_frames(ort_backend):
    """While frames are served, each loader step in this process starts after a frame has ended and no frame
    begins while it runs: its Python code would otherwise slow the frame through the GIL."""
    mgr = HotSwapManager(CountingBackend(ort_backend), make_loader())
    mgr.initialize("base")
    mgr.loader_steps.clear()  # the start-up load ran before any frame
    served = serve(mgr, 40, on_frame=lambda i: i == 2 and mgr.request("highway"),  # arrives mid-frame
                   until=lambda ws: ws.region == "highway")
    assert served[-1] == "highway" and served[:3] == ["base"] * 3
    serve(mgr, 3)  # the replaced set is freed in a gap too
    steps = list(mgr.loader_steps)
    assert [s.name for s in steps] == ["load", "prepare perception", "prepare decision", "warm up", "free"]
    assert_steps_between_frames(steps)
    assert steps[0].frames_ended_at_start >= 3  # not before the frame in which the request arrived had ended
    starts = [s.frames_ended_at_start for s in steps]
    assert starts == sorted(starts) and starts[-1] > starts[0]  # in order, and the set is freed in a later gap
    mgr.shutdown()


def test_a_loader_that_does_not_wait_for_gaps_is_caught_running_during_a_frame(ort_backend):
    """The check above can fail: without ``yield_to_frames`` the load starts while the frame that asked for it
    is still being computed, and the step record says so."""
    started = threading.Event()
    base_loader = make_loader()

    def loader(region):
        if region == "highway":
            started.set()
        return base_loader(region)

    mgr = HotSwapManager(ort_backend, loader, yield_to_frames=False)
    mgr.initialize("base")
    mgr.loader_steps.clear()
    mgr.begin_frame()
    mgr.request("highway")
    assert started.wait(30)  # the frame is still in flight
    mgr.end_frame()
    assert mgr.wait_idle(30)
    load = mgr.loader_steps[0]
    assert load.name == "load" and load.in_frame_at_start
    mgr.shutdown()


def test_a_hint_does_not_evict_the_region_about_to_be_switched_to(ort_backend):
    """active_region X (staged) and then, before the next frame, next_region Y: X is switched to at the next
    frame and Y staged after it, instead of Y replacing X in the staging slot."""
    calls: list[str] = []
    mgr = HotSwapManager(ort_backend, make_loader(calls))
    mgr.initialize("base")
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    mgr.request("highway")
    mgr.hint("mountain")  # the region after highway
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.staged is not None and mgr.staged.region == "mountain"
    assert calls == ["base", "highway", "mountain"]  # highway was loaded once
    assert mgr.history[-1].prefetched
    mgr.request("mountain")
    assert mgr.begin_frame().region == "mountain" and mgr.history[-1].prefetched
    mgr.end_frame()
    mgr.shutdown()


def test_wait_idle_from_the_serving_thread_does_not_wait_for_frames(ort_backend):
    """Replay in bag time serves frames and then waits for the loader on the same thread: the loader must not
    keep waiting for a frame to end (here it would wait serving_idle_s = 60 s per step)."""
    mgr = HotSwapManager(ort_backend, make_loader(), serving_idle_s=60.0)
    mgr.initialize("base")
    for _ in range(3):
        mgr.begin_frame()
        mgr.end_frame()
    mgr.request("highway")
    assert mgr.wait_idle(20)
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    mgr.shutdown()


def test_a_frame_after_a_long_pause_is_still_protected(ort_backend):
    """Frames resume after a pause longer than ``serving_idle_s`` (the driver waited for a slow load): the
    replaced set must still be freed after the frame that switched, not during it."""
    mgr = HotSwapManager(ort_backend, make_loader(), serving_idle_s=0.05)
    mgr.initialize("base")
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    mgr.request("highway")
    mgr.loader_steps.clear()
    threading.Event().wait(0.2)  # the pause: no frame has ended for longer than serving_idle_s
    assert mgr.begin_frame().region == "highway"  # switches; freeing base is queued on the loader
    assert mgr.settle_gap(30)  # the loader waits for this frame to end (or, wrongly, has freed base already)
    assert [s.name for s in mgr.loader_steps] == []
    mgr.end_frame()
    assert mgr.wait_idle(30)
    free = [s for s in mgr.loader_steps if s.name == "free"]
    assert len(free) == 1 and not free[0].in_frame_at_start
    mgr.shutdown()


def test_a_hint_that_comes_just_before_the_active_region_of_the_held_prefetch_does_not_evict_it(ort_backend):
    """One fix moves the vehicle into the prefetched region X and predicts the next one, Y; the node gets
    next_region Y before active_region X. X is still switched to at the next frame as a prefetched switch
    (loaded once), and Y is staged after it, however long the active_region takes to follow (here: until the
    loader is idle, which is when a load of Y started at once would already have evicted X)."""
    calls: list[str] = []
    mgr = HotSwapManager(ort_backend, make_loader(calls))
    mgr.initialize("base")
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    mgr.hint("mountain")  # the region after highway, computed at the fix that enters highway
    assert mgr.wait_idle(30)
    mgr.request("highway")
    assert mgr.begin_frame().region == "highway"
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.history[-1].region == "highway" and mgr.history[-1].prefetched
    assert mgr.staged is not None and mgr.staged.region == "mountain"
    assert calls == ["base", "highway", "mountain"]
    mgr.shutdown()


def test_a_new_hint_replaces_the_held_prefetch_once_it_stands_when_no_active_region_comes(ort_backend):
    """The prediction changed (Y instead of X) and X never becomes active: Y takes the staging slot once it has
    stood for HINT_SETTLE_FRAMES frames; a hint back to X before that keeps X (the newest hint wins), so a
    prediction flipping between two regions does not load and free a set on every frame."""
    from regionadapt_ros.inference.swap import HINT_SETTLE_FRAMES

    calls: list[str] = []
    mgr = HotSwapManager(ort_backend, make_loader(calls))
    mgr.initialize("base")
    mgr.hint("highway")
    assert mgr.wait_idle(30)
    for _ in range(3 * HINT_SETTLE_FRAMES):  # flipping every frame: highway stays, mountain is never loaded
        mgr.hint("mountain")
        mgr.hint("highway")
        assert mgr.begin_frame().region == "base"
        mgr.end_frame()
        mgr.hint("mountain")
        assert mgr.begin_frame().region == "base"
        mgr.end_frame()
        mgr.hint("highway")
    assert mgr.wait_idle(30)
    assert mgr.staged.region == "highway" and calls == ["base", "highway"]
    mgr.hint("mountain")
    for _ in range(HINT_SETTLE_FRAMES - 1):
        assert mgr.begin_frame().region == "base"
        mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.staged.region == "highway"  # held until the hint has stood long enough
    assert mgr.begin_frame().region == "base"
    mgr.end_frame()
    assert mgr.wait_idle(30)
    assert mgr.staged.region == "mountain" and calls == ["base", "highway", "mountain"]
    mgr.request("mountain")
    assert mgr.begin_frame().region == "mountain" and mgr.history[-1].prefetched
    mgr.end_frame()
    mgr.shutdown()


def test_a_load_abandoned_by_shutdown_is_not_a_failed_load(ort_backend, caplog):
    entered, release = threading.Event(), threading.Event()
    plain = make_loader()

    def slow(region: str) -> LoadedWeights:
        if region != "base":
            entered.set()
            release.wait(30)
        return plain(region)

    mgr = HotSwapManager(ort_backend, slow)
    mgr.initialize("base")
    mgr.hint("highway")
    assert entered.wait(30)
    with caplog.at_level("WARNING", logger="regionadapt_ros"):
        mgr.shutdown()  # deactivate or cleanup while the prefetch loads
    release.set()
    assert mgr.failed_loads == 0 and not mgr.failures
    assert not [r for r in caplog.records if "loading region" in r.getMessage()]
