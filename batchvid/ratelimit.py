"""Client-side limits for anyio: a request-rate limiter and an adaptive in-flight cap.

``RateLimiter`` bounds how often create requests go out (``--rpm``). Its guarantee: in **any**
window of ``period`` seconds there are at most ``rate`` grants (at most ``max(1, floor(rate))``
when ``rate`` is fractional), and in any span of ``t`` seconds at most ``burst + t * rate /
period``: a token bucket of ``burst`` grants (``BURST``, never more than the window allows),
refilled one every ``period / rate`` seconds. So a run's first tasks, or tasks whose slots
free together, start together, and a grant that came late (a busy event loop) is made up for
by the next ones instead of lost; but no server ever sees more than ``burst`` at once, and a
crowd after idle time is spaced again after its first ``burst``. The sliding log of the last
grants is kept as well, so the window guarantee holds exactly and does not rest on float sums
of spacings.

``AdaptiveLimit`` caps tasks in flight (``--max-in-flight``): a slot is held from the create
request until the task is terminal. A provider's "concurrency too high" answer (BigModel 1302)
calls ``reduce()``, which lowers the cap below what the server refused; the cap then recovers by
one every ``recovery_seconds`` without a new reduction, up to ``max_value``.

Both are fair (first come, first served), cancellation-safe (a waiter cancelled before its grant
takes nothing; one cancelled just after being handed a slot gives it back), and take the clock
and the sleep function as parameters so tests run on virtual time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import anyio.lowlevel

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON = 1e-9
"""Float slack when comparing a computed grant time with the clock."""
BURST = 5
"""Grants a ``RateLimiter`` gives at once after enough quiet time: BigModel's lowest tier runs
five tasks at once, so a run's first five creates need not wait for each other."""


