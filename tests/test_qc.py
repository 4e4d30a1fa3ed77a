"""Quality signals in a run: ``qc:`` thresholds fail a clip with ``qc_failed`` (its video kept),
``--retry-failed`` generates a new one, posters are recorded, and what GeekAI says beside the
video lands in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchvid.jobs import Job
from batchvid.runner import Runner, RunResult
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.store import read_records, sha256_file
from batchvid.verify import verify_dir
from tests.helpers import Recording, make_job, make_manifest
from tests.test_runner import _settings

QC = {"max_black_fraction": 0.5, "max_frozen_fraction": 0.5}


def _three(provider: str = "geekai", **params: Any) -> list[Job]:
    prompts = ["a [black] night", "a [frozen] lake", "a fox runs through the snow"]
    return [make_job(name, i, provider, prompt=prompt, **params)
            for i, (name, prompt) in enumerate(zip(["black", "frozen", "fox"], prompts, strict=True))]


def _run(sim: Simulator, jobs: list[Job], out: Path, provider: str = "geekai",
         manifest: dict[str, Any] | None = None, **kw: Any) -> tuple[RunResult, Recording]:
    transport = Recording(httpx.ASGITransport(app=sim.app))
    runner = Runner(make_manifest(jobs, **(manifest or {})), _settings(out, provider, **kw),
                    transport=transport)
    return anyio.run(runner.run), transport


def _report(out: Path) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in json.loads((out / "report.json").read_text())["jobs"]}


def test_qc_thresholds_fail_black_and_frozen_clips_and_keep_their_videos(tmp_path: Path) -> None:
    """With qc thresholds the black and the frozen clip fail with qc_failed, their paid videos
    kept aside and recorded; the moving clip succeeds."""
    out = tmp_path / "out"
    result, _ = _run(Simulator(SimulatorConfig()), _three(), out, manifest={"qc": QC})
    assert result.exit_code == 1
    jobs = _report(out)
    assert [jobs[i]["status"] for i in ("black", "frozen", "fox")] == ["failed", "failed", "succeeded"]
    for name in ("black", "frozen"):
        job = jobs[name]
        assert job["error"]["kind"] == "qc_failed"
        kept = job["video"]["path"]
        assert kept.startswith(f"jobs/{name}/video.qc_failed-") and kept in job["error"]["message"]
        assert sha256_file(out / kept) == (job["video"]["sha256"], job["video"]["bytes"])
        assert not (out / "jobs" / name / "video.mp4").exists()
        assert read_records(out)[job["key"]].video == job["video"]
    assert jobs["black"]["quality"]["black_fraction"] >= 0.9
    assert jobs["frozen"]["quality"]["frozen_fraction"] >= 0.9
    assert jobs["fox"]["error"] is None and jobs["fox"]["quality"]["motion"] > 0


def test_retry_failed_creates_new_videos_for_the_qc_failed_jobs_only(tmp_path: Path) -> None:
    """--retry-failed sends one new create for each qc_failed job and no request at all for
    the job that passed; the first rejected videos stay on disk."""
    sim = Simulator(SimulatorConfig())
    out = tmp_path / "out"
    jobs = _three()
    first, _ = _run(sim, jobs, out, manifest={"qc": QC})
    kept = {o.job.id: o.video["path"] for o in first.outcomes if o.video}
    fox_task = next(o.task_id for o in first.outcomes if o.job.id == "fox")
    assert fox_task is not None
    result, transport = _run(sim, jobs, out, manifest={"qc": QC}, retry_failed=True)
    creates = [json.loads(r.content)["prompt"] for r in transport.requests if r.method == "POST"]
    assert sorted(creates) == ["a [black] night", "a [frozen] lake"]
    assert not [r for r in transport.requests if fox_task in str(r.url)]
    assert [o.action for o in result.outcomes] == ["submit", "submit", "skip"]
    assert sim.stats()["tasks_created"] == 5
    for name in ("black", "frozen"):
        assert (out / kept[name]).is_file()


def test_bigmodel_retry_of_a_qc_failed_job_is_a_new_request(tmp_path: Path) -> None:
    """On BigModel the new create of a qc_failed job goes under a new request_id, so it makes
    a new task instead of being refused as a duplicate."""
    sim = Simulator(SimulatorConfig())
    out = tmp_path / "out"
    jobs = _three("bigmodel", model="cogvideox-2")[:1]
    first, _ = _run(sim, jobs, out, "bigmodel", manifest={"qc": QC})
    again, transport = _run(sim, jobs, out, "bigmodel", manifest={"qc": QC}, retry_failed=True)
    ids = [json.loads(r.content)["request_id"] for r in transport.requests if r.method == "POST"]
    first_id = json.loads((out / "jobs" / "black" / "request.json").read_text())["request_id"]
    assert len(ids) == 1 and ids[0] == first_id
    assert again.outcomes[0].error is not None and again.outcomes[0].error["kind"] == "qc_failed"
    assert again.outcomes[0].task_id != first.outcomes[0].task_id
    assert sim.stats()["tasks_created"] == 2


def test_without_qc_the_signals_are_information_only(tmp_path: Path) -> None:
    """Without qc thresholds black and frozen clips succeed, their signals recorded in
    report.json, metadata.jsonl and report.md."""
    out = tmp_path / "out"
    result, _ = _run(Simulator(SimulatorConfig()), _three(), out)
    assert result.exit_code == 0
    jobs = _report(out)
    assert jobs["black"]["quality"]["black_fraction"] >= 0.9
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["quality"] for r in rows] == [jobs[r["id"]]["quality"] for r in rows]
    assert "| 0.000 · 100% · 100% |" in (out / "report.md").read_text()


def test_poster_is_recorded_in_journal_report_and_lock_and_verified(tmp_path: Path) -> None:
    """Each downloaded video's poster is pinned as {path, sha256, bytes} in the journal, the
    report and the lock; a changed poster is a problem for verify."""
    out = tmp_path / "out"
    _run(Simulator(SimulatorConfig()), _three()[2:], out)
    job = _report(out)["fox"]
    poster = job["poster"]
    assert poster["path"] == "jobs/fox/poster.jpg"
    assert sha256_file(out / poster["path"]) == (poster["sha256"], poster["bytes"])
    assert read_records(out)[job["key"]].poster == poster
    assert json.loads((out / "batchvid.lock").read_text())["jobs"]["fox"]["poster"] == poster
    assert verify_dir(out)[0] == []
    (out / poster["path"]).write_bytes(b"\xff\xd8other")
    assert verify_dir(out)[0] == [f"{poster['path']}: size 7 differs from the recorded {poster['bytes']}"]


def test_a_renamed_job_carries_its_poster(tmp_path: Path) -> None:
    """A done job whose id changed moves with its poster, recorded under the new id."""
    sim = Simulator(SimulatorConfig())
    out = tmp_path / "out"
    fox = _three()[2]
    _run(sim, [fox], out)
    renamed = make_job("fox-renamed", 0, prompt=fox.params["prompt"])
    result, transport = _run(sim, [renamed], out)
    assert transport.requests == [] and result.outcomes[0].action == "download"
    poster = _report(out)["fox-renamed"]["poster"]
    assert poster["path"] == "jobs/fox-renamed/poster.jpg"
    assert verify_dir(out)[0] == []


def test_geekai_revised_prompt_and_duration_are_recorded(tmp_path: Path) -> None:
    """GeekAI's revised_prompt and duration land in the job entry, and stay on a rerun."""
    sim = Simulator(SimulatorConfig(geekai_details=True))
    out = tmp_path / "out"
    jobs = _three()[2:]
    _run(sim, jobs, out)
    job = _report(out)["fox"]
    assert job["revised_prompt"] == "a fox runs through the snow"
    assert job["provider_duration"] == 1.0
    _run(sim, jobs, out)
    assert _report(out)["fox"] == dict(job, status="skipped", action="skip")


