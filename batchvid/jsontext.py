"""JSON as batchvid writes its files (sorted keys, two-space indent, UTF-8 kept), fast and in pieces.

``json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)`` gives the bytes, but with
``indent`` set the standard library leaves its C encoder for a generator per container and
level, about 1 µs a value: over a second for the report of 10,000 jobs. ``indented`` writes the
same text with one plain function call per container and the C string encoder; ``pieces`` yields
it in pieces (one per item of the document's top two levels), so a 100,000-job report is written
without its whole text, or a list of its millions of fragments, ever being in memory. There,
each dict at the bottom level (a report's job entry, a lock's pin) is written through a template
of its shape, its scalars encoded by json's C encoder in one call (see "dicts of one shape"
below): about the cost of ``json.dumps`` without indentation.

Anything outside what batchvid writes (a non-string key, a NaN, a type JSON does not know, a
cycle) is handed to ``json.dumps`` itself by ``indented``, so the result is always its result,
error included; ``pieces`` raises ``NotPlain`` there instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring  # the C one, when built
from typing import Any, TypeVar

_STRING = encode_basestring
encode_string = encode_basestring
"""A string's JSON text, UTF-8 kept (json's C function)."""
_INT = int.__repr__
_FLOAT = float.__repr__
_CONTAINERS = (dict, list, tuple)
_T = TypeVar("_T")


class Streamed(Sequence[Any]):
    """A list whose items are made as they are read (a report's job entries): ``pieces``,
    ``indented`` and ``reference`` write it as the list it reads as, never holding its items."""


class Encoded(Streamed):
    """A ``Streamed`` whose writer encodes its items itself: ``pieces`` asks ``texts(nl)`` for
    each item's text at the indentation it is written at (``item_text(item, nl)``'s), and
    writes them as they are; ``reference`` and ``indented`` read it as the list it is."""

    def texts(self, nl: str) -> Iterator[str]:
        raise NotImplementedError


def item_text(value: Any, nl: str) -> str:
    """``value``'s text as an item written at indentation ``nl`` (``Encoded.texts``); raises
    ``NotPlain`` at a value only ``json.dumps`` encodes."""
    try:
        if type(value) is dict and value and _ENCODER is not None:
            return _shaped(value, nl)
        out: list[str] = []
        _value(value, out, nl)
        return "".join(out)
    except (_Unusual, RecursionError, TypeError, ValueError):
        raise NotPlain("a value json.dumps must encode") from None


class StreamedItems:
    """A dict whose items are made as they are read, in the order of their keys (a lock's pins
    of every job): ``items()`` yields them sorted by key, each key once."""

    def items(self) -> Iterable[tuple[str, Any]]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class EncodedItems(StreamedItems):
    """A ``StreamedItems`` whose writer encodes its items itself: ``pieces`` asks
    ``texts(nl)`` for each (key, text of its value at indentation ``nl``), sorted by key;
    ``reference`` and ``indented`` read ``items()``."""

    def texts(self, nl: str) -> Iterator[tuple[str, str]]:
        raise NotImplementedError


class _Unusual(Exception):
    """A value this module leaves to ``json.dumps``."""


class NotPlain(ValueError):
    """``pieces`` met a value (a NaN, a non-string key, another type) only ``json.dumps``
    encodes: write ``indented(value)``, which falls back to it, instead."""


def reference(value: Any) -> str:
    """The text ``indented`` must equal: the standard library's (without the final newline)."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=_listed)


def _listed(value: Any) -> Any:
    if isinstance(value, Streamed):
        return list(value)
    if isinstance(value, StreamedItems):
        return dict(value.items())
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def indented(value: Any) -> str:
    """``reference(value)``, faster."""
    try:
        out: list[str] = []
        _value(value, out, "\n")
        return "".join(out)
    except (_Unusual, RecursionError, TypeError, ValueError):
        return reference(value)


