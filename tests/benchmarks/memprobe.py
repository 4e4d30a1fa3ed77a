"""Where a run's own memory goes: ``batchvid run`` in this process, sampled as it runs.

Run: ``.venv/bin/python tests/benchmarks/memprobe.py --jobs 5000 [--tracemalloc] [--top 15]``

The simulator runs in its own process (``_harness.simulator``, latency 0) so that what is
sampled is the run's alone: every ``--interval`` seconds a line with the process's RSS and its
anonymous part (``/proc/self/status``), glibc's heap figures (``mallinfo2``: ``arena`` is the
heap in use by malloc across all arenas, ``hblkhd`` its mmapped blocks, ``uordblks`` what is
allocated, ``fordblks`` what is free inside it), the interpreter's blocks (``sys.getallocatedblocks``),
the thread count and, with ``--tracemalloc``, the Python allocations traced. At the end, with
``--tracemalloc``, the largest growth by line between the first snapshot after the start and the
last one before the report files. Not a benchmark: tracemalloc slows the run several times.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _harness import GEEKAI, run_env
from _harness import simulator as start_simulator
from bench_100k import write_manifest
from memwatch import status


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mallinfo2() -> Mallinfo2 | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    fn.restype = Mallinfo2
    return fn()  # type: ignore[no-any-return]


MB = 1 << 20


def arenas() -> list[tuple[int, int, int]]:
    """glibc's ``malloc_info``, per arena: (number, bytes from the system, bytes free in it)."""
    import re

    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        fp = libc.fopen(tmp.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        text = Path(tmp.name).read_text()
    rows = []
    for number, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
        system = re.search(r'<system type="current" size="(\d+)"', body)
        free = re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body)
        rows.append((int(number), int(system.group(1)) if system else 0, sum(map(int, free))))
    return rows


def finished(out: Path) -> int:
    """How many jobs the journal says succeeded so far."""
    return progress(out)[1]


def progress(out: Path) -> tuple[int, int]:
    """How many jobs the journal says were submitted, and succeeded, so far."""
    submitted = succeeded = 0
    try:  # read in chunks, not whole: the probe's own allocations must not raise the peak
        with open(out / ".batchvid" / "journal.jsonl", "rb") as journal:
            tail = b""
            while chunk := journal.read(1 << 20):
                # a word split between chunks is counted once: the last line is whole in ``tail``
                text, cut = tail + chunk, chunk.rfind(b"\n")
                if cut < 0:
                    tail = text
                    continue
                done, tail = text[: len(tail) + cut + 1], chunk[cut + 1:]
                submitted += done.count(b'"submitted"')
                succeeded += done.count(b'"succeeded"')
    except FileNotFoundError:
        pass
    return submitted, succeeded


def census() -> Counter[str]:
    """Live objects the collector tracks, by type name."""
    return Counter(type(o).__name__ for o in gc.get_objects())


def line(start: float, traced: bool, out: Path) -> str:
    values = status_self()
    info = mallinfo2()
    submitted, done = progress(out)
    parts = [f"{time.monotonic() - start:7.1f} s", f"done {done:6d} (of {submitted:6d} submitted)", f"rss {values.get('VmRSS', 0) / 1024:6.1f}", f"hwm {values.get('VmHWM', 0) / 1024:6.1f}",
             f"anon {values.get('RssAnon', 0) / 1024:6.1f}", f"threads {values.get('Threads', 0):3d}",
             f"pyblocks {sys.getallocatedblocks() / 1e6:5.2f} M"]
    if info is not None:
        parts.append(f"malloc arena {info.arena / MB:6.1f} mmapped {info.hblkhd / MB:5.1f} "
                     f"used {info.uordblks / MB:6.1f} free {info.fordblks / MB:6.1f}")
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        parts.append(f"traced {current / MB:6.1f} (peak {peak / MB:6.1f})")
    return " | ".join(parts)


def status_self() -> dict[str, int]:
    import os

    return status(os.getpid()) or {}


