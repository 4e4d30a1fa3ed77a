"""Per-process memory of a child and its descendants, sampled from /proc (Linux).

``os.wait4``'s ``ru_maxrss`` is the largest peak of the process *and of every child it waited
for*: a ``batchvid run``'s figure is the larger of its own peak and its analysis workers'
(80-130 MB each), so it cannot say which grew. ``Watch`` samples, every ``interval`` seconds,
``/proc/PID/status`` of the watched process and of each descendant, each separately:

- ``VmHWM``, the kernel's own peak RSS of that process (exact, whenever it happened: sampling
  only has to catch the process alive once after its peak);
- ``VmRSS`` and its parts ``RssAnon`` (heap, thread stacks: what grows with jobs) and
  ``RssFile`` (mapped code and libraries), kept as a time series for the watched process.

Watch a benchmark's own pid around ``_harness.run_child`` to see every child it starts (the run,
its workers, a simulator), or from the command line a running process:
``python tests/benchmarks/memwatch.py PID``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads")


def status(pid: int) -> dict[str, int] | None:
    """The memory fields of /proc/PID/status (kB; Threads a count), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            values[name] = int(rest.split()[0])
    return values if "VmHWM" in values else None


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's children: /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def label(pid: int) -> str:
    """A short name of the process: its command line's interesting part."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if "-c" in words[1:-1]:  # after interpreter flags such as -P (the analysis workers use it)
        code = words[words.index("-c", 1) + 1]
        if "batchvid.snapshot" in code:
            return "python -c (replay snapshot)"  # snapshot.save_after_run's child, at close
        return "python -c (analysis worker)" if "batchvid" in code else "python -c"
    if len(words) >= 4 and words[1:3] == ["-m", "batchvid"]:
        return f"batchvid {words[3]}"
    return " ".join(words)[:60]


@dataclass
class Process:
    """One process seen: its label, and its largest figures (MB) while it was seen."""

    pid: int
    name: str
    hwm_mb: float = 0.0
    rss_mb: float = 0.0
    anon_mb: float = 0.0
    threads: int = 0
    series: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since the start, VmRSS MB, RssAnon MB) at each sample."""


class Watch:
    """Samples ``pid`` and its descendants every ``interval`` seconds on a thread."""

    # A descendant that lives shorter than ``interval`` may be missed; one that lives longer
    # is seen with its exact peak, whenever that was (VmHWM).

    def __init__(self, pid: int, interval: float = 0.25, *, extra: dict[int, str] | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.extra = dict(extra or {})
        """Other processes to watch (pid: label), e.g. a simulator started beside the child."""
        self.seen: dict[int, Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memwatch", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        """One look at every watched process."""
        pids = [self.pid]
        index = 0
        while index < len(pids):
            pids.extend(children(pids[index]))
            index += 1
        now = time.monotonic() - self._start
        for pid in [*pids, *self.extra]:
            values = status(pid)
            if values is None:
                continue
            name = self.extra.get(pid) or label(pid)
            seen = self.seen.get(pid)
            if seen is None or seen.name != name or values["VmHWM"] / 1024 < seen.hwm_mb:
                # New, or it has exec'd since (a child is seen between fork and exec with its
                # parent's command line and pages; VmHWM, else never lower, starts again).
                seen = self.seen[pid] = Process(pid, name)
            rss, anon = values.get("VmRSS", 0) / 1024, values.get("RssAnon", 0) / 1024
            seen.hwm_mb = max(seen.hwm_mb, values["VmHWM"] / 1024)
            seen.rss_mb = max(seen.rss_mb, rss)
            seen.anon_mb = max(seen.anon_mb, anon)
            seen.threads = max(seen.threads, values.get("Threads", 0))
            seen.series.append((now, rss, anon))

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()
                return

    def named(self, prefix: str) -> list[Process]:
        """The processes seen whose label starts with ``prefix``, the largest peak first."""
        return sorted((p for p in self.seen.values() if p.name.startswith(prefix)), key=lambda p: -p.hwm_mb)

    def peak_together(self, processes: list[Process]) -> float:
        """The largest sum of the ``processes``' RSS (MB) at one sample: what they held at once."""
        totals: dict[float, float] = {}
        for process in processes:
            for when, rss, _ in process.series:
                totals[when] = totals.get(when, 0.0) + rss
        return max(totals.values(), default=0.0)

    def lines(self, skip_watched: bool = False) -> list[str]:
        """A line per process, the largest peak first: peak RSS (VmHWM), the largest anonymous
        RSS and thread count (without the watched process itself, with ``skip_watched``)."""
        rows = sorted(self.seen.values(), key=lambda p: -p.hwm_mb)
        rows = [p for p in rows if not (skip_watched and p.pid == self.pid)]
        return [
            f"{p.name:<30} pid {p.pid:>7}: peak RSS {p.hwm_mb:6.1f} MB (anon {p.anon_mb:6.1f}), "
            f"threads {p.threads}"
            for p in rows
        ]

    def at(self, process: Process, fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> str:
        """A process's RSS at these fractions of the time it was seen (growth over time)."""
        series = process.series
        if not series:
            return ""
        points = [series[min(len(series) - 1, int(f * (len(series) - 1)))] for f in fractions]
        return ", ".join(f"{t:.0f} s: {rss:.0f} MB (anon {anon:.0f})" for t, rss, anon in points)


def main() -> int:
    parser = argparse.ArgumentParser(description="sample a running process tree's memory until it ends")
    parser.add_argument("pid", type=int)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    with Watch(args.pid, args.interval) as watch:
        try:
            while status(args.pid) is not None:
                time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
    for line in watch.lines():
        print(line)
    watched = watch.seen.get(args.pid)
    if watched is not None:
        print("over time:", watch.at(watched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
