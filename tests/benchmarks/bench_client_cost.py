"""Client CPU cost per job: batchvid against bare httpx making the same requests, side by side.

Run: ``.venv/bin/python tests/benchmarks/bench_client_cost.py [--jobs N] [--max-in-flight N]
[--out-root DIR] [--no-profile] [--only-default] [--ab TREE | --ab-loop] [--rounds N]
[--instructions]``

One simulator runs in its own process at latency 0 (BigModel: every job is one create, one poll
that finds it done, the video and the cover). Against it, in one run, for each transport
(``aiohttp``, ``httpx``) and event loop (uvloop, asyncio's own):

- ``batchvid run`` as a subprocess, its user + system CPU from ``os.wait4`` on its pid (its
  analysis worker processes included: it waits for them as it exits): create, poll, download,
  the analysis (probe, quality signals, poster), and every write (request/response JSON,
  video, cover, poster, journal fsyncs); and, apart, the run process's own CPU (all its
  threads, without the analysis workers: ``getrusage(RUSAGE_SELF)`` as it exits), which is the
  event loop's HTTP, journal, files, events and display, and their kernel part;
- bare httpx: an ``AsyncClient`` on that transport making the same four requests per job and
  nothing else (no files), in this process.

Every figure is *marginal*: (CPU of an N-job run - CPU of a 10-job run) / (N - 10), so
interpreter start, imports and report writing are out. Target: batchvid on its defaults
(aiohttp, uvloop) spends no more client CPU per job than bare httpx on httpx's default transport
and asyncio's loop (the HTTP library on its own, as a user would run it).

``--ab TREE``: instead, batchvid on its defaults from this checkout and from TREE (another
checkout of batchvid, say ``git worktree add /tmp/main main``), alternated ``--rounds`` times
against one simulator (each round in the other order than the one before): the same marginal
figures side by side, medians last. With ``--instructions``, each run goes under valgrind's
cachegrind instead (slow: ~1 min a run) and the figure is the run process's user-space
instructions per job (all its threads, not the analysis workers), which this shared VM's
CPU-time noise (up to +-20 % between identical runs) does not blur. ``--ab-loop``: the same for this checkout on uvloop (its
default) and on asyncio's own loop (``--no-uvloop``).

Then the default run under cProfile, grouped by where the time goes. cProfile sees the
event-loop thread only: the PyAV analysis runs in worker processes (after the first 8 clips),
so it is measured on its own.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
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
    run_child,
    run_env,
    write_manifest,
)
from _harness import simulator as start_simulator

SMALL = 10

GROUPS = (
    ("filesystem syscalls (open/fsync/mkdir/rename/write/unlink)", (
        "posix.", "_io.", "'write' of", "'flush' of", "'close' of", "tempfile.py", "pathlib.py",
        "shutil.py",
    )),
    ("HTTP client (httpx, httpcore, h11, aiohttp)", (
        "/httpx/", "/httpcore/", "/h11/", "/aiohttp/", "/httpx_aiohttp/", "/multidict/", "/yarl/",
        "transport.py",
    )),
    ("event loop and sockets (anyio, asyncio, select, socket)", (
        "/anyio/", "/asyncio/", "uvloop", "selectors.py", "select.", "_socket.", "socket.py", "ssl.py",
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


VARIANTS = {
    ("aiohttp", True): [],
    ("aiohttp", False): ["--no-uvloop"],
    ("httpx", True): ["--transport", "httpx"],
    ("httpx", False): ["--transport", "httpx", "--no-uvloop"],
}
"""(transport, uvloop) -> ``batchvid run`` options; the first is batchvid's default."""


OWN_USAGE = """\
import atexit, resource, runpy, sys
def _own(path):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "w") as out:
        out.write(f"{usage.ru_utime} {usage.ru_stime}")
atexit.register(_own, sys.argv[1])
sys.argv = ["batchvid", *sys.argv[2:]]
runpy.run_module("batchvid", run_name="__main__", alter_sys=True)
"""
"""``python -c OWN_USAGE FILE ARGS``: ``batchvid ARGS``, writing the process's own user and
system CPU seconds (its threads, not its child processes) to FILE as it exits."""


@dataclass
class Run:
    child: ChildRun
    own_user: float
    own_sys: float
    instructions: int = 0
    """User-space instructions of the run process (``--instructions``), else 0."""


