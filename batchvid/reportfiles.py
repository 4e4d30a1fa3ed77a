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
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from batchvid.durable import create_temp, fsync_dir, make_dir, write_json
from batchvid.gallery import ContentHash, poster_link, write_gallery
from batchvid.jsontext import Encoded, Shape, shaped_parts
from batchvid.jsontext import encode_string as _string
from batchvid.junit import JUNIT_END, junit_start, testcase, testcase_opening
from batchvid.markdown import markdown_lines
from batchvid.outcome import Files, Outcome
from batchvid.pagecards import CardTexts
from batchvid.report import (
    MarkdownJobs,
    RunInfo,
    job_entry,
    lazy_report,
    lock_data,
    metadata_row,
    metadata_text,
    write_legacy,
)


def write_outputs(root: Path, outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """Write every report file atomically; returns the report (its ``jobs`` made as read)."""
    report = lazy_report(outcomes, info)
    make_dir(root)
    one_pass = _Pass(root, report, outcomes)
    content = ContentHash()
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
        write_json(root / "batchvid.lock", lock_data(outcomes, info))
        write_gallery(root, report, content=content, posters=one_pass.posters, cards=one_pass.cards)
    finally:
        if one_pass.cards is not None:
            one_pass.cards.discard()
    return report


class _Pass(Encoded):
    """report.json's job entries, made and encoded as it is written; each entry also goes to
    the other files of the pass (report.md, junit.xml, metadata.jsonl) and the poster links."""

    def __init__(self, root: Path, report: Mapping[str, Any], outcomes: Sequence[Outcome]) -> None:
        self._root, self._report, self._outcomes = root, report, outcomes
        self.markdown = MarkdownJobs()
        self.posters: dict[str, str] = {}
        self.cards: CardTexts | None = None
        """report.html's cards, made as the entries are (``pagecards``)."""
        self._files: list[_TextFile] = []
        self._row_templates: dict[tuple[Shape, bool], str | None] = {}

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
        cards = self.cards = CardTexts(self._root)
        for number, o in enumerate(self._outcomes):
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
            cards.add(entry, shape, parts, files[4], link)
            yield text
        if self._outcomes:
            junit.write(JUNIT_END)

    def _row(self, o: Outcome, video: dict[str, Any], files: Files, entry: dict[str, Any],
             shape: Shape | None, parts: tuple[str, ...]) -> str:
        """The metadata.jsonl line of ``o``: its entry's scalars, already encoded, put in the
        row's template (``row_template``) where the entry has the usual shape."""
        media, provided = files[2], files[4]
        if shape is not None and (media is None or type(media) is dict) and _ROW_SOURCES.isdisjoint(provided):
            key = (shape, o.enhance is not None)
            template = self._row_templates.get(key, "")
            if template == "":
                if len(self._row_templates) >= 64:
                    self._row_templates.clear()
                template = self._row_templates[key] = row_template(shape, key[1])
            if template is not None:
                return template.format(*parts)
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
