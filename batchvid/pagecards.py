"""report.html's cards made in the one report pass (``batchvid.reportfiles``), kept aside.

The page is rendered again whenever what it shows changed: after every run that did some work,
and on the first rerun of a finished directory (every job's ``succeeded`` is then ``skipped``).
Its cards were then made from the job entries a second time, each encoded on its own: most of
the page's cost. Here each card is read off the job entry the pass has just encoded, through a
``str.format`` template of the entry's shape (``jsontext.shaped_parts``: its scalars' texts are
the card's, compact JSON writing them the same), and written to a temporary file beside
report.html as the data block's ``jobs`` text. The gallery copies that text into a page it
renders (``gallery.write_gallery``'s ``cards``) and the file is removed either way. An entry of
another shape (a non-empty list or an odd value among its fields, a provider's field named like
one the card reads) gets its card from ``gallery._card``, as before: the same bytes.
"""

from __future__ import annotations

import contextlib
import operator
import os
import string
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.durable import create_temp
from batchvid.gallery import _COMPACT, GALLERY_NAME, _card, _href, _script_safe
from batchvid.jsontext import Holes, Shape
from batchvid.jsontext import encode_string as _string
from batchvid.reportrecord import CARDS

if TYPE_CHECKING:
    from batchvid.reportpieces import Pieces

_MEDIA_KEYS = ("codec", "duration", "fps", "has_audio", "height", "width")
_SOURCES = frozenset({"id", "status", "sample", "parameters", "prompt_original", "video", "media", "error",
                      "task_id", "warnings", "quality", "cover"})
"""The entry's fields a card is read from (``gallery._card``)."""
_OR_EMPTY = ("video", "media", "error", "parameters", "cover")
"""Fields the card reads as ``entry.get(name) or {}``: a dict, or any false value."""


def card_template(shape: Shape) -> str:
    """``gallery._card``'s compact JSON (keys sorted) as a ``str.format`` template over the
    encoded scalars of an entry of ``shape``, then the card's poster and video link
    (``FormatTemplate`` splits it once: ``str.format`` parses it again at every call)."""
    extra = len(shape.holes)
    params = shape.nested.get(("parameters",))
    fields = {
        "bytes": _value(shape, ("video", "bytes")),
        "error": _subset(shape, ("error",), ("kind", "message")),
        "id": _value(shape, ("id",)),
        "media": _subset(shape, ("media",), _MEDIA_KEYS),
        "model": _value(shape, ("parameters", "model")),
        "params": _object([(key, _value(shape, ("parameters", key))) for key, _ in params or () if key != "prompt"]),
        "poster": f"{{{extra}}}",
        "prompt": _value(shape, ("parameters", "prompt")),
        "prompt_original": _value(shape, ("prompt_original",)),
        "quality": _value(shape, ("quality",)),
        "sample": _value(shape, ("sample",)) if ("sample",) in shape.holes or ("sample",) in shape.nested else "0",
        "sha256": _value(shape, ("video", "sha256")),
        "status": _value(shape, ("status",)),
        "task_id": _value(shape, ("task_id",)),
        "video": f"{{{extra + 1}}}",
        "warnings": "[]",  # a non-empty list has no shape: only [] or a false value reach here
    }
    return _object(list(fields.items()))


def _value(shape: Shape, path: tuple[str, ...]) -> str:
    """The compact text of the entry's value at ``path`` (``.get`` at each step: null when absent)."""
    if path in shape.holes:
        return f"{{{shape.holes[path]}}}"
    signature = shape.nested.get(path)
    if signature is None:
        return "null"
    return _object([(key, _value(shape, (*path, key))) for key, _ in signature])


def _subset(shape: Shape, path: tuple[str, ...], keys: tuple[str, ...]) -> str:
    """``{k: d.get(k) for k in keys} if d else None`` of the dict at ``path``."""
    if path not in shape.nested:
        return "null"  # None or a false value: the caller checked it is no other
    return _object([(key, _value(shape, (*path, key))) for key in keys])


def _object(items: list[tuple[str, str]]) -> str:
    return "{{" + ",".join(f"{_string(key).replace('{', '{{').replace('}', '}}')}:{text}" for key, text in items) + "}}"


CardArgs = tuple[Mapping[str, Any], Shape | None, tuple[str, ...], Mapping[str, Any], str | None]
"""``CardTexts.add``'s arguments but the job's number: entry, shape, parts, provided, poster."""


