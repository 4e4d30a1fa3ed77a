"""Execution: submit, poll and download every planned job under the provider's limits.

One anyio task group runs the jobs. Three things pace it:

- an in-flight cap, held from the create request until the task is terminal (providers count
  tasks, not requests), lowered for a while when the server says 1302;
- a create-request rate limiter (never above ``rpm`` in any 60-second window);
- per-step retry policies that honour ``Retry-After``.

The journal makes it safe to kill at any moment: a create is journaled before it is sent and its
task id is fsynced before anything waits on it, so the next run re-attaches instead of paying
again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchvid.errors import (
    BatchvidError,
    JobFatalError,
    ProviderError,
    RunFatalError,
    TransientError,
    UsageError,
)
from batchvid.events import (
    Event,
    JobDownloaded,
    JobFinished,
    JobPolled,
    JobRetrying,
    JobSubmitted,
    RunFinished,
    RunStarted,
    RunStopping,
    Subscriber,
)
from batchvid.jobs import Job, Manifest
from batchvid.plan import UNANSWERED_CREATE, Plan, Step, decide, make_plan, select
from batchvid.polling import PollSchedule
from batchvid.providers import get_provider
from batchvid.providers.base import Provider, TaskResult
from batchvid.ratelimit import AdaptiveLimit, RateLimiter
from batchvid.report import Outcome, RunInfo, exit_code, write_outputs
from batchvid.retry import RetryPolicy
from batchvid.store import (
    HashingWriter,
    JobRecord,
    OutputDir,
    dumps,
    hashing_writer,
    verify_file,
    write_atomic,
)

# Exceptions after which a create request may have reached the server: retrying could pay twice
# on a provider without idempotency keys.
AMBIGUOUS_SEND = (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError)
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Exceptions raised before a request left: nothing can have been created."""
MAYBE_CREATED = ("create_unconfirmed", "bad_response", "duplicate_request")
"""Error kinds of a create that may have made (and billed) a task whose id is unknown."""
AMBIGUOUS_STATUSES = (502, 504)
"""Gateway errors: the request may have reached the provider behind the gateway."""
EXPIRED_URL_STATUSES = (403, 404, 410)
REFRESHES = 3


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides the manifest; the CLI builds it from flags and limits."""

    out_dir: Path
    provider: str = "geekai"
    base_url: str | None = None
    api_key: str = ""
    max_in_flight: int = 4
    rpm: float | None = 30.0
    retries: int = 5
    timeout: float = 1800.0
    poll_min: float = 5.0
    poll_max: float = 15.0
    only: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    retry_failed: bool = False
    force: bool = False
    max_cost: float | None = None
    strict_media: bool = False
    max_download_bytes: int = 4 << 30
    http_timeout: float = 60.0
    grace: float = 10.0
    """Seconds that downloads under way get to finish after the first SIGINT/SIGTERM. Waiting
    on tasks stops at once: their ids are journaled and the next run re-attaches."""
    handle_signals: bool = False
    manifest_label: str | None = None
    """How report.json names the manifest (the path as the user typed it)."""


@dataclass
class RunResult:
    exit_code: int
    outcomes: list[Outcome]
    report: dict[str, Any]
    stopped: dict[str, str] | None


class _Stopped(Exception):
    """The run is stopping; this job was not submitted."""


def scrubber(secret: str) -> Callable[[str], str]:
    """A function that blanks ``secret`` out of any text."""
    if len(secret) < 4:
        return lambda text: text
    return lambda text: text.replace(secret, "[REDACTED]")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Runner:
    def __init__(
        self,
        manifest: Manifest,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        subscribers: Sequence[Subscriber] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
        provider: Provider | None = None,
    ) -> None:
        self.manifest = manifest
        self.settings = settings
        self.provider = provider or get_provider(settings.provider)
        self.transport = transport
        self.subscribers = list(subscribers)
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.scrub = scrubber(settings.api_key)
        self.out = OutputDir(settings.out_dir)
        self.limiter = RateLimiter(settings.rpm or 0, 60.0, clock=clock, sleep=sleep)
        self.in_flight = AdaptiveLimit(settings.max_in_flight, clock=clock, sleep=sleep)
        self.create_policy = RetryPolicy(settings.retries, rng=self.rng)
        self.poll_schedule = PollSchedule(settings.poll_min, settings.poll_max)
        # Polls and downloads never pay: they are bounded by the job timeout, not by --retries.
        self.patient_policy = RetryPolicy(max(settings.retries, 1000), cap=30.0, rng=self.rng)
        self.stopped: dict[str, str] | None = None
        self._stop_submitting = anyio.Event()
        self._interrupted = False
        self._waits: set[anyio.CancelScope] = set()
        self._jobs_scope: anyio.CancelScope | None = None
        """The scope of the job tasks, once the run is executing (a CancelScope needs a loop)."""
        self._records: dict[str, JobRecord] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._committed = 0.0
        """Price of the creates admitted under --max-cost (a job stopped before it is sent
        gives its share back)."""
        self._cost = 0.0
        """Price of the tasks this run created: report.json's cost."""
        self._prices: dict[str, float] = {}
        self._relocations = self.out.state_dir / "relocate"
        self._staged: dict[str, Path] = {}

    # -- events -----------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for subscriber in self.subscribers:
            subscriber(event)

    def stop(self, reason: str, message: str, *, halt: bool = True) -> None:
        """Record why the run stops early (the first reason is the one reported) and, with
        ``halt``, stop every create not yet sent. A budget stop does not halt: jobs already
        admitted within the budget go on."""
        if self.stopped is None:
            self.stopped = {"reason": reason, "message": self.scrub(message)}
            self.emit(RunStopping(reason, self.scrub(message)))
        if halt:
            self._stop_submitting.set()

    # -- the run ----------------------------------------------------------------------------

    def plan(self, records: dict[str, JobRecord]) -> Plan:
        """The selected jobs' steps, plus a ``skip`` for every other job of the manifest that is
        done and verified in this directory: ``--only`` and ``--shard`` choose what to work on,
        not what the lock, the dataset index and the report keep."""
        jobs = select(self.manifest.jobs, self.settings.only, self.settings.shard)
        plan = make_plan(
            jobs,
            records,
            self.settings.out_dir,
            provider=self.settings.provider,
            pricing=self.manifest.pricing,
            force=self.settings.force,
            retry_failed=self.settings.retry_failed,
        )
        chosen = {job.key for job in jobs}
        done = [
            step
            for job in self.manifest.jobs
            if job.key not in chosen and (record := records.get(job.key)) is not None
            and record.state == "succeeded"
            and (step := decide(job, record, self.settings.out_dir)).action == "skip"
        ]
        if not done:
            return plan
        steps = sorted((*plan.steps, *done), key=lambda step: step.job.index)
        return Plan(tuple(steps), plan.prices, plan.currency)

    async def run(self) -> RunResult:
        started_wall, started = _now(), self.clock()
        self._records = self.out.open()
        try:
            plan = self.plan(self._records)
            if self.settings.max_cost is not None and plan.unpriced:
                raise UsageError(
                    f"--max-cost needs a price for {', '.join(plan.unpriced)} on "
                    f"{self.settings.provider}: add them under 'pricing:' in the manifest"
                )
            self._outcomes = {s.job.key: self._initial_outcome(s) for s in plan.steps}
            self._prices = dict(plan.prices)
            self._stage_relocations()
            self.emit(RunStarted(len(plan.steps), plan.counts()))
            try:
                await self._execute(plan)
                if not self._staged:
                    shutil.rmtree(self._relocations, ignore_errors=True)
            finally:
                with anyio.CancelScope(shield=True):
                    outcomes = [self._outcomes[s.job.key] for s in plan.steps]
                    code = exit_code(o.status for o in outcomes)
                    info = RunInfo(
                        manifest=self.settings.manifest_label or str(self.manifest.path),
                        name=self.manifest.name,
                        provider=self.settings.provider,
                        exit_code=code,
                        stopped=self.stopped,
                        started_at=started_wall,
                        finished_at=_now(),
                        seconds=self.clock() - started,
                        cost=self._cost,
                        currency=plan.currency,
                    )
                    report = write_outputs(self.settings.out_dir, outcomes, info)
                    self.emit(RunFinished(code, report["summary"]))
        finally:
            self.out.close()
        return RunResult(code, outcomes, report, self.stopped)

    def _initial_outcome(self, step: Step) -> Outcome:
        record = step.record
        task_id = record.task_id if record else None
        if step.action == "skip" and record is not None:
            return Outcome(
                step.job,
                "skipped",
                step.action,
                task_id=task_id,
                video=record.video,
                cover=record.cover,
                media=record.media,
            )
        if step.action == "keep-failed" and record is not None:
            error = record.error
            if error is None and record.state == "submitting":
                error = dict(UNANSWERED_CREATE)
            return Outcome(step.job, "failed", step.action, task_id=task_id, error=error)
        return Outcome(
            step.job,
            "pending",
            step.action,
            task_id=None if step.pays else task_id,
            error={"kind": "not_started", "message": "the run stopped before this job finished"},
        )

    async def _execute(self, plan: Plan) -> None:
        active = [s for s in plan.steps if s.action in ("reattach", "download", "submit")]
        # Tasks already running on the server go first: they hold server capacity already.
        active.sort(key=lambda s: s.action == "submit")
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        timeout = httpx.Timeout(self.settings.http_timeout, connect=min(10.0, self.settings.http_timeout))
        base_url = self.settings.base_url or self.provider.default_base_url
        async with (
            httpx.AsyncClient(
                base_url=base_url, headers=headers, transport=self.transport, timeout=timeout
            ) as api,
            httpx.AsyncClient(
                transport=self.transport, timeout=timeout, follow_redirects=True, max_redirects=5
            ) as downloads,
            anyio.create_task_group() as outer,
        ):
            self._api, self._downloads = api, downloads
            if self.settings.handle_signals:
                outer.start_soon(self._watch_signals, outer.cancel_scope)
            self._jobs_scope = anyio.CancelScope()
            with self._jobs_scope:
                async with anyio.create_task_group() as tg:
                    for step in active:
                        if step.pays and not self._within_budget(plan, step):
                            break
                        if self._stop_submitting.is_set() and step.pays:
                            break
                        holds_slot = step.action != "download"
                        if holds_slot:
                            await self.in_flight.acquire()
                        if self._stop_submitting.is_set() and step.pays:
                            if holds_slot:
                                self.in_flight.release()
                            break
                        tg.start_soon(self._run_step, step, holds_slot)
            outer.cancel_scope.cancel()

    def _within_budget(self, plan: Plan, step: Step) -> bool:
        limit = self.settings.max_cost
        if limit is None:
            return True
        price = plan.price(step.job) or 0.0
        if self._committed + price > limit + 1e-9:
            self.stop(
                "budget",
                f"--max-cost {limit:g} {plan.currency} reached "
                f"({self._committed:g} {plan.currency} committed)",
                halt=False,
            )
            return False
        self._committed += price
        return True

    async def _watch_signals(self, outer: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            count = 0
            async for signum in signals:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    self.interrupt(f"{name} received; finishing downloads under way")
                else:
                    # Stop at once, and keep receiving: a later signal must not turn into a
                    # KeyboardInterrupt inside a shielded create and lose its task id.
                    if self._jobs_scope is not None:
                        self._jobs_scope.cancel()

    def interrupt(self, message: str) -> None:
        """Stop submitting and stop waiting on tasks (they are journaled and resume next run);
        downloads under way get ``grace`` seconds to finish."""
        self._interrupted = True
        self.stop("interrupted", message)
        for scope in list(self._waits):
            scope.cancel()
        if self._jobs_scope is not None:
            self._jobs_scope.deadline = min(
                self._jobs_scope.deadline, anyio.current_time() + self.settings.grace
            )

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """A stretch of waiting that an interrupt ends at once, as ``_Stopped``. Never wrap a
        create request in it: cancelling one mid-flight could lose a paid task's id."""
        scope = anyio.CancelScope()
        if self._interrupted:
            scope.cancel()
        self._waits.add(scope)
        try:
            with scope:
                yield
        finally:
            self._waits.discard(scope)
        if scope.cancelled_caught:
            raise _Stopped

    # -- one job ----------------------------------------------------------------------------

    async def _run_step(self, step: Step, holds_slot: bool) -> None:
        job = step.job
        outcome = self._outcomes[job.key]
        started = self.clock()
        slot = [holds_slot]

        def release() -> None:
            if slot[0]:
                slot[0] = False
                self.in_flight.release()

        try:
            with anyio.move_on_after(self.settings.timeout) as deadline:
                await self._drive(step, outcome, release)
            if deadline.cancelled_caught:
                self._fail(
                    outcome,
                    JobFatalError(
                        "timeout",
                        f"not finished within --timeout {self.settings.timeout:g} s; "
                        + (
                            "--retry-failed polls the same task again"
                            if outcome.task_id
                            else "no task was created; --retry-failed submits it"
                        ),
                    ),
                )
        except _Stopped:
            pass
        except RunFatalError as exc:
            self.stop(exc.kind, str(exc))
            outcome.error = {"kind": exc.kind, "message": self.scrub(exc.detail)}
        except ProviderError as exc:  # job-fatal, or transient with retries exhausted
            self._fail(outcome, exc)
        finally:
            release()
            if (
                step.pays
                and outcome.task_id is None
                and (outcome.error or {}).get("kind") not in MAYBE_CREATED
            ):
                # Nothing was created: the budget share goes back for the jobs still queued.
                self._committed -= self._prices.get(job.model, 0.0)
            outcome.seconds = round(self.clock() - started, 3)
            if outcome.status != "pending" or self.stopped is None:
                self.emit(
                    JobFinished(
                        job.id,
                        outcome.status,
                        (outcome.error or {}).get("kind"),
                        (outcome.error or {}).get("message"),
                    )
                )

    def _fail(self, outcome: Outcome, exc: ProviderError) -> None:
        message = self.scrub(exc.detail)
        outcome.status = "failed"
        outcome.error = {"kind": exc.kind, "message": message}
        self.out.journal.append(
            {
                "event": "failed",
                "key": outcome.job.key,
                "id": outcome.job.id,
                "task_id": outcome.task_id,
                "error": outcome.error,
            }
        )

    async def _drive(self, step: Step, outcome: Outcome, release: Callable[[], None]) -> None:
        job = step.job
        if step.action == "download" and step.record is not None and self._relocate(step, outcome):
            return
        created_at: float | None = None
        if step.action == "submit":
            task = await self._create(job, outcome, step.record)
            created_at = self.clock()
        else:
            assert outcome.task_id is not None
            with self._interruptible():
                task = await self._poll_once(job, outcome.task_id, outcome)
        if task.status == "running":
            with self._interruptible():
                task = await self._wait(job, task, outcome, created_at)
        release()
        if task.status == "failed":
            self._write_response(job, task)
            raise JobFatalError("task_failed", task.message or "the provider reported FAIL")
        await self._finish(job, task, outcome)

    # -- create -----------------------------------------------------------------------------

    def _request_id(self, job: Job, record: JobRecord | None) -> str:
        """BigModel's idempotency key. An unanswered create is retried under the same id, so the
        server refuses a duplicate (1231); any deliberate new submission gets a new one."""
        if record is not None and record.state == "submitting" and record.extra.get("request_id"):
            return str(record.extra["request_id"])
        return self.provider.request_id(job, record.creates if record is not None else 0)

    async def _create(self, job: Job, outcome: Outcome, record: JobRecord | None) -> TaskResult:
        request_id = self._request_id(job, record)
        recorded = self.provider.recorded_body(job)
        if "request_id" in recorded:
            recorded["request_id"] = request_id
        write_atomic(self.out.job_dir(job.id) / "request.json", dumps(recorded), durable=False)
        attempt = 0
        # A create of an earlier run that got no answer may have made a task: until a create is
        # answered, no refusal may mark this job "no task exists" (that would change its
        # request id and let BigModel create it twice).
        maybe_created = record is not None and record.state == "submitting"
        while True:
            if self._stop_submitting.is_set():
                raise _Stopped
            with self._interruptible():
                await self.limiter.acquire()
            if self._stop_submitting.is_set():
                raise _Stopped
            attempt += 1
            outcome.attempts += 1
            self.out.journal.append(
                {"event": "submitting", "key": job.key, "id": job.id, "request_id": request_id}
            )
            try:
                # Shielded: a create that reached the server must get its answer recorded, so
                # neither the job timeout nor a second signal cuts it off; httpx's own timeout
                # bounds it.
                with anyio.CancelScope(shield=True):
                    task = await self.provider.create(self._api, job, request_id=request_id)
            except ProviderError as exc:
                maybe_created = self._after_failed_create(job, exc, maybe_created)
                if not isinstance(exc, TransientError):
                    raise
                if exc.kind == "concurrency_limited":
                    self.in_flight.reduce()
                if exc.retry_after:
                    self.limiter.penalize(exc.retry_after)
                delay = self.create_policy.delay(attempt, exc)
                if delay is None:
                    raise
                self.emit(JobRetrying(job.id, "create", attempt, delay, self.scrub(str(exc))))
                with self._interruptible():
                    await self.sleep(delay)
                continue
            if self.scrub(task.task_id) != task.task_id:
                # A server echoing the key back as the task id: recording it would write the
                # key into the journal, the report and the log.
                raise JobFatalError(
                    "bad_response",
                    f"{self.provider.name} answered with a task id that contains the API key; "
                    "it is not recorded. Check the base URL; --retry-failed submits the job again",
                )
            outcome.task_id = task.task_id
            self.out.journal.append(
                {"event": "submitted", "key": job.key, "id": job.id, "task_id": task.task_id}
            )
            self._cost += self._prices.get(job.model, 0.0)
            self.emit(JobSubmitted(job.id, task.task_id))
            return task

    def _after_failed_create(self, job: Job, exc: ProviderError, maybe_created: bool) -> bool:
        """Record what a failed create attempt means for the money; returns whether some
        attempt of this create may have made a task.

        An answer that refuses the request (4xx, 429, 500, 503), or a connection that never
        opened, created no task: unless an earlier attempt may have, the journal says so and a
        later run may submit again. A connection that broke after the request left, or a gateway
        error (502, 504), may hide a created task: a provider with an idempotency key (BigModel's
        request_id) is asked again under the same key; on one without (GeekAI), the job fails as
        ``create_unconfirmed`` rather than risk paying twice.
        """
        ambiguous = isinstance(exc.__cause__, AMBIGUOUS_SEND) or exc.status in AMBIGUOUS_STATUSES
        if not ambiguous:
            answered = exc.status is not None and not 200 <= exc.status < 300
            refused = answered or isinstance(exc.__cause__, NOT_SENT)
            if refused and not maybe_created and exc.kind != "duplicate_request":
                self.out.journal.append({"event": "refused", "key": job.key, "id": job.id})
            return maybe_created
        if not self.provider.idempotent:
            raise JobFatalError(
                "create_unconfirmed",
                f"the create request may have reached {self.provider.name} before it failed "
                f"({exc.detail}); it was not sent again so as not to pay twice. "
                "--retry-failed submits it again",
            ) from exc
        return True

    # -- poll -------------------------------------------------------------------------------

    async def _poll_once(self, job: Job, task_id: str, outcome: Outcome) -> TaskResult:
        failures = 0
        while True:
            try:
                task = await self.provider.poll(self._api, task_id)
            except TransientError as exc:
                failures += 1
                delay = self.patient_policy.delay(failures, exc)
                if delay is None:
                    raise
                self.emit(JobRetrying(job.id, "poll", failures, delay, self.scrub(str(exc))))
                await self.sleep(delay)
                continue
            self.emit(JobPolled(job.id, task_id, self.scrub(task.provider_status or task.status)))
            return task

    async def _wait(
        self, job: Job, task: TaskResult, outcome: Outcome, created_at: float | None
    ) -> TaskResult:
        """Poll until the task ends. ``created_at`` is None for a task created by an earlier
        run: its age is unknown, so it is polled on the plain backoff and teaches nothing."""
        delays = self.poll_schedule.delays()
        while task.status == "running":
            elapsed = math.inf if created_at is None else self.clock() - created_at
            # Jitter spreads the polls of tasks created together, and only ever makes a poll
            # earlier: a finished task holds its in-flight slot until a poll sees it.
            await self.sleep(delays.next(elapsed) * self.rng.uniform(0.8, 1.0))
            task = await self._poll_once(job, task.task_id, outcome)
        if created_at is not None:
            self.poll_schedule.observe(self.clock() - created_at)
        return task

    # -- download ---------------------------------------------------------------------------

    async def _finish(self, job: Job, task: TaskResult, outcome: Outcome) -> None:
        job_dir = self.out.job_dir(job.id)
        task, video = await self._download_video(job, task, outcome, job_dir / "video.mp4")
        cover = None
        if task.cover_url:
            cover = await self._fetch_cover(job, task.cover_url, outcome)
        media = await self._probe(job, job_dir / "video.mp4", outcome)
        self._write_response(job, task)
        self._succeeded(job, outcome, task.task_id, video, cover, media)
        self.emit(JobDownloaded(job.id, video["bytes"]))

    async def _download_video(
        self, job: Job, task: TaskResult, outcome: Outcome, final: Path
    ) -> tuple[TaskResult, dict[str, Any]]:
        """Fetch the video, refreshing an expired URL by polling the task again. The latest
        task response is recorded in response.json if the download gives up."""
        refreshes = 0
        failures = 0
        try:
            while True:
                try:
                    if not task.video_url:
                        raise JobFatalError("bad_response", "the task succeeded without a video URL")
                    return task, await self._fetch(task.video_url, final)
                except _Expired as exc:
                    if refreshes >= REFRESHES:
                        raise JobFatalError(
                            "download_failed",
                            f"result URL keeps failing ({exc}); --retry-failed tries again",
                        ) from exc
                    refreshes += 1
                    task = await self._poll_once(job, task.task_id, outcome)
                    if task.status != "succeeded":
                        raise JobFatalError(
                            "download_failed", f"task is {task.status} when refreshing its URL"
                        ) from exc
                except TransientError as exc:
                    failures += 1
                    delay = self.patient_policy.delay(failures, exc)
                    if delay is None or failures > max(self.settings.retries, 3):
                        raise JobFatalError(
                            "download_failed",
                            f"{exc}; --retry-failed downloads it again without regenerating",
                        ) from exc
                    self.emit(JobRetrying(job.id, "download", failures, delay, self.scrub(str(exc))))
                    await self.sleep(delay)
        except ProviderError:
            self._write_response(job, task)
            raise

    async def _fetch(self, url: str, final: Path) -> dict[str, Any]:
        """Stream ``url`` to ``final`` through a temporary file, hashing as it goes."""
        scheme = httpx.URL(url).scheme
        if scheme not in ("http", "https"):
            raise JobFatalError("bad_response", f"result URL has scheme {scheme!r}; only http(s) is fetched")
        cap = self.settings.max_download_bytes
        try:
            async with self._downloads.stream("GET", url) as response:
                status = response.status_code
                if status in EXPIRED_URL_STATUSES:
                    raise _Expired(f"HTTP {status}")
                if status == 429 or status >= 500:
                    raise TransientError("download_error", f"download answered HTTP {status}", status=status)
                if not 200 <= status < 300:
                    raise JobFatalError("download_failed", f"download answered HTTP {status}", status=status)
                declared = response.headers.get("content-length")
                expected = int(declared) if declared and declared.isdigit() else None
                if expected is not None and expected > cap:
                    raise JobFatalError("download_too_large", f"video is {expected} bytes; the cap is {cap}")
                with hashing_writer(final) as writer:
                    await _stream_into(response, writer, cap)
                    if expected is not None and writer.size != expected:
                        raise TransientError(
                            "truncated_download",
                            f"received {writer.size} of {expected} bytes",
                        )
                    if writer.size == 0:
                        raise TransientError("truncated_download", "received an empty body")
                    writer.commit()
                    digest, size = writer.sha256, writer.size
        except httpx.TooManyRedirects as exc:
            raise JobFatalError("download_failed", f"too many redirects: {exc}") from exc
        except httpx.UnsupportedProtocol as exc:
            raise JobFatalError("bad_response", f"redirected to an unsupported URL: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientError("network", f"download interrupted: {type(exc).__name__}: {exc}") from exc
        rel = final.relative_to(self.settings.out_dir).as_posix()
        return {"path": rel, "sha256": digest, "bytes": size}

    async def _fetch_cover(self, job: Job, url: str, outcome: Outcome) -> dict[str, Any] | None:
        suffix = Path(httpx.URL(url).path).suffix.lower()
        ext = suffix if suffix in (".jpg", ".jpeg", ".png", ".webp") else ".jpg"
        for attempt in range(1, 4):
            try:
                return await self._fetch(url, self.out.job_dir(job.id) / f"cover{ext}")
            except (TransientError, _Expired) as exc:
                if attempt == 3:
                    outcome.warnings.append(f"cover image not downloaded: {self.scrub(str(exc))}")
                    return None
                await self.sleep(min(2.0**attempt, 10.0) * self.rng.uniform(0.5, 1.0))
            except JobFatalError as exc:
                outcome.warnings.append(f"cover image not downloaded: {self.scrub(str(exc))}")
                return None
        return None

    async def _probe(self, job: Job, path: Path, outcome: Outcome) -> dict[str, Any] | None:
        from batchvid.media import MediaError, probe

        try:
            info = await anyio.to_thread.run_sync(probe, path)
        except MediaError as exc:
            problem = f"video does not decode: {exc}"
            if self.settings.strict_media:
                raise JobFatalError("bad_media", problem) from exc
            outcome.warnings.append(problem)
            return None
        media = info.to_dict()
        problems = []
        want_fps = job.params.get("fps")
        if want_fps is not None and not math.isclose(info.fps, float(want_fps), rel_tol=0.02):
            problems.append(f"fps is {info.fps:g}, {want_fps} was requested")
        want_audio = bool(job.params.get("with_audio", False))
        if info.has_audio != want_audio:
            problems.append(
                "has an audio track, none was requested"
                if info.has_audio
                else "has no audio track, with_audio was requested"
            )
        for problem in problems:
            if self.settings.strict_media:
                raise JobFatalError("media_mismatch", f"video {problem}")
            outcome.warnings.append(f"video {problem}")
        return media

    def _write_response(self, job: Job, task: TaskResult) -> None:
        text = self.scrub(dumps(task.raw))
        write_atomic(self.out.job_dir(job.id) / "response.json", text, durable=False)

    def _stage_relocations(self) -> None:
        """Copy aside the verified files of every done job whose id changed, before any job
        writes: ids can swap (a <-> b), and a new job may take a renamed job's old id."""
        for job in self.manifest.jobs:  # all of them: --only may write where another job was
            record = self._records.get(job.key)
            if record is None or record.state != "succeeded" or record.video is None:
                continue
            if record.id == job.id:
                continue
            staged = self._relocations / job.key
            if verify_file(staged / "video.mp4", record.video) is None:
                self._staged[job.key] = staged  # copied by an interrupted earlier run
                continue
            old = self.out.job_dir(record.id)
            if verify_file(old / "video.mp4", record.video) is not None:
                continue  # gone or damaged: fetched again from the task
            partial = staged.with_name(staged.name + ".tmp")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(old, partial)
            shutil.rmtree(staged, ignore_errors=True)
            os.replace(partial, staged)
            self._staged[job.key] = staged

    def _relocate(self, step: Step, outcome: Outcome) -> bool:
        """A done job whose id changed: move its staged files instead of downloading again."""
        record = step.record
        assert record is not None and record.video is not None
        staged = self._staged.pop(step.job.key, None)
        if staged is None:
            return False
        new = self.out.job_dir(step.job.id)
        shutil.rmtree(new, ignore_errors=True)
        new.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, new)
        video = dict(record.video, path=f"jobs/{step.job.id}/video.mp4")
        cover = (
            dict(record.cover, path=f"jobs/{step.job.id}/{Path(record.cover['path']).name}")
            if record.cover
            else None
        )
        self._succeeded(step.job, outcome, record.task_id, video, cover, record.media)
        return True

    def _succeeded(
        self,
        job: Job,
        outcome: Outcome,
        task_id: str | None,
        video: dict[str, Any],
        cover: dict[str, Any] | None,
        media: dict[str, Any] | None,
    ) -> None:
        """The job is done: its files are in place; say so in the outcome and the journal."""
        outcome.status, outcome.error = "succeeded", None
        outcome.video, outcome.cover, outcome.media = video, cover, media
        self.out.journal.append(
            {
                "event": "succeeded",
                "key": job.key,
                "id": job.id,
                "task_id": task_id,
                "video": video,
                "cover": cover,
                "media": media,
            }
        )


WRITE_BATCH = 4 << 20


async def _stream_into(response: httpx.Response, writer: HashingWriter, cap: int) -> None:
    """Copy the body into ``writer``. Past the first 4 MiB, a worker thread hashes and writes
    each batch while the event loop reads the next one (hashlib and file writes release the
    GIL); small videos are written inline. At most two batches are in memory."""
    batch: list[bytes] = []
    size = received = 0
    executor: ThreadPoolExecutor | None = None
    pending: Future[None] | None = None
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > cap:
                raise JobFatalError("download_too_large", f"video exceeds the cap of {cap} bytes")
            batch.append(chunk)
            size += len(chunk)
            if size >= WRITE_BATCH:
                if executor is None:
                    executor = ThreadPoolExecutor(1, thread_name_prefix="batchvid-write")
                if pending is not None:
                    await anyio.to_thread.run_sync(pending.result)
                pending = executor.submit(writer.write, b"".join(batch))
                batch, size = [], 0
        if pending is not None:
            await anyio.to_thread.run_sync(pending.result)
        if batch:
            writer.write(b"".join(batch))
    finally:
        if executor is not None:
            executor.shutdown(wait=True)


class _Expired(BatchvidError):
    """The result URL answered 403/404/410: poll the task again for a fresh one."""
