"""The output directory: an exclusive lock, a write-ahead journal, and atomic, hashed files.

Layout (see docs/output-directory.md)::

    OUT/
      .batchvid/lock           held (flock) by the one run writing here
      .batchvid/journal.jsonl  append-only, fsynced record of every create and outcome
      .batchvid/replay-snapshot  the journal's replay, kept (a cache: ``batchvid.snapshot``)
      .batchvid/journal-damaged-lines.txt  damaged last lines moved out of the journal (kept)
      jobs/<id>/request.json, response.json, video.mp4, cover.<ext>
      report.json, report.md, junit.xml, metadata.jsonl, batchvid.lock

The journal is the source of truth for "what did we already pay for". A task id is appended and
fsynced before the runner waits on the task, so a run killed at any moment re-attaches to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchvid.durable import (
    HashingWriter,
    content_mismatch,
    dumps,
    file_stat,
    fsync_dir,
    hashing_writer,
    make_dir,
    sha256_file,
    write_atomic,
    write_json,
)
from batchvid.errors import OutputDirError, OutputDirLocked
from batchvid.journal import JobRecord, Journal, RecordState
from batchvid.snapshot import replay, save_after_run

LOCK_TRIES = 10
"""Tries at the exclusive lock (``_lock_exclusive``) before a directory is said in use."""

STATE_DIR = ".batchvid"
JOURNAL = "journal.jsonl"
LOCK = "lock"
"""The lock file in STATE_DIR: held by the run writing the directory, its pid written in it
until the run ends cleanly."""

__all__ = [
    "JOURNAL",
    "STATE_DIR",
    "HashingWriter",
    "JobRecord",
    "Journal",
    "OutputDir",
    "RecordState",
    "dumps",
    "file_stat",
    "fsync_dir",
    "hashing_writer",
    "make_dir",
    "read_json_object",
    "read_records",
    "read_report",
    "sha256_file",
    "verify_file",
    "write_atomic",
    "write_json",
]


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of an output directory (report.json, batchvid.lock), or a clear
    ``OutputDirError`` saying what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputDirError(
            f"{path} not found: is {path.parent} a batchvid output directory?"
        ) from None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OutputDirError(f"{path} is not a JSON object")
    return data


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file of an output directory (metadata.jsonl), blank
    lines skipped, or a clear ``OutputDirError`` naming the line that is not one."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise OutputDirError(f"{path} not found: is {path.parent} a batchvid output directory?") from None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise OutputDirError(f"{path}:{number}: not a JSON object ({exc})") from exc
        if not isinstance(entry, dict):
            raise OutputDirError(f"{path}:{number}: not a JSON object")
        entries.append(entry)
    return entries


REPORT_KEYS = frozenset({"manifest", "summary", "jobs", "timing", "cost", "stopped"})


def read_report(root: Path) -> dict[str, Any]:
    """An output directory's report.json, checked to be one."""
    if root.is_file():
        raise OutputDirError(f"{root} is a file; give the output directory of a run")
    report = read_json_object(root / "report.json")
    if not report.keys() >= REPORT_KEYS or not isinstance(report["jobs"], list):
        raise OutputDirError(f"{root / 'report.json'} is not a batchvid report")
    return report


