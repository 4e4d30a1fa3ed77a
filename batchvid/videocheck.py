"""A plan's check of its done jobs' videos, and the videos a run verified by hashing,
remembered (``.batchvid/verified-videos``) so that the next rerun of the same copy reads none.

A done job's ``jobs/<id>/video.mp4`` is taken as verified without reading it when its size,
mtime_ns and inode are still the ``stat`` journaled with it (the file batchvid wrote), or when
its identity (size, mtime_ns, ctime_ns, inode and device) is one a run recorded here with the
sha256 its journal record names. Otherwise it is hashed (``hash_videos``: in threads when the
videos are large), and a run (which holds the directory's lock: ``remember``) records the
identity of each one that verifies.
A directory copied (``cp -r``, rsync, tar, a CI cache restored: new inodes, maybe new mtimes)
has its videos hashed by its first rerun, not by every rerun after it; copied again, its new
identities are hashed once more.

The file: ``_MAGIC``, then a line per video verified: ``<id> <size> <mtime_ns> <ctime_ns> <ino>
<dev> <sha256>``, appended as they verify (a rerun killed half way keeps the lines written, the
next run cuts a torn last one), the last line of an id the one used, rewritten whole
(temporary name, rename) when a pass leaves more than twice the lines it needs. A line vouches
only that the file with that identity had those bytes: a file changed since has another ctime
(which no tool can set back: a file rewritten with its mtime put back, ``touch -r``, ``rsync
--inplace``), and another file put in its place has another ctime too, even when it recycles the
inode number of a deleted one (ext4 does: ``rm -r`` then ``cp -a`` gives each copy the inode its
predecessor had, with the same size and mtime). A file whose mtime or ctime is within
``racy_ns`` of the moment it was hashed is not recorded, so that a change in the same tick of a
coarse clock cannot go unseen.

A cache only: a line not whole, of another form or naming another file is not used, and
deleting the file changes nothing but time. Written without an fsync.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from batchvid.durable import content_mismatch, write_atomic

NAME = "verified-videos"
"""The file's name in the output directory's ``.batchvid``."""
_MAGIC = b"batchvid verified videos 1\n"
_FLUSH = 256
"""Lines appended between writes to the file (a killed pass loses at most these)."""
_READ = 1 << 20
_LINE = re.compile(rb"(\S+) (\d+ \d+ \d+ \d+ \d+ [0-9a-f]{64})\n")
"""A whole line: the id, then its text (the identity: five numbers; the sha256)."""
THREADS = max(1, min(4, os.cpu_count() or 1))
"""Threads that hash (hashlib lets go of the GIL while it hashes a large buffer)."""
THREADED_FROM = 64 << 10
"""The mean size of the videos to hash from which threads hash them: smaller files cost more
in the threads' turns at the GIL (open, stat, close) than their hashing saves."""


def racy_ns(time_ns: int) -> int:
    """How recent (before it was hashed) a file's mtime or ctime may be for its identity not to
    be trusted: a file system with whole-second (or two-second: FAT) times, 2 s; else 0.1 s,
    more than a kernel's clock tick."""
    return 2_000_000_000 if time_ns % 1_000_000_000 == 0 else 100_000_000


def _settled(st: os.stat_result, hashed_at: int) -> bool:
    """Whether the file's last change (mtime, ctime) came long enough before ``hashed_at`` that
    a change after it must give it another identity (``racy_ns``)."""
    return (st.st_mtime_ns < hashed_at - racy_ns(st.st_mtime_ns)
            and st.st_ctime_ns < hashed_at - racy_ns(st.st_ctime_ns))


