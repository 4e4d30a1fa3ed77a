"""The previous report's pieces, reused on a rerun (``batchvid.reportfiles``).

Rerunning a finished directory writes the report files again with the same text for every job
that did not change. Encoding 100,000 job entries again cost most of such a rerun. So, after
the report files are in place, ``.batchvid/report-pieces`` records, for each job, a digest of
the inputs of its pieces the journal does not give (``fingerprint``) and where its piece is in
report.json, report.md, junit.xml, metadata.jsonl, batchvid.lock and report.html (its card;
byte offsets), with each file's size, mtime and inode, as the journal pins a video, and the
journal's identity and sha256. The next report pass copies the pieces of a job whose digest
is the same and whose key has no journal line written since, from the files it replaces, and
makes the others, and the run's parts (head, summary, timing), as before: the same bytes. A
changed head (cost, exit code, counts) does not stop the copying: report.html, rendered again,
gets the copied jobs' cards from the page it replaces.

Only a job skipped as done (its records replayed from the journal), without an error,
warnings or an enhanced prompt, has a digest: a run that did its jobs records nothing (they are
all skipped, other entries, on the next rerun). Anything doubtful (no such file, another
format, version or code, a cut or changed file, another manifest name, a report file changed
or replaced since, a journal changed otherwise than by whole lines appended) and nothing is
reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mmap
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchvid import __version__
from batchvid.durable import write_atomic
from batchvid.outcome import Outcome
from batchvid.store import JOURNAL, STATE_DIR

PIECES_NAME = "report-pieces"
"""The record's name in the output directory's ``.batchvid``."""
PIECES_FORMAT = 1
"""Bump when the text of any job's piece changes (how an entry, a row, a testcase, a metadata
line or a pin is written): a record of another format is not used."""
FILES = ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html")
REPORT_JSON, REPORT_MD, JUNIT, METADATA, LOCK, CARDS = range(len(FILES))
"""The files with a piece per job; report.html's pieces are its cards, their places counted from
the start of its data block's ``jobs`` text (``cards_at``)."""
_DIGEST = 16
_NONE = bytes(_DIGEST)
"""The digest of a job whose pieces are always made again."""
_DONE = frozenset({"succeeded", "skipped"})
_ENTRY_FIELDS = frozenset({"id", "index", "key", "status", "action", "sample", "parameters", "task_id", "video",
                           "cover", "media", "error", "warnings", "quality", "prompt", "prompt_original",
                           "enhance", "poster", "source", "matrix"})
"""A job entry's own fields (``report.job_entry``): a provider's field of the same name would
stand in one's place, which the copying side does not read (``MarkdownJobs.add_row``)."""
_RUN_JOBS = 256
"""The most jobs copied as one run (their entries' text is one piece of report.json)."""
_LIMIT = 1 << 32
"""Offsets are kept as 32-bit numbers: a larger file is not recorded."""


def fingerprint(o: Outcome, link: str | None) -> bytes:
    """A digest of the inputs of ``o``'s pieces that the journal does not give (its job's id,
    index, sample, key, source and matrix, its poster link ``link``), or ``_NONE`` for a job whose
    pieces are made each time: any but a job skipped as done without an error, warnings or an
    enhanced prompt, or one whose provider's fields are named like an entry's own.

    The rest of such a job's entry comes from its journal record (``runner.initial_outcome``:
    task id, video, cover, media, poster, provided), which the record's journal check covers
    (``Previous.changed``), and its parameters are those its key is the sha256 of
    (``jobs.job_key``: the canonical request and the sample)."""
    if (o.status != "skipped" or o.action != "skip" or o.error is not None or o.warnings
            or o.enhance is not None):
        return _NONE
    provided = o.files()[4]
    if provided and not _ENTRY_FIELDS.isdisjoint(provided):
        return _NONE
    job = o.job
    # Ids, keys, sources and links hold no NUL (ids and sources: [a-z0-9._-]; links are
    # relative URLs), and a link is None or a non-empty text: the joined text says each.
    text = "\0".join((job.id, str(job.index), str(job.sample), job.key, job.source,
                      repr(sorted(job.matrix.items())) if job.matrix else "", link or ""))
    return _sha256(text.encode("utf-8", "surrogatepass")).digest()[:_DIGEST]


_sha256 = hashlib.sha256


def run_inputs(name: str, provider: str) -> str:
    """What every job's pieces share (junit.xml's class name is the manifest's name), and the
    code that made them (the interpreter's too: its json and str methods write the text)."""
    return repr((PIECES_FORMAT, __version__, code_digest(), sys.version, name, provider))


_CODE = Path(__file__).parent
"""The package's modules (``code_digest``)."""


