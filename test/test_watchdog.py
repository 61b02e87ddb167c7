from __future__ import annotations

import pytest

from regionadapt_ros.core.watchdog import SensorWatchdog


def test_fires_after_timeout_and_recovers():
    w = SensorWatchdog("camera", 0.5)
    w.feed(10.0)
    assert not w.stale(10.4)
    assert w.stale(10.6)
    w.feed(10.7)
    assert not w.stale(10.8)


def test_never_seen_is_stale():
    assert SensorWatchdog("lidar", 0.5).stale(3.0)


def test_clock_jump_backwards_resets_instead_of_firing():
    w = SensorWatchdog("camera", 0.5)
    w.feed(100.0)
    assert not w.stale(100.2)
    # a looped bag restarts at t=0: the watchdog must not report a 100 s age, nor a negative one
    assert not w.stale(0.1)
    assert w.resets == 1
    assert w.stale(0.9)  # a real outage after the jump still fires


def test_forward_leap_resets():
    w = SensorWatchdog("camera", 0.5, max_jump_s=5.0)
    w.feed(1.0)
    assert not w.stale(60.0)
    assert w.resets == 1


def test_bad_timeout_refused():
    with pytest.raises(ValueError, match="camera"):
        SensorWatchdog("camera", 0.0)


def test_resuming_after_a_pause_keeps_a_silent_sensors_age():
    """Nothing read the watchdog while the node was inactive: the first read after it is no jump (a jump would
    reset the sensor to fresh and hold the stop off for a timeout)."""
    dog = SensorWatchdog("camera", timeout_s=0.5, max_jump_s=5.0)
    dog.mark(100.0)
    assert not dog.stale(100.1)
    dog.resume(160.0)
    assert dog.stale(160.2) and dog.age(160.2) == pytest.approx(60.2)
    unresumed = SensorWatchdog("camera", timeout_s=0.5, max_jump_s=5.0)
    unresumed.mark(100.0)
    unresumed.stale(100.1)
    assert not unresumed.stale(160.2)  # without resume: taken as a clock jump
