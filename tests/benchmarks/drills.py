"""The reliability figures of the README: bigger fault and crash drills, counted.

Run: ``.venv/bin/python tests/benchmarks/drills.py [--jobs N] [--crash-jobs N] [--kills N]``

For each provider it runs the fault drill of ``tests/test_drill_faults.py`` (default 1,000 jobs,
20% of responses faulty, server rpm and concurrency below the client's) and the crash drill of
``tests/test_drill_crash.py`` (a subprocess killed with SIGKILL ``--kills`` times, rerun each
time, then finished), then prints one Markdown table: jobs run, faults injected by kind, crashes
survived, duplicate creations, corrupt or left-over files, secrets leaked, and the hostile
inputs the test suite tries.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchvid.store import sha256_file
from batchvid.verify import verify_dir
from tests import test_hostile_servers, test_secrets
from tests.test_drill_crash import KEY as CRASH_KEY
from tests.test_drill_crash import run_crash_drill, temp_files
from tests.test_drill_faults import KEY as FAULT_KEY
from tests.test_drill_faults import files_with, leftovers, run_fault_drill
from tests.test_hostile_manifests import hostile_manifest_count

PROVIDERS = ("geekai", "bigmodel")


def corrupt_videos(drill: object) -> int:
    """Succeeded jobs whose video does not re-hash to its record, plus videos of failed jobs."""
    bad = 0
    for o in drill.outcomes:  # type: ignore[attr-defined]
        video = drill.out / "jobs" / o.job.id / "video.mp4"  # type: ignore[attr-defined]
        if o.status == "succeeded":
            bad += sha256_file(video) != (o.video["sha256"], o.video["bytes"])
        else:
            bad += video.exists()
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per provider in the fault drill")
    parser.add_argument("--crash-jobs", type=int, default=60, help="jobs per provider in the crash drill")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per provider in the crash drill")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    rows: list[tuple[str, ...]] = []
    totals: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchvid-drills-") as tmp:
        root = Path(tmp)
        for provider in PROVIDERS:
            drill = run_fault_drill(root / f"faults-{provider}", provider, count=args.jobs, seed=args.seed)
            faults = drill.stats["faults"]
            failed = collections.Counter(drill.failed_kinds().values())
            statuses = collections.Counter(o.status for o in drill.outcomes)
            problems, _ = verify_dir(drill.out)
            totals["jobs"] += len(drill.jobs)
            totals["faults"] += sum(faults.values())
            totals["duplicates"] += sum(n - 1 for n in drill.stats["tasks_by_body"].values())
            totals["corrupt"] += corrupt_videos(drill) + len(problems) + len(leftovers(drill.out))
            totals["leaks"] += len(files_with(drill.out, FAULT_KEY)) + (FAULT_KEY in drill.log)
            rows.append(
                (
                    f"fault drill, {provider}",
                    f"{len(drill.jobs)} jobs: {statuses['succeeded']} succeeded, {statuses['failed']} failed "
                    f"({', '.join(f'{n} {k}' for k, n in sorted(failed.items()))})",
                    ", ".join(f"{k} {n}" for k, n in sorted(faults.items())),
                    f"{drill.stats['requests'][f'{provider}.create'].get('429', 0)} creates refused 429; "
                    f"client peak {drill.peak_creates_per_window()} creates/60 s (--rpm {drill.client_rpm:g})",
                    f"{sum(n - 1 for n in drill.stats['tasks_by_body'].values())} duplicate tasks; "
                    f"{corrupt_videos(drill)} corrupt videos; {len(problems)} verify problems; "
                    f"{len(leftovers(drill.out))} temp files",
                    f"{drill.wall_seconds:.0f} s",
                )
            )
            # mid-report needs every job finished, so it comes last; the others cycle before it.
            moments = ("random", "after-create", "mid-download", "random")
            schedule = tuple((moments * args.kills)[: args.kills - 1]) + ("mid-report",)
            (root / f"crash-{provider}").mkdir()
            crash = run_crash_drill(
                root / f"crash-{provider}", provider, count=args.crash_jobs, moments=schedule, seed=args.seed
            )
            crash_problems, _ = verify_dir(crash.out)
            stranded = crash.stranded()
            totals["crashes"] += crash.crashes
            totals["duplicates"] += crash.duplicates()
            totals["corrupt"] += len(crash_problems) + len(temp_files(crash.out))
            totals["leaks"] += len(files_with(crash.out, CRASH_KEY)) + (CRASH_KEY in crash.final_stderr)
            totals["jobs"] += args.crash_jobs
            hit = collections.Counter(k.moment for k in crash.kills if k.killed)
            rows.append(
                (
                    f"crash drill, {provider}",
                    f"{args.crash_jobs} jobs, {crash.crashes} SIGKILLs survived "
                    f"({', '.join(f'{n} {m}' for m, n in sorted(hit.items()))}); final exit {crash.final_exit}",
                    f"creates cut off by a kill: {sum(k.new_unanswered for k in crash.kills)}",
                    f"{len(stranded)} jobs stranded as {'/'.join(sorted(set(stranded.values()))) or '-'} "
                    f"({crash.stranded_with_task()} of them had reached the server)",
                    f"{crash.duplicates()} duplicate tasks; {len(crash_problems)} verify problems; "
                    f"{len(temp_files(crash.out))} temp files",
                    "",
                )
            )
    hostile_servers = len([n for n in dir(test_hostile_servers) if n.startswith("test_")])
    secrets = len([n for n in dir(test_secrets) if n.startswith("test_")])
    print("| drill | jobs and outcome | faults injected | limits / cut-off creates | damage | wall time |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"Totals: {totals['jobs']} jobs, {totals['faults']} injected faults, {totals['crashes']} crashes "
        f"survived, {totals['duplicates']} duplicate creations, {totals['corrupt']} corrupt or "
        f"left-over files, {totals['leaks']} secret leaks; hostile inputs tried by the test suite: "
        f"{hostile_manifest_count()} manifests, {hostile_servers} server behaviours (some "
        f"parametrized), {secrets} key-echo scenarios. ({time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
