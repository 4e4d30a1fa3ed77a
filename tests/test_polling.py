"""The poll schedule: plain backoff until tasks have finished, then poll around their durations."""

from __future__ import annotations

import math

from batchvid.polling import PollSchedule


def test_without_observations_polls_back_off_to_the_maximum() -> None:
    """Before any task has finished, sleeps grow by half from MIN up to MAX."""
    delays = PollSchedule(5, 15).delays()
    assert [delays.next(0) for _ in range(5)] == [5, 7.5, 11.25, 15, 15]


def test_with_observations_sleeps_until_the_early_finishers() -> None:
    """Once tasks took about 100 s, a new task's first poll waits until about then."""
    schedule = PollSchedule(5, 15)
    for seconds in (100, 104, 108, 112, 116, 120, 124, 128, 132, 136):
        schedule.observe(seconds)
    delays = schedule.delays()
    first = delays.next(0)
    assert first == 104
    assert delays.next(104) == 5  # between the early and the late finishers: every MIN
    assert delays.next(130) == 5
    assert delays.next(140) == 5  # past the late ones: plain backoff again
    assert delays.next(145) == 7.5


def test_a_task_of_unknown_age_uses_the_plain_backoff() -> None:
    """A re-attached task (age unknown) is polled on the backoff, whatever was observed."""
    schedule = PollSchedule(1, 4)
    for seconds in (50, 50, 50, 50):
        schedule.observe(seconds)
    delays = schedule.delays()
    assert [delays.next(math.inf) for _ in range(3)] == [1, 1.5, 2.25]


def test_recent_durations_outweigh_old_ones() -> None:
    """Only the most recent durations shape the schedule, so it follows a change of pace."""
    schedule = PollSchedule(1, 30)
    for _ in range(100):
        schedule.observe(300)
    for _ in range(64):
        schedule.observe(20)
    assert schedule.delays().next(0) == 20
