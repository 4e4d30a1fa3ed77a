"""`batchvid merge`: refusals that keep a merged directory honest, and its journal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.errors import OutputDirError
from batchvid.jobs import Job
from batchvid.merge import merge_dirs
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, Simulator, SimulatorConfig
from batchvid.store import read_records
from tests.helpers import make_job, make_manifest

JOBS = [make_job("calm", 0), make_job("doomed", 1, prompt="a storm [fail]")]


def _run(out: Path, jobs: list[Job] = JOBS, fail_marker: str = "[fail]") -> int:
    """Run ``jobs`` on an in-process simulator into ``out``; the exit code."""
    sim = Simulator(SimulatorConfig(latency=0.02, fail_marker=fail_marker))
    settings = Settings(out_dir=out, base_url=f"http://sim{GEEKAI_PREFIX}", api_key="k",
                        rpm=None, poll_min=0.01, poll_max=0.02)
    runner = Runner(make_manifest(jobs), settings, transport=httpx.ASGITransport(app=sim.app))
    return anyio.run(runner.run).exit_code


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished output directory (one job succeeded, one failed); do not modify."""
    out = tmp_path_factory.mktemp("shard") / "out"
    assert _run(out) == 1
    return out


def test_merge_refuses_a_non_empty_target(shard: Path, tmp_path: Path) -> None:
    """Merging into a directory that has content is refused and leaves it untouched."""
    into = tmp_path / "merged"
    merge_dirs([shard], into)
    journal = (into / ".batchvid" / "journal.jsonl").read_bytes()
    with pytest.raises(OutputDirError, match="not empty"):
        merge_dirs([shard], into)
    assert (into / ".batchvid" / "journal.jsonl").read_bytes() == journal


def test_merge_refuses_a_shard_given_twice(shard: Path, tmp_path: Path) -> None:
    """Naming one shard twice is refused before anything is written."""
    with pytest.raises(OutputDirError, match="given twice"):
        merge_dirs([shard, shard], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_reports_a_missing_file_as_an_output_dir_error(shard: Path, tmp_path: Path) -> None:
    """A shard without metadata.jsonl is an OutputDirError naming the file, not a traceback."""
    broken = Path(shutil.copytree(shard, tmp_path / "broken"))
    (broken / "metadata.jsonl").unlink()
    with pytest.raises(OutputDirError, match="metadata.jsonl not found"):
        merge_dirs([broken], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refused_for_a_damaged_video_leaves_no_directory(shard: Path, tmp_path: Path) -> None:
    """A video that no longer matches its report stops the merge before the target exists."""
    broken = Path(shutil.copytree(shard, tmp_path / "broken"))
    (broken / "jobs" / "calm" / "video.mp4").write_bytes(b"not a video")
    with pytest.raises(OutputDirError, match="does not match its report"):
        merge_dirs([broken], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_keeps_the_journal_of_the_shard_whose_result_it_keeps(
    shard: Path, tmp_path: Path
) -> None:
    """A job failed in one shard and done in another is done in the merged journal too."""
    healed = tmp_path / "healed"
    assert _run(healed, fail_marker="") == 0
    into = tmp_path / "merged"
    report = merge_dirs([healed, shard], into)
    doomed = JOBS[1]
    assert {j["id"]: j["status"] for j in report["jobs"]}["doomed"] == "succeeded"
    assert read_records(into)[doomed.key].state == "succeeded"


def test_merge_of_a_failed_shard_exits_1_in_its_report(shard: Path, tmp_path: Path) -> None:
    """The merged report keeps a shard's failure, with its kind, and exit code 1."""
    report = merge_dirs([shard], tmp_path / "merged")
    assert report["exit_code"] == 1
    failed = [(j["id"], j["error"]["kind"]) for j in report["jobs"] if j["status"] == "failed"]
    assert failed == [("doomed", "task_failed")]
    written = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert written["summary"] == report["summary"]
