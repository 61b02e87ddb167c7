"""One strict parser for every JSON and YAML document the product trusts: manifests, signatures, the rollback
registry, regions.yaml and the other config files, GeoJSON geofences.

What "strict" refuses, each with an error naming the document and the problem (``error(source, problem)``, the
caller's exception type):

- a duplicate key in an object / mapping. ``json.loads`` and ``yaml.safe_load`` keep the last value silently, so
  one signed file could read differently to a first-wins parser; here it reads one way or not at all;
- nesting deeper than ``max_depth`` (64 by default; the documents here need fewer than 10). Deeper input would
  raise ``RecursionError`` in the parsers or in the code that walks the result; ``RecursionError`` never escapes;
- JSON ``NaN``/``Infinity``, a number that overflows a float (``1e999``), an integer beyond 64 bits (a 401-digit
  "priority" would overflow the first float conversion downstream), a lone UTF-16 surrogate (``"\\ud800"`` parses
  but cannot be written back as UTF-8, which the canonical form of a signed manifest needs);
- YAML aliases (``*name``): each alias is a reference, and a few nested ones describe an exponentially large
  document (the "billion laughs") to any code that walks it;
- text that is not UTF-8, and (through ``load_*_file``) a file that is not a regular file or is larger than
  ``max_bytes`` (see ``core/safe_read.py``).

Peak memory: the parsed document, a small multiple of its size (measured: under 20x for JSON of numbers), so a
document at the default 16 MiB limit stays within a few hundred MiB.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from regionadapt_ros.core import safe_read
from regionadapt_ros.core.errors import ConfigError
from regionadapt_ros.core.safe_read import ErrorFactory

MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 16 * safe_read.MiB
YAML_MAX_BYTES = 1 * safe_read.MiB  # the pure-Python YAML parser is slow; config files are a few KiB
_INT64 = 1 << 63


class _RefusedError(ValueError):
    """Raised inside the parsers' hooks; turned into the caller's error type with the document's name."""


# ------------------------------------------------------------------------------------------------------ JSON


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # C speed; a Python loop here would double the cost of parsing a manifest
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _RefusedError(f"duplicate key {_short(duplicate)} in an object (a parser keeping the first and one "
                            "keeping the last would read different documents)")
    return result


def _refuse_constant(name: str) -> float:
    raise _RefusedError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _RefusedError(f"number {_short(text)} overflows a 64-bit float")
    return value


def _bounded_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 19:  # cheap pre-check before int(): int() of a long digit string is quadratic
        raise _RefusedError(f"integer {_short(text)} has {len(digits)} digits; integers must fit in 64 bits")
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise _RefusedError(f"integer {_short(text)} does not fit in 64 bits")
    return value


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_CONTAINERS = (dict, list)
_LONG_NUMBER = re.compile(r"\d{19,}|[eE][+-]?\d{3,}")
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): only then can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_depth(document: Any, max_depth: int) -> None:
    """Nesting depth of a parsed document, level by level (no recursion however deep, and only containers are
    looked at one by one)."""
    level = [document] if type(document) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise _RefusedError(f"nested more than {max_depth} levels deep")
        below: list[Any] = []
        for node in level:
            below.extend([v for v in (node.values() if type(node) is dict else node) if type(v) in _CONTAINERS])
        level = below


def _check_strings(document: Any) -> None:
    """Every string (keys included) is valid Unicode: encoding the whole document finds a lone surrogate."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else "?"
        raise _RefusedError(f"string {_short(bad)} holds a lone UTF-16 surrogate ({exc.reason}); not valid "
                            "Unicode") from None


def _check_tree(document: Any, max_depth: int, strings: bool = True) -> None:
    _check_depth(document, max_depth)
    if strings:
        _check_strings(document)


def _check_yaml_strings(document: Any) -> None:
    """As ``_check_strings`` for a YAML document, whose scalars need not be JSON types (dates, bytes)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _RefusedError(f"string {_short(node)} holds a lone UTF-16 surrogate ({exc.reason}); not "
                                    "valid Unicode") from None
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)


