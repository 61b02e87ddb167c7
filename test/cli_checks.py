"""Checks on what a `regionadapt` command says when it refuses its input, shared by the hostile-input tests."""

from __future__ import annotations

import pytest

from regionadapt_ros.cli import main


def one_line_refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``regionadapt argv`` in-process; assert it exits 1 with exactly one stderr line and no internal error;
    return that stderr."""
    capsys.readouterr()
    assert main(argv) == 1, argv
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    return err
