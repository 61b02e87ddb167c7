"""The worker pool Ctrl-C stops (core/process_pool.py): jobs not yet started are cancelled, running ones finish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from regionadapt_ros.core.process_pool import process_pool


def _job(k: int, folder: str) -> int:
    if k:
        time.sleep(2.0)  # the others are still running or queued when the parent is interrupted
    (Path(folder) / f"{k}.done").write_text("")
    return k


def test_an_interrupt_in_the_parent_cancels_the_jobs_not_started(tmp_path):
    with pytest.raises(KeyboardInterrupt), process_pool(2) as pool:
        futures = [pool.submit(_job, k, str(tmp_path)) for k in range(20)]
        assert futures[0].result() == 0
        raise KeyboardInterrupt
    done = sorted(int(p.stem) for p in tmp_path.glob("*.done"))
    # job 0, one running per worker and the few the executor had already handed to them; not all 20
    assert 0 in done and len(done) <= 8, done
    assert all(f.cancelled() for f in futures[10:])


def test_a_pool_that_ends_normally_runs_every_job(tmp_path):
    with process_pool(2) as pool:
        assert sorted(pool.map(_job, [0, 0, 0], [str(tmp_path)] * 3)) == [0, 0, 0]