def _open_lock(path: Path) -> int:
    """The lock file opened for reading and writing (made when missing); an ``OutputDirError``
    naming it and why when it cannot be (no permission, a directory in its place)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError as exc:
        raise OutputDirError(
            f"cannot open the lock file {path}: it is a directory; move it out of the way "
            "(batchvid makes the lock file) or choose another --out"
        ) from exc
    except OSError as exc:
        raise OutputDirError(
            f"cannot open the lock file {path}: {exc.strerror or exc}; fix its permissions "
            "or choose another --out"
        ) from exc


class OutputDir:
    """An output directory opened for writing: holds the lock until ``close``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = root / STATE_DIR
        self.journal = Journal(self.state_dir / JOURNAL)
        self._lock_fd: int | None = None
        self.left_clean = False
        """Whether the last holder of the lock closed it cleanly (``open`` finds it empty)."""
        self.found_owner: str | None = None
        """The pid ``open`` found in the lock file: its last holder did not end cleanly."""

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def open(self) -> dict[str, JobRecord]:
        """Take the exclusive lock, replay the journal and open it for appending."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(f"cannot create output directory {self.root}: {exc}") from exc
        lock_path = self.state_dir / LOCK
        existed = lock_path.exists()
        fd = _open_lock(lock_path)
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirLocked(
                f"{self.root} is in use by another batchvid run (pid {lock_owner(self.state_dir) or 'unknown'}); "
                "wait for it to finish or choose another --out"
            ) from None
        found = os.read(fd, 64).decode("utf-8", "replace").strip() if existed else ""
        self.found_owner = found or None
        self.left_clean = existed and not found
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        try:
            self._sweep(jobs=not self.left_clean)
            records = replay(self.journal.path, save=True)
            self.journal.open()
        except BaseException:  # a corrupt journal, say: the lock is not kept by this process
            self.close()
            raise
        return records

    def _sweep(self, *, jobs: bool = True) -> None:
        """Delete the temporary files a killed run left (half-written downloads and reports).
        Only a run holding the lock writes here, so every such file is an orphan. ``jobs``:
        look in every job's directory too, unless the last holder of the lock closed it
        cleanly (it empties the lock file then; a killed one leaves its pid there)."""
        for orphan in _temporaries(self.root, (".tmp",)) + _temporaries(self.state_dir, (".tmp",)):
            with contextlib.suppress(OSError):
                os.unlink(orphan)
        if not jobs:
            return
        try:
            listing = os.scandir(self.root / "jobs")
        except OSError:
            return
        with listing:
            for job in listing:
                if job.is_dir():
                    for orphan in _temporaries(job.path, (".part", ".tmp")):
                        with contextlib.suppress(OSError):
                            os.unlink(orphan)

    def close(self, *, clean: bool = False, snapshot: bool = True) -> None:
        """Close the journal and release the lock. ``clean`` (nothing was cut short: no
        temporary file can be left, and report.json names every job of the run, an
        interrupted run's too) empties the lock file: the next run skips looking for orphans
        in jobs/, and ``clean`` trusts the report. With ``snapshot`` (not after an interrupt:
        the process is asked to end) it first leaves the journal's replay snapshot when this
        run appended enough lines for one (``snapshot.save_after_run``, under the lock), so
        the next run need not decode them."""
        self.journal.close()
        if self._lock_fd is None:
            return
        try:
            if clean:
                if snapshot:
                    save_after_run(self.journal.path, self.journal.written, self._lock_fd)
                os.ftruncate(self._lock_fd, 0)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.close(clean=kind is None)


def _temporaries(directory: str | Path, suffixes: tuple[str, ...]) -> list[str]:
    """The regular files of ``directory`` named ``.*<suffix>`` (``write_atomic``'s and
    ``HashingWriter``'s temporary names), in one listing."""
    try:
        with os.scandir(directory) as entries:
            return [
                entry.path
                for entry in entries
                if entry.name.startswith(".")
                and any(entry.name.endswith(s) and len(entry.name) > len(s) for s in suffixes)
                and entry.is_file(follow_symlinks=False)
            ]
    except OSError:
        return []


def _lock_exclusive(fd: int) -> None:
    """Take the exclusive lock without waiting for a run, but past the moment's shared lock
    of ``status`` or ``merge`` looking whether one is running (``clean.writer_running``): a
    few tries 10 ms apart before ``BlockingIOError``."""
    for _ in range(LOCK_TRIES - 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock_owner(state_dir: Path) -> str | None:
    """The pid written in the lock file of ``state_dir`` (a run that holds it, or one that did
    not end cleanly: ``clean.last_run_unfinished``), or None when it is empty or unreadable."""
    try:
        owner = (state_dir / LOCK).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return owner or None


def read_records(root: Path) -> dict[str, JobRecord]:
    """Replay an output directory's journal without taking its lock (for plan and status),
    from its replay snapshot when that holds (``batchvid.snapshot``; none is written)."""
    return replay(root / STATE_DIR / JOURNAL)


def verify_file(path: str | Path, expected: Mapping[str, Any]) -> str | None:
    """None if ``path`` exists with the expected sha256 and size, else why not (the file read:
    a rerun's plan takes a done video as verified unread where its stat vouches for it,
    ``videocheck.VideoCheck``)."""
    try:
        digest, size = sha256_file(Path(path))
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return content_mismatch(digest, size, expected)
