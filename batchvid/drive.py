"""One job, from its planned step to its end: create or re-attach, wait, download.

``JobDriver`` composes the components (submitting, polling, downloading, relocating, the
budget, stopping) and moves the job's ``JobLife`` through its states; it holds no reference to
the runner. The job's in-flight slot (providers count running tasks) is held from the create
until the task ends, and the whole job is bounded by ``--timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from batchvid.budget import Budget
from batchvid.download import Downloader
from batchvid.errors import JobFatalError, ProviderError, RunFatalError
from batchvid.events import Effects, JobFinished
from batchvid.lifecycle import JobLife
from batchvid.plan import Step
from batchvid.polling import Poller, task_kind
from batchvid.ratelimit import AdaptiveLimit
from batchvid.relocate import Relocations
from batchvid.stopping import Stopped, Stopper
from batchvid.submit import Submitter

if TYPE_CHECKING:
    from batchvid.enhancing import Enhancer


class Ahead:
    """The new jobs that get ready while they wait for an in-flight slot (``admission.SUBMIT_AHEAD``):
    how many at once (``places``), and their order: each takes its slot after the one admitted
    before it has taken its own or ended, so jobs start in the order they were admitted."""

    def __init__(self, size: int) -> None:
        self.places = anyio.Semaphore(size)
        self.last: anyio.Event | None = None
        """Set once the job admitted last has its slot or has ended."""


class Slot:
    """A job's hold on the in-flight cap, released once (``release``, when its task ends), and
    on the run's bound of jobs under way (``live``), released with it when the job ends
    (``close``). A job admitted ahead of its slot holds a place among the ``Ahead`` jobs (its
    place taken) until ``take`` has the slot."""

    __slots__ = ("_after", "_ahead", "_held", "_limit", "_live", "_turn")

    def __init__(
        self,
        limit: AdaptiveLimit,
        held: bool,
        live: anyio.Semaphore | None = None,
        ahead: Ahead | None = None,
    ) -> None:
        self._limit = limit
        self._held = held
        self._live = live
        self._ahead = ahead
        self._after: anyio.Event | None = None
        self._turn: anyio.Event | None = None
        if ahead is not None:
            self._after, self._turn = ahead.last, anyio.Event()
            ahead.last = self._turn

    @property
    def waiting(self) -> bool:
        """Admitted ahead: the in-flight slot is still to be taken."""
        return self._ahead is not None

    async def take(self) -> None:
        """Wait for the in-flight slot, after the job admitted before; the place ahead goes
        either way."""
        try:
            if self._after is not None and not self._after.is_set():  # (wait() checkpoints even then)
                await self._after.wait()
            await self._limit.acquire()
            self._held = True
        finally:
            self._leave_ahead()

    def _leave_ahead(self) -> None:
        if self._ahead is not None and self._turn is not None:
            ahead, self._ahead = self._ahead, None
            ahead.places.release()
            self._turn.set()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limit.release()

    def close(self) -> None:
        """The job has ended: every hold goes."""
        self.release()
        self._leave_ahead()
        if self._live is not None:
            live, self._live = self._live, None
            live.release()


@dataclass
class JobDriver:
    submitter: Submitter
    poller: Poller
    downloader: Downloader
    relocations: Relocations
    budget: Budget
    stopper: Stopper
    fx: Effects
    timeout: float
    enhancer: Enhancer | None
    """The prompt rewrites (None: no job of the run is enhanced; its modules stay unloaded)."""

    async def run(self, step: Step, life: JobLife, slot: Slot) -> None:
        """Drive the job to its end; every way it can end is recorded through ``life``."""
        outcome = life.outcome
        started = self.fx.clock()
        try:
            # (an enhanced job's rewrite is asked for after its slot, within --timeout, as before)
            journaled = slot.waiting and step.job.enhance is None
            if slot.waiting:
                await self._ready(step, life, slot, journaled)
                started = self.fx.clock()  # --timeout and the job's seconds count from its slot
            with anyio.move_on_after(self.timeout) as deadline:
                await self._drive(step, life, slot, journaled)
            if deadline.cancelled_caught and not life.done:
                hint = (
                    "--retry-failed polls the same task again"
                    if outcome.task_id
                    else "no task was created; --retry-failed submits it"
                )
                life.failed("timeout", f"not finished within --timeout {self.timeout:g} s; {hint}")
        except Stopped:
            life.stopped()
        except RunFatalError as exc:
            self.stopper.stop(exc.kind, str(exc))
            life.stopped(exc.kind, exc.detail)
        except ProviderError as exc:  # job-fatal, or transient with retries exhausted
            life.failed(exc.kind, exc.detail)
        finally:
            slot.close()
            if step.pays:
                self.budget.settle(step.job, outcome.task_id, (outcome.error or {}).get("kind"))
            outcome.seconds = round(self.fx.clock() - started, 3)
            if outcome.status != "pending" or self.stopper.reason is None:
                error = outcome.error or {}
                self.fx.emit(JobFinished(step.job.id, outcome.status, error.get("kind"), error.get("message")))

    async def _ready(self, step: Step, life: JobLife, slot: Slot, journaled: bool) -> None:
        """A new job admitted ahead of its in-flight slot waits for it; with ``journaled``, its
        folder and ``submitting`` line are made meanwhile, so its create leaves the moment a
        slot frees."""
        if journaled:
            await self.submitter.journal_first(life, step.record)
        with self.stopper.interruptible():
            await slot.take()

    async def _drive(self, step: Step, life: JobLife, slot: Slot, journaled: bool = False) -> None:
        """``journaled``: ``_ready`` made the job's first create attempt ready and took its slot."""
        job, record = step.job, step.record
        if step.action == "download" and record is not None:
            moved = self.relocations.take(job, record)
            if moved is not None:
                video, cover, poster = moved
                await life.succeeded(record.task_id, video, cover, record.media, downloaded=False,
                                     poster=poster, provided=record.provided)
                return
        created_at: float | None = None
        if step.action == "submit":
            if not journaled and self.enhancer is not None:
                await self.enhancer.prepare(life, record)  # the prompt it sends, journaled first
            task, created_at = await self.submitter.create(life, record, journaled=journaled)
            self.budget.created(job)
        else:
            assert life.outcome.task_id is not None
            life.attached()
            with self.stopper.interruptible():
                task = await self.poller.poll(job.id, life.outcome.task_id)
        if task.status == "running":
            with self.stopper.interruptible():
                task = await self.poller.wait(job.id, task, created_at, task_kind(job))
        slot.release()
        if task.status == "failed":
            self.downloader.write_response(job, task)
            raise JobFatalError("task_failed", task.message or "the provider reported FAIL")
        life.downloading()
        resumed = record if step.action != "submit" else None  # its request.json written earlier
        files = await self.downloader.fetch_all(job, task, life.outcome.warnings, resumed)
        if files.rejected is not None:
            life.failed(
                "qc_failed",
                f"{files.rejected}; the video is kept as {files.video['path']}; "
                "--retry-failed generates a new one",
                video=files.video,
                media=files.media,
            )
            return
        await life.succeeded(files.task.task_id, files.video, files.cover, files.media,
                             poster=files.poster, provided=files.provided, stat=files.stat)
