"""When to poll a task: learn how long this batch's tasks take, and poll where they end.

A finished task holds its in-flight slot until a poll sees it, so polling late costs throughput
and polling early costs requests. Durations are learned per kind of task (``task_kind``: model
and generation parameters; a 10-second video takes longer than a 5-second one). Until
``MIN_SAMPLES`` tasks of a kind have finished, polls start at ``poll_min`` and back off by half
each time up to ``poll_max``. After that, every new task of the kind follows one plan of poll
times, made from the learned durations (``Durations.plan``):

- each poll is followed by the next one at the spacing ``d`` where the share of tasks ending in
  between (``E``) times ``d`` is twice the share still running (``S``) times what a poll is
  worth in waiting (``w``: ``POLL_COST`` of the median duration): ``E d = 2 S w``. Where tasks
  end at a steady rate ``f`` (``E = f d``) that is ``d = sqrt(2 S w / f)``, the spacing that
  minimises the polls (``S / d`` per second) plus the waiting between a task's end and the poll
  that sees it, counted in polls (``f d / 2`` per second, over ``w``): sparse where few tasks
  end or most are long done, dense where many end;
- the first poll comes where the tasks ended before it are as many as end in the spacing after
  it: a poll before the early finishers is wasted, one long after them keeps them waiting;
- none is closer to the one before than ``poll_min`` or further than ``poll_max``, so a long or
  odd task is never polled less often than every ``poll_max``; past the plan's last poll (the
  longest task seen) polls back off again from ``poll_min``. Spacings run from one poll's
  sending to the next's: the wait for an answer counts toward them (on a busy machine, a poll
  that took 20 ms to answer is not followed by a full ``poll_min`` of sleep on top).

A duration is learned as a span: the task ended after the last poll that saw it running and by
the one that saw it end, so it is spread over that span. A task seen ended at its first poll
ended before it: its span reaches one spacing back, so if the first poll comes too late the
tasks it sees pull it earlier. The first poll is also kept below the ``FIRST`` quantile by a
share 2/n of it (n the tasks seen): a plan learned from a few long first tasks does not hold
itself up. ``tests/benchmarks/model_race.py`` shows the race's wall time and polls for other
values of ``POLL_COST``.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import httpx

from batchvid.errors import TransientError
from batchvid.events import Effects, JobPolled, JobRetrying
from batchvid.jobs import GENERATION_PARAMETERS, Job
from batchvid.providers.base import Provider, TaskResult
from batchvid.retry import RetryPolicy

SAMPLES = 64
"""Durations remembered per kind: recent tasks say the most about the next ones."""
MIN_SAMPLES = 4
BACKOFF = 1.5
POLL_COST = 1 / 200
"""What a poll is worth in waiting, as a share of the median task duration (0.6 s for tasks of
two minutes): the schedule adds a poll where it brings the ends it sees that much sooner."""
FIRST = 0.1
"""The quantile of the learned durations below which the first poll is kept (module doc)."""
JITTER = 0.1
"""A sleep is shortened by up to this share of the spacing: polls of tasks created together
spread out, and a poll is only ever made earlier."""


def task_kind(job: Job) -> Hashable:
    """What a task's duration depends on: its provider, model and generation parameters (the
    prompt aside), and whether it starts from an image."""
    params = tuple(repr(job.params.get(name)) for name in GENERATION_PARAMETERS if name != "prompt")
    return (job.provider, params, job.image is not None)


@dataclass(frozen=True)
class Span:
    """One task's end, known to lie after ``low`` and by ``high`` seconds after its create."""

    low: float
    high: float