def pieces(value: Any) -> Iterator[str]:
    """``indented(value)`` in pieces: for a dict or a list, one piece per item of it and of the
    containers it holds, each a piece of its own. Raises ``NotPlain`` (maybe after some pieces)
    at a value only ``json.dumps`` encodes: then write ``indented(value)`` instead."""
    try:
        yield from _pieces(value, "\n", 2)
    except (_Unusual, RecursionError, TypeError, ValueError):
        raise NotPlain("a value json.dumps must encode") from None


def _pieces(value: Any, nl: str, levels: int) -> Iterator[str]:
    if isinstance(value, Streamed | StreamedItems):
        if not value:
            value = [] if isinstance(value, Streamed) else {}
        else:
            yield from _streamed_pieces(value, nl, levels)
            return
    kind = type(value)
    if levels == 0 and kind in _CONTAINERS and len(value) > _MAX_KEYS:
        levels = 1  # thousands of items (a report's timing of every job): a piece each
    if levels == 0 or not value or kind not in _CONTAINERS:
        if kind is dict and value and _ENCODER is not None:
            yield _shaped(value, nl)
            return
        out: list[str] = []
        _value(value, out, nl)
        yield "".join(out)
        return
    if kind is dict and any(type(key) is not str for key in value):
        raise _Unusual
    items = sorted(value.items()) if kind is dict else ((None, v) for v in value)
    yield from _item_pieces(items, "{" if kind is dict else "[", nl, levels)


def _streamed_pieces(value: Streamed | StreamedItems, nl: str, levels: int) -> Iterator[str]:
    """A piece per item (``item_text``'s: the text of its own pieces joined)."""
    inner = nl + "  "
    if isinstance(value, Streamed):
        texts = value.texts(inner) if isinstance(value, Encoded) else (item_text(v, inner) for v in value)
        sep = "[" + inner
        for text in texts:
            yield sep + text
            sep = "," + inner
        yield nl + "]"
        return
    sep = "{" + inner
    if isinstance(value, EncodedItems):
        for key, text in _in_order(value.texts(inner)):
            yield f"{sep}{_STRING(key)}: {text}"
            sep = "," + inner
    else:
        for key, item in _in_order(value.items()):
            yield f"{sep}{_STRING(key)}: {item_text(item, inner)}"
            sep = "," + inner
    yield nl + "}"


def _in_order(items: Iterable[tuple[str, _T]]) -> Iterator[tuple[str, _T]]:
    """``items``, each key checked to be a string after the one before (json.dumps's order)."""
    last = None
    for key, item in items:
        if type(key) is not str or (last is not None and key <= last):
            raise _Unusual
        last = key
        yield key, item


def _item_pieces(
    items: Iterable[tuple[str | None, Any]], opening: str, nl: str, levels: int
) -> Iterator[str]:
    inner = nl + "  "
    sep = opening + inner
    for key, item in items:
        yield sep if key is None else f"{sep}{_STRING(key)}: "
        yield from _pieces(item, inner, levels - 1)
        sep = "," + inner
    yield nl + ("}" if opening == "{" else "]")


def _value(value: Any, out: list[str], nl: str) -> None:
    kind = type(value)
    if kind is dict:
        _dict(value, out, nl)
    elif kind is list or kind is tuple:
        _list(value, out, nl)
    elif isinstance(value, Streamed):
        _list(list(value), out, nl)
    elif isinstance(value, StreamedItems):
        _dict(dict(value.items()), out, nl)
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
        elif kind is list or kind is tuple or isinstance(item, Streamed):
            out.append(f"{sep}{_STRING(key)}: ")
            _list(item if kind is list or kind is tuple else list(item), out, inner)
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
        elif kind is list or kind is tuple or isinstance(item, Streamed):
            out.append(sep)
            _list(item if kind is list or kind is tuple else list(item), out, inner)
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


