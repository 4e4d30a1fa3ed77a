"""RateLimiter and AdaptiveLimit on virtual time: window guarantee, spacing, FIFO, cancellation."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from batchvid.ratelimit import AdaptiveLimit, RateLimiter

TOLERANCE = 1e-6


@dataclass(order=True)
class _Sleeper:
    wake_at: float
    seq: int
    event: anyio.Event = field(compare=False)
    active: bool = field(default=True, compare=False)


async def settle() -> None:
    """Yield until every other task is blocked on something unfinished (asyncio backend).

    Like ``anyio.wait_all_tasks_blocked`` but without its real 0.1 s naps, and it requires the
    state to hold over a few consecutive yields, so completion callbacks still queued in the
    event loop have run.
    """
    me = asyncio.current_task()
    calm = 0
    for _ in range(100_000):
        await anyio.lowlevel.checkpoint()
        blocked = all(
            task is me
            or ((waiter := getattr(task, "_fut_waiter", None)) is not None and not waiter.done())
            for task in asyncio.all_tasks()
        )
        calm = calm + 1 if blocked else 0
        if calm >= 3:
            return
    raise RuntimeError("tasks never settled")


class VirtualTime:
    """A discrete-event clock: when every task is blocked, time jumps to the next sleeper."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self.now + seconds, next(self._seq), anyio.Event())
        heapq.heappush(self._sleepers, sleeper)
        try:
            await sleeper.event.wait()
        finally:
            sleeper.active = False

    async def run(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run ``main`` to completion, advancing virtual time whenever everything waits."""
        finished = anyio.Event()

        async def wrapped() -> None:
            await main()
            finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wrapped)
            while True:
                await settle()
                if finished.is_set():
                    break
                while self._sleepers and not self._sleepers[0].active:
                    heapq.heappop(self._sleepers)
                if not self._sleepers:
                    raise RuntimeError("deadlock: every task waits and none sleeps")
                sleeper = heapq.heappop(self._sleepers)
                self.now = max(self.now, sleeper.wake_at)
                sleeper.event.set()


def max_in_window(times: list[float], period: float) -> int:
    """The most grants in any half-open window (t - period, t]."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - period + TOLERANCE:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- RateLimiter ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_simultaneous_arrivals_are_spaced_evenly_without_a_burst() -> None:
    """With burst 1, five waiters at once are granted period/rate apart, the first immediately."""
    vt = VirtualTime()
    limiter = RateLimiter(6, 60, burst=1, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        async def one() -> None:
            await limiter.acquire()
            grants.append(vt.now)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)

    await vt.run(main)
    assert grants == pytest.approx([0, 10, 20, 30, 40])


@pytest.mark.anyio
async def test_simultaneous_arrivals_get_a_burst_then_spacing() -> None:
    """Eight waiters at once at 6 a minute: the first `burst` are granted together, the next
    period/rate apart, and the seventh waits for the window: never more than 6 in 60 s."""
    vt = VirtualTime()
    limiter = RateLimiter(6, 60, burst=3, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(record, limiter, vt, grants)

    await vt.run(main)
    assert grants == pytest.approx([0, 0, 0, 10, 20, 30, 60, 60])


@pytest.mark.anyio
async def test_a_late_grant_is_made_up_for() -> None:
    """A caller that comes back late for its next grant (a busy loop) may take the ones it
    missed at once, up to the burst, so the rate over time is kept."""
    vt = VirtualTime()
    limiter = RateLimiter(60, 60, burst=3, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        for _ in range(3):
            await record(limiter, vt, grants)  # the burst at 0
        await record(limiter, vt, grants)  # 1
        await vt.sleep(2.5)  # late: grants due at 2 and 3 were missed
        for _ in range(4):
            await record(limiter, vt, grants)

    await vt.run(main)
    assert grants == pytest.approx([0, 0, 0, 1, 3.5, 3.5, 4, 5])


def test_burst_is_capped_by_the_window() -> None:
    """A limiter of 2 per minute never grants more than 2 at once, whatever burst is asked."""
    assert RateLimiter(2, 60, burst=5).burst == 2
    assert RateLimiter(0.5, 60, burst=5).burst == 1


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [1, 3, 7.5, 30])
@pytest.mark.parametrize("burst", [1, 5])
@pytest.mark.parametrize("seed", range(4))
async def test_no_window_ever_holds_more_than_rate(rate: float, burst: int, seed: int) -> None:
    """For random arrival patterns, no 60 s window contains more than `rate` grants, and no
    span of t seconds more than `burst` + t * rate / 60."""
    rng = random.Random(seed)
    vt = VirtualTime()
    limiter = RateLimiter(rate, 60, burst=burst, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []
    arrivals: list[float] = []
    t = 0.0
    for _ in range(60):
        # bursts of simultaneous arrivals, short gaps and long idle stretches
        t += rng.choice([0.0, 0.0, rng.uniform(0, 5), rng.uniform(0, 200)])
        arrivals.append(t)

    async def main() -> None:
        async def one(at: float) -> None:
            await vt.sleep(at)
            await limiter.acquire()
            grants.append(vt.now)

        async with anyio.create_task_group() as tg:
            for at in arrivals:
                tg.start_soon(one, at)

    await vt.run(main)
    assert len(grants) == len(arrivals)
    assert max_in_window(grants, 60) <= int(rate)
    ordered = sorted(grants)
    bucket = min(burst, int(rate))
    for i, j in itertools.combinations(range(len(ordered)), 2):
        assert j - i + 1 <= bucket + (ordered[j] - ordered[i]) * rate / 60 + TOLERANCE


@pytest.mark.anyio
async def test_no_more_than_the_burst_after_idle_time() -> None:
    """After a long idle stretch a crowd of waiters gets the burst at once, then is spaced."""
    vt = VirtualTime()
    limiter = RateLimiter(30, 60, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        for _ in range(3):
            await limiter.acquire()
        await vt.sleep(1000)

        async def one() -> None:
            await limiter.acquire()
            grants.append(vt.now)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)

    await vt.run(main)
    assert grants == pytest.approx([1000] * 5 + [1000 + 2 * i for i in range(1, 6)])


@pytest.mark.anyio
async def test_sequential_callers_with_self_advancing_sleep() -> None:
    """With a fake sleep that just advances the clock, back-to-back acquires are spaced."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(2, 60, burst=1, clock=lambda: now[0], sleep=sleep)
    grants = []
    for _ in range(4):
        await limiter.acquire()
        grants.append(now[0])
    assert grants == pytest.approx([0, 30, 60, 90])


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [0, 30])
async def test_a_due_grant_does_not_yield_to_other_tasks(rate: float) -> None:
    """A grant that is due with nobody waiting is given at once, without letting the event
    loop run other tasks first (a create leaves the moment its slot frees); a cancelled caller
    still gets nothing."""
    limiter = RateLimiter(rate, 60)
    ran: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _note(ran))
        await limiter.acquire()
        assert ran == []
    assert ran == ["other"]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire()
        pytest.fail("a cancelled acquire returned")
    if rate:
        assert len(limiter._grants) == 1


async def _note(ran: list[str]) -> None:
    ran.append("other")


@pytest.mark.anyio
async def test_only_the_last_periods_grants_are_kept() -> None:
    """At a very high rate the limiter keeps the grants of the last period only, not one per
    grant ever given (a 100,000-job run at --rpm 1000000 kept them all), and still spaces them."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(1_000_000, 60, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(5_000):
        await limiter.acquire()
        now[0] += 0.5
    assert len(limiter._grants) == 120
    assert limiter.next_grant() <= now[0]


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order() -> None:
    """Waiters queued behind one another get their grants in the order they arrived."""
    vt = VirtualTime()
    limiter = RateLimiter(60, 60, clock=vt.clock, sleep=vt.sleep)
    order: list[int] = []

    async def main() -> None:
        async def one(n: int) -> None:
            await vt.sleep(0.001 * n)  # arrive one after another, all before the 2nd grant
            await limiter.acquire()
            order.append(n)

        async with anyio.create_task_group() as tg:
            for n in reversed(range(8)):  # started in reverse: order must follow arrival
                tg.start_soon(one, n)

    await vt.run(main)
    assert order == list(range(8))


@pytest.mark.anyio
async def test_cancelled_waiter_does_not_consume_a_slot() -> None:
    """A waiter cancelled while waiting leaves its slot to the next one."""
    vt = VirtualTime()
    limiter = RateLimiter(1, 60, clock=vt.clock, sleep=vt.sleep)
    granted_at: list[float] = []

    async def main() -> None:
        await limiter.acquire()  # t=0: next grant possible at 60
        async with anyio.create_task_group() as tg:

            async def doomed() -> None:
                with anyio.CancelScope() as scope:
                    cancel_scopes.append(scope)
                    await limiter.acquire()
                    granted_at.append(-1)

            cancel_scopes: list[anyio.CancelScope] = []
            tg.start_soon(doomed)
            await vt.sleep(10)
            cancel_scopes[0].cancel()
            await vt.sleep(10)
            await limiter.acquire()
            granted_at.append(vt.now)

    await vt.run(main)
    assert granted_at == pytest.approx([60])


@pytest.mark.anyio
async def test_penalize_holds_every_grant() -> None:
    """penalize(s) stops grants for s seconds, even for an unlimited limiter."""
    vt = VirtualTime()
    limiter = RateLimiter(None, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        limiter.penalize(30)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(lambda: record(limiter, vt, grants))

    await vt.run(main)
    assert grants == pytest.approx([30, 30, 30])


async def record(limiter: RateLimiter, vt: VirtualTime, grants: list[float]) -> None:
    await limiter.acquire()
    grants.append(vt.now)


@pytest.mark.anyio
async def test_penalty_during_a_wait_extends_it() -> None:
    """A pause set while the head waiter sleeps is honoured when it wakes."""
    vt = VirtualTime()
    limiter = RateLimiter(2, 60, burst=1, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        await limiter.acquire()  # t=0; next at 30
        async with anyio.create_task_group() as tg:
            tg.start_soon(record, limiter, vt, grants)
            await vt.sleep(10)
            limiter.penalize(45)  # until 55

    await vt.run(main)
    assert grants == pytest.approx([55])


@pytest.mark.anyio
async def test_no_burst_right_after_a_penalty() -> None:
    """Waiters held by a penalty are spaced when it ends, not let through as a burst."""
    vt = VirtualTime()
    limiter = RateLimiter(6, 60, burst=3, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def main() -> None:
        limiter.penalize(30)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(record, limiter, vt, grants)

    await vt.run(main)
    assert grants == pytest.approx([30, 40, 50])


def test_pause_until_only_extends() -> None:
    """An earlier pause_until does not shorten a later one."""
    limiter = RateLimiter(10, clock=lambda: 0.0)
    limiter.pause_until(100)
    limiter.pause_until(50)
    assert limiter.paused_until == 100


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [None, 0])
async def test_unlimited_grants_at_once(rate: float | None) -> None:
    """rate None or 0 never waits."""
    vt = VirtualTime()
    limiter = RateLimiter(rate, clock=vt.clock, sleep=vt.sleep)

    async def main() -> None:
        for _ in range(100):
            await limiter.acquire()

    await vt.run(main)
    assert vt.now == 0


@pytest.mark.parametrize(("rate", "period", "burst"), [(-1, 60, 1), (float("inf"), 60, 1), (5, 0, 1), (5, 60, 0)])
def test_rejects_nonsense_settings(rate: float, period: float, burst: int) -> None:
    """Negative or infinite rates, non-positive periods and bursts below 1 are refused."""
    with pytest.raises(ValueError):
        RateLimiter(rate, period, burst=burst)


# --- AdaptiveLimit ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_caps_tasks_in_flight() -> None:
    """No more than max_value holders at once; the rest wait their turn."""
    vt = VirtualTime()
    limit = AdaptiveLimit(2, clock=vt.clock, sleep=vt.sleep)
    peak = [0]

    async def main() -> None:
        async def hold() -> None:
            async with limit:
                peak[0] = max(peak[0], limit.in_flight)
                await vt.sleep(10)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(hold)

    await vt.run(main)
    assert (peak[0], vt.now, limit.in_flight) == (2, 30, 0)


@pytest.mark.anyio
async def test_reduce_lands_just_below_tasks_in_flight() -> None:
    """reduce() with 4 slots held (one refused) sets the cap to 3."""
    limit = AdaptiveLimit(5, clock=lambda: 0.0)
    for _ in range(4):
        await limit.acquire()
    assert limit.reduce() == 3
    assert limit.limit == 3


@pytest.mark.anyio
async def test_simultaneous_refusals_reduce_once() -> None:
    """Several reduce() calls with the same slots held lower the cap only once."""
    limit = AdaptiveLimit(8, clock=lambda: 0.0)
    for _ in range(6):
        await limit.acquire()
    assert [limit.reduce() for _ in range(3)] == [5, 5, 5]


@pytest.mark.anyio
async def test_reduce_never_goes_below_one() -> None:
    """The cap stays at least 1."""
    limit = AdaptiveLimit(3, clock=lambda: 0.0)
    await limit.acquire()
    assert limit.reduce() == 1


@pytest.mark.anyio
async def test_cap_recovers_one_step_per_period() -> None:
    """After a reduction the cap grows by one every recovery_seconds, up to max_value."""
    now = [0.0]
    limit = AdaptiveLimit(4, clock=lambda: now[0], recovery_seconds=30)
    for _ in range(2):
        await limit.acquire()
    assert limit.reduce() == 1
    seen = []
    for t in (29.9, 30, 60, 90, 500):
        now[0] = t
        seen.append(limit.limit)
    assert seen == [1, 2, 3, 4, 4]


@pytest.mark.anyio
async def test_new_reduction_restarts_recovery() -> None:
    """A reduction during recovery starts the recovery clock again."""
    now = [0.0]
    limit = AdaptiveLimit(6, clock=lambda: now[0], recovery_seconds=30)
    for _ in range(4):
        await limit.acquire()
    limit.reduce()  # 3 at t=0
    now[0] = 45  # recovered to 4
    assert limit.reduce() == 3
    now[0] = 74
    assert limit.limit == 3


@pytest.mark.anyio
async def test_recovery_admits_a_waiter_without_a_release() -> None:
    """A waiter blocked by a reduced cap is let in when the cap recovers, with no release."""
    vt = VirtualTime()
    limit = AdaptiveLimit(3, clock=vt.clock, sleep=vt.sleep, recovery_seconds=30)
    admitted: list[float] = []

    async def main() -> None:
        for _ in range(3):
            await limit.acquire()
        limit.reduce()  # cap 2
        limit.release()  # 2 held, cap 2: full

        async def waiter() -> None:
            await limit.acquire()
            admitted.append(vt.now)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)

    await vt.run(main)
    assert admitted == pytest.approx([30])
    assert limit.in_flight == 3


@pytest.mark.anyio
async def test_limit_waiters_are_served_in_order() -> None:
    """Slots freed one by one go to waiters in arrival order."""
    limit = AdaptiveLimit(1)
    await limit.acquire()
    order: list[int] = []

    async def one(n: int) -> None:
        async with limit:
            order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(one, n)
            await settle()
        assert limit.waiting == 5
        limit.release()
    assert (order, limit.in_flight) == (list(range(5)), 0)


@pytest.mark.anyio
async def test_cancelled_limit_waiter_takes_nothing() -> None:
    """A waiter cancelled before its grant leaves the slot for the next waiter."""
    limit = AdaptiveLimit(1)
    await limit.acquire()
    got: list[str] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def doomed() -> None:
            with scope:
                await limit.acquire()
                got.append("doomed")

        async def patient() -> None:
            await limit.acquire()
            got.append("patient")

        tg.start_soon(doomed)
        await settle()
        tg.start_soon(patient)
        await settle()
        scope.cancel()
        await settle()
        limit.release()
    assert (got, limit.in_flight, limit.waiting) == (["patient"], 1, 0)


def test_release_without_acquire_is_an_error() -> None:
    """Releasing more than was acquired is a programming error, reported at once."""
    with pytest.raises(RuntimeError):
        AdaptiveLimit(2).release()