class _Held:
    """``async with limiter:`` acquires, and releases on the way out."""

    async def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RateLimiter(_Held):
    """At most ``rate`` acquisitions per ``period`` seconds, ``burst`` at once; FIFO.

    ``rate`` None or 0 means unlimited (``pause_until``/``penalize`` still apply). ``burst``
    (default ``BURST``) is capped at the window's count; 1 spaces every grant evenly.
    """

    def __init__(
        self,
        rate: float | None,
        period: float = 60.0,
        *,
        burst: int = BURST,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if rate is not None and (rate < 0 or not math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number >= 0, not {rate!r}")
        if period <= 0 or not math.isfinite(period):
            raise ValueError(f"period must be a finite number > 0, not {period!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = float(rate or 0.0)
        self.period = float(period)
        self._clock = clock
        self._sleep = sleep
        self._interval = self.period / self.rate if self.rate else 0.0
        self._window = max(1, math.floor(self.rate)) if self.rate else 0
        self._grants: deque[float] = deque(maxlen=self._window or 1)
        self.burst = min(burst, self._window) if self._window else burst
        self._due = -math.inf
        """When the next grant would be due if every grant were spaced evenly (the bucket's
        state: a grant may come up to ``burst - 1`` spacings before it)."""
        self._paused_until = -math.inf
        self._lock = anyio.Lock()

    @property
    def unlimited(self) -> bool:
        return self.rate == 0.0

    @property
    def interval(self) -> float:
        """The spacing of grants beyond a burst, in seconds (0 when unlimited)."""
        return self._interval

    @property
    def paused_until(self) -> float:
        """Clock time before which nothing is granted (``-inf`` when never paused)."""
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Grant nothing before clock time ``when``, and from then on space grants without a
        burst until the bucket refills: the server asked for less. Pauses only ever extend,
        never shorten."""
        self._paused_until = max(self._paused_until, when)
        self._due = max(self._due, when + (self.burst - 1) * self._interval)

    def penalize(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` from now (after a 429 with ``Retry-After``)."""
        if seconds > 0:
            self.pause_until(self._clock() + seconds)

    def next_grant(self) -> float:
        """The earliest clock time at which the next acquisition could be granted."""
        when = self._paused_until
        if self._window and self._grants:
            when = max(when, self._due - (self.burst - 1) * self._interval)
            if len(self._grants) == self._window:
                when = max(when, self._grants[0] + self.period)
        return when

    async def acquire(self) -> None:
        """Wait for a grant. Waiters are served in arrival order.

        Cancellation while waiting consumes nothing: a grant is recorded only at the moment it
        is given, after the last await.
        """
        if not self._lock.locked():
            due = self.next_grant()
            if due - self._clock() <= _EPSILON:
                # Due now and nobody waiting: granted without passing the event loop's turn
                # (a create leaves the moment its slot frees, not one loop iteration later).
                await anyio.lowlevel.checkpoint_if_cancelled()
                self._grant(due)
                return
        # The lock is FIFO and hands ownership over directly, so arrival order is kept; only its
        # holder sleeps, so a pause or a grant by someone else is seen on the next loop.
        async with self._lock:
            while True:
                due = self.next_grant()
                wait = due - self._clock()
                if wait <= _EPSILON:
                    break
                await self._sleep(wait)
            self._grant(due)

    def _grant(self, due: float) -> None:
        """Record a grant given now, due at clock time ``due``."""
        if not self.unlimited:
            granted = max(due, self._clock())
            self._grants.append(granted)
            self._due = max(self._due, granted) + self._interval
            # A grant a whole period old limits no later one: keep only the last period's.
            while self._grants[0] <= granted - self.period:
                self._grants.popleft()

    def release(self) -> None:
        """Nothing to give back: a grant is spent once taken."""


class AdaptiveLimit(_Held):
    """A capacity limiter for tasks in flight whose cap shrinks on a concurrency refusal.

    ``acquire()`` waits (FIFO) until fewer than ``limit`` slots are held; ``release()`` gives
    one back; ``async with limit:`` does both. ``reduce()`` lowers the cap to
    ``max(1, min(limit, in_flight - 1))``: call it while still holding the slot of the request
    the server refused, so the cap lands just below the number of tasks it accepted. Several
    refusals at once therefore lower the cap once, not once each. Every ``recovery_seconds``
    without a new reduction the cap grows by one, up to ``max_value``.
    """

    def __init__(
        self,
        max_value: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        recovery_seconds: float = 30.0,
    ) -> None:
        if max_value < 1:
            raise ValueError(f"max_value must be at least 1, not {max_value!r}")
        if recovery_seconds <= 0:
            raise ValueError(f"recovery_seconds must be > 0, not {recovery_seconds!r}")
        self.max_value = max_value
        self.recovery_seconds = float(recovery_seconds)
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0
        self._waiters: deque[anyio.Event] = deque()
        self._reduced_to: int | None = None
        self._reduced_at = 0.0

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot."""
        return len(self._waiters)

    @property
    def limit(self) -> int:
        """The effective cap now, between 1 and ``max_value``."""
        if self._reduced_to is None:
            return self.max_value
        steps = math.floor((self._clock() - self._reduced_at) / self.recovery_seconds)
        cap = min(self.max_value, self._reduced_to + max(0, steps))
        if cap >= self.max_value:
            self._reduced_to = None
        return cap

    def reduce(self) -> int:
        """Lower the cap after a concurrency refusal; returns the new cap."""
        cap = max(1, min(self.limit, self._in_flight - 1))
        self._reduced_to = cap
        self._reduced_at = self._clock()
        return cap

    async def acquire(self) -> None:
        """Wait for a slot, in arrival order."""
        self._dispatch()
        if not self._waiters and self._in_flight < self.limit:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._in_flight += 1
            return
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            while not granted.is_set():
                delay = self._until_recovery()
                if delay is None:
                    await granted.wait()
                else:
                    await self._wait_or_recover(granted, delay)
        except BaseException:
            if granted.is_set():
                self.release()  # handed a slot while being cancelled: give it back
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back and hand it to the longest waiter the cap allows."""
        if self._in_flight <= 0:
            raise RuntimeError("AdaptiveLimit.release() without a matching acquire()")
        self._in_flight -= 1
        self._dispatch()


    def _dispatch(self) -> None:
        cap = self.limit
        while self._waiters and self._in_flight < cap:
            self._in_flight += 1
            self._waiters.popleft().set()

    def _until_recovery(self) -> float | None:
        """Seconds until the cap next grows, or None when it is at ``max_value``."""
        if self.limit >= self.max_value or self._reduced_to is None:
            return None
        elapsed = self._clock() - self._reduced_at
        steps = math.floor(elapsed / self.recovery_seconds)
        return max((steps + 1) * self.recovery_seconds - elapsed, _EPSILON)

    async def _wait_or_recover(self, granted: anyio.Event, delay: float) -> None:
        """Return when ``granted`` is set or ``delay`` has passed (then hand out grown room)."""
        async with anyio.create_task_group() as tg:

            async def recover() -> None:
                await self._sleep(delay)
                self._dispatch()
                tg.cancel_scope.cancel()

            tg.start_soon(recover)
            await granted.wait()
            tg.cancel_scope.cancel()
