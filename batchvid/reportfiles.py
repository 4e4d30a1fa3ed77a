"""A run's report files written in one pass over its outcomes (``report.write_outputs``).

Each outcome's files records are decoded once (``Outcome.files``) and its report.json entry made
once; the entry then feeds report.json, report.md, junit.xml, metadata.jsonl and the gallery's
poster links together, each file written to its temporary name as the pass goes and renamed
over the old one at the end, in the order ``report.write_report_files`` writes them (report.json,
report.md, junit.xml, metadata.jsonl; then batchvid.lock, whose pins go in job id order, and
report.html, whose cards are made again only when the page shows something new). The entries
are never all held. The bytes are those of ``report.write_report_files``, which stays the
reference, and the fallback for a value only ``json.dumps`` writes (a NaN, a huge int). With a
record of pieces (``reportpieces``), each file's sha256 is taken as it is written (or kept from
the record, for a file left as it is), so that a copy of the directory can be checked by it.
"""

from __future__ import annotations

import itertools
import os
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchvid.durable import fsync_dir, make_dir, write_json
from batchvid.gallery import GALLERY_NAME, ContentHash, poster_link, write_gallery
from batchvid.jsontext import Encoded, NotPlain, Shape, shaped_parts
from batchvid.jsontext import encode_string as _string
from batchvid.jsontext import pieces as jsontext_pieces
from batchvid.junit import JUNIT_END, junit_start, testcase, testcase_opening
from batchvid.lockpins import PinTexts as PinTexts
from batchvid.lockpins import pin_template as pin_template
from batchvid.markdown import markdown_lines
from batchvid.outcome import Files, Outcome
from batchvid.pagecards import CardArgs, CardTexts, FormatTemplate
from batchvid.report import (
    MarkdownJobs,
    RunInfo,
    job_entry,
    lazy_report,
    lock_data,
    lock_document,
    metadata_row,
    metadata_text,
    write_legacy,
)
from batchvid.reportpieces import Pieces, run_inputs
from batchvid.reportrecord import CARDS, JUNIT, LOCK, METADATA, REPORT_JSON, REPORT_MD, Cut
from batchvid.textfile import TextFile


