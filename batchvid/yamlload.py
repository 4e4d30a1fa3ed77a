"""YAML loading that remembers where every value was written.

PyYAML composes the file into nodes (with libyaml when available); this module turns the nodes
into plain JSON-like values and keeps the 1-based line and column of every value and every
mapping key, addressed by its path (a tuple of keys and indices). A plain ``10:30`` is the
text written, not YAML 1.1's base-60 number 630; a plain scalar only YAML 1.1 reads as a
boolean or an integer (``NO``, ``on``, ``010``) keeps its text beside the value
(``Positions.yaml11``) for the manifest to put back where it means text. It refuses what safe
loading lets through silently or dangerously: duplicate keys, aliases (the "billion laughs"
expansion), tags that have no JSON meaning, non-UTF-8 bytes and oversized files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from batchvid.errors import Location, ManifestError, ManifestErrors

MAX_MANIFEST_BYTES = 10 * 1024 * 1024

PathKey = tuple[str | int, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{name}" for name in ("null", "bool", "int", "float")}
_STRING_TAGS = {f"{_TAG}str", f"{_TAG}timestamp"}  # a timestamp stays the text written
_NUMBER_TAGS = {f"{_TAG}int", f"{_TAG}float"}
_YAML12_BOOLS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
_YAML11_INT = re.compile(r"[-+]?0[0-9_]+|[-+]?0b[01_]+|[-+]?[0-9][0-9_]*_[0-9_]*")
"""Integers only YAML 1.1 reads so: octal ``010`` (8), binary ``0b11``, ``1_000``."""


def format_path(path: PathKey) -> str:
    """``("jobs", 2, "size")`` -> ``$.jobs[2].size``."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part.isidentifier():
            parts.append(f".{part}")
        else:
            parts.append(f"[{part!r}]")
    return "".join(parts)


@dataclass(slots=True)
class Positions:
    """Where each value (and each mapping key) of a document was written, 1-based."""

    file: str
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    yaml11: dict[PathKey, str] = field(default_factory=dict)
    """The text written of each plain scalar that YAML 1.1 alone reads as a boolean or an
    integer (``NO``, ``on``, ``010``): YAML 1.2 reads it as that text, or another number."""

    def of_value(self, path: PathKey) -> Location:
        """The value at ``path``, or the nearest enclosing value that exists."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return Location(self.file, *found)
        return Location(self.file, 1, 1)

    def of_key(self, path: PathKey) -> Location:
        """The key that names ``path`` (falls back to its value, then to its parents)."""
        found = self.keys.get(path)
        if found is not None:
            return Location(self.file, *found)
        return self.of_value(path)


@dataclass(slots=True)
class YamlDocument:
    data: Any
    positions: Positions


def read_text(path: Path, display: str, *, max_bytes: int, what: str = "file") -> str:
    """The file's text, refusing files over ``max_bytes`` and bytes that are not UTF-8."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ManifestErrors(
            [ManifestError(Location(display, 1, 1), "$", f"cannot read the {what}: {exc.strerror}")]
        ) from exc
    if size > max_bytes:
        raise ManifestErrors(
            [
                ManifestError(
                    Location(display, 1, 1),
                    "$",
                    f"the {what} is {size:,} bytes; the limit is {max_bytes:,} bytes "
                    f"({max_bytes / (1024 * 1024):g} MB)",
                )
            ]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestErrors(
            [ManifestError(Location(display, 1, 1), "$", f"cannot read the {what}: {exc.strerror}")]
        ) from exc
    return decode_utf8(raw, display, what=what)


def decode_utf8(raw: bytes, display: str, *, what: str = "file") -> str:
    """Strict UTF-8 (a leading BOM is allowed); a bad byte is reported at its line and column."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (
            f"the {what} is not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            "cannot be decoded; save it as UTF-8"
        )
        raise ManifestErrors([ManifestError(Location(display, line, column), "$", message)]) from exc


def load_yaml(text: str, display: str) -> YamlDocument:
    """One YAML document as plain values plus positions; every problem as ``ManifestErrors``."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise ManifestErrors([_syntax_error(exc, text, display)]) from exc
    except yaml.reader.ReaderError as exc:
        # A character YAML forbids (NUL, most control characters): point at it.
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason}); remove it"
        raise ManifestErrors([ManifestError(Location(display, line, column), "$", message)]) from exc
    except yaml.YAMLError as exc:
        raise ManifestErrors([ManifestError(Location(display, 1, 1), "$", f"YAML error: {exc}")]) from exc
    except RecursionError as exc:
        raise ManifestErrors(
            [ManifestError(Location(display, 1, 1), "$", "the YAML is nested too deeply")]
        ) from exc
    positions = Positions(display)
    if node is None:
        return YamlDocument(None, positions)
    builder = _Builder(positions)
    try:
        data = builder.build(node, ())
    except RecursionError as exc:
        raise ManifestErrors(
            [ManifestError(Location(display, 1, 1), "$", "the YAML is nested too deeply")]
        ) from exc
    if builder.alias_paths:
        builder.errors.extend(_alias_errors(text, display, builder.alias_paths))
    if builder.errors:
        raise ManifestErrors(builder.errors)
    return YamlDocument(data, positions)


