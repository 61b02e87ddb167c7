"""Headless matplotlib for the reports: the Agg backend (no display on a vehicle or a CI machine), imported only
when a plot is drawn, and one way to write a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    # Names in the plots are users' (regions, files): "$" in one would start mathtext, and an unbalanced one
    # fails the whole figure. No report plot uses mathtext.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` (its directory made if needed) and free it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig)
    plt.close(fig)
    return path
