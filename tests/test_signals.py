"""Stopping well: SIGINT/SIGTERM stop submitting, write the report with pending jobs, exit 3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchvid.simulator import BIGMODEL_PREFIX, SimulatorConfig, running_simulator

MANIFEST = """\
version: 1
name: signals
provider: bigmodel
defaults: {model: cogvideox-flash}
jobs:
  - id: clip
    prompt: "clip number ${n}"
    matrix:
      n: [1, 2, 3, 4, 5, 6, 7, 8]
"""


def _start(manifest: Path, out: Path, base_url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, ZHIPUAI_API_KEY="signal-test-key")
    return subprocess.Popen(
        [sys.executable, "-m", "batchvid", "run", str(manifest), "--out", str(out),
         "--base-url", base_url + BIGMODEL_PREFIX, "--max-in-flight", "4", "--rpm", "6000",
         "--poll-interval", "0.05:0.1", "--no-progress"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _wait_for_submits(out: Path, count: int, proc: subprocess.Popen[str]) -> None:
    journal = out / ".batchvid" / "journal.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count('"submitted"') >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the run did not submit in time")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_with_exit_3_and_resumes_without_recreating(tmp_path: Path, signum: int) -> None:
    """After a signal the report lists pending jobs; the rerun re-attaches and creates nothing twice."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    with running_simulator(SimulatorConfig(latency=6.0)) as sim:
        proc = _start(manifest, out, sim.base_url)
        try:
            _wait_for_submits(out, 4, proc)
            started = time.monotonic()
            proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 3, stderr
        assert elapsed < 2.5, "waiting on tasks (3-9 s long) should stop at once"
        report = json.loads((out / "report.json").read_text())
        assert report["stopped"]["reason"] == "interrupted"
        assert report["summary"]["pending"] == 8
        assert sum(1 for j in report["jobs"] if j["task_id"]) == 4
        rerun = _start(manifest, out, sim.base_url)
        try:
            rerun.communicate(timeout=60)
        finally:
            rerun.kill()
            rerun.wait()
        assert rerun.returncode == 0
        stats = sim.simulator.stats()
        assert stats["tasks_created"] == 8
        assert set(stats["tasks_by_body"].values()) == {1}


def test_repeated_signals_leave_a_consistent_directory(tmp_path: Path) -> None:
    """Two signals in a row stop the run at once with every file whole and the report written."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    with running_simulator(SimulatorConfig(latency=30.0)) as sim:
        proc = _start(manifest, out, sim.base_url)
        try:
            _wait_for_submits(out, 4, proc)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3
    assert elapsed < 5
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["pending"] == 8
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.part"))
