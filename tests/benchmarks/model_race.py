"""An offline model of the race in ``bench_vs_sdk.py``: batchvid's poll schedule on virtual time.

Run: ``.venv/bin/python tests/benchmarks/model_race.py [--seeds N] [--poll-cost C ...]
[--burst B] [--throughput [--round-trip S]]``

No process, no HTTP, no clock: the seeded task times of the simulator (``latency:SEED``, 60-180 s
scaled 1/25) on its 5 slots, and a client that sends the next create when a poll sees a task
end, with what a real run measures around it (``--create-path`` from a poll's answer to the
next create leaving, the create limiter's token bucket at ``--rpm`` 30 scaled, ``--burst`` at
once, the run's start). The polls follow ``batchvid.polling.PollSchedule`` as the runner drives
it (``delays`` per task, ``observe`` when one ends, with the last poll that saw it running;
jitter from a seeded ``random.Random``), so a change to the schedule is judged here in seconds,
over many seeds, without the machine's load in the figures. Real runs are measured by
``bench_vs_sdk.py``; the model leaves out event-loop delays and the spread of fsync times: on a
quiet machine seed 1 read 0.964 measured against 0.9644 modelled (10.51 and 10.49 polls per
job), under a load average of 5-8 real runs read 1.5-2.5 % lower while the polls still match.

Printed per schedule: the ratio to the perfect client (worst seed and mean), polls per job and
the mean delay between a task's end and the poll that sees it.

``--throughput``: the same model on ``bench_throughput.py``'s in-flight scenario instead (1,000
jobs, 20 slots, tasks of 0.25-0.75 s, polls at batchvid's default interval scaled to them,
0.021:0.0625 s, no create limit, the run's start-up left out), with a poll's round trip of
``--round-trip`` seconds (a create's twice that) and ``--create-path`` from a poll's answer to
the next create leaving: what the schedule alone lets the benchmark reach, in perfect/wall and
in its own figure, the share of the ideal (perfect/wall times a perfect client's share, 0.989).
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchvid import polling, ratelimit

TIER = 5
SCALE = 25.0
JOBS = 100
POLL = (5.0 / SCALE, 15.0 / SCALE)
RPM_SPACING = 60.0 / (30.0 * SCALE)
POLL_LATENCY = 0.003
CREATE_LATENCY = 0.006


def task_seconds(seed: int) -> Callable[[], float]:
    """The simulator's draws: the i-th task created takes the i-th one."""
    draws = random.Random(f"latency:{seed}")
    return lambda: 120.0 / SCALE * draws.uniform(0.5, 1.5)


def perfect_wall(seed: int) -> float:
    draw, slots = task_seconds(seed), [0.0] * TIER
    for _ in range(JOBS):
        heapq.heappush(slots, heapq.heappop(slots) + draw())
    return max(slots)


@dataclass
class Outcome:
    wall: float
    polls: int
    late: float
    """Summed seconds between each task's end and the poll that saw it."""


class Even:
    """A fixed schedule for comparison: the first poll at ``start``, then every ``spacing``."""

    def __init__(self, start: float, spacing: float) -> None:
        self.start, self.spacing = start, spacing

    def delays(self, kind: object = None, rng: random.Random | None = None) -> Even:
        return self

    def next(self, elapsed: float, since: float = 0.0) -> float:
        return self.start - elapsed if elapsed < self.start else self.spacing - since

    def observe(self, seconds: float, kind: object = None, running: float | None = None) -> None:
        pass


def race(
    schedule: polling.PollSchedule | Even, seed: int, create_path: float, start: float,
    burst: int = ratelimit.BURST,
) -> Outcome:
    """One run of the race on virtual time."""
    draw, rng = task_seconds(seed), random.Random(seed)
    events: list[tuple[float, int, str, dict[str, float]]] = []
    counter = 0

    def at(when: float, what: str, task: dict[str, float]) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (when, counter, what, task))

    waiting, due, out = JOBS, -math.inf, Outcome(0.0, 0, 0.0)
    delays: dict[int, polling._Delays | Even] = {}
    for _ in range(TIER):
        at(start, "slot", {})
    while events:
        now, _, what, task = heapq.heappop(events)
        if what == "slot":
            if not waiting:
                continue
            waiting -= 1
            # the create limiter's token bucket (ratelimit.RateLimiter): a burst, then spaced
            sent = max(now + create_path, due - (burst - 1) * RPM_SPACING)
            due = max(due, sent) + RPM_SPACING
            task = {"ends": sent + CREATE_LATENCY / 2 + draw(), "created": sent + CREATE_LATENCY,
                    "running": math.nan, "polled": math.nan}
            delays[id(task)] = schedule.delays(None, rng)
            at(task["created"], "sleep", task)
        elif what == "sleep":
            since = 0.0 if math.isnan(task["polled"]) else now - task["polled"]
            at(now + delays[id(task)].next(now - task["created"], since), "poll", task)
        else:
            out.polls += 1
            task["polled"] = now
            if now + POLL_LATENCY / 2 < task["ends"]:
                task["running"] = now - task["created"]
                at(now + POLL_LATENCY, "sleep", task)
                continue
            seen = now + POLL_LATENCY
            out.late += now - task["ends"]
            running = None if math.isnan(task["running"]) else task["running"]
            schedule.observe(seen - task["created"], None, running)
            out.wall = max(out.wall, seen)
            at(seen, "slot", {})
    return out


