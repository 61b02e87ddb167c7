"""Bounded reads of files that may be hostile: only regular files, no larger than a limit, never a blocking open.

A file the product reads (a bundle's weights, a manifest, a key, a config file, a geofence file) may have been
replaced by something that never ends or never answers: a FIFO (``open`` blocks until a writer appears), a
character device such as ``/dev/zero`` (reads never end), a sparse file of terabytes (reads allocate it all), or
a symbolic link to any of these. Every read here:

1. ``stat``s the path before opening it and refuses anything that is not a regular file, so a FIFO or a device is
   never opened (opening some devices has side effects: a watchdog starts, a tape rewinds);
2. refuses a size above ``max_bytes`` (and, when the caller knows it, a size other than ``expected_size``) before
   reading a byte;
3. opens with ``O_NONBLOCK | O_NOFOLLOW`` (a FIFO swapped in after the ``stat`` cannot block the open, a symlink
   swapped in cannot redirect it) and checks with ``fstat`` that the open file is the regular file that was
   checked;
4. reads at most the checked size plus one byte, so a file that grows meanwhile is refused, never read on.

With ``within`` (a directory), a symbolic link is followed only when its target resolves inside that directory:
a bundle may link one of its files to another, never to a file outside it. Without ``within`` (configuration
files, keys), links are followed wherever they point (``/etc/...`` set-ups), and the target must still be a
regular file within the limits.

Errors are the caller's type (``error(path, problem)``, e.g. ConfigError or BundleError), naming the file and the
problem. A missing file raises FileNotFoundError unchanged, because for some files (``signature.json``) absence is
a state, not an error. Peak memory of a read is the file's size (``max_bytes`` at most); ``sha256_of`` streams in
1 MiB chunks and keeps nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from regionadapt_ros.core.errors import ConfigError

ErrorFactory = Callable[[object, str], Exception]
CHUNK_BYTES = 1 << 20
MiB = 1 << 20
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def describe_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a character device", ...)."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a regular file"


def file_state(path: str | os.PathLike[str]) -> tuple[str, str]:
    """What is at ``path``, for choosing a message: ("file", "") for a regular file (links followed),
    ("missing", "") when nothing is there, else ("other", words), e.g. "a FIFO (named pipe)", "a symbolic link
    that does not resolve (dangling or looping)", or why the path cannot be looked at ("File name too long")."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "other", "a symbolic link that does not resolve (dangling)"
        return "missing", ""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "other", "a symbolic link that does not resolve (looping)"
        return "other", f"a path that cannot be looked at ({exc.strerror or exc})"
    if stat.S_ISREG(info.st_mode):
        return "file", ""
    return "other", describe_kind(info.st_mode)


def printable_name(name: str) -> str:
    """A directory entry's name for a report: bytes that are not UTF-8 (surrogate escapes) and control
    characters are shown escaped, so that printing it cannot fail or forge a line."""
    if name.isprintable():
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    return ascii(name)[1:-1]


