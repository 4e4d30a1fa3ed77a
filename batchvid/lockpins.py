"""batchvid.lock's pins made in the report pass (``batchvid.reportfiles``), kept aside.

Each done job's pin is read off its encoded entry through a template of the entry's shape
(``pin_template``), or copied from the lock being replaced (``reportpieces``), and kept in a
temporary file beside the lock in manifest order; the lock's writer reads them back in id
order, a run at a time.
"""

from __future__ import annotations

import contextlib
import operator
import os
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.durable import _write_all, create_temp
from batchvid.jsontext import EncodedItems, Holes, Shape, item_text
from batchvid.jsontext import encode_string as _string
from batchvid.outcome import Outcome
from batchvid.report import Pins, _pin
from batchvid.reportpieces import Pieces
from batchvid.reportrecord import LOCK

if TYPE_CHECKING:
    from batchvid.textfile import TextFile

_BATCH_CHARS = 1 << 18
"""Pins' bytes gathered per write."""
_PIN_NL = "\n    "
"""The indentation of a pin in batchvid.lock (an item of its ``jobs``)."""
_PIN_SOURCES = frozenset({"key", "task_id", "video", "poster", "prompt", "prompt_original"})
"""The entry's fields a pin is read from (``report._pin``)."""
_FALSE_TEXTS = frozenset({"null", "false", "0", "0.0", "-0.0", '""', "[]", "{}"})
"""The texts of the values ``if video`` takes as false."""


class PinTexts(EncodedItems):
    """batchvid.lock's pins (``report.Pins``), each made in the pass from its job's encoded
    entry through a template of the entry's shape (``pin_template``), kept in a temporary file
    beside the lock and read back in id order as the lock is written. Once a pin cannot be
    made so (an odd value: ``complete`` False), the lock's pins are made from ``Pins``."""

    def __init__(self, root: Path, outcomes: Sequence[Outcome]) -> None:
        self._outcomes = outcomes
        self._count = 0
        self._fd, self._tmp = create_temp(root / "batchvid.lock", ".tmp")
        self._ids: list[str] = []
        self._ends = array("q")
        """Each pin's job id and where its text ends in the file (a few bytes a pin)."""
        self._numbers = array("q")
        """Each pin's job number (its place in the outcomes)."""
        self.marks: tuple[Pieces, TextFile] | None = None
        """Where each pin's place in batchvid.lock is noted, and the lock being written."""
        self.copied = 0
        """The pins given as they were (``add_copied``)."""
        self._copied = bytearray()
        """Whether each pin is one of those (1), its text not in the file."""
        self.previous: Callable[[int, int], bytes] | None = None
        """Job number -> its piece of a file in the replaced report (``Previous.piece``)."""
        self._batch: list[bytes] = []
        self._size = self._written = 0
        self._templates: dict[Shape, tuple[Holes, Callable[[tuple[str, ...]], tuple[str, ...]], int | None] | None] = {}
        self.complete = True

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return Pins(self._outcomes).items()

    def add(self, o: Outcome, entry: Mapping[str, Any], shape: Shape | None, parts: tuple[str, ...],
            provided: Mapping[str, Any], number: int) -> None:
        """The pin of done outcome ``o`` (job ``number``), whose entry is ``entry`` (``shape``
        and encoded ``parts`` when it has one; ``provided``: the provider's fields it holds)."""
        self._count += 1
        if not self.complete:
            return
        try:
            data = self._text(o, shape, parts, provided).encode("utf-8")
        except Exception:  # the lock's own writer decides what such a value does
            self.complete = False
            return
        self._keep(o, data, number)

    def add_copied(self, o: Outcome, number: int) -> None:
        """The pin of done outcome ``o`` (job ``number``): its text in the lock being
        replaced (``previous``), read only if the lock is written (``Pieces.kept``)."""
        self._count += 1
        self.copied += 1
        if self.complete:
            self._keep(o, b"", number)
            self._copied[-1] = 1

    def _keep(self, o: Outcome, data: bytes, number: int) -> None:
        self._copied.append(0)
        self._size += len(data)
        self._ids.append(o.job.id)
        self._ends.append(self._size)
        self._numbers.append(number)
        self._batch.append(data)
        if self._size - self._written >= _BATCH_CHARS:
            self._flush()

    def _text(self, o: Outcome, shape: Shape | None, parts: tuple[str, ...], provided: Mapping[str, Any]) -> str:
        made = None
        if shape is not None and _PIN_SOURCES.isdisjoint(provided):
            if shape not in self._templates:
                if len(self._templates) >= 64:
                    self._templates.clear()
                template = pin_template(shape)
                self._templates[shape] = None if template is None else (Holes(template[0]), *template[1:])
            made = self._templates[shape]
        if made is None or (made[2] is not None and parts[made[2]] not in _FALSE_TEXTS):
            return item_text(_pin(o), _PIN_NL)
        return made[0].fill(made[1](parts))

    def _flush(self) -> None:
        _write_all(self._fd, self._batch)
        self._batch.clear()
        self._written = self._size

    def texts(self, nl: str) -> Iterator[tuple[str, str]]:
        if nl != _PIN_NL or not self.complete:
            if self.marks is not None:
                self.marks[0].complete = False
            yield from ((key, item_text(pin, nl)) for key, pin in self.items())
            return
        self._flush()
        ids, ends = self._ids, self._ends
        order = sorted(range(len(ids)), key=ids.__getitem__)  # stable, as Pins sorts
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            first = 0
            while first < len(order):
                # The pins next in id order that also follow each other in the file (ids in
                # manifest order, as a prompts file's often are): read at once.
                start = ends[order[first] - 1] if order[first] else 0
                last = first
                while (last + 1 < len(order) and order[last + 1] == order[last] + 1
                       and ends[order[last + 1]] - start <= _READ_BYTES):
                    last += 1
                block = os.pread(fd, ends[order[last]] - start, start)
                for at in order[first:last + 1]:
                    begin = ends[at - 1] - start if at else 0
                    data = block[begin:ends[at] - start]
                    if self._copied[at] and self.previous is not None:
                        data = self.previous(LOCK, self._numbers[at])
                    yield ids[at], data.decode("utf-8")
                    if self.marks is not None:  # written: it ends here
                        self.marks[0].mark(LOCK, self._numbers[at], self.marks[1].offset, len(data))
                first = last + 1
        finally:
            os.close(fd)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


