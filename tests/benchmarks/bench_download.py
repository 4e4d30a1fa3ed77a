"""Downloads: a 1 GiB video through ``batchvid run``, memory and speed against ``curl -o``.

Run: ``.venv/bin/python tests/benchmarks/bench_download.py [--bytes N] [--only VARIANT]
[--baseline CHECKOUT] [--repeat N] [--stages]``

The simulator (own process) pads every video to ``--bytes`` with a trailing MP4 ``free`` box and
streams it in 1 MiB chunks. One result URL is fetched with ``curl -o`` before each round (and
once after all), and one job per variant goes through ``batchvid run`` (subprocess): create,
poll, streaming download to a temporary file while hashing, fsync, rename, PyAV probe, report.
Its peak RSS comes from ``os.wait4``. The download speed of batchvid is the file size over the
job's time in report.json (create to probed, so it includes more than the transfer, and the
fsync that makes the video durable: curl makes none). Each run is compared with the curl of its
round, the medians over rounds are printed, and so is a durable reference: curl's file fsynced
after curl ended ("curl + fsync", the same bytes made as durable as batchvid makes them). The
variants: the default (aiohttp transport on uvloop), ``--no-uvloop``, and ``--transport
httpx``. Targets, for the default: peak RSS under 100 MB; at least 60 % of curl's speed.

Under load, wall figures swing; compare CPU, and A/B in one invocation: ``--baseline
/work/main`` runs the default variant of another checkout too (its ``batchvid`` first on
``PYTHONPATH``), alternating with this one, ``--repeat`` times. ``--stages`` adds where the time
goes, in a child process per checkout: the body streamed and dropped; ``Downloader.fetch``
(stream, hash, write, then ``commit``: fsync, rename, directory fsync, timed apart); the PyAV
probe; sha256 of as many bytes in memory, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    GEEKAI,
    KEY,
    PYTHON,
    ROOT,
    ChildRun,
    batchvid,
    check,
    run_child,
    run_env,
    write_manifest,
)
from _harness import simulator as start_simulator

RSS_TARGET_MB = 100.0
SPEED_TARGET = 0.6
VARIANTS = {
    "aiohttp+uvloop": [],
    "aiohttp": ["--no-uvloop"],
    "httpx+uvloop": ["--transport", "httpx"],
    "httpx": ["--transport", "httpx", "--no-uvloop"],
}
DEFAULT = "aiohttp+uvloop"
GIB = 1 << 30


def result_url(base: str) -> str:
    """Create a task directly and poll it until its video URL is there."""
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base + GEEKAI, headers=auth, timeout=60) as client:
        body = {"model": "cogvideox-flash", "prompt": "curl reference", "async": True}
        task = client.post("/videos/generations", json=body).raise_for_status().json()
        while task["task_status"] != "succeed":
            task = client.get(f"/video/{task['task_id']}/result").raise_for_status().json()
    return str(task["video_result"][0]["url"])


def curl(url: str, target: Path) -> tuple[float, ChildRun, float]:
    """curl's speed (bytes per second of its process's wall time), its run, and the speed
    counting the fsync of its file after it ended too."""
    run = run_child(["curl", "-sS", "--fail", "-o", str(target), url])
    if run.returncode != 0:
        raise SystemExit(f"curl failed: {run.stderr}")
    size = target.stat().st_size
    start = time.perf_counter()
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = size / (run.wall + time.perf_counter() - start)
    target.unlink()
    return size / run.wall, run, synced


def run_variant(
    url: str, tmp: Path, name: str, checkout: Path | None = None, tag: str = ""
) -> tuple[ChildRun, dict[str, Any]]:
    manifest = write_manifest(tmp, 1, name="download", tag=name + tag)
    out = tmp / "out"
    run = run_child(
        batchvid("run", str(manifest), "--out", str(out), "--base-url", url + GEEKAI,
                 "--poll-interval", "0.05:0.2", "--no-progress", *VARIANTS[name]),
        env=run_env(),
        cwd=checkout or ROOT,  # python -m puts the working directory first on sys.path
    )
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"batchvid run exited {run.returncode}")
    report = json.loads((out / "report.json").read_text())
    shutil.rmtree(out)
    return run, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=GIB)
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run the default variant of this checkout (A/B)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant")
    parser.add_argument("--stages", action="store_true", help="where the time goes, per checkout")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    names = args.only or list(VARIANTS)
    contenders: list[tuple[str, str, Path | None]] = [(name, name, None) for name in names]
    if args.baseline is not None:
        contenders.insert(0, (f"{DEFAULT} @ baseline", DEFAULT, args.baseline.resolve()))
    results: dict[str, list[tuple[ChildRun, dict[str, Any], float, float]]] = {
        label: [] for label, _, _ in contenders
    }
    curls: list[tuple[float, float]] = []
    with (
        start_simulator("--latency", "0", "--download-bytes", str(args.bytes)) as sim,
        tempfile.TemporaryDirectory(prefix="bench-download-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        url = result_url(sim.url)
        server = sim.cpu_seconds()
        curl_server = 0.0
        for round_ in range(args.repeat):
            speed, curl_run, synced = curl(url, tmp / "curl.mp4")
            curls.append((speed, synced))
            curl_server, server = sim.cpu_seconds() - server, sim.cpu_seconds()
            for label, name, checkout in contenders if round_ % 2 == 0 else contenders[::-1]:
                run, report = run_variant(sim.url, tmp, name, checkout, f"-{round_}")
                results[label].append((run, report, sim.cpu_seconds() - server, speed))
                server = sim.cpu_seconds()
        curls.append(curl(url, tmp / "curl.mp4")[::2])
        if args.stages:
            for checkout in [c for c in (args.baseline, ROOT) if c is not None]:
                print(f"stages, {checkout}:")
                subprocess.run([PYTHON, __file__, "--stage-child", url, tmp_name],
                               env={**os.environ, "PYTHONPATH": str(checkout)}, check=True)
    mib = 1 << 20
    print(f"video: {args.bytes:,} bytes ({args.bytes / mib:.0f} MiB)")
    print("  curl -o, each round and after:  "
          + ", ".join(f"{speed / mib:.1f}" for speed, _ in curls) + " MiB/s; with the fsync after: "
          + ", ".join(f"{synced / mib:.1f}" for _, synced in curls) + " MiB/s; "
          f"last round's: {curl_run.cpu:.2f} s CPU, simulator {curl_server:.2f} s CPU")
    ok = DEFAULT in results  # the targets are the default variant's: not run, not met
    for label, runs in results.items():
        ratios = []
        for run, report, server_cpu, curl_speed in runs:
            job = report["jobs"][0]
            size = job["video"]["bytes"]
            job_seconds = report["timing"]["jobs"][job["id"]]["seconds"]
            ratios.append(ratio := size / job_seconds / curl_speed)
            good = run.max_rss_mb < RSS_TARGET_MB and size == args.bytes
            if label == DEFAULT:
                ok = ok and good
            print(f"  batchvid run, {label:24s} {size / job_seconds / mib:7.1f} MiB/s = {100 * ratio:5.1f} % "
                  f"of its round's curl ({job_seconds:.2f} s create to probed, incl. sha256, fsync, probe); "
                  f"peak RSS {run.max_rss_mb:6.1f} MB; process {run.wall:.2f} s wall, {run.cpu:.2f} s CPU "
                  f"({run.user:.2f} user, {run.sys:.2f} sys; {run.cpu / (size / GIB):.2f} s per GiB), "
                  f"simulator {server_cpu:.2f} s CPU{'  <- default' if label == DEFAULT else ''}")
        print(f"  {label}: median {100 * statistics.median(ratios):.1f} % of curl over {len(ratios)} rounds")
        if label == DEFAULT:
            ok = ok and statistics.median(ratios) >= SPEED_TARGET
    print(f"  targets (default): >= {100 * SPEED_TARGET:.0f} % of curl (median), peak RSS < "
          f"{RSS_TARGET_MB:.0f} MB -> {check(ok)}")
    return 0 if ok else 1


def _usage() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


class _Stage:
    """Wall time, process CPU (all threads) and page faults of a ``with`` block."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _Stage:
        self.start, self.usage = time.perf_counter(), _usage()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.start
        end = _usage()
        self.user, self.sys = end[0] - self.usage[0], end[1] - self.usage[1]
        self.faults = end[2] - self.usage[2]

    def show(self, extra: str = "") -> None:
        print(f"  {self.name:44s} {self.wall:6.2f} s wall, {self.user + self.sys:5.2f} s CPU "
              f"({self.user:.2f} user, {self.sys:.2f} sys), {self.faults:7d} page faults{extra}")