def write_outputs(root: Path, outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """Write every report file atomically; returns the report (its ``jobs`` made as read).
    A file the previous pieces are read from cut or written over meanwhile: every file is
    written again without them (``write_legacy``), and no record kept."""
    report = lazy_report(outcomes, info)
    make_dir(root)
    try:
        written = _write_pass(root, report, outcomes, info)
    except Cut:
        written = None
    if written is not True:
        # (after a file written over: the page in place may hold cards copied from it; or
        # the page is not the one the record describes: ``Pieces.page_changed``)
        write_legacy(root, report, outcomes, info, fresh=written is None)
    return report


def _write_pass(root: Path, report: dict[str, Any], outcomes: Sequence[Outcome], info: RunInfo) -> bool | None:
    """``write_outputs`` in one pass; False when a value needs ``write_legacy``, None when
    the pieces read may not be the recorded ones (a file changed since the record was
    loaded), or report.html is not the page the record describes: the files must be written
    again, the page rendered, not retimed. A page the record does not describe (its header
    intact: otherwise it is rendered in any case) is found by ``Pieces.page_changed``."""
    content = ContentHash(previous=root / "report.json")
    pieces = Pieces.start(root, outcomes, run_inputs(info.name, info.provider))
    one_pass = _Pass(root, report, outcomes, content, pieces)
    try:
        try:
            with TextFile(root / "report.json", counted=pieces is not None) as json_file:  # (hashed by content)
                one_pass.report_json = json_file
                try:
                    for piece in content.report_pieces({**report, "jobs": one_pass}):
                        json_file.write(piece)
                    one_pass.tail_cards()
                    one_pass.commit(json_file)
                finally:
                    one_pass.discard()
        except ValueError:  # a value only json.dumps writes, or text UTF-8 cannot hold
            return None if pieces is not None and pieces.page_changed else False
        fsync_dir(root)
        _write_lock(root, outcomes, info, one_pass.pins, pieces)
        if pieces is not None and one_pass.cards is not None:
            one_pass.cards.sweeps = pieces.sweeps()
        write_gallery(root, report, content=content, posters=one_pass.posters, cards=one_pass.cards,
                      fresh=pieces is not None and pieces.page_changed)
        if pieces is not None:
            pieces.sha256[GALLERY_NAME] = content.page_sha256
        if pieces is not None and not pieces.unchanged(root):
            return None
        if pieces is not None:
            if content.moved is not None:
                pieces.retimed(content.moved)
            elif one_pass.cards is not None and one_pass.cards.at is not None:
                pieces.cards_at, pieces.sweeps_at = one_pass.cards.at, one_pass.cards.sweeps_at
            pieces.save(root)
    finally:
        for kept in (one_pass.cards, one_pass.pins, pieces):
            if kept is not None:
                kept.close() if isinstance(kept, Pieces) else kept.discard()
    return True


def _write_lock(root: Path, outcomes: Sequence[Outcome], info: RunInfo, pins: PinTexts | None,
                pieces: Pieces | None) -> None:
    """Write batchvid.lock (``durable.write_json``'s steps), each pin's place in it noted."""
    if pins is None:
        write_json(root / "batchvid.lock", lock_data(outcomes, info))
        if pieces is not None:
            pieces.complete = False
        return
    if pieces is not None:
        pieces.pins = len(pins)
        if pieces.kept(LOCK, pins.copied):  # the same pins, each copied: the same lock
            return
    lock = lock_document(info.name, info.provider, {}) | {"jobs": pins}
    try:
        with TextFile(root / "batchvid.lock", hashed=pieces is not None) as lock_file:
            pins.marks = None if pieces is None else (pieces, lock_file)
            for piece in jsontext_pieces(lock):
                lock_file.write(piece)
            lock_file.write("\n")
            lock_file.commit()
            if pieces is not None:
                pieces.sha256[lock_file.path.name] = lock_file.sha256
    except NotPlain:
        pins.marks = None
        if pieces is not None:
            pieces.complete = False
        write_json(root / "batchvid.lock", lock)
        return
    fsync_dir(root)


class _Pass(Encoded):
    """report.json's job entries, made and encoded as it is written; each entry also goes to
    the other files of the pass (report.md, junit.xml, metadata.jsonl) and the poster links."""

    def __init__(self, root: Path, report: Mapping[str, Any], outcomes: Sequence[Outcome],
                 content: ContentHash, pieces: Pieces | None = None) -> None:
        self._root, self._report, self._outcomes, self._content = root, report, outcomes, content
        self._base = os.fspath(root)
        self._pieces = pieces
        """The previous pass's pieces to reuse, and this pass's places (``reportpieces``)."""
        self.report_json: TextFile | None = None
        self.markdown = MarkdownJobs()
        self.posters: dict[str, str] = {}
        self.cards: CardTexts | None = None
        """report.html's cards, made as the entries are (``pagecards``)."""
        self.pins: PinTexts | None = None
        """batchvid.lock's pins, likewise."""
        self._files: list[TextFile] = []
        self._metadata: TextFile | None = None
        self._row_jobs = array("q")
        """The job of each of report.md's rows (``MarkdownJobs.rows``): the first of a run."""
        self._row_blocks: dict[int, tuple[int, int]] = {}
        """The rows that are runs of copied rows: the jobs they hold (``_copied``)."""
        self._row_templates: dict[tuple[Shape, bool], FormatTemplate | None] = {}
        self._runs: dict[int, int] = {}
        """The runs of jobs copied before the page is known to change: first job -> end
        (``Pieces.reusable``'s, which ``_cards_from`` would find again)."""
        self._stash: dict[int, CardArgs] = {}
        """The card arguments of the jobs made before the page is known to change, by number
        (``_cards_from``: with pieces recorded, the cards before it are kept too)."""

    def __len__(self) -> int:
        return len(self._outcomes)

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("the pass's entries are read once, in order")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        raise TypeError("the pass's entries are read once, as texts")

    def texts(self, nl: str) -> Iterator[str]:
        junit, metadata = self._start()
        self._nl, self._opening = nl, testcase_opening(self._report)
        pins = self.pins = PinTexts(self._root, self._outcomes)
        pieces, report_json, outcomes = self._pieces, self.report_json, self._outcomes
        if pieces is not None and pieces.previous is not None:
            pins.previous = pieces.previous.piece
        cards, card, number = None, None, 0
        while number < len(outcomes):
            if cards is None and not self._content.same:  # the page shows something new from here
                cards = self.cards = self._cards_from(number, card)
            end = number
            if pieces is not None and (cards is None or pieces.cards_copied()):
                # (once the page changed, only where its cards can be copied too)
                end = pieces.reusable(number, outcomes, self._link)
            if end > number and pieces is not None and report_json is not None:
                # Jobs whose pieces are the previous pass's: each file's run of them, copied.
                block = self._copied(number, end, junit, metadata, pins)
                if cards is not None:
                    cards.add_block(pieces.block(CARDS, number, end), number, end)
                else:
                    self._runs[number] = end
                yield block.decode("utf-8")
                pieces.placed(REPORT_JSON, number, end, report_json.offset - len(block))
                card, number = None, end
                continue
            text, card = self._made(number, outcomes[number], junit, metadata, pins)
            if cards is not None:
                cards.add(*card, number=number)
            elif pieces is not None and len(self._stash) < _STASHED:
                self._stash[number] = card
            if pieces is None or report_json is None:
                yield text
            else:  # written after its item separator (one byte, then ``nl``): it ends here
                start = report_json.offset + 1 + len(nl)
                yield text
                pieces.mark(REPORT_JSON, number, report_json.offset, report_json.offset - start, text)
            number += 1
        if cards is None and not self._content.same:  # the last entry differs
            self.cards = self._cards_from(len(self._outcomes), card)
        if self._outcomes:
            junit.write(JUNIT_END)

    def _made(self, number: int, o: Outcome, junit: TextFile, metadata: TextFile,
              pins: PinTexts) -> tuple[str, CardArgs]:
        """Job ``number``'s entry text, its pieces of the other files written (and their
        places noted), and its card's arguments (``CardTexts.add``)."""
        files = o.files()
        entry = job_entry(o, files)
        text, shape, parts = shaped_parts(entry, self._nl)
        self.markdown.add(entry)
        self._row_jobs.append(number)
        after = "\n" if number == len(self._outcomes) - 1 else "\n  "
        size = junit.write(testcase(self._opening, entry) + after) - len(after)
        pieces = self._pieces
        link, line = None, ""
        if o.status in ("succeeded", "skipped"):
            video = files[0]
            if video is not None:
                line = self._row(o, video, files, entry, shape, parts)
            link = poster_link(self._base, entry)
            if link is not None:
                self.posters[o.job.id] = link
            pins.add(o, entry, shape, parts, files[4], number)
        line_size = metadata.write(line)
        if pieces is not None:  # (its metadata.jsonl line even empty: where it would be)
            pieces.made(number, o, link, files[4], junit.offset - len(after), size, metadata.offset, line_size)
        return text, (entry, shape, parts, files[4], link)

    def _copied(self, number: int, end: int, junit: TextFile, metadata: TextFile, pins: PinTexts) -> bytes:
        """``_made``'s work for jobs ``number`` to ``end`` (not included), whose pieces are
        the previous pass's (``Pieces.reusable``): the other files' runs of them written (and
        their places noted); returns their entries' run (the item separators between them)."""
        pieces = self._pieces
        assert pieces is not None and pieces.previous is not None
        posters = self.posters
        self._row_blocks[len(self.markdown.rows)] = (number, end)
        self._row_jobs.append(number)
        self.markdown.add_rows(pieces.block(REPORT_MD, number, end).decode("utf-8"),
                               [(o.status, o.action) for o in self._outcomes[number:end]])
        for file, opened in ((JUNIT, junit), (METADATA, metadata)):
            pieces.placed(file, number, end, opened.offset)
            opened.write(pieces.block(file, number, end).decode("utf-8"))
        junit.write("\n" if end == len(self._outcomes) else "\n  ")
        links = pieces.links
        for at in range(number, end):
            o = self._outcomes[at]
            link = links.pop(at)
            if link is not None:
                posters[o.job.id] = link
            pins.add_copied(o, at)
        return pieces.block(REPORT_JSON, number, end)

    def _link(self, o: Outcome) -> str | None:
        """The poster link of done outcome ``o`` (``gallery.poster_link``), read off the fields
        of its entry a link is read from (no provider's field is named like one: ``fingerprint``)."""
        video, _, _, poster, _ = o.files()
        return poster_link(self._base, {"status": o.status, "video": video, "poster": poster})

    def tail_cards(self) -> None:
        """report.json written, differing from the one it replaces only after its jobs (the
        manifest's path, the summary, a shard, a stop: the keys that sort after ``jobs``): the
        page is rendered again, so its cards are kept here as they are when the text differs
        earlier (copied from the page being replaced, or made, each placed in the record),
        not left to the page to make each one from its entry made again, without a place."""
        if self.cards is None and self._pieces is not None and not self._content.same:
            self.cards = self._cards_from(len(self._outcomes), None)

    def _cards_from(self, number: int, before: CardArgs | None) -> CardTexts:
        """report.html's cards from job ``number`` on, or from the one before it (whose card
        arguments are ``before`` when it was made: its entry differed from the page's, learnt
        once written). With pieces recorded, every card is kept: those before ``number`` too,
        copied from the page being replaced where they are the same, else made."""
        pieces = self._pieces
        if pieces is None and number > 0:
            cards = CardTexts(self._root, number - 1)
            cards.add(*(before or self._card_of(number - 1)))
            return cards
        cards = CardTexts(self._root, marks=pieces)
        at = 0
        try:
            while at < number:
                assert pieces is not None
                end = at
                if pieces.cards_copied():
                    end = min(number, self._runs.get(at) or pieces.reusable(at, self._outcomes, self._link))
                if end > at:
                    cards.add_block(pieces.block(CARDS, at, end), at, end)
                    at = end
                    continue
                cards.add(*(self._stash.pop(at, None) or self._card_of(at)), number=at)
                at += 1
        except BaseException:  # (a file cut as it is read: ``Cut``) its temporary file removed
            cards.discard()
            raise
        self._stash.clear()
        self._runs.clear()
        return cards

    def _card_of(self, number: int) -> CardArgs:
        """Job ``number``'s card arguments (``CardTexts.add``), its entry made again."""
        o = self._outcomes[number]
        files = o.files()
        entry = job_entry(o, files)
        _, shape, parts = shaped_parts(entry, self._nl)
        link = poster_link(self._base, entry) if o.status in ("succeeded", "skipped") else None
        return (entry, shape, parts, files[4], link)

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

    def _start(self) -> tuple[TextFile, TextFile]:
        """junit.xml and metadata.jsonl opened, junit.xml's head written."""
        recorded = self._pieces is not None
        junit = TextFile(self._root / "junit.xml", counted=recorded, hashed=recorded)
        self._files.append(junit)  # discarded even when metadata.jsonl's temporary file cannot be made
        metadata = self._metadata = TextFile(self._root / "metadata.jsonl", counted=recorded, hashed=recorded)
        self._files.append(metadata)
        junit.write(junit_start(self._report, bool(self._outcomes)))
        return junit, metadata

    def commit(self, report_json: TextFile) -> None:
        """Rename report.json, then report.md, junit.xml and metadata.jsonl into place."""
        if not self._files:  # no jobs: report.json's writer never asked for their texts
            self._start()
        recorded = self._pieces is not None
        markdown = TextFile(self._root / "report.md", counted=recorded, hashed=recorded)
        self._files.insert(0, markdown)
        lines = markdown_lines(self._report, self.markdown)
        rows = self.markdown.rows
        first = len(lines) - len(rows) - 3  # the rows, then "", "</details>" and ""
        if self._pieces is not None and (first < 0 or lines[first:first + len(rows)] != rows):
            self._pieces.complete = False
        for at, line in enumerate(itertools.islice(lines, len(lines) - 1)):
            if 0 <= at - first < len(rows) and self._pieces is not None:
                self._write_row(at - first, markdown, line)
            else:
                markdown.write(line + "\n")
        markdown.write(lines[-1])
        self.markdown = MarkdownJobs()  # its rows, no longer needed, not held while the rest is written
        pieces = self._pieces
        for opened in (report_json, *self._files):
            if opened is self._metadata and pieces is not None and pieces.kept(METADATA):
                opened.discard()  # every line copied, as many jobs as before: the same file
                continue
            opened.commit()
            if pieces is not None:
                pieces.sha256[opened.path.name] = (self._content.report_sha256 if opened is report_json
                                                   else opened.sha256)

    def _write_row(self, at: int, markdown: TextFile, row: str) -> None:
        """Write report.md's row ``at`` (a job's, or a run of copied ones), its place noted."""
        assert self._pieces is not None
        block = self._row_blocks.get(at)
        if block is None:
            size = markdown.write(row + "\n") - 1
            self._pieces.mark(REPORT_MD, self._row_jobs[at], markdown.offset - 1, size, row)
        else:
            self._pieces.placed(REPORT_MD, *block, markdown.offset)
            markdown.write(row + "\n")

    def discard(self) -> None:
        for opened in self._files:
            opened.discard()


_STASHED = 4096
"""The most card arguments stashed (``_Pass._stash``); the cards of later ones made again."""


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