class VideoCheck:
    """The done videos of one output directory, checked: ``unchanged`` without reading them,
    ``hash_videos`` reading them; ``close`` when the plan is made."""

    def __init__(self, root: Path, *, remember: bool = False) -> None:
        self.head = f"{root}/jobs/"
        self._path = root / ".batchvid" / NAME
        self._remember = remember
        self._known: dict[str, str] | None = None
        """Each id's last line, but the id (read at the first video its journaled stat does
        not vouch for)."""
        self._lines = 0
        self._whole = 0
        """The bytes of the file up to its last newline (0: no usable file)."""
        self._out: IO[bytes] | None = None
        self._unwritten: list[bytes] = []

    def path(self, job_id: str) -> str:
        # a string, not a Path: a rerun checks every done job's
        return f"{self.head}{job_id}/video.mp4"

    def unchanged(self, job_id: str, video: Mapping[str, Any], journaled: Mapping[str, int] | None) -> bool:
        """Whether ``job_id``'s video is the one its record names without reading it: the file
        its journaled ``stat`` names (size, mtime_ns and inode), or one recorded here."""
        try:
            st = os.stat(self.path(job_id))
        except OSError:
            return False
        if (journaled is not None and len(journaled) == 3 and journaled.get("bytes") == st.st_size
                and journaled.get("ino") == st.st_ino and journaled.get("mtime_ns") == st.st_mtime_ns):
            return journaled.get("bytes") == video.get("bytes")
        if self._known is None:
            self._known = self._load()
        return st.st_size == video.get("bytes") and self._known.get(job_id) == _line(st, video.get("sha256"))

    def hash_videos(self, videos: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str | None]:
        """For each (id, record) the problem with the video (None: it has the recorded size and
        sha256; else ``store.verify_file``'s words), the videos read in threads when they are
        large (``THREADED_FROM``); a run records each one that verifies."""
        if self._known is None:
            self._known = self._load()
        results: list[tuple[str, int, str | None] | str | None] = [None] * len(videos)
        paths = [self.path(job_id) for job_id, _ in videos]

        failed: list[BaseException] = []
        stop = threading.Event()

        def work(start: int, step: int) -> None:
            buffer = bytearray(_READ)
            try:
                for at in range(start, len(paths), step):
                    if stop.is_set():
                        return
                    results[at] = _hash(paths[at], buffer)
            except BaseException as exc:  # (MemoryError, say) raised in the caller's thread
                failed.append(exc)
                stop.set()  # the other threads stop at their next video

        sizes = [video.get("bytes") for _, video in videos]
        threads = THREADS if len(videos) > 1 and sum(s for s in sizes if type(s) is int) >= THREADED_FROM * len(videos) else 1
        if threads == 1:
            work(0, 1)
        else:
            workers = [threading.Thread(target=work, args=(n, threads), name=f"batchvid-hash-{n}") for n in range(threads)]
            started = []
            try:
                for worker in workers:
                    worker.start()
                    started.append(worker)
                for worker in workers:
                    worker.join()
            except BaseException as exc:  # Ctrl-C while they hash: each stops after its video
                stop.set()
                for worker in started:
                    worker.join()
                failed.insert(0, exc)
        problems: list[str | None] = []
        for (job_id, video), result in zip(videos, results, strict=True):
            if isinstance(result, str) or result is None:
                problems.append(result or "missing")
                continue
            digest, size, recordable = result
            problem = content_mismatch(digest, size, video)
            problems.append(problem)
            if problem is None and recordable is not None:
                self._add(job_id, f"{recordable} {digest}")
        if failed:  # (the videos hashed before it are recorded)
            raise failed[0]
        return problems

    def _load(self) -> dict[str, str]:
        """The file's lines (each id's last), or none unless it begins with ``_MAGIC``; read a
        line at a time (the file whole, decoded and split, would hold it three times over)."""
        known: dict[str, str] = {}
        try:
            with open(self._path, "rb") as fh:
                if fh.read(len(_MAGIC)) != _MAGIC:
                    return known
                whole = len(_MAGIC)
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break  # a torn last line (a run killed, or appending now)
                    whole += len(raw)
                    line = _LINE.fullmatch(raw)
                    if line is not None:
                        known[line[1].decode("utf-8", "replace")] = line[2].decode()
                    self._lines += 1
        except OSError:
            return {}
        self._whole = whole
        return known

    def _add(self, job_id: str, rest: str) -> None:
        """Record that ``job_id``'s video, of that identity, has that sha256 (a run only)."""
        assert self._known is not None  # (loaded by ``hash_videos``)
        self._known[job_id] = rest
        if not self._remember:
            return
        self._unwritten.append(f"{job_id} {rest}\n".encode())
        if len(self._unwritten) >= _FLUSH:
            self._write()

    def _write(self) -> None:
        """Append the lines not yet written (the file started, or its torn tail cut, first)."""
        lines, self._unwritten = self._unwritten, []
        try:
            if self._out is None:
                if not self._whole:
                    write_atomic(self._path, _MAGIC, durable=False)
                    self._whole = len(_MAGIC)
                self._out = open(self._path, "r+b", buffering=0)  # noqa: SIM115 (closed by ``close``)
                self._out.truncate(self._whole)
                self._out.seek(self._whole)
            self._out.write(b"".join(lines))
            self._lines += len(lines)
        except OSError:
            self._remember = False  # a read-only directory, a full disk: nothing is recorded

    def close(self) -> None:
        """Write what is left; the file rewritten with each id's last line when more than
        half of its lines are others."""
        if self._unwritten:
            self._write()
        if self._out is not None:
            self._out.close()
            self._out = None
            known = self._known or {}
            if self._lines > 2 * len(known) + 1024:
                with contextlib.suppress(OSError):
                    write_atomic(self._path, [_MAGIC.decode(), *(f"{job_id} {rest}\n" for job_id, rest in known.items())],
                                 durable=False)
        self._known = None


def _line(st: os.stat_result, sha256: Any) -> str:
    """A line's text after the id: the identity, then the sha256."""
    return f"{_identity(st)} {sha256}"


def _identity(st: os.stat_result) -> str:
    """A file's size, mtime_ns, ctime_ns, inode and device: the same file, unchanged, while
    they are (a file changed or put in its place has another ctime)."""
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev}"


def _hash(path: str, buffer: bytearray) -> tuple[str, int, str | None] | str | None:
    """``path``'s sha256 and size, and its identity once read (``_identity``) unless it changed
    too close to the moment it was opened for a line to vouch for it (``_settled``: a file written
    while it was read has an mtime after that moment, less a clock tick); or the problem reading
    it (None: missing). The identity as text, not the ``stat_result`` (~650 bytes a video)."""
    view = memoryview(buffer)
    hashed_at = time.time_ns()
    try:
        with open(path, "rb", buffering=0) as fh:
            digest, size = hashlib.sha256(), 0
            while count := fh.readinto(view):
                digest.update(view[:count])
                size += count
            st = os.fstat(fh.fileno())
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    settled = st.st_size == size and _settled(st, hashed_at)
    return digest.hexdigest(), size, _identity(st) if settled else None
