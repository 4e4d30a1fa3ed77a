"""RunResult's report: plain JSON values although the run wrote its jobs lazily."""

from __future__ import annotations

import json
from pathlib import Path

from batchvid.simulator import Simulator, SimulatorConfig
from tests.test_runner import _jobs, _run


def test_run_result_report_is_json_serialisable(tmp_path: Path) -> None:
    """RunResult.report ("report.json's content") still encodes with json.dumps after a run
    that generated videos, and equals report.json (its jobs are a plain list, as before)."""
    sim = Simulator(SimulatorConfig())
    result, _, _ = _run(sim, _jobs(2, fps=30), tmp_path / "out")
    assert result.exit_code == 0
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert json.loads(json.dumps(result.report)) == on_disk
    assert isinstance(result.report["jobs"], list)


def test_run_result_written_keeps_the_lazy_jobs(tmp_path: Path) -> None:
    """The report as written keeps its entries made on reading (not a list of 2 dicts held),
    and reads the same entries as the plain report."""
    sim = Simulator(SimulatorConfig())
    result, _, _ = _run(sim, _jobs(2, fps=30), tmp_path / "out")
    jobs = result.written["jobs"]
    assert not isinstance(jobs, list)
    assert list(jobs) == result.report["jobs"]
