"""report.html: one self-contained page to look at a run (cards, sweeps as grids, filters).

The page is rendered from report.json by a Jinja2 template with autoescaping; the jobs travel
as one JSON document inside ``<script type="application/json">`` and the page's own script
builds every element from it with ``textContent``, so no string from a manifest or a server is
ever parsed as markup. Links are relative to the output directory (``jobs/<id>/video.mp4``),
nothing is fetched from another host, and the same report gives the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from batchvid.durable import fsync_dir
from batchvid.jsontext import NotPlain, pieces
from batchvid.poster import POSTER_NAME, make_poster
from batchvid.store import dumps, write_atomic
from batchvid.sweeps import find_sweeps
from batchvid.textfile import TextFile

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

    from batchvid.pagecards import CardTexts

GALLERY_NAME = "report.html"
_SOURCES = ("report.html.j2", "gallery.css", "gallery.js")
_TIMING = "timing.html.j2"
_TIMING_START, _TIMING_END = "<!--timing-->", "<!--/timing-->"
_TIMING_KEY = '\n  "timing": {'
_TIMING_PIECE = ',\n  "timing": '
"""How ``jsontext.pieces`` starts the timing section of report.json."""
_SAFE_RELATIVE = re.compile(r"^jobs/[a-z0-9][a-z0-9._-]*/[A-Za-z0-9._-]+$")
# In a <script> block only "</" and "<!--" could end it early; escaping <, > and & as JSON
# \u escapes covers both. U+2028/9 are escaped so the text is also valid JavaScript.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # imported when a page is written, not by every command that imports report

    return jinja2.Environment(
        loader=jinja2.PackageLoader("batchvid", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def script_json(value: Any) -> Markup:
    """``value`` as JSON that is safe inside a ``<script type="application/json">`` block."""
    from markupsafe import Markup

    return Markup(_script_safe(_COMPACT(value)))  # escaped above for its only context


def _href(path: Any) -> str | None:
    """A relative link to a file of the output directory, or None for anything else."""
    if isinstance(path, str) and _SAFE_RELATIVE.match(path) and ".." not in path:
        # As quote(path) gives it: every character the pattern allows is URL-safe, but its "$"
        # also matches before a final newline, which quote escapes (%0A).
        return quote(path) if path.endswith("\n") else path
    return None


def _card(job: Mapping[str, Any], poster: str | None) -> dict[str, Any]:
    params = dict(job.get("parameters") or {})
    prompt = params.pop("prompt", None)
    video, media, error = job.get("video") or {}, job.get("media") or {}, job.get("error") or {}
    return {
        "id": job["id"],
        "status": job["status"],
        "sample": job.get("sample", 0),
        "model": params.get("model"),
        "prompt": prompt,
        "prompt_original": job.get("prompt_original"),
        "params": params,
        "media": {k: media.get(k) for k in ("width", "height", "fps", "duration", "has_audio", "codec")}
        if media else None,
        "sha256": video.get("sha256"),
        "bytes": video.get("bytes"),
        "video": _href(video.get("path")),
        "poster": poster,
        "task_id": job.get("task_id"),
        "error": {"kind": error.get("kind"), "message": error.get("message")} if error else None,
        "warnings": list(job.get("warnings") or []),
        "quality": job.get("quality"),
    }


def ensure_posters(
    root: Path, jobs: Sequence[Mapping[str, Any]], *, make: bool = False
) -> dict[str, str]:
    """job id -> relative poster link.

    A poster the run recorded (``poster`` in the job entry, made right after the download) is
    trusted without touching the disk. A finished job without one (a directory of an older
    version) links the ``poster.jpg`` it may have; with ``make`` (``batchvid view``) a missing
    poster, recorded or not, is made from the video, which a run's report never waits for.
    """
    posters: dict[str, str] = {}
    base = os.fspath(root)
    for job in jobs:
        link = poster_link(base, job, make=make)
        if link is not None:
            posters[job["id"]] = link
    return posters


def poster_link(base: str, job: Mapping[str, Any], *, make: bool = False) -> str | None:
    """``ensure_posters``'s link for one job entry (``base``: the output directory), or None."""
    if job.get("status") not in ("succeeded", "skipped"):
        return None
    recorded = _href((job.get("poster") or {}).get("path"))
    if recorded is not None and not make:
        return recorded
    video = (job.get("video") or {}).get("path")
    if not isinstance(video, str) or _href(video) is None:
        return None
    link = f"{video.rsplit('/', 1)[0]}/{POSTER_NAME}"
    target = os.path.join(base, link)
    # Plain os.path: for each job of an older directory at every report.
    if os.path.isfile(target) or (make and make_poster(Path(base) / video, Path(target))):
        return quote(link)
    return None


