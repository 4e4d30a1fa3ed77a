"""Blocking file work (fsync, rename, small writes) off the event loop, on the run's hot paths.

``off_loop(fn, *args)`` runs ``fn`` in a worker thread and waits for it even when the caller is
cancelled, as ``anyio.to_thread.run_sync`` does by default (the cancellation is seen after, at
the caller's next checkpoint): a commit is done or not begun, never abandoned halfway. It costs
about half of ``run_sync``'s CPU per call (no capacity limiter, no per-call cancel scope of its
own besides the shield), which a job pays five or more times. The pool grows to ``WORKERS``
threads, enough for every job in flight to fsync at once (the kernel batches concurrent fsyncs
into one journal commit). ``alongside(step, fn, *args)`` runs a coroutine and a worker thread's
work side by side (a create's turn and its ``request.json``) without a task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

T = TypeVar("T")

WORKERS = 32
_pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="batchvid-io")


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread; returns its result or raises its error, once it has
    finished, whatever happens to the caller meanwhile."""
    future = _pool.submit(fn, *args)
    with anyio.CancelScope(shield=True):
        result = await asyncio.wrap_future(future)
    return result


async def alongside(step: Callable[[], Awaitable[object]], fn: Callable[..., object], *args: object) -> None:
    """Await ``step()`` on the event loop while ``fn(*args)`` runs in a worker thread; return
    once both have ended. ``step``'s error comes out first, as it is (once ``fn`` has ended
    too); else ``fn``'s. No task group: one create pays this."""
    future = asyncio.wrap_future(_pool.submit(fn, *args))
    try:
        await step()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await asyncio.wait([future])  # ends with fn, without raising its error
        if not future.cancelled():
            future.exception()  # seen, and set aside for step's
        raise
    with anyio.CancelScope(shield=True):
        await future