def report(
    name: str, make: Callable[[], polling.PollSchedule | Even], seeds: range, path: float, start: float,
    burst: int,
) -> None:
    ratios, polls, late = [], 0, 0.0
    for seed in seeds:
        out = race(make(), seed, path, start, burst)
        ratios.append(perfect_wall(seed) / out.wall)
        polls += out.polls
        late += out.late
    jobs = JOBS * len(seeds)
    print(f"  {name:24s} perfect/wall worst {min(ratios):.4f} mean {sum(ratios) / len(ratios):.4f}, "
          f"{polls / jobs:5.2f} polls/job, seen {1000 * late / jobs:5.0f} ms after the end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds 1..N (default 16)")
    parser.add_argument("--poll-cost", type=float, action="append",
                        help="POLL_COST values to try (default: the module's)")
    parser.add_argument("--create-path", type=float, default=0.015,
                        help="seconds from a poll's answer to the next create leaving")
    parser.add_argument("--start", type=float, default=0.15, help="seconds before the first create")
    parser.add_argument("--burst", type=int, default=ratelimit.BURST,
                        help="the create limiter's burst (default ratelimit.BURST; 1: evenly spaced)")
    parser.add_argument("--throughput", action="store_true",
                        help="bench_throughput.py's in-flight scenario instead of the race")
    parser.add_argument("--round-trip", type=float, default=POLL_LATENCY,
                        help="seconds from a poll's sending to its answer (a create's: twice)")
    args = parser.parse_args()
    seeds = range(1, args.seeds + 1)
    if args.throughput:
        return throughput(seeds, args)
    print(f"{JOBS} jobs on {TIER} slots, tasks 60-180 s scaled 1/{SCALE:g}, seeds 1-{args.seeds}, "
          f"create path {1000 * args.create_path:g} ms")
    for cost in args.poll_cost or [polling.POLL_COST]:
        polling.POLL_COST = cost
        report(f"learned, POLL_COST 1/{1 / cost:g}", lambda: polling.PollSchedule(*POLL), seeds,
               args.create_path, args.start, args.burst)
    for spacing in (0.3, 0.4):
        report(f"even from 2.4 s, {spacing:g} s", lambda s=spacing: Even(2.4, s), seeds,
               args.create_path, args.start, args.burst)
    return 0


def throughput(seeds: range, args: argparse.Namespace) -> int:
    """The model on ``bench_throughput.py``'s in-flight scenario (module doc)."""
    from bench_throughput import perfect_share

    global TIER, JOBS, SCALE, POLL, RPM_SPACING, POLL_LATENCY, CREATE_LATENCY
    TIER, JOBS, SCALE = 20, 1000, 240.0  # tasks of 120 / 240 = 0.5 s mean
    POLL, RPM_SPACING = (5.0 / SCALE, 15.0 / SCALE), 0.0
    POLL_LATENCY, CREATE_LATENCY = args.round_trip, 2 * args.round_trip
    share = perfect_share(JOBS, 0.5, TIER)
    print(f"{JOBS} jobs on {TIER} slots, tasks 0.25-0.75 s, polls {POLL[0]:.4g}:{POLL[1]:.4g} s, "
          f"round trip {1000 * args.round_trip:g} ms, create path {1000 * args.create_path:g} ms; "
          f"a perfect client reaches {100 * share:.1f} % of the ideal")
    schedules: list[tuple[str, Callable[[], polling.PollSchedule | Even]]] = []
    for cost in args.poll_cost or [polling.POLL_COST]:
        schedules.append((f"learned, POLL_COST 1/{1 / cost:g}",
                          lambda c=cost: (setattr(polling, "POLL_COST", c), polling.PollSchedule(*POLL))[1]))
    schedules.append(("every MIN from 0.25 s", lambda: Even(0.25, POLL[0])))
    for name, make in schedules:
        ratios, polls = [], 0
        for seed in seeds:
            out = race(make(), seed, args.create_path, 0.0, args.burst)
            ratios.append(perfect_wall(seed) / out.wall)
            polls += out.polls
        mean = sum(ratios) / len(ratios)
        print(f"  {name:28s} perfect/wall mean {mean:.4f}, {100 * mean * share:.1f} % of the ideal, "
              f"{polls / JOBS / len(seeds):.2f} polls/job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