def run_once(
    url: str, jobs: int, cap: int, tmp: Path, label: str, *, options: list[str],
    profile: Path | None = None, tree: Path | None = None, instructions: bool = False,
) -> Run:
    manifest = write_manifest(tmp, jobs, provider="bigmodel", name=label)
    own = tmp / f"{label}.own"
    args = (
        "run", str(manifest), "--out", str(tmp / label), "--base-url", url + BIGMODEL,
        "--rpm", "1000000", "--max-in-flight", str(cap), "--poll-interval", "0.01:0.05",
        "--no-progress", *options,
    )
    argv = [PYTHON, "-c", OWN_USAGE, str(own), *args]
    counts = tmp / f"{label}.cachegrind"
    if profile is not None:
        argv = [PYTHON, "-m", "cProfile", "-o", str(profile), *batchvid(*args)[1:]]
    elif instructions:
        argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={counts}",
                *batchvid(*args)]
    run = run_child(argv, env=run_env("bigmodel"), **({"cwd": tree} if tree is not None else {}))
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"batchvid run exited {run.returncode}")
    user, system = (float(x) for x in own.read_text().split()) if own.exists() else (0.0, 0.0)
    return Run(run, user, system, _instructions(counts) if instructions else 0)


def _instructions(counts: Path) -> int:
    """The total of a cachegrind output file's ``summary:`` line (instructions read)."""
    for line in counts.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {counts}")


def analysis_cost(video: Path, rounds: int = 200) -> float:
    """CPU seconds of ``media.analyse`` (probe, signals, poster in one pass) on ``video``."""
    from batchvid.media import analyse

    analyse(video)
    start = time.process_time()
    for _ in range(rounds):
        analyse(video)
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


async def _bare_httpx(url: str, jobs: int, cap: int, kind: str) -> None:
    """The same four requests per job as batchvid (create, poll, video, cover), nothing else."""
    import anyio
    import httpx

    from batchvid.transport import make_transport

    def transport() -> httpx.AsyncBaseTransport | None:
        return None if kind == "httpx" else make_transport("aiohttp")

    auth = {"Authorization": "Bearer bench"}
    slots = anyio.Semaphore(cap)
    tag = f"{kind}-{jobs}-"
    async with (
        httpx.AsyncClient(base_url=url + BIGMODEL, headers=auth, timeout=60, transport=transport()) as api,
        httpx.AsyncClient(timeout=60, transport=transport()) as files,
        anyio.create_task_group() as group,
    ):

        async def job(index: int) -> None:
            async with slots:
                body = {"model": "cogvideox-flash", "prompt": f"job {index}", "request_id": f"{tag}{index}"}
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


def bare_httpx_cost(sim: SimulatorProcess, jobs: int, cap: int, kind: str, uvloop: bool) -> float:
    """Marginal ms of CPU per job of bare httpx on ``kind``'s transport, in this process."""
    import anyio

    from batchvid.transport import backend_options

    spent = []
    for n in (SMALL, jobs):
        sim.reset()
        start = time.process_time()
        anyio.run(_bare_httpx, sim.url, n, cap, kind, backend_options=backend_options(uvloop))
        spent.append(time.process_time() - start)
    return 1000 * (spent[1] - spent[0]) / (jobs - SMALL)


@dataclass
class Marginal:
    """Milliseconds of CPU per job beyond a 10-job run, and the N-job run."""

    cpu: float
    """The run and its analysis workers (``os.wait4``)."""
    kernel: float
    """The system part of ``cpu``."""
    own: float
    """The run process alone: event loop and its threads, no analysis workers."""
    own_kernel: float
    big: ChildRun
    instructions: float = 0.0
    """Millions of user-space instructions of the run process per job (``--instructions``)."""


