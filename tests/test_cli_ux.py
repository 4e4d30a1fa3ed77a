"""What a person reads: status of an interrupted run, leftovers, `clean`, `schema` errors."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.cli import main
from batchvid.events import Event, JobSubmitted
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest

FAST = ["--simulate", "--no-progress", "--sim-latency", "0.05",
        "--poll-interval", "0.01:0.05", "--rpm", "6000"]

TWO = """\
version: 1
name: two
defaults:
  model: cogvideox-flash
jobs:
  - id: keep
    prompt: a calm lake at dawn
  - id: drop
    prompt: a red kite over the dunes
"""


def _interrupted(out: Path) -> tuple[str, str]:
    """A run stopped right after its first create was accepted: one job has a task, one was
    never sent. Returns (submitted job id, task id)."""
    sim = Simulator(SimulatorConfig(latency=30.0))
    jobs = [make_job("j01", 0), make_job("j02", 1)]
    settings = Settings(out_dir=out, base_url=f"http://sim{GEEKAI_PREFIX}", api_key="k" * 20,
                        max_in_flight=1, rpm=None, poll_min=0.01, poll_max=0.05)
    seen: list[str] = []
    runner: Runner

    def interrupt_on_submit(event: Event) -> None:
        if isinstance(event, JobSubmitted):
            seen.extend([event.job_id, event.task_id])
            runner.interrupt("test interrupt")

    runner = Runner(make_manifest(jobs), settings, transport=httpx.ASGITransport(app=sim.app),
                    subscribers=[interrupt_on_submit])
    result = anyio.run(runner.run)
    assert result.exit_code == 3
    return seen[0], seen[1]


def test_status_says_an_interrupted_job_is_submitted_and_will_be_reattached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an interrupt, status names the task of a submitted job and that a rerun re-attaches;
    a job never sent is said to be not sent."""
    out = tmp_path / "out"
    job_id, task_id = _interrupted(out)
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{job_id}: submitted as task {task_id}, not finished; a rerun re-attaches to it" in text
    assert "j02: not sent; a rerun submits it" in text
    assert "not_started" not in text


def _run(tmp_path: Path, text: str) -> Path:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture
def with_leftover(tmp_path: Path) -> Path:
    """An output directory where job `drop` left the manifest after it was done."""
    out = _run(tmp_path, TWO)
    _run(tmp_path, TWO.replace("  - id: drop\n    prompt: a red kite over the dunes\n", ""))
    return out


def test_status_lists_leftovers_with_a_hint(with_leftover: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status names each leftover folder and says `batchvid clean` removes it."""
    capsys.readouterr()
    assert main(["status", str(with_leftover)]) == 0
    text = capsys.readouterr().out
    assert "  leftover jobs/drop: 3 file(s)," in text
    assert f"`batchvid clean {with_leftover}` removes them" in text
    assert main(["status", str(with_leftover), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [x["path"] for x in data["leftovers"]] == ["jobs/drop"]


def test_verify_notes_leftovers_without_failing(with_leftover: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify passes with a leftover and notes it on stdout as not corruption."""
    capsys.readouterr()
    assert main(["verify", str(with_leftover)]) == 0
    captured = capsys.readouterr()
    assert "note: leftover jobs/drop: 3 file(s)" in captured.out
    assert "(not corruption)" in captured.out
    assert captured.err == ""


def test_clean_cli_dry_run_then_removes(with_leftover: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`clean --dry-run` lists with sizes and keeps; `clean` removes, prints a total, exits 0."""
    capsys.readouterr()
    assert main(["clean", str(with_leftover), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    size = sum(p.stat().st_size for p in (with_leftover / "jobs" / "drop").iterdir())
    assert f"would remove jobs/drop: 3 file(s), {size} bytes" in dry
    assert f"would remove 1 leftover(s), {size} bytes" in dry
    assert (with_leftover / "jobs" / "drop").is_dir()
    assert main(["clean", str(with_leftover)]) == 0
    assert f"removed 1 leftover(s), {size} bytes" in capsys.readouterr().out
    assert not (with_leftover / "jobs" / "drop").exists()
    assert main(["verify", str(with_leftover)]) == 0
    assert "leftover" not in capsys.readouterr().out


def test_schema_of_an_unknown_name_says_which_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema bogus` exits 2 naming the schemas, not an internal argument name."""
    assert main(["schema", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "schema: unknown schema 'bogus'; choose manifest or report" in err
    assert "which" not in err


