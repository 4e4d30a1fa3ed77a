"""The write-ahead journal of an output directory: typed entries, one writer, one reader.

``.batchvid/journal.jsonl`` holds one JSON object per line, compact, keys sorted, each line
fsynced before ``Journal.append`` (or ``Journal.commit``, the same promise with one fsync
shared by the lines written while another was under way) returns. It is the source of truth for "what did we already
pay for": a create is journaled (``submitting``) before it is sent and its task id
(``submitted``) before anything waits on the task, so a run killed at any moment re-attaches.

The entries, by their ``event`` field::

    submitting  key id request_id          a create request is about to be sent
    refused     key id                     a create was answered with an error: no task exists
    submitted   key id task_id             the provider accepted the create: task id known
    succeeded   key id task_id video cover media [poster provided stat]
                                           the video is in place, hashed (poster: its first
                                           frame; provided: what the provider said beside it;
                                           stat: the file's size, mtime_ns and inode then)
    failed      key id task_id error [video media]
                                           the job failed (error: kind and message; video and
                                           media: a paid video kept aside, as after qc_failed)
    enhanced    key id prompt original status model    the prompt to send was rewritten (enhance)

``enhanced`` is journaled before the create that sends its prompt; it does not change a key's
state (``enhanced`` only when nothing else was journaled for the key). The record keeps the
latest rewrite, whether it came after the latest create (``fresh``: the next create sends it),
and the rewrite the latest create sent (``sent``). ``replay`` folds the entries into the latest
``JobRecord`` per job key. The format is the one earlier
versions wrote: fields they did not write read as None, fields a later version adds are ignored.
To add an entry: a frozen dataclass in ``entries.py`` with ``EVENT`` set, a branch in ``_fold``
and a line in the table above.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from io import BufferedReader
from itertools import compress, islice
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from batchvid.durable import fsync_dir, make_dir
from batchvid.entries import (
    ENTRY_TYPES,
    NEEDED_KEYS,
    REQUIRED,
    UNKNOWN,
    Enhanced,
    Entry,
    Failed,
    RecordState,
    Refused,
    Submitted,
    Submitting,
    Succeeded,
    check,
    encode,
    entry_from_dict,
)
from batchvid.errors import OutputDirError
from batchvid.gcpause import paused_gc
from batchvid.journaltail import DAMAGED_LINES, SCAN, SetAside, decode_line, settle_tail
from batchvid.offload import started

__all__ = [  # the entries, defined in entries.py, read and written through this module
    "DAMAGED_LINES", "ENTRY_TYPES", "REQUIRED", "Enhanced", "Entry", "Failed", "JobRecord", "Journal", "RecordState",
    "Refused", "SetAside", "Submitted", "Submitting", "Succeeded", "encode", "entry_from_dict", "fold", "read_entries", "replay_entries",
]

def read_entries(path: Path) -> Iterator[Entry]:
    """The entries of a journal file, in order, read a line at a time. A torn last line (a
    crash mid-write) is ignored; a corrupt line elsewhere is an ``OutputDirError`` naming its
    line number."""
    for data in _lines(path):
        yield entry_from_dict(data)


CHUNK_LINES = 64
"""Lines decoded by one call of the JSON scanner (``_decode_chunk``)."""


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """The decoded lines of a journal file, each checked to be an entry (``entry_from_dict``'s
    checks), with ``read_entries``'s handling of a torn tail and of corruption."""
    for run in _runs(path):
        yield from run


def _runs(path: Path) -> Iterator[list[dict[str, Any]]]:
    """``_lines`` in runs of up to ``CHUNK_LINES`` lines (a run is never empty)."""
    fh = open_journal(path)
    if fh is None:
        return
    with fh:
        for decoded, _, _ in chunks(fh, path):
            if decoded:
                yield decoded


