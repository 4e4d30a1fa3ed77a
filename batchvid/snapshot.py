"""The journal's replay, kept: ``.batchvid/replay-snapshot``, so a rerun folds only new lines.

Replaying a 100,000-job journal (~100 MB of JSON lines) cost a rerun 3-4 s, mostly decoding.
After a replay that folded many lines, the run holding the directory's lock writes the
records as they stood after the journal's first ``lines`` lines (bytes [0, ``offset``)), in
marshal's binary form, with the sha256 of those bytes. The next replay (``replay``) loads them
when the journal still begins with those very bytes, and folds only the lines after them.

The file: ``_MAGIC``, the header (``_HEADER``, fixed fields read with struct: ``FORMAT``, a
digest of Python's version and of the modules that read and fold the journal, ``CHUNK_LINES``,
``offset``, ``lines``, the sha256 of the journal's bytes [0, ``offset``), and how many batches
follow), each batch's length and sha256 (``_ENTRY``), and the batches: up to ``_BATCH``
records each (marshal: a list of one tuple of ``JobRecord``'s fields per record), in the
records' order. marshal is given only a batch of the length and sha256 the header states: it
does not guard against damaged or crafted bytes (five of them can make it allocate 16 GB).
``lines`` is a multiple of ``CHUNK_LINES``: the lines after it
are read in the very chunks a replay from the start reads them in, so the records are those a
full replay gives, byte for byte, corrupt-line errors and their line numbers included.

A run that appended ``SAVE_LINES`` lines or more (and a quarter of the snapshot's) leaves the
snapshot of its journal as it closes, still holding the lock (``save_after_run``): a child
process replays the journal (from the snapshot, when one holds) and writes it, so the run's
own memory does not grow and its first rerun loads it rather than decode the whole journal.
A run killed before that leaves the snapshot it found (or none), which still holds or is not
used.

A cache only: anything doubtful (no such file, a cut or damaged one, another format, Python or
code, a journal shorter than ``offset`` or with other bytes there: rewritten, repaired, another
directory's) and the journal is replayed from its start, as without it. Deleting it changes
nothing but time. It is written atomically but without an fsync: a file a power cut damaged
fails its digests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from io import BufferedReader
from itertools import starmap
from operator import attrgetter
from pathlib import Path
from typing import Any

from batchvid import entries, journal
from batchvid.durable import create_temp
from batchvid.gcpause import paused_gc
from batchvid.interpreter import python_command
from batchvid.journal import Chunk, Fold, JobRecord, chunks, open_journal

SNAPSHOT_NAME = "replay-snapshot"
"""The file's name in the output directory's ``.batchvid``."""
FORMAT = 2
"""Bump when the header's or the payload's layout changes."""
_MAGIC = b"batchvid replay snapshot\n"
_HEADER = struct.Struct("<I32sIQQ32sI")
"""FORMAT, ``_identity``, CHUNK_LINES, offset, lines, the prefix's sha256, the batches."""
_ENTRY = struct.Struct("<Q32s")
"""A batch's length and sha256."""
SAVE_LINES = 4096
"""The fewest lines folded from the journal (not from a snapshot) for a replay to write one."""
_FIELDS = attrgetter(*(f.name for f in fields(JobRecord)))
_READ = 1 << 20
_BATCH = 4096
"""Records marshalled together (one ``marshal.dumps`` call)."""


def replay(path: Path, *, save: bool = False) -> dict[str, JobRecord]:
    """The records of the journal at ``path`` (``Journal.replay``'s), folded from its snapshot
    and the lines after it when the snapshot holds (module doc), else from its start. With
    ``save`` (the caller holds the directory's lock), a snapshot is written when this replay
    folded at least ``SAVE_LINES`` lines and a quarter of the snapshot's, and one that does not
    hold is deleted."""
    snapshot = path.with_name(SNAPSHOT_NAME)
    with paused_gc():
        fh = open_journal(path)
        if fh is None:
            return {}
        with fh:
            start = _load(snapshot, fh)
            if start is None:
                fh.seek(0)
            replayed = _Replay(start or _Start({}, 0, 0, hashlib.sha256()), hashing=save)
            items = chunks(fh, path, replayed.lines)
            last = replayed.fold_all_but_last(items)
            if last is not None and _ends_at_a_boundary(last):
                replayed.advance(last)
                last = None
            if save:
                if replayed.worth_saving():
                    replayed.save(snapshot)
                elif start is None:
                    with contextlib.suppress(OSError):
                        os.unlink(snapshot)  # stale or damaged: not read again each run
            if last is not None:
                replayed.fold.add(last[0])
            return replayed.fold.settle()


@dataclass
class _Start:
    """Where a replay starts: the records of the journal's first ``lines`` lines, bytes
    [0, ``offset``), and their sha256 so far."""

    records: dict[str, JobRecord]
    offset: int
    lines: int
    hashed: Any  # hashlib's sha256 object


