"""Why an edited job is a new job: what changed since the request journaled under its id,
read from ``jobs/<id>/request.json`` (the body that was sent; the journal keeps only keys).
The plan's reason for such a job's ``submit`` (``plan.make_plan``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchvid.jobs import Job
    from batchvid.journal import JobRecord

EDIT_SHOWN_CHARS = 40
"""A changed value longer than this (or a prompt, or an image) is named, not shown."""
NAMED_ONLY = frozenset({"prompt", "negative_prompt"})
NOT_COMPARED = frozenset({"async", "request_id"})
"""Body fields that say how a request is sent, not what it asks for."""


def edited_reason(job: Job, earlier: JobRecord, out_dir: Path, provider: str) -> str:
    """Why an edited job is submitted: what changed since the request journaled under its id.
    The earlier request is read from ``jobs/<id>/request.json``, the body that was sent (the
    journal keeps only keys); when it is gone, the reason says the job was edited."""
    task = f" (task {earlier.task_id})" if earlier.task_id else ""
    try:
        before = json.loads((out_dir / "jobs" / job.id / "request.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    if not isinstance(before, dict):
        return f"edited since its earlier request{task}: a new job"
    from batchvid.providers import get_provider

    after = get_provider(provider).recorded_body(job)
    changes = []
    for name in sorted((set(before) | set(after)) - NOT_COMPARED):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        shown = [_shown(v) for v in (old, new)]
        if (
            name in NAMED_ONLY
            or any(len(text) > EDIT_SHOWN_CHARS for text in shown)
            or isinstance(old or new, dict)
        ):
            changes.append(name)
        else:
            changes.append(f"{name}: {shown[0]} → {shown[1]}")
    what = ", ".join(changes) or "its request"
    return f"edited since its earlier request{task}: {what}; a new job"


def _shown(value: Any) -> str:
    return "(provider default)" if value is None else str(value)