def _syntax_error(exc: yaml.MarkedYAMLError, text: str, display: str) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    at_tab = mark is not None and text[mark.index : mark.index + 1] == "\t"
    problem = exc.problem or "invalid YAML"
    message = f"YAML syntax error: {problem}"
    if exc.context:
        where = f" (line {exc.context_mark.line + 1})" if exc.context_mark is not None else ""
        message += f", {exc.context}{where}"
    if "mapping values are not allowed" in problem or "could not find expected ':'" in problem:
        message += _COLON_HINT
    if at_tab or "'\\t'" in str(exc):
        message += "; YAML does not allow tabs for indentation, use spaces"
    elif "expected a single document" in str(exc):
        message = "a manifest is one YAML document; remove the extra '---'"
    return ManifestError(Location(display, line, column), "$", message)


_COLON_HINT = (
    "; check the indentation of this line and the one above, and quote a value that holds "
    "': ' (a colon and a space), like prompt: \"Scene: a cat\""
)

_ALIAS_MESSAGE = (
    "YAML aliases (*{name}) are not supported: they can expand without bound; "
    "write the value out, or put shared parameters under 'defaults:'"
)


def _alias_errors(text: str, display: str, paths: list[PathKey]) -> list[ManifestError]:
    """One error, at the first alias itself (libyaml's nodes only know where the anchor was)."""
    events = [e for e in yaml.parse(text, Loader=_Loader) if isinstance(e, yaml.AliasEvent)]
    first = events[0] if events else None
    mark = first.start_mark if first is not None else None
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = _ALIAS_MESSAGE.format(name=first.anchor if first is not None else "name")
    if len(events) > 1:
        message += f" ({len(events)} aliases in the file)"
    return [ManifestError(Location(display, line, column), format_path(paths[0]), message)]


class _Builder:
    """Turns composed nodes into values, recording positions and collecting problems."""

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.errors: list[ManifestError] = []
        self.alias_paths: list[PathKey] = []
        self._seen: set[int] = set()
        self._constructor = SafeConstructor()
        self._scalar: dict[str, Callable[[SafeConstructor, ScalarNode], Any]] = {
            tag: SafeConstructor.yaml_constructors[tag] for tag in _SCALAR_TAGS
        }

    def _error(self, node: Node, path: PathKey, message: str) -> None:
        location = Location(self.positions.file, node.start_mark.line + 1, node.start_mark.column + 1)
        self.errors.append(ManifestError(location, format_path(path), message))

    def build(self, node: Node, path: PathKey) -> Any:
        if id(node) in self._seen:
            # The composer hands back the anchored node itself for every alias; refusing
            # aliases outright is what bounds the expansion (located later, see _alias_errors).
            self.alias_paths.append(path)
            return None
        self._seen.add(id(node))
        self.positions.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, ScalarNode):
            return self._scalar_value(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != f"{_TAG}seq":
                self._error(node, path, f"unsupported YAML tag {node.tag!r}")
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        if node.tag != f"{_TAG}map":
            self._error(node, path, f"unsupported YAML tag {node.tag!r}")
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_TAG}merge":
                self._error(key_node, path, "YAML merge keys (<<) are not supported; use 'defaults:'")
                continue
            if not isinstance(key_node, ScalarNode):
                self._error(key_node, path, "a key must be a plain name, not a list or a mapping")
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in first_seen:
                first = first_seen[key].start_mark
                self._error(
                    key_node,
                    child,
                    f"duplicate key {key!r} (first written at line {first.line + 1}); "
                    "YAML would silently keep only the last one",
                )
                continue
            first_seen[key] = key_node
            self.positions.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def _scalar_value(self, node: ScalarNode, path: PathKey) -> Any:
        if node.tag in _STRING_TAGS:
            return node.value
        text: str = node.value
        if node.tag in _NUMBER_TAGS and ":" in text:
            # YAML 1.1's base-60 (10:30 -> 630, 1:30.5 -> 90.5): the text written, as YAML 1.2
            # (and an editor checking the manifest through its $schema line) reads it.
            return text
        construct = self._scalar.get(node.tag)
        if construct is None:
            self._error(node, path, f"unsupported YAML tag {node.tag!r}; write plain values")
            return None
        try:
            value = construct(self._constructor, node)
        except (ConstructorError, ValueError) as exc:
            shown = text if len(text) <= 40 else text[:37] + "…"
            reason = str(exc) if len(str(exc)) <= 120 else str(exc)[:117] + "…"
            self._error(node, path, f"cannot read {shown!r}: {reason}")
            return None
        if value is True or value is False:
            if text not in _YAML12_BOOLS:
                self.positions.yaml11[path] = text
        elif (
            type(value) is int
            and ("_" in text or (len(text) > 1 and text[0] in "0+-"))
            and _YAML11_INT.fullmatch(text)
        ):
            self.positions.yaml11[path] = text
        return value
