"""Resume: rerunning a completed 10,000-job output directory sends nothing and takes < 3 s.

Run: ``.venv/bin/python tests/benchmarks/bench_resume.py [--jobs N] [--synthesize] [--keep DIR]``

``--keep DIR`` builds the directory in DIR and leaves it there; given again, it reruns the kept
directory without building it (profile a rerun with ``batchvid run DIR/resume.yaml --out DIR/out``).
``--build-only`` (with ``--keep``) stops once it is built: the first rerun of a directory (each
job's ``succeeded`` becomes ``skipped``, so every report file and report.html's cards change)
costs more than the later ones; time it again on copies, ``cp -al DIR COPY`` with a real copy
of ``COPY/out/.batchvid`` (hard links keep the videos' inodes, which the journal's ``stat`` pins).
``--ab TREE`` (with a built ``--keep DIR``) times a first and a later rerun of such copies with
this checkout and with another (TREE, e.g. a ``git worktree`` of main) in turn, ``--rounds`` times,
CPU from ``os.wait4``: this VM's CPU times move too much between minutes to compare otherwise.
``--generate`` (with ``--ab TREE``) makes the directory by a real simulated run with each tree's
code in turn (the first rerun copies what the run that generated its jobs recorded), ``--rounds``
times, in a fresh directory each time: CPU (``os.wait4``) of the generating run, then of its first
and a later rerun; then, in a process per tree, the generating run's report pass alone
(``write_outputs`` of the outcomes such a run has, its journal's records as generated jobs, CPU
of three passes).
``--as-generated`` (with a built ``--keep DIR``) first writes DIR/out's report files as the run
that generated its jobs writes them (every job ``succeeded`` by ``submit``, from its journal
record, and the record of their pieces), so that ``--ab`` then times the first rerun after a
generating run on a synthesized directory (``/tmp/r100k``: minutes instead of a full run).
It then leaves the replay snapshot such a run now leaves as it closes (timed: the child
process that writes it, CPU, wall and max RSS). ``--copy-reports copy2|touched`` (with ``--ab TREE``): the copies' report files are real copies
(new inodes; ``touched``: new mtimes too), as ``cp -r``, rsync or a CI cache restore leaves them
(the videos stay hard links: their journaled ``stat`` would otherwise have each one hashed again).
``--copy-videos copy2|touched`` (with ``--ab TREE``): the copies' videos are real copies too, so
their journaled ``stat`` no longer vouches for them (a first rerun hashes each; see
``.batchvid/verified-videos`` in docs/output-directory.md for what later reruns do);
``--reruns N`` times N reruns of each copy instead of two; ``--video-bytes N`` (with
``--synthesize``) pads each video to N bytes, so that hashing costs what real videos' does. ``--ab-dir DIR`` (with ``--ab TREE``): TREE's
reruns copy ``DIR/out`` instead, a copy of the same directory that TREE's own
``--as-generated`` prepared (its record of report pieces is only used by the code that wrote it).
``--replay`` also measures the journal replay alone, in this process after the reruns: its CPU
(best of three) and, traced by tracemalloc, the bytes and memory blocks its records keep per job.
``--jobs 100000 --synthesize`` builds the 100,000-job directory (a JSONL prompts file with an id
per row: see ``ID_COLLISIONS_FROM``) in several minutes, ~1.5 GB.

Building the completed directory:

- default: ``batchvid run`` against the simulator (own process) at latency 0, --max-in-flight 16,
  no rpm limit: about 70 s for 10,000 jobs on a 2-core machine.
- ``--synthesize`` (about 10 s): the manifest is loaded, and for every job the store API
  writes what a real run writes, in the same order and format: ``request.json`` from the
  provider's ``recorded_body``, the journal's ``submitting`` / ``submitted`` / ``succeeded``
  lines (``Journal.append``), ``response.json`` and ``video.mp4`` (a real simulator video, bytes
  varied per job so every sha256 differs; probed once with PyAV for the ``media`` record) and
  ``poster.jpg`` (made once, recorded in ``succeeded`` as a run records it, with the video's
  size, mtime_ns and inode). The one shortcut:
  the per-line fsync is skipped and replaced by one ``os.sync()``.

Then ``batchvid run`` (subprocess, interpreter start included) reruns it twice: first with
``--base-url`` on a dead loopback port (any request would fail the job), then against a
counting simulator whose stats must show zero requests. Each rerun verifies every video (by
the size, mtime_ns and inode journaled with it; a changed one is hashed) and rewrites the
report files. Target: exit 0, every job ``skipped``, zero requests,
under 3 s of wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _harness import GEEKAI, ROOT, batchvid, check, count, run_child, run_env, write_manifest
from _harness import simulator as start_simulator

TARGET_SECONDS = 3.0
TARGET_SECONDS_100K = 10.0
"""Issue 12: a finished 10,000-job directory reruns in < 3 s, a 100,000-job one in < 10 s."""


ID_COLLISIONS_FROM = 20_000
"""A .txt prompts file's ids are 8 hex digits of the prompt's hash: at 100,000 rows two of them
collide (the manifest is rightly refused), so larger manifests give each row its own id."""


def resume_manifest(directory: Path, jobs: int) -> Path:
    """``directory/resume.yaml``: ``jobs`` text-to-video jobs from a .txt prompts file, or, past
    ``ID_COLLISIONS_FROM``, a JSONL prompts file with an id per row (as ``bench_100k.py``)."""
    if jobs <= ID_COLLISIONS_FROM:
        return write_manifest(directory, jobs, name="resume")
    (directory / "resume.jsonl").write_text(
        "".join(json.dumps({"id": f"r{i:06d}", "prompt": f"Scene {i}: a lighthouse in weather number {i}"})
                + "\n" for i in range(jobs)),
        encoding="utf-8",
    )
    path = directory / "resume.yaml"
    path.write_text(
        "version: 1\nname: resume\nprovider: geekai\ndefaults:\n  model: cogvideox-flash\n"
        "jobs:\n  - id: s\n    prompts_file: resume.jsonl\n",
        encoding="utf-8",
    )
    return path


def dead_url() -> str:
    """A loopback port with nothing listening: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{GEEKAI}"


