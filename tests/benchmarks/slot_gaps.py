"""Where an in-flight slot's time goes beyond its task: the in-flight scenario of
``bench_throughput.py``, seen from the server.

Run: ``.venv/bin/python tests/benchmarks/slot_gaps.py [--jobs N] [--max-in-flight C]
[--latency S] [--poll-interval MIN:MAX] [--warmup N] [--phases] [--ab TREE --rounds R]
[--profile FILE | --wrap CMD]``

Polls are at batchvid's default interval scaled to the task time, as ``bench_throughput.py``
has them (``--poll-interval`` overrides). The simulator runs in this process (a thread; its
clock is this machine's monotonic clock) and notes when each create arrives, when each task
ends, and when the first poll that sees it ended arrives; ``batchvid run`` runs as a subprocess. A slot of the cap (BigModel counts running
tasks) is busy from a task's create to its end; after that it waits for

- the **poll lag**: from the task's end to the poll that sees it ended;
- the **turnaround**: from that poll to the next create's arrival (the answer back, the slot
  released, the next job's journal line and fsync, its create sent; the event loop's queue).

The k-th create past the first C takes the slot the k-th seen end freed. Per job and slot,
those two plus the mean task time make the wall time: ``wall ~ N / C x (task + lag + turn)``.
The run's CPU is shown for its whole process and for its main thread (the event loop's, with
the imports and the report files). ``--ab TREE`` alternates runs of this checkout and of TREE
(another checkout with its own ``.venv``) against one simulator, ``--rounds`` times each.
``--phases`` also times, in the run, a slot's release to the next create's start, the
``submitting`` line's commit and the create request (wrapping those functions), and prints the
run's timeline from its process's start: imports done, ``Runner.run``, the first create, the
last end seen, the report files, the last ``atexit`` handler and the process gone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BIGMODEL, ROOT, run_child, run_env, write_manifest
from bench_throughput import OWN_CPU, own_cpu, scaled_poll_interval

from batchvid.simulator.config import SimulatorConfig
from batchvid.simulator.serve import running_simulator
from batchvid.simulator.videos import VideoRoutes


def traced(creates: list[float], ends: dict[str, tuple[float, float]], seen: dict[str, float],
           polls: list[int]) -> None:
    """Wrap the simulator's create and poll to note the times (server clock)."""
    create, poll = VideoRoutes.create, VideoRoutes.poll

    async def traced_create(self: VideoRoutes, provider: str, scope: Any, body: Any, now: float) -> Any:
        creates.append(now)
        return await create(self, provider, scope, body, now)

    def traced_poll(self: VideoRoutes, provider: str, scope: Any, task_id: str) -> Any:
        polls[0] += 1
        task = self.core.tasks.get((provider, task_id))
        now = self.core.clock()
        reply = poll(self, provider, scope, task_id)
        # judged by the answer, which reads the clock again: a task ending between the two
        # readings (this thread shares the GIL with the benchmark's) is still seen here; the
        # answer is BigModel's (the only provider this script runs), compact JSON
        ended = reply.status == 200 and b'"task_status":"PROCESSING"' not in reply.body
        if task is not None and task_id not in seen and ended:
            seen[task_id] = max(now, task.ends)
            ends[task_id] = (task.created, task.ends)
        return reply

    VideoRoutes.create = traced_create  # type: ignore[method-assign]
    VideoRoutes.poll = traced_poll  # type: ignore[method-assign]