@functools.cache
def code_digest() -> str:
    """A digest of the package's modules (``batchvid/*.py``: the code that makes each
    piece's text), so that a record made by other code of the same version (a checkout
    changed, a branch merged without ``PIECES_FORMAT`` bumped) is not used; when they cannot
    be read, a value no record holds. Read once per process, when a run starts
    (``runner.Runner``): modules changed on disk during a long run are not the code it runs."""
    digest = hashlib.sha256()
    try:
        paths = sorted(_CODE.glob("*.py"))
        for path in paths:
            digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes())
    except OSError:
        paths = []
    return digest.hexdigest() if paths else os.urandom(16).hex()


class Pieces:
    """The report pass's pieces: those of the previous pass to reuse (when its record holds),
    and where this pass writes each job's, recorded by ``save`` once its files are in place."""

    def __init__(self, root: Path, outcomes: Sequence[Outcome], run: str) -> None:
        self._path = root / STATE_DIR / PIECES_NAME
        self._run = run
        self._count = len(outcomes)
        self._digests = bytearray(_DIGEST * self._count)
        self._spans = [array("I", bytes(8 * self._count)) for _ in FILES]
        self.copied = 0
        """The jobs whose pieces were copied (``placed`` in report.json)."""
        self.pins = 0
        """The pins in batchvid.lock (recorded: a lock of as many, all copied, is kept)."""
        self._digested = 0
        """The jobs whose digests are recorded (``reusable``)."""
        self.links: dict[int, str | None] = {}
        """The poster links of the jobs ``reusable`` looked at and ``note`` has not (by number)."""
        self.complete = True
        """False once a piece's place is not known (a file written the long way): not saved."""
        self.cards_at: int | None = None
        """Where report.html's ``jobs`` text starts, once the page is written with every card
        placed (``pagecards.CardTexts``); None: its cards' places are not recorded."""
        self.previous = Previous.load(self._path, root, run)
        with contextlib.suppress(OSError):
            os.unlink(self._path)  # the files are about to change: it would describe old ones

    @classmethod
    def start(cls, root: Path, outcomes: Sequence[Outcome], run: str) -> Pieces | None:
        """The pass's pieces, or None when no job could be reused next time (no job was
        skipped as done: a run that did all its jobs, such as the first run of a directory,
        writes no record, since every job is skipped, another entry, on the next)."""
        if not any(o.status == "skipped" for o in outcomes):
            with contextlib.suppress(OSError):  # a record left would describe the files replaced
                os.unlink(root / STATE_DIR / PIECES_NAME)
            return None
        return cls(root, outcomes, run)

    def reusable(self, number: int, outcomes: Sequence[Outcome], link: Callable[[Outcome], str | None]) -> int:
        """The end of the run of jobs from ``number`` whose pieces are the previous pass's
        (``number`` when it has none), at most ``_RUN_JOBS``; their digests, and that of the
        job after them, are recorded, their poster links (``link``) kept in ``links``."""
        end, previous, digests = number, self.previous, self._digests
        if previous is None:
            return end
        while end < len(outcomes) and end - number < _RUN_JOBS:
            at = _DIGEST * end
            o = outcomes[end]
            if end < self._digested:
                digest = bytes(digests[at:at + _DIGEST])
            else:
                made = self.links[end] = link(o) if o.status == "skipped" else None
                digest = digests[at:at + _DIGEST] = fingerprint(o, made)
                self._digested = end + 1
            if digest == _NONE or not previous.same(end, digest) or o.job.key in previous.changed:
                break
            end += 1
        return end

    def placed(self, file: int, number: int, end: int, start: int) -> None:
        """The previous pass's pieces of jobs ``number`` to ``end`` (not included) in
        ``file``, copied as one run, start at byte ``start``."""
        assert self.previous is not None
        old = self.previous.spans[file]
        shift = start - old[2 * number]
        if file == REPORT_JSON:
            self.copied += end - number
        if start + old[2 * end - 1] - old[2 * number] >= _LIMIT:
            self.complete = False
            return
        self._spans[file][2 * number:2 * end] = array("I", [at + shift for at in old[2 * number:2 * end]])

    def made(self, number: int, o: Outcome, link: str | None, junit_end: int, junit_size: int,
             metadata_end: int, metadata_size: int) -> None:
        """Job ``number`` (``o``, whose poster link is ``link``) made: its digest recorded
        (unless ``reusable`` did), and its pieces of junit.xml and metadata.jsonl (``_size``
        bytes ending at ``_end``) placed (``mark``'s, at once)."""
        if self.links:
            self.links.pop(number, None)
        if number >= self._digested:
            at = _DIGEST * number
            self._digests[at:at + _DIGEST] = fingerprint(o, link)
            self._digested = number + 1
        junit, metadata = self._spans[JUNIT], self._spans[METADATA]
        at = 2 * number
        try:
            junit[at + 1], metadata[at + 1] = junit_end, metadata_end
        except OverflowError:  # past the 32-bit offsets
            self.complete = False
            return
        junit[at], metadata[at] = junit_end - junit_size, metadata_end - metadata_size

    def mark(self, file: int, number: int, end: int, size: int) -> None:
        """Job ``number``'s piece of ``file`` is ``size`` bytes ending at byte ``end``."""
        spans = self._spans[file]
        try:
            spans[2 * number + 1] = end
        except OverflowError:  # past the 32-bit offsets
            self.complete = False
            return
        spans[2 * number] = end - size

    def kept(self, file: int, pins: int = 0) -> bool:
        """Whether the previous ``file`` is what this pass writes, every job's piece in it
        copied (metadata.jsonl: every job's; batchvid.lock: ``pins``, every pin, copied, as
        many as it holds): then it stays, and its pieces where they are."""
        previous = self.previous
        if previous is None:
            return False
        if file == METADATA:
            kept = previous.count == self._count == self.copied
        else:
            kept = previous.pins == self.pins == pins
        if kept:
            common = 2 * min(previous.count, self._count)
            self._spans[file][:common] = previous.spans[file][:common]
        return kept

    def retimed(self, moved: int) -> None:
        """report.html kept, only its timing renewed (its data ``moved`` bytes later): its
        cards, each the same, are where the previous record placed them."""
        previous = self.previous
        if previous is not None and previous.cards_at is not None and previous.count == self._count:
            self.cards_at = previous.cards_at + moved
            self._spans[CARDS] = array("I", previous.spans[CARDS])

    def block(self, file: int, number: int, end: int) -> bytes:
        """``Previous.block``: the previous pass's pieces of jobs ``number`` to ``end``."""
        assert self.previous is not None
        return self.previous.block(file, number, end)

    def cards_copied(self) -> bool:
        """Whether report.html's cards can be copied from the page being replaced."""
        return self.previous is not None and self.previous.cards_at is not None

    def save(self, root: Path) -> None:
        """Record the pieces of the files now in place (nothing when some place is unknown,
        or without a journal)."""
        known = self.previous.journal if self.previous is not None else None
        self.close()
        journal = _journal_state(root, known) if self.complete else None
        if journal is None:
            return
        payload = bytes(self._digests) + b"".join(spans.tobytes() for spans in self._spans)
        header = {
            "format": PIECES_FORMAT,
            "batchvid": __version__,
            "run": self._run,
            "jobs": self._count,
            "pins": self.pins,
            "byteorder": sys.byteorder,
            "files": {name: _identity(os.stat(root / name)) for name in FILES},
            "journal": journal,
            "cards_at": self.cards_at,
        }
        header["payload"] = _whole(header, payload)
        # Not fsynced: a record lost or cut by a power cut is not used (its digest).
        write_atomic(self._path, json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload,
                     durable=False)

    def close(self) -> None:
        if self.previous is not None:
            self.previous.close()
            self.previous = None


