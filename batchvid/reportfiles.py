"""A run's report files written in one pass over its outcomes (``report.write_outputs``).

Each outcome's files records are decoded once (``Outcome.files``) and its report.json entry made
once; the entry then feeds report.json, report.md, junit.xml, metadata.jsonl and the gallery's
poster links together, each file written to its temporary name as the pass goes and renamed
over the old one at the end, in the order ``report.write_report_files`` writes them (report.json,
report.md, junit.xml, metadata.jsonl; then batchvid.lock, whose pins go in job id order, and
report.html, whose cards are made again only when the page shows something new). The entries
are never all held. The bytes are those of ``report.write_report_files``, which stays the
reference, and the fallback for a value only ``json.dumps`` writes (a NaN, a huge int).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from batchvid.durable import _write_all, create_temp, fsync_dir, make_dir, write_json
from batchvid.gallery import ContentHash, poster_link, write_gallery
from batchvid.jsontext import Encoded, EncodedItems, Holes, Shape, item_text, shaped_parts
from batchvid.jsontext import encode_string as _string
from batchvid.junit import JUNIT_END, junit_start, testcase, testcase_opening
from batchvid.markdown import markdown_lines
from batchvid.outcome import Files, Outcome
from batchvid.pagecards import CardTexts, FormatTemplate
from batchvid.report import (
    MarkdownJobs,
    Pins,
    RunInfo,
    _pin,
    job_entry,
    lazy_report,
    lock_data,
    lock_document,
    metadata_row,
    metadata_text,
    write_legacy,
)


def write_outputs(root: Path, outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """Write every report file atomically; returns the report (its ``jobs`` made as read)."""
    report = lazy_report(outcomes, info)
    make_dir(root)
    content = ContentHash(previous=root / "report.json")
    one_pass = _Pass(root, report, outcomes, content)
    try:
        try:
            with _TextFile(root / "report.json") as json_file:
                try:
                    for piece in content.report_pieces({**report, "jobs": one_pass}):
                        json_file.write(piece)
                    one_pass.commit(json_file)
                finally:
                    one_pass.discard()
        except ValueError:  # a value only json.dumps writes, or text UTF-8 cannot hold
            write_legacy(root, report, outcomes, info)
            return report
        fsync_dir(root)
        pins = one_pass.pins
        lock = lock_data(outcomes, info) if pins is None else lock_document(info.name, info.provider, {}) | {"jobs": pins}
        write_json(root / "batchvid.lock", lock)
        write_gallery(root, report, content=content, posters=one_pass.posters, cards=one_pass.cards)
    finally:
        for kept in (one_pass.cards, one_pass.pins):
            if kept is not None:
                kept.discard()
    return report


class _Pass(Encoded):
    """report.json's job entries, made and encoded as it is written; each entry also goes to
    the other files of the pass (report.md, junit.xml, metadata.jsonl) and the poster links."""

    def __init__(self, root: Path, report: Mapping[str, Any], outcomes: Sequence[Outcome],
                 content: ContentHash) -> None:
        self._root, self._report, self._outcomes, self._content = root, report, outcomes, content
        self.markdown = MarkdownJobs()
        self.posters: dict[str, str] = {}
        self.cards: CardTexts | None = None
        """report.html's cards, made as the entries are (``pagecards``)."""
        self.pins: PinTexts | None = None
        """batchvid.lock's pins, likewise."""
        self._files: list[_TextFile] = []
        self._row_templates: dict[tuple[Shape, bool], FormatTemplate | None] = {}

    def __len__(self) -> int:
        return len(self._outcomes)

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("the pass's entries are read once, in order")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        raise TypeError("the pass's entries are read once, as texts")

    def texts(self, nl: str) -> Iterator[str]:
        junit, metadata = self._start()
        opening, last = testcase_opening(self._report), len(self._outcomes) - 1
        base, markdown, posters = os.fspath(self._root), self.markdown, self.posters
        pins = self.pins = PinTexts(self._root, self._outcomes)
        cards, card = None, None
        for number, o in enumerate(self._outcomes):
            if cards is None and not self._content.same:  # the page shows something new from here
                cards = self.cards = self._cards_from(number, card)
            files = o.files()
            entry = job_entry(o, files)
            text, shape, parts = shaped_parts(entry, nl)
            markdown.add(entry)
            junit.write(testcase(opening, entry) + ("\n" if number == last else "\n  "))
            link = None
            if o.status in ("succeeded", "skipped"):
                video = files[0]
                if video is not None:
                    metadata.write(self._row(o, video, files, entry, shape, parts))
                link = poster_link(base, entry)
                if link is not None:
                    posters[o.job.id] = link
                pins.add(o, entry, shape, parts, files[4])
            card = (entry, shape, parts, files[4], link)
            if cards is not None:
                cards.add(*card)
            yield text
        if cards is None and not self._content.same:  # the last entry differs
            self.cards = self._cards_from(len(self._outcomes), card)
        if self._outcomes:
            junit.write(JUNIT_END)

    def _cards_from(self, number: int, before: tuple[Any, ...] | None) -> CardTexts:
        """report.html's cards from job ``number`` on, or from the one before it (whose card
        arguments are ``before``: its entry differed from the page's, learnt once written)."""
        if before is None:
            return CardTexts(self._root)
        cards = CardTexts(self._root, number - 1)
        cards.add(*before)
        return cards

    def _row(self, o: Outcome, video: dict[str, Any], files: Files, entry: dict[str, Any],
             shape: Shape | None, parts: tuple[str, ...]) -> str:
        """The metadata.jsonl line of ``o``: its entry's scalars, already encoded, put in the
        row's template (``row_template``) where the entry has the usual shape."""
        media, provided = files[2], files[4]
        if shape is not None and (media is None or type(media) is dict) and _ROW_SOURCES.isdisjoint(provided):
            key = (shape, o.enhance is not None)
            if key not in self._row_templates:
                if len(self._row_templates) >= 64:
                    self._row_templates.clear()
                made = row_template(shape, key[1])
                self._row_templates[key] = None if made is None else FormatTemplate(made)
            template = self._row_templates[key]
            if template is not None:
                return template.fill(parts)
        return metadata_text(metadata_row(o, video, media, entry["parameters"]))

    def _start(self) -> tuple[_TextFile, _TextFile]:
        """junit.xml and metadata.jsonl opened, junit.xml's head written."""
        junit = _TextFile(self._root / "junit.xml")
        self._files.append(junit)  # discarded even when metadata.jsonl's temporary file cannot be made
        metadata = _TextFile(self._root / "metadata.jsonl")
        self._files.append(metadata)
        junit.write(junit_start(self._report, bool(self._outcomes)))
        return junit, metadata

    def commit(self, report_json: _TextFile) -> None:
        """Rename report.json, then report.md, junit.xml and metadata.jsonl into place."""
        if not self._files:  # no jobs: report.json's writer never asked for their texts
            self._start()
        markdown = _TextFile(self._root / "report.md")
        self._files.insert(0, markdown)
        lines = markdown_lines(self._report, self.markdown)
        for line in itertools.islice(lines, len(lines) - 1):
            markdown.write(line + "\n")
        markdown.write(lines[-1])
        self.markdown = MarkdownJobs()  # its rows, no longer needed, not held while the rest is written
        report_json.commit()
        for opened in self._files:
            opened.commit()

    def discard(self) -> None:
        for opened in self._files:
            opened.discard()