def gallery_data(report: Mapping[str, Any], posters: Mapping[str, str]) -> dict[str, Any]:
    """What the page's script reads: the run, one card per job, the sweeps."""
    return {"run": _run_facts(report), "jobs": list(_cards(report, posters)), "sweeps": _sweeps(report)}


def _run_facts(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": report["manifest"]["name"],
        "manifest": report["manifest"]["path"],
        "provider": report["manifest"]["provider"],
        "exit_code": report["exit_code"],
        "stopped": report.get("stopped"),
        "summary": report["summary"],
        "cost": report["cost"],
        "version": report.get("batchvid_version"),
    }


def _cards(report: Mapping[str, Any], posters: Mapping[str, str], count: int | None = None) -> Iterator[dict[str, Any]]:
    """The cards of the report's jobs (of its first ``count``, when given)."""
    jobs = report["jobs"] if count is None else itertools.islice(report["jobs"], count)
    for j in jobs:
        yield _card(j, posters.get(j["id"]) or _href((j.get("cover") or {}).get("path")))


def _sweeps(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    jobs = report["jobs"]
    # Entries made as they are read offer the fields a sweep is found by, without their files.
    light = getattr(jobs, "without_files", None)
    return [s.to_dict() for s in find_sweeps(jobs if light is None else light())]


def _data_pieces(
    report: Mapping[str, Any], posters: Mapping[str, str], cards: CardTexts | None = None
) -> Iterator[str]:
    """``script_json(gallery_data(report, posters))`` in pieces, a card at a time: the same
    text (keys sorted: jobs, run, sweeps; compact; unsafe characters escaped one by one)."""
    yield '{"jobs":['
    copying = cards if cards is not None and cards.complete else None
    sep = ""
    for card in _cards(report, posters, copying.first if copying is not None else None):
        yield sep + _script_safe(_COMPACT(card))
        sep = ","
    if copying is not None:
        yield from copying.pieces()  # its first card after a comma, when some came before
    run = '],"run":' + _script_safe(_COMPACT(_run_facts(report))) + ',"sweeps":'
    # The sweeps, found from every job's fields, copied when the page replaced has this pass's.
    if copying is not None and copying.sweeps is not None:
        sweeps = copying.sweeps.decode("utf-8")
    else:
        sweeps = _script_safe(_COMPACT(_sweeps(report)))
    if copying is not None and copying.at is not None:
        start = copying.at + copying.size() + len(run.encode("utf-8"))
        copying.sweeps_at = [start, start + len(sweeps.encode("utf-8"))]
    yield run
    yield sweeps + "}"


_COMPACT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


def _script_safe(text: str) -> str:
    for char, escaped in _SCRIPT_UNSAFE.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def _inline_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _source(env: jinja2.Environment, name: str) -> str:
    assert env.loader is not None
    return env.loader.get_source(env, name)[0]


@functools.cache
def _source_bytes(name: str) -> bytes:
    """A template's text as ``jinja2.PackageLoader`` reads it (UTF-8, newlines as they are),
    without importing Jinja2: a rerun that changed nothing never renders a template."""
    return resources.files("batchvid").joinpath("templates", name).read_bytes()


def sources_digest() -> hashlib._Hash:
    digest = hashlib.sha256()
    for name in (*_SOURCES, _TIMING):
        digest.update(_source_bytes(name))
    return digest


def content_digest(report: Mapping[str, Any], posters: Mapping[str, str], report_text: str | None = None) -> str:
    """A digest of everything the page shows except the timing: the report outside its
    ``timing`` section, the posters and the page's own sources. ``report_text`` (report.json's
    text as ``durable.dumps`` wrote it) saves encoding the report again."""
    digest = sources_digest()
    text = dumps(report) if report_text is None else report_text
    # "timing" is the last key of report.json, and the only one indented two spaces.
    digest.update(text[: text.rfind(_TIMING_KEY)].encode("utf-8"))
    digest.update(json.dumps(posters, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


class ContentHash:
    """``content_digest`` taken while report.json is written (``report_pieces``), so the report
    is encoded once and never held as one text.

    ``previous``: the report.json being replaced. While the text written so far is the same as
    its text, ``same`` is True: the page, which shows that text, has nothing new to show so far
    (a rerun that changed nothing makes no cards: ``pagecards``)."""

    def __init__(self, previous: Path | None = None) -> None:
        self._digest: hashlib._Hash | None = None
        """Sources and report.json up to its timing section, once written."""
        self._previous = previous
        self.same = False
        self.moved: int | None = None
        """Once the page is written with only its timing renewed: how many bytes later its
        data starts than before (``reportpieces``: its cards stay where they were)."""
        self.report_sha256: str | None = None
        """Once report.json is written by ``report_pieces``: the sha256 of the page's sources
        (``sources_digest``) then its bytes (``reportrecord``: a copy is checked by it)."""
        self.page_sha256: str | None = None
        """The sha256 of the page's bytes, once written (``reportrecord``: a copy is checked by it)."""

    def write_report(self, path: Path, report: Mapping[str, Any]) -> None:
        """Write report.json (``durable.dumps``'s text), hashing it on the way."""
        try:
            write_atomic(path, self.report_pieces(report))
        except NotPlain:
            text = dumps(report)
            write_atomic(path, text)
            self._digest = sources_digest()
            self._digest.update(text[: text.rfind(_TIMING_KEY)].encode("utf-8"))

    def report_pieces(self, report: Mapping[str, Any]) -> Iterator[str]:
        """report.json's text in pieces (``jsontext.pieces``: may raise ``NotPlain``), hashed;
        once all are read, ``report_sha256`` is the sha256 of the page's sources then its bytes."""
        digest, hashing = sources_digest(), True
        self.report_sha256 = None
        whole = digest
        with contextlib.ExitStack() as stack:
            previous = self._open_previous(stack)
            for piece in pieces(report):
                if hashing and piece.startswith(_TIMING_PIECE):
                    whole = digest.copy()  # the text before the timing, hashed once for both
                    digest.update(b",")  # content_digest keeps the comma before the timing key
                    hashing = False
                if hashing:
                    data = piece.encode("utf-8")
                    digest.update(data)
                    if self.same and previous is not None and previous.read(len(data)) != data:
                        self.same = False
                else:
                    whole.update(piece.encode("utf-8"))
                yield piece
        yield "\n"
        whole.update(b"\n")
        self.report_sha256 = whole.hexdigest()
        self._digest = None if hashing else digest

    def _open_previous(self, stack: contextlib.ExitStack) -> IO[bytes] | None:
        if self._previous is None:
            return None
        try:
            previous = stack.enter_context(open(self._previous, "rb"))  # noqa: SIM115
        except OSError:
            return None
        self.same = True
        return previous

    def digest(self, report: Mapping[str, Any], posters: Mapping[str, str]) -> str:
        """``content_digest(report, posters)``."""
        if self._digest is None:  # not written here, or without a timing section
            return content_digest(report, posters)
        digest = self._digest.copy()
        digest.update(json.dumps(posters, sort_keys=True).encode("utf-8"))
        return digest.hexdigest()


def _render_timing(env: jinja2.Environment, report: Mapping[str, Any]) -> str:
    timing = report.get("timing") or {}
    return env.get_template(_TIMING).render(seconds=timing.get("seconds"), started_at=timing.get("started_at"))


def timing_html(report: Mapping[str, Any]) -> str:
    """``timing.html.j2`` rendered for ``report``: its text made here for the values a report
    holds (a number or None, a string or None), without importing Jinja2 (tests hold the two
    equal); anything else is rendered by the template."""
    timing = report.get("timing") or {}
    seconds, started_at = timing.get("seconds"), timing.get("started_at")
    if type(seconds) not in (int, float, type(None)) or type(started_at) not in (str, type(None)):
        return _render_timing(_environment(), report)
    from markupsafe import escape

    text = _TIMING_START
    if seconds is not None:
        text += f'\n    <div class="fact"><span>time</span><b>{seconds:.1f} s</b></div>'
    if started_at:
        text += f'\n    <div class="fact"><span>started</span><b>{escape(started_at)}</b></div>'
    return text + "\n" + _TIMING_END


def render_gallery(report: Mapping[str, Any], posters: Mapping[str, str], content: str | None = None) -> str:
    """The page's HTML for ``report`` (posters: job id -> relative link; ``content``: its
    ``content_digest``, computed when not given)."""
    return "".join(_page_pieces(report, posters, content))


def _page_pieces(
    report: Mapping[str, Any], posters: Mapping[str, str], content: str | None, cards: CardTexts | None = None
) -> Iterator[str]:
    """The page in pieces: the template around the data block, the data a card at a time
    (``cards``: the cards already made, ``pagecards.CardTexts``)."""
    from markupsafe import Markup

    env = _environment()
    style, script = _source(env, "gallery.css"), _source(env, "gallery.js")
    timing = report.get("timing") or {}
    page = env.get_template("report.html.j2").render(
        title=f"batchvid · {report['manifest']['name']}",
        style=Markup(style),
        script=Markup(script),
        style_hash=_inline_hash(style),
        script_hash=_inline_hash(script),
        data=Markup(_DATA_MARK),
        run=report,
        seconds=timing.get("seconds"),
        started_at=timing.get("started_at"),
        content=content or content_digest(report, posters),
    )
    before, mark, after = page.partition(_DATA_MARK)
    if not mark or _DATA_MARK in after:  # the mark is the template's, once; else render plainly
        yield page.replace(_DATA_MARK, script_json(gallery_data(report, posters)))
        return
    if cards is not None and cards.complete and cards.first == 0:
        cards.at = len(before.encode("utf-8")) + len('{"jobs":[')
    yield before
    yield from _data_pieces(report, posters, cards)
    yield after


_DATA_MARK = "\x00batchvid-data\x00"


def _retimed(target: Path, content: str, report: Mapping[str, Any], moved: list[int]) -> Iterator[str] | None:
    """The page at ``target`` with its timing facts renewed, in pieces, when everything else it
    shows is ``content``; None when it must be rendered again (missing, older or different).
    ``moved[0]``: how many bytes longer its timing facts are than before."""
    try:
        fh = open(target, encoding="utf-8")  # noqa: SIM115  # closed by the pieces' generator
    except OSError:
        return None
    try:
        head = fh.read(_HEAD_CHARS)
    except (OSError, ValueError):
        fh.close()
        return None
    start, end = head.find(_TIMING_START), head.find(_TIMING_END)
    if f'<meta name="batchvid-content" content="{content}">' not in head[:512] or not 0 <= start < end:
        fh.close()
        return None
    timing = timing_html(report)
    moved[0] = len(timing.encode("utf-8")) - len(head[start:end + len(_TIMING_END)].encode("utf-8"))
    return _copied(fh, head[:start] + timing, head[end + len(_TIMING_END):])


_HEAD_CHARS = 1 << 16
"""The timing facts are in the page's header, within its first 64 Ki characters."""


def _copied(fh: IO[str], first: str, rest: str) -> Iterator[str]:
    with fh:
        yield first
        yield rest
        while chunk := fh.read(1 << 20):
            yield chunk


def write_gallery(
    root: Path,
    report: Mapping[str, Any],
    *,
    make_posters: bool = False,
    report_text: str | None = None,
    content: ContentHash | None = None,
    posters: Mapping[str, str] | None = None,
    cards: CardTexts | None = None,
    fresh: bool = False,
) -> Path:
    """Write ``root/report.html`` for ``report`` (with ``make_posters``, making missing
    posters first: see ``ensure_posters``); returns it. ``fresh``: rendered, never retimed
    (the page in place may hold cards copied from a file written over as it was read).

    A page that already shows this content (a rerun that changed nothing) only gets its timing
    facts renewed: rendering 10,000 cards again would cost a second or more for the same bytes.
    ``posters``: ``ensure_posters``'s links, when already found; ``cards``: the cards of
    ``report``'s jobs with those posters, when already made (``pagecards``).
    """
    if posters is None:
        posters = ensure_posters(root, report["jobs"], make=make_posters)
    target = root / GALLERY_NAME
    if content is not None:
        digest = content.digest(report, posters)
    else:
        digest = content_digest(report, posters, report_text)
    moved = [0]
    page = None if fresh else _retimed(target, digest, report, moved)
    if page is not None:
        try:
            _write_page(target, page, content)
            if content is not None:
                content.moved = moved[0]
            return target
        except ValueError:  # not UTF-8 after all: render it again
            pass
    _write_page(target, _page_pieces(report, posters, digest, cards), content)
    return target


def _write_page(target: Path, page: Iterator[str], content: ContentHash | None) -> None:
    """Write ``page``'s pieces to ``target`` (``write_atomic``'s steps); with ``content``, its
    bytes hashed as they are written (``content.page_sha256``), each piece encoded once."""
    if content is None:
        write_atomic(target, page)
        return
    content.page_sha256 = None
    with TextFile(target, counted=False, hashed=True) as written:
        for piece in page:
            written.write(piece)
        written.commit()
    fsync_dir(target.parent)
    content.page_sha256 = written.sha256
