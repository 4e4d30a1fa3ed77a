"""The journal's typed entries: one writer, one reader, the on-disk format old runs wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.errors import OutputDirError
from batchvid.journal import (
    Enhanced,
    Failed,
    Journal,
    Refused,
    Submitted,
    Submitting,
    Succeeded,
    encode,
    read_entries,
    replay_entries,
)

VIDEO = {"path": "jobs/a/video.mp4", "sha256": "ab" * 32, "bytes": 10}
ENTRIES = [
    Submitting("k1", "a", "bv-1"),
    Refused("k1", "a"),
    Submitting("k1", "a", None),
    Submitted("k1", "a", "t1"),
    Succeeded("k1", "a", "t1", VIDEO, None, {"fps": 16.0}),
    Failed("k2", "b", None, {"kind": "content_filter", "message": "no"}),
]


def test_entries_round_trip_through_the_file(tmp_path: Path) -> None:
    """Every entry type written by the journal reads back equal, in order."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    for entry in ENTRIES:
        journal.append(entry)
    journal.close()
    assert list(read_entries(journal.path)) == ENTRIES


def test_lines_keep_the_format_earlier_versions_wrote() -> None:
    """A line is compact JSON with sorted keys and the ``event`` name, as before the types."""
    assert encode(Submitting("k", "a", "r")) == (
        b'{"event":"submitting","id":"a","key":"k","request_id":"r"}\n'
    )
    assert encode(Failed("k", "a", None, {"kind": "x", "message": "y"})) == (
        b'{"error":{"kind":"x","message":"y"},"event":"failed","id":"a","key":"k","task_id":null}\n'
    )


def test_old_journals_still_replay(tmp_path: Path) -> None:
    """Lines without fields later versions add (request_id, cover, media) replay with None."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'{"event":"submitting","id":"a","key":"k1"}\n'
        b'{"event":"submitted","id":"a","key":"k1","task_id":"t1"}\n'
        b'{"event":"succeeded","id":"a","key":"k1","task_id":"t1","video":'
        b'{"path":"jobs/a/video.mp4","sha256":"00","bytes":1}}\n'
        b'{"event":"submitting","id":"b","key":"k2"}\n'
    )
    records = Journal(path).replay()
    assert records["k1"].state == "succeeded" and records["k1"].cover is None
    assert records["k1"].creates == 1
    assert records["k2"].state == "submitting" and records["k2"].request_id is None


def test_fields_a_later_version_adds_are_ignored(tmp_path: Path) -> None:
    """A journal written by a newer batchvid with extra fields still replays."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event":"submitted","id":"a","key":"k1","task_id":"t1","seen_at":"now"}\n')
    assert list(read_entries(path)) == [Submitted("k1", "a", "t1")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"event":"teleported","id":"a","key":"k1"}', "unknown journal event"),
        (b'{"event":"submitted","id":"a","key":"k1"}', "task_id"),
        (b'{"event":"failed","key":"k1"}', "id"),
        (b"[1, 2]", "not an object"),
    ],
)
def test_a_bad_line_before_the_tail_is_an_error_naming_it(
    tmp_path: Path, line: bytes, problem: str
) -> None:
    """A line that is no entry, and not the torn tail, stops the replay with its line number."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(line + b'\n{"event":"refused","id":"a","key":"k1"}\n')
    with pytest.raises(OutputDirError, match=rf"journal.jsonl:1: the journal is corrupt .*{problem}"):
        Journal(path).replay()


def test_a_new_journal_is_fsynced_into_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the journal syncs the state directory, so the file itself survives a power cut."""
    import os

    synced: list[str] = []
    real_fsync, real_open = os.fsync, os.open
    names: dict[int, str] = {}

    def traced_open(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        names[fd] = str(path)
        return fd

    def traced_fsync(fd: int) -> None:
        synced.append(names.get(fd, "file"))
        real_fsync(fd)

    (tmp_path / "state").mkdir()
    monkeypatch.setattr(os, "open", traced_open)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    journal = Journal(tmp_path / "state" / "journal.jsonl")
    journal.open()
    journal.close()
    assert synced == [str(tmp_path / "state")]


def _rewrite(prompt: str) -> Enhanced:
    return Enhanced("k1", "a", prompt, "a fox", "enhanced", None, "glm-4-flash", 1, 10)


def test_enhanced_keeps_the_state_and_tracks_the_rewrite_each_create_sent() -> None:
    """An enhanced entry changes no state; the record keeps the latest rewrite, whether it came
    after the latest create (fresh), and the one that create sent."""
    records = replay_entries([_rewrite("first")])
    assert records["k1"].state == "enhanced" and records["k1"].fresh
    records = replay_entries([_rewrite("first"), Submitting("k1", "a", "bv-1"), Submitted("k1", "a", "t1")])
    record = records["k1"]
    assert record.state == "submitted" and not record.fresh
    assert record.sent is not None and record.sent["prompt"] == "first"
    records = replay_entries([_rewrite("first"), Submitting("k1", "a", "bv-1"), Submitted("k1", "a", "t1"),
                              Succeeded("k1", "a", "t1", VIDEO), _rewrite("second")])  # fmt: skip
    record = records["k1"]
    assert record.state == "succeeded" and record.fresh and record.enhanced is not None
    assert (record.enhanced["prompt"], record.sent["prompt"] if record.sent else None) == ("second", "first")


def test_enhanced_line_round_trips_and_needs_its_fields(tmp_path: Path) -> None:
    """An enhanced line reads back as written; one without its prompt is corrupt."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode(_rewrite("A fox.")) + b'{"event":"enhanced","id":"a","key":"k1"}\n' + encode(Refused("k1", "a")))
    with pytest.raises(OutputDirError, match=":2: the journal is corrupt"):
        list(read_entries(path))
    path.write_bytes(encode(_rewrite("A fox.")))
    assert list(read_entries(path)) == [_rewrite("A fox.")]