def sample_video(tmp: Path) -> bytes:
    """One real MP4 as the simulator serves it (cogvideox-flash defaults)."""
    from batchvid.simulator.video import MediaCache, VideoSpec

    data = MediaCache().video(VideoSpec(160, 90, 30, 1.0, False, 0))
    (tmp / "sample.mp4").write_bytes(data)
    return data


def synthesize(manifest_path: Path, out: Path, tmp: Path, video_bytes: int = 0) -> None:
    """Write a completed output directory with the store API, as the runner does per job;
    each video padded to ``video_bytes`` when it is shorter (``--video-bytes``)."""
    from batchvid.journal import Submitted, Submitting, Succeeded
    from batchvid.manifest import load_manifest
    from batchvid.media import probe
    from batchvid.poster import poster_jpeg
    from batchvid.providers import get_provider
    from batchvid.store import OutputDir, dumps, file_stat, hashing_writer, write_atomic

    manifest = load_manifest(manifest_path)
    provider = get_provider(manifest.provider)
    video = sample_video(tmp)
    media = probe(tmp / "sample.mp4").to_dict()
    poster = poster_jpeg(tmp / "sample.mp4")
    assert poster is not None
    poster_sha = hashlib.sha256(poster).hexdigest()
    store = OutputDir(out)
    clean = False
    with mock.patch("batchvid.store.os.fsync"):  # one os.sync() at the end instead
        store.open()
        try:
            for index, job in enumerate(manifest.jobs):
                job_dir = store.job_dir(job.id)
                request_id = f"bv-{job.key[:32]}"
                recorded = provider.recorded_body(job, request_id=request_id)
                write_atomic(job_dir / "request.json", dumps(recorded), durable=False)
                store.journal.append(Submitting(job.key, job.id, request_id))
                task_id = f"00000000-0000-4000-8000-{index:012d}"
                store.journal.append(Submitted(job.key, job.id, task_id))
                raw = {
                    "model": job.model, "progress": 100, "task_id": task_id,
                    "task_status": "succeed",
                    "video_result": [{"id": task_id, "url": f"http://127.0.0.1/files/0/{task_id}.mp4"}],
                }
                write_atomic(job_dir / "response.json", dumps(raw), durable=False)
                with hashing_writer(job_dir / "video.mp4") as writer:
                    # A trailing MP4 'free' box makes every file distinct and still valid (and,
                    # with ``video_bytes``, pads it to that size).
                    pad = max(0, video_bytes - len(video) - 16)
                    writer.write(video + (16 + pad).to_bytes(4, "big") + b"free" + index.to_bytes(8, "big")
                                 + bytes(pad))
                    writer.commit()
                    digest, size = writer.sha256, writer.size
                video_entry = {"path": f"jobs/{job.id}/video.mp4", "sha256": digest, "bytes": size}
                write_atomic(job_dir / "poster.jpg", poster, durable=False)
                poster_entry = {"path": f"jobs/{job.id}/poster.jpg", "sha256": poster_sha,
                                "bytes": len(poster)}
                stat = file_stat(job_dir / "video.mp4")  # as a run journals it, for the next run
                store.journal.append(
                    Succeeded(job.key, job.id, task_id, video_entry, None, media, poster_entry,
                              None, stat)
                )
            clean = True
        finally:
            # Closed as a finished run closes it (its lock file emptied): the rerun then need
            # not look for a killed run's temporary files in every job's folder.
            store.close(clean=clean)
    os.sync()