def probe_report(traced: bool, frames: int, top: int) -> None:
    """Wrap ``Runner._report``: RSS as it starts, the process's peak while it runs (VmHWM reset
    through ``/proc/self/clear_refs``) and as it ends; with ``traced``, tracemalloc from its
    start: the peak of what it allocated, and the largest lines alive at ``_report``'s end."""
    from batchvid.runner import Runner

    original = Runner._report

    def _report(self: Runner, *args: object) -> object:
        before = status_self()
        info = mallinfo2()
        print(f"report starts: rss {before.get('VmRSS', 0) / 1024:6.1f} anon {before.get('RssAnon', 0) / 1024:6.1f} "
              f"hwm so far {before.get('VmHWM', 0) / 1024:6.1f} pyblocks {sys.getallocatedblocks() / 1e6:5.2f} M"
              + (f" malloc used {info.uordblks / MB:6.1f} free {info.fordblks / MB:6.1f}" if info else ""), flush=True)
        Path("/proc/self/clear_refs").write_text("5")
        best: list[tracemalloc.Snapshot] = []
        done = threading.Event()

        def watch_peak() -> None:  # the snapshot when the traced memory is largest (sampled)
            most = 0
            while not done.wait(0.1):
                current = tracemalloc.get_traced_memory()[0]
                if current > most * 1.02:
                    most = current
                    best[:] = [tracemalloc.take_snapshot()]

        watcher = threading.Thread(target=watch_peak, daemon=True)
        if traced:
            tracemalloc.start(frames)
            watcher.start()
        try:
            result = original(self, *args)  # type: ignore[arg-type]
        finally:
            done.set()
        after = status_self()
        info = mallinfo2()
        print(f"report ends:   rss {after.get('VmRSS', 0) / 1024:6.1f} anon {after.get('RssAnon', 0) / 1024:6.1f} "
              f"peak during it {after.get('VmHWM', 0) / 1024:6.1f} (+{(after.get('VmHWM', 0) - before.get('VmRSS', 0)) / 1024:.1f})"
              f" pyblocks {sys.getallocatedblocks() / 1e6:5.2f} M"
              + (f" malloc used {info.uordblks / MB:6.1f} free {info.fordblks / MB:6.1f}" if info else ""), flush=True)
        if traced:
            current, peak = tracemalloc.get_traced_memory()
            print(f"  traced since the report started: {current / MB:.1f} MB alive, peak {peak / MB:.1f} MB")
            watcher.join()
            at_peak = best[0] if best else tracemalloc.take_snapshot()
            total = sum(stat.size for stat in at_peak.statistics("filename"))
            print(f"  at the sampled peak ({total / MB:.1f} MB traced), by line:")
            for stat in at_peak.statistics("lineno")[:top]:
                print(f"  {stat.size / MB:7.2f} MB {stat.count:8d} blocks  {stat.traceback[0]}")
            print("  at the sampled peak, by traceback:")
            for stat in at_peak.statistics("traceback")[:top]:
                print(f"  {stat.size / MB:7.2f} MB {stat.count:8d} blocks")
                for frame in stat.traceback.format()[-16:]:
                    print("     ", frame)
            tracemalloc.stop()
        return result

    Runner._report = _report  # type: ignore[method-assign]
    from batchvid import runner

    trim = getattr(runner, "trim_heap", None)
    if trim is None:  # (a checkout without it)
        return

    def timed_trim() -> bool:
        before, clock = status_self(), time.perf_counter()
        done = trim()
        after = status_self()
        print(f"trim_heap: {done}, {(time.perf_counter() - clock) * 1000:.1f} ms, "
              f"rss {before.get('VmRSS', 0) / 1024:.1f} -> {after.get('VmRSS', 0) / 1024:.1f}", flush=True)
        return done

    runner.trim_heap = timed_trim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc's frames per trace")
    parser.add_argument("--census", action="store_true", help="count live objects by type at each sample")
    parser.add_argument("--in-flight", default="16")
    parser.add_argument("--report-peak", action="store_true",
                        help="the report files' own peak: RSS before them, their peak (VmHWM reset as they start), "
                        "and with --tracemalloc the Python allocations they make (traced from their start only)")
    args = parser.parse_args()
    if args.report_peak:
        probe_report(args.tracemalloc, args.frames, args.top)
        args.tracemalloc = False
    import os

    os.environ.update(run_env())
    from batchvid.cli import main as cli

    snapshots: list[tracemalloc.Snapshot] = []
    counts: list[tuple[int, Counter[str]]] = []
    stop = threading.Event()
    start = time.monotonic()
    if args.tracemalloc:
        tracemalloc.start(args.frames)

    def sample() -> None:
        while not stop.wait(args.interval):
            print(line(start, args.tracemalloc, out), flush=True)
            if args.census:
                counts.append((finished(out), census()))
                del counts[1:-1]
            if args.tracemalloc and finished(out) >= args.jobs // 10:  # past the start
                snapshots.append(tracemalloc.take_snapshot())
                del snapshots[1:-1]  # the first and the latest

    with tempfile.TemporaryDirectory(prefix="memprobe-") as tmp_name, start_simulator("--latency", "0") as sim:
        tmp = Path(tmp_name)
        out = tmp / "out"
        manifest = write_manifest(tmp, args.jobs)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        print(line(start, args.tracemalloc, out), flush=True)
        code = cli(["run", str(manifest), "--out", str(tmp / "out"), "--base-url", sim.url + GEEKAI,
                    "--rpm", "1000000", "--max-in-flight", args.in_flight, "--no-progress"])
        stop.set()
        thread.join()
        print(line(start, args.tracemalloc, out), "(after the run)", flush=True)
        for number, system, free in arenas():
            if system > MB:
                print(f"  arena {number:2d}: {system / MB:6.1f} MB from the system, {free / MB:6.1f} MB free in it")
        gc.collect()
        print(line(start, args.tracemalloc, out), "(after gc.collect)", f"exit {code}", flush=True)
    if len(counts) >= 2 and counts[-1][0] > counts[0][0]:
        (before, first), (after, last) = counts[0], counts[-1]
        print(f"\nlive objects gained per finished job ({after - before} jobs between the first and last sample):")
        for name, gained in (last - first).most_common(args.top):
            print(f"  {gained / (after - before):8.2f} {name}")
    if args.tracemalloc and len(snapshots) >= 2:
        print(f"\nlargest growth, {args.top} lines (first snapshot to last):")
        stats = snapshots[-1].compare_to(snapshots[0], "traceback")
        for stat in sorted(stats, key=lambda st: -st.size_diff)[: args.top]:
            print(f"  {stat.size_diff / MB:+7.2f} MB {stat.count_diff:+8d} blocks")
            for frame in stat.traceback.format()[-8:]:
                print("     ", frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
