"""One job's way through a run, as an explicit state machine.

::

    queued ──create──▶ creating ──submitted──▶ running ──done──▶ downloading ──▶ succeeded
      │  └──────────────attach (reattach, download)─▶│               ▲
      └──────────────────relocate (files moved from a renamed job)───┘
    any state before the end ──▶ failed | stopped

The allowed moves are the table ``TRANSITIONS`` (data, not branches; the mould is h11's
``_state.py``). ``JobLife`` is the one place a job changes: each method is one move and goes
through ``_move``, which refuses an impossible move loudly, appends the journal entry, updates
the report's ``Outcome`` and emits the event, all with secrets scrubbed. Inside ``creating``,
``attempt`` and ``refused`` journal without moving (a create may be sent several times).

To add a step (say, a quality check after the download): add a state and its moves to
``TRANSITIONS``, a method here that calls ``_move`` with its journal entry (see
``batchvid.journal``) and event (see ``batchvid.events``), and call it from the component that
does the work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.durable import file_stat
from batchvid.events import Event, JobDownloaded, JobSubmitted
from batchvid.jobs import Job
from batchvid.journal import (
    Enhanced,
    Entry,
    Failed,
    Journal,
    Refused,
    Submitted,
    Submitting,
    Succeeded,
)
from batchvid.report import Outcome

if TYPE_CHECKING:
    from batchvid.enhance import EnhanceResult


class JobState(enum.Enum):
    QUEUED = "queued"
    CREATING = "creating"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


Q, C, R, D = JobState.QUEUED, JobState.CREATING, JobState.RUNNING, JobState.DOWNLOADING
S, F, X = JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    Q: frozenset({C, R, S, F, X}),  # Q -> S: a renamed done job's files moved into place
    C: frozenset({R, F, X}),
    R: frozenset({D, F, X}),
    D: frozenset({S, F, X}),
    S: frozenset(),
    F: frozenset(),
    X: frozenset(),
}
"""From each state, the states a job may move to."""

FINAL = frozenset({S, F, X})


class LifecycleError(RuntimeError):
    """A move the table does not allow: a bug in batchvid, never a user's mistake."""


class JobLife:
    """One job in this run: its state, its report ``Outcome``, and the one way to change them."""

    __slots__ = ("_emit", "_journal", "_root", "_scrub", "job", "outcome", "state")  # one per job

    def __init__(
        self,
        job: Job,
        outcome: Outcome,
        journal: Journal,
        emit: Callable[[Event], None],
        scrub: Callable[[str], str],
        root: Path | None = None,
    ) -> None:
        self.job = job
        self._root = root  # the output directory: the video's file_stat is journaled with its success
        self.outcome = outcome
        self.state = JobState.QUEUED
        self._journal = journal
        self._emit = emit
        self._scrub = scrub

    @property
    def done(self) -> bool:
        return self.state in FINAL

    def _move(
        self, to: JobState, entry: Entry | None = None, event: Event | None = None, **changes: Any
    ) -> None:
        """The transition point: check, journal, update the outcome, emit."""
        self._check(to)
        if entry is not None:
            self._journal.append(entry)
        self._apply(to, event, changes)

    async def _commit(
        self, to: JobState, entry: Entry, event: Event | None = None, **changes: Any
    ) -> None:
        """``_move`` on the event loop's hot paths: the journal line shares its fsync with the
        lines of other jobs (``Journal.commit``), and is on disk before this returns."""
        self._check(to)
        await self._journal.commit(entry)
        self._apply(to, event, changes)

    def _check(self, to: JobState) -> None:
        if to is not self.state and to not in TRANSITIONS[self.state]:
            raise LifecycleError(f"job {self.job.id}: {self.state.value} -> {to.value} is not allowed")

    def _apply(self, to: JobState, event: Event | None, changes: dict[str, Any]) -> None:
        for name, value in changes.items():
            setattr(self.outcome, name, value)
        self.state = to
        if event is not None:
            self._emit(event)

    # -- before the create ----------------------------------------------------------------------

    def enhanced(self, result: EnhanceResult, *, journal: bool) -> None:
        """The prompt to send is ``result.prompt`` (``batchvid.enhancing``): journaled first when
        it is new, then the job sends it. The job's key and the report's parameters stay the
        manifest's; the outcome keeps both prompts."""
        record = result.record()
        entry = Enhanced(self.job.key, self.job.id, **record) if journal else None
        self._move(self.state, entry, enhance=record)
        self.job = replace(self.job, params={**self.job.params, "prompt": result.prompt})

    # -- creating -------------------------------------------------------------------------------

    async def attempt(self, request_id: str | None, *, sent: bool = True) -> None:
        """A create request is about to be sent (journaled first: a kill then re-attaches or
        judges the unanswered create). ``sent=False``: journaled ahead of its slot, counted in
        the report's attempts only once it leaves (``sending``)."""
        await self._commit(C, Submitting(self.job.key, self.job.id, request_id),
                           attempts=self.outcome.attempts + sent)

    def sending(self) -> None:
        """The create journaled ahead (``attempt(sent=False)``) leaves now: one attempt more."""
        self.outcome.attempts += 1

    def refused(self) -> None:
        """The create was refused: no task exists (``billing.Verdict.NOT_BILLED``)."""
        self._move(C, Refused(self.job.key, self.job.id))

    async def submitted(self, task_id: str) -> None:
        """The task id is on disk before this returns: nothing waits on a task it could lose."""
        await self._commit(
            R,
            Submitted(self.job.key, self.job.id, task_id),
            JobSubmitted(self.job.id, task_id),
            task_id=task_id,
        )

    # -- running and after ----------------------------------------------------------------------

    def attached(self) -> None:
        """A task of an earlier run is polled again (reattach, or download from the task)."""
        self._move(R)

    def downloading(self) -> None:
        self._move(D)

    async def succeeded(
        self,
        task_id: str | None,
        video: dict[str, Any],
        cover: dict[str, Any] | None,
        media: dict[str, Any] | None,
        *,
        downloaded: bool = True,
        poster: dict[str, Any] | None = None,
        provided: Mapping[str, Any] | None = None,
        stat: dict[str, int] | None = None,
    ) -> None:
        """The files are in place and verified: journal and report say so. ``stat``: the
        video's ``file_stat`` when the caller took it (off the event loop), else taken here."""
        said = dict(provided or {})
        if stat is None and self._root is not None:
            stat = file_stat(self._root / video["path"])
        entry = Succeeded(self.job.key, self.job.id, task_id, video, cover, media, poster, said or None, stat)
        event = JobDownloaded(self.job.id, video["bytes"]) if downloaded else None
        await self._commit(S, entry, event, status="succeeded", error=None, video=video,
                           cover=cover, media=media, poster=poster, provided=said)
        self.outcome.pack()  # its records as one compact text until the report is written

    def failed(
        self,
        kind: str,
        message: str,
        *,
        video: dict[str, Any] | None = None,
        media: dict[str, Any] | None = None,
    ) -> None:
        """The job failed; ``video`` and ``media``: a paid video it rejected, kept aside."""
        error = {"kind": kind, "message": self._scrub(message)}
        entry = Failed(self.job.key, self.job.id, self.outcome.task_id, error, video, media)
        kept: dict[str, Any] = {"video": video, "media": media} if video is not None else {}
        self._move(F, entry, None, status="failed", error=error, **kept)

    def stopped(self, kind: str | None = None, message: str = "") -> None:
        """The run stopped before this job finished: it stays pending (resumable)."""
        if kind is None:
            self._move(X)
        else:
            self._move(X, error={"kind": kind, "message": self._scrub(message)})