class CardTexts:
    """The data block's ``jobs`` text (cards joined by commas) from job ``first`` on, a card
    at a time, in a temporary file beside report.html; ``pieces`` reads it back (with a comma
    first when ``first`` is not 0: the cards before it are made where the page is rendered),
    ``discard`` removes it."""

    def __init__(self, root: Path, first: int = 0, marks: Pieces | None = None) -> None:
        fd, self.path = create_temp(root / GALLERY_NAME, ".tmp")
        self._marks = marks
        """Where each card's place is noted (``reportpieces``: only with ``first`` 0)."""
        self._offset = 0
        self.at: int | None = None
        """Where the cards start in the page they were copied into (``gallery._page_pieces``)."""
        self.sweeps: bytes | None = None
        """The page's ``sweeps`` text, when the page being replaced has it (``reportpieces``)."""
        self.sweeps_at: list[int] | None = None
        """Where the page's ``sweeps`` text is, once written after cards whose place ``at`` is."""
        self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._templates: dict[Shape, FormatTemplate] = {}
        self.first = first
        self._sep = "," if first else ""
        self.complete = True
        """False once a card could not be made (an odd value): the page, when rendered, makes
        its cards itself (and meets the same error there, as it did before)."""

    def add(self, entry: Mapping[str, Any], shape: Shape | None, parts: tuple[str, ...],
            provided: Mapping[str, Any], poster: str | None, number: int = 0) -> None:
        """The card of ``entry`` (its ``shape`` and encoded ``parts`` when it has one; the
        provider's fields it holds; its poster link, the cover's when None), job ``number``'s."""
        if not self.complete:
            return
        try:
            text = _script_safe(self._card(entry, shape, parts, provided, poster))
        except Exception:  # the page's own rendering decides what such a value does
            self.complete = False
            return
        self._write(text, number, number + 1)

    def add_block(self, data: bytes, number: int, end: int) -> None:
        """The cards of jobs ``number`` to ``end`` (not included) as the page being replaced
        has them (``data``: their text, commas between them)."""
        if self.complete:
            self._write(data.decode("utf-8"), number, end)

    def _write(self, text: str, number: int, end: int) -> None:
        self._fh.write(self._sep + text)
        if self._marks is None:
            self._sep = ","
            return
        self._offset += len(self._sep)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        self._offset += size
        self._sep = ","
        if end == number + 1:
            self._marks.mark(CARDS, number, self._offset, size, text)
        else:
            self._marks.placed(CARDS, number, end, self._offset - size)

    def _card(self, entry: Mapping[str, Any], shape: Shape | None, parts: tuple[str, ...],
              provided: Mapping[str, Any], poster: str | None) -> str:
        if not poster:
            poster = _href((entry.get("cover") or {}).get("path"))
        if (shape is None or not _SOURCES.isdisjoint(provided)
                or any(type(value) is not dict and value for value in map(entry.get, _OR_EMPTY))):
            return _COMPACT(_card(entry, poster))
        template = self._templates.get(shape)
        if template is None:
            if len(self._templates) >= 64:
                self._templates.clear()
            template = self._templates[shape] = FormatTemplate(card_template(shape))
        link = _href((entry["video"] or {}).get("path"))
        return template.fill((*parts, "null" if poster is None else _string(poster),
                              "null" if link is None else _string(link)))

    def size(self) -> int:
        """The bytes of the cards' text (``pieces``')."""
        self._fh.flush()
        return os.fstat(self._fh.fileno()).st_size

    def pieces(self) -> Iterator[str]:
        self._fh.flush()
        with open(self.path, encoding="utf-8", newline="") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class FormatTemplate:
    """A ``str.format`` template of numbered fields as its literal pieces with holes between
    (``Holes``) and the getter (``pick``) of its values in the order the holes take them:
    ``fill(values)`` is ``template.format(*values)``, without parsing the template again at
    every call."""

    __slots__ = ("_filled", "pick")

    def __init__(self, template: str) -> None:
        order: list[int] = []
        literals = [""]
        for literal, field, _, _ in string.Formatter().parse(template):
            literals[-1] += literal
            if field is not None:
                order.append(int(field))
                literals.append("")
        self.pick: Callable[[tuple[str, ...]], tuple[str, ...]]
        if len(order) > 1:
            self.pick = operator.itemgetter(*order)  # a tuple of the values
        else:
            self.pick = lambda values: tuple(values[at] for at in order)
        self._filled = Holes.between(literals)

    def fill(self, values: tuple[str, ...]) -> str:
        """``template.format(*values)``."""
        return self._filled.fill(self.pick(values))
