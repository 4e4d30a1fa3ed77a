"""JSON as batchvid writes its files (sorted keys, two-space indent, UTF-8 kept), fast and in pieces.

``json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)`` gives the bytes, but with
``indent`` set the standard library leaves its C encoder for a generator per container and
level, about 1 µs a value: over a second for the report of 10,000 jobs. ``indented`` writes the
same text with one plain function call per container and the C string encoder; ``pieces`` yields
it in pieces (one per item of the document's top two levels), so a 100,000-job report is written
without its whole text, or a list of its millions of fragments, ever being in memory.

Anything outside what batchvid writes (a non-string key, a NaN, a type JSON does not know, a
cycle) is handed to ``json.dumps`` itself by ``indented``, so the result is always its result,
error included; ``pieces`` raises ``NotPlain`` there instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from json.encoder import encode_basestring  # the C one, when built
from typing import Any

_STRING = encode_basestring
_INT = int.__repr__
_FLOAT = float.__repr__
_CONTAINERS = (dict, list, tuple)


class _Unusual(Exception):
    """A value this module leaves to ``json.dumps``."""


class NotPlain(ValueError):
    """``pieces`` met a value (a NaN, a non-string key, another type) only ``json.dumps``
    encodes: write ``indented(value)``, which falls back to it, instead."""


def reference(value: Any) -> str:
    """The text ``indented`` must equal: the standard library's (without the final newline)."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


def indented(value: Any) -> str:
    """``reference(value)``, faster."""
    try:
        out: list[str] = []
        _value(value, out, "\n")
        return "".join(out)
    except (_Unusual, RecursionError, TypeError):
        return reference(value)


def pieces(value: Any) -> Iterator[str]:
    """``indented(value)`` in pieces: for a dict or a list, one piece per item of it and of the
    containers it holds, each a piece of its own. Raises ``NotPlain`` (maybe after some pieces)
    at a value only ``json.dumps`` encodes: then write ``indented(value)`` instead."""
    try:
        yield from _pieces(value, "\n", 2)
    except (_Unusual, RecursionError, TypeError):
        raise NotPlain("a value json.dumps must encode") from None


def _pieces(value: Any, nl: str, levels: int) -> Iterator[str]:
    kind = type(value)
    if levels == 0 or not value or kind not in _CONTAINERS:
        out: list[str] = []
        _value(value, out, nl)
        yield "".join(out)
        return
    if kind is dict and any(type(key) is not str for key in value):
        raise _Unusual
    inner = nl + "  "
    sep = ("{" if kind is dict else "[") + inner
    items = sorted(value.items()) if kind is dict else ((None, v) for v in value)
    for key, item in items:
        yield sep if key is None else f"{sep}{_STRING(key)}: "
        yield from _pieces(item, inner, levels - 1)
        sep = "," + inner
    yield nl + ("}" if kind is dict else "]")


def _value(value: Any, out: list[str], nl: str) -> None:
    kind = type(value)
    if kind is dict:
        _dict(value, out, nl)
    elif kind is list or kind is tuple:
        _list(value, out, nl)
    else:
        out.append(_scalar(value))


def _dict(value: dict[Any, Any], out: list[str], nl: str) -> None:
    if not value:
        out.append("{}")
        return
    inner = nl + "  "
    sep = "{" + inner
    for key, item in sorted(value.items()):  # mixed key types: TypeError, json.dumps decides
        if type(key) is not str:
            raise _Unusual
        kind = type(item)
        if kind is str:
            out.append(f"{sep}{_STRING(key)}: {_STRING(item)}")
        elif kind is dict:
            out.append(f"{sep}{_STRING(key)}: ")
            _dict(item, out, inner)
        elif kind is list or kind is tuple:
            out.append(f"{sep}{_STRING(key)}: ")
            _list(item, out, inner)
        else:
            out.append(f"{sep}{_STRING(key)}: {_scalar(item)}")
        sep = "," + inner
    out.append(nl + "}")


def _list(value: list[Any] | tuple[Any, ...], out: list[str], nl: str) -> None:
    if not value:
        out.append("[]")
        return
    inner = nl + "  "
    sep = "[" + inner
    for item in value:
        kind = type(item)
        if kind is str:
            out.append(sep + _STRING(item))
        elif kind is dict:
            out.append(sep)
            _dict(item, out, inner)
        elif kind is list or kind is tuple:
            out.append(sep)
            _list(item, out, inner)
        else:
            out.append(sep + _scalar(item))
        sep = "," + inner
    out.append(nl + "]")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _STRING(value)
    if kind is int:
        return _INT(value)
    if kind is float and value == value and value not in (_INF, -_INF):
        return _FLOAT(value)
    raise _Unusual  # NaN, infinities, subclasses, other types: json.dumps decides


_INF = float("inf")
