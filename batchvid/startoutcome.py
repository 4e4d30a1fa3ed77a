"""Each job's outcome as a run starts (from its plan step and journal record) and what a stop
leaves it saying: the report's entry for every job the run does not finish."""

from __future__ import annotations

from typing import Any

from batchvid.outcome import Outcome
from batchvid.plan import STATUS_OF_ACTION, UNANSWERED_CREATE, Step

NOT_STARTED: dict[str, Any] = {"kind": "not_started", "message": "the run stopped before this job finished"}
"""The error of every job the run has not finished yet (one dict, shared: never changed in place)."""


def initial_outcome(step: Step) -> Outcome:
    """A job's outcome before the run works on it (``plan.STATUS_OF_ACTION``)."""
    record, status = step.record, STATUS_OF_ACTION[step.action]
    task_id = record.task_id if record else None
    if status == "skipped" and record is not None:
        return Outcome(step.job, status, step.action, task_id=task_id, video=record.video,
                       cover=record.cover, media=record.media, poster=record.poster,
                       provided=record.provided or {})
    if status == "failed" and record is not None:
        error = record.error
        if error is None and record.state == "submitting":
            error = dict(UNANSWERED_CREATE)
        return Outcome(step.job, status, step.action, task_id=task_id, error=error,
                       video=record.video, media=record.media)  # a rejected video, kept aside
    return Outcome(step.job, status, step.action, task_id=None if step.pays else task_id, error=NOT_STARTED)


def say_task_not_finished(outcome: Outcome) -> None:
    """A pending job that has a task was started: say so, and that the next run re-attaches
    (the error it was given before the run, ``not_started``, would be untrue)."""
    error = outcome.error or {}
    if outcome.status == "pending" and outcome.task_id and error.get("kind") == "not_started":
        outcome.error = {
            "kind": "not_finished",
            "message": f"submitted as task {outcome.task_id}; the run stopped before it finished "
            "and the next run re-attaches to it (no new charge)",
        }


def with_rewrite(outcome: Outcome, step: Step) -> Outcome:
    """``outcome`` with the rewrite of the job's prompt the journal holds, for an enhanced job
    (the report, metadata and lock then show both prompts, on every later run too)."""
    if step.job.enhance is not None:
        from batchvid.enhancing import sent_rewrite, stored_rewrite

        stored = stored_rewrite(step.record) if step.pays else sent_rewrite(step.record)
        outcome.enhance = stored.record() if stored is not None else None
    return outcome
