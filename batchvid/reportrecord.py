"""The record of a report pass's pieces on disk (``.batchvid/report-pieces``), and the previous
one read back (``Previous``): the report files it describes, open, each job's digest and pieces
(``batchvid.reportpieces`` makes and uses them).

The record names each report file by its identity (size, mtime, inode, device) and the sha256 of
its bytes. A file whose identity is another (the directory copied, restored from an archive or a
CI cache: new inodes, maybe new mtimes) is used when it has the recorded size and its bytes the
recorded sha256 (``_same_bytes``): the record describes those very bytes, wherever they are.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sys
from array import array
from pathlib import Path
from typing import Any

from batchvid import __version__
from batchvid.gallery import GALLERY_NAME, sources_digest
from batchvid.piecesjournal import changed_keys, identity
from batchvid.store import JOURNAL, STATE_DIR

PIECES_NAME = "report-pieces"
"""The record's name in the output directory's ``.batchvid``."""
PIECES_FORMAT = 4
"""Bump when the text of any job's piece changes (how an entry, a row, a testcase, a metadata
line or a pin is written) or the record's layout: a record of another format is not used.
2: each job's form (``_GENERATED``) recorded, and the task id in its digest. 3: the place of
report.html's sweeps (``sweeps_at``). 4: each file's sha256 (``digests``)."""
FILES = ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html")
REPORT_JSON, REPORT_MD, JUNIT, METADATA, LOCK, CARDS = range(len(FILES))
"""The files with a piece per job; report.html's pieces are its cards, their places counted from
the start of its data block's ``jobs`` text (``cards_at``)."""
DIGEST_SIZE = 16
"""The bytes of each job's digest (``reportpieces.fingerprint``)."""


def record_digest(header: dict[str, Any], payload: bytes) -> str:
    """The record's digest: of its header (but this digest) and its payload."""
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload).hexdigest()


class Cut(OSError):
    """A report file was cut, or written over, while its pieces were read (its bytes not those
    recorded): the files are written without them."""