class Durations:
    """The learned durations of one kind of task as a distribution: each span spread evenly
    over its length, so the share ended by a time is piecewise linear in it."""

    def __init__(self, spans: Sequence[Span]) -> None:
        n = len(spans)
        slopes: dict[float, float] = {}
        for span in spans:
            width = max(span.high - span.low, 1e-9)
            low = span.high - width
            slopes[low] = slopes.get(low, 0.0) + 1 / (n * width)
            slopes[span.high] = slopes.get(span.high, 0.0) - 1 / (n * width)
        self.times = sorted(slopes)
        self.shares: list[float] = []
        share = slope = 0.0
        before = self.times[0]
        for at in self.times:
            share += slope * (at - before)
            self.shares.append(min(share, 1.0))
            slope += slopes[at]
            before = at
        self.shares[-1] = 1.0
        self.count = n
        self.median = self.quantile(0.5)

    def share_below(self, seconds: float) -> float:
        """The share of tasks ended ``seconds`` after their create."""
        times, shares = self.times, self.shares
        i = bisect.bisect_right(times, seconds)
        if i == 0:
            return 0.0
        if i == len(times):
            return 1.0
        return shares[i - 1] + (shares[i] - shares[i - 1]) * (seconds - times[i - 1]) / (times[i] - times[i - 1])

    def quantile(self, q: float) -> float:
        """The time by which a share ``q`` of tasks had ended (``share_below``'s inverse)."""
        times, shares = self.times, self.shares
        i = bisect.bisect_left(shares, min(max(q, 0.0), 1.0))
        if i == 0:
            return times[0]
        if i == len(times):
            return times[-1]
        rise = shares[i] - shares[i - 1]
        return times[i - 1] + (times[i] - times[i - 1]) * ((q - shares[i - 1]) / rise if rise > 0 else 0.0)

    def spacing(self, at: float, poll_min: float, poll_max: float) -> float:
        """From a poll ``at`` seconds to the next (module doc), within ``poll_min`` and
        ``poll_max``: where the share of tasks ending in between, times the spacing, is twice
        the share still running times what a poll is worth in waiting."""
        ended = self.share_below(at)
        target = 2 * (1 - ended) * POLL_COST * self.median

        def weight(spacing: float) -> float:
            return spacing * (self.share_below(at + spacing) - ended)

        if weight(poll_max) <= target:
            return poll_max
        if weight(poll_min) >= target:
            return poll_min
        low, high = poll_min, poll_max  # weight(low) < target <= weight(high)
        for _ in range(12):
            middle = (low + high) / 2
            low, high = (middle, high) if weight(middle) < target else (low, middle)
        return high

    def plan(self, poll_min: float, poll_max: float) -> list[float]:
        """The poll times of a new task, in seconds after its create (module doc)."""
        start, end = self.times[0], self.times[-1]
        step = max(poll_min / 4, (end - start) / 200)
        first = start
        while first < end:
            after = self.spacing(first, poll_min, poll_max)
            if self.share_below(first) >= self.share_below(first + after) - self.share_below(first):
                break
            first += step
        first = max(0.0, min(first, self.quantile(FIRST) * (1 - 2 / self.count)))
        times = [first]
        while times[-1] < end:
            after = times[-1] + self.spacing(times[-1], poll_min, poll_max)
            times.append(after if after <= end else max(end, times[-1] + poll_min))
        return times


class _Learned:
    """What is known of one kind of task: recent spans, and the plan made from them."""

    def __init__(self) -> None:
        self.spans: deque[Span] = deque(maxlen=SAMPLES)
        self.plan: list[float] | None = None
        self.fresh = 0
        """Spans added since the plan was made."""