def printable_text(text: str) -> str:
    """``text`` for a terminal or a log: every character that is not printable (a newline, an ANSI escape, a
    surrogate escape of a byte that is not UTF-8) is shown escaped, so a field of a hostile file cannot forge a
    line or recolour one; printable text, non-ASCII included, is kept as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def one_line(text: str, limit: int = 1000) -> str:
    """Text for a one-line message, at most about ``limit`` characters: what a library says of a damaged file (a
    YAML parser's context, a message definition it could not parse) can span lines and kilobytes."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    tail = min(150, limit // 4)
    return f"{text[:limit - tail - 5]} ... {text[-tail:]} ({len(text)} characters in all)"


def shown_name(name: str, limit: int = 120) -> str:
    """``repr(name)`` for a message, cut in the middle past ``limit`` characters (a name can be any length)."""
    text = repr(name)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-(limit // 2):]} ({len(name)} characters)"


def human_bytes(size: int) -> str:
    """``size`` for messages: exact below 10 KiB (so two close sizes read differently), else KiB/MiB/GiB/TiB."""
    if size < 10 * 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _is_inside(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def checked_target(path: str | os.PathLike[str], *, within: str | os.PathLike[str] | None = None,
                   max_bytes: int, expected_size: int | None = None, error: ErrorFactory = ConfigError
                   ) -> tuple[Path, os.stat_result]:
    """The path to open and its ``stat`` after every check that needs no open: a regular file (a link only into
    ``within``), size within ``max_bytes`` and equal to ``expected_size`` when given. Raises ``error(path, ...)``,
    or FileNotFoundError when nothing is there (a dangling link included)."""
    path = Path(path)
    try:
        link_info = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    target = path
    if stat.S_ISLNK(link_info.st_mode):
        resolved = Path(os.path.realpath(path))
        if within is not None:
            root = Path(os.path.realpath(within))
            if not _is_inside(resolved, root):
                raise error(path, f"is a symbolic link to {resolved}, outside {within}; only files inside it are "
                            "read")
        target = resolved
    try:
        info = os.stat(target)
    except FileNotFoundError:
        raise FileNotFoundError(2, "dangling symbolic link", str(path)) from None
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        via = f" (through a symbolic link to {target})" if target != path else ""
        raise error(path, f"is {describe_kind(info.st_mode)}{via}, not a regular file; refused without opening it")
    if expected_size is not None and info.st_size != expected_size:
        raise error(path, f"is {info.st_size} B but the manifest lists {expected_size} B (truncated or replaced)")
    if info.st_size > max_bytes:
        raise error(path, f"is {human_bytes(info.st_size)}, more than the limit of {human_bytes(max_bytes)}; "
                    "refused before reading")
    return target, info


def _open_checked(path: Path, target: Path, checked: os.stat_result, error: ErrorFactory) -> int:
    try:
        fd = os.open(target, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(path, f"cannot open ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino):
        os.close(fd)
        raise error(path, "was replaced while it was being opened; refused")
    return fd


def _chunks(path: Path, fd: int, size: int, error: ErrorFactory, chunk_bytes: int = CHUNK_BYTES):
    """Yield the file's bytes in chunks, at most ``size`` of them; the file must end exactly there."""
    left = size
    try:
        while left > 0:
            chunk = os.read(fd, min(chunk_bytes, left))
            if not chunk:
                raise error(path, f"ended after {size - left} of {size} B (truncated while being read)")
            left -= len(chunk)
            yield chunk
        if os.read(fd, 1):
            raise error(path, f"grew past {size} B while being read; refused")
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int, within: str | os.PathLike[str] | None = None,
               expected_size: int | None = None, error: ErrorFactory = ConfigError) -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` (see the module docstring)."""
    path = Path(path)
    target, info = checked_target(path, within=within, max_bytes=max_bytes, expected_size=expected_size,
                                  error=error)
    fd = _open_checked(path, target, info, error)
    try:
        return b"".join(_chunks(path, fd, info.st_size, error))
    finally:
        os.close(fd)


def read_bytes_and_sha256(path: str | os.PathLike[str], *, max_bytes: int,
                          within: str | os.PathLike[str] | None = None, expected_size: int | None = None,
                          error: ErrorFactory = ConfigError) -> tuple[bytes, str]:
    """``read_bytes`` and the sha256 hex digest of the same bytes, hashed while they are read."""
    path = Path(path)
    target, info = checked_target(path, within=within, max_bytes=max_bytes, expected_size=expected_size,
                                  error=error)
    fd = _open_checked(path, target, info, error)
    digest = hashlib.sha256()
    parts = []
    try:
        for chunk in _chunks(path, fd, info.st_size, error):
            digest.update(chunk)
            parts.append(chunk)
    finally:
        os.close(fd)
    return b"".join(parts), digest.hexdigest()


def sha256_of(path: str | os.PathLike[str], *, max_bytes: int, within: str | os.PathLike[str] | None = None,
              expected_size: int | None = None, error: ErrorFactory = ConfigError) -> str:
    """sha256 hex digest of a regular file of at most ``max_bytes``, streamed (constant memory)."""
    path = Path(path)
    target, info = checked_target(path, within=within, max_bytes=max_bytes, expected_size=expected_size,
                                  error=error)
    fd = _open_checked(path, target, info, error)
    digest = hashlib.sha256()
    try:
        for chunk in _chunks(path, fd, info.st_size, error):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def read_text(path: str | os.PathLike[str], *, max_bytes: int, error: ErrorFactory = ConfigError,
              within: str | os.PathLike[str] | None = None) -> str:
    """A bounded regular file decoded as UTF-8 (a leading byte-order mark is dropped); ``error`` names the file
    and the first undecodable byte."""
    raw = read_bytes(path, max_bytes=max_bytes, within=within, error=error)
    return decode_utf8(raw, path, error)


def decode_utf8(raw: bytes, source: object, error: ErrorFactory = ConfigError) -> str:
    """``raw`` as UTF-8 text (BOM dropped); ``error(source, ...)`` naming the offset of an undecodable byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(source, f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def check_regular_tree(path: str | os.PathLike[str], *, error: ErrorFactory = ConfigError,
                       max_entries: int = 10_000) -> None:
    """Refuse a path handed to a reader this module does not control (a rosbag2 library), before it opens
    anything: ``path`` must be a regular file, or a directory whose entries (not recursively; a rosbag2 is
    flat) are regular files or directories. A FIFO or a device anywhere there would block or flood that
    reader. Sizes are not bounded here: such readers stream. FileNotFoundError when nothing is there."""
    path = Path(path)
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        with os.scandir(path) as entries:
            for count, entry in enumerate(entries):
                if count >= max_entries:
                    raise error(path, f"holds more than {max_entries} entries")
                try:
                    mode = entry.stat().st_mode  # follows links: what the reader would open
                except FileNotFoundError:
                    continue  # a dangling link: the reader reports it if it needs the file
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        continue  # a link that loops: as a dangling one, opened by no reader
                    raise
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise error(Path(entry.path), f"is {describe_kind(mode)}, not a regular file; refused without "
                                "opening it")
        return
    if not stat.S_ISREG(info.st_mode):
        raise error(path, f"is {describe_kind(info.st_mode)}, not a regular file or directory; refused without "
                    "opening it")
