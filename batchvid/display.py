"""Turning plans, events and reports into text for a person; batchvid.cli prints what this returns."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from batchvid.events import (
    Event,
    JobFinished,
    JobPolled,
    JobRetrying,
    JobSubmitted,
    JournalLineSetAside,
    RunFinished,
    RunStarted,
    RunStopping,
)
from batchvid.plan import Plan, Step
from batchvid.plantable import format_seconds
from batchvid.plantable import (
    plan_table as plan_table,  # where it lived: callers may import it from here
)
from batchvid.shorttext import log_message

if TYPE_CHECKING:  # the progress bar's library and the output directory's modules: not to plan
    from rich.console import Console

    from batchvid.clean import Leftover

PROGRESS_INTERVAL = 10.0
"""Seconds between two progress lines in a log that is not a terminal (besides the run's
state changes)."""


def run_summary(report: Mapping[str, Any], out_dir: str) -> str:
    from batchvid.report import entries_with_status, succeeded_counts

    s = report["summary"]
    lines = [
        f"{s['total']} jobs: "
        + "".join(f"{n} {word}, " for word, n in succeeded_counts(report).items())
        + f"{s['skipped']} already done, "
        f"{s['failed']} failed, {s['pending']} pending  ->  {out_dir}",
    ]
    advised = True
    for job in entries_with_status(report, "failed"):
        err = job["error"] or {}
        lines.append(f"  failed  {job['id']}: {err.get('kind')}: {err.get('message')}")
        advised = advised and "--retry-failed" in str(err.get("message"))
    if report["stopped"]:
        lines.append(
            f"stopped early ({report['stopped']['reason']}): {report['stopped']['message']}. "
            "Run the same command again to resume."
        )
    elif s["failed"] and not advised:  # unless each failure already says what it does
        lines.append("Rerun with --retry-failed to try the failed jobs again.")
    return "\n".join(lines)


class TextLog:
    """Subscriber: one line on stderr for what a person should notice (an error's text as
    ``log_message`` shortens it: the JSON log keeps it whole)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, event: Event) -> None:
        line = None
        if isinstance(event, JobFinished) and event.status == "failed":
            line = f"failed: {event.job_id}: {event.error_kind}: {log_message(event.message or '')}"
        elif isinstance(event, JobRetrying):
            line = (f"retry {event.step} {event.job_id} in {event.delay:.1f}s (attempt {event.attempt}): "
                    f"{log_message(event.error)}")
        elif isinstance(event, RunStopping):
            line = f"stopping ({event.reason}): {event.message}"
        elif isinstance(event, JournalLineSetAside):
            line = f"warning: {event.message()}"
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()


_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
"""Line breaks to ``str.splitlines`` that ``json.dumps`` leaves as they are (with
``ensure_ascii=False``), written escaped: an event stays one line to any reader."""


