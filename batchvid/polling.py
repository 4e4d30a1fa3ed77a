"""When to poll a task: learn how long this batch's tasks take, and poll around that.

A finished task holds its in-flight slot until the next poll sees it, so polling late costs
throughput and polling early costs requests. Before any task of the run has finished, polls
start at ``poll_min`` and back off by half each time up to ``poll_max``. Once a few tasks have
finished, a new task sleeps until the early part of the observed durations (the 10th
percentile), polls every ``poll_min`` until the late part (the 90th), and only then backs off.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import httpx

from batchvid.errors import TransientError
from batchvid.events import Effects, JobPolled, JobRetrying
from batchvid.providers.base import Provider, TaskResult
from batchvid.retry import RetryPolicy

SAMPLES = 64
"""Durations remembered: recent tasks say the most about the next ones."""
MIN_SAMPLES = 4
BACKOFF = 1.5


class PollSchedule:
    def __init__(self, poll_min: float, poll_max: float) -> None:
        self.poll_min = poll_min
        self.poll_max = poll_max
        self._recent: deque[float] = deque(maxlen=SAMPLES)

    def observe(self, seconds: float) -> None:
        """A task of this run finished ``seconds`` after it was created (as seen by polling)."""
        self._recent.append(seconds)

    def _quantile(self, q: float) -> float | None:
        if len(self._recent) < MIN_SAMPLES:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def delays(self) -> _Delays:
        """The sleeps before each poll of one new task."""
        return _Delays(self)


class _Delays:
    def __init__(self, schedule: PollSchedule) -> None:
        self.schedule = schedule
        self.interval = schedule.poll_min

    def next(self, elapsed: float) -> float:
        """How long to sleep before the next poll, ``elapsed`` seconds after the create."""
        s = self.schedule
        early, late = s._quantile(0.1), s._quantile(0.9)
        if early is not None and late is not None:
            if elapsed + s.poll_min < early:
                return early - elapsed
            if elapsed < late:
                return s.poll_min
        delay = self.interval
        self.interval = min(s.poll_max, self.interval * BACKOFF)
        return delay




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

    async def wait(self, job_id: str, task: TaskResult, created_at: float | None) -> TaskResult:
        """Poll until the task ends. ``created_at`` is None for a task created by an earlier
        run: its age is unknown, so it is polled on the plain backoff and teaches nothing."""
        delays = self.schedule.delays()
        while task.status == "running":
            elapsed = math.inf if created_at is None else self.fx.clock() - created_at
            # Jitter spreads the polls of tasks created together, and only ever makes a poll
            # earlier: a finished task holds its in-flight slot until a poll sees it.
            await self.fx.sleep(delays.next(elapsed) * self.fx.rng.uniform(0.8, 1.0))
            task = await self.poll(job_id, task.task_id)
        if created_at is not None:
            self.schedule.observe(self.fx.clock() - created_at)
        return task