def _whole(header: dict[str, Any], payload: bytes) -> str:
    """The record's digest: of its header (but this digest) and its payload."""
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload).hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


class Previous:
    """The previous pass's record and its files, open: each job's digest and pieces."""

    def __init__(self, digests: bytes, spans: list[array[int]], fds: list[int], pins: int,
                 changed: frozenset[str]) -> None:
        self._digests, self.spans, self._fds = digests, spans, fds
        self.changed = changed
        """The keys with a journal line written since the record (their records may differ)."""
        self.cards_at: int | None = None
        """Where report.html's ``jobs`` text starts (None: its cards are not placed)."""
        self._map: mmap.mmap | None = None
        self.count, self.pins = len(digests) // _DIGEST, pins
        self.journal: list[Any] | None = None
        """The journal's state as recorded (``_journal_state``): still its state while the
        journal has the same identity."""

    @classmethod
    def load(cls, path: Path, root: Path, run: str) -> Previous | None:
        """The record at ``path`` and the files it describes, or None unless it is whole, of
        this format and version and run, and every file is as it was when recorded."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head, _, payload = data.partition(b"\n")
        try:
            header = json.loads(head)
            whole = _whole({name: value for name, value in header.items() if name != "payload"}, payload)
            count, pins = header["jobs"], header["pins"]
            files, journal, cards_at = header["files"], header["journal"], header["cards_at"]
            usable = (type(pins) is int and header["format"] == PIECES_FORMAT and header["batchvid"] == __version__
                      and header["run"] == run and header["byteorder"] == sys.byteorder
                      and type(count) is int and (cards_at is None or type(cards_at) is int)
                      and len(payload) == (_DIGEST + 8 * len(FILES)) * count
                      and whole == header["payload"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not usable:
            return None
        spans = []
        for at in range(len(FILES)):
            spans.append(array("I"))
            start = _DIGEST * count + 8 * count * at
            spans[-1].frombytes(payload[start:start + 8 * count])
        changed = _changed_keys(root / STATE_DIR / JOURNAL, journal)
        if changed is None:
            return None
        fds = _opened(root, files)
        if fds is None:
            return None
        previous = cls(payload[:_DIGEST * count], spans, fds, pins, changed)
        previous.cards_at, previous.journal = cards_at, journal
        return previous

    def same(self, number: int, digest: bytes) -> bool:
        """Whether job ``number``'s digest was ``digest``."""
        at = _DIGEST * number
        return self._digests[at:at + _DIGEST] == digest

    def piece(self, file: int, number: int) -> bytes:
        """Job ``number``'s piece of ``file`` (batchvid.lock's pins, read in any order)."""
        spans = self.spans[file]
        if self._map is None:
            self._map = mmap.mmap(self._fds[file], 0, access=mmap.ACCESS_READ)
        return self._map[spans[2 * number]:spans[2 * number + 1]]

    def block(self, file: int, number: int, end: int) -> bytes:
        """The text of ``file`` from job ``number``'s piece to job ``end - 1``'s (both
        included; jobs in order: each file but batchvid.lock). Read as asked, not mapped:
        the pages of a mapped file count as the process's memory once read."""
        spans = self.spans[file]
        start, stop = spans[2 * number], spans[2 * end - 1]
        if file == CARDS:
            assert self.cards_at is not None
            start, stop = start + self.cards_at, stop + self.cards_at
        data = os.pread(self._fds[file], stop - start, start)
        if len(data) != stop - start:
            raise OSError(f"{FILES[file]} was cut while it was read")
        return data

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _opened(root: Path, files: Any) -> list[int] | None:
    """The report files opened, or None unless each is as recorded (``files``: name -> identity)."""
    fds: list[int] = []
    try:
        for name in FILES:
            fds.append(os.open(root / name, os.O_RDONLY))
            if _identity(os.fstat(fds[-1])) != files[name]:
                raise ValueError(name)
    except (OSError, ValueError, KeyError, TypeError):
        for fd in fds:
            os.close(fd)
        return None
    return fds


