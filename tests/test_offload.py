"""Blocking work off the event loop: waited for even by a cancelled caller."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from batchvid.offload import off_loop


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
