"""Where a directory that is written atomically (built beside its place, then renamed over it) may go.

The dataset writer and the bundle writer replace their output directory as a whole. Without these checks
``--out .`` failed inside ``pathlib``, ``--out ~/Documents`` deleted the user's files, and a symbolic link given
as ``--out`` was itself replaced by a directory (the data landed beside the target, the link was left behind
under a hidden name).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from regionadapt_ros.core.errors import ConfigError, RegionAdaptError


def replaceable_dir(
    out_dir: str | Path,
    is_ours: Callable[[Path], bool],
    what: str,
    error: Callable[[object, str], RegionAdaptError],
) -> Path:
    """The real directory to build and rename over for ``out_dir``; raises ``error(out_dir, problem)``.

    A symbolic link is followed, so the target is replaced and the link keeps pointing at it. Refused: a path
    with no name of its own (``.``, ``..``, ``/``), the current directory or one that holds it, something that
    is not a directory, and a non-empty directory that ``is_ours`` does not recognise as an earlier ``what``.
    """
    given = Path(out_dir)
    if given.name in ("", ".", ".."):
        raise error(given, f"names no directory of its own; give the {what} a name, e.g. {given / what}")
    target = given.resolve() if given.is_symlink() else given.absolute()
    if target.name in ("", ".", ".."):
        raise error(given, f"resolves to {target}, which cannot be replaced")
    cwd = Path.cwd().resolve()
    real = target.resolve()
    if real == cwd or real in cwd.parents:
        raise error(given, "is the current directory or holds it; choose another directory")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise error(given, "exists and is not a directory")
        if any(os.scandir(target)) and not is_ours(target):
            raise error(
                given,
                f"exists, holds files and is not a {what}; it would be replaced as a whole, so choose a new "
                "directory or remove this one",
            )
    return target


def check_parent_is_dir(option: str, path: str | Path, shown: str | Path | None = None) -> None:
    """The folder ``path`` would be made in can be: its nearest existing ancestor is a directory (a file there
    fails the write only at the end of the run)."""
    target = Path(path).absolute()
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(option, f"{shown if shown is not None else path}: {parent} is not a directory")