def measure_replay(out: Path) -> None:
    """The journal replay alone: CPU per job (best of three), and what its records keep."""
    import gc
    import resource
    import tracemalloc

    from batchvid.store import read_records

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    best = float("inf")
    for _ in range(3):
        start = cpu()
        jobs = len(read_records(out))
        best = min(best, cpu() - start)
    gc.collect()
    tracemalloc.start()
    records = read_records(out)
    kept = tracemalloc.take_snapshot().statistics("filename")
    tracemalloc.stop()
    size, blocks = sum(s.size for s in kept), sum(s.count for s in kept)
    print(f"  journal replay alone: {jobs:,} records, CPU {best:.2f} s ({best / jobs * 1e6:.1f} us per job), "
          f"kept {size / jobs:,.0f} bytes and {blocks / jobs:.1f} blocks per job")
    del records


def build_real(manifest: Path, out: Path) -> None:
    with start_simulator("--latency", "0") as sim:
        run = run_child(
            batchvid("run", str(manifest), "--out", str(out), "--base-url", sim.url + GEEKAI,
                     "--rpm", "1000000", "--max-in-flight", "16", "--no-progress"),
            env=run_env(),
        )
    if run.returncode != 0:
        raise SystemExit(f"building the directory failed ({run.returncode}): {run.stderr[-2000:]}")


def rerun(manifest: Path, out: Path, base_url: str, jobs: int) -> tuple[float, bool]:
    run = run_child(
        batchvid("run", str(manifest), "--out", str(out), "--base-url", base_url, "--no-progress"),
        env=run_env(),
    )
    report = json.loads((out / "report.json").read_text())
    skipped = report["summary"]["skipped"]
    ok = run.returncode == 0 and skipped == jobs
    print(f"    exit {run.returncode}, {skipped:,} of {jobs:,} skipped, wall {run.wall:.2f} s "
          f"(runner {report['timing']['seconds']:.2f} s), CPU {run.cpu:.2f} s, "
          f"max RSS {run.max_rss_mb:.0f} MB")
    if not ok:
        print(run.stdout[-1000:], run.stderr[-2000:], file=sys.stderr)
    return run.wall, ok