class _Replay:
    """A replay under way: the lines folded, where they end and, ``hashing``, their digest."""

    def __init__(self, start: _Start, *, hashing: bool) -> None:
        self.fold = Fold(start.records)
        self.offset, self.lines, self.hashed = start.offset, start.lines, start.hashed
        self._first = start.lines
        self._hashing = hashing

    def fold_all_but_last(self, items: Any) -> Chunk | None:
        """Fold every chunk but the last one, which is returned (None: there was none)."""
        pending: Chunk | None = None
        for item in items:
            if pending is not None:
                self.advance(pending)
            pending = item
        return pending

    def advance(self, item: Chunk) -> None:
        """Fold a whole chunk that ends at a line boundary of a snapshot."""
        decoded, chunk, _ = item
        self.fold.add(decoded)
        if self._hashing:
            data = b"".join(chunk)
            self.hashed.update(data)
            self.offset += len(data)
        else:
            self.offset += sum(map(len, chunk))
        self.lines += len(chunk)

    def worth_saving(self) -> bool:
        return _worth_saving(self.lines - self._first, self._first)

    def save(self, snapshot: Path) -> None:
        """Write the records folded so far as the snapshot of the lines read so far."""
        code = code_digest()
        if code is None:
            return
        records = list(self.fold.settle().values())
        count = -(-len(records) // _BATCH)
        header = _MAGIC + _HEADER.pack(FORMAT, _identity(code), journal.CHUNK_LINES, self.offset, self.lines,
                                       self.hashed.digest(), count)
        # In batches: marshal's table of shared objects and the rows stay small.
        batches = (marshal.dumps(list(map(_FIELDS, records[at:at + _BATCH])))
                   for at in range(0, len(records), _BATCH))
        # A cache: a full or read-only disk, or a value nested deeper than marshal goes
        # (ValueError), and there is no snapshot.
        with contextlib.suppress(OSError, ValueError):
            _write(snapshot, header, count, batches)


def _worth_saving(new_lines: int, covered: int) -> bool:
    """Whether ``new_lines`` journal lines beyond the ``covered`` ones a snapshot holds are
    worth writing a new one for: ``SAVE_LINES``, and a quarter of those."""
    return new_lines >= SAVE_LINES and new_lines >= covered // 4


def save_after_run(path: Path, appended: int, lock_fd: int | None = None) -> None:
    """Write the snapshot of the journal at ``path`` after a run that appended ``appended``
    lines to it, when that many lines are worth one (``SAVE_LINES``, and a quarter of those the
    snapshot in place covers: ``replay``'s rule), in a child process (``child_command``) that
    this waits for: the replay's records never live in the run's process. The caller holds the
    directory's lock, and ``lock_fd`` (its lock file's descriptor) is the child's too: killed
    while it waits, the run leaves the lock held until the child ends. A child that fails or
    cannot start leaves no snapshot, and is no error (a cache). Neither is a Ctrl-C while it
    waits: the run's work is done, so the child is killed and reaped, and this returns for the
    run to end as it would have (the next run writes the snapshot as it replays)."""
    if not _worth_saving(appended, covered_lines(path.with_name(SNAPSHOT_NAME))):
        return
    command = child_command(path, lock_fd)
    if command is None:  # no interpreter to start
        return
    import subprocess

    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, pass_fds=() if lock_fd is None else (lock_fd,))
    except (OSError, subprocess.SubprocessError):
        return
    try:
        child.wait()
    except KeyboardInterrupt:
        child.kill()
        child.wait()


_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from batchvid.snapshot import main; main(sys.argv[2:])"


def child_command(path: Path, lock_fd: int | None = None) -> list[str] | None:
    """The child process ``save_after_run`` starts: this interpreter, this very package (its
    folder first on the path; not the working directory, ``-P``), ``replay(path, save=True)``
    with this process's ``CHUNK_LINES`` and ``SAVE_LINES``; ``lock_fd``, the lock file's
    descriptor it inherits (``main``). None when this process has no interpreter to start
    (``batchvid.interpreter``: Python embedded in uwsgi or another host program, say): then no
    snapshot is left, and the next run writes it."""
    package_root = str(Path(__file__).resolve().parent.parent)
    return python_command("-c", _CHILD, package_root, str(path), str(journal.CHUNK_LINES), str(SAVE_LINES),
                          "" if lock_fd is None else str(lock_fd))


def main(args: list[str]) -> None:
    """The child of ``save_after_run``: ``args`` are the journal's path, ``CHUNK_LINES``,
    ``SAVE_LINES`` and the lock file's descriptor, if it holds the lock: its pid is written
    there first, so that a run finding the directory locked names this live process, not the
    run that started it (killed while it waits, say)."""
    global SAVE_LINES
    path, chunk_lines, save_lines, *lock = args
    if lock and lock[0]:
        fd = int(lock[0])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    journal.CHUNK_LINES, SAVE_LINES = int(chunk_lines), int(save_lines)
    replay(Path(path), save=True)


