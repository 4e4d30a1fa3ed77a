"""Leftovers in an output directory, and `batchvid clean`, which removes them.

A leftover is an entry of ``jobs/`` that no job of the last run's manifest owns: the folder of a
job that was since removed from the manifest (or renamed and already moved), or a stray file.
What the journal may still need is never a leftover, whatever the manifest says now:

- the folder of a job whose task was submitted and has not finished (the task is paid for, and
  its id is the only way to collect the video);
- the folder of a job whose journaled key is the key of a job of the manifest (a renamed job:
  the next run moves its verified files to the new id instead of paying again).

The journal itself is never touched, so what was paid for stays on record.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from batchvid.store import OutputDir, read_records, read_report

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


def find_leftovers(root: Path) -> list[Leftover]:
    """Entries of ``root/jobs`` that no job of report.json owns and the journal does not need,
    sorted by name. Raises ``OutputDirError`` when ``root`` has no readable report.json."""
    report = read_report(root)
    owned_ids = {job["id"] for job in report["jobs"]}
    owned_keys = {job["key"] for job in report["jobs"]}
    needed = set(owned_ids)
    for record in read_records(root).values():
        if record.state in UNFINISHED or record.key in owned_keys:
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


def clean(root: Path, *, dry_run: bool) -> list[Leftover]:
    """Remove (or with ``dry_run`` only list) the leftovers of ``root``, holding its lock so no
    run writes there meanwhile."""
    leftovers = find_leftovers(root)  # refuses a directory without a report before locking
    if dry_run:
        return leftovers
    with OutputDir(root) as out:
        out.open()
        leftovers = find_leftovers(root)
        for leftover in leftovers:
            if leftover.path.is_dir() and not leftover.path.is_symlink():
                shutil.rmtree(leftover.path)
            else:
                leftover.path.unlink()
    return leftovers