class Previous:
    """The previous pass's record and its files, open: each job's digest and pieces."""

    def __init__(self, digests: bytes, forms: bytes, spans: list[array[int]], fds: list[int], pins: int,
                 changed: frozenset[str]) -> None:
        self._digests, self._forms, self.spans, self._fds = digests, forms, spans, fds
        self.changed = changed
        """The keys with a journal line written since the record (their records may differ)."""
        self.cards_at: int | None = None
        """Where report.html's ``jobs`` text starts (None: its cards are not placed)."""
        self.sweeps_at: list[int] | None = None
        """Where its ``sweeps`` text is (None: not placed)."""
        self._map: mmap.mmap | None = None
        self._files: dict[str, list[int]] = {}
        """Each file's identity when opened: the recorded one, or a copy's of the same bytes
        (``unchanged``)."""
        self.sha256: dict[str, str | None] = {}
        """Each file's sha256 as recorded (a file kept as it is keeps it: ``Pieces.kept``)."""
        self.count, self.pins = len(digests) // DIGEST_SIZE, pins
        self.journal: list[Any] | None = None
        """The journal's state when the record was read (``journal_state``'s: as recorded, or
        hashed then, ``changed_keys``): still its state while the journal has that identity."""

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
            whole = record_digest({name: value for name, value in header.items() if name != "payload"}, payload)
            count, pins = header["jobs"], header["pins"]
            files, journal, cards_at = header["files"], header["journal"], header["cards_at"]
            sweeps_at, sha256 = header["sweeps_at"], header["digests"]
            usable = (type(pins) is int and header["format"] == PIECES_FORMAT and header["batchvid"] == __version__
                      and (sweeps_at is None or _span(sweeps_at)) and header["run"] == run and header["byteorder"] == sys.byteorder
                      and type(count) is int and (cards_at is None or type(cards_at) is int)
                      and type(files) is dict and type(sha256) is dict
                      and len(payload) == (DIGEST_SIZE + 1 + 8 * len(FILES)) * count
                      and whole == header["payload"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not usable:
            return None
        spans = []
        for at in range(len(FILES)):
            spans.append(array("I"))
            start = (DIGEST_SIZE + 1) * count + 8 * count * at
            spans[-1].frombytes(payload[start:start + 8 * count])
        journal_now = changed_keys(root / STATE_DIR / JOURNAL, journal)
        if journal_now is None:
            return None
        changed, journal = journal_now
        opened = _opened(root, files, sha256)
        if opened is None:
            return None
        fds, now = opened
        previous = cls(payload[:DIGEST_SIZE * count], payload[DIGEST_SIZE * count:(DIGEST_SIZE + 1) * count], spans, fds, pins,
                       changed)
        previous.cards_at, previous.sweeps_at, previous.journal = cards_at, sweeps_at, journal
        previous._files, previous.sha256 = now, {name: sha256.get(name) for name in FILES}
        return previous

    def same(self, number: int, digest: bytes) -> bool:
        """Whether job ``number``'s digest was ``digest``."""
        at = DIGEST_SIZE * number
        return self._digests[at:at + DIGEST_SIZE] == digest

    def form(self, number: int) -> int:
        """Job ``number``'s form (``_GENERATED``, or 0)."""
        return self._forms[number]

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
        return self.read(file, start, stop)

    def read(self, file: int, start: int, stop: int) -> bytes:
        """``file``'s bytes from ``start`` to ``stop`` (not included)."""
        data = os.pread(self._fds[file], stop - start, start)
        if len(data) != stop - start:
            raise Cut(f"{FILES[file]} was cut while it was read")
        return data

    def unchanged(self) -> bool:
        """Whether every file is still as recorded (checked once its pieces are read: one
        written over in place while it was read may have given other bytes)."""
        try:
            return all(identity(os.fstat(fd)) == self._files[name] for name, fd in zip(FILES, self._fds, strict=True))
        except OSError:
            return False

    def at_name(self, root: Path, name: str) -> list[int] | None:
        """The identity of the open file ``name`` when its name in ``root`` still names it
        (not replaced since it was opened), else None."""
        try:
            now = identity(os.stat(root / name))
        except OSError:
            return None
        return now if now == self._files.get(name) else None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def page_as_recorded(path: Path, root: Path) -> bool:
    """Whether ``root``'s report.html is the page the record at ``path`` describes (its identity,
    or its size and sha256), or no record says otherwise (none, or its header unreadable).
    Asked when the record is not used (``Previous.load``, which checks every file, gave None):
    a page whose header survived damage would otherwise only be retimed, the damage kept
    (``gallery.write_gallery``'s ``fresh``). Only the header is read, and the page hashed only
    when its identity is not the recorded one."""
    try:
        with open(path, "rb") as fh:
            header = json.loads(fh.readline(_HEADER_MAX))
        recorded, sha256 = header["files"][GALLERY_NAME], header["digests"][GALLERY_NAME]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return True
    if type(sha256) is not str:
        return True
    try:
        fd = os.open(root / GALLERY_NAME, os.O_RDONLY)
    except OSError:
        return True  # (a missing page is rendered in any case)
    try:
        now = identity(os.fstat(fd))
        return now == recorded or _same_bytes(fd, now, recorded, sha256)
    except OSError:
        return False
    finally:
        os.close(fd)


_HEADER_MAX = 1 << 16
"""The most bytes of a record's header line ``page_as_recorded`` reads (a header is ~1 KB)."""


def _span(value: Any) -> bool:
    """Whether ``value`` is a recorded place: two offsets, the first before the second."""
    return type(value) is list and len(value) == 2 and all(type(at) is int for at in value) and 0 <= value[0] < value[1]


def _opened(root: Path, files: dict[str, Any], sha256: dict[str, Any]) -> tuple[list[int], dict[str, list[int]]] | None:
    """The report files opened, and their identities, or None unless each is as recorded: the
    same identity (``files``: name -> identity), or the same size and sha256 (``sha256``)."""
    fds: list[int] = []
    now: dict[str, list[int]] = {}
    try:
        for name in FILES:
            fds.append(os.open(root / name, os.O_RDONLY))
            now[name] = identity(os.fstat(fds[-1]))
            if now[name] != files[name] and not _same_bytes(fds[-1], now[name], files[name], sha256.get(name),
                                                            sources_digest() if name == "report.json" else None):
                raise ValueError(name)
    except (OSError, ValueError, KeyError, TypeError):
        for fd in fds:
            os.close(fd)
        return None
    return fds, now


def _same_bytes(fd: int, now: list[int], recorded: Any, sha256: Any, after: hashlib._Hash | None = None) -> bool:
    """Whether open file ``fd`` (of identity ``now``), another than the recorded one (another
    inode, device or mtime), has its bytes: the recorded size and sha256 (hashed after what
    ``after`` hashed: report.json's, after the page's sources, as ``gallery.ContentHash`` hashes
    it), and the same identity once read (a file changed as it was hashed is not trusted)."""
    if type(sha256) is not str or type(recorded) is not list or not recorded or now[0] != recorded[0]:
        return False
    digest, offset = after or hashlib.sha256(), 0
    while chunk := os.pread(fd, _READ, offset):
        digest.update(chunk)
        offset += len(chunk)
    return offset == now[0] and digest.hexdigest() == sha256 and identity(os.fstat(fd)) == now


_READ = 1 << 20
"""The bytes of a file read at a time to hash it (``_same_bytes``): not mapped, whose pages
would count as the process's memory."""