def alternate(tmp: Path, manifest: Path, other: Path, rounds: int, other_dir: Path | None = None,
              copy_reports: str | None = None, copy_videos: str | None = None, reruns: int = 2) -> None:
    """A first and a later rerun of a ``cp -al`` copy of ``tmp/out`` (its ``.batchvid`` a real
    copy), with this checkout's batchvid and ``other``'s in turn, ``rounds`` times: CPU from
    ``os.wait4``, bytecode written and used (as an installed package has it). ``other_dir``:
    ``other``'s reruns copy ``other_dir/out`` instead (a directory its own ``--as-generated``
    made: a generating run's record of report pieces is used only by the code that wrote it).
    ``copy_reports`` (``copy2`` or ``touched``): the report files real copies too (new inodes;
    ``touched``: new mtimes too), as ``cp -r``, rsync or a CI cache restore leaves them.
    ``copy_videos`` (``copy2`` or ``touched``): the videos too (``copy_videos_of``). ``reruns``:
    how many reruns of each copy (the first, then later ones)."""
    for number in range(1, rounds + 1):
        for label, tree, source in (("this", ROOT, tmp), ("other", other.resolve(), other_dir or tmp)):
            copy = tmp / f"ab-{label}"
            shutil.rmtree(copy, ignore_errors=True)
            subprocess.run(["cp", "-al", str(source / "out"), str(copy)], check=True)
            shutil.rmtree(copy / ".batchvid")
            shutil.copytree(source / "out" / ".batchvid", copy / ".batchvid")
            if copy_reports is not None:
                for name in REPORT_FILES:
                    (copy / name).unlink()
                    shutil.copy2(source / "out" / name, copy / name)
                    if copy_reports == "touched":
                        os.utime(copy / name)
            if copy_videos is not None:
                copy_videos_of(source / "out", copy, touched=copy_videos == "touched")
            first_and_later(f"round {number}, {label} ({tree}, {source / 'out'})", manifest, copy, tree, reruns)
            shutil.rmtree(copy)


REPORT_FILES = ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html")


def copy_videos_of(source: Path, copy: Path, *, touched: bool) -> None:
    """``copy``'s videos (hard links of ``source``'s) made real copies: new inodes (``touched``:
    new mtimes too), as ``cp -r``, rsync, tar or a CI cache restore leaves them, so that the
    size, mtime_ns and inode journaled with each no longer vouch for it."""
    with os.scandir(copy / "jobs") as jobs:
        for job in jobs:
            video = Path(job.path) / "video.mp4"
            if video.exists():
                video.unlink()
                shutil.copy2(source / "jobs" / job.name / "video.mp4", video)
                if touched:
                    os.utime(video)


def first_and_later(title: str, manifest: Path, out: Path, tree: Path, reruns: int = 2) -> None:
    """A first and later reruns of ``out`` with ``tree``'s batchvid (bytecode written and used)."""
    env = {**run_env(), "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": ""}
    for kind in ("first", *(["later"] * (reruns - 1))):
        run = run_child(batchvid("run", str(manifest.resolve()), "--out", str(out.resolve()),
                                 "--base-url", dead_url(), "--no-progress"), env=env, cwd=tree)
        print(f"  {title}: {kind} rerun exit {run.returncode}, CPU {run.cpu:.2f} s, wall {run.wall:.2f} s, "
              f"max RSS {run.max_rss_mb:.0f} MB", flush=True)
        if run.returncode != 0:
            print(run.stderr[-2000:], file=sys.stderr)


def generate(tmp: Path, jobs: int, other: Path, rounds: int) -> None:
    """``--generate``: a generating run, then its first and a later rerun, with this checkout's
    batchvid and ``other``'s in turn, ``rounds`` times; then each tree's generating report pass."""
    manifest = resume_manifest(tmp, jobs)
    trees = (("this", ROOT), ("other", other.resolve()))
    for number in range(1, rounds + 1):
        for label, tree in trees:
            out = tmp / f"gen-{label}"
            shutil.rmtree(out, ignore_errors=True)
            env = {**run_env(), "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": ""}
            with start_simulator("--latency", "0") as sim:
                run = run_child(batchvid("run", str(manifest.resolve()), "--out", str(out.resolve()), "--base-url",
                                         sim.url + GEEKAI, "--rpm", "1000000", "--max-in-flight", "16",
                                         "--no-progress"), env=env, cwd=tree)
            print(f"  round {number}, {label} ({tree}): generating run exit {run.returncode}, CPU {run.cpu:.2f} s "
                  f"(analysis workers included), wall {run.wall:.2f} s", flush=True)
            first_and_later(f"round {number}, {label}", manifest, out, tree)
    for label, tree in trees:
        env = {**run_env(), "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": ""}
        run = run_child([sys.executable, "-c", _GENERATED_PASS, str(manifest.resolve()), str((tmp / "gen-this").resolve()),
                         str(tmp / f"pass-{label}")], env=env, cwd=tree)
        print(f"  {label}: {run.stdout.strip() or run.stderr[-2000:]}", flush=True)


