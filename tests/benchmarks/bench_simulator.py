"""Simulator CPU cost: 1,000 tasks (create + poll + download) at latency 0.

Run: ``.venv/bin/python tests/benchmarks/bench_simulator.py [--tasks N] [--concurrency N]``

The simulator is served by uvicorn on loopback in a background thread; the client is httpx in
the main thread. The figure reported is the CPU time of the serving thread only (its POSIX
thread CPU clock), per 100 tasks. Target: under 1 s per 100 tasks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    Simulator,
    SimulatorConfig,
    running_simulator,
)

AUTH = {"Authorization": "Bearer bench"}
SIZES = ("720x480", "1024x1024", "1280x960", "1920x1080")


def body(index: int) -> tuple[str, str, dict[str, object]]:
    """Alternate providers, fps, audio and sizes so the video cache sees a realistic mix."""
    params: dict[str, object] = {
        "model": "cogvideox-2",
        "prompt": f"job {index}: a cat on a skateboard",
        "size": SIZES[index % len(SIZES)],
        "fps": 30 if index % 3 else 60,
        "with_audio": index % 2 == 0,
    }
    if index % 2:
        return "geekai", f"{GEEKAI_PREFIX}/videos/generations", {**params, "async": True}
    return (
        "bigmodel",
        f"{BIGMODEL_PREFIX}/videos/generations",
        {**params, "request_id": f"bench-{index}"},
    )


async def one_task(client: httpx.AsyncClient, index: int) -> int:
    provider, path, payload = body(index)
    created = (await client.post(path, json=payload, headers=AUTH)).raise_for_status().json()
    if provider == "geekai":
        poll = f"{GEEKAI_PREFIX}/video/{created['task_id']}/result"
        done = {"succeed"}
    else:
        poll = f"{BIGMODEL_PREFIX}/async-result/{created['id']}"
        done = {"SUCCESS"}
    while True:
        result = (await client.get(poll, headers=AUTH)).raise_for_status().json()
        if result["task_status"] in done:
            break
    response = (await client.get(result["video_result"][0]["url"])).raise_for_status()
    return len(response.content)


async def drive(base_url: str, tasks: int, concurrency: int, app: object = None) -> int:
    limiter = anyio.Semaphore(concurrency)
    total = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(index: int) -> None:
        nonlocal total
        async with limiter:
            size = await one_task(client, index)
            total += size

    transport = httpx.ASGITransport(app=app) if app is not None else None  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=60, transport=transport
        ) as client,
        anyio.create_task_group() as group,
    ):
        for index in range(tasks):
            group.start_soon(worker, index)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="mount the app with httpx.ASGITransport (as `run --simulate` does); the CPU "
        "figure then includes the client",
    )
    args = parser.parse_args()
    if args.in_process:
        sim = Simulator(SimulatorConfig(latency=0.0))
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        downloaded = anyio.run(drive, "http://sim.test", args.tasks, args.concurrency, sim.app)
        cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
        print(f"tasks: {sim.stats()['tasks_created']}  bytes downloaded: {downloaded}")
        print(f"wall time: {wall:.2f} s  process CPU (client + simulator): {cpu:.3f} s")
        print(f"process CPU per 100 tasks: {100 * cpu / args.tasks:.3f} s")
        return
    with running_simulator(SimulatorConfig(latency=0.0)) as server:
        cpu_before = server.cpu_seconds()
        wall_before = time.perf_counter()
        downloaded = anyio.run(drive, server.base_url, args.tasks, args.concurrency)
        wall = time.perf_counter() - wall_before
        cpu = server.cpu_seconds() - cpu_before
        stats = server.simulator.stats()
    requests = sum(sum(by_status.values()) for by_status in stats["requests"].values())
    print(f"tasks:                 {stats['tasks_created']}")
    print(f"requests served:       {requests}")
    print(f"videos rendered:       {stats['videos_rendered']}")
    print(f"bytes downloaded:      {downloaded}")
    print(f"wall time:             {wall:.2f} s")
    print(f"simulator CPU:         {cpu:.3f} s")
    print(f"simulator CPU per 100: {100 * cpu / args.tasks:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
