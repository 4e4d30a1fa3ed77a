"""The poll schedule: plain backoff until tasks have finished, then polls where they end."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import anyio

from batchvid.events import Effects
from batchvid.polling import JITTER, MIN_SAMPLES, Poller, PollSchedule, task_kind
from batchvid.providers.base import TaskResult
from batchvid.retry import RetryPolicy
from tests.helpers import make_job


def poll_times(schedule: PollSchedule, until: float, kind: object = None) -> list[float]:
    """When a task that is still running at ``until`` is polled (seconds after its create)."""
    delays, elapsed, times = schedule.delays(kind), 0.0, []
    while elapsed < until:
        elapsed += delays.next(elapsed)
        times.append(elapsed)
    return times


def learned(durations: Sequence[float], poll_min: float = 5, poll_max: float = 15) -> PollSchedule:
    schedule = PollSchedule(poll_min, poll_max)
    for seconds in durations:
        schedule.observe(seconds)
    return schedule


EVEN = [60 + 120 * i / 63 for i in range(64)]
"""Durations spread evenly over 60-180 s, like real CogVideoX tasks."""


def test_without_observations_polls_back_off_to_the_maximum() -> None:
    """Before any task has finished, sleeps grow by half from MIN up to MAX."""
    delays = PollSchedule(5, 15).delays()
    assert [delays.next(0) for _ in range(5)] == [5, 7.5, 11.25, 15, 15]


def test_fewer_than_min_samples_teach_nothing() -> None:
    """Until MIN_SAMPLES tasks have finished, a new task is polled on the plain backoff."""
    schedule = learned([100] * (MIN_SAMPLES - 1))
    assert poll_times(schedule, 20) == [5, 12.5, 23.75]


def test_the_first_poll_waits_for_the_early_finishers() -> None:
    """Once tasks took 60-180 s, a new task is first polled after 60 s, where the tasks ended
    before it are about as many as end in the spacing after it."""
    times = poll_times(learned(EVEN), 200)
    assert 60 < times[0] < 60 + 15
    ended_before = (times[0] - 60) / 120
    ended_next = (times[1] - times[0]) / 120
    assert 0.5 * ended_next <= ended_before <= 1.5 * ended_next


def test_every_end_is_seen_within_max_after_the_floor() -> None:
    """After the first poll, polls are never further apart than MAX nor closer than MIN."""
    for durations in (EVEN, [100.0] * 64, [60.0] * 32 + [180.0] * 32, [30.0, 31.0, 32.0, 900.0]):
        times = poll_times(learned(durations), 1000)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(5 - 1e-9 <= gap <= 15 + 1e-9 for gap in gaps), (durations[:3], gaps)


def test_polls_are_dense_where_tasks_end_and_sparse_where_none_do() -> None:
    """Tasks ending at 50-70 s or at 170-190 s: polls about every MIN there (within a tenth of
    it), every MAX in between."""
    ends = [50 + 20 * i / 31 for i in range(32)] + [170 + 20 * i / 31 for i in range(32)]
    times = poll_times(learned(ends), 200)
    gaps = {round(a): b - a for a, b in zip(times, times[1:], strict=False)}
    in_clusters = [gap for at, gap in gaps.items() if 50 <= at < 65 or 170 <= at < 185]
    between = [gap for at, gap in gaps.items() if 75 <= at <= 150]
    assert len(in_clusters) >= 5 and max(in_clusters) <= 5.5
    assert len(between) >= 4 and min(between) >= 15 - 1e-9


def test_learning_sees_ends_sooner_than_the_backoff_with_fewer_polls() -> None:
    """Over 60-180 s tasks, a task's end is seen in under 0.6 of the plain backoff's delay on
    average and never later than MAX after it, with fewer polls than the backoff makes."""

    def cost(schedule: PollSchedule) -> tuple[float, float, float]:
        late, polls = [], []
        for end in EVEN:
            times = poll_times(schedule, end)
            late.append(times[-1] - end)
            polls.append(len(times))
        return sum(late) / len(late), max(late), sum(polls) / len(polls)

    late, latest, polls = cost(learned(EVEN))
    plain_late, _, plain_polls = cost(PollSchedule(5, 15))
    assert latest <= 15
    assert late < 0.6 * plain_late
    assert polls < 0.8 * plain_polls


def test_a_floor_learned_too_high_comes_down() -> None:
    """First tasks that all took ~170 s, then 60 s ones (seen at their first poll): the floor
    falls to them within a few tasks instead of holding itself up."""
    schedule = learned([170, 172, 174, 176])
    firsts = []
    for _ in range(12):
        first = poll_times(schedule, 60)[0]
        firsts.append(first)
        schedule.observe(max(first, 60))
    assert firsts[0] < 120
    assert firsts[-1] <= 60


def test_polls_close_in_as_the_tasks_left_running_thin_out() -> None:
    """Over tasks ending evenly, each spacing is no longer than the one before: the share still
    running shrinks while as many end per second."""
    times = poll_times(learned(EVEN), 180)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] > gaps[-1] == 5
    assert all(later <= earlier + 1e-9 for earlier, later in zip(gaps, gaps[1:], strict=False))


def test_a_duration_is_learned_as_the_span_between_two_polls() -> None:
    """A task seen running at 90 s and ended at 100 s ended in between: the learned
    distribution spreads it over those 10 seconds."""
    schedule = PollSchedule(5, 15)
    for _ in range(MIN_SAMPLES):
        schedule.observe(100, running=90)
    durations = schedule.durations()
    assert durations is not None
    assert (durations.quantile(0), durations.quantile(0.5), durations.quantile(1)) == (90, 95, 100)
    assert durations.share_below(92.5) == 0.25


def test_a_task_of_unknown_age_uses_the_plain_backoff() -> None:
    """A re-attached task (age unknown) is polled on the backoff, whatever was observed."""
    delays = learned([50, 50, 50, 50], 1, 4).delays()
    assert [delays.next(math.inf) for _ in range(3)] == [1, 1.5, 2.25]


def test_recent_durations_outweigh_old_ones() -> None:
    """Only the most recent durations shape the schedule, so it follows a change of pace."""
    schedule = learned([300] * 100 + [20] * 64, 1, 30)
    assert poll_times(schedule, 1)[0] <= 20


def test_each_kind_of_task_learns_its_own_durations() -> None:
    """Durations of one kind of task do not move the polls of another."""
    schedule = PollSchedule(5, 15)
    for seconds in EVEN:
        schedule.observe(seconds * 3, kind="long")
    assert poll_times(schedule, 20, kind="short") == [5, 12.5, 23.75]
    assert poll_times(schedule, 1, kind="long")[0] > 150


def test_the_kind_is_the_model_and_parameters_not_the_prompt() -> None:
    """Two prompts with the same settings are one kind; another duration is another."""
    a = make_job("a", prompt="a cat", duration=5)
    b = make_job("b", prompt="a dog", duration=5)
    c = make_job("c", prompt="a cat", duration=10)
    assert task_kind(a) == task_kind(b)
    assert task_kind(a) != task_kind(c)


def test_jitter_only_makes_a_poll_earlier_by_a_share_of_the_spacing() -> None:
    """Jittered sleeps are at most JITTER of a spacing shorter than planned, never longer."""
    schedule = learned(EVEN)
    plain, jittered = schedule.delays(), schedule.delays(rng=random.Random(7))
    for elapsed in (0.0, 55.0, 90.0, 150.0, 200.0, 260.0):
        planned, got = plain.next(elapsed), jittered.next(elapsed)
        assert planned - JITTER * 15 <= got <= planned


class VirtualTasks:
    """A provider whose tasks end at set times on a virtual clock that sleeping advances."""

    def __init__(self, ends: dict[str, float]) -> None:
        self.now = 0.0
        self.ends = ends
        self.polled: list[tuple[str, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def poll(self, api: object, task_id: str) -> TaskResult:
        self.polled.append((task_id, self.now))
        if self.now >= self.ends[task_id]:
            return TaskResult(task_id, "succeeded", {})
        return TaskResult(task_id, "running", {})


def waiter(tasks: VirtualTasks, schedule: PollSchedule) -> Poller:
    fx = Effects(lambda event: None, lambda text: text, lambda: tasks.now, tasks.sleep, random.Random(1))
    return Poller(tasks, None, schedule, RetryPolicy(0), fx)  # type: ignore[arg-type]


def test_waiting_learns_each_task_duration_under_its_kind() -> None:
    """Tasks of one kind that took 60-180 s teach the schedule: the next of that kind is first
    polled only near 60 s and seen within MAX of its end; a task of unknown age teaches nothing,
    and another kind learns nothing."""
    ends = {f"t{i}": 60 + 120 * i / 15 for i in range(16)}
    tasks = VirtualTasks({**ends, "old": 1e9, "next": 150.0})
    schedule = PollSchedule(5, 15)

    async def main() -> None:
        poller = waiter(tasks, schedule)
        for task_id, end in ends.items():
            tasks.now = 0.0
            await poller.wait("job", TaskResult(task_id, "running", {}), created_at=0.0, kind="a")
            assert end <= tasks.now <= end + 15
        tasks.now = 1e9 - 1
        await poller.wait("job", TaskResult("old", "running", {}), created_at=None, kind="a")
        learned = schedule.durations("a")
        assert learned is not None and learned.count == len(ends)
        tasks.now = 0.0
        tasks.polled.clear()
        await poller.wait("job", TaskResult("next", "running", {}), created_at=0.0, kind="a")

    anyio.run(main)
    first = tasks.polled[0][1]
    assert 50 <= first <= 75
    assert 150 <= tasks.polled[-1][1] <= 165
    assert schedule.durations("b") is None


def test_waiting_learns_from_the_last_poll_that_saw_the_task_running() -> None:
    """Tasks that end at 100 s, polled on the plain backoff (every 15 s by then), are learned as
    ending between their last two polls."""
    tasks = VirtualTasks({f"t{i}": 100.0 for i in range(MIN_SAMPLES)})
    schedule = PollSchedule(5, 15)

    async def main() -> None:
        poller = waiter(tasks, schedule)
        for task_id in tasks.ends:
            tasks.now = 0.0
            await poller.wait("job", TaskResult(task_id, "running", {}), created_at=0.0)

    anyio.run(main)
    last_two = [[at for task_id, at in tasks.polled if task_id == t][-2:] for t in tasks.ends]
    assert all(running < 100 <= seen for running, seen in last_two)
    durations = schedule.durations()
    assert durations is not None
    assert durations.quantile(0) == min(running for running, _ in last_two)
    assert durations.quantile(1) == max(seen for _, seen in last_two)


class SlowAnswers(VirtualTasks):
    """``VirtualTasks`` whose answers take ``answer`` seconds to come back."""

    def __init__(self, ends: dict[str, float], answer: float) -> None:
        super().__init__(ends)
        self.answer = answer

    async def poll(self, api: object, task_id: str) -> TaskResult:
        task = await super().poll(api, task_id)
        self.now += self.answer
        return task


def test_the_wait_for_an_answer_counts_toward_the_spacing() -> None:
    """Polls are spaced from one's sending to the next's: with answers taking 2 s, a task on
    the plain backoff is still polled 7.5, 11.25 and 15 s apart, not 2 s more each time."""
    tasks = SlowAnswers({"t": 40.0}, answer=2.0)

    async def main() -> None:
        fx = Effects(lambda event: None, lambda text: text, lambda: tasks.now, tasks.sleep, None)
        poller = Poller(tasks, None, PollSchedule(5, 15), RetryPolicy(0), fx)  # type: ignore[arg-type]
        await poller.wait("job", TaskResult("t", "running", {}), created_at=0.0)

    anyio.run(main)
    sent = [at for _, at in tasks.polled]
    assert sent == [5, 12.5, 23.75, 38.75, 53.75]
    delays = PollSchedule(5, 15).delays()
    assert [delays.next(0, since) for since in (0, 2, 7)] == [5, 5.5, 4.25]