def test_results_without_provider_details_leave_the_fields_out(tmp_path: Path) -> None:
    """A result without revised_prompt or duration (GeekAI's CogVideoX sample) adds neither."""
    out = tmp_path / "out"
    _run(Simulator(SimulatorConfig()), _three()[2:], out)
    assert not {"revised_prompt", "provider_duration"} & set(_report(out)["fox"])


def test_manifest_qc_fails_clips_in_a_simulated_cli_run(tmp_path: Path) -> None:
    """`run --simulate` of a manifest with qc: the [black] and [frozen] jobs fail with
    qc_failed (exit 1), the moving one succeeds, and the license reaches report.json."""
    from batchvid.cli import main
    from tests.test_dataset import FAST

    (tmp_path / "m.yaml").write_text(
        "version: 1\nlicense: cc-by-4.0\nqc:\n  max_black_fraction: 0.5\n  min_motion: 0.001\n"
        "jobs:\n  - id: dark\n    prompt: a [black] night\n  - id: still\n    prompt: a [frozen] lake\n"
        "  - id: fox\n    prompt: a fox runs through the snow\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(out), *FAST]) == 1
    report = json.loads((out / "report.json").read_text())
    kinds = {j["id"]: (j["error"] or {}).get("kind") for j in report["jobs"]}
    assert kinds == {"dark": "qc_failed", "still": "qc_failed", "fox": None}
    assert report["manifest"]["license"] == "cc-by-4.0"
