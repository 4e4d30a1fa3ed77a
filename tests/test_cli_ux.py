"""What a person reads: status of an interrupted run, leftovers, `clean`, `schema` errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.cli import build_parser, main
from batchvid.cli.common import build_settings
from batchvid.display import ProgressLines, run_summary
from batchvid.events import (
    Event,
    JobFinished,
    JobPolled,
    JobSubmitted,
    RunFinished,
    RunStarted,
    RunStopping,
)
from batchvid.manifest import load_manifest
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, Simulator, SimulatorConfig
from tests.helpers import FAST, make_job, make_manifest

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


JOBS = [make_job("j01", 0), make_job("j02", 1)]


def _settings(out: Path) -> Settings:
    return Settings(out_dir=out, base_url=f"http://sim{GEEKAI_PREFIX}", api_key="k" * 20,
                    max_in_flight=1, rpm=None, poll_min=0.01, poll_max=0.05)


def _interrupted(out: Path, sim: Simulator | None = None) -> tuple[str, str]:
    """A run stopped right after its first create was accepted: one job has a task, one was
    never sent. Returns (submitted job id, task id)."""
    sim = sim or Simulator(SimulatorConfig(latency=30.0))
    seen: list[str] = []
    runner: Runner

    def interrupt_on_submit(event: Event) -> None:
        if isinstance(event, JobSubmitted):
            seen.extend([event.job_id, event.task_id])
            runner.interrupt("test interrupt")

    runner = Runner(make_manifest(JOBS), _settings(out), transport=httpx.ASGITransport(app=sim.app),
                    subscribers=[interrupt_on_submit])
    result = anyio.run(runner.run)
    assert result.exit_code == 3
    return seen[0], seen[1]


def test_a_reattached_job_is_counted_as_re_attached_not_generated(tmp_path: Path) -> None:
    """The run after an interrupt says "1 generated, 1 re-attached", in its summary and report.md."""
    sim = Simulator(SimulatorConfig(latency=0.5))
    out = tmp_path / "out"
    _interrupted(out, sim)
    runner = Runner(make_manifest(JOBS), _settings(out), transport=httpx.ASGITransport(app=sim.app))
    result = anyio.run(runner.run)
    assert result.exit_code == 0
    assert run_summary(result.report, "OUT").startswith(
        "2 jobs: 1 generated, 1 re-attached, 0 already done, 0 failed, 0 pending")
    assert "**1 generated**, 1 re-attached, 0 already done" in (out / "report.md").read_text()


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
    report = json.loads((out / "report.json").read_text())
    assert report["jobs"][0]["error"] == {
        "kind": "not_finished",
        "message": f"submitted as task {task_id}; the run stopped before it finished and the "
        "next run re-attaches to it (no new charge)",
    }
    assert f"| `{job_id}` | pending | not_finished | submitted as task {task_id};" in (
        out / "report.md").read_text()


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
    files = len(list((with_leftover / "jobs" / "drop").iterdir()))
    assert f"  leftover jobs/drop: {files} file(s)," in text
    assert f"`batchvid clean {with_leftover}` removes them" in text
    assert main(["status", str(with_leftover), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [x["path"] for x in data["leftovers"]] == ["jobs/drop"]


def test_verify_notes_leftovers_without_failing(with_leftover: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify passes with a leftover and notes it on stdout as not corruption."""
    capsys.readouterr()
    assert main(["verify", str(with_leftover)]) == 0
    captured = capsys.readouterr()
    files = len(list((with_leftover / "jobs" / "drop").iterdir()))
    assert f"note: leftover jobs/drop: {files} file(s)" in captured.out
    assert "(not corruption)" in captured.out
    assert captured.err == ""