# -- dicts of one shape: a report's job entries, a lock's pins ----------------------------------
#
# The job entries of a report all have the same keys, nested the same way, with scalars in the
# same places: the indented text of an entry is one text with holes for its scalars. A
# ``Shape`` is that text (``template``, its literal parts ``%``-escaped) and a function made
# for it (``scalars``) that checks a dict's keys and those of its nested dicts against the
# shape and returns its scalars in the text's order, straight-line code generated once per
# shape (as ``dataclasses`` makes ``__init__``; keys are passed in as values, never as code).
# The scalars are encoded by json's C encoder in one call, as a list whose item separator
# (``_HOLE``, a control character JSON always escapes inside strings) can only appear between
# them, so the text splits into exactly one piece per scalar. A dict that does not fit the last
# shape used gets its own (made once per distinct shape and indentation).


class Holes:
    """A ``%s`` template (``%%`` for a literal ``%``) filled by joining its literal pieces with
    the values: ``fill(values)`` is ``template % values``, without the ``%`` operator's scan of
    the template's every character at each call (a job entry's ~1.5 KB, several per job)."""

    __slots__ = ("_pieces",)

    def __init__(self, template: str) -> None:
        literals = [""]
        for token in _HOLE_MARK.split(template):
            if token == "%s":
                literals.append("")
            else:
                literals[-1] += "%" if token == "%%" else token
        self._pieces = _between(literals)

    @classmethod
    def between(cls, literals: Sequence[str]) -> Holes:
        """The holes between ``literals`` (one literal more than holes), taken as they are."""
        holes = cls.__new__(cls)
        holes._pieces = _between(literals)
        return holes

    def fill(self, values: Sequence[str]) -> str:
        """The template's text with ``values`` (strings, as many as its holes) in its holes."""
        pieces = self._pieces.copy()
        pieces[1::2] = values  # a ValueError when they are not as many
        return "".join(pieces)


def _between(literals: Sequence[str]) -> list[str]:
    """``literals`` with a place for a value between each two."""
    pieces = [""] * (2 * len(literals) - 1)
    pieces[::2] = literals
    return pieces


_HOLE_MARK = re.compile(r"(%%|%s)")
"""A template's escapes and holes (``split`` keeps them as pieces of their own)."""


class _Misfit(Exception):
    """A dict that does not have the shape tried."""


class Shape:
    """The shape of a dict (``shaped_parts``): ``holes``, the position of each scalar among
    the encoded parts by its path of keys; ``nested``, the signature of each non-empty dict
    inside by its path (``()``: the dict itself): sorted (key, signature of a non-empty dict
    or None) pairs."""

    __slots__ = ("_filled", "holes", "nested", "scalars", "template")

    def __init__(self, signature: tuple[tuple[str, Any], ...], nl: str) -> None:
        keys: list[str] = []
        key_sets: list[frozenset[str]] = []
        lines = ["def scalars(d0):"]
        holes: list[str] = []
        self.holes: dict[tuple[str, ...], int] = {}
        self.nested: dict[tuple[str, ...], tuple[tuple[str, Any], ...]] = {}

        def walk(name: str, sig: tuple[tuple[str, Any], ...], nl: str, path: tuple[str, ...]) -> str:
            self.nested[path] = sig
            key_sets.append(frozenset(key for key, _ in sig))
            lines.append(f" if type({name}) is not dict or {name}.keys() != S[{len(key_sets) - 1}]: raise M")
            inner, parts = nl + "  ", []
            for key, sub in sig:
                keys.append(key)
                got = f"{name}[K[{len(keys) - 1}]]"
                text = _STRING(key).replace("%", "%%") + ": "
                if sub is None:
                    self.holes[(*path, key)] = len(holes)
                    holes.append(got)
                    parts.append(text + "%s")
                else:
                    child = f"d{len(key_sets)}"
                    lines.append(f" {child} = {got}")
                    parts.append(text + walk(child, sub, inner, (*path, key)))
            return "{" + inner + ("," + inner).join(parts) + nl + "}"

        self.template = walk("d0", signature, nl, ())
        self._filled = Holes(self.template)
        lines.append(f" return [0, {', '.join(holes)}]")
        namespace: dict[str, Any] = {"K": tuple(keys), "S": tuple(key_sets), "M": _Misfit}
        exec("\n".join(lines), namespace)  # code of our own making; keys are data
        self.scalars: Callable[[dict[str, Any]], list[Any]] = namespace["scalars"]

    def text(self, parts: Sequence[str]) -> str:
        """``template % parts``: the text of a dict of this shape, its scalars' texts given."""
        return self._filled.fill(parts)


