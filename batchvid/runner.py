"""Execution: run every planned job under the provider's limits and write the report.

The runner composes small components and holds the run's shape; each piece of work lives in
its own module (see docs/architecture.md):

- ``plan.make_plan``: what to do with each job (the one planner);
- ``drive.JobDriver``: one job from its step to its end, through ``lifecycle.JobLife``;
- ``submit.Submitter``, ``polling.Poller``, ``download.Downloader``, ``relocate.Relocations``;
- ``budget.Budget`` (``--max-cost``) and ``stopping.Stopper`` (signals, early stops).

Three things pace the jobs: an in-flight cap, held from the create request until the task is
terminal (providers count tasks, not requests) and lowered for a while when the server says
1302; a create-request rate limiter (never above ``rpm`` in any 60-second window); and
per-step retry policies that honour ``Retry-After``. A fourth bounds the run's memory: at most
``LIVE_AHEAD`` jobs past their task (downloading, analysing) beside the in-flight ones.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from batchvid.budget import Budget
from batchvid.errors import ProviderError, RunFatalError, UsageError
from batchvid.events import (
    Broadcaster,
    Effects,
    JournalLineSetAside,
    RunFinished,
    RunStarted,
    Subscriber,
    scrubber,
)
from batchvid.gcpause import (
    fewer_collections,
    freeze_at_exit,
    keep_until_exit,
    long_lived,
    trim_heap,
)
from batchvid.jobs import Manifest
from batchvid.jsontext import StreamedItems
from batchvid.plan import ACTIVE, Plan, Step
from batchvid.ratelimit import AdaptiveLimit, RateLimiter
from batchvid.relocate import Relocations
from batchvid.report import Outcome, RunInfo, exit_code, write_outputs
from batchvid.reportpieces import code_digest
from batchvid.retry import RetryPolicy
from batchvid.settings import Settings, plan_for
from batchvid.startoutcome import initial_outcome, say_task_not_finished, with_rewrite
from batchvid.stopping import ENHANCE_STOPPING, Stopped, Stopper
from batchvid.store import OutputDir

if TYPE_CHECKING:
    # The HTTP stack (httpx, the providers, the job-driving modules, the prompt rewrites) is
    # imported where a job is sent: a rerun with nothing to send never loads it.
    import httpx

    from batchvid.drive import JobDriver, Slot
    from batchvid.enhancing import Enhancer, Rewrite
    from batchvid.journal import JobRecord, Journal
    from batchvid.polling import PollSchedule
    from batchvid.providers.base import Provider

__all__ = ["RunResult", "Runner", "Settings", "plan_for", "scrubber"]


@dataclass(repr=False)
class RunResult:
    """How a run ended: the exit code the CLI returns (0 all done, 1 some failed, 3 stopped
    early and resumable), each job's outcome in manifest order, the report as written, and why
    the run stopped early (None when it did not).

    ``written`` is report.json's content with its ``jobs`` possibly a sequence whose entries
    are made as they are read (``report.JobEntries``: a 100,000-job run never holds them all),
    and its ``timing``'s ``jobs`` likewise (``report.JobTiming``); ``report`` is the same
    content as plain JSON values, ``json.dumps``-able, made on first use.
    """

    exit_code: int
    outcomes: list[Outcome]
    written: dict[str, Any]
    stopped: dict[str, str] | None
    _plain: dict[str, Any] | None = field(default=None, init=False)

    @property
    def report(self) -> dict[str, Any]:
        """report.json's content, its jobs a list (as ``json.loads`` of the file gives it)."""
        if self._plain is None:
            plain, jobs = self.written, self.written["jobs"]
            if not isinstance(jobs, list):
                plain = {**plain, "jobs": list(jobs)}
            timing = plain.get("timing")
            if isinstance(timing, dict) and isinstance(timing.get("jobs"), StreamedItems):
                plain = {**plain, "timing": {**timing, "jobs": dict(timing["jobs"].items())}}
            self._plain = plain
        return self._plain

    def __repr__(self) -> str:
        # Short: asyncio's runner formats the main task's repr, result included, when it puts
        # back the SIGINT handler; the outcomes of 100,000 jobs took seconds and megabytes.
        return f"RunResult(exit_code={self.exit_code}, jobs={len(self.outcomes)}, stopped={self.stopped!r})"


FREEZE_FROM = 5000
"""Jobs from which a run in a process of its own (the CLI's) freezes what it built before its
jobs run (``gcpause.long_lived``): a smaller one's collections scan little anyway."""