def as_generated(manifest: Path, out: Path) -> None:
    """``--as-generated``: ``out``'s report files written as the run that generated its jobs
    writes them, with this checkout's batchvid (its code's record), then the replay snapshot
    such a run leaves as it closes (``snapshot.save_after_run``'s child, timed: CPU, wall and
    max RSS of that child), the snapshot found there deleted first (a generating run finds none)."""
    run = run_child([sys.executable, "-c", _GENERATED_PASS, str(manifest.resolve()), str(out.resolve()),
                     str(out.resolve()), "1"], env={"PYTHONDONTWRITEBYTECODE": ""})
    print(f"  {out}: report files written as its generating run's: {run.stdout.strip() or run.stderr[-2000:]}")
    from batchvid import snapshot

    path = (out / ".batchvid" / "journal.jsonl").resolve()
    saved = path.with_name(snapshot.SNAPSHOT_NAME)
    saved.unlink(missing_ok=True)
    command = snapshot.child_command(path)
    assert command is not None, "no Python interpreter to start the child with"
    run = run_child(command, env={"PYTHONDONTWRITEBYTECODE": ""})
    size = saved.stat().st_size / 1e6 if saved.exists() else 0.0
    print(f"  {out}: replay snapshot left as its generating run leaves it: exit {run.returncode}, "
          f"CPU {run.cpu:.2f} s, wall {run.wall:.2f} s, max RSS {run.max_rss_mb:.0f} MB (the child), "
          f"{size:.1f} MB written{'' if saved.exists() else ' -- NONE'}{run.stderr[-2000:]}", flush=True)


