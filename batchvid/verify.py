"""`batchvid verify`: re-hash every output against report.json and batchvid.lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchvid.errors import OutputDirError
from batchvid.store import verify_file


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputDirError(f"{path} not found: is this a batchvid output directory?") from None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OutputDirError(f"{path} is not a JSON object")
    return data


def verify_dir(root: Path) -> tuple[list[str], int]:
    """Every problem found (one line each, naming the file) and how many files were checked."""
    report = _load(root / "report.json")
    lock = _load(root / "batchvid.lock").get("jobs", {})
    problems: list[str] = []
    checked = 0
    seen_ids = set()
    for job in report.get("jobs", []):
        if job.get("status") not in ("succeeded", "skipped"):
            continue
        seen_ids.add(job["id"])
        for what in ("video", "cover"):
            entry = job.get(what)
            if not entry:
                continue
            checked += 1
            problem = verify_file(root / entry["path"], entry)
            if problem:
                problems.append(f"{entry['path']}: {problem}")
        pinned = lock.get(job["id"])
        video = job.get("video") or {}
        if pinned is None:
            problems.append(f"batchvid.lock: job {job['id']!r} is done in report.json but not pinned")
        elif pinned.get("sha256") != video.get("sha256") or pinned.get("key") != job.get("key"):
            problems.append(f"batchvid.lock: job {job['id']!r} differs from report.json")
    for job_id in sorted(set(lock) - seen_ids):
        problems.append(f"batchvid.lock: job {job_id!r} is pinned but not done in report.json")
    return problems, checked