async def _rewrite(
    enhancer: Enhancer, step: Step, stopper: Stopper, scrub: Callable[[str], str], journal: Journal
) -> Rewrite:
    """``batchvid enhance``'s rewrite of one enhanced job: asked now and journaled when its next
    create is due one, else as the journal holds it."""
    from batchvid.enhancing import Rewrite, entry_of, sent_rewrite, stored_rewrite

    job = step.job
    if not step.enhance:
        stored = stored_rewrite(step.record) if step.pays else sent_rewrite(step.record)
        return Rewrite(job, stored)
    try:
        result = await enhancer.rewrite(job)
    except RunFatalError as exc:
        stopper.stop(exc.kind, str(exc))
        return Rewrite(job, None, asked=True, error=scrub(str(exc)))
    except Stopped:
        return Rewrite(job, None, error="stopped before the rewrite")
    except ProviderError as exc:  # EnhanceError: required, and it failed
        return Rewrite(job, None, asked=True, error=scrub(str(exc)))
    journal.append(entry_of(job, result))
    return Rewrite(job, result, asked=True)


def _import_httpx() -> None:
    """Import httpx without ``httpx._main`` (its CLI: click, rich, pygments), which it replaces
    by a stub when a ``None`` in ``sys.modules`` makes that import fail; taken out again after."""
    if "httpx" in sys.modules:
        return
    modules: dict[str, Any] = sys.modules
    blocked = "httpx._main" not in modules
    if blocked:
        modules["httpx._main"] = None
    try:
        import httpx  # noqa: F401
    finally:
        if blocked and modules.get("httpx._main", 0) is None:
            del modules["httpx._main"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Runner:
    """Runs a manifest's jobs into ``settings.out_dir``: takes the directory's lock, plans from
    its journal, submits, polls and downloads under the limits, and writes the report files.

    ``transport`` replaces the network (an ``httpx.ASGITransport`` over the simulator, or an
    ``httpx.MockTransport``); ``subscribers`` receive every event; ``clock``, ``sleep`` and
    ``rng`` are injectable for tests. ``owns_process`` (the CLI): the analysis workers end while
    the report files are written, not at exit, and what a run of ``FREEZE_FROM`` jobs or more
    builds before its jobs run is frozen out of the collector's sight until it ends
    (``gcpause.long_lived``), then kept unfreed until the process exits
    (``gcpause.keep_until_exit``): only for a process that ends after the run; a smaller run's
    process skips only the collector's shutdown passes (``gcpause.freeze_at_exit``).
    ``await runner.run()`` returns a ``RunResult``.
    """

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
        owns_process: bool = False,
    ) -> None:
        self.manifest = manifest
        self.settings = settings
        self._provider = provider
        self.transport = transport
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.scrub = scrubber(settings.api_key)
        self.emit = Broadcaster(subscribers, self.scrub)
        self.out = OutputDir(settings.out_dir)
        self.limiter = RateLimiter(settings.rpm or 0, 60.0, clock=clock, sleep=sleep)
        self.in_flight = AdaptiveLimit(settings.max_in_flight, clock=clock, sleep=sleep)
        self._poll_schedule: PollSchedule | None = None
        self.stopper = Stopper(self.emit, self.scrub, settings.grace)
        self.owns_process = owns_process
        self._closing: threading.Thread | None = None  # ending the workers (owns_process)
        self._jobs_ran = False  # some job was sent: a client, its buffers and the workers made
        code_digest()  # the code this run's report is made by, read as it starts (``reportpieces``)

    @property
    def provider(self) -> Provider:
        """The provider's protocol (the one given, else the settings' own, made at first use)."""
        if self._provider is None:
            from batchvid.providers import get_provider

            self._provider = get_provider(self.settings.provider)
        return self._provider

    @property
    def poll_schedule(self) -> PollSchedule:
        """The polls' spacing, shared by every job of the run (made at first use)."""
        if self._poll_schedule is None:
            from batchvid.polling import PollSchedule

            self._poll_schedule = PollSchedule(self.settings.poll_min, self.settings.poll_max)
        return self._poll_schedule

    @property
    def stopped(self) -> dict[str, str] | None:
        """Why the run stopped early (the first reason), or None."""
        return self.stopper.reason

    def interrupt(self, message: str) -> None:
        """Stop submitting and stop waiting on tasks (they are journaled and resume next run);
        downloads under way get ``grace`` seconds to finish."""
        self.stopper.interrupt(message)

    async def run(self) -> RunResult:
        started_wall, started = _now(), self.clock()
        with long_lived() as settle:  # what is built before the jobs run: set apart once built
            return await self._run(settle, started_wall, started)

    async def _run(self, settle: Callable[[bool], None], started_wall: str, started: float) -> RunResult:
        records = self._open()
        large = False
        clean = self.out.left_clean  # a refusal before anything is written: the lock as found
        try:
            plan = plan_for(self.manifest, self.settings, records, remember=True)
            if self.settings.max_cost is not None and plan.unpriced:
                raise UsageError(
                    f"--max-cost needs a price for {', '.join(plan.unpriced)} on "
                    f"{self.settings.provider}: add them under 'pricing:' in the manifest"
                )
            chat: list[str] = []
            if self.settings.max_cost is not None:  # (the rewrites' module loads the HTTP stack)
                from batchvid.enhancing import unpriced_chat_models

                chat = unpriced_chat_models(plan.steps)
            if chat:
                raise UsageError(
                    f"--max-cost cannot count the prompt rewrites by {', '.join(chat)}: batchvid "
                    "knows no price for that chat model (glm-4-flash is free). Use glm-4-flash, "
                    "rewrite first with `batchvid enhance`, or run without --max-cost"
                )
            budget = Budget(self.settings.max_cost, plan.prices, plan.currency)
            clean = False  # from here on, files and journal lines are written
            # One outcome per job for the report; a job's JobLife only while it runs.
            outcomes = [with_rewrite(initial_outcome(s), s) for s in plan.steps]
            relocations = Relocations(self.out.root, self.out.state_dir)
            relocations.stage(self.manifest.jobs, records)
            large = self.owns_process and len(outcomes) >= FREEZE_FROM
            settle(large)
            if large:  # the CLI's process, which ends after the run: not freed one by one then
                keep_until_exit(self.manifest, records, outcomes)
            self.emit(RunStarted(len(plan.steps), plan.counts()))
            try:
                await self._execute(plan, outcomes, budget, relocations)
                relocations.cleanup()
            finally:
                # The plan's steps (one object per job, the jobs and records they name kept)
                # freed before the report files are made, which reuse their memory: ~8 MB less
                # at the end of a 100,000-job run, whose peak that is.
                del plan
                with anyio.CancelScope(shield=True):
                    for outcome in outcomes:
                        say_task_not_finished(outcome)
                    if large and self._jobs_ran:  # (a rerun that sent nothing has no buffers to give back)
                        trim_heap()
                    report = self._report(outcomes, budget, started_wall, started)
                    if self._closing is not None:
                        self._closing.join()
            clean = True  # nothing cut short: the next run need not look for orphans in jobs/
        finally:
            self.out.close(clean=clean, snapshot=not self.stopper.interrupted)
        if large:
            keep_until_exit(report)
        elif self.owns_process:  # the process ends after the run: no shutdown collection
            freeze_at_exit()
        return RunResult(report["exit_code"], outcomes, report, self.stopped)

    def _open(self) -> dict[str, JobRecord]:
        """Open the output directory (``OutputDir.open``): its journal's records. A damaged
        last line the journal moved aside is told (``JournalLineSetAside``)."""
        records = self.out.open()
        aside = self.out.journal.set_aside
        if aside is not None:
            self.emit(JournalLineSetAside(str(aside.path), aside.offset, aside.bytes))
        return records

    def _report(
        self, outcomes: list[Outcome], budget: Budget, started_wall: str, started: float
    ) -> dict[str, Any]:
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
            cost=budget.cost,
            currency=budget.currency,
            shard=self.settings.shard,
            license=self.manifest.license,
        )
        report = write_outputs(self.settings.out_dir, outcomes, info)
        self.emit(RunFinished(code, report["summary"]))
        return report

    async def _execute(
        self, plan: Plan, outcomes: list[Outcome], budget: Budget, relocations: Relocations
    ) -> None:
        s = self.settings
        steps = plan.steps
        work = [i for i, step in enumerate(steps) if step.action in ACTIVE]
        if not work:  # every job done or kept failed: no client, no transport (httpx unimported)
            return
        self._jobs_ran = True
        _import_httpx()
        import httpx

        from batchvid.admission import Admission
        from batchvid.lifecycle import JobLife
        from batchvid.media import start_pool
        from batchvid.transport import Client

        # Tasks already running on the server go first: they hold server capacity already.
        work.sort(key=lambda i: steps[i].action == "submit")
        timeout = httpx.Timeout(s.http_timeout, connect=min(10.0, s.http_timeout))
        # One transport under both clients: sharing it is safe (batchvid.transport).
        transport = self._transport()
        # The first analysis worker boots while the first creates go out, so no clip waits for
        # it and this process never loads PyAV or numpy on its event loop; started after the
        # transport's imports (aiohttp's ~0.1 s), which a booting worker slowed by ~80 ms on a
        # 2-core machine, and the creates waited for them, not for the worker.
        start_pool()
        async with (
            self._api_client(transport) as api,
            Client(
                transport=transport, timeout=timeout, follow_redirects=True, max_redirects=5
            ) as downloads,
            anyio.create_task_group() as outer,
        ):
            enhanced = any(steps[i].job.enhance is not None for i in work)
            driver = self._driver(api, downloads, budget, relocations, enhanced)
            if s.handle_signals:
                outer.start_soon(self.stopper.watch_signals)
            self.stopper.jobs_scope = anyio.CancelScope()
            # (not under --max-cost: the budget admits jobs as they take their slots, as before)
            early = self.provider.idempotent and s.max_cost is None
            admission = Admission(self.in_flight, budget, self.stopper, s.max_in_flight, early)

            async def job(i: int, slot: Slot) -> None:
                life = JobLife(steps[i].job, outcomes[i], self.out.journal, self.emit, self.scrub,
                               self.out.root)
                await driver.run(steps[i], life, slot)

            with self.stopper.jobs_scope, fewer_collections():
                await admission.start_all(steps, work, job)
            outer.cancel_scope.cancel()
        if self.owns_process:  # every clip analysed: the workers exit while the report is written
            from batchvid.media import shutdown_pool

            self._closing = threading.Thread(target=shutdown_pool, name="batchvid-analysis-close")
            self._closing.start()

    def _transport(self) -> httpx.AsyncBaseTransport | None:
        """The injected transport (simulator, mock), else the one the settings name (None:
        httpx's default, which honours a proxy set in the environment)."""
        if self.transport is not None:
            return self.transport
        from batchvid.transport import transport_for

        return transport_for(self.settings.transport)

    def _api_client(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        """The client of the provider's API root, carrying the key."""
        import httpx

        from batchvid.transport import Client

        s = self.settings
        return Client(
            base_url=s.base_url or self.provider.default_base_url,
            headers={"Authorization": f"Bearer {s.api_key}"},
            transport=transport,
            timeout=httpx.Timeout(s.http_timeout, connect=min(10.0, s.http_timeout)),
        )

    def _enhancer(self, api: httpx.AsyncClient, fx: Effects) -> Enhancer:
        from batchvid.enhancing import Enhancer

        s = self.settings
        return Enhancer(self.provider, api, s.api_key, self.limiter,
                        RetryPolicy(s.retries, rng=self.rng), self.stopper, fx, s.re_enhance)

    async def enhance_only(self) -> list[Rewrite]:
        """``batchvid enhance``: every enhanced job's prompt, rewritten where the next run's
        create is due a rewrite (asked now and journaled) or as the journal holds it. No video
        request is sent; a failed rewrite is that job's ``error``."""
        from batchvid.enhancing import needs_rewrite

        records = self._open()
        rows: list[Rewrite] = []
        try:
            plan = plan_for(self.manifest, self.settings, records)
            fx = Effects(self.emit, self.scrub, self.clock, self.sleep, self.rng)
            async with self._api_client(self._transport()) as api, anyio.create_task_group() as outer:
                if self.settings.handle_signals:
                    outer.start_soon(self.stopper.watch_signals, ENHANCE_STOPPING)
                enhancer = self._enhancer(api, fx)
                for step in plan.steps:
                    if not needs_rewrite(step.job) or self.stopper.reason is not None:
                        continue
                    rows.append(await _rewrite(enhancer, step, self.stopper, self.scrub, self.out.journal))
                outer.cancel_scope.cancel()
        finally:
            # Only journal lines written: the lock is left as found, so after a run that ended
            # cleanly its report still names every job and `clean` can trust it.
            self.out.close(clean=self.out.left_clean, snapshot=not self.stopper.interrupted)
        return rows

    def _driver(
        self,
        api: httpx.AsyncClient,
        downloads: httpx.AsyncClient,
        budget: Budget,
        relocations: Relocations,
        enhanced: bool = True,
    ) -> JobDriver:
        from batchvid.download import Downloader
        from batchvid.drive import JobDriver
        from batchvid.polling import Poller
        from batchvid.submit import Submitter

        s = self.settings
        fx = Effects(self.emit, self.scrub, self.clock, self.sleep, self.rng)
        # Polls and downloads never pay: they are bounded by the job timeout, not by --retries.
        patient = RetryPolicy(max(s.retries, 1000), cap=30.0, rng=self.rng)
        poller = Poller(self.provider, api, self.poll_schedule, patient, fx)
        submitter = Submitter(self.provider, api, s.out_dir, self.limiter, self.in_flight,
                              RetryPolicy(s.retries, rng=self.rng), self.stopper, fx)
        downloader = Downloader(downloads, s.out_dir, poller, patient, fx,
                                max_bytes=s.max_download_bytes, retries=s.retries,
                                strict_media=s.strict_media, qc=self.manifest.qc)
        return JobDriver(submitter, poller, downloader, relocations, budget, self.stopper, fx,
                         timeout=s.timeout, enhancer=self._enhancer(api, fx) if enhanced else None)

