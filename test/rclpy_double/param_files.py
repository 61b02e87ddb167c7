"""ROS 2 parameter files as rcl reads them for one node: the type rcl gives each value (rcl_yaml_param_parser,
not PyYAML's YAML 1.1 rules), which sections apply (the node-key rule of rclpy/src/rclpy/node.cpp, humble and
jazzy) and the names of nested parameters. Plain Python (no double state), so the launch tests use it too."""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import yaml

# rcl_yaml_param_parser/src/parse.c get_value (humble; unchanged since): an unquoted scalar is a bool when it is
# one of these words, else an int64 when strtoll(value, 0) reads all of it, else a double when strtod does (or
# a YAML .inf/.nan spelling), else a string. A quoted scalar is always a string. PyYAML differs both ways: it
# reads "y", "1e3", "nan" as strings and "1_000", "1:30" as ints.
_RCL_TRUE = frozenset(["Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"])
_RCL_FALSE = frozenset(["N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"])
_RCL_SPECIAL_FLOATS = {
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
}
_C_SPACE = " \t\n\v\f\r"  # what strtoll and strtod skip before the number
_SPACE = f"[{re.escape(_C_SPACE)}]*"
_STRTOLL = re.compile(rf"{_SPACE}([+-]?)(0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD_DECIMAL = re.compile(rf"{_SPACE}[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_STRTOD_HEX = re.compile(rf"{_SPACE}[+-]?0[xX](?:[0-9A-Fa-f]+\.?[0-9A-Fa-f]*|\.[0-9A-Fa-f]+)(?:[pP][+-]?[0-9]+)?")
_STRTOD_WORD = re.compile(rf"{_SPACE}([+-]?)(inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)
_INT64 = (-(2**63), 2**63 - 1)


def _strtod(text: str) -> float | None:
    """strtod reading all of ``text`` without ERANGE (an overflow or underflow leaves it a string in rcl)."""
    word = _STRTOD_WORD.fullmatch(text)
    if word:
        sign, name = word.groups()
        return math.nan if name.lower().startswith("nan") else (-math.inf if sign == "-" else math.inf)
    number = text.strip(_C_SPACE)
    if _STRTOD_HEX.fullmatch(text):
        value = float.fromhex(number)
    elif _STRTOD_DECIMAL.fullmatch(text):
        value = float(number)
    else:
        return None
    mantissa = re.split(r"[eEpP]", number.lower().replace("0x", ""), maxsplit=1)[0]
    underflow = value == 0.0 and any(c not in "0.+-" for c in mantissa)
    if math.isinf(value) or underflow or 0.0 < abs(value) < sys.float_info.min:
        return None
    return value


def rcl_scalar(text: str, quoted: bool) -> bool | int | float | str:
    """The value rcl gives the YAML scalar ``text`` (``quoted``: single- or double-quoted in the file)."""
    if quoted:
        return text
    if text in _RCL_TRUE:
        return True
    if text in _RCL_FALSE:
        return False
    match = _STRTOLL.fullmatch(text)
    if match:
        sign, digits = match.groups()
        if digits[:2] in ("0x", "0X"):
            value = int(digits[2:], 16)
        else:
            value = int(digits, 8 if len(digits) > 1 and digits[0] == "0" else 10)
        value = -value if sign == "-" else value
        if _INT64[0] <= value <= _INT64[1]:
            return value  # out of int64, strtoll sets ERANGE and rcl tries strtod
    if text in _RCL_SPECIAL_FLOATS:
        return _RCL_SPECIAL_FLOATS[text]
    value = _strtod(text)
    return text if value is None else value


def _rcl_value(node: yaml.Node, source: str) -> Any:
    where = f"{source}: line {node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        # Keys are names, never typed; a later duplicate wins.
        return {str(key.value): _rcl_value(value, source) for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        items = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise ValueError(f"{where}: a parameter sequence holds scalars only")
            items.append(_rcl_value(item, source))
        if len({type(item) for item in items}) > 1:
            raise ValueError(f"{where}: Sequence should be of same type")
        return items
    quoted = node.style in ("'", '"') or _explicit_str_tag(node)
    if not quoted and node.value == "":
        raise ValueError(f"{where}: No value")  # rcl refuses "name:" with nothing after it
    return rcl_scalar(node.value, quoted)


def _explicit_str_tag(node: yaml.ScalarNode) -> bool:
    """``!!str 1`` is the string "1" on Jazzy (rcl 5.7+, parse.c get_value checks YAML_STR_TAG; ros2/rcl#999)
    and an integer on Humble, whose parser ignores tags. PyYAML resolves plain scalars to a tag too, so the tag
    counts only when it is written: an event's start mark is at its tag."""
    import ros_double

    if ros_double.DISTRO == "humble" or node.tag != "tag:yaml.org,2002:str":
        return False
    buffer, index = node.start_mark.buffer, node.start_mark.index
    return buffer is not None and buffer[index:].startswith(("!!str", "!<tag:yaml.org,2002:str>"))


def load_parameters_yaml(text: str, source: str = "parameter file") -> Any:
    """A parameter file's (or a ``-p name:=value``'s) YAML with rcl's value types; ValueError where rcl's parser
    refuses it (an empty value, a sequence of mixed types or of non-scalars)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return None if node is None else _rcl_value(node, source)


def node_key_matches(key: str, fully_qualified_name: str) -> bool:
    """Whether a parameter-file node key applies to a node, as rclpy/src/rclpy/node.cpp decides it (humble and
    jazzy): a leading '/' is added when missing, every "/*" becomes "(/\\w+)" (so "/**" is "(/\\w+)*") and
    the result must match the whole fully qualified name."""
    if not key:
        raise ValueError("expected node name to have at least one character")
    name = key if key.startswith("/") else "/" + key
    pattern = name.replace("/*", r"(/\w+)")
    return re.fullmatch(pattern, fully_qualified_name) is not None


def flatten_parameters(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``ros__parameters`` mappings as rcl names them: ``vehicle: {max_accel: 2.5}`` -> vehicle.max_accel."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, name + "."))
        else:
            flat[name] = value
    return flat


def parameters_for(document: Any, fully_qualified_name: str, source: str = "parameter file") -> dict[str, Any]:
    """The parameters a ROS 2 parameter file (parsed YAML) sets for the node, sections applied in file order."""
    if not isinstance(document, dict):
        raise ValueError(f"{source}: a parameter file maps node names to {{ros__parameters: ...}}")
    found: dict[str, Any] = {}
    for key, entry in document.items():
        if not isinstance(entry, dict) or set(entry) != {"ros__parameters"}:
            raise ValueError(f"{source}: {key}: expected exactly one key ros__parameters")
        if node_key_matches(str(key), fully_qualified_name):
            found.update(flatten_parameters(entry["ros__parameters"]))
    return found


def merged_overrides(sources: list[tuple[str, Any]], fully_qualified_name: str) -> dict[str, Any]:
    """The parameter overrides rcl gives a node from every ``-p`` and ``--params-file`` of the command line.

    rcl puts them all in one table keyed by node name (rcl ``arguments.c``: a ``-p`` without a node prefix is
    stored under ``/**``; rcl_yaml_param_parser ``find_node`` merges a key seen again into its first entry and
    appends new keys), and rclpy applies the keys that match the node in table order
    (``_populate_node_parameters_from_rcl_params``, node.cpp, humble and jazzy). So a key keeps the place of its
    first appearance: ``-p x:=1 --params-file f.yaml`` with ``/**/node: {x: 2}`` in the file gives 2, and a later
    ``-p x:=3`` merges into the earlier ``/**`` entry and still gives 2. ``sources``: ("-p", {node key: {name:
    value}}) or ("--params-file", parsed document), in command-line order."""
    table: dict[str, dict[str, Any]] = {}
    for kind, content in sources:
        if kind == "-p":
            for key, values in content.items():
                table.setdefault(key, {}).update(values)
        else:
            for key, entry in content.items():
                table.setdefault(str(key), {}).update(flatten_parameters(entry["ros__parameters"]))
    found: dict[str, Any] = {}
    for key, values in table.items():
        if node_key_matches(key, fully_qualified_name):
            found.update(values)
    return found
