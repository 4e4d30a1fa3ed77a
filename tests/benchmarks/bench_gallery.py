"""Open a 10,000-job report.html in headless Chromium: time until it is interactive.

Run: .venv/bin/python tests/benchmarks/bench_gallery.py [--jobs N] [--loads K] [--screenshot PNG]

The 10,000 jobs are a real manifest's expansion (a 400-job sweep and 9,600 prompts-file rows),
with report entries shaped like a run's (5 % failed, every finished job with its poster file);
only the videos themselves are left out, since the page loads none until one is played. The
figure is ``window.batchvidReady``: milliseconds from navigation start until the page has parsed
its data, built the filters and rendered its first screen of cards (its handlers are live).
Target: < 2 s. ``--screenshot`` also runs a small manifest with the simulator and saves the
README's screenshot of its gallery.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchvid.cli import main as batchvid_main
from batchvid.gallery import write_gallery
from batchvid.manifest import load_manifest
from batchvid.poster import make_poster
from batchvid.report import Outcome, RunInfo, build_report
from batchvid.simulator.video import VideoSpec, render_video
from tests.chromium import chromium, missing

TARGET_MS = 2000.0
SHOWCASE = """\
version: 1
name: showcase
defaults:
  model: cogvideox-flash
  size: 1280x960
jobs:
  - id: lighthouse
    prompt: A lighthouse on a cliff in a storm, waves crashing against the rocks, cinematic
    with_audio: true
  - id: paper-boat
    prompt: A paper boat drifting down a rain-soaked street at dusk, reflections of neon signs
    model: cogvideox-2
  - id: city
    prompt: "Timelapse of a city skyline from day to night [fail]"
  - id: sweep
    prompt: "A ${animal} drives a small car at ${time}"
    matrix:
      animal: [rabbit, fox, owl]
      time: [dawn, night]
    samples: 2
"""


def build_directory(root: Path, jobs: int) -> Path:
    """An output directory with ``jobs`` report entries and their posters (no videos)."""
    sweep_jobs = 400
    (root / "prompts.txt").write_text(
        "".join(f"Scene {i}: a lighthouse in weather number {i}, seen from the sea\n"
                for i in range(jobs - sweep_jobs)), encoding="utf-8")
    (root / "big.yaml").write_text(
        "version: 1\nname: big\ndefaults:\n  model: cogvideox-flash\n  size: 1280x960\njobs:\n"
        '  - id: sweep\n    prompt: "A ${animal} drives a small car at ${time}"\n    matrix:\n'
        f"      animal: [{', '.join(f'animal{i}' for i in range(10))}]\n"
        f"      time: [{', '.join(f'hour{i}' for i in range(10))}]\n"
        "      fps: [30, 60]\n    samples: 2\n"
        "  - id: city\n    prompts_file: prompts.txt\n", encoding="utf-8")
    manifest = load_manifest(root / "big.yaml")
    assert len(manifest.jobs) == jobs, len(manifest.jobs)
    out = root / "out"
    sample_video = root / "sample.mp4"
    sample_video.write_bytes(render_video(VideoSpec(1280, 960, 30, 0.2, False, 4)))
    make_poster(sample_video, root / "poster.jpg")
    outcomes = []
    for n, job in enumerate(manifest.jobs):
        if n % 20 == 7:
            outcomes.append(Outcome(job, "failed", "submit", task_id=f"task-{n}",
                                    error={"kind": "task_failed", "message": "generation failed"}))
            continue
        (out / "jobs" / job.id).mkdir(parents=True)
        shutil.copyfile(root / "poster.jpg", out / "jobs" / job.id / "poster.jpg")
        outcomes.append(Outcome(
            job, "succeeded", "submit", task_id=f"task-{n}",
            video={"path": f"jobs/{job.id}/video.mp4", "sha256": f"{n:064x}", "bytes": 123456},
            media={"codec": "h264", "width": 1280, "height": 960, "fps": 30.0, "frame_count": 150,
                   "duration": 5.0, "has_audio": False, "audio_codec": None}))
    info = RunInfo("big.yaml", "big", "geekai", 1, None, "2026-01-01T00:00:00+00:00",
                   "2026-01-01T01:00:00+00:00", 3600.0, 1.0, "CNY")
    started = time.perf_counter()
    write_gallery(out, build_report(outcomes, info))
    print(f"write_gallery, {jobs:,} jobs, posters present: {time.perf_counter() - started:.2f} s; "
          f"report.html {(out / 'report.html').stat().st_size / 1e6:.1f} MB")
    return out


def time_to_interactive(driver: Any, page: Path, loads: int) -> list[float]:
    figures = []
    for _ in range(loads):
        driver.get("about:blank")
        driver.get(page.as_uri())
        figures.append(float(driver.execute_script("return window.batchvidReady")))
        cards = driver.execute_script("return document.querySelectorAll('.card').length")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    print(f"cards rendered on open: {cards}")
    return figures


def search_ms(driver: Any) -> float:
    """Milliseconds for one search over every job (the input's 120 ms debounce excluded)."""
    return float(driver.execute_script("""
        const box = document.getElementById('text-filter');
        box.value = 'number 4242';
        box.dispatchEvent(new Event('input'));
        return new Promise((done) => setTimeout(() => {
            const t = performance.now();
            box.value = 'number 777'; box.dispatchEvent(new Event('input'));
            setTimeout(() => done(performance.now() - t - 120), 125);
        }, 400));
    """))


def screenshot(target: Path) -> None:
    target = target.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-gallery-shot-") as tmp:
        (Path(tmp) / "showcase.yaml").write_text(SHOWCASE, encoding="utf-8")
        out = Path(tmp) / "runs" / "showcase"
        os.chdir(tmp)  # so the report names the manifest as a user would have typed it
        batchvid_main(["run", "showcase.yaml", "--simulate", "--no-progress", "--sim-latency",
                       "0.05", "--poll-interval", "0.01:0.05", "--rpm", "6000"])
        with chromium(1360, 1500) as driver:
            driver.get((out / "report.html").as_uri())
            time.sleep(1.0)  # posters decoded
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(driver.get_screenshot_as_png())
    print(f"screenshot: {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--screenshot", type=Path, help="also save the showcase screenshot here")
    args = parser.parse_args()
    reason = missing()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        page = build_directory(Path(tmp), args.jobs) / "report.html"
        with chromium() as driver:
            figures = time_to_interactive(driver, page, args.loads)
            search = search_ms(driver)
    median = statistics.median(figures)
    print(f"time to interactive, {args.jobs:,} jobs: median {median:.0f} ms "
          f"(all: {', '.join(f'{f:.0f}' for f in figures)}); target < {TARGET_MS:.0f} ms: "
          f"{'ok' if median < TARGET_MS else 'MISSED'}")
    print(f"search over {args.jobs:,} jobs, re-render included: {search:.0f} ms")
    if args.screenshot:
        screenshot(args.screenshot)
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
