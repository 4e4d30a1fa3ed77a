"""A damaged last line of the journal (cut by a crash, or bad and still ending in a newline):
replay ignores it, and opening the journal moves it aside, kept, so later lines never follow
it and every later run still reads the journal."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest

from batchvid.display import TextLog
from batchvid.errors import OutputDirError
from batchvid.events import JournalLineSetAside
from batchvid.journal import (
    DAMAGED_LINES,
    Journal,
    SetAside,
    Submitted,
    Submitting,
    encode,
    read_entries,
)
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.store import OutputDir
from tests.test_runner import _jobs, _run

GOOD = [Submitting("k1", "a", "bv-1"), Submitted("k1", "a", "t-paid-1")]
BAD_LINES = {
    "bad with its newline": b'{"event":"submitted","id":"b","key":"k2","task_id":"t-paid-2"\n',
    "torn": b'{"event":"submitted","id":"b","key":"k2","task_id":"t-pa',
    "not utf-8 with its newline": b'{"event":"submitted","id":"\xc3"}\n',
    "zeros": b"\0" * 300,
}


def _journal(tmp_path: Path, tail: bytes) -> Path:
    path = tmp_path / ".batchvid" / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(map(encode, GOOD)) + tail)
    return path


def _append(path: Path, *entries: Any) -> Journal:
    journal = Journal(path)
    journal.open()
    for entry in entries:
        journal.append(entry)
    journal.close()
    return journal


@pytest.mark.parametrize("tail", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_bad_last_line_is_moved_aside_and_the_journal_stays_readable(tmp_path: Path, tail: bytes) -> None:
    """A last line that is not an entry, newline or not, is moved to the damaged-lines file as
    it was (a torn one given a newline), and lines appended after it replay, run after run."""
    path = _journal(tmp_path, tail)
    assert list(read_entries(path)) == GOOD  # replay ignores it
    journal = _append(path, Submitted("k3", "c", "t3"))
    _append(path, Submitted("k4", "d", "t4"))
    assert list(read_entries(path)) == [*GOOD, Submitted("k3", "c", "t3"), Submitted("k4", "d", "t4")]
    aside = path.with_name(DAMAGED_LINES)
    assert aside.read_bytes() == (tail if tail.endswith(b"\n") else tail + b"\n")
    offset = len(b"".join(map(encode, GOOD)))
    assert journal.set_aside == SetAside(aside, offset, len(tail))


@pytest.mark.parametrize("tail", [b"", b"\n", b"  \n", encode(Submitted("k3", "c", "t3"))[:-1]],
                         ids=["none", "blank line", "spaces", "entry without its newline"])
def test_a_good_or_blank_last_line_is_not_moved(tmp_path: Path, tail: bytes) -> None:
    """A last line that is an entry (given back its lost newline) or blank stays: nothing is
    set aside and no damaged-lines file is made."""
    path = _journal(tmp_path, tail)
    journal = _append(path)
    assert journal.set_aside is None and not path.with_name(DAMAGED_LINES).exists()
    assert path.read_bytes() == b"".join(map(encode, GOOD)) + tail + (b"" if tail.endswith(b"\n") or not tail else b"\n")


def test_damaged_lines_found_by_several_runs_are_all_kept(tmp_path: Path) -> None:
    """Each damaged last line is appended to the file, after those set aside before."""
    path = _journal(tmp_path, BAD_LINES["bad with its newline"])
    _append(path, Submitted("k3", "c", "t3"))
    with path.open("ab") as fh:
        fh.write(BAD_LINES["torn"])
    _append(path)
    assert path.with_name(DAMAGED_LINES).read_bytes() == BAD_LINES["bad with its newline"] + BAD_LINES["torn"] + b"\n"
    assert list(read_entries(path)) == [*GOOD, Submitted("k3", "c", "t3")]


def test_the_line_is_on_disk_in_its_new_place_before_the_journal_loses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged-lines file holds the line and is fsynced (its directory too, when new)
    before the journal is cut: a crash in between leaves the line in both, never in neither."""
    path = _journal(tmp_path, BAD_LINES["bad with its newline"])
    aside = path.with_name(DAMAGED_LINES)
    synced: list[tuple[int, int]] = []
    real_fsync, real_truncate = os.fsync, os.truncate

    def fsync(fd: int) -> None:
        real_fsync(fd)
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))

    def truncate(target: Any, length: int) -> None:
        st, parent = os.stat(aside), os.stat(aside.parent)
        assert aside.read_bytes() == BAD_LINES["bad with its newline"]
        assert (st.st_dev, st.st_ino) in synced and (parent.st_dev, parent.st_ino) in synced
        real_truncate(target, length)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "truncate", truncate)
    assert _append(path).set_aside is not None
    assert list(read_entries(path)) == GOOD