PHASES = (
    "import atexit, sys, time\n"
    "from batchvid import drive, submit\n"
    "from batchvid.lifecycle import JobLife\n"
    "from batchvid.providers.base import Provider\n"
    "marks = {'release': [], 'start': [], 'journal': [], 'create': [], 'at': {'prelude': time.perf_counter()}}\n"
    "def timed(cls, name, key):\n"
    "    real = getattr(cls, name)\n"
    "    async def wrapper(*args, **kwargs):\n"
    "        start = time.perf_counter()\n"
    "        try:\n"
    "            return await real(*args, **kwargs)\n"
    "        finally:\n"
    "            marks[key].append(time.perf_counter() - start)\n"
    "    setattr(cls, name, wrapper)\n"
    "timed(JobLife, 'attempt', 'journal')\n"
    "timed(Provider, 'create', 'create')\n"
    "real_release, real_create = drive.Slot.release, submit.Submitter.create\n"
    "def release(slot):\n"
    "    if slot._held:\n"
    "        marks['release'].append(time.perf_counter())\n"
    "    real_release(slot)\n"
    "async def create(self, life, record, **kwargs):\n"
    "    marks['start'].append(time.perf_counter())\n"
    "    return await real_create(self, life, record, **kwargs)\n"
    "drive.Slot.release, submit.Submitter.create = release, create\n"
    "from batchvid import runner\n"
    "real_run, real_report = runner.Runner.run, runner.Runner._report\n"
    "async def run(self):\n"
    "    marks['at']['run'] = time.perf_counter()\n"
    "    return await real_run(self)\n"
    "def report(self, *args):\n"
    "    marks['at']['report'] = time.perf_counter()\n"
    "    try:\n"
    "        return real_report(self, *args)\n"
    "    finally:\n"
    "        marks['at']['reported'] = time.perf_counter()\n"
    "runner.Runner.run, runner.Runner._report = run, report\n"
    "def show():\n"
    "    marks['at']['exit'] = time.perf_counter()\n"
    "    print('bench-phases ' + repr(marks), file=sys.stderr)\n"
    "atexit.register(show)\n"
)
"""Prepended to ``OWN_CPU`` by ``--phases``: the run notes when a slot is released and when a
create starts, how long the ``submitting`` line's commit and the create request take."""


def phases(stderr: str, cap: int, skip: int, freed: list[float], creates: list[float], started: float) -> None:
    """Print the client's side of the turnaround, from ``PHASES``'s notes; ``freed`` and
    ``creates`` are the server's times (the same monotonic clock as the run's perf_counter),
    ``started`` when the run's process was started; then the run's timeline from it."""
    import ast

    line = next(line for line in stderr.splitlines() if line.startswith("bench-phases "))
    marks = ast.literal_eval(line.split(" ", 1)[1])
    start, release = sorted(marks["start"]), sorted(marks["release"])
    wait = [start[cap + k] - release[k] for k in range(skip, min(len(release), len(start) - cap))]
    back = [release[k] - freed[k] for k in range(skip, min(len(release), len(freed)))]
    out = [creates[k] - start[k] for k in range(cap + skip, min(len(start), len(creates)))]
    print(f"  turnaround:  poll seen (server) -> slot released {ms(back)}")
    print(f"  client side: slot released -> next create starts {ms(wait)}")
    print(f"               create starts -> arrives (server) {ms(out)}")
    print(f"               submitting line's commit (fsync)  {ms(marks['journal'])}")
    print(f"               create request (to its answer)    {ms(marks['create'])}")
    at = marks["at"]
    steps = [("interpreter and batchvid.cli imported", at["prelude"]), ("Runner.run starts", at["run"]),
             ("first create starts", start[0]), ("first create arrives (server)", creates[0]),
             ("last create arrives (server)", creates[-1]), ("last end seen (server)", freed[-1]),
             ("report starts", at["report"]), ("report written", at["reported"]),
             ("atexit (analysis workers ended)", at["exit"])]
    print("  timeline from the process's start (runner wall: Runner.run to report written, "
          f"{at['reported'] - at['run']:.3f} s):")
    before = started
    for name, when in steps:
        print(f"    {when - started:7.3f} s  (+{1000 * (when - before):6.0f} ms)  {name}")
        before = when


def ms(values: list[float]) -> str:
    values = sorted(values) or [0.0]
    return (f"mean {1000 * statistics.fmean(values):6.1f} ms, median {1000 * values[len(values) // 2]:6.1f}, "
            f"p90 {1000 * values[int(len(values) * 0.9)]:6.1f}")


@dataclass
class Trace:
    creates: list[float]
    ends: dict[str, tuple[float, float]]
    seen: dict[str, float]
    polls: list[int]