def loads_json(text: str | bytes, source: object, *, max_depth: int = MAX_DEPTH,
               error: ErrorFactory = ConfigError) -> Any:
    """Parse JSON strictly (see the module docstring); ``error(source, problem)`` on any refusal."""
    if isinstance(text, (bytes, bytearray)):
        text = safe_read.decode_utf8(bytes(text), source, error)  # decoded UTF-8 holds no surrogate
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(source, f"refused JSON: text holds a lone UTF-16 surrogate at offset {exc.start}") from None
    # The number hooks are Python calls per number; a text without a 19-digit run or a 3-digit exponent cannot
    # hold an integer beyond 64 bits or a float that overflows, so it is parsed without them (C speed).
    numbers = {"parse_float": _finite_float, "parse_int": _bounded_int} if _LONG_NUMBER.search(text) else {}
    try:
        document = json.loads(text, object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse_constant,
                              **numbers)
        _check_tree(document, max_depth, strings=_SURROGATE_ESCAPE.search(text) is not None)
    except json.JSONDecodeError as exc:
        raise error(source, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _RefusedError as exc:
        raise error(source, f"refused JSON: {exc}") from None
    except RecursionError:
        raise error(source, f"refused JSON: nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # int() of an over-long digit string (sys.get_int_max_str_digits)
        raise error(source, f"refused JSON: {exc}") from None
    return document


def load_json_file(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
                   max_depth: int = MAX_DEPTH, error: ErrorFactory = ConfigError,
                   within: str | os.PathLike[str] | None = None) -> Any:
    """Read (bounded, regular files only) and parse a JSON file strictly. A missing file raises
    FileNotFoundError; everything else ``error(path, problem)``."""
    raw = safe_read.read_bytes(path, max_bytes=max_bytes, within=within, error=error)
    return loads_json(raw, Path(path), max_depth=max_depth, error=error)


# ------------------------------------------------------------------------------------------------------ YAML


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader without aliases, without duplicate keys and with bounded nesting."""

    max_depth = MAX_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not accepted (aliases can "
                                              "describe exponentially large documents)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.composer.ComposerError(None, None, f"nested more than {self.max_depth} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(None, None, f"unhashable mapping key {_short(key)}",
                                                            key_node.start_mark) from None
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short(key)} (YAML loaders differ on which value wins)",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: Any) -> int:
        """Integers as in JSON: 64 bits. A 400-digit integer is valid YAML, but every check downstream
        (``math.isfinite``, a float conversion) would raise OverflowError on it."""
        text = str(node.value)
        if len(text) > 40:  # before int(): a long digit string costs quadratic time
            raise yaml.constructor.ConstructorError(None, None, f"integer {_short(text)} has {len(text)} "
                                                    "characters; integers must fit in 64 bits", node.start_mark)
        value = super().construct_yaml_int(node)
        if not -_INT64 <= value < _INT64:
            raise yaml.constructor.ConstructorError(None, None, f"integer {_short(text)} does not fit in 64 bits",
                                                    node.start_mark)
        return value


_StrictYamlLoader.add_constructor("tag:yaml.org,2002:int", _StrictYamlLoader.construct_bounded_int)


def loads_yaml(text: str | bytes, source: object, *, max_depth: int = MAX_DEPTH,
               error: ErrorFactory = ConfigError) -> Any:
    """Parse one YAML document strictly (see the module docstring); ``error(source, problem)`` on refusal."""
    if isinstance(text, (bytes, bytearray)):
        text = safe_read.decode_utf8(bytes(text), source, error)
    loader_type = type("_BoundedYamlLoader", (_StrictYamlLoader,), {"max_depth": max_depth})
    loader = None
    try:
        loader = loader_type(text)  # the reader checks the characters already here
        document = loader.get_single_data()
        _check_depth(document, max_depth)
        _check_yaml_strings(document)
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1} column {exc.problem_mark.column + 1}" \
            if exc.problem_mark is not None else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise error(source, f"not valid YAML: {problem}{where}") from None
    except yaml.reader.ReaderError as exc:
        raise error(source, f"not valid YAML: character {exc.character!r} at offset {exc.position}: "
                    f"{exc.reason}") from None
    except yaml.YAMLError as exc:
        raise error(source, f"not valid YAML: {exc}") from None
    except _RefusedError as exc:
        raise error(source, f"refused YAML: {exc}") from None
    except RecursionError:
        raise error(source, f"refused YAML: nested more than {max_depth} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    return document


def load_yaml_file(path: str | os.PathLike[str], *, max_bytes: int = YAML_MAX_BYTES, max_depth: int = MAX_DEPTH,
                   error: ErrorFactory = ConfigError) -> Any:
    """Read (bounded, regular files only) and parse a YAML file strictly. A missing file raises
    FileNotFoundError; everything else ``error(path, problem)``."""
    raw = safe_read.read_bytes(path, max_bytes=max_bytes, error=error)
    return loads_yaml(raw, Path(path), max_depth=max_depth, error=error)


def nested_number_problem(value: Any, depth: int | None) -> tuple[str, Any] | None:
    """The first thing in ``value`` that is not numbers nested ``depth`` lists deep (any depth when None), or
    None: ("list", item) where a list was expected, ("number", item) where a number was. A number is an int or
    a float, never a bool: numpy and shapely would read ``true`` as 1 and ``"0"`` as 0."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, tuple)) and level != 0:
            stack.extend((v, None if level is None else level - 1) for v in reversed(item))  # first problem first
        elif level is not None and level > 0:
            return "list", item
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            return "number", item
    return None
