"""Leftovers in an output directory, and `batchvid clean`, which removes them.

A leftover is an entry of ``jobs/`` that no job of the last run's manifest owns: the folder of a
job that was since removed from the manifest (or renamed and already moved), or a stray file.
What the journal may still need is never a leftover, whatever the manifest says now:

- the folder of a job whose task was submitted and has not finished (the task is paid for, and
  its id is the only way to collect the video);
- the folder of a job whose journaled key is the key of a job of the manifest (a renamed job:
  the next run moves its verified files to the new id instead of paying again);
- while the last run has not ended (killed, or still running: its pid is still in
  ``.batchvid/lock``; a run stopped by Ctrl-C writes its report and empties the lock), the
  folder of any job the journal records: report.json may predate jobs that run added to the
  manifest and paid for. ``clean`` refuses such a directory until a run ends in it.

The journal itself is never touched, so what was paid for stays on record.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from batchvid.errors import OutputDirError
from batchvid.store import LOCK, STATE_DIR, OutputDir, lock_owner, read_records, read_report

JOBS = "jobs"
UNFINISHED = frozenset({"submitting", "submitted"})


@dataclass(frozen=True)
class Leftover:
    """An entry of ``jobs/`` that no job of the manifest owns, and what it holds."""

    path: Path
    files: int
    bytes: int

    def describe(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}: {self.files} file(s), {self.bytes} bytes"


def _size(path: Path) -> tuple[int, int]:
    if not path.is_dir() or path.is_symlink():
        return 1, path.lstat().st_size
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.lstat().st_size for p in files)


def last_run_unfinished(root: Path) -> str | None:
    """The pid left in ``root``'s lock file by a run that has not ended (killed or still
    running; an interrupted run that wrote its report empties the lock), or None. Such a run
    may have paid for jobs its manifest added that report.json, written when a run ends, does
    not list yet."""
    return lock_owner(root / STATE_DIR)


def writer_running(root: Path) -> str | None:
    """The pid of the batchvid run writing ``root`` now (it holds the lock), or None. Only
    reads: the lock file is opened read-only and tried with a shared lock."""
    try:
        fd = os.open(root / STATE_DIR / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return last_run_unfinished(root) or "unknown"
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a shared lock taken just now
    return None


def find_leftovers(root: Path, *, report_current: bool = False) -> list[Leftover]:
    """Entries of ``root/jobs`` that no job of report.json owns and the journal does not need,
    sorted by name. Raises ``OutputDirError`` when ``root`` has no readable report.json.
    ``report_current``: the caller holds the lock and knows the last run ended cleanly."""
    report = read_report(root)
    owned_ids = {job["id"] for job in report["jobs"]}
    owned_keys = {job["key"] for job in report["jobs"]}
    needed = set(owned_ids)
    unfinished = not report_current and last_run_unfinished(root) is not None
    for record in read_records(root).values():
        if unfinished or record.state in UNFINISHED or record.key in owned_keys:
            needed.add(record.id)
    jobs_dir = root / JOBS
    if not jobs_dir.is_dir():
        return []
    leftovers = []
    for entry in sorted(jobs_dir.iterdir()):
        if entry.name in needed:
            continue
        files, size = _size(entry)
        leftovers.append(Leftover(entry, files, size))
    return leftovers


def _refuse_unfinished(root: Path, pid: str | None) -> None:
    if pid is None:
        return
    raise OutputDirError(
        f"{root}: the last run here did not end (pid {pid}: killed, or still running), so "
        "report.json may not list every job it paid for; run the manifest again into this "
        "directory (it resumes, re-attaches to what was paid for and rewrites the report), "
        "then clean"
    )


def clean(root: Path, *, dry_run: bool) -> list[Leftover]:
    """Remove (or with ``dry_run`` only list) the leftovers of ``root``, holding its lock so no
    run writes there meanwhile."""
    leftovers = find_leftovers(root)  # refuses a directory without a report before locking
    _refuse_unfinished(root, last_run_unfinished(root))
    if dry_run:
        return leftovers
    with OutputDir(root) as out:
        out.open()  # refuses a directory a run is writing; then the lock holds our own pid
        _refuse_unfinished(root, out.found_owner)  # a run killed since the look above
        leftovers = find_leftovers(root, report_current=True)
        for leftover in leftovers:
            if leftover.path.is_dir() and not leftover.path.is_symlink():
                shutil.rmtree(leftover.path)
            else:
                leftover.path.unlink()
    return leftovers
