"""The job state machine: allowed moves are a table, and each move journals, reports and emits."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.events import Collector, JobDownloaded, JobSubmitted
from batchvid.journal import Failed, Journal, Submitted, Submitting, Succeeded, read_entries
from batchvid.lifecycle import TRANSITIONS, JobLife, JobState, LifecycleError
from batchvid.report import Outcome
from tests.helpers import make_job

SECRET = "sk-very-secret-key"


def _life(tmp_path: Path) -> tuple[JobLife, Journal, Collector]:
    job = make_job("a")
    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    events = Collector()
    life = JobLife(job, Outcome(job, "pending", "submit"), journal, events,
                   lambda text: text.replace(SECRET, "[REDACTED]"))
    return life, journal, events


@pytest.mark.anyio
async def test_a_submitted_job_journals_and_reports_each_step(tmp_path: Path) -> None:
    """queued -> creating -> running -> downloading -> succeeded, each move in journal and outcome."""
    life, journal, events = _life(tmp_path)
    key = life.job.key
    await life.attempt("bv-1")
    await life.submitted("t1")
    assert life.state is JobState.RUNNING and life.outcome.task_id == "t1"
    life.downloading()
    video = {"path": "jobs/a/video.mp4", "sha256": "00", "bytes": 3}
    await life.succeeded("t1", video, None, None)
    journal.close()
    assert life.done and life.outcome.status == "succeeded" and life.outcome.attempts == 1
    assert list(read_entries(journal.path)) == [
        Submitting(key, "a", "bv-1"), Submitted(key, "a", "t1"), Succeeded(key, "a", "t1", video)
    ]
    assert events.events == [JobSubmitted("a", "t1"), JobDownloaded("a", 3)]


@pytest.mark.anyio
async def test_a_failure_is_scrubbed_before_journal_and_report(tmp_path: Path) -> None:
    """The failure message loses the API key in both the outcome and the journal line."""
    life, journal, _ = _life(tmp_path)
    await life.attempt(None)
    life.failed("invalid_request", f"server echoed {SECRET}")
    journal.close()
    assert life.outcome.error == {"kind": "invalid_request", "message": "server echoed [REDACTED]"}
    assert SECRET not in journal.path.read_text()
    assert isinstance(list(read_entries(journal.path))[-1], Failed)


def test_a_stopped_job_stays_pending(tmp_path: Path) -> None:
    """A job the run stopped before it ended keeps status pending, with the stop's error."""
    life, journal, _ = _life(tmp_path)
    life.stopped("auth", "key refused")
    journal.close()
    assert life.state is JobState.STOPPED and life.outcome.status == "pending"
    assert life.outcome.error == {"kind": "auth", "message": "key refused"}


@pytest.mark.anyio
async def test_moves_outside_the_table_are_refused(tmp_path: Path) -> None:
    """A finished job cannot move again, and no job skips from creating to downloading."""
    life, journal, _ = _life(tmp_path)
    await life.attempt(None)
    with pytest.raises(LifecycleError, match="creating -> downloading"):
        life.downloading()
    life.failed("x", "y")
    with pytest.raises(LifecycleError, match="failed -> stopped"):
        life.stopped()
    journal.close()


def test_every_state_is_in_the_table_and_final_states_have_no_moves() -> None:
    """The transition table covers every state; succeeded, failed and stopped are final."""
    assert set(TRANSITIONS) == set(JobState)
    for final in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED):
        assert TRANSITIONS[final] == frozenset()


@pytest.mark.anyio
async def test_a_succeeded_outcome_keeps_its_records_packed_and_reads_them_back(tmp_path: Path) -> None:
    """After the success the outcome holds its files records as one packed text (a run holds
    100,000 of them), and they read back equal."""
    life, journal, _ = _life(tmp_path)
    await life.submitted("t1")
    life.downloading()
    video = {"path": "jobs/a/video.mp4", "sha256": "00", "bytes": 3}
    media = {"fps": 30.0, "quality": {"motion": 0.125, "black_fraction": 0.0}, "codec": "h264"}
    poster = {"path": "jobs/a/poster.jpg", "sha256": "11", "bytes": 2}
    await life.succeeded("t1", video, None, media, poster=poster, provided={"revised_prompt": "ü"})
    journal.close()
    assert life.outcome.packed
    assert life.outcome.files() == (video, None, media, poster, {"revised_prompt": "ü"})