_READ = 1 << 20


def _journal_state(root: Path, known: list[Any] | None = None) -> list[Any] | None:
    """The journal's identity and the sha256 of its bytes (``_changed_keys``), or None
    without one: ``known`` (the state the previous record holds) while the journal has its
    identity (as ``_changed_keys`` trusts it), else read and hashed."""
    path = root / STATE_DIR / JOURNAL
    if known is not None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if [st.st_mtime_ns, st.st_ino, st.st_dev, st.st_size] == known[:4]:
            return known
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.sha256()
            size = 0
            while chunk := fh.read(_READ):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return [*_identity(st)[1:], size, digest.hexdigest()]


def _changed_keys(path: Path, recorded: Any) -> frozenset[str] | None:
    """The keys of the journal lines written after the ones ``recorded`` (``_journal_state``:
    the journal as the record was made), or None unless the journal still begins with those
    very bytes and each line after them is whole and names its key. A journal as it was
    (same size, mtime, inode and device) has none; otherwise its recorded part is hashed
    again (the journal is only ever appended to: a rewritten one does not match)."""
    try:
        mtime_ns, ino, dev, size, digest = recorded
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if [st.st_mtime_ns, st.st_ino, st.st_dev, st.st_size] == [mtime_ns, ino, dev, size]:
                return frozenset()
            if type(size) is not int or st.st_size < size:
                return None
            hashed, left = hashlib.sha256(), size
            while left and (chunk := fh.read(min(left, _READ))):
                hashed.update(chunk)
                left -= len(chunk)
            if left or hashed.hexdigest() != digest:
                return None
            tail = fh.read()
    except (OSError, ValueError, TypeError):
        return None
    if tail and not tail.endswith(b"\n"):
        return None  # a line being written, or torn
    keys = set()
    try:
        for line in tail.splitlines():
            if line.strip():
                key = json.loads(line)["key"]
                if type(key) is not str:
                    return None
                keys.add(key)
    except (ValueError, KeyError, TypeError):
        return None
    return frozenset(keys)
