"""100,000 jobs (issue 12 #5): validate, plan, a full run against the simulator, and a resume.

Run: ``.venv/bin/python tests/benchmarks/bench_100k.py [--jobs N] [--skip-run]``

Every step is ``batchvid`` as a user runs it, a subprocess measured with ``os.wait4`` on its pid
(wall, CPU, peak RSS), against a manifest of N distinct text-to-video jobs read from a JSONL
prompts file, each row with its own id (a .txt file's ids are 8 hex digits of the prompt's
hash: at 100,000 rows two of them collide, and the manifest is rightly refused):

1. ``batchvid validate`` and ``batchvid plan`` (empty output directory): each < 1.5 s wall;
2. ``batchvid run`` against the simulator (its own process) at latency 0, ``--max-in-flight 16``,
   no rpm limit: every job succeeds, the run's own process's peak RSS < 300 MB (the run takes
   many minutes at 100,000). Each process's peak is sampled apart (``memwatch``: VmHWM of the
   run, of each analysis worker, of the simulator) and printed; wait4's figure, the largest of
   the run and the workers it waited for, is printed too but judges nothing;
3. the same ``batchvid run`` again, against a fresh counting simulator: every job skipped,
   0 requests, < 10 s wall (it replays the journal, checks every video against the size,
   mtime_ns and inode journaled with it, and rewrites the report files).

``--skip-run`` measures step 1 only (seconds instead of minutes). ``--keep DIR`` works in DIR
(made, or empty) and leaves the manifest and the finished output directory there, to time
further reruns of it (copy it first: a rerun rewrites its report files and ``.batchvid``).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _harness import GEEKAI, ChildRun, batchvid, check, count, run_child, run_env
from _harness import simulator as start_simulator
from memwatch import Watch

TARGET_CHECK_SECONDS = 1.5
TARGET_RUN_RSS_MB = 300.0
TARGET_RESUME_SECONDS = 10.0


def write_manifest(directory: Path, jobs: int) -> Path:
    """``jobs`` GeekAI text-to-video jobs from a JSONL prompts file with an id per row."""
    rows = directory / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"id": f"r{i:06d}", "prompt": f"Scene {i}: a lighthouse in weather number {i}"})
            + "\n"
            for i in range(jobs)
        ),
        encoding="utf-8",
    )
    path = directory / "hundredk.yaml"
    path.write_text(
        "version: 1\nname: hundredk\nprovider: geekai\ndefaults:\n  model: cogvideox-flash\n"
        "jobs:\n  - id: s\n    prompts_file: rows.jsonl\n",
        encoding="utf-8",
    )
    return path


def show(label: str, run: ChildRun) -> None:
    print(f"  {label:<22} exit {run.returncode}, wall {run.wall:6.2f} s, CPU {run.cpu:6.2f} s "
          f"(user {run.user:.2f}, sys {run.sys:.2f}), peak RSS {run.max_rss_mb:5.0f} MB")
    if run.returncode not in (0, 1):
        print(run.stdout[-1000:], run.stderr[-2000:], file=sys.stderr)


def checks(manifest: Path, out: Path) -> tuple[bool, bool]:
    """Step 1: validate and plan, each under the target; (targets met, manifest valid)."""
    # batchvid's bytecode written first (also where PYTHONDONTWRITEBYTECODE is set, as on the
    # development VM), as an installed package has it: no measured process compiles it.
    compileall.compile_dir(Path(__file__).resolve().parents[2] / "batchvid", quiet=1)
    validate = run_child(batchvid("validate", str(manifest)), env=run_env())
    show("batchvid validate", validate)
    plan = run_child(batchvid("plan", str(manifest), "--out", str(out)), env=run_env())
    show("batchvid plan", plan)
    worst = max(validate.wall, plan.wall)
    ok = validate.returncode == 0 and plan.returncode == 0 and worst < TARGET_CHECK_SECONDS
    print(f"  validate/plan worst {worst:.2f} s (target < {TARGET_CHECK_SECONDS:g} s): {check(ok)}")
    return ok, validate.returncode == 0


def run_all(manifest: Path, out: Path, jobs: int, label: str) -> tuple[ChildRun, dict[str, int], int, Watch]:
    """One ``batchvid run`` of the manifest against a fresh simulator at latency 0, the memory
    of every process sampled apart (``memwatch``): wait4's peak RSS is the largest of the run
    and the analysis workers it waited for, so ``run.max_rss_mb`` is set to the run's own."""
    with Watch(os.getpid()) as watch, start_simulator("--latency", "0") as sim:
        run = run_child(
            batchvid("run", str(manifest), "--out", str(out), "--base-url", sim.url + GEEKAI,
                     "--rpm", "1000000", "--max-in-flight", "16", "--no-progress"),
            env=run_env(),
        )
        requests = count(sim.stats())
    show(label, run)
    print(f"    {'':<22} (wait4's peak RSS: the largest of the run and its analysis workers)")
    for line in watch.lines(skip_watched=True):
        print(f"    {line}")
    own = watch.named("batchvid run")
    if own:
        print(f"    the run's RSS over time: {watch.at(own[0])}")
    workers = watch.named("python -c (analysis worker)")
    for worker in workers:
        print(f"    analysis worker {worker.pid}'s RSS over time: {watch.at(worker)}")
    snapshots = watch.named("python -c (replay snapshot)")
    for child in snapshots:
        print(f"    replay-snapshot child {child.pid}'s RSS over time: {watch.at(child)}")
    if own and (workers or snapshots):
        together = watch.peak_together([own[0], *workers, *snapshots])
        print(f"    the run and its child processes together: peak {together:.0f} MB (RSS summed per sample)")
    run = dataclasses.replace(run, max_rss_mb=own[0].hwm_mb if own else float("nan"))
    summary = json.loads((out / "report.json").read_text())["summary"] if run.returncode == 0 else {}
    return run, summary, requests, watch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--skip-run", action="store_true", help="validate and plan only")
    parser.add_argument("--skip-resume", action="store_true", help="no second run (the resume)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty")
    with contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(
            prefix="bench-100k-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        manifest = write_manifest(tmp, args.jobs)
        out = tmp / "out"
        print(f"{args.jobs:,} jobs (a JSONL prompts file), output on {tmp}")
        ok, valid = checks(manifest, out)
        if args.skip_run or not valid:
            return 0 if ok else 1
        start = time.perf_counter()
        run, summary, requests, watch = run_all(manifest, out, args.jobs, "batchvid run")
        done = summary.get("succeeded", 0)
        run_ok = run.returncode == 0 and done == args.jobs and run.max_rss_mb < TARGET_RUN_RSS_MB
        print(f"  run: {done:,} of {args.jobs:,} succeeded, {requests:,} requests, "
              f"{time.perf_counter() - start:.0f} s, the run's own peak RSS {run.max_rss_mb:.0f} MB "
              f"(target < {TARGET_RUN_RSS_MB:g} MB): {check(run_ok)}; largest worker "
              f"{max((p.hwm_mb for p in watch.named('python -c (analysis worker)')), default=0):.0f} MB")
        if args.skip_resume:
            return 0 if ok and run_ok else 1
        again, summary, requests, _ = run_all(manifest, out, args.jobs, "batchvid run (resume)")
        skipped = summary.get("skipped", 0)
        resume_ok = (again.returncode == 0 and skipped == args.jobs and requests == 0
                     and again.wall < TARGET_RESUME_SECONDS)
        print(f"  resume: {skipped:,} of {args.jobs:,} skipped, {requests} requests (target 0), "
              f"wall {again.wall:.2f} s (target < {TARGET_RESUME_SECONDS:g} s): {check(resume_ok)}")
    return 0 if ok and run_ok and resume_ok else 1


if __name__ == "__main__":
    sys.exit(main())