def open_journal(path: Path) -> BufferedReader | None:
    """The journal file opened for reading, or None when there is none."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc


Chunk = tuple[list[dict[str, Any]], list[bytes], bool]
"""A chunk of journal lines: their checked objects, the lines as read, and whether every line
is one (False only for the last chunk, whose last line is a torn tail, left out)."""


def chunks(fh: BinaryIO, path: Path, number: int = 0) -> Iterator[Chunk]:
    """The journal's lines from ``fh``'s position on, ``CHUNK_LINES`` lines a chunk (fewer in
    the last), with ``read_entries``'s handling of a torn tail and of corruption; ``number``:
    the lines before that position (a corrupt line's number counts them)."""
    while chunk := list(islice(fh, CHUNK_LINES)):
        decoded = _decode_chunk(chunk)
        if decoded is not None:
            yield decoded, chunk, True
            number += len(chunk)
            continue
        good: list[dict[str, Any]] = []
        for at, raw in enumerate(chunk, start=1):  # a line a time, to name the bad one
            if not raw.strip():
                continue
            try:
                data = decode_line(raw.decode("utf-8"))
                check(data)
            except (ValueError, KeyError, TypeError) as exc:
                if good:  # the lines before it, as a line at a time gave them
                    yield good, chunk, False
                if at == len(chunk) and not fh.read(1):  # the torn tail of a crash
                    return
                raise OutputDirError(
                    f"{path}:{number + at}: the journal is corrupt ({exc}); "
                    "move the output directory aside or repair that line"
                ) from exc
            good.append(data)
        yield good, chunk, True
        number += len(chunk)


def _decode_chunk(chunk: list[bytes]) -> list[dict[str, Any]] | None:
    """The checked objects of a run of journal lines, decoded as one JSON array: one scanner
    call for them all, whose objects share their key strings (a call per line made its own
    copy of every key: ~1.1 KB of a ``succeeded`` line's ~3.5 KB once decoded; 64 lines a call
    is also the fastest). None, and the caller reads the lines one by one, unless each line
    starts and ends as an object and the array holds as many entries as there are lines: a
    line that is not one object (cut, or two on one line) fails one of these, short of lines
    crafted to pair up across the joins."""
    lines = [raw for raw in chunk if not raw.isspace()]
    for raw in lines:  # as bytes: an ASCII brace is the same byte in UTF-8
        if raw[:1] != b"{" or (raw[-2:] != b"}\n" and raw.rstrip()[-1:] != b"}"):
            return None
    try:
        joined = "[" + b",".join(lines).decode("utf-8") + "]"  # valid UTF-8 as each line is
        values, end = SCAN(joined, 0)
        if end != len(joined) or len(values) != len(lines):
            return None
        for value in values:  # ``_check``'s checks, each a C-level test
            if type(value) is not dict or not value.keys() >= NEEDED_KEYS.get(value["event"], UNKNOWN):
                return None
    except (StopIteration, ValueError, KeyError, TypeError, RecursionError):
        return None
    checked: list[dict[str, Any]] = values
    return checked


@dataclass(slots=True)
class JobRecord:
    """What the journal says about one job key, folded from its entries."""

    key: str
    id: str
    state: RecordState
    """The event of the key's latest entry."""
    task_id: str | None = None
    video: dict[str, Any] | None = None
    """``succeeded`` only: the video's {path, sha256, bytes}, as are ``cover`` and ``media``."""
    cover: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    poster: dict[str, Any] | None = None
    provided: dict[str, Any] | None = None
    stat: dict[str, int] | None = None
    """``succeeded`` only: the video file as journaled (``Succeeded.stat``)."""
    error: dict[str, Any] | None = None
    """``failed`` only: {kind, message}; its ``video`` and ``media`` are a rejected video's."""
    creates: int = 0
    """How many create requests the journal shows for this key (a duplicate shows 2)."""
    request_id: str | None = None
    """The idempotency key of the latest create, while it is unanswered (``submitting``)."""
    enhanced: dict[str, Any] | None = None
    """The latest ``enhanced`` entry's fields (``Enhanced.result``), kept through later entries."""
    fresh: bool = False
    """``enhanced`` was journaled after the latest create: no task was made with it yet."""
    sent: dict[str, Any] | None = None
    """The rewrite in force when the latest create was journaled: the prompt its task has."""


def fold(records: dict[str, JobRecord], entry: Entry) -> None:
    """Apply one entry to the records: the latest entry of a key decides its state."""
    _fold(records, {"event": entry.EVENT, **{f.name: getattr(entry, f.name) for f in fields(entry)}})


def _fold(records: dict[str, JobRecord], line: Mapping[str, Any]) -> None:
    """``fold`` of one checked journal line (fields it leaves out take their defaults)."""
    event, key = line["event"], line["key"]
    get = line.get
    previous = records.get(key)
    if event == "enhanced":
        if previous is None:
            previous = records[key] = JobRecord(key, line["id"], event)
        previous.enhanced = {name: get(name, default) for name, default in _REWRITE_DEFAULTS.items()}
        previous.fresh = True
        return
    creates = (0 if previous is None else previous.creates) + (event == "submitting")
    if previous is not None:
        key = previous.key  # the string the records' dict holds: one copy per job, not two
    record = records[key] = _record(key, line, creates)
    if previous is not None:
        record.enhanced, record.fresh, record.sent = previous.enhanced, previous.fresh, previous.sent
    if event == "submitting":
        record.sent, record.fresh = record.enhanced, False


SETTLE_KEYS = 4096
"""The most keys whose latest line a ``Fold`` holds before it makes their records."""


class Fold:
    """``_fold`` of runs of checked lines onto ``records``, in C-level passes: until a run
    holds an ``enhanced`` line, a key's record follows from its record before the run, its
    latest line and how many creates (``submitting``) its lines show, so only each key's latest
    line is kept, not a record made and dropped per line (``settle`` makes them), and only
    until ``SETTLE_KEYS`` keys have one: a decoded line (its dict) outweighs the record made of
    it, so holding every key's line of a 100,000-job journal cost ~40 MB more at its peak. A
    run with an ``enhanced`` line is folded line by line."""

    def __init__(self, records: dict[str, JobRecord] | None = None) -> None:
        self.records: dict[str, JobRecord] = {} if records is None else records
        self._latest: dict[str, dict[str, Any]] = {}
        """Each key's latest line not folded yet, keys in the order they first appear."""
        self._creates: Counter[str] = Counter()

    def add(self, run: list[dict[str, Any]]) -> None:
        events = list(map(_EVENT, run))
        if "enhanced" in events:
            records = self.settle()
            for line in run:
                _fold(records, line)
            return
        keys = list(map(_KEY, run))
        self._latest.update(zip(keys, run, strict=True))
        if "submitting" in events:
            self._creates.update(compress(keys, map("submitting".__eq__, events)))
        if len(self._latest) >= SETTLE_KEYS:
            self.settle()

    def settle(self) -> dict[str, JobRecord]:
        """The records with every line added so far folded in."""
        records, creates = self.records, self._creates
        if not records:  # a key's first lines: its record is its latest line's
            records = self.records = {key: _record(key, line, creates.get(key, 0))
                                      for key, line in self._latest.items()}
        else:
            for key, line in self._latest.items():
                made = creates.get(key, 0)
                previous = records.get(key)
                if previous is None:
                    records[key] = _record(key, line, made)
                    continue
                record = records[key] = _record(previous.key, line, previous.creates + made)
                record.enhanced, record.fresh, record.sent = previous.enhanced, previous.fresh, previous.sent
                if made:  # as ``_fold`` of its ``submitting`` line
                    record.sent, record.fresh = previous.enhanced, False
        self._latest, self._creates = {}, Counter()
        return records


def _replay(runs: Iterable[list[dict[str, Any]]]) -> dict[str, JobRecord]:
    """``_fold`` of every line of ``runs`` (``Fold``)."""
    fold = Fold()
    for run in runs:
        fold.add(run)
    return fold.settle()


_EVENT, _KEY = itemgetter("event"), itemgetter("key")


def _record(key: str, line: Mapping[str, Any], creates: int) -> JobRecord:
    """A key's record from its latest ``line`` (not ``enhanced``) and its number of
    ``creates``: all of it for a key without a record yet; else the rewrite's fields are then
    carried over from its record (``Fold.settle``, ``_fold``)."""
    event, get = line["event"], line.get
    if event == "succeeded":
        return JobRecord(key, line["id"], event, get("task_id"), line["video"], get("cover"), get("media"),
                         get("poster"), get("provided"), get("stat"), None, creates)
    record = JobRecord(key, line["id"], event, creates=creates)
    if event == "submitting":
        record.request_id = get("request_id")
    elif event == "submitted":
        record.task_id = line["task_id"]
    elif event == "failed":
        record.task_id, record.error = get("task_id"), line["error"]
        record.video, record.media = get("video"), get("media")
    return record


_REWRITE_DEFAULTS = {f.name: f.default for f in fields(Enhanced) if f.name not in ("key", "id")}
"""What ``Enhanced.result`` holds, with the defaults of the fields a line leaves out."""


def replay_entries(entries: Iterable[Entry]) -> dict[str, JobRecord]:
    records: dict[str, JobRecord] = {}
    for entry in entries:
        fold(records, entry)
    return records


class Journal:
    """Append-only JSON lines, each fsynced before ``append`` or ``commit`` returns.

    ``commit`` is the group commit of the event loop's hot paths: the line is written and
    flushed at once (so lines keep their order), then the caller waits until an fsync that
    began after the write has finished. If none is under way, the caller leads one in a worker
    thread; lines written meanwhile wait for the next, one fsync for all of them. The wait is
    shielded from cancellation, like the synchronous ``append``: once ``commit`` is called, its
    line is durable when it returns, whatever happens to the caller.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None
        self._written = 0
        """Lines written so far (their sequence numbers)."""
        self._synced = 0
        """Every line up to this number is on disk."""
        self._syncing: anyio.Event | None = None
        """Set when the fsync under way finishes; None while none is."""
        self.set_aside: SetAside | None = None
        """The damaged last line ``open`` moved out of the journal, if it moved one."""

    def open(self) -> None:
        """Open for appending. A last line that is not an entry (replay() ignored it: the torn
        tail of a crash, or a damaged line that still ends in a newline) is moved aside into
        ``DAMAGED_LINES`` (``set_aside`` says where), or the next line would follow it and
        make it a corrupt line in the middle; a whole entry that lost only its newline gets it
        back."""
        make_dir(self.path.parent)
        existed = self.path.exists()
        self._fh = self.path.open("ab")
        self.set_aside = None
        if not existed:
            fsync_dir(self.path.parent)
        try:
            self.set_aside = settle_tail(self.path, self._fh)
        except OutputDirError:
            self.close()
            raise

    @property
    def written(self) -> int:
        """The lines this journal appended since it was made."""
        return self._written

    def close(self) -> None:
        if self._fh is not None:
            if self._synced < self._written:  # a commit's caller went away: keep its line
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def _write(self, entry: Entry) -> int:
        assert self._fh is not None, "journal is not open"
        self._fh.write(encode(entry))
        self._fh.flush()
        self._written += 1
        return self._written

    def append(self, entry: Entry) -> None:
        """Write the line and fsync it (and every line before it) on the calling thread."""
        number = self._write(entry)
        assert self._fh is not None
        os.fsync(self._fh.fileno())
        self._synced = max(self._synced, number)

    async def commit(self, entry: Entry) -> None:
        """Write the line now and return once it is on disk, sharing the fsync (class doc)."""
        number = self._write(entry)
        with anyio.CancelScope(shield=True):
            while self._synced < number:
                if self._syncing is not None:
                    await self._syncing.wait()
                    continue
                await self._lead_sync()

    async def _lead_sync(self) -> None:
        """One fsync in a worker thread, covering every line written before it starts (in
        ``commit``'s shielded scope: the hop needs no shield of its own)."""
        assert self._fh is not None, "journal is not open"
        done = self._syncing = anyio.Event()
        try:
            upto = self._written
            await started(os.fsync, self._fh.fileno())
            self._synced = max(self._synced, upto)
        finally:
            self._syncing = None
            done.set()

    def entries(self) -> Iterator[Entry]:
        return read_entries(self.path)

    def replay(self) -> dict[str, JobRecord]:
        """Fold the journal into the latest record per key (see ``read_entries``), straight
        from its decoded lines (``_replay``), every line from the start (``snapshot.replay``
        starts from the replay snapshot when it holds). The records (a few dicts per finished job, all
        alive until the run ends, no cycles) are built without the cyclic collector's rescans
        (``paused_gc``)."""
        with paused_gc():
            return _replay(_runs(self.path))
