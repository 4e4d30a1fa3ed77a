"""Validate and expand a 10,000-job manifest, in matrix form and in prompts-file form, and a
100,000-row prompts file (issue 12: ``validate`` and ``plan`` under 1.5 s each).

Run: .venv/bin/python tests/benchmarks/bench_manifest.py   (--quick: skip the 100,000-row case;
--clock-times: also 10,000 listed jobs, each prompt holding a time such as 10:30)

First in-process (``load_manifest``), then as a user runs them: ``batchvid validate`` and
``batchvid plan`` as subprocesses, interpreter start included (``plan`` also computes every
job's key, decides each job's action against an empty output directory and prints the
10,000-row table). Target: each under 2 s of wall time on a 2-core machine; for 100,000 rows,
each under 1.5 s, with the process's peak memory printed.
"""

from __future__ import annotations

import compileall
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchvid.manifest import load_manifest

TARGET_SECONDS = 2.0
TARGET_100K_SECONDS = 1.5
PNG = Path(__file__).resolve().parents[2] / "manifests" / "images" / "photo.png"


def write_matrix(directory: Path) -> Path:
    """50 animals x 50 places x 2 fps x 2 samples = 10,000 jobs, all sharing one image."""
    (directory / "photo.png").write_bytes(PNG.read_bytes())
    animals = ", ".join(f"animal{i}" for i in range(50))
    places = ", ".join(f"place{i}" for i in range(50))
    path = directory / "matrix.yaml"
    path.write_text(
        "version: 1\n"
        "defaults:\n  model: cogvideox-flash\n  size: 1280x960\n  image: photo.png\n"
        "jobs:\n"
        "  - id: sweep\n"
        '    prompt: "A ${animal} drives a small car through ${place}"\n'
        "    matrix:\n"
        f"      animal: [{animals}]\n"
        f"      place: [{places}]\n"
        "      fps: [30, 60]\n"
        "    samples: 2\n",
        encoding="utf-8",
    )
    return path


def write_prompts_file(directory: Path, count: int = 10_000) -> Path:
    """``count`` JSONL rows, half with explicit ids, some with their own parameters."""
    lines = []
    for i in range(count):
        row: dict[str, object] = {"prompt": f"Scene {i}: a lighthouse in weather number {i}"}
        if i % 2:
            row["id"] = f"row{i}"
        if i % 3 == 0:
            row["fps"] = 60
        lines.append(json.dumps(row))
    (directory / f"rows{count}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = directory / f"rows{count}.yaml"
    path.write_text(
        f"version: 1\njobs:\n  - id: rows\n    prompts_file: rows{count}.jsonl\n    size: 1024x1024\n",
        encoding="utf-8",
    )
    return path


def measure(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    manifest = load_manifest(path)
    return time.perf_counter() - start, len(manifest.jobs)


def measure_cli(*args: str) -> tuple[float, float]:
    """Wall time and CPU time of ``python -m batchvid ARGS`` (output discarded), start included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "batchvid", *args],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def hundred_thousand(directory: Path) -> float:
    """The 100,000-row case: worst wall time of validate and plan (each a process)."""
    path = write_prompts_file(directory, 100_000)
    seconds, count = measure(path)
    print(f"100k rows     {count:,} jobs validated and expanded in {seconds:.3f} s (in-process)")
    worst = 0.0
    for command in ("validate", "plan"):
        extra = ["--out", str(directory / "runs" / "100k")] if command == "plan" else []
        wall, cpu = measure_cli(command, str(path), *extra)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
        worst = max(worst, wall)
        print(f"100k rows     `batchvid {command}` {wall:.3f} s wall, {cpu:.3f} s CPU (peak so far {peak} MB)")
    verdict = "ok" if worst < TARGET_100K_SECONDS else "TOO SLOW"
    print(f"100k worst {worst:.3f} s (target < {TARGET_100K_SECONDS} s): {verdict}")
    return worst


def clock_times(directory: Path, count: int = 10_000) -> float:
    """``--clock-times``: a manifest of ``count`` jobs listed one by one, each prompt holding a
    time (``at 10:30``): YAML 1.1 base-60 look-alikes the loader must keep as text without
    looking each one up from the file's start (a pass that did took 53 s for 20,000)."""
    path = directory / "times.yaml"
    jobs = "".join(f"  - id: t{i}\n    prompt: meet at 10:30 by pier {i}\n" for i in range(count))
    path.write_text(f"version: 1\nname: times\ndefaults: {{model: cogvideox-flash}}\njobs:\n{jobs}")
    start = time.process_time()
    manifest = load_manifest(path)
    seconds = time.process_time() - start
    print(f"clock-times   {len(manifest.jobs):,} jobs, a time in each prompt: {seconds:.3f} s CPU (in-process)")
    return seconds


def main() -> int:
    # As an installed package (or a second run of a checkout) has it: batchvid's bytecode written,
    # also where PYTHONDONTWRITEBYTECODE is set (this VM), so no process below compiles it.
    compileall.compile_dir(Path(__file__).resolve().parents[2] / "batchvid", quiet=1)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for form, path in (("matrix", write_matrix(directory)), ("prompts-file", write_prompts_file(directory))):
            seconds, count = measure(path)
            worst = max(worst, seconds)
            print(f"{form:13} {count:6,} jobs validated and expanded in {seconds:.3f} s (in-process)")
            for command in ("validate", "plan"):
                extra = ["--out", str(directory / "runs" / form)] if command == "plan" else []
                seconds, _ = measure_cli(command, str(path), *extra)
                worst = max(worst, seconds)
                print(f"{form:13} {count:6,} jobs: `batchvid {command}` {seconds:.3f} s (subprocess)")
        big = 0.0 if "--quick" in sys.argv else hundred_thousand(directory)
        if "--clock-times" in sys.argv:
            worst = max(worst, clock_times(directory))
    verdict = "ok" if worst < TARGET_SECONDS else "TOO SLOW"
    print(f"worst {worst:.3f} s (target < {TARGET_SECONDS:.0f} s): {verdict}")
    return 0 if worst < TARGET_SECONDS and big < TARGET_100K_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
