"""Against the obvious alternative: the same jobs with the official ``zai-sdk`` in a thread pool.

Run: ``.venv/bin/python tests/benchmarks/bench_vs_sdk.py [--jobs N] [--concurrency N]
[--latency S] [--poll-interval MIN:MAX]``

One simulator process (BigModel endpoints, mean task time ``--latency``), reset between the two
contenders so each one's request counts are its own:

- **zai-sdk** as its examples use it: ``ZhipuAiClient(base_url=.../api/paas/v4)``,
  ``client.videos.generations(model=..., prompt=...)``, then ``retrieve_videos_result(id)``
  every 5 s until ``SUCCESS``, then the video downloaded with httpx in the same thread; one
  ``ThreadPoolExecutor`` worker per concurrent job.
- **batchvid run** (subprocess) with ``--max-in-flight`` equal to the pool size, ``--rpm`` out of
  the way (the SDK has no rate limit) and its default poll schedule (5 s, growing x1.5 to 15 s, then learned from finished tasks)
  unless ``--poll-interval`` is given. batchvid also downloads the cover image BigModel returns
  and probes the video; the SDK loop does neither.

Reported: wall time of each (batchvid's from report.json and for the whole process) and HTTP
requests per job from the simulator's ``requests`` counters, with their ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BIGMODEL,
    KEY,
    api_requests,
    batchvid,
    count,
    run_child,
    run_env,
    write_manifest,
)
from _harness import simulator as start_simulator

MODEL = "cogvideox-flash"


def sdk_job(client: Any, prompt: str, target: Path) -> int:
    """One job the way zai-sdk's examples do it, plus the download."""
    response = client.videos.generations(model=MODEL, prompt=prompt)
    task_id = response.id
    while True:
        result = client.videos.retrieve_videos_result(id=task_id)
        if result.task_status == "SUCCESS":
            break
        if result.task_status == "FAIL":
            raise RuntimeError(f"task {task_id} failed")
        time.sleep(5)
    with httpx.stream("GET", result.video_result[0].url, timeout=60) as download:
        download.raise_for_status()
        with target.open("wb") as fh:
            for chunk in download.iter_bytes(1 << 20):
                fh.write(chunk)
    return target.stat().st_size


def run_sdk(url: str, jobs: int, concurrency: int, tmp: Path) -> float:
    from zai import ZhipuAiClient

    client = ZhipuAiClient(api_key=KEY, base_url=f"{url}{BIGMODEL}")
    (tmp / "sdk").mkdir()
    prompts = [f"Scene {i}: a lighthouse in weather number {i}" for i in range(jobs)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        sizes = list(pool.map(
            lambda i: sdk_job(client, prompts[i], tmp / "sdk" / f"{i}.mp4"), range(jobs)
        ))
    wall = time.perf_counter() - start
    assert all(sizes), "an empty download"
    return wall


def routes(stats: dict[str, Any], jobs: int) -> str:
    parts = []
    for route, by_status in sorted(api_requests(stats).items()):
        parts.append(f"{route} {sum(by_status.values()) / jobs:.2f}")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency", type=float, default=2.5)
    parser.add_argument("--poll-interval", help="batchvid's; default: its own (5:15)")
    args = parser.parse_args()
    with (
        start_simulator("--latency", str(args.latency)) as sim,
        tempfile.TemporaryDirectory(prefix="bench-vs-sdk-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        sdk_wall = run_sdk(sim.url, args.jobs, args.concurrency, tmp)
        sdk_stats = sim.stats()
        sim.reset()
        manifest = write_manifest(tmp, args.jobs, provider="bigmodel", name="vs-sdk")
        poll = ["--poll-interval", args.poll_interval] if args.poll_interval else []
        run = run_child(
            batchvid("run", str(manifest), "--out", str(tmp / "out"), "--base-url", sim.url + BIGMODEL,
                     "--max-in-flight", str(args.concurrency), "--rpm", "1000000", "--no-progress",
                     *poll),
            env=run_env("bigmodel"),
        )
        bv_stats = sim.stats()
        if run.returncode != 0:
            print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"batchvid run exited {run.returncode}")
        report = json.loads((tmp / "out" / "report.json").read_text())
    bv_wall = report["timing"]["seconds"]
    sdk_requests, bv_requests = count(sdk_stats), count(bv_stats)
    n = args.jobs
    print(f"{n} jobs, latency {args.latency:g} s (0.5x-1.5x), {args.concurrency} at a time, "
          f"BigModel endpoints")
    print(f"  zai-sdk + threads:  wall {sdk_wall:7.2f} s, {sdk_requests / n:.2f} requests/job "
          f"({routes(sdk_stats, n)})")
    print(f"  batchvid run:       wall {bv_wall:7.2f} s (process {run.wall:.2f} s), "
          f"{bv_requests / n:.2f} requests/job ({routes(bv_stats, n)})")
    print(f"  batchvid / zai-sdk: wall x{bv_wall / sdk_wall:.2f}, "
          f"requests x{bv_requests / sdk_requests:.2f}; "
          f"429s: sdk {count(sdk_stats, '429')}, batchvid {count(bv_stats, '429')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
