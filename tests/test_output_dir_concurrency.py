"""Two runs started at once on one output directory: one refuses clearly, nothing is corrupted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from batchvid.simulator import SimulatorConfig, running_simulator
from batchvid.verify import verify_dir
from tests.test_drill_crash import run_command, write_manifest

KEY = "concurrent-secret-key-41af"


@pytest.mark.slow
def test_second_run_on_one_directory_refuses_and_the_first_completes(tmp_path: Path) -> None:
    """Of two simultaneous runs, one exits 2 'in use by another batchvid run'; the other finishes."""
    manifest = write_manifest(tmp_path, "bigmodel", 6)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["ZHIPUAI_API_KEY"] = KEY
    with running_simulator(SimulatorConfig(latency=1.5, video_seconds=0.5, max_side=64)) as sim:
        command = run_command(manifest, out, sim.base_url, "bigmodel")
        processes = [
            subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            for _ in range(2)
        ]
        results = []
        try:
            for process in processes:
                stdout, stderr = process.communicate(timeout=60)
                results.append((process.returncode, stdout.decode(), stderr.decode()))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        stats = sim.simulator.stats()
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(stderr for code, _, stderr in results if code == 2)
    assert "in use by another batchvid run" in refused
    assert "Traceback" not in refused
    problems, checked = verify_dir(out)
    assert problems == [] and checked == 18  # six videos, six covers, six posters
    report = json.loads((out / "report.json").read_text())
    assert {j["status"] for j in report["jobs"]} == {"succeeded"}
    assert set(stats["tasks_by_body"].values()) == {1} and stats["tasks_created"] == 6