def marginal(
    sim: SimulatorProcess, jobs: int, cap: int, root: Path, dirs: list[Path], options: list[str],
    tree: Path | None = None, instructions: bool = False,
) -> Marginal:
    """The marginal figures of one N-job run (its temp dir goes in ``dirs``)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-cost-", dir=root))
    dirs.append(tmp)  # removed by the caller, even if a run fails
    sim.reset()  # BigModel request ids are remembered: the same jobs again would be duplicates
    small = run_once(sim.url, SMALL, cap, tmp, "small", options=options, tree=tree, instructions=instructions)
    sim.reset()
    big = run_once(sim.url, jobs, cap, tmp, "big", options=options, tree=tree, instructions=instructions)

    def per_job(b: float, s: float) -> float:
        return 1000 * (b - s) / (jobs - SMALL)

    return Marginal(
        per_job(big.child.cpu, small.child.cpu), per_job(big.child.sys, small.child.sys),
        per_job(big.own_user + big.own_sys, small.own_user + small.own_sys),
        per_job(big.own_sys, small.own_sys), big.child,
        (big.instructions - small.instructions) / (jobs - SMALL) / 1e6,
    )


def ab(sim: SimulatorProcess, jobs: int, cap: int, root: Path, dirs: list[Path],
       contenders: dict[str, tuple[Path | None, list[str]]], rounds: int, instructions: bool = False) -> None:
    """``contenders`` (label -> checkout, None for this one, and ``batchvid run`` options),
    alternated, each round in the other order than the one before; ``instructions``: counted
    by cachegrind instead of timed."""
    rows: dict[str, list[Marginal]] = {label: [] for label in contenders}
    for index in range(rounds):
        order = list(contenders.items())
        for label, (tree, options) in order if index % 2 == 0 else order[::-1]:
            m = marginal(sim, jobs, cap, root, dirs, options, tree=tree, instructions=instructions)
            rows[label].append(m)
            if instructions:
                print(f"  round {index} {label:10s} run process {m.instructions:7.3f} M instructions per job "
                      "(user space, all its threads)", flush=True)
                continue
            print(f"  round {index} {label:10s} run+workers {m.cpu:6.2f} ms (kernel {m.kernel:5.2f})  "
                  f"run process {m.own:6.2f} ms (kernel {m.own_kernel:5.2f})  wall {m.big.wall:5.2f} s",
                  flush=True)
    for label, ms in rows.items():
        def median(values: list[float]) -> float:
            return statistics.median(values)
        if instructions:
            print(f"  median {label:10s} run process {median([m.instructions for m in ms]):7.3f} M instructions per job")
            continue
        print(f"  median {label:10s} run+workers {median([m.cpu for m in ms]):6.2f} ms "
              f"(kernel {median([m.kernel for m in ms]):5.2f})  run process "
              f"{median([m.own for m in ms]):6.2f} ms (kernel {median([m.own_kernel for m in ms]):5.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--out-root", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--only-default", action="store_true", help="aiohttp and uvloop only")
    parser.add_argument("--ab", type=Path, metavar="TREE", help="compare with another checkout")
    parser.add_argument("--ab-loop", action="store_true",
                        help="compare this checkout on uvloop (its default) and on asyncio's loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true",
                        help="with --ab or --ab-loop: count the run process's instructions (cachegrind)")
    args = parser.parse_args()
    root, n, cap = args.out_root, args.jobs, args.max_in_flight
    dirs: list[Path] = []
    ok = True
    try:
        with start_simulator("--latency", "0") as sim:
            print(f"{n} jobs at latency 0 (BigModel: create, 1 poll, video, cover), "
                  f"--max-in-flight {cap}; simulator in its own process; output on {root} "
                  f"({fs_type(root)}); marginal CPU per job (N - {SMALL} jobs):")
            if args.ab is not None or args.ab_loop:
                contenders: dict[str, tuple[Path | None, list[str]]] = (
                    {"uvloop": (None, []), "asyncio": (None, ["--no-uvloop"])} if args.ab_loop
                    else {"this": (None, []), args.ab.name: (args.ab.resolve(), [])}
                )
                ab(sim, n, cap, root, dirs, contenders, args.rounds, args.instructions)
                return 0
            rows = {}
            variants = list(VARIANTS.items())[: 1 if args.only_default else None]
            for (kind, uvloop), options in variants:
                m = marginal(sim, n, cap, root, dirs, options)
                bare = bare_httpx_cost(sim, n, cap, kind, uvloop)
                rows[kind, uvloop] = m.cpu, bare
                loop = "uvloop " if uvloop else "asyncio"
                print(f"  {kind:7s} {loop}  batchvid run {m.cpu:6.2f} ms (kernel {m.kernel:5.2f}; "
                      f"run process {m.own:5.2f}, its kernel {m.own_kernel:5.2f}; wall {m.big.wall:5.2f} s)"
                      f"   bare httpx {bare:6.2f} ms   ratio x{m.cpu / bare:.2f}")
            if ("httpx", False) in rows:
                ours, floor = rows["aiohttp", True][0], rows["httpx", False][1]
                ok = ours <= floor
                print(f"  target: batchvid on its defaults (aiohttp, uvloop) {ours:.2f} ms <= bare "
                      f"httpx on its default transport and loop {floor:.2f} ms -> {check(ok)}")
            print(f"  reference: creating one file on {root}: {create_cost(dirs[0]):.3f} ms CPU")
            video = next((dirs[0] / "big" / "jobs").glob("*/video.mp4"))
            print(f"  analysis of a video (probe, signals, poster; worker process): "
                  f"{1000 * analysis_cost(video):6.2f} ms")
            if not args.no_profile:
                sim.reset()
                profile = dirs[0] / "client.prof"
                run_once(sim.url, n, cap, dirs[0], "profiled", options=[], profile=profile)
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
