"""Client CPU cost per job: what batchvid itself spends to create, poll, download, probe and write.

Run: ``.venv/bin/python tests/benchmarks/bench_client_cost.py [--jobs N] [--max-in-flight N]
[--no-profile]``

The simulator runs in its own process at latency 0 (BigModel: every job is one create, one poll
that finds it done, one download of a small MP4). ``batchvid run`` runs as a subprocess and its
user + system CPU comes from ``os.wait4`` on its pid. The per-job figure is *marginal*: the CPU
of an N-job run minus that of a 10-job run (interpreter start, imports and report writing),
divided by the difference in jobs. Target: < 5 ms of client CPU per job.

Then the same run under cProfile, grouped by where the time goes (top three groups and top
functions). cProfile sees the event-loop thread only: the PyAV probe runs in worker threads, so
it is measured on its own, in this process, on a video the run downloaded.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _harness import (
    BIGMODEL,
    PYTHON,
    ChildRun,
    SimulatorProcess,
    batchvid,
    check,
    count,
    run_child,
    run_env,
    write_manifest,
)
from _harness import simulator as start_simulator

TARGET_MS = 5.0
SMALL = 10

GROUPS = (
    ("filesystem syscalls (open/fsync/mkdir/rename/write/unlink)", (
        "posix.", "_io.", "'write' of", "'flush' of", "'close' of", "tempfile.py", "pathlib.py",
        "shutil.py",
    )),
    ("HTTP client (httpx, httpcore, h11)", ("/httpx/", "/httpcore/", "/h11/")),
    ("event loop and sockets (anyio, asyncio, select, socket)", (
        "/anyio/", "/asyncio/", "selectors.py", "select.", "_socket.", "socket.py", "ssl.py",
        "_ssl.",
    )),
    ("JSON encode/decode", ("/json/", "_json")),
    ("hashing", ("_hashlib", "hashlib")),
    ("imports and interpreter start", ("<frozen", "importlib", "marshal", "builtins.compile")),
    ("batchvid's own code", ("/batchvid/",)),
)


def group_of(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    where = f"{filename}:{name}"
    for group, needles in GROUPS:
        if any(needle in where for needle in needles):
            return group
    return "other (yaml, jsonschema, stdlib)"


def run_once(
    url: str, jobs: int, cap: int, tmp: Path, label: str, *, profile: Path | None = None
) -> ChildRun:
    manifest = write_manifest(tmp, jobs, provider="bigmodel", name=label)
    argv = batchvid(
        "run", str(manifest), "--out", str(tmp / label), "--base-url", url + BIGMODEL,
        "--rpm", "1000000", "--max-in-flight", str(cap), "--poll-interval", "0.01:0.05",
        "--no-progress",
    )
    if profile is not None:
        argv = [PYTHON, "-m", "cProfile", "-o", str(profile), *argv[1:]]
    run = run_child(argv, env=run_env("bigmodel"))
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"batchvid run exited {run.returncode}")
    return run


def probe_cost(video: Path, rounds: int = 200) -> float:
    from batchvid.media import probe

    probe(video)
    start = time.process_time()
    for _ in range(rounds):
        probe(video)
    return (time.process_time() - start) / rounds


def show_profile(path: Path) -> None:
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    groups: dict[str, float] = defaultdict(float)
    for key, value in raw.items():
        groups[group_of(key)] += value[2]
    print(f"cProfile, event-loop thread, {total:.2f} s profiled (profiling inflates Python code; "
          "shares are of the profiled time):")
    for rank, (group, seconds) in enumerate(sorted(groups.items(), key=lambda kv: -kv[1]), 1):
        marker = "  <- top 3" if rank <= 3 else ""
        print(f"  {100 * seconds / total:5.1f} %  {seconds:6.2f} s  {group}{marker}")
    print("top functions by own time:")
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]
    for (filename, line, name), value in top:
        where = name if filename == "~" else f"{Path(filename).name}:{line}({name})"
        print(f"  {100 * value[2] / total:5.1f} %  {value[1]:8d} calls  {where}")


async def _bare_httpx(url: str, jobs: int, cap: int) -> None:
    """The same four requests per job as batchvid (create, poll, video, cover), nothing else."""
    import anyio
    import httpx

    auth = {"Authorization": "Bearer bench"}
    slots = anyio.Semaphore(cap)
    async with (
        httpx.AsyncClient(base_url=url + BIGMODEL, headers=auth, timeout=60) as api,
        httpx.AsyncClient(timeout=60) as files,
        anyio.create_task_group() as group,
    ):

        async def job(index: int) -> None:
            async with slots:
                body = {"model": "cogvideox-flash", "prompt": f"job {index}", "request_id": f"r{index}"}
                task = (await api.post("/videos/generations", json=body)).json()
                while True:
                    await anyio.sleep(0.01)
                    result = (await api.get(f"/async-result/{task['id']}")).json()
                    if result["task_status"] == "SUCCESS":
                        break
            video = result["video_result"][0]
            async with files.stream("GET", video["url"]) as response:
                async for _ in response.aiter_bytes(1 << 20):
                    pass
            await files.get(video["cover_image_url"])

        for index in range(jobs):
            group.start_soon(job, index)


def bare_httpx_cost(url: str, jobs: int, cap: int) -> float:
    import anyio

    start = time.process_time()
    anyio.run(_bare_httpx, url, jobs, cap)
    return 1000 * (time.process_time() - start) / jobs


def marginal(
    sim: SimulatorProcess, jobs: int, cap: int, root: Path, dirs: list[Path]
) -> tuple[float, ChildRun, Path]:
    """(ms of client CPU per job beyond a 10-job run, the N-job run, its temp dir in ``dirs``)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cost-", dir=root))
    dirs.append(tmp)  # removed by the caller, even if a run fails
    sim.reset()  # BigModel request ids are remembered: the same jobs again would be duplicates
    small = run_once(sim.url, SMALL, cap, tmp, "small")
    sim.reset()
    big = run_once(sim.url, jobs, cap, tmp, "big")
    return 1000 * (big.cpu - small.cpu) / (jobs - SMALL), big, tmp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    roots = [Path(tempfile.gettempdir())]
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        roots.append(Path("/dev/shm"))
    dirs: list[Path] = []
    ok = True
    try:
        with start_simulator("--latency", "0") as sim:
            print(f"{args.jobs} jobs at latency 0 (BigModel: create, 1 poll, video, cover), "
                  f"--max-in-flight {args.max_in_flight}; simulator in its own process")
            for root in roots:
                per_job, big, _ = marginal(sim, args.jobs, args.max_in_flight, root, dirs)
                requests = count(sim.stats())
                ok = ok and per_job < TARGET_MS
                print(f"  output on {root} ({fs_type(root)}):")
                print(f"    requests per job:             {requests / args.jobs:.2f}")
                print(f"    client CPU, {args.jobs} jobs:         {big.cpu:6.2f} s  (wall {big.wall:.2f} s)")
                print(f"    client CPU per job, all-in:   {1000 * big.cpu / args.jobs:6.2f} ms")
                print(f"    client CPU per job, marginal: {per_job:6.2f} ms  (target < {TARGET_MS:g} ms)"
                      f" -> {check(per_job < TARGET_MS)}")
                print(f"      of which kernel (system):   {1000 * big.sys / args.jobs:6.2f} ms")
            print(f"  reference: bare httpx, same requests: "
                  f"{bare_httpx_cost(sim.url, args.jobs, args.max_in_flight):.2f} ms per job")
            print(f"  reference: creating one file on {roots[0]}: {create_cost(dirs[0]):.3f} ms CPU")
            video = next((dirs[0] / "big" / "jobs").glob("*/video.mp4"))
            print(f"  PyAV probe (worker thread):   {1000 * probe_cost(video):6.2f} ms per video")
            if not args.no_profile:
                sim.reset()
                profile = dirs[0] / "client.prof"
                run_once(sim.url, args.jobs, args.max_in_flight, dirs[0], "profiled", profile=profile)
                show_profile(profile)
    finally:
        for tmp in dirs:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def create_cost(directory: Path, rounds: int = 500) -> float:
    """CPU ms to create, write and close one small new file (the kernel's share of every write)."""
    target = directory / "create-cost"
    target.mkdir()
    start = time.process_time()
    for index in range(rounds):
        (target / f"f{index}").write_bytes(b"x" * 100)
    return 1000 * (time.process_time() - start) / rounds


if __name__ == "__main__":
    sys.exit(main())