def test_a_run_says_where_the_line_went_and_its_reruns_read_the_journal(tmp_path: Path) -> None:
    """A run of a directory whose journal ends in a bad line emits ``JournalLineSetAside``
    (which the text log prints as a warning naming the file), finishes, and the next run reads
    the journal without error and sends nothing."""
    sim = Simulator(SimulatorConfig())
    jobs, out = _jobs(2), tmp_path / "out"
    _run(sim, jobs[:1], out)
    path = out / ".batchvid" / "journal.jsonl"
    offset = path.stat().st_size
    with path.open("ab") as fh:
        fh.write(BAD_LINES["bad with its newline"])
    result, _, collector = _run(sim, jobs, out)
    said = [e for e in collector.events if isinstance(e, JournalLineSetAside)]
    assert result.exit_code == 0
    assert said == [JournalLineSetAside(str(path.with_name(DAMAGED_LINES)), offset,
                                        len(BAD_LINES["bad with its newline"]))]
    stream = io.StringIO()
    TextLog(stream)(said[0])
    assert stream.getvalue().startswith("warning: ") and DAMAGED_LINES in stream.getvalue()
    result, transport, collector = _run(sim, jobs, out)
    assert transport.requests == [] and [o.status for o in result.outcomes] == ["skipped"] * 2
    assert not any(isinstance(e, JournalLineSetAside) for e in collector.events)


def test_a_line_that_cannot_be_moved_aside_stops_with_the_journal_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the damaged-lines file cannot be written (its fsync fails: a full disk) or opened
    (a directory is in its place), opening the journal raises an ``OutputDirError`` naming it,
    and the journal keeps every byte, its bad last line included."""
    path = _journal(tmp_path, BAD_LINES["bad with its newline"])
    before = path.read_bytes()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == os.stat(path.with_name(DAMAGED_LINES)).st_ino:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", fsync)
        with pytest.raises(OutputDirError, match=rf"cannot be moved aside into .*{DAMAGED_LINES}.*No space left"):
            Journal(path).open()
    assert path.read_bytes() == before
    path.with_name(DAMAGED_LINES).unlink()
    path.with_name(DAMAGED_LINES).mkdir()
    with pytest.raises(OutputDirError, match="the journal is unchanged"):
        Journal(path).open()
    assert path.read_bytes() == before


def test_a_directory_whose_journal_cannot_be_opened_is_not_left_locked(tmp_path: Path) -> None:
    """``OutputDir.open`` failing after it took the lock (here: the bad last line cannot be
    moved aside) releases it: once the cause is gone, the same process opens the directory."""
    path = _journal(tmp_path, BAD_LINES["torn"])
    path.with_name(DAMAGED_LINES).mkdir()
    out = OutputDir(tmp_path)
    with pytest.raises(OutputDirError, match=DAMAGED_LINES):
        out.open()
    path.with_name(DAMAGED_LINES).rmdir()
    again = OutputDir(tmp_path)
    assert set(again.open()) == {"k1"}
    again.close()
    assert path.with_name(DAMAGED_LINES).read_bytes() == BAD_LINES["torn"] + b"\n"


@pytest.mark.parametrize(
    "tail",
    [b'{"event":"from-the-future","id":"b","key":"k2","task_id":"t-paid-2"}\n',
     b'{"event":"from-the-future","id":"b","key":"k2","task_id":"t-paid-2"}'],
    ids=["with its newline", "without"],
)
def test_a_last_line_of_an_event_this_version_does_not_know_stops_the_run(tmp_path: Path, tail: bytes) -> None:
    """A whole last entry a newer batchvid wrote (an event unknown here) may record a paid
    task: it is neither moved aside nor forgotten; opening stops, naming it, journal unchanged."""
    path = _journal(tmp_path, tail)
    before = path.read_bytes()
    with pytest.raises(OutputDirError, match="'from-the-future'.*newer version.*journal is unchanged"):
        Journal(path).open()
    assert path.read_bytes() == before
    assert not path.with_name(DAMAGED_LINES).exists()
