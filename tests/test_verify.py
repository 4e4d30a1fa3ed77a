"""`verify_dir`: the lock and the dataset index are checked as well as the videos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.errors import OutputDirError
from batchvid.runner import Runner, Settings
from batchvid.simulator import GEEKAI_PREFIX, Simulator, SimulatorConfig
from batchvid.verify import verify_dir
from tests.helpers import make_job, make_manifest


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished output directory of two jobs; do not modify."""
    out = tmp_path_factory.mktemp("verify") / "out"
    sim = Simulator(SimulatorConfig(latency=0.02))
    settings = Settings(out_dir=out, base_url=f"http://sim{GEEKAI_PREFIX}", api_key="k",
                        rpm=None, poll_min=0.01, poll_max=0.02)
    manifest = make_manifest([make_job("one", 0), make_job("two", 1)])
    runner = Runner(manifest, settings, transport=httpx.ASGITransport(app=sim.app))
    assert anyio.run(runner.run).exit_code == 0
    return out


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "out"))


def test_untouched_directory_has_no_problems(finished: Path) -> None:
    """A fresh output directory verifies clean, every video and poster counted."""
    assert verify_dir(finished) == ([], 4)


def test_missing_lock_is_a_problem_not_an_error(copy: Path) -> None:
    """A deleted batchvid.lock is reported by name like any other missing file."""
    (copy / "batchvid.lock").unlink()
    problems, _ = verify_dir(copy)
    assert problems == ["batchvid.lock: missing"]


def test_missing_metadata_is_a_problem(copy: Path) -> None:
    """A deleted metadata.jsonl is reported by name."""
    (copy / "metadata.jsonl").unlink()
    problems, _ = verify_dir(copy)
    assert problems == ["metadata.jsonl: missing"]


def test_metadata_row_with_a_wrong_hash_is_a_problem(copy: Path) -> None:
    """A metadata.jsonl row whose sha256 disagrees with report.json is reported for its job."""
    path = copy / "metadata.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["sha256"] = "0" * 64
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems, _ = verify_dir(copy)
    assert problems == ["metadata.jsonl: job 'two' differs from report.json"]


def test_metadata_without_a_done_job_is_a_problem(copy: Path) -> None:
    """A done job missing from metadata.jsonl is reported for its job."""
    path = copy / "metadata.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    problems, _ = verify_dir(copy)
    assert problems == ["metadata.jsonl: job 'two' is done in report.json but has no row"]


def test_missing_report_is_an_output_dir_error(tmp_path: Path) -> None:
    """Without report.json there is nothing to verify against: OutputDirError."""
    with pytest.raises(OutputDirError, match="report.json not found"):
        verify_dir(tmp_path)


@pytest.mark.parametrize("name", ["request.json", "response.json"])
@pytest.mark.parametrize(("damage", "said"), [
    ("missing", "missing"), ("empty", "empty"), ("zeros", "empty"), ("cut", "damaged (not JSON)"),
])
def test_a_done_jobs_record_missing_or_damaged_is_a_problem(copy: Path, name: str, damage: str, said: str) -> None:
    """A done job's request.json or response.json emptied, zero-filled or cut (a power cut's
    work), or its response.json lost, is named as a problem, saying what the file was; a
    missing request.json is named as a note only; the videos still verify."""
    path = copy / "jobs" / "one" / name
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"empty": b"", "zeros": bytes(len(data)), "cut": data[: len(data) // 2]}[damage])
    notes: list[str] = []
    problems, checked = verify_dir(copy, notes)
    assert checked == 4
    named = notes if (name, damage) == ("request.json", "missing") else problems
    assert len(problems) + len(notes) == 1 and len(named) == 1
    assert named[0].startswith(f"jobs/one/{name}: {said} (")
    assert ("a rerun writes it again only for a job it downloads" in named[0]) == (name == "request.json")


def test_a_folder_fetched_again_by_an_earlier_batchvid_verifies(
    copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A done job whose folder was removed and its video fetched again by a batchvid that did
    not write request.json back (response.json and the files only): `batchvid verify` exits 0,
    noting the missing request.json on stdout."""
    from batchvid.cli import main

    (copy / "jobs" / "one" / "request.json").unlink()
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: jobs/one/request.json: missing (") and "ok: 4 file(s)" in out
