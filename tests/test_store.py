"""The output directory: lock, journal, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchvid.errors import OutputDirError, OutputDirLocked
from batchvid.store import (
    Journal,
    OutputDir,
    hashing_writer,
    sha256_file,
    verify_file,
    write_atomic,
)


def test_write_atomic_leaves_no_temporary_files(tmp_path: Path) -> None:
    """An atomic write leaves only the final file, with the content written."""
    target = tmp_path / "a" / "report.json"
    write_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert os.listdir(target.parent) == ["report.json"]


def test_hashing_writer_discards_unless_committed(tmp_path: Path) -> None:
    """A download that fails before commit leaves neither the final nor a temporary file."""
    final = tmp_path / "video.mp4"
    with pytest.raises(RuntimeError), hashing_writer(final) as writer:
        writer.write(b"partial")
        raise RuntimeError("connection dropped")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_hashing_writer_hash_matches_file(tmp_path: Path) -> None:
    """The sha256 computed while streaming equals the hash of the committed file."""
    final = tmp_path / "video.mp4"
    with hashing_writer(final) as writer:
        writer.write(b"abc" * 1000)
        writer.write(b"def")
        writer.commit()
    assert sha256_file(final) == (writer.sha256, 3003)


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    """Two runs never write into one output directory at once."""
    first = OutputDir(tmp_path / "out")
    first.open()
    try:
        with pytest.raises(OutputDirLocked, match="in use by another batchvid run"):
            OutputDir(tmp_path / "out").open()
    finally:
        first.close()
    second = OutputDir(tmp_path / "out")
    second.open()
    second.close()


def test_journal_replay_folds_latest_state_per_key(tmp_path: Path) -> None:
    """Replay gives the last state of each key and counts its create requests."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    journal.append({"event": "submitting", "key": "k1", "id": "a", "request_id": "r1"})
    journal.append({"event": "submitted", "key": "k1", "id": "a", "task_id": "t1"})
    journal.append({"event": "submitting", "key": "k2", "id": "b", "request_id": "r2"})
    journal.append({"event": "failed", "key": "k2", "id": "b", "task_id": None,
                    "error": {"kind": "content_filter", "message": "no"}})
    journal.close()
    records = journal.replay()
    assert records["k1"].state == "submitted" and records["k1"].task_id == "t1"
    assert records["k1"].creates == 1
    assert records["k2"].state == "failed" and records["k2"].error == {"kind": "content_filter", "message": "no"}


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A crash in the middle of an append loses only that line."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n{"event":"subm'
    )
    records = Journal(path).replay()
    assert records["k1"].state == "submitting"


def test_journal_corruption_in_the_middle_names_the_line(tmp_path: Path) -> None:
    """A corrupt line that is not the tail is an error naming its line number."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'garbage\n{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n'
    )
    with pytest.raises(OutputDirError, match=r"journal.jsonl:1: the journal is corrupt"):
        Journal(path).replay()


def test_verify_file_reports_missing_truncated_and_altered(tmp_path: Path) -> None:
    """verify_file names each kind of damage."""
    path = tmp_path / "v.mp4"
    path.write_bytes(b"0123456789")
    digest, size = sha256_file(path)
    expected = {"sha256": digest, "bytes": size}
    assert verify_file(path, expected) is None
    path.write_bytes(b"01234")
    assert "size 5 differs" in (verify_file(path, expected) or "")
    path.write_bytes(b"0123456788")
    assert verify_file(path, expected) == "sha256 differs from the recorded one"
    path.unlink()
    assert verify_file(path, expected) == "missing"


def test_opening_sweeps_temporary_files_of_a_killed_run(tmp_path: Path) -> None:
    """Half-written downloads and reports left by a SIGKILL are deleted when the lock is taken."""
    job_dir = tmp_path / "jobs" / "a"
    job_dir.mkdir(parents=True)
    orphans = [job_dir / ".video.mp4.x1.part", job_dir / ".response.json.x2.tmp", tmp_path / ".report.json.x3.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half")
    (job_dir / "video.mp4").write_bytes(b"kept")
    with OutputDir(tmp_path) as out:
        out.open()
    assert [p for p in orphans if p.exists()] == []
    assert (job_dir / "video.mp4").read_bytes() == b"kept"


def test_appending_after_a_torn_tail_drops_the_tail_first(tmp_path: Path) -> None:
    """The next entry is not glued onto a crash's half line, so later runs still read the journal."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"event":"submitting","id":"a","key":"k1","request_id":"r"}\n{"event":"subm')
    journal = Journal(path)
    journal.open()
    journal.append({"event": "submitted", "key": "k1", "id": "a", "task_id": "t1"})
    journal.append({"event": "submitting", "key": "k2", "id": "b", "request_id": "r2"})
    journal.close()
    records = Journal(path).replay()
    assert records["k1"].task_id == "t1" and records["k2"].state == "submitting"
