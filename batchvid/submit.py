"""Sending a job's create request: paced, journaled first, retried by policy, judged by the
one billing verdict (``batchvid.billing``) when it fails.

A create is journaled (``submitting``) before it leaves and its task id (``submitted``) before
anything waits on it. The request itself is shielded from cancellation: a create that reached
the server must get its answer recorded, so neither the job timeout nor a second signal cuts
it off (httpx's own timeout bounds it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchvid.billing import UNCONFIRMED_KIND, Verdict, create_verdict
from batchvid.durable import dumps, make_dir, write_atomic
from batchvid.errors import JobFatalError, ProviderError, TransientError
from batchvid.events import Effects, JobRetrying
from batchvid.jobs import Job
from batchvid.journal import JobRecord
from batchvid.lifecycle import JobLife
from batchvid.offload import alongside
from batchvid.providers.base import Provider, TaskResult
from batchvid.ratelimit import AdaptiveLimit, RateLimiter
from batchvid.retry import RetryPolicy
from batchvid.stopping import Stopper


@dataclass
class Submitter:
    provider: Provider
    api: httpx.AsyncClient
    root: Path
    limiter: RateLimiter
    in_flight: AdaptiveLimit
    policy: RetryPolicy
    stopper: Stopper
    fx: Effects

    def request_id(self, job: Job, record: JobRecord | None) -> str:
        """The idempotency key. An unanswered create is retried under the same one, so the
        provider refuses a duplicate; any deliberate new submission gets a new one."""
        if record is not None and record.state == "submitting" and record.request_id:
            return record.request_id
        return self.provider.request_id(job, record.creates if record is not None else 0)

    async def journal_first(self, life: JobLife, record: JobRecord | None) -> None:
        """Make the first create attempt ready before its turn: the job's folder and
        request.json written and its ``submitting`` line durable when this returns
        (``create(journaled=True)`` sends it)."""
        self.stopper.check()
        request_id = self.request_id(life.job, record)
        await self._with_request(life, request_id, lambda: life.attempt(request_id, sent=False))

    async def _with_request(self, life: JobLife, request_id: str | None, step: Callable[[], Awaitable[None]]) -> None:
        """``step`` (the attempt's journal line) while the job's folder and request.json are
        written beside it: a slot's next create waits on all of them."""
        recorded = self.provider.recorded_body(life.job, request_id=request_id)
        await alongside(step, _write_request, self.root / "jobs" / life.job.id, recorded)

    async def create(
        self, life: JobLife, record: JobRecord | None, *, journaled: bool = False
    ) -> tuple[TaskResult, float]:
        """Create the job's task; returns it once its id is journaled, and the clock time its
        create was answered: the task's age counts from there, not from after the journal
        line's fsync (which a busy disk stretches to tens of milliseconds, and the poll schedule
        would count as task time). ``journaled``: the first attempt's line was written by
        ``journal_first``."""
        job = life.job
        request_id = self.request_id(job, record)
        attempt = 0
        # A create of an earlier run that got no answer may have made a task: until a create is
        # answered, no refusal may mark this job "no task exists" (that would change its
        # request id and let the provider create it twice).
        maybe_created = record is not None and record.state == "submitting"
        while True:
            if attempt == 0 and not journaled:
                # The folder is made while the create waits for its turn and its journal line's
                # fsync. All are done before it leaves.
                await self._with_request(life, request_id, lambda: self._turn(life, request_id))
            else:
                await self._turn(life, request_id, journal=attempt > 0)
                if attempt == 0:
                    life.sending()
            attempt += 1
            try:
                with anyio.CancelScope(shield=True):
                    task = await self.provider.create(self.api, job, request_id=request_id)
                answered = self.fx.clock()
            except ProviderError as exc:
                maybe_created = self._judge(life, exc, maybe_created)
                delay = self._retry_delay(attempt, exc)
                self.fx.emit(JobRetrying(job.id, "create", attempt, delay, str(exc)))
                with self.stopper.interruptible():
                    await self.fx.sleep(delay)
                continue
            if self.fx.scrub(task.task_id) != task.task_id:
                # A server echoing the key back as the task id: recording it would write the
                # key into the journal, the report and the log.
                raise JobFatalError(
                    "bad_response",
                    f"{self.provider.name} answered with a task id that contains the API key; "
                    "it is not recorded. Check the base URL; --retry-failed submits the job again",
                )
            await life.submitted(task.task_id)
            return task, answered

    async def _turn(self, life: JobLife, request_id: str | None, journal: bool = True) -> None:
        """Wait for the create's turn under the rate limit, then journal the attempt (unless
        ``journal_first`` did)."""
        self.stopper.check()
        with self.stopper.interruptible():
            await self.limiter.acquire()
        self.stopper.check()
        if journal:
            await life.attempt(request_id)

    def _judge(self, life: JobLife, exc: ProviderError, maybe_created: bool) -> bool:
        """Apply the billing verdict on a failed attempt; returns whether some attempt of this
        create may have made a task. Raises what ends the job."""
        verdict = create_verdict(exc, self.provider.idempotent)
        if verdict is Verdict.NOT_BILLED:
            if not maybe_created:
                life.refused()
        elif verdict is Verdict.RESEND:
            maybe_created = True
        elif isinstance(exc, TransientError):  # UNCONFIRMED, and retrying could pay twice
            raise JobFatalError(
                UNCONFIRMED_KIND,
                f"the create request may have reached {self.provider.name} before it failed "
                f"({exc.detail}); it was not sent again so as not to pay twice. "
                "--retry-failed submits it again",
            ) from exc
        if not isinstance(exc, TransientError):
            raise exc
        return maybe_created

    def _retry_delay(self, attempt: int, exc: ProviderError) -> float:
        """Slow down as the provider asked; the wait before the next attempt, or raise ``exc``
        when retries are used up."""
        if exc.kind == "concurrency_limited":
            self.in_flight.reduce()
        if exc.retry_after:
            self.limiter.penalize(exc.retry_after)
        delay = self.policy.delay(attempt, exc)
        if delay is None:
            raise exc
        return delay


def _write_request(job_dir: Path, recorded: Mapping[str, Any]) -> None:
    """The job's folder and ``request.json``, in the thread hop of the ``submitting`` line's
    fsync, just before it: nothing here is fsynced, or every line waiting for that fsync would
    wait for this one too. The folder's entry in jobs/ must survive a power cut before the
    journal calls anything in it done: the download's commit makes it durable before its line
    (``Downloader._finish``: ``durable.sync_entry``, an fsync of jobs/ shared by the folders
    made before it); jobs/'s own entry, when this makes it, is fsynced here (once a run). request.json itself may be lost or empty after a power cut (a record for the
    reader: nothing reads it to decide, docs/output-directory.md)."""
    make_dir(job_dir, own_entry=False)
    write_atomic(job_dir / "request.json", dumps(recorded), durable=False)