_ROW_FIELDS = {
    "duration": ("media", "duration"),
    "file_name": ("video", "path"),
    "fps": ("media", "fps"),
    "height": ("media", "height"),
    "id": ("id",),
    "key": ("key",),
    "parameters": ("parameters",),
    "prompt": ("parameters", "prompt"),
    "quality": ("quality",),
    "sha256": ("video", "sha256"),
    "width": ("media", "width"),
}
"""Where each field of a metadata.jsonl row (``report.metadata_row``) is in the job's entry:
``media``'s fields are ``(media or {}).get(name)``, the prompt ``parameters.get("prompt")``."""
_ENHANCED_ROW_FIELDS = {**_ROW_FIELDS, "prompt": ("prompt",), "prompt_original": ("prompt_original",)}
_ROW_SOURCES = frozenset(path[0] for path in _ENHANCED_ROW_FIELDS.values())
"""The entry's fields a row is made from: a provider's own field of the same name (none
today) would stand in the entry in their place, so such a row is made the long way."""


def row_template(shape: Shape, enhanced: bool) -> str | None:
    """A metadata.jsonl line as a ``str.format`` template over the encoded scalars of a job
    entry of ``shape`` (``jsontext.shaped_parts``), or None when its row cannot be read off
    the entry (no video path or sha256 among its scalars). The entry's ``media`` must be a
    dict or None: the caller checks it (only a non-empty dict has a shape of its own)."""
    fields = _ENHANCED_ROW_FIELDS if enhanced else _ROW_FIELDS
    if ("video", "path") not in shape.holes or ("video", "sha256") not in shape.holes:
        return None
    items = [f"{_literal(name)}: {_row_value(shape, path)}" for name, path in sorted(fields.items())]
    return "{{" + ", ".join(items) + "}}\n"


