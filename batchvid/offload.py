"""Blocking file work (fsync, rename, small writes) off the event loop, on the run's hot paths.

``off_loop(fn, *args)`` runs ``fn`` in a worker thread and waits for it even when the caller is
cancelled, as ``anyio.to_thread.run_sync`` does by default (the cancellation is seen after, at
the caller's next checkpoint): a commit is done or not begun, never abandoned halfway. A job
pays several of these hops, so each is lean: a queue of work items read by this module's own
threads, which hand the answer back to the waiting event loop (``call_soon_threadsafe``) with
no ``concurrent.futures`` future in between, no capacity limiter, no cancel scope besides the
shield (about half of a ``ThreadPoolExecutor`` hop's CPU, a quarter of ``run_sync``'s). Threads
are started as work finds none idle, up to ``WORKERS``: enough for every job in flight to fsync
at once (the kernel batches concurrent fsyncs into one journal commit).

``alongside(step, fn, *args)`` runs a coroutine while ``fn(*args)`` is done off the event loop
(a create's journal line and its ``request.json``), without a task group and without a hop of
its own: ``fn`` rides on the next ``off_loop`` call, whoever makes it (``step``'s own fsync, as a
rule), and runs in that call's worker thread before its function. A step that ends while
another task's hop still runs its rider waits for it on the event loop (the rider wakes it as
it ends), not in a worker thread of its own.

A child process made by ``os.fork`` after the pool started has none of its threads: it starts
with an empty pool, queue and rider list of its own (``os.register_at_fork``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from queue import SimpleQueue
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

WORKERS = 32

_Work = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[object, ...]]
_work: SimpleQueue[_Work] = SimpleQueue()
_idle: list[None] = []
"""One token per thread that finished its work item and waits for the next (``pop`` and
``append`` are atomic: no lock on the hop's path)."""
_threads: list[threading.Thread] = []
_starting = threading.Lock()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _worker() -> None:
    get = _work.get
    while True:
        loop, future, fn, args = get()
        try:
            value, ok = fn(*args), True
        except BaseException as exc:
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop was closed: nobody waits any more
            pass
        del loop, future, fn, args, value  # nothing held while idle
        _idle.append(None)


def _hand(item: _Work) -> None:
    """Queue ``item`` for an idle thread, or one started for it (up to ``WORKERS``)."""
    try:
        _idle.pop()
    except IndexError:
        with _starting:
            if len(_threads) < WORKERS:
                # Daemon: a hop still running at exit (no caller left to wait: the event loop
                # is gone) is cut as a crash would cut it, which every write here survives.
                thread = threading.Thread(target=_worker, name=f"batchvid-io_{len(_threads)}", daemon=True)
                thread.start()
                _threads.append(thread)
    _work.put(item)


class _Rider:
    """Work waiting for the next hop (``alongside``): taken off ``_riders`` by one ``off_loop``
    call, or by its own caller when no hop took it. ``finished`` once it has run; a caller
    that waits for it meanwhile leaves its future in ``waiter``, which ``run`` settles."""

    __slots__ = ("_lock", "args", "finished", "fn", "outcome", "waiter")

    def __init__(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        self.fn, self.args = fn, args
        self.outcome: tuple[bool, Any] = (True, None)
        self.finished = False
        self.waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        """``fn(*args)``, its result or error kept in ``outcome`` (never raised here); then
        the waiting caller, if any, is woken."""
        try:
            self.outcome = (True, self.fn(*self.args))
        except BaseException as exc:
            self.outcome = (False, exc)
        finally:
            with self._lock:
                self.finished = True
                waiter, self.waiter = self.waiter, None
            if waiter is not None:
                _wake(waiter)

    def wait_on(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future of ``loop`` that ``run`` sets once it has ended (or ``given_back``
        sets first); None when it has ended."""
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.finished:
                return None
            self.waiter = (loop, future)
        return future

    def given_back(self) -> None:
        """The hop that took it could not reach a thread and put it back on ``_riders``: a
        caller waiting for it meanwhile (on another event loop: on its own, the hop's task
        gives it back before any other task runs) is woken to run it itself."""
        with self._lock:
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            _wake(waiter)


def _wake(waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]) -> None:
    loop, future = waiter
    try:
        loop.call_soon_threadsafe(_settle, future, True, None)
    except RuntimeError:  # the loop was closed: nobody waits any more
        pass


_riders: deque[_Rider] = deque()
"""Riders no hop has taken yet, oldest first (``popleft`` and ``remove`` are each atomic: a
rider is taken once, by a hop or by its own caller)."""


def _carrying(riders: list[_Rider], fn: Callable[..., T], args: tuple[object, ...]) -> T:
    for rider in riders:
        rider.run()
    return fn(*args)


async def off_loop(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread; returns its result or raises its error, once it has
    finished, whatever happens to the caller meanwhile. Riders waiting (``alongside``) run
    first, in the same thread."""
    future = started(fn, *args)
    with anyio.CancelScope(shield=True):
        result = await future
    return result


def started(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """``fn(*args)`` handed to a worker thread (riders first, as ``off_loop``): the future of
    its result. Awaited only where no cancellation reaches (a shielded scope already, as
    ``Journal.commit``'s wait): a cancelled wait would not wait for the work to end, which is
    what ``off_loop`` adds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    if _riders:
        taken = []
        while True:
            try:
                taken.append(_riders.popleft())
            except IndexError:
                break
        try:
            _hand((loop, future, _carrying, (taken, fn, args)))
        except BaseException:  # no thread to run them (none could be started): not lost
            _riders.extendleft(reversed(taken))
            for rider in taken:
                rider.given_back()
            raise
    else:
        _hand((loop, future, fn, args))
    return future


async def alongside(step: Callable[[], Awaitable[object]], fn: Callable[..., object], *args: object) -> None:
    """Await ``step()`` on the event loop while ``fn(*args)`` is done in a worker thread,
    riding on the next ``off_loop`` call (in a hop of its own if none came by the time ``step``
    ended); return once both have ended. ``step``'s error comes out first, as it is (once
    ``fn`` has ended too); else ``fn``'s."""
    rider = _Rider(fn, args)
    _riders.append(rider)
    try:
        await step()
    finally:
        if not rider.finished:  # not run yet, or still running
            with anyio.CancelScope(shield=True):
                await _finished(rider)
    ok, value = rider.outcome
    if not ok:
        raise value


async def _finished(rider: _Rider) -> None:
    """Return once ``rider`` has run (the caller shields this): in a hop of its own if no hop
    took it, else waited for on the event loop (a hop someone else made may still be running
    it: no worker thread is held for the wait)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            _riders.remove(rider)
        except ValueError:  # taken by a hop: still running it, or about to
            future = rider.wait_on(loop)
            if future is None:
                return
            await future
            if rider.finished:
                return
            continue  # given back (``_Rider.given_back``): taken by another hop, or ours to run
        await started(rider.run)
        return


def _reset_after_fork() -> None:
    """In a child made by ``os.fork``: none of the pool's threads exist there, so the pool
    starts empty (its idle tokens would hand work to no thread, and a lock held at the fork
    by a thread that is gone would never be released)."""
    global _work, _starting
    _work = SimpleQueue()
    _idle.clear()
    _threads.clear()
    _starting = threading.Lock()
    _riders.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_after_fork)
