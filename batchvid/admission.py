"""Which job starts when: the run's jobs started in order, each once it may.

``Admission.start_all`` starts one task per job of the run's work list, in that order, each
once its place is free: a place among the jobs under way (``LIVE_AHEAD`` beyond the in-flight
cap), then, for a job that pays, the budget's consent, then its in-flight slot (``drive.Slot``,
held from the create until the task ends). On a provider that refuses a duplicate create, new
jobs take a place among the ``SUBMIT_AHEAD`` ones instead of waiting for their slot here: they
journal their create while they wait for it (``drive.Ahead``). A stop ends the admissions.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from batchvid.budget import Budget
from batchvid.drive import Ahead, Slot
from batchvid.plan import Step
from batchvid.ratelimit import AdaptiveLimit
from batchvid.stopping import Stopper

LIVE_AHEAD = 128
"""How many jobs past their task (downloading, analysing) may be under way beside the
``--max-in-flight`` ones before the next job waits to start. Without a bound, a run whose
tasks end faster than their videos are fetched and analysed (the simulator at latency 0)
piles up finished tasks, ~14 KB each (their answers, frames, buffers): half of a 100,000-job
run at once, and the process's memory never shrinks back. 128 is more than the transport's
100 connections, so the bound holds new jobs back only while finished ones queue for the
analysis or the disk, which then set the run's pace anyway."""


SUBMIT_AHEAD = 8
"""New jobs that may journal their create (``submitting``, durable before it is sent) while they
wait for an in-flight slot, so it leaves the moment one frees, on a provider that refuses a
duplicate by its idempotency key (BigModel): a stop or kill meanwhile leaves such a line with
no create sent, which the next run sends under the same request id. Not on GeekAI, nor under
``--max-cost``, nor for an enhanced job (its rewrite asked after its slot, within --timeout)."""


async def _take(places: anyio.Semaphore) -> None:
    """A place (without a checkpoint when one is free)."""
    try:
        places.acquire_nowait()
    except anyio.WouldBlock:
        await places.acquire()


@dataclass
class Admission:
    in_flight: AdaptiveLimit
    budget: Budget
    stopper: Stopper
    max_in_flight: int
    early: bool
    """New jobs may journal their create ahead of their slot (``SUBMIT_AHEAD``)."""

    async def start_all(
        self, steps: Sequence[Step], work: Sequence[int], job: Callable[[int, Slot], Coroutine[Any, Any, None]]
    ) -> None:
        """``job(i, slot)`` for each index ``i`` of ``work`` (into ``steps``), in that order,
        each in its own task once it may start; returns once every started job has ended."""
        live = anyio.Semaphore(self.max_in_flight + LIVE_AHEAD)
        ahead = Ahead(SUBMIT_AHEAD) if self.early else None
        async with anyio.create_task_group() as tg:
            for i in work:
                step = steps[i]
                await _take(live)
                early = ahead if step.action == "submit" else None
                if early is not None:
                    await _take(early.places)
                slot = await self._admit(step, live, early)
                if slot is None:
                    live.release()
                    if early is not None:
                        early.places.release()
                    if self.stopper.halted:
                        break
                    continue  # over budget: later free jobs still start
                tg.start_soon(job, i, slot)

    async def _admit(self, step: Step, live: anyio.Semaphore, ahead: Ahead | None = None) -> Slot | None:
        """The job's in-flight slot once it may start (with ``ahead``, its place taken: to be
        taken by the job), or None: over budget (later free jobs still may) or stopping."""
        if step.pays:
            why = self.budget.admit(step.job)
            if why is not None:
                self.stopper.stop("budget", why, halt=False)
                return None
            if self.stopper.halted:
                return None
        if ahead is not None:
            return Slot(self.in_flight, False, live, ahead)
        holds_slot = step.action != "download"
        if holds_slot:
            await self.in_flight.acquire()
        if self.stopper.halted and step.pays:
            if holds_slot:
                self.in_flight.release()
            return None
        return Slot(self.in_flight, holds_slot, live)