def _row_value(shape: Shape, path: tuple[str, ...]) -> str:
    if path in shape.holes:
        return f"{{{shape.holes[path]}}}"
    signature = shape.nested.get(path)
    if signature is not None:
        return "{{" + ", ".join(f"{_literal(key)}: {_row_value(shape, (*path, key))}" for key, _ in signature) + "}}"
    return "null"  # the dict above has no such key, or is None or empty: .get gives None


def _literal(key: str) -> str:
    return _string(key).replace("{", "{{").replace("}", "}}")


class _TextFile:
    """A text file written in pieces (UTF-8) to a temporary name beside ``path``; ``commit``
    flushes and fsyncs it and renames it over ``path`` (``durable.write_atomic``'s steps, the
    directory's fsync left to the caller). Left without a commit, it is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, self._tmp = create_temp(path, ".tmp")
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._batch: list[str] = []
        self._size = 0
        self._done = False

    def write(self, piece: str) -> None:
        self._batch.append(piece)
        self._size += len(piece)
        if self._size >= _BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        self._fh.write("".join(self._batch).encode("utf-8"))
        self._batch.clear()
        self._size = 0

    def commit(self) -> None:
        self._flush()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        self._done = True

    def discard(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(OSError):
                self._fh.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)

    def __enter__(self) -> _TextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


_BATCH_CHARS = 1 << 18
"""Pieces gathered per write: three files are open at once, so less than durable's 1 MiB."""


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
        self._batch: list[bytes] = []
        self._size = self._written = 0
        self._templates: dict[Shape, tuple[Holes, Callable[[tuple[str, ...]], tuple[str, ...]], int | None] | None] = {}
        self.complete = True

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return Pins(self._outcomes).items()

    def add(self, o: Outcome, entry: Mapping[str, Any], shape: Shape | None, parts: tuple[str, ...],
            provided: Mapping[str, Any]) -> None:
        """The pin of done outcome ``o``, whose entry is ``entry`` (``shape`` and encoded
        ``parts`` when it has one; ``provided``: the provider's fields it holds)."""
        self._count += 1
        if not self.complete:
            return
        try:
            data = self._text(o, shape, parts, provided).encode("utf-8")
        except Exception:  # the lock's own writer decides what such a value does
            self.complete = False
            return
        self._size += len(data)
        self._ids.append(o.job.id)
        self._ends.append(self._size)
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
                    yield ids[at], block[begin:ends[at] - start].decode("utf-8")
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
