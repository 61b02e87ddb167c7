"""argparse types: numbers that are finite and in range, seeds, plot paths; a one-line message naming the value
when not."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def number(kind: type, minimum: float | None = None, maximum: float | None = None, *,
           inclusive: bool = True) -> Callable[[str], float]:
    """argparse type: a finite ``kind`` (int or float) >= ``minimum`` (> when not ``inclusive``) and <=
    ``maximum``; either bound may be left out."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        below = minimum is not None and (value < minimum or (not inclusive and value == minimum))
        above = maximum is not None and value > maximum
        if math.isfinite(value) and not below and not above:
            return value
        if maximum is None:
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {'>=' if inclusive else '>'} "
                                             f"{_bound(minimum)}")
        low = "-inf" if minimum is None else _bound(minimum)
        raise argparse.ArgumentTypeError(f"{text!r} must be {noun} in {'[' if inclusive else '('}{low}, "
                                         f"{_bound(maximum)}]")

    return parse


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


# Seeds reach numpy's and the generators' 32-bit seeding: a larger one would be cut to its low 32 bits (two
# "different" seeds giving one dataset: a train/held-out leak), and one beyond 64 bits could not be read back.
MAX_SEED = 2**32 - 1
seed_arg = number(int, 0, MAX_SEED)


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def plot_path(text: str) -> Path:
    """argparse type: matplotlib picks the format from the suffix and appends .png to a name without one (and
    refuses one it does not know), so the file written would not be the one named; the suffix is required."""
    path = Path(text)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r}: the file name must end in {', '.join(PLOT_SUFFIXES)}")
    return path