async def _stages(url: str, tmp: Path) -> None:
    """The child of ``--stages``: each part of a download on its own (module doc)."""
    import hashlib

    import httpx

    from batchvid import durable
    from batchvid.download import Downloader
    from batchvid.media import probe
    from batchvid.transport import make_transport

    timeout = httpx.Timeout(60, connect=10)
    async with httpx.AsyncClient(transport=make_transport(), timeout=timeout,
                                 follow_redirects=True, max_redirects=5) as client:
        size = chunks = 0
        with _Stage("stream only (body read and dropped)") as stage:
            async with client.stream("GET", url) as response:
                async for chunk in response.aiter_bytes():
                    size, chunks = size + len(chunk), chunks + 1
        stage.show(f"; {chunks} chunks of {size / chunks / 1024:.0f} KiB on average")
        commit = _Stage("  of which commit (the last batch's write, fsync, rename, dir fsync)")
        real_commit = durable.HashingWriter.commit

        def timed_commit(writer: durable.HashingWriter, **options: Any) -> None:
            with commit:
                real_commit(writer, **options)

        durable.HashingWriter.commit = timed_commit  # type: ignore[method-assign]
        none: Any = None
        downloader = Downloader(client, tmp, none, none, none, max_bytes=1 << 50, retries=0,
                                strict_media=False)
        with _Stage("fetch (stream, sha256, write, commit)") as stage:
            await downloader.fetch(url, tmp / "video.mp4")
        stage.show()
        commit.show()
    with _Stage("probe (PyAV, quality signals)") as stage:
        probe(tmp / "video.mp4")
    stage.show()
    block = bytes(1 << 20)
    with _Stage("reference: sha256 of as many bytes in memory") as stage:
        digest = hashlib.sha256()
        for _ in range(size >> 20):
            digest.update(block)
    stage.show()


def stage_child(url: str, directory: str) -> None:
    import anyio

    from batchvid.transport import backend_options

    tmp = Path(tempfile.mkdtemp(prefix="stages-", dir=directory))
    try:
        anyio.run(_stages, url, tmp, backend_options=backend_options())
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stage-child"]:
        stage_child(*sys.argv[2:4])
        sys.exit(0)
    sys.exit(main())