_GENERATED_PASS = """
import resource, shutil, sys, time
from pathlib import Path
from batchvid.manifest import load_manifest
from batchvid.report import Outcome, RunInfo, write_outputs
from batchvid.store import read_records
manifest, source, out = load_manifest(Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
records = read_records(source)
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
times = []
for attempt in range(int(sys.argv[4]) if len(sys.argv) > 4 else 3):
    if out == source:  # --as-generated: in place
        for name in ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html",
                     ".batchvid/report-pieces"):
            (out / name).unlink(missing_ok=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(source / ".batchvid", out / ".batchvid", ignore=shutil.ignore_patterns("report-pieces"))
    outcomes = []
    for job in manifest.jobs:
        r = records[job.key]
        o = Outcome(job, "succeeded", "submit", task_id=r.task_id, video=r.video, cover=r.cover, media=r.media,
                    poster=r.poster, provided=r.provided or {}, attempts=1, seconds=0.5)
        o.pack()
        outcomes.append(o)
    info = RunInfo(str(sys.argv[1]), manifest.name, "geekai", 0, None, "2026-01-01T00:00:00+00:00",
                   "2026-01-01T00:00:09+00:00", 9.0, 0.0, "CNY")
    start = cpu()
    write_outputs(out, outcomes, info)
    times.append(cpu() - start)
print(f"generating run's report pass of {len(outcomes):,} jobs: CPU " + ", ".join(f"{t:.2f}" for t in times) + " s")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--synthesize", action="store_true", help="write the directory with the store API instead"
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="build the directory in DIR and leave it there (reused when DIR/out exists), "
        "to rerun or profile it again: batchvid run DIR/resume.yaml --out DIR/out",
    )
    parser.add_argument(
        "--build-only", action="store_true",
        help="with --keep: build the directory and stop (copy it with `cp -al` to time a first "
        "rerun, whose every job turns succeeded -> skipped, more than once)",
    )
    parser.add_argument(
        "--replay", action="store_true",
        help="also measure the journal replay alone (CPU, bytes and blocks kept per job)",
    )
    parser.add_argument(
        "--ab", type=Path, metavar="TREE",
        help="with --keep DIR (built): instead of the two reruns, time a first and a later rerun "
        "of copies of DIR/out with this checkout and with TREE (another checkout) in turn",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --ab: rounds of the two trees")
    parser.add_argument(
        "--copy-reports", choices=("copy2", "touched"),
        help="with --ab: the copies' report files real copies (new inodes; touched: new mtimes too), "
        "as cp -r, rsync or a CI cache restore leaves them; by default hard links",
    )
    parser.add_argument(
        "--copy-videos", choices=("copy2", "touched"),
        help="with --ab: the copies' videos real copies (new inodes; touched: new mtimes too), as cp -r, "
        "rsync, tar or a CI cache restore leaves them (the size, mtime_ns and inode journaled with each no "
        "longer vouch for it); by default hard links",
    )
    parser.add_argument(
        "--video-bytes", type=int, default=0, metavar="N",
        help="with --synthesize: each video padded to N bytes (a trailing MP4 free box; default: ~3 KB, "
        "the simulator's clip), so that hashing them costs what real videos' does",
    )
    parser.add_argument("--reruns", type=int, default=2,
                        help="with --ab: reruns of each copy, the first and later ones (default 2)")
    parser.add_argument(
        "--ab-dir", type=Path, metavar="DIR",
        help="with --ab TREE: TREE's reruns copy DIR/out (made by TREE's own --keep DIR --as-generated) "
        "instead of this --keep DIR's",
    )
    parser.add_argument(
        "--as-generated", action="store_true",
        help="with --keep DIR (built): first write DIR/out's report files as its generating run would",
    )
    parser.add_argument(
        "--generate", action="store_true",
        help="with --ab TREE: a real generating run with each tree, then its first and a later rerun "
        "(CPU of each), and each tree's generating report pass alone",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            tmp = args.keep
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-resume-")))
        out = tmp / "out"
        start = time.perf_counter()
        if args.generate:
            if args.ab is None:
                parser.error("--generate needs --ab TREE")
            generate(tmp, args.jobs, args.ab, args.rounds)
            return 0
        if args.keep is not None and (out / ".batchvid" / "journal.jsonl").exists():
            manifest = tmp / "resume.yaml"
            how = "kept from an earlier run"
        else:
            manifest = resume_manifest(tmp, args.jobs)
            if args.synthesize:
                synthesize(manifest, out, tmp, args.video_bytes)
            else:
                build_real(manifest, out)
            how = "synthesized with the store API" if args.synthesize else "real run against the simulator"
        print(f"completed directory of {args.jobs:,} jobs: {how}, {time.perf_counter() - start:.1f} s")
        if args.as_generated:
            as_generated(manifest, out)
        if args.build_only:
            return 0
        if args.ab is not None:
            alternate(tmp, manifest, args.ab, args.rounds, args.ab_dir, args.copy_reports, args.copy_videos,
                      args.reruns)
            return 0
        print("  rerun 1, --base-url on a dead port:")
        wall_dead, ok_dead = rerun(manifest, out, dead_url(), args.jobs)
        with start_simulator("--latency", "0") as sim:
            print("  rerun 2, against a counting simulator:")
            wall_sim, ok_sim = rerun(manifest, out, sim.url + GEEKAI, args.jobs)
            requests = count(sim.stats())
        print(f"    HTTP requests received by the simulator: {requests}")
        if args.replay:  # last: a child's max RSS counts this process's at the fork
            measure_replay(out)
    worst = max(wall_dead, wall_sim)
    target = TARGET_SECONDS if args.jobs <= 10_000 else TARGET_SECONDS_100K
    ok = ok_dead and ok_sim and requests == 0 and worst < target
    print(f"worst rerun {worst:.2f} s (target < {target:g} s), requests {requests} "
          f"(target 0): {check(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
