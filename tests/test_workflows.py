"""The GitHub Actions workflows: their structure, and the regenerate commands run for real.

The commands of .github/workflows/regenerate.yml are taken from the file, their `${{ }}`
expressions filled in as Actions would, and run through `batchvid.cli.main` on the simulator.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchvid.cli import main

ROOT = Path(__file__).parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
SIMULATE = ["--simulate", "--sim-latency", "0.05", "--poll-interval", "0.01:0.05", "--rpm", "6000"]


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    # YAML 1.1 reads the key `on` as the boolean True
    data["on"] = data.pop(True, data.get("on"))
    return data


def _step(job: dict[str, Any], *, uses: str | None = None, runs: str | None = None,
          nth: int = 0) -> dict[str, Any]:
    found = [s for s in job["steps"]
             if (uses is not None and str(s.get("uses", "")).startswith(uses))
             or (runs is not None and runs in str(s.get("run", "")))]
    assert len(found) > nth, f"no step uses={uses} runs={runs}"
    step: dict[str, Any] = found[nth]
    return step


@pytest.fixture(scope="module")
def regenerate() -> dict[str, Any]:
    return _load("regenerate.yml")


def test_regenerate_runs_on_pushes_to_manifests(regenerate: dict[str, Any]) -> None:
    """The workflow triggers on pushes that touch manifests/."""
    assert "manifests/**" in regenerate["on"]["push"]["paths"]


def test_shards_are_a_matrix_of_four_whose_size_the_command_uses(
    regenerate: dict[str, Any]
) -> None:
    """Four shard jobs, not cancelled together; `--shard I/N` uses the matrix size as N; the
    run's progress lines stay on (no `--no-progress`), so a long CI log is not silent."""
    shard = regenerate["jobs"]["shard"]
    assert shard["strategy"]["matrix"]["shard"] == [1, 2, 3, 4]
    assert shard["strategy"]["fail-fast"] is False
    run = _step(shard, runs="batchvid run")["run"]
    assert "--shard ${{ matrix.shard }}/4" in run
    assert "--out runs/shard-${{ matrix.shard }}" in run
    assert "--no-progress" not in run


def test_shard_reads_the_api_key_from_secrets(regenerate: dict[str, Any]) -> None:
    """The key reaches `batchvid run` from the repository secrets, through the environment."""
    env = _step(regenerate["jobs"]["shard"], runs="batchvid run")["env"]
    assert env["GEEKAI_API_KEY"] == "${{ secrets.GEEKAI_API_KEY }}"


def test_each_shard_uploads_its_directory_with_the_journal(regenerate: dict[str, Any]) -> None:
    """Each shard uploads runs/shard-I as artifact shard-I, hidden .batchvid/ journal included."""
    upload = _step(regenerate["jobs"]["shard"], uses="actions/upload-artifact")["with"]
    assert upload["name"] == "shard-${{ matrix.shard }}"
    assert upload["path"] == "runs/shard-${{ matrix.shard }}"
    assert upload["include-hidden-files"] is True


def test_merge_job_downloads_merges_and_uploads(regenerate: dict[str, Any]) -> None:
    """The merge job waits for the shards, merges runs/shard-1..4 into runs/merged, uploads it."""
    merge = regenerate["jobs"]["merge"]
    assert merge["needs"] == "shard"
    download = _step(merge, uses="actions/download-artifact")["with"]
    assert (download["pattern"], download["path"]) == ("shard-*", "runs")
    argv = shlex.split(_step(merge, runs="batchvid merge")["run"])
    assert argv[:2] == ["batchvid", "merge"]
    assert argv[-2:] == ["--into", "runs/merged"]
    assert argv[2:-2] == [f"runs/shard-{i}" for i in regenerate["jobs"]["shard"]["strategy"]
                          ["matrix"]["shard"]]
    upload = _step(merge, uses="actions/upload-artifact")["with"]
    assert upload["path"] == "runs/merged"


def test_merge_job_writes_the_step_summary(
    regenerate: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge step appends the merged report.md to the job's step summary, once."""
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    (tmp_path / "m.yaml").write_text("version: 1\nname: s\njobs:\n  - id: a\n    prompt: hi\n")
    for i in (1, 2, 3, 4):
        assert main(["run", "m.yaml", "--shard", f"{i}/4", "--out", f"runs/shard-{i}", *SIMULATE]) == 0
    summary.write_text("")
    merge = regenerate["jobs"]["merge"]
    assert not [s for s in merge["steps"] if "GITHUB_STEP_SUMMARY" in str(s.get("run", ""))]
    assert main(shlex.split(_step(merge, runs="batchvid merge")["run"])[1:]) == 0
    assert summary.read_text().count("## ✅ batchvid: s") == 1


def test_workflow_commands_work_on_the_simulator(
    regenerate: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard commands for I = 1..4, then the merge and verify commands, succeed as written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    manifest = "manifests/sweep.yaml"
    (tmp_path / "manifests").mkdir()
    (tmp_path / manifest).write_text((ROOT / manifest).read_text(encoding="utf-8"))
    shard_job = regenerate["jobs"]["shard"]
    run = _step(shard_job, runs="batchvid run")["run"]
    for i in shard_job["strategy"]["matrix"]["shard"]:
        argv = shlex.split(run.replace("${{ matrix.shard }}", str(i)).replace("$MANIFEST", manifest))
        assert argv[0] == "batchvid"
        assert main([*argv[1:], *SIMULATE]) == 0, f"shard {i}"
    merge = regenerate["jobs"]["merge"]
    for command in ("batchvid merge", "batchvid verify"):
        argv = shlex.split(_step(merge, runs=command)["run"])
        assert main(argv[1:]) == 0, command
    report = json.loads((tmp_path / "runs" / "merged" / "report.json").read_text())
    assert report["summary"]["succeeded"] == report["summary"]["total"] == 20


def test_ci_runs_the_ci_entry_point_on_push_and_pull_request() -> None:
    """ci.yml runs `bash .ci/run` (tests, ruff, mypy) on pushes and pull requests."""
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    (job,) = ci["jobs"].values()
    assert _step(job, runs=".ci/run")["run"].strip() == "bash .ci/run"
    assert (ROOT / ".ci" / "run").is_file()


def test_a_shard_keeps_what_it_paid_for_when_cut_short(regenerate: dict[str, Any]) -> None:
    """The shard's cache (its journal: the tasks it paid for) is saved even when the job is
    cancelled, under a key naming the attempt (a key is written once, and "Re-run jobs" keeps
    the run id); the run step's own time limit is below the job's, so the save still runs
    after a run out of time. Otherwise the next push submits those tasks again."""
    shard = regenerate["jobs"]["shard"]
    run = _step(shard, runs="batchvid run")
    assert 0 < run["timeout-minutes"] < shard["timeout-minutes"]
    save = _step(shard, uses="actions/cache/save")
    assert save["if"] == "${{ always() }}"
    restore = _step(shard, uses="actions/cache/restore")
    for step in (save, restore):
        assert step["with"]["key"].endswith("-${{ github.run_id }}-${{ github.run_attempt }}")
    assert save["with"]["path"] == restore["with"]["path"]
    # The next run (or attempt) restores by prefix: every key saved must start with it.
    prefix = restore["with"]["restore-keys"].strip()
    assert "run_id" not in prefix and save["with"]["key"].startswith(prefix)