def covered_lines(snapshot: Path) -> int:
    """The journal lines the snapshot file says it covers, unchecked (0: no such file, or not
    a snapshot)."""
    try:
        with open(snapshot, "rb") as sf:
            header = _header(sf)
    except OSError:
        return 0
    return 0 if header is None else int(header[4])


def _header(sf: BufferedReader) -> tuple[Any, ...] | None:
    """The header's fields (``_HEADER``) read from the start of snapshot file ``sf``, or None
    when it is not a snapshot's (too short, another magic)."""
    head = sf.read(len(_MAGIC) + _HEADER.size)
    if len(head) != len(_MAGIC) + _HEADER.size or not head.startswith(_MAGIC):
        return None
    return _HEADER.unpack_from(head, len(_MAGIC))


def _write(path: Path, header: bytes, count: int, batches: Iterator[bytes]) -> None:
    """The snapshot written atomically, without an fsync: ``header``, the table of the
    ``count`` batches (their lengths and digests, filled in once they are written), and the
    batches, each written as it is made (the payload, ~600 bytes a job, is never whole in
    memory)."""
    fd, tmp = create_temp(path, ".tmp", durable=False)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header + bytes(count * _ENTRY.size))
            table = []
            for batch in batches:
                fh.write(batch)
                table.append(_ENTRY.pack(len(batch), hashlib.sha256(batch).digest()))
            if len(table) != count:
                raise ValueError("not as many batches as the header says")
            fh.seek(len(header))
            fh.write(b"".join(table))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ends_at_a_boundary(item: Chunk) -> bool:
    """Whether the journal's last chunk ends where a snapshot may: all of it whole lines, as
    many as a full chunk."""
    _, chunk, whole = item
    return whole and len(chunk) == journal.CHUNK_LINES and chunk[-1].endswith(b"\n")


def _load(snapshot: Path, fh: BufferedReader) -> _Start | None:
    """The snapshot's start when it holds for the journal open as ``fh`` (left just after the
    bytes it covers), else None."""
    try:  # a cache: whatever is wrong with the file, it is not used
        with open(snapshot, "rb") as sf:
            return _parse(sf, fh)
    except Exception:  # OSError, marshal's ValueError, EOFError or TypeError, ...
        return None


def _parse(sf: BufferedReader, fh: BufferedReader) -> _Start | None:
    header = _header(sf)
    if header is None:
        return None
    form, identity, chunk, offset, lines, prefix, count = header
    code = code_digest()
    if form != FORMAT or chunk != journal.CHUNK_LINES or code is None or identity != _identity(code):
        return None
    left = os.fstat(sf.fileno()).st_size - len(_MAGIC) - _HEADER.size - count * _ENTRY.size
    if lines % chunk or left < 0 or os.fstat(fh.fileno()).st_size < offset:
        return None
    batches = list(_ENTRY.iter_unpack(sf.read(count * _ENTRY.size)))
    if sum(size for size, _ in batches) != left:
        return None
    hashed = hash_prefix(fh, offset)
    if hashed.digest() != prefix:
        return None
    records: dict[str, JobRecord] = {}
    rows = 0
    for size, digest in batches:
        data = sf.read(size)
        if hashlib.sha256(data).digest() != digest:
            return None
        batch = marshal.loads(data)  # bytes the header vouches for, not any bytes
        records.update((record.key, record) for record in starmap(JobRecord, batch))
        rows += len(batch)
    if len(records) != rows:
        return None
    return _Start(records, offset, lines, hashed)


def hash_prefix(fh: BufferedReader, size: int) -> Any:
    """The sha256 of the file's first ``size`` bytes, read from its start; ``fh`` is left at
    ``size`` (or at its end, when shorter)."""
    fh.seek(0)
    hashed = hashlib.sha256()
    buffer = memoryview(bytearray(_READ))
    left = size
    while left:
        got = fh.readinto(buffer[:min(left, _READ)])
        if not got:
            break
        hashed.update(buffer[:got])
        left -= got
    return hashed


_FOLDING = (journal, entries, sys.modules[__name__])
"""The modules whose code reads and folds the journal, and writes and reads the snapshot."""


@functools.cache
def code_digest() -> bytes | None:
    """A digest of the modules that read and fold the journal (``_FOLDING``), so a snapshot
    written by other code (a checkout changed, a branch merged without ``FORMAT`` bumped) is
    not used; None when they cannot be read (then no snapshot is written)."""
    digest = hashlib.sha256()
    try:
        for module in _FOLDING:
            digest.update(Path(str(module.__file__)).read_bytes() + b"\0")
    except (OSError, TypeError):
        return None
    return digest.digest()


def _identity(code: bytes) -> bytes:
    """The digest of Python's version and of the folding code (``code_digest``)."""
    return hashlib.sha256(sys.version.encode() + b"\0" + code).digest()