def _is_dict(value: Any) -> bool:
    return type(value) is dict and bool(value)


_HOLE = "\x00"
_SCALARS: Any = None
"""json's C encoder for a list of scalars, ``_HOLE`` between them (made at first use)."""
_SHAPES: dict[tuple[str, Any], Shape] = {}
_LAST: dict[str, Shape] = {}
"""The shape last used at each indentation: the next dict there most likely has it too."""
_MAX_SHAPES = 256
_MAX_KEYS = 200
"""Dicts of more keys than this in all (a report's timing of every job) go the long way."""


def _shaped(value: dict[Any, Any], nl: str) -> str:
    """``_value(value)``'s text for a non-empty dict, through its shape's template."""
    shaped = _parts(value, nl)
    if shaped is None:
        out: list[str] = []
        _dict(value, out, nl)
        return "".join(out)
    shape, parts = shaped
    return shape.text(parts)


def shaped_parts(value: Any, nl: str) -> tuple[str, Shape | None, tuple[str, ...]]:
    """``item_text(value, nl)``, with, for a dict written through a template of its shape, the
    shape and its scalars' texts (else None and no parts). Raises ``NotPlain`` as ``item_text``."""
    try:
        shaped = _parts(value, nl) if type(value) is dict and value and _ENCODER is not None else None
    except (_Unusual, RecursionError, TypeError, ValueError):
        raise NotPlain("a value json.dumps must encode") from None
    if shaped is None:
        return item_text(value, nl), None, ()
    shape, parts = shaped
    return shape.text(parts), shape, parts


def _parts(value: dict[Any, Any], nl: str) -> tuple[Shape, tuple[str, ...]] | None:
    """The shape of non-empty dict ``value`` and the texts of its scalars, or None for a dict
    written the long way (too many keys, or a non-empty list or dict among its scalars)."""
    global _SCALARS
    if _SCALARS is None:
        _SCALARS = _ENCODER(None, _refuse, _STRING, None, ":\x01 ", _HOLE, False, False, False)
    shape = _LAST.get(nl)
    try:
        if shape is None:
            raise _Misfit
        scalars = shape.scalars(value)
    except _Misfit:
        shape = _shape_of(value, nl)
        if shape is None:  # too big to be worth a template
            return None
        scalars = shape.scalars(value)
    text = "".join(_SCALARS(scalars, 0))
    # A non-empty dict among the scalars shows its key separator; a non-empty list, a _HOLE
    # followed by "[" and not "]": such a dict is written the long way.
    if ":\x01" in text or text.count(_HOLE + "[") != text.count(_HOLE + "[]"):
        return None
    return shape, tuple(text[3:-1].split(_HOLE))


def _shape_of(value: dict[Any, Any], nl: str) -> Shape | None:
    """The shape of ``value`` (made at its first use), or None for a dict of more than
    ``_MAX_KEYS`` keys in all."""
    budget = [_MAX_KEYS]
    signature = _signature(value, budget)
    if budget[0] < 0:
        return None
    shape = _SHAPES.get((nl, signature))
    if shape is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shape = _SHAPES[nl, signature] = Shape(signature, nl)
    _LAST[nl] = shape
    return shape


def _signature(value: dict[Any, Any], budget: list[int]) -> tuple[tuple[str, Any], ...]:
    """The keys of ``value``, sorted, each with the signature of its value when that is a
    non-empty dict (else None); ``budget[0]`` less the keys seen (given up below 0)."""
    budget[0] -= len(value)
    if budget[0] < 0:
        return ()
    if any(type(key) is not str for key in value):
        raise _Unusual
    return tuple(sorted((key, _signature(item, budget) if _is_dict(item) else None) for key, item in value.items()))


def _refuse(value: Any) -> Any:
    raise _Unusual  # a type JSON does not know: json.dumps decides


_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
"""json's C encoder (None on a Python built without it: then dicts are written the long way)."""
