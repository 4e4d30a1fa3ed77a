"""`batchvid verify`: re-hash every output against report.json, batchvid.lock and metadata.jsonl,
and check that each done job's records (request.json, response.json) are still JSON objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchvid.requestrecord import MISSING, REQUEST_NAME, readable_record
from batchvid.store import read_json_object, read_report, verify_file

RECORDS = {
    REQUEST_NAME: "the body sent; a rerun writes it again only for a job it downloads",
    "response.json": "the provider's last answer; not kept elsewhere",
}
"""A done job's records for the reader (the journal relies on neither), and what a problem with
each means: a power cut can empty either (docs/output-directory.md)."""


def _metadata(path: Path, problems: list[str]) -> dict[str, dict[str, Any]] | None:
    """metadata.jsonl rows by job id, or None (with the problem noted) when it is unusable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        problems.append(f"{path.name}: missing")
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: unreadable ({exc})")
        return None
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            problems.append(f"{path.name}:{number}: not a metadata row")
            continue
        rows[row["id"]] = row
    return rows


def verify_dir(root: Path, notes: list[str] | None = None) -> tuple[list[str], int]:
    """Every problem found (one line each, naming the file) and how many files were checked;
    ``notes`` gets what is named without being a problem (``record_problems``).

    Raises ``OutputDirError`` only when ``root`` has no readable report.json; a missing or
    altered video, cover, poster, lock or metadata file is a problem in the list.
    """
    report = read_report(root)
    problems: list[str] = []
    lock: dict[str, Any] | None
    if (root / "batchvid.lock").is_file():
        lock = read_json_object(root / "batchvid.lock").get("jobs", {})
    else:
        problems.append("batchvid.lock: missing")
        lock = None
    metadata = _metadata(root / "metadata.jsonl", problems)
    checked = 0
    seen_ids = set()
    for job in report.get("jobs", []):
        if job.get("status") not in ("succeeded", "skipped"):
            continue
        seen_ids.add(job["id"])
        for what in ("video", "cover", "poster"):
            entry = job.get(what)
            if not entry:
                continue
            checked += 1
            problem = verify_file(root / entry["path"], entry)
            if problem:
                problems.append(f"{entry['path']}: {problem}")
        problems += record_problems(root, job["id"], notes)
        video = job.get("video") or {}
        if metadata is not None:
            row = metadata.get(job["id"])
            if row is None:
                problems.append(f"metadata.jsonl: job {job['id']!r} is done in report.json but has no row")
            elif row.get("sha256") != video.get("sha256") or row.get("file_name") != video.get("path"):
                problems.append(f"metadata.jsonl: job {job['id']!r} differs from report.json")
        if lock is None:
            continue
        pinned = lock.get(job["id"])
        if pinned is None:
            problems.append(f"batchvid.lock: job {job['id']!r} is done in report.json but not pinned")
        elif (pinned.get("sha256"), pinned.get("key"), pinned.get("poster")) != (
            video.get("sha256"), job.get("key"), job.get("poster")
        ):
            problems.append(f"batchvid.lock: job {job['id']!r} differs from report.json")
    for job_id in sorted(set(lock or {}) - seen_ids):
        problems.append(f"batchvid.lock: job {job_id!r} is pinned but not done in report.json")
    for job_id in sorted(set(metadata or {}) - seen_ids):
        problems.append(f"metadata.jsonl: job {job_id!r} has a row but is not done in report.json")
    return problems, checked


def record_problems(root: Path, job_id: str, notes: list[str] | None = None) -> list[str]:
    """A line for each of the job's records (``RECORDS``) that is missing or not a JSON object.
    A missing request.json goes to ``notes`` instead: a valid directory can lack it (a done job's
    folder made again by the download of an earlier batchvid, which wrote only response.json
    and the files; a power cut leaves a done job's records present, if empty)."""
    problems = []
    for name, meaning in RECORDS.items():
        problem = readable_record(f"{root}/jobs/{job_id}/{name}")
        if problem is None:
            continue
        line = f"jobs/{job_id}/{name}: {problem} ({meaning}; the video is checked on its own)"
        if name == REQUEST_NAME and problem == MISSING:
            if notes is not None:
                notes.append(line)
            continue
        problems.append(line)
    return problems
