"""Checks of a command's output paths made before it runs: a long run must not end in "File exists", and a
summary file must not land on a bag (the input's, or one the run writes)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.output_dir import check_parent_is_dir


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def resolved_path(path: str | Path) -> Path:
    """``path`` absolute with its links resolved; as far as they resolve for a link that loops (``resolve``
    raises RuntimeError there; the command's reader then says what the path is)."""
    try:
        return Path(path).absolute().resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def check_file_output(option: str, path: str | Path | None, protected: Iterable[str | Path | None], *,
                      written_by_rename: bool = False) -> None:
    """``path`` (a summary, report or plot file) may be written: not a directory (nor, when the command writes
    it by a rename over it, ``written_by_rename``, a device or pipe: /dev/null would become a plain file; one
    written in place, as a summary is, may go to /dev/stdout), not one of or inside any of
    ``protected`` (the command's inputs: bags, bundles, datasets, regions.yaml, geofences, a route; and what the
    run itself writes), also when reached through a symbolic link, and the folder it lands in can hold a file.
    ``None`` entries are skipped (options not given)."""
    if path is None:
        return
    target = Path(path).absolute()
    if target.is_dir():
        raise ConfigError(option, f"{path} is a directory; give a file name")
    resolved = resolved_path(target)  # a link is written through: what it points at is what gets written
    for item in protected:
        if item is None:
            continue
        guarded = resolved_path(item)
        if _inside(resolved, guarded):
            raise ConfigError(option, f"{path} is {item}: it would be overwritten" if resolved == guarded else
                              f"{path} is inside {item}: it would overwrite a file there")
    if target.is_symlink() and not resolved.parent.is_dir():
        raise ConfigError(option, f"{path} is a link to {resolved}, whose folder does not exist")
    if written_by_rename and resolved.exists() and not resolved.is_file():
        # Written by a rename over it, a device or a pipe (/dev/null) would be replaced by a plain file.
        raise ConfigError(option, f"{path} is not a regular file (a device, pipe or socket) and would be replaced "
                                  "by one; give a file name")
    check_parent_is_dir(option, resolved, shown=path)


def check_output_dir(option: str, path: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """``path`` may be made a directory of outputs: not an existing file or a dangling link, not inside an
    input (a bag directory would gain a nested output)."""
    target = Path(path)
    if target.is_symlink() and not target.exists():
        raise ConfigError(option, f"{path} is a symbolic link to nothing ({target.readlink()})")
    if target.exists() and not target.is_dir():
        raise ConfigError(option, f"{path} exists and is not a directory")
    check_parent_is_dir(option, target)
    resolved = resolved_path(target)
    for item in inputs:
        source = resolved_path(item)
        if source.is_dir() and _inside(resolved, source):
            raise ConfigError(option, f"{path} is inside the input {item}; write the outputs elsewhere")