def test_clean_cli_dry_run_then_removes(with_leftover: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`clean --dry-run` lists with sizes and keeps; `clean` removes, prints a total, exits 0."""
    capsys.readouterr()
    assert main(["clean", str(with_leftover), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    paths = list((with_leftover / "jobs" / "drop").iterdir())
    size = sum(p.stat().st_size for p in paths)
    assert f"would remove jobs/drop: {len(paths)} file(s), {size} bytes" in dry
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




def test_progress_lines_at_state_changes_and_at_most_every_interval() -> None:
    """Not on a terminal: a line when the run starts, stops, finishes, and between them at most
    one per interval however many events come; at the end, a job the stop left is queued again."""
    now = [100.0]
    stream = io.StringIO()
    lines = ProgressLines(stream, clock=lambda: now[0], interval=10.0)
    lines(RunStarted(4, {"submit": 3, "skip": 1}))
    for second in range(1, 25):  # an event a second for 24 s: two lines (at 10 s and 20 s)
        now[0] = 100.0 + second
        lines(JobPolled(f"j{second % 2}", "t", "PROCESSING"))
    lines(JobFinished("j0", "succeeded"))
    lines(JobFinished("j1", "failed", "task_failed", "no"))
    lines(JobPolled("j2", "t", "PROCESSING"))
    lines(RunStopping("interrupted", "SIGINT"))
    lines(RunFinished(3, {"total": 4, "succeeded": 1, "skipped": 1, "failed": 1, "pending": 1}))
    assert stream.getvalue().splitlines() == [
        "progress: started: 1/4 done, 0 failed, 0 in flight, 3 queued, 0s elapsed",
        "progress: running: 1/4 done, 0 failed, 2 in flight, 1 queued, 10s elapsed",
        "progress: running: 1/4 done, 0 failed, 2 in flight, 1 queued, 20s elapsed",
        "progress: stopping: 2/4 done, 1 failed, 1 in flight, 0 queued, 24s elapsed",
        "progress: finished: 2/4 done, 1 failed, 0 in flight, 1 queued, 24s elapsed",
    ]


def test_run_without_a_terminal_prints_progress_unless_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stderr not a terminal, a run prints its start and end progress lines on stderr;
    --no-progress silences them."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(TWO, encoding="utf-8")
    quick = ["--simulate", "--sim-latency", "0.02", "--poll-interval", "0.01:0.02"]
    assert main(["run", str(manifest), "--out", str(tmp_path / "a"), *quick]) == 0
    err = capsys.readouterr().err
    assert "progress: started: 0/2 done, 0 failed, 0 in flight, 2 queued" in err
    assert "progress: finished: 2/2 done, 0 failed, 0 in flight, 0 queued" in err
    assert main(["run", str(manifest), "--out", str(tmp_path / "b"), *quick, "--no-progress"]) == 0
    assert "progress:" not in capsys.readouterr().err


def test_simulator_is_not_paced_by_the_default_rate(tmp_path: Path) -> None:
    """--simulate runs unpaced unless --rpm or limits.requests_per_minute asks; real runs get 30/min."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(TWO, encoding="utf-8")
    loaded = load_manifest(manifest)

    def rpm(*flags: str) -> float | None:
        args = build_parser().parse_args(["run", str(manifest), *flags])
        return build_settings(args, loaded).rpm  # type: ignore[no-any-return]

    assert rpm("--simulate") is None
    assert rpm() == 30.0
    assert rpm("--simulate", "--rpm", "12") == 12.0
    manifest.write_text(TWO.replace("defaults:", "limits:\n  requests_per_minute: 6\ndefaults:"))
    loaded = load_manifest(manifest)
    assert rpm("--simulate") == 6.0


def test_run_help_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --help` gives the defaults of in-flight cap, request rate and poll interval."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 4)" in text
    assert "(default 30; unpaced under --simulate)" in text
    assert "(default 5:15; 0.2:1 under --simulate)" in text


def test_plan_shows_what_changed_in_an_edited_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited job's plan reason names its changed fields, with old → new for short values;
    an unset size shows as the provider default, not '-'."""
    sized = TWO.replace("    prompt: a calm lake at dawn\n",
                        "    prompt: a calm lake at dawn\n    size: 720x480\n")
    out = _run(tmp_path, sized)
    edited = sized.replace("size: 720x480", "size: 1024x1024").replace("calm lake", "still lake")
    (tmp_path / "m.yaml").write_text(edited + "  - id: fresh\n    prompt: a new one\n")
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "m.yaml"), "--out", str(out)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    task = json.loads((out / "report.json").read_text())["jobs"][0]["task_id"]
    assert rows["keep"].endswith(
        f"submit  edited since its earlier request (task {task}): prompt, "
        "size: 720x480 → 1024x1024; a new job")
    assert "(provider default)" in rows["drop"] and " - " not in rows["drop"]
    assert rows["fresh"].endswith("submit  new job")


@pytest.mark.parametrize(
    ("provider", "url", "says"),
    [
        ("geekai", "https://open.bigmodel.cn/api/paas/v4", "is BigModel's API"),
        ("geekai", "http://127.0.0.1:8000/api/paas/v4", "is BigModel's API"),
        ("bigmodel", "https://geekai.co/api/v1", "is GeekAI's API"),
    ],
)
def test_a_base_url_of_the_other_provider_is_named_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    provider: str, url: str, says: str,
) -> None:
    """A GeekAI manifest pointed at BigModel's root (or the reverse): exit 2 saying so, with
    the fix, and nothing sent."""
    monkeypatch.setenv("GEEKAI_API_KEY", "x" * 20)
    monkeypatch.setenv("ZHIPUAI_API_KEY", "x" * 20)

    def no_network(*_: object, **__: object) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    monkeypatch.setattr(httpx.AsyncClient, "send", no_network)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(TWO.replace("name: two", f"name: two\nprovider: {provider}"))
    code = main(["run", str(manifest), "--out", str(tmp_path / "o"), "--base-url", url, "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--base-url {url} {says}" in err
    assert f"provider: {'bigmodel' if provider == 'geekai' else 'geekai'} in the manifest" in err
    assert "unknown parameters" not in err


def test_clean_works_after_an_interrupted_run_and_keeps_every_job_of_its_report(
    tmp_path: Path,
) -> None:
    """A run stopped by Ctrl-C (exit 3) writes a report naming every job, the one it sent and
    the one it never sent, and empties the lock: `clean` then works (it refused until a rerun),
    keeping both jobs' folders and removing only one no job owns."""
    from batchvid.clean import clean

    out = tmp_path / "out"
    _interrupted(out)
    assert (out / ".batchvid" / "lock").read_text() == ""
    assert [job["id"] for job in json.loads((out / "report.json").read_text())["jobs"]] == ["j01", "j02"]
    for name in ("j01", "j02", "stale"):
        (out / "jobs" / name).mkdir(parents=True, exist_ok=True)
        (out / "jobs" / name / "note.txt").write_text("kept?\n")
    assert [leftover.path.name for leftover in clean(out, dry_run=False)] == ["stale"]
    assert sorted(p.name for p in (out / "jobs").iterdir()) == ["j01", "j02"]
