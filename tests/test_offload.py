"""Blocking work off the event loop: waited for even by a cancelled caller."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from batchvid.offload import alongside, off_loop


@pytest.mark.anyio
async def test_a_cancelled_caller_returns_only_after_the_work_finished() -> None:
    """Cancelling the caller while the worker runs neither abandons nor interrupts the work:
    the caller resumes once it has finished, then sees the cancellation."""
    finished = threading.Event()
    resumed_after: list[bool] = []

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    async def caller() -> None:
        assert await off_loop(slow) == "done"
        resumed_after.append(finished.is_set())
        await anyio.sleep(1)  # the cancellation is delivered here
        resumed_after.append(False)  # not reached

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert resumed_after == [True]


@pytest.mark.anyio
async def test_the_workers_error_is_raised_in_the_caller() -> None:
    """An exception of the function comes out of ``off_loop`` as it is, with its arguments used."""

    def fail(name: str) -> None:
        raise FileNotFoundError(name)

    with pytest.raises(FileNotFoundError, match="video.mp4"):
        await off_loop(fail, "video.mp4")


@pytest.mark.anyio
async def test_work_handed_at_once_runs_in_as_many_threads_at_once() -> None:
    """Four calls waiting on each other each get a thread of their own (none queues behind
    another): a barrier of four is passed."""
    barrier = threading.Barrier(4, timeout=10)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(off_loop, barrier.wait)
    assert not barrier.broken


@pytest.mark.anyio
async def test_a_rider_runs_in_the_next_hops_thread_before_its_work() -> None:
    """``alongside``'s function is done by the next ``off_loop`` call its step makes, in the
    same worker thread and before that call's function, not in a thread hop of its own."""
    ran: list[tuple[str, int]] = []

    def rider() -> None:
        ran.append(("rider", threading.get_ident()))

    def fsync() -> None:
        ran.append(("fsync", threading.get_ident()))

    async def step() -> None:
        await off_loop(fsync)

    await alongside(step, rider)
    assert [what for what, _ in ran] == ["rider", "fsync"]
    assert ran[0][1] == ran[1][1] != threading.get_ident()


@pytest.mark.anyio
async def test_a_rider_no_hop_took_runs_once_its_step_ends() -> None:
    """A step that makes no ``off_loop`` call: the rider runs in a worker thread after it, and
    ``alongside`` returns once it has."""
    order: list[str] = []

    async def step() -> None:
        await anyio.sleep(0.01)
        order.append("step")

    def rider() -> None:
        assert threading.current_thread() is not threading.main_thread()
        order.append("rider")

    await alongside(step, rider)
    assert order == ["step", "rider"]


@pytest.mark.anyio
async def test_a_rider_taken_by_another_callers_hop_is_waited_for() -> None:
    """When another task's ``off_loop`` call takes the rider, ``alongside`` returns only once
    the rider has finished, though its own step ended while the rider still ran."""
    started = threading.Event()
    finished = threading.Event()
    step_ended_first: list[bool] = []
    done_when_returned: list[bool] = []

    def rider() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    async def step() -> None:
        with anyio.fail_after(10):
            while not started.is_set():  # the other task's hop took the rider and runs it
                await anyio.sleep(0.005)
        step_ended_first.append(not finished.is_set())

    async def with_rider() -> None:
        await alongside(step, rider)
        done_when_returned.append(finished.is_set())

    async with anyio.create_task_group() as tg:
        tg.start_soon(with_rider)
        await anyio.sleep(0)  # the rider is queued
        tg.start_soon(off_loop, time.sleep, 0)
    assert step_ended_first == [True]
    assert done_when_returned == [True]


@pytest.mark.anyio
async def test_a_riders_error_comes_out_of_alongside_not_out_of_the_hop_that_ran_it() -> None:
    """The hop that carried a failing rider returns its own result; ``alongside`` raises the
    rider's error once its step is done."""
    results: list[str] = []

    def rider() -> None:
        raise PermissionError("jobs/ is read-only")

    async def step() -> None:
        results.append(await off_loop(str, "synced"))

    with pytest.raises(PermissionError, match="read-only"):
        await alongside(step, rider)
    assert results == ["synced"]
