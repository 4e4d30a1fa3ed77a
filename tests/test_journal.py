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


class SyncLog:
    """``os.fsync`` traced: the journal's size on disk at each fsync of its file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> None:
        import os
        import time

        self.sizes: list[int] = []
        real = os.fsync

        def traced(fd: int) -> None:
            size = os.fstat(fd).st_size
            time.sleep(delay)
            real(fd)
            self.sizes.append(size)

        monkeypatch.setattr(os, "fsync", traced)

    def durable(self) -> int:
        """How many bytes of the journal an fsync has covered."""
        return max(self.sizes, default=0)


def _submitted(n: int) -> Submitted:
    return Submitted(f"k{n}", f"j{n}", f"t{n}")


@pytest.mark.anyio
async def test_lines_committed_together_share_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty jobs committing at once take two fsyncs (the leader's line, then all the rest),
    and every line is replayed in the order it was written."""
    import anyio

    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    log = SyncLog(monkeypatch)
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(journal.commit, _submitted(n))
    journal.close()
    assert len(log.sizes) == 2
    assert list(read_entries(journal.path)) == [_submitted(n) for n in range(20)]


@pytest.mark.anyio
async def test_a_committed_line_is_on_disk_before_commit_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When ``commit`` returns, an fsync has covered the file up to the end of its line."""
    import anyio

    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    log = SyncLog(monkeypatch)
    short: list[int] = []

    async def commit_and_check(n: int) -> None:
        await journal.commit(_submitted(n))
        line = encode(_submitted(n))
        end = journal.path.read_bytes().index(line) + len(line)
        if log.durable() < end:
            short.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(commit_and_check, n)
            if n % 7 == 0:
                await anyio.sleep(0)
    journal.close()
    assert short == [] and len(log.sizes) < 30


@pytest.mark.anyio
async def test_cancelled_commits_still_make_their_lines_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers cancelled while the fsync runs (its leader and those waiting on it) return only
    once their lines are on disk, and see the cancellation after that."""
    import anyio

    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    log = SyncLog(monkeypatch, delay=0.05)
    returned: list[int] = []
    scopes: list[anyio.CancelScope] = []

    async def commit(n: int) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await journal.commit(_submitted(n))
            returned.append(n)
            await anyio.sleep(0)
            returned.append(-n)  # not reached: the cancellation is seen here

    async with anyio.create_task_group() as tg:
        for n in (1, 2, 3):
            tg.start_soon(commit, n)
        while journal.path.read_bytes().count(b"\n") < 3:
            await anyio.sleep(0)
        for scope in scopes:
            scope.cancel()
    size = journal.path.stat().st_size
    journal.close()
    assert sorted(returned) == [1, 2, 3]
    assert all(scope.cancelled_caught for scope in scopes)
    assert log.durable() == size
    assert list(read_entries(journal.path)) == [_submitted(n) for n in (1, 2, 3)]


@pytest.mark.anyio
async def test_lines_written_during_an_fsync_wait_for_the_next_one_and_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a first line's fsync runs, two more lines are written; neither caller is released
    by that fsync (it began before their lines), both by the next one, which covers both."""
    import os
    import threading

    import anyio

    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    gate = threading.Event()
    covered: list[int] = []
    real = os.fsync

    def gated(fd: int) -> None:
        size = os.fstat(fd).st_size
        if not covered:
            gate.wait(10)  # the first fsync runs until the test lets it end
        real(fd)
        covered.append(size)

    monkeypatch.setattr(os, "fsync", gated)
    released: dict[int, int] = {}

    async def commit(n: int) -> None:
        await journal.commit(_submitted(n))
        released[n] = len(covered)  # how many fsyncs had ended when the caller went on

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit, 1)
        await anyio.sleep(0.05)  # line 1 written, its fsync under way (held by the gate)
        tg.start_soon(commit, 2)
        tg.start_soon(commit, 3)
        with anyio.fail_after(10):
            while journal.path.read_bytes().count(b"\n") < 3:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        assert released == {}
        gate.set()
    journal.close()
    line = len(encode(_submitted(1)))
    assert covered == [line, 3 * line]
    assert released == {1: 1, 2: 2, 3: 2}


@pytest.mark.anyio
async def test_a_commit_after_a_crash_does_not_glue_onto_the_torn_tail(tmp_path: Path) -> None:
    """A torn last line is dropped on open, and a line committed next replays whole."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode(_submitted(1)) + b'{"event":"submi')
    journal = Journal(path)
    journal.open()
    await journal.commit(_submitted(2))
    journal.close()
    assert list(read_entries(path)) == [_submitted(1), _submitted(2)]


@pytest.mark.anyio
async def test_a_torn_tail_longer_than_the_backward_read_is_dropped_whole(tmp_path: Path) -> None:
    """A torn last line of 200,000 bytes (several of open's backward reads) is cut at the last
    full line, and the next line replays after the earlier ones."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(encode(_submitted(1)) + encode(_submitted(2)) + b'{"event":"x' + b"y" * 200_000)
    journal = Journal(path)
    journal.open()
    await journal.commit(_submitted(3))
    journal.close()
    assert list(read_entries(path)) == [_submitted(1), _submitted(2), _submitted(3)]


def test_a_torn_tail_of_bytes_that_are_not_utf8_is_ignored_but_not_in_the_middle(tmp_path: Path) -> None:
    """A last line cut inside a UTF-8 character is a torn tail; the same line elsewhere is corrupt."""
    path = tmp_path / "journal.jsonl"
    cut = '{"event":"submitted","id":"é'.encode()[:-1]
    path.write_bytes(encode(_submitted(1)) + cut)
    assert list(read_entries(path)) == [_submitted(1)]
    path.write_bytes(cut + b"\n" + encode(_submitted(1)))
    with pytest.raises(OutputDirError, match=r"journal.jsonl:1: the journal is corrupt"):
        list(read_entries(path))


def test_replay_from_lines_folds_as_the_typed_entries_do(tmp_path: Path) -> None:
    """Journal.replay (straight from the decoded lines) gives the records replay_entries gives
    from the same entries, rewrites, stats and lines of older versions included."""
    path = tmp_path / "journal.jsonl"
    entries = [
        *ENTRIES,
        Enhanced("k3", "c", "A fox, golden hour.", "A fox.", "enhanced", None, "glm-4-flash", 1, 40),
        Submitting("k3", "c", "bv-3"),
        Submitted("k3", "c", "t3"),
        Enhanced("k3", "c", "A fox at dusk.", "A fox.", "truncated", "cut", "glm-4-flash", 2, 90),
        Succeeded("k4", "d", "t4", VIDEO, {"path": "jobs/d/cover.jpg"}, None, {"path": "p"},
                  {"revised_prompt": "r"}, {"bytes": 10, "ino": 7, "mtime_ns": 9}),
        Failed("k5", "e", "t5", {"kind": "qc_failed", "message": "dark"}, VIDEO, {"fps": 8.0}),
    ]
    path.write_bytes(
        b"".join(encode(e) for e in entries)
        + b'{"event":"enhanced","id":"f","key":"k6","model":"m","original":"o","prompt":"p","status":"fallback"}\n'
        + b'{"event":"submitted","id":"g","key":"k7","task_id":"t7","later":"ignored"}\n'
    )
    assert Journal(path).replay() == replay_entries(read_entries(path))
    assert Journal(path).replay()["k6"].enhanced == {
        "prompt": "p", "original": "o", "status": "fallback", "warning": None, "model": "m",
        "requests": 0, "tokens": 0,
    }