def one_run(tree: Path, sim_url: str, trace: Trace, args: argparse.Namespace) -> None:
    """One ``batchvid run`` of TREE's code against the simulator; prints where the time went."""
    cap = args.max_in_flight
    python = str(tree / ".venv" / "bin" / "python")
    trace.creates.clear(), trace.ends.clear(), trace.seen.clear()
    trace.polls[0] = 0
    httpx.post(f"{sim_url}/_simulator/reset", timeout=30).raise_for_status()  # request ids repeat
    with tempfile.TemporaryDirectory(prefix="slot-gaps-") as tmp:
        manifest = write_manifest(Path(tmp), args.jobs, provider="bigmodel", name="gaps")
        started = time.monotonic()
        run = run_child(
            [*args.wrap.split(), python, *(["-m", "cProfile", "-o", args.profile] if args.profile else []),
             *(["-m", "batchvid"] if args.profile else ["-c", (PHASES if args.phases else "") + OWN_CPU]),
             "run",
             str(manifest), "--out", str(Path(tmp) / "out"),
             "--base-url", sim_url + BIGMODEL, "--poll-interval", args.poll_interval,
             "--no-progress", "--max-in-flight", str(cap), "--rpm", "1000000"],
            env=run_env("bigmodel"), cwd=tree,
        )
        if run.returncode != 0:
            print(run.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"batchvid run exited {run.returncode}")
    creates, ends, seen = sorted(trace.creates), trace.ends, trace.seen
    freed = sorted(seen.values())
    skip = args.warmup
    turn = [creates[cap + k] - freed[k] for k in range(skip, len(creates) - cap)]
    lag = sorted(seen[t] - ends[t][1] for t in seen)
    task = [e - c for c, e in ends.values()]
    own, loop = own_cpu(run.stderr) if not args.profile else (0.0, 0.0)
    print(f"{tree}: {args.jobs} jobs, cap {cap}, latency {args.latency:g} s, poll {args.poll_interval}; "
          f"{trace.polls[0] / args.jobs:.2f} polls per job; client CPU {run.cpu:.2f} s (own process "
          f"{own:.2f} s, main thread {loop:.2f} s = {1000 * loop / args.jobs:.2f} ms per job), "
          f"wall {run.wall:.2f} s")
    print(f"  task time:   {ms(task)}")
    print(f"  poll lag:    {ms(lag)}")
    print(f"  turnaround:  {ms(turn)}")
    if args.phases:
        phases(run.stderr, cap, skip, freed, creates, started)
    first, last = creates[0] - started, max(seen.values()) - started
    print(f"  process: first create {first:.2f} s after start, last end seen at {last:.2f} s, "
          f"exit at {run.wall:.2f} s (ideal {args.jobs * args.latency / cap:.2f} s of tasks)")
    if len(creates) <= cap + skip + 1:
        return
    per_slot = statistics.fmean(task) + statistics.fmean(lag) + statistics.fmean(turn)
    span = creates[-1] - creates[cap + skip]
    print(f"  steady state: {(len(creates) - cap - skip) / span:.1f} creates/s; "
          f"task/(task+lag+turn) = {statistics.fmean(task) / per_slot:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--max-in-flight", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--poll-interval", help="MIN:MAX seconds (default: batchvid's scaled "
                        "as bench_throughput.py scales it)")
    parser.add_argument("--warmup", type=int, default=40, help="creates left out at the start")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the run's main thread into FILE")
    parser.add_argument("--wrap", default="", help="a command the run is started under (py-spy record ... --)")
    parser.add_argument("--ab", type=Path, help="another checkout to alternate with")
    parser.add_argument("--phases", action="store_true",
                        help="time the client's side of the turnaround (patches the run)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    args.poll_interval = args.poll_interval or scaled_poll_interval(args.latency)
    trace = Trace([], {}, {}, [0])
    traced(trace.creates, trace.ends, trace.seen, trace.polls)
    config = SimulatorConfig(latency=args.latency, max_concurrent=args.max_in_flight)
    trees = [ROOT] + ([args.ab.resolve()] if args.ab else [])
    with running_simulator(config) as sim:
        for _ in range(args.rounds):
            for tree in trees:
                one_run(tree, sim.base_url, trace, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
