"""Leftovers in an output directory and `batchvid clean`: what no job of the manifest owns goes,
what the journal may still need stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchvid.clean import clean, find_leftovers
from batchvid.cli import main
from batchvid.errors import OutputDirError
from batchvid.store import STATE_DIR
from tests.helpers import FAST

THREE = """\
version: 1
name: three
defaults:
  model: cogvideox-flash
jobs:
  - id: keep
    prompt: a calm lake at dawn
  - id: drop
    prompt: a red kite over the dunes
  - id: rename-me
    prompt: a lantern in the fog
"""


def _run(tmp_path: Path, text: str) -> Path:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), *FAST]) == 0
    return out


def _journal(out: Path, *entries: dict[str, object]) -> None:
    with (out / STATE_DIR / "journal.jsonl").open("a", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")


def test_a_removed_job_and_a_stray_file_are_leftovers(tmp_path: Path) -> None:
    """After a job leaves the manifest and is rerun, its folder and stray files are leftovers."""
    out = _run(tmp_path, THREE)
    _run(tmp_path, THREE.replace("  - id: drop\n    prompt: a red kite over the dunes\n", ""))
    (out / "jobs" / "notes.txt").write_text("mine", encoding="utf-8")
    found = [leftover.path.name for leftover in find_leftovers(out)]
    assert found == ["drop", "notes.txt"]
    drop = next(leftover for leftover in find_leftovers(out) if leftover.path.name == "drop")
    assert drop.files == 4 and drop.bytes > 0  # request.json, response.json, video, poster


def test_clean_dry_run_lists_and_keeps(tmp_path: Path) -> None:
    """--dry-run lists what it would remove and removes nothing."""
    out = _run(tmp_path, THREE)
    _run(tmp_path, THREE.replace("  - id: drop\n    prompt: a red kite over the dunes\n", ""))
    assert [leftover.path.name for leftover in clean(out, dry_run=True)] == ["drop"]
    assert (out / "jobs" / "drop" / "video.mp4").exists()


def test_clean_removes_only_leftovers_and_the_rest_still_verifies(tmp_path: Path) -> None:
    """clean removes the removed job's folder; every owned file stays and verify passes."""
    out = _run(tmp_path, THREE)
    _run(tmp_path, THREE.replace("  - id: drop\n    prompt: a red kite over the dunes\n", ""))
    journal_before = (out / STATE_DIR / "journal.jsonl").read_bytes()
    assert [leftover.path.name for leftover in clean(out, dry_run=False)] == ["drop"]
    assert not (out / "jobs" / "drop").exists()
    assert sorted(p.name for p in (out / "jobs").iterdir()) == ["keep", "rename-me"]
    assert (out / STATE_DIR / "journal.jsonl").read_bytes() == journal_before
    assert main(["verify", str(out)]) == 0


def test_a_submitted_unfinished_task_keeps_its_folder(tmp_path: Path) -> None:
    """A folder whose job has a journaled task that never finished is never a leftover."""
    out = _run(tmp_path, THREE)
    (out / "jobs" / "in-flight").mkdir()
    (out / "jobs" / "in-flight" / "request.json").write_text("{}", encoding="utf-8")
    _journal(out,
             {"event": "submitting", "id": "in-flight", "key": "f" * 64, "request_id": "bv-x"},
             {"event": "submitted", "id": "in-flight", "key": "f" * 64, "task_id": "t-1"})
    assert find_leftovers(out) == []
    clean(out, dry_run=False)
    assert (out / "jobs" / "in-flight" / "request.json").exists()


def test_a_renamed_jobs_old_folder_is_kept_until_the_rerun_moves_it(tmp_path: Path) -> None:
    """A job renamed in the manifest keeps its old folder (its key is still wanted); after the
    rerun has moved the files, the old folder is a leftover."""
    out = _run(tmp_path, THREE)
    renamed = THREE.replace("id: rename-me", "id: renamed")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(renamed, encoding="utf-8")
    # the report still lists the old id until the rerun, and the journal maps its key to it
    assert find_leftovers(out) == []
    assert main(["run", str(manifest), "--out", str(out), *FAST]) == 0
    assert (out / "jobs" / "renamed" / "video.mp4").exists()
    assert [leftover.path.name for leftover in find_leftovers(out)] == ["rename-me"]


def test_clean_refuses_a_directory_without_a_report(tmp_path: Path) -> None:
    """An empty or foreign directory is refused, naming it, and nothing is created in it."""
    with pytest.raises(OutputDirError, match="report.json"):
        clean(tmp_path, dry_run=False)
    assert list(tmp_path.iterdir()) == []


def _killed_after_adding_a_job(tmp_path: Path) -> Path:
    """An output directory as a run killed before its report leaves it: that run added job
    `added` to the manifest and paid for its video, but report.json is still the earlier run's
    and the lock file still holds the killed run's pid."""
    out = _run(tmp_path, THREE)
    earlier_report = (out / "report.json").read_bytes()
    _run(tmp_path, THREE + "  - id: added\n    prompt: a heron in the reeds\n")
    (out / "report.json").write_bytes(earlier_report)
    (out / STATE_DIR / "lock").write_text("999999\n", encoding="utf-8")
    return out


def test_a_job_paid_for_by_a_killed_run_is_no_leftover(tmp_path: Path) -> None:
    """A job the killed run added (its video journaled, the stale report not naming it) is not
    listed as a leftover by status or verify: its folder holds a paid-for video."""
    out = _killed_after_adding_a_job(tmp_path)
    assert (out / "jobs" / "added" / "video.mp4").exists()
    assert find_leftovers(out) == []


def test_clean_refuses_while_the_last_run_has_not_ended_cleanly(tmp_path: Path) -> None:
    """clean (and --dry-run) refuses a directory whose last run was killed, naming its pid and
    what to do, and removes nothing; after a rerun ends cleanly, it works again."""
    out = _killed_after_adding_a_job(tmp_path)
    for dry_run in (True, False):
        with pytest.raises(OutputDirError, match=r"pid 999999.*run the manifest again"):
            clean(out, dry_run=dry_run)
    assert main(["clean", str(out)]) == 2
    assert (out / "jobs" / "added" / "video.mp4").exists()
    _run(tmp_path, THREE)  # the rerun ends cleanly: `added` has left the manifest for good
    assert [leftover.path.name for leftover in clean(out, dry_run=False)] == ["added"]


def test_a_run_refused_before_it_writes_leaves_clean_working(tmp_path: Path) -> None:
    """A run refused after taking the lock but before writing anything (--max-cost with a
    model of unknown price, exit 2) leaves the lock as it found it: `clean` still works
    instead of taking that run for a killed one."""
    out = _run(tmp_path, THREE)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(THREE.replace("cogvideox-flash", "cogvideox-2"), encoding="utf-8")
    assert main(["run", str(manifest), "--out", str(out), "--max-cost", "1", *FAST]) == 2
    assert (out / STATE_DIR / "lock").read_text() == ""
    assert main(["clean", str(out)]) == 0


def test_clean_checks_again_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed between clean's first look and its taking the lock (played here by that
    first look seeing no pid) is still caught once clean holds the lock: nothing is removed,
    and a pid stays in the lock for the next clean to refuse."""
    import batchvid.clean

    out = _killed_after_adding_a_job(tmp_path)
    monkeypatch.setattr(batchvid.clean, "last_run_unfinished", lambda root: None)
    with pytest.raises(OutputDirError, match="pid 999999"):
        clean(out, dry_run=False)
    assert (out / "jobs" / "added" / "video.mp4").exists()
    assert (out / STATE_DIR / "lock").read_text().strip() != ""
