"""Blocking work off the event loop: waited for even by a cancelled caller."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import anyio
import pytest

from batchvid.offload import alongside, off_loop, started


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


@pytest.mark.anyio
async def test_a_rider_whose_hops_wait_is_cancelled_still_runs_and_is_waited_for() -> None:
    """A hop whose waiter is cancelled (``started``'s future, unshielded) still runs the rider
    it took, and ``alongside`` returns only once the rider has run, exactly once."""
    runs: list[str] = []
    release = threading.Event()

    def rider() -> None:
        time.sleep(0.1)
        runs.append("rider")

    async def step() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await started(release.wait, 10)  # takes the rider; the wait is cancelled at once
        assert scope.cancelled_caught and not runs

    await alongside(step, rider)
    release.set()
    assert runs == ["rider"]


@pytest.mark.anyio
async def test_a_rider_on_a_hop_that_raises_keeps_its_own_result() -> None:
    """The hop carrying a rider fails with its own error; the rider ran first and its
    ``alongside`` returns normally."""
    runs: list[str] = []

    def fsync() -> None:
        raise OSError("disk gone")

    async def step() -> None:
        with pytest.raises(OSError, match="disk gone"):
            await off_loop(fsync)
        assert runs == ["rider"]

    await alongside(step, runs.append, "rider")
    assert runs == ["rider"]


@pytest.mark.anyio
async def test_a_cancelled_step_waits_for_its_running_rider_then_is_cancelled() -> None:
    """``step`` cancelled while its rider runs (taken by another task's hop): ``alongside``
    ends only once the rider has finished, then the cancellation goes on; the rider's error
    does not replace it."""
    rider_started, rider_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def rider() -> None:
        rider_started.set()
        time.sleep(0.2)
        rider_done.set()
        raise ValueError("the rider's error")

    async def step() -> None:
        await anyio.sleep(10)

    async def with_rider(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await alongside(step, rider)
            finally:
                seen.append(rider_done.is_set())

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(with_rider, scope)
        await anyio.sleep(0)  # the rider is queued
        tg.start_soon(off_loop, time.sleep, 0)  # another task's hop takes it
        while not rider_started.is_set():
            await anyio.sleep(0.005)
        scope.cancel()
    assert scope.cancelled_caught
    assert seen == [True]


@pytest.mark.anyio
async def test_riders_of_several_steps_on_one_hop_each_come_back_to_their_own() -> None:
    """Three riders taken by one hop all run, in the order they were queued; each
    ``alongside`` gets its own rider's result (one error, two returns)."""
    order: list[int] = []
    results: dict[int, str] = {}
    gate = anyio.Event()

    def rider(n: int) -> None:
        order.append(n)
        if n == 1:
            raise KeyError(n)

    async def one(n: int) -> None:
        async def step() -> None:
            await gate.wait()

        try:
            await alongside(step, rider, n)
        except KeyError:
            results[n] = "raised"
        else:
            results[n] = "returned"

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(one, n)
        await anyio.sleep(0.01)  # all three queued
        await off_loop(time.sleep, 0)  # one hop takes them all
        assert order == [0, 1, 2]
        gate.set()
    assert results == {0: "returned", 1: "raised", 2: "returned"}


@pytest.mark.anyio
async def test_riders_a_hop_took_are_not_lost_when_the_hop_cannot_be_handed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hop that fails to reach a thread (no thread can be started) gives back the riders it
    took: their ``alongside`` still runs them, in a hop of its own, and returns."""
    import batchvid.offload

    runs: list[str] = []
    hand = batchvid.offload._hand

    def no_thread(item: Any) -> None:
        raise RuntimeError("can't start new thread")

    async def step() -> None:
        monkeypatch.setattr(batchvid.offload, "_hand", no_thread)
        try:
            with pytest.raises(RuntimeError, match="new thread"):
                await off_loop(time.sleep, 0)
        finally:
            monkeypatch.setattr(batchvid.offload, "_hand", hand)

    with anyio.fail_after(5):
        await alongside(step, runs.append, "rider")
    assert runs == ["rider"]


def test_a_rider_given_back_while_its_caller_waits_on_another_loop_is_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hop made on one event loop takes the rider of a task on another; the task's step ends
    and it waits for the rider; the hop cannot reach a thread and gives the rider back: the
    waiting task is woken and runs it in a hop of its own (else it would wait for a hop that
    nobody makes)."""
    import batchvid.offload

    hand, wait_on = batchvid.offload._hand, batchvid.offload._Rider.wait_on
    taken, waiting = threading.Event(), threading.Event()
    failures: list[str] = []

    def fails_once(item: Any) -> None:
        if failures:
            return hand(item)
        failures.append("handed")
        taken.set()  # the rider is in this hop's hands
        waiting.wait(10)  # until its task waits for it, on the other loop
        raise RuntimeError("can't start new thread")

    def signalled(self: Any, loop: Any) -> Any:
        future = wait_on(self, loop)
        waiting.set()
        return future

    monkeypatch.setattr(batchvid.offload._Rider, "wait_on", signalled)
    runs: list[str] = []
    errors: list[BaseException] = []

    async def owner() -> None:
        async def step() -> None:
            while not taken.is_set():
                await anyio.sleep(0.005)

        with anyio.fail_after(10):
            await alongside(step, runs.append, "rider")

    def other_loop() -> None:
        try:
            anyio.run(owner)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not batchvid.offload._riders and time.monotonic() < deadline:
            time.sleep(0.005)
        monkeypatch.setattr(batchvid.offload, "_hand", fails_once)
        with pytest.raises(RuntimeError, match="new thread"):
            anyio.run(off_loop, time.sleep, 0)
    finally:
        taken.set()
        thread.join(20)
    assert errors == [] and runs == ["rider"]


@pytest.mark.anyio
async def test_a_step_waiting_for_a_rider_another_hop_runs_holds_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``alongside`` whose rider another task's hop took and still runs waits for it on the
    event loop: no work item of its own is handed to the pool (a thread blocked on the rider
    would be one fewer for the fsyncs), and it returns once the rider has finished."""
    import batchvid.offload

    handed: list[Any] = []
    hand = batchvid.offload._hand

    def counted(item: Any) -> None:
        handed.append(item[2])
        hand(item)

    monkeypatch.setattr(batchvid.offload, "_hand", counted)
    rider_started, rider_done = threading.Event(), threading.Event()

    def rider() -> None:
        rider_started.set()
        time.sleep(0.2)
        rider_done.set()

    async def step() -> None:
        with anyio.fail_after(10):
            while not rider_started.is_set():
                await anyio.sleep(0.005)

    returned_after: list[bool] = []

    async def with_rider() -> None:
        await alongside(step, rider)
        returned_after.append(rider_done.is_set())

    async with anyio.create_task_group() as tg:
        tg.start_soon(with_rider)
        await anyio.sleep(0)  # the rider is queued
        tg.start_soon(off_loop, time.sleep, 0)  # another task's hop takes it
    assert returned_after == [True]
    assert handed == [batchvid.offload._carrying]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_forked_child_starts_a_pool_of_its_own() -> None:
    """A child made by ``os.fork`` after the pool started (its threads idle, so the parent has
    idle tokens) gets its work done by threads of its own, not handed to the parent's threads,
    which do not exist in the child."""
    anyio.run(off_loop, time.sleep, 0)  # the pool has a thread, idle
    pid = os.fork()
    if pid == 0:  # the child: exit 0 once its hop is done, killed by the alarm if it hangs
        code = 1
        try:
            signal.alarm(10)
            code = 0 if anyio.run(off_loop, int, "7") == 7 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.anyio
async def test_a_rider_that_ended_just_before_its_caller_waits_is_not_waited_for() -> None:
    """The caller that found the rider taken (``_finished``) asks to be woken when it ends:
    if it ended in between (its hop's thread was quicker), nothing is left to wake it, so the
    caller is told at once and does not wait (no lost wake-up)."""
    import asyncio

    from batchvid.offload import _Rider

    rider = _Rider(int, ("7",))
    pending = rider.wait_on(asyncio.get_running_loop())
    assert pending is not None and not pending.done()
    await anyio.to_thread.run_sync(rider.run)
    with anyio.fail_after(5):
        await pending  # woken by run
    assert rider.wait_on(asyncio.get_running_loop()) is None
    assert rider.outcome == (True, 7)
