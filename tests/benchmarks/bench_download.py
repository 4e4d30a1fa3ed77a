"""Downloads: a 1 GiB video through ``batchvid run``, memory and speed against ``curl -o``.

Run: ``.venv/bin/python tests/benchmarks/bench_download.py [--bytes N] [--only VARIANT]``

The simulator (own process) pads every video to ``--bytes`` with a trailing MP4 ``free`` box and
streams it in 1 MiB chunks. One result URL is fetched with ``curl -o`` (before and after, the
faster counts), and one job goes through ``batchvid run`` (subprocess): create, poll, streaming
download to a temporary file while hashing, fsync, rename, PyAV probe, report. Its peak RSS comes
from ``os.wait4``. The download speed of batchvid is the file size over the job's time in
report.json (create to probed, so it includes more than the transfer). The run is repeated for
each variant: the default (aiohttp transport on uvloop), ``--no-uvloop``, and ``--transport
httpx``. Targets, for the default: peak RSS under 100 MB; at least 60 % of curl's speed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import GEEKAI, KEY, ChildRun, batchvid, check, run_child, run_env, write_manifest
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


def curl(url: str, target: Path) -> float:
    run = run_child(["curl", "-sS", "--fail", "-o", str(target), url])
    if run.returncode != 0:
        raise SystemExit(f"curl failed: {run.stderr}")
    size = target.stat().st_size
    target.unlink()
    return size / run.wall


def run_variant(url: str, tmp: Path, name: str) -> tuple[ChildRun, dict[str, Any]]:
    manifest = write_manifest(tmp, 1, name="download", tag=name)
    out = tmp / "out"
    run = run_child(
        batchvid("run", str(manifest), "--out", str(out), "--base-url", url + GEEKAI,
                 "--poll-interval", "0.05:0.2", "--no-progress", *VARIANTS[name]),
        env=run_env(),
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
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    names = args.only or list(VARIANTS)
    results = {}
    with (
        start_simulator("--latency", "0", "--download-bytes", str(args.bytes)) as sim,
        tempfile.TemporaryDirectory(prefix="bench-download-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        url = result_url(sim.url)
        curl_before = curl(url, tmp / "curl.mp4")
        for name in names:
            results[name] = run_variant(sim.url, tmp, name)
        curl_after = curl(url, tmp / "curl.mp4")
    curl_speed = max(curl_before, curl_after)
    mib = 1 << 20
    print(f"video: {args.bytes:,} bytes ({args.bytes / mib:.0f} MiB)")
    print(f"  curl -o:  {curl_before / mib:7.1f} MiB/s before, {curl_after / mib:.1f} after")
    ok = True
    for name, (run, report) in results.items():
        job = report["jobs"][0]
        size = job["video"]["bytes"]
        job_seconds = report["timing"]["jobs"][job["id"]]["seconds"]
        ratio = size / job_seconds / curl_speed
        good = run.max_rss_mb < RSS_TARGET_MB and ratio >= SPEED_TARGET and size == args.bytes
        if name == DEFAULT:
            ok = good
        print(f"  batchvid run, {name:15s} {size / job_seconds / mib:7.1f} MiB/s = {100 * ratio:5.1f} % "
              f"of curl ({job_seconds:.2f} s create to probed, incl. sha256, fsync, probe); "
              f"peak RSS {run.max_rss_mb:6.1f} MB; process {run.wall:.2f} s wall, {run.cpu:.2f} s CPU"
              f"{'  <- default' if name == DEFAULT else ''}")
    print(f"  targets (default): >= {100 * SPEED_TARGET:.0f} % of curl, peak RSS < "
          f"{RSS_TARGET_MB:.0f} MB -> {check(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