class JsonLog:
    """Subscriber: every event as one JSON object per line on stderr."""

    def __init__(self, stream: IO[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock

    def __call__(self, event: Event) -> None:
        record = {"ts": round(self.clock(), 3), **event.to_dict()}
        line = json.dumps(record, ensure_ascii=False, sort_keys=True)
        if not line.isascii():  # (a flag of the string: ASCII lines cost no scan)
            line = line.translate(_LINE_BREAKS)
        self.stream.write(line + "\n")
        self.stream.flush()


class Tally:
    """Done, failed, in flight and queued, from the events (for the progress displays)."""

    def __init__(self) -> None:
        self.total = self.done = self.failed = 0
        self.in_flight: set[str] = set()

    def count(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total = event.total
            self.done = event.actions.get("skip", 0)
            self.failed = event.actions.get("keep-failed", 0)
        elif isinstance(event, JobSubmitted | JobPolled):
            self.in_flight.add(event.job_id)
        elif isinstance(event, JobFinished):
            self.in_flight.discard(event.job_id)
            if event.status == "failed":
                self.failed += 1
            elif event.status in ("succeeded", "skipped"):
                self.done += 1
        elif isinstance(event, RunFinished) and event.summary:
            # The report's word: jobs a stop left unfinished are pending, no longer in flight.
            self.done = event.summary["succeeded"] + event.summary["skipped"]
            self.failed = event.summary["failed"]
            self.in_flight.clear()

    @property
    def queued(self) -> int:
        return max(0, self.total - self.done - self.failed - len(self.in_flight))

    def detail(self) -> str:
        return f"failed {self.failed} · in flight {len(self.in_flight)} · queued {self.queued}"


class ProgressDisplay:
    """Subscriber: a live bar with done, failed, in flight and queued, elapsed and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.tally = Tally()

    def __call__(self, event: Event) -> None:
        self.tally.count(event)
        t = self.tally
        if isinstance(event, JournalLineSetAside):  # (before the run starts)
            self.console.log(f"warning: {event.message()}")
            return
        if isinstance(event, RunStarted):
            self.progress.start()
            self.task = self.progress.add_task("batchvid", total=event.total, detail="")
            self.progress.update(self.task, completed=t.done + t.failed, detail=t.detail())
            return
        if self.task is None:
            return
        if isinstance(event, JobFinished):
            self.progress.update(self.task, advance=1)
        elif isinstance(event, RunStopping):
            self.console.log(f"stopping ({event.reason}): {event.message}")
        elif isinstance(event, RunFinished):
            self.progress.update(self.task, detail=t.detail())
            self.progress.stop()
            return
        self.progress.update(self.task, detail=t.detail())


class ProgressLines:
    """Subscriber for a log that is not a terminal (CI): one summary line when the run starts,
    stops or finishes, and otherwise at most every ``interval`` seconds, as events come."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.interval = interval
        self.tally = Tally()
        self.started: float | None = None
        self.last = 0.0

    def __call__(self, event: Event) -> None:
        self.tally.count(event)
        now = self.clock()
        if isinstance(event, RunStarted):
            self.started = now
            self._line("started", now)
        elif self.started is None:
            return
        elif isinstance(event, RunStopping):
            self._line("stopping", now)
        elif isinstance(event, RunFinished):
            self._line("finished", now)
        elif now - self.last >= self.interval:
            self._line("running", now)

    def _line(self, state: str, now: float) -> None:
        t = self.tally
        elapsed = format_seconds(now - (self.started or now))
        self.stream.write(
            f"progress: {state}: {t.done}/{t.total} done, {t.failed} failed, "
            f"{len(t.in_flight)} in flight, {t.queued} queued, {elapsed} elapsed\n"
        )
        self.stream.flush()
        self.last = now


RERUN = {
    "skip": "skip {n} done jobs (videos verified just now)",
    "reattach": "re-attach to {n} submitted tasks (no new charge)",
    "download": "fetch {n} done videos again from their tasks (no new charge)",
    "submit": "submit {n} jobs (each one generation)",
    "keep-failed": "keep {n} failed jobs as failed (add --retry-failed to try them again)",
}


def pending_line(job: Mapping[str, Any], step: Step | None) -> str:
    """What is true of a pending job, from the plan a rerun would follow."""
    err = job["error"] or {}
    record = step.record if step else None
    if step is not None and step.action == "reattach" and record is not None:
        what = f"submitted as task {record.task_id}, not finished; a rerun re-attaches to it (no new charge)"
    elif step is not None and step.action == "submit" and record is None:
        what = "not sent; a rerun submits it"
    elif step is not None and step.action == "download":
        what = "done earlier; a rerun fetches its video again (no new charge)"
    elif step is not None and step.action == "submit":
        what = f"not finished; a rerun submits it ({step.reason})"
    else:
        return f"{err.get('kind')}: {err.get('message')}"
    if err.get("kind") not in (None, "not_started", "not_finished"):
        what += f" (stopped by {err.get('kind')}: {err.get('message')})"
    return what


def status_text(report: Mapping[str, Any], actions: Mapping[str, int], plan: Plan | None = None,
                root: Path | None = None) -> str:
    """``status``'s text; with ``root``, a pending job a rerun finishes from its task says when
    its request.json is lost or damaged (the rerun writes it again: ``requestrecord``)."""
    steps = {step.job.id: step for step in plan.steps} if plan else {}
    s = report["summary"]
    lines = [
        f"{report['manifest']['name']} ({report['manifest']['provider']}): "
        + ", ".join(f"{s[k]} {k}" for k in ("succeeded", "skipped", "failed", "pending"))
        + f" of {s['total']}",
    ]
    for job in report["jobs"]:
        if job["status"] == "pending":
            step = steps.get(job["id"])
            lines.append(f"  {'pending':8} {job['id']}: {pending_line(job, step)}{_request_note(root, step)}")
        elif job["status"] == "failed":
            err = job["error"] or {}
            lines.append(f"  {job['status']:8} {job['id']}: {err.get('kind')}: {err.get('message')}")
    lines.append("a rerun would:")
    lines += [f"  {RERUN[action].format(n=n)}" for action, n in actions.items()]
    return "\n".join(lines)


def _request_note(root: Path | None, step: Step | None) -> str:
    """For a job a rerun finishes from its task (re-attached, or its video fetched again):
    its request.json's problem, when it has one the rerun mends (read for those jobs only). Not
    for a job done under another id: its folder, request.json with it, moves to the new one."""
    if root is None or step is None or step.action not in ("reattach", "download"):
        return ""
    if step.record is not None and step.record.id != step.job.id:
        return ""
    from batchvid.requestrecord import LOST, readable_record

    problem = readable_record(f"{root}/jobs/{step.job.id}/request.json")
    if problem is None or not problem.startswith(LOST):
        return ""
    return f"; its request.json is {problem}: the rerun writes it again from the journal"


def leftover_lines(root: Path, leftovers: Sequence[Leftover], prefix: str) -> list[str]:
    """A line per leftover and the hint, or nothing when there are none."""
    if not leftovers:
        return []
    return [f"{prefix}{x.describe(root)}" for x in leftovers] + [
        f"{len(leftovers)} leftover(s) in jobs/ belong to no job of the manifest (not corruption): "
        f"`batchvid clean {root}` removes them (--dry-run lists them first)"
    ]


def status_json(
    report: Mapping[str, Any], actions: Mapping[str, int], root: Path, leftovers: Sequence[Leftover]
) -> dict[str, Any]:
    """What ``status --json`` prints."""
    return {
        "summary": report["summary"],
        "stopped": report["stopped"],
        "rerun": actions,
        "problems": [{"id": j["id"], "status": j["status"], "error": j["error"]}
                     for j in report["jobs"] if j["status"] in ("failed", "pending")],
        "leftovers": [{"path": str(x.path.relative_to(root)), "files": x.files, "bytes": x.bytes}
                      for x in leftovers],
    }
