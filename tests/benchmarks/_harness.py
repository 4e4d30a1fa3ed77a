"""Shared plumbing for the benchmarks: a simulator in its own process, manifests, and a timed
``batchvid`` subprocess with its own resource usage (``os.wait4``).

Not a benchmark itself. Everything binds to 127.0.0.1 and is cleaned up by the context managers.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GEEKAI = "/api/v1"
BIGMODEL = "/api/paas/v4"
KEY = "bench-key-0123456789"
_URL = re.compile(r"http://127\.0\.0\.1:\d+")

@dataclass
class SimulatorProcess:
    """``batchvid simulate`` served by a child process: its CPU is not the client's."""

    proc: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_simulator/stats", timeout=30).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_simulator/reset", timeout=30).raise_for_status()

    def cpu_seconds(self) -> float:
        """User + system CPU of the simulator process so far (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def simulator(*options: str) -> Iterator[SimulatorProcess]:
    """Start ``python -m batchvid simulate --port 0 OPTIONS`` and yield it once it listens."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "batchvid", "simulate", "--host", "127.0.0.1", "--port", "0", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = _URL.search(line)
        if match is None:
            raise RuntimeError(f"the simulator did not print its URL: {line!r}")
        sim = SimulatorProcess(proc, match.group(0))
        deadline = time.monotonic() + 15
        while True:  # the URL is printed once the socket is bound; wait until it answers
            try:
                sim.stats()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield sim
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop one child we started: SIGINT (uvicorn shuts down cleanly), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def api_requests(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``requests`` by route and status, without the simulator's own control routes."""
    return {r: c for r, c in stats["requests"].items() if not r.startswith("simulator.")}


def count(stats: dict[str, Any], status: str | None = None) -> int:
    """How many API requests the simulator answered (with ``status`` only, when given)."""
    return sum(
        n
        for by_status in api_requests(stats).values()
        for s, n in by_status.items()
        if status is None or s == status
    )


def write_manifest(
    directory: Path,
    jobs: int,
    *,
    provider: str = "geekai",
    model: str = "cogvideox-flash",
    name: str = "bench",
    tag: str = "",
) -> Path:
    """A manifest of ``jobs`` distinct text-to-video jobs read from a .txt prompts file."""
    prompts = directory / f"{name}.txt"
    prompts.write_text(
        "".join(f"Scene {i}{tag}: a lighthouse in weather number {i}\n" for i in range(jobs)),
        encoding="utf-8",
    )
    path = directory / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\nprovider: {provider}\n"
        f"defaults:\n  model: {model}\n"
        f"jobs:\n  - id: s\n    prompts_file: {prompts.name}\n",
        encoding="utf-8",
    )
    return path


@dataclass
class ChildRun:
    """A finished child process: exit code, wall time and its own resource usage."""

    returncode: int
    wall: float
    cpu: float
    """User + system CPU seconds of the child (and anything it waited for)."""
    user: float
    sys: float
    max_rss_mb: float
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT) -> ChildRun:
    """Run ``argv`` to completion; its rusage comes from ``os.wait4`` on that very pid."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_utime,
            usage.ru_stime,
            usage.ru_maxrss / 1024,
            out.read(),
            err.read(),
        )


def batchvid(*args: str) -> list[str]:
    return [PYTHON, "-m", "batchvid", *args]


def run_env(provider: str = "geekai") -> dict[str, str]:
    """A key for the simulator (any non-empty key is accepted), nothing else from the user."""
    name = "GEEKAI_API_KEY" if provider == "geekai" else "ZHIPUAI_API_KEY"
    return {name: KEY, "BATCHVID_BASE_URL": "", "GITHUB_STEP_SUMMARY": ""}


def check(ok: bool) -> str:
    return "ok" if ok else "MISSED"
