"""When to poll a task: learn how long this batch's tasks take, and poll where they end.

A finished task holds its in-flight slot until a poll sees it, so polling late costs throughput
and polling early costs requests. Durations are learned per kind of task (``task_kind``: model
and generation parameters; a 10-second video takes longer than a 5-second one). Until
``MIN_SAMPLES`` tasks of a kind have finished, polls start at ``poll_min`` and back off by half
each time up to ``poll_max``. After that, a new task sleeps until just before the early
finishers (the floor, below the ``LOW`` quantile of the observed durations), and each next poll
is placed where about ``HAZARD`` of the tasks still running at the last one have ended: dense
where tasks end, sparse where few do. Past the late finishers (the ``HIGH`` quantile) polls
back off again, from ``poll_min``. No sleep after the floor is below ``poll_min`` or above
``poll_max``: a long or odd task is never polled less often than every ``poll_max``.

Why a share of the tasks still running: a poll costs a request only while the task runs, and a
late poll costs only the tasks that ended since the one before. Spacing polls by that share
(wide early, when most tasks are still far from done; tighter as the survivors near the end) is
near the best trade between the two: for durations spread evenly and known, it sees a task end
~10 % sooner than evenly spaced polls at the same number of requests. The share sets the trade:
``tests/benchmarks/model_race.py`` shows the race's wall time and polls for other values.

A duration is observed when a poll sees the task end, so it is an upper bound: a task that ended
before its first poll is seen at that poll. The floor is therefore kept one spacing below the
``LOW`` quantile of what was seen, and further below while few tasks have been seen (by a share
2/n of it, n the tasks seen), so a floor learned too high from a few long first tasks does not
hold itself up.
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
LOW, HIGH = 0.05, 0.95
"""The quantiles of the observed durations that bound where polls follow them."""
HAZARD = 0.07
"""The share of the tasks still running at one poll that have ended by the next."""
JITTER = 0.1
"""A sleep is shortened by up to this share of the spacing: polls of tasks created together
spread out, and a poll is only ever made earlier."""


def task_kind(job: Job) -> Hashable:
    """What a task's duration depends on: its provider, model and generation parameters (the
    prompt aside), and whether it starts from an image."""
    params = tuple(repr(job.params.get(name)) for name in GENERATION_PARAMETERS if name != "prompt")
    return (job.provider, params, job.image is not None)


@dataclass(frozen=True)
class Durations:
    """The observed durations of one kind of task, sorted, as a distribution."""

    ordered: Sequence[float]

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated between neighbouring observations."""
        at = min(max(q, 0.0), 1.0) * (len(self.ordered) - 1)
        below = math.floor(at)
        above = min(below + 1, len(self.ordered) - 1)
        return self.ordered[below] + (self.ordered[above] - self.ordered[below]) * (at - below)

    def share_below(self, seconds: float) -> float:
        """The share of tasks ended ``seconds`` after their create (``quantile``'s inverse)."""
        ordered, n = self.ordered, len(self.ordered)
        i = bisect.bisect_right(ordered, seconds)
        if i == 0:
            return 0.0
        if i == n:
            return 1.0
        return (i - 1 + (seconds - ordered[i - 1]) / (ordered[i] - ordered[i - 1])) / (n - 1)

    @property
    def floor(self) -> float:
        """No poll before this (module doc)."""
        low = self.quantile(LOW)
        first_spacing = self.quantile(LOW + HAZARD) - low
        return max(0.0, min(low - first_spacing, low * (1 - 2 / len(self.ordered))))


class PollSchedule:
    def __init__(self, poll_min: float, poll_max: float) -> None:
        self.poll_min = poll_min
        self.poll_max = poll_max
        self._seen: dict[Hashable, deque[float]] = {}

    def observe(self, seconds: float, kind: Hashable = None) -> None:
        """A task of this run finished ``seconds`` after it was created (as seen by polling)."""
        self._seen.setdefault(kind, deque(maxlen=SAMPLES)).append(seconds)

    def durations(self, kind: Hashable = None) -> Durations | None:
        """What was learned of tasks of ``kind``, or None before ``MIN_SAMPLES`` of them."""
        seen = self._seen.get(kind, ())
        return Durations(sorted(seen)) if len(seen) >= MIN_SAMPLES else None

    def delays(self, kind: Hashable = None, rng: random.Random | None = None) -> _Delays:
        """The sleeps before each poll of one new task of ``kind``; ``rng`` jitters them."""
        return _Delays(self, self.durations(kind), rng)


class _Delays:
    def __init__(self, schedule: PollSchedule, learned: Durations | None, rng: random.Random | None) -> None:
        self.poll_min, self.poll_max = schedule.poll_min, schedule.poll_max
        self.learned = learned
        self.rng = rng
        self.interval = schedule.poll_min

    def next(self, elapsed: float) -> float:
        """How long to sleep before the next poll, ``elapsed`` seconds after the create
        (``math.inf`` when the task's age is unknown)."""
        delay, spacing = self._planned(elapsed)
        if self.rng is not None:
            delay -= self.rng.uniform(0, JITTER * min(delay, spacing))
        return delay

    def _planned(self, elapsed: float) -> tuple[float, float]:
        """The sleep without jitter, and the spacing of polls it belongs to."""
        d = self.learned
        if d is not None:
            floor = d.floor
            if elapsed + self.poll_min < floor:
                return floor - elapsed, self._spacing(d, floor)
            if elapsed < d.quantile(HIGH):
                spacing = self._spacing(d, elapsed)
                return spacing, spacing
        delay = self.interval
        self.interval = min(self.poll_max, self.interval * BACKOFF)
        return delay, delay

    def _spacing(self, d: Durations, elapsed: float) -> float:
        """From ``elapsed`` to where ``HAZARD`` of the tasks running then have ended, within
        ``poll_min`` and ``poll_max``."""
        ended = d.share_below(elapsed)
        until = d.quantile(ended + HAZARD * (1 - ended))
        return min(self.poll_max, max(self.poll_min, until - elapsed))


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
        failures = 0
        while True:
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
            return task

    async def wait(
        self, job_id: str, task: TaskResult, created_at: float | None, kind: Hashable = None
    ) -> TaskResult:
        """Poll until the task ends. ``created_at`` is None for a task created by an earlier
        run: its age is unknown, so it is polled on the plain backoff and teaches nothing.
        ``kind`` (``task_kind``) says which tasks' durations to learn from."""
        delays = self.schedule.delays(kind, self.fx.rng)
        while task.status == "running":
            elapsed = math.inf if created_at is None else self.fx.clock() - created_at
            await self.fx.sleep(delays.next(elapsed))
            task = await self.poll(job_id, task.task_id)
        if created_at is not None:
            self.schedule.observe(self.fx.clock() - created_at, kind)
        return task