class PollSchedule:
    def __init__(self, poll_min: float, poll_max: float) -> None:
        self.poll_min = poll_min
        self.poll_max = poll_max
        self._kinds: dict[Hashable, _Learned] = {}

    def observe(self, seconds: float, kind: Hashable = None, running: float | None = None) -> None:
        """A task of this run was seen ended ``seconds`` after its create, having been seen
        running ``running`` seconds after it (None: the first poll saw it ended)."""
        learned = self._kinds.setdefault(kind, _Learned())
        if running is None:  # ended before its first poll: one spacing back (module doc)
            plan = learned.plan
            running = seconds - (plan[1] - plan[0] if plan is not None and len(plan) > 1 else self.poll_min)
        learned.spans.append(Span(max(0.0, min(running, seconds)), seconds))
        learned.fresh += 1

    def durations(self, kind: Hashable = None) -> Durations | None:
        """What was learned of tasks of ``kind``, or None before ``MIN_SAMPLES`` of them."""
        learned = self._kinds.get(kind)
        if learned is None or len(learned.spans) < MIN_SAMPLES:
            return None
        return Durations(learned.spans)

    def plan(self, kind: Hashable = None) -> list[float] | None:
        """The poll times of a new task of ``kind`` (``Durations.plan``), remade once an
        eighth of the spans it came from are new; None before ``MIN_SAMPLES`` tasks."""
        learned = self._kinds.get(kind)
        if learned is None or len(learned.spans) < MIN_SAMPLES:
            return None
        if learned.plan is None or learned.fresh >= max(1, len(learned.spans) // 8):
            learned.plan = Durations(learned.spans).plan(self.poll_min, self.poll_max)
            learned.fresh = 0
        return learned.plan

    def delays(self, kind: Hashable = None, rng: random.Random | None = None) -> _Delays:
        """The sleeps before each poll of one new task of ``kind``; ``rng`` jitters them."""
        return _Delays(self, self.plan(kind), rng)


class _Delays:
    def __init__(self, schedule: PollSchedule, plan: Sequence[float] | None, rng: random.Random | None) -> None:
        self.poll_min, self.poll_max = schedule.poll_min, schedule.poll_max
        self.plan = plan
        self.rng = rng
        self.interval = schedule.poll_min
        self.step = 0
        """The index in ``plan`` of the next poll."""

    def next(self, elapsed: float, since: float = 0.0) -> float:
        """How long to sleep before the next poll, ``elapsed`` seconds after the create
        (``math.inf`` when the task's age is unknown) and ``since`` seconds after the last poll
        was sent: spacings are from one poll's sending to the next, so the wait for its answer
        counts toward them (the jitter still shortens a spacing by up to ``JITTER``)."""
        delay, spacing = self._planned(elapsed, since)
        if self.rng is not None:
            delay -= self.rng.uniform(0, JITTER * min(delay, spacing))
        return max(delay, 0.0)

    def _planned(self, elapsed: float, since: float) -> tuple[float, float]:
        """The sleep without jitter, and the spacing of polls it belongs to."""
        plan = self.plan
        floor = self.poll_min - since
        if plan is not None and elapsed < plan[-1]:
            i = max(self.step, bisect.bisect_right(plan, elapsed))
            if i < len(plan):
                self.step = i + 1
                if i == 0:  # until the first poll
                    return max(plan[0] - elapsed, floor), self.poll_min
                spacing = min(self.poll_max, max(self.poll_min, plan[i] - plan[i - 1]))
                return min(self.poll_max - since, max(floor, plan[i] - elapsed)), spacing
        delay = self.interval
        self.interval = min(self.poll_max, self.interval * BACKOFF)
        return delay - since, delay


@dataclass
class Poller:
    """Asks the provider how a task is doing, retrying failed polls (they never pay: bounded
    by the job's timeout, not by ``--retries``), and waits for a task to end."""

    provider: Provider
    api: httpx.AsyncClient
    schedule: PollSchedule
    policy: RetryPolicy
    fx: Effects

    async def poll(self, job_id: str, task_id: str) -> TaskResult:
        task, _ = await self._poll(job_id, task_id)
        return task

    async def _poll(self, job_id: str, task_id: str) -> tuple[TaskResult, float]:
        """``poll``, and when its last attempt was sent."""
        failures = 0
        while True:
            sent = self.fx.clock()
            try:
                task = await self.provider.poll(self.api, task_id)
            except TransientError as exc:
                failures += 1
                delay = self.policy.delay(failures, exc)
                if delay is None:
                    raise
                self.fx.emit(JobRetrying(job_id, "poll", failures, delay, str(exc)))
                await self.fx.sleep(delay)
                continue
            self.fx.emit(JobPolled(job_id, task_id, task.provider_status or task.status))
            return task, sent

    async def wait(
        self, job_id: str, task: TaskResult, created_at: float | None, kind: Hashable = None
    ) -> TaskResult:
        """Poll until the task ends. ``created_at`` is None for a task created by an earlier
        run: its age is unknown, so it is polled on the plain backoff and teaches nothing.
        ``kind`` (``task_kind``) says which tasks' durations to learn from."""
        delays = self.schedule.delays(kind, self.fx.rng)
        running: float | None = None  # when a poll last saw it running, after the create
        sent: float | None = None  # when the last poll was sent
        while task.status == "running":
            now = self.fx.clock()
            elapsed = math.inf if created_at is None else now - created_at
            await self.fx.sleep(delays.next(elapsed, 0.0 if sent is None else now - sent))
            task, sent = await self._poll(job_id, task.task_id)
            if task.status == "running" and created_at is not None:
                running = sent - created_at
        if created_at is not None:
            self.schedule.observe(self.fx.clock() - created_at, kind, running)
        return task
