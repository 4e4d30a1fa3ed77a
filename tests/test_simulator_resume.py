"""`run --simulate` resumes: an interrupted run's tasks are re-attached by the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MANIFEST = """\
version: 1
name: resume
provider: {provider}
defaults: {{model: cogvideox-flash}}
jobs:
  - id: clip
    prompt: "clip number ${{n}}"
    matrix:
      n: [1, 2, 3, 4]
"""


def _run(manifest: Path, out: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ZHIPUAI_API_KEY", "GEEKAI_API_KEY")}
    return subprocess.Popen(
        [sys.executable, "-m", "batchvid", "run", str(manifest), "--out", str(out),
         "--simulate", "--sim-latency", "5", "--max-in-flight", "4", "--no-progress"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], out: Path, interrupt_after_submits: int = 0) -> str:
    """Wait for ``proc`` (after sending SIGINT once the journal of ``out`` records that many
    tasks submitted, if given) and return its stderr."""
    try:
        if interrupt_after_submits:
            deadline = time.monotonic() + 60
            while journal_creates(out) < interrupt_after_submits:
                assert time.monotonic() < deadline and proc.poll() is None, "no submit in time"
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["bigmodel", "geekai"])
def test_interrupted_simulated_run_resumes_and_reattaches(tmp_path: Path, provider: str) -> None:
    """SIGINT during `run --simulate`, then a rerun: exit 0, every job re-attached, none
    created twice; a damaged video is then downloaded again from its task."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.format(provider=provider))
    out = tmp_path / "out"
    proc = _run(manifest, out)
    stderr = _finish(proc, out, interrupt_after_submits=4)
    assert proc.returncode == 3, stderr
    first = json.loads((out / "report.json").read_text())
    task_ids = {job["id"]: job["task_id"] for job in first["jobs"]}
    assert all(task_ids.values())
    assert first["summary"]["pending"] >= 1, "every task was done before the signal"

    rerun = _run(manifest, out)
    stderr = _finish(rerun, out)
    assert rerun.returncode == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert {job["id"]: job["task_id"] for job in report["jobs"]} == task_ids
    assert all(job["status"] == "succeeded" for job in report["jobs"])
    assert journal_creates(out) == 4

    video = next((out / "jobs" / "clip-1").glob("*.mp4"))
    original = video.read_bytes()
    video.write_bytes(original[: len(original) // 2])
    again = _run(manifest, out)
    stderr = _finish(again, out)
    assert again.returncode == 0, stderr
    assert video.read_bytes() == original
    assert journal_creates(out) == 4


def journal_creates(out: Path) -> int:
    """How many "submitted" events the journal holds (whole lines only)."""
    journal = out / ".batchvid" / "journal.jsonl"
    if not journal.exists():
        return 0
    lines = journal.read_text().splitlines()
    return sum(1 for line in lines if '"event":"submitted"' in line.replace(" ", ""))