_READ_BYTES = 1 << 20
"""The most pins' bytes read back by one call."""


def pin_template(shape: Shape) -> tuple[str, Callable[[tuple[str, ...]], tuple[str, ...]], int | None] | None:
    """``report._pin``'s text at ``_PIN_NL`` as a ``%`` template over the encoded scalars of an
    entry of ``shape``: (template, the getter of its values, the position of the entry's
    ``video`` among them when it is a scalar, which must then be false), or None for a shape
    whose pin is made the long way (a video without a sha256, one prompt without the other)."""
    holes, nested = shape.holes, shape.nested

    def has(path: tuple[str, ...]) -> bool:
        return path in holes or path in nested

    if ("video",) in nested and not has(("video", "sha256")) or has(("prompt",)) != has(("prompt_original",)):
        return None
    items: list[tuple[str, tuple[str, ...] | None]] = [("key", ("key",))]
    items += [(name, (name,)) for name in ("poster", "prompt", "prompt_original") if has((name,))]
    items += [("sha256", ("video", "sha256") if ("video",) in nested else None), ("task_id", ("task_id",))]
    order: list[int] = []
    text = _indented(shape, items, _PIN_NL, order)
    getter = operator.itemgetter(*order)
    pick: Callable[[tuple[str, ...]], tuple[str, ...]] = getter if len(order) > 1 else lambda p: (getter(p),)
    return text, pick, holes.get(("video",))


def _indented(shape: Shape, items: list[tuple[str, tuple[str, ...] | None]], nl: str, order: list[int]) -> str:
    """The indented text of a dict of ``items`` (each key with the path of its value in the
    entry, None for null) as a ``%`` template; ``order`` gets the parts it takes, in order."""
    inner, fields = nl + "  ", []
    for key, path in items:
        if path is None:
            value = "null"
        elif path in shape.holes:
            order.append(shape.holes[path])
            value = "%s"
        else:
            value = _indented(shape, [(k, (*path, k)) for k, _ in shape.nested[path]], inner, order)
        fields.append(_string(key).replace("%", "%%") + ": " + value)
    return "{" + inner + ("," + inner).join(fields) + nl + "}"
