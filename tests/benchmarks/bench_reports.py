"""Writing the report files of a rerun (or of a run) of a completed output directory: CPU per file.

Run: ``.venv/bin/python tests/benchmarks/bench_reports.py DIR [--mode rerun|run] [--profile N]
[--memory] [--tree PATH]``

``DIR`` is a directory kept by ``bench_resume.py --synthesize --jobs N --keep DIR`` (its
``resume.yaml`` and ``out/``). The outcomes are built as a rerun builds them (journal replayed,
plan made, ``startoutcome.initial_outcome`` of each step); with ``--mode run`` they are instead made
as a run's finished jobs are (succeeded, one attempt, a duration, packed). The report files are
then written twice into ``DIR/bench-reports`` (the first write makes report.html; the second,
measured, renews only its timing, as a rerun does), and the process CPU of the second write is
printed, per file where the files are written one after the other (the time spent inside each
``write_atomic`` call), with ``--profile N`` cProfile's top N functions, with ``--memory`` the
peak of tracemalloc during the write. ``--tree PATH`` imports batchvid from another checkout
(``git archive <commit> batchvid | tar -x -C PATH``) for an A/B comparison in the same
conditions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def _outcomes(directory: Path, mode: str) -> tuple[list[Any], Any]:
    from batchvid.manifest import load_manifest
    from batchvid.plan import make_plan
    from batchvid.report import RunInfo
    from batchvid.startoutcome import initial_outcome, with_rewrite
    from batchvid.store import read_records

    manifest = load_manifest(directory / "resume.yaml")
    records = read_records(directory / "out")
    plan = make_plan(manifest.jobs, records, directory / "out", provider=manifest.provider,
                     pricing=manifest.pricing)
    outcomes = [with_rewrite(initial_outcome(step), step) for step in plan.steps]
    if mode == "run":
        for n, o in enumerate(outcomes):
            o.status, o.action, o.attempts, o.seconds = "succeeded", "submit", 1, 1.0 + n % 97 / 10
            o.pack()
    info = RunInfo(str(directory / "resume.yaml"), manifest.name, manifest.provider, 0, None,
                   "2026-11-30T00:00:00+00:00", "2026-11-30T00:00:09+00:00", 9.0, 0.0, "CNY")
    return outcomes, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--mode", choices=("rerun", "run"), default="rerun")
    parser.add_argument("--profile", type=int, metavar="N", default=0)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--into", default="bench-reports", help="the folder of DIR written to")
    parser.add_argument("--no-gc", action="store_true", help="the cyclic collector off during the write")
    parser.add_argument("--tree", type=Path, help="import batchvid from this checkout instead")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve() if args.tree else Path(__file__).resolve().parents[2]))
    import batchvid
    from batchvid import durable, gallery, report

    print(f"batchvid from {Path(batchvid.__file__).parent}, mode {args.mode}")
    outcomes, info = _outcomes(args.directory, args.mode)
    target = args.directory / args.into
    report.write_outputs(target, outcomes, info)  # makes report.html; the measured write renews it

    spent: dict[str, float] = defaultdict(float)
    original = durable.write_atomic

    def timed(path: Path, data: Any, *, durable: bool = True) -> None:
        start = time.process_time()
        try:
            original(path, data, durable=durable)
        finally:
            spent[path.name] += time.process_time() - start

    for module in (durable, report, gallery):
        if getattr(module, "write_atomic", None) is original:
            module.write_atomic = timed  # type: ignore[attr-defined]
    if args.memory:
        import tracemalloc

        tracemalloc.start()
    profiler = cProfile.Profile() if args.profile else None
    gc.collect()
    if args.no_gc:
        gc.disable()
    start, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report.write_outputs(target, outcomes, info)
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    print(f"{len(outcomes):,} jobs: report files written in {cpu:.3f} s CPU ({wall:.3f} s wall)")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {name:16} {seconds:.3f} s")
    print(f"  {'(outside)':16} {cpu - sum(spent.values()):.3f} s")
    if args.memory:
        import tracemalloc

        _, peak = tracemalloc.get_traced_memory()
        print(f"peak traced memory during the write: {peak / 1e6:.1f} MB")
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.profile)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
