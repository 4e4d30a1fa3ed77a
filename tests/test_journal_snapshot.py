"""The replay snapshot: loaded and followed by the journal's later lines, it gives exactly the
records a replay from the start gives, and anything doubtful about it makes it unused."""

from __future__ import annotations

import hashlib
import marshal
import random
import shutil
import sys
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest

from batchvid import journal as journal_module
from batchvid import snapshot
from batchvid.errors import OutputDirError
from batchvid.journal import (
    Enhanced,
    JobRecord,
    Journal,
    Refused,
    Submitted,
    Submitting,
    Succeeded,
    encode,
    read_entries,
    replay_entries,
)
from batchvid.simulator import Simulator, SimulatorConfig
from batchvid.store import OutputDir, read_records
from tests.helpers import make_job
from tests.test_journal_replay import MEDIA, POSTER, STAT, VIDEO, _random_entries


def _image(records: dict[str, JobRecord]) -> str:
    """The records' keys and every field, in order, as text that tells apart 1, 1.0 and True."""
    return repr([(key, record.key is key, astuple(record)) for key, record in records.items()])


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each replay since started from a snapshot."""
    seen: list[bool] = []
    load = snapshot._load

    def spy(path: Path, fh: Any) -> Any:
        start = load(path, fh)
        seen.append(start is not None)
        return start

    monkeypatch.setattr(snapshot, "_load", spy)
    return seen


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journal's path in an output directory; snapshots are saved after a line or more, in
    chunks of two lines."""
    monkeypatch.setattr(snapshot, "SAVE_LINES", 1)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 2)
    (tmp_path / ".batchvid").mkdir()
    return tmp_path / ".batchvid" / "journal.jsonl"


def _done(number: int) -> Succeeded:
    return Succeeded(f"k{number}", f"j{number}", f"t{number}", dict(VIDEO, bytes=number), None, MEDIA, POSTER,
                     None, STAT)


def _lines(count: int) -> bytes:
    return b"".join(encode(_done(n)) for n in range(count))


def _saved(path: Path, data: bytes) -> Path:
    """``path`` holding ``data``, replayed once with a snapshot saved; the snapshot's path."""
    path.write_bytes(data)
    snapshot.replay(path, save=True)
    saved = path.with_name(snapshot.SNAPSHOT_NAME)
    assert saved.exists()
    return saved


@pytest.mark.parametrize("seed", range(60))
def test_a_snapshot_and_the_lines_after_it_replay_as_the_whole_journal(
    journal: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool], seed: int
) -> None:
    """Random journals (every kind of line, rewrites or none, blank lines, a torn, a damaged
    or an unfinished last line at each save, moved aside by the next opening) replayed from the
    snapshots saved at random points as they grew give the records, their order and every
    field's type and value, that a replay from the start gives; a snapshot, once saved, is used
    by the next replay."""
    rng = random.Random(seed)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", rng.choice([1, 2, 3, 7, 64]))
    monkeypatch.setattr(snapshot, "_BATCH", rng.choice([1, 2, 5, 4096]))  # records marshalled together
    monkeypatch.setattr(journal_module, "SETTLE_KEYS", rng.choice([1, 2, 5, 4096]))  # lines held unfolded
    entries = _random_entries(rng, rng.randrange(1, 120), enhanced=seed % 3 != 0)
    cuts = sorted(rng.sample(range(len(entries) + 1), min(3, len(entries) + 1)))
    written = 0
    for cut in [*cuts, len(entries)]:
        appending = Journal(journal)
        appending.open()  # as a run does: a damaged last line moved aside, a lost newline put back
        for entry in entries[written:cut]:
            appending.append(entry)
            if rng.random() < 0.05:
                with journal.open("ab") as fh:
                    fh.write(b"\n")  # a blank line
        appending.close()
        written = cut
        with journal.open("ab") as fh:
            fh.write(rng.choice([b"", b"", b'{"event":"submi', encode(Refused("kx", "x"))[:-1],
                                 b'{"event":"submi\n', b"\0" * 9 + b"\n"]))
        had = journal.with_name(snapshot.SNAPSHOT_NAME).exists()
        used.clear()
        expected = _image(replay_entries(read_entries(journal)))  # each line folded in turn
        assert _image(snapshot.replay(journal, save=True)) == expected == _image(Journal(journal).replay())
        assert used == [had]
    assert _image(snapshot.replay(journal)) == _image(replay_entries(read_entries(journal)))


def test_the_records_loaded_are_those_the_journal_gives(journal: Path, used: list[bool]) -> None:
    """A snapshot of done jobs and a rewrite, with nothing after it, gives the same records."""
    rewrite = Enhanced("k1", "j1", "A fox, golden hour.", "A fox.", "enhanced", None, "glm-4-flash", 1, 40)
    journal.write_bytes(_lines(70) + encode(rewrite) + encode(Submitting("k1", "j1", "bv-1")))
    _saved(journal, journal.read_bytes())
    assert _image(read_records(journal.parent.parent)) == _image(Journal(journal).replay())
    assert used == [False, True]


def test_a_submitting_line_after_the_snapshot_is_never_missed(journal: Path, used: list[bool]) -> None:
    """A create journaled after the snapshot (a task that may exist) is the key's state, with
    its count of creates: never treated as not submitted."""
    _saved(journal, _lines(3))
    with journal.open("ab") as fh:
        fh.write(encode(Submitting("k1", "j1", "bv-again")))
    record = snapshot.replay(journal)["k1"]
    assert (record.state, record.request_id, record.creates) == ("submitting", "bv-again", 1)
    assert used == [False, True]


def test_deleting_the_snapshot_changes_nothing(journal: Path, used: list[bool]) -> None:
    """Without its snapshot the journal gives the same records."""
    saved = _saved(journal, _lines(5))
    before = _image(snapshot.replay(journal))
    saved.unlink()
    assert _image(snapshot.replay(journal)) == before
    assert used == [False, True, False]


@pytest.mark.parametrize("change", ["byte", "shorter", "empty", "rewritten longer"])
def test_a_journal_changed_inside_what_the_snapshot_covers_is_replayed_from_its_start(
    journal: Path, used: list[bool], change: str
) -> None:
    """A journal whose first bytes are not those the snapshot covers (a byte changed, cut
    shorter, emptied, rewritten with other lines) is replayed from its start."""
    _saved(journal, _lines(6))
    data = journal.read_bytes()
    if change == "byte":
        data = data.replace(b'"t3"', b'"t9"')
    elif change == "shorter":
        data = data[: data.index(b"\n") + 1]
    elif change == "empty":
        data = b""
    else:
        data = b"".join(encode(Submitted(f"k{n}", f"j{n}", "t")) for n in range(6)) + data
    journal.write_bytes(data)
    assert _image(snapshot.replay(journal)) == _image(Journal(journal).replay())
    assert used[1:] == [False]


def test_a_snapshot_copied_beside_another_journal_is_not_used(tmp_path: Path, journal: Path, used: list[bool]) -> None:
    """Another directory's snapshot is used only where the journal holds the very bytes it
    covers (a copied output directory); beside another journal it is not."""
    saved = _saved(journal, _lines(6))
    for name, data in (("copy", journal.read_bytes()), ("other", _lines(5) + encode(_done(7)))):
        other = tmp_path / name / ".batchvid" / "journal.jsonl"
        other.parent.mkdir(parents=True)
        other.write_bytes(data)
        shutil.copy(saved, other.with_name(snapshot.SNAPSHOT_NAME))
        assert _image(snapshot.replay(other)) == _image(Journal(other).replay())
    assert used == [False, True, False]


def test_a_damaged_snapshot_is_not_used_and_no_error(
    journal: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool]
) -> None:
    """A snapshot cut anywhere, with a byte changed anywhere, empty or not one at all is not
    used: the records are the journal's, and nothing is raised."""
    monkeypatch.setattr(snapshot, "_BATCH", 3)
    saved = _saved(journal, _lines(8))
    good = saved.read_bytes()
    expected = _image(Journal(journal).replay())
    rng = random.Random(7)
    damaged = [b"", b"not a snapshot", good[:-1], good + b"\0"]
    damaged += [good[: rng.randrange(len(good))] for _ in range(30)]
    for at in [*range(0, 60), *rng.sample(range(len(good)), 60)]:
        damaged.append(good[:at] + bytes([good[at] ^ 0x10]) + good[at + 1:])
    for data in damaged:
        saved.write_bytes(data)
        assert _image(snapshot.replay(journal)) == expected
    assert used[1:] == [False] * len(damaged)


def test_marshal_reads_only_a_payload_whose_sha256_the_header_states(
    journal: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool]
) -> None:
    """No bytes of a snapshot reach marshal (not safe on damaged or crafted data: five bytes
    claiming a tuple of 2**31 items make it allocate 16 GB) but a batch of the length and
    sha256 its header states: a crafted header is not used, and nothing is raised."""
    saved = _saved(journal, _lines(8))
    good = saved.read_bytes()
    expected = _image(Journal(journal).replay())
    given: list[bytes] = []

    class Recording:
        dumps = staticmethod(marshal.dumps)

        @staticmethod
        def loads(data: bytes) -> Any:
            given.append(bytes(data))
            if data != good[len(good) - len(given[-1]):]:
                raise ValueError("not the payload")  # (the crafted bytes: never decoded here)
            return marshal.loads(data)

    monkeypatch.setattr(snapshot, "marshal", Recording)
    huge = b"(" + (2**31 - 1).to_bytes(4, "little")
    for crafted in (huge, len(huge).to_bytes(4, "little") + huge, huge * 40, b"\xff" * 200):
        saved.write_bytes(snapshot._MAGIC + crafted)
        assert _image(snapshot.replay(journal)) == expected
    assert given == [] and used[1:] == [False] * 4
    fixed = len(snapshot._MAGIC) + snapshot._HEADER.size
    for count, entry in ((2**32 - 1, b""), (1, snapshot._ENTRY.pack(len(huge), bytes(32)))):  # too many, not it
        saved.write_bytes(good[:fixed - 4] + count.to_bytes(4, "little") + entry + huge)
        assert _image(snapshot.replay(journal)) == expected
    assert given == [] and used[1:] == [False] * 6
    saved.write_bytes(good)
    assert _image(snapshot.replay(journal)) == expected
    table = good[fixed:fixed + snapshot._ENTRY.size]  # (one batch here)
    assert used[-1] is True and given == [good[len(good) - len(given[0]):]]
    assert snapshot._ENTRY.unpack(table) == (len(given[0]), hashlib.sha256(given[0]).digest())


@pytest.mark.parametrize("other", ["format", "python", "code", "chunk"])
def test_a_snapshot_of_another_format_python_code_or_chunk_size_is_not_used(
    journal: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool], other: str
) -> None:
    """A snapshot written by another format, Python version, folding code or chunk size is
    not used."""
    _saved(journal, _lines(8))
    if other == "format":
        monkeypatch.setattr(snapshot, "FORMAT", snapshot.FORMAT + 1)
    elif other == "python":
        monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    elif other == "code":
        monkeypatch.setattr(snapshot, "code_digest", lambda: b"\0" * 32)
    else:
        monkeypatch.setattr(journal_module, "CHUNK_LINES", 3)
    assert _image(snapshot.replay(journal)) == _image(Journal(journal).replay())
    assert used[1:] == [False]


def test_a_corrupt_line_after_the_snapshot_is_named_by_its_number(journal: Path, used: list[bool]) -> None:
    """A bad line among the lines after the snapshot is the error, with the line number, a
    replay from the start gives."""
    _saved(journal, _lines(70))
    with journal.open("ab") as fh:
        fh.write(b'{"event":"teleported","id":"a","key":"k1"}\n' + encode(_done(1)))
    with pytest.raises(OutputDirError, match=r"journal.jsonl:71: the journal is corrupt"):
        Journal(journal).replay()
    with pytest.raises(OutputDirError, match=r"journal.jsonl:71: the journal is corrupt"):
        snapshot.replay(journal)
    assert used == [False, True]


def test_a_snapshot_covers_whole_chunks_and_no_torn_line(
    journal: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool]
) -> None:
    """The lines a snapshot covers end with a whole chunk: not with a torn line, a line that
    lost its newline, or a partial chunk, which the next replay reads again."""
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 4)
    lines = _lines(11)
    covered = len(_lines(8))
    for tail in (b"", b'{"event":"subm', encode(_done(11))[:-1]):
        saved = _saved(journal, lines + tail)
        header = snapshot._HEADER.unpack_from(saved.read_bytes(), len(snapshot._MAGIC))
        assert (header[3], header[4]) == (covered, 8)
        assert _image(snapshot.replay(journal)) == _image(Journal(journal).replay())
        assert used[-1] is True


def test_a_short_replay_writes_no_snapshot_and_drops_one_that_does_not_hold(
    journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay that folded fewer than SAVE_LINES lines writes none, and deletes one that
    does not hold (not read again at each run); a replay without ``save`` writes none."""
    saved = _saved(journal, _lines(6))
    monkeypatch.setattr(snapshot, "SAVE_LINES", 1000)
    snapshot.replay(journal, save=True)
    assert saved.exists()  # still holds
    journal.write_bytes(_lines(5))
    snapshot.replay(journal)
    assert saved.exists()
    snapshot.replay(journal, save=True)
    assert not saved.exists()
    monkeypatch.setattr(snapshot, "SAVE_LINES", 1)
    snapshot.replay(journal)
    assert not saved.exists()


def test_a_snapshot_that_cannot_be_written_or_read_is_no_error(journal: Path, used: list[bool]) -> None:
    """A snapshot's name taken by a directory: nothing is written or read, no error."""
    journal.write_bytes(_lines(6))
    journal.with_name(snapshot.SNAPSHOT_NAME).mkdir()
    assert _image(snapshot.replay(journal, save=True)) == _image(Journal(journal).replay())
    assert _image(snapshot.replay(journal)) == _image(Journal(journal).replay())
    assert used == [False, False]
    assert [p.name for p in journal.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_opening_the_directory_saves_a_snapshot_and_the_next_open_uses_it(journal: Path, used: list[bool]) -> None:
    """A run's opening of its directory writes the snapshot, and the next run's starts from it
    with the lines the first appended."""
    journal.write_bytes(_lines(6))
    root = journal.parent.parent
    with OutputDir(root) as out:
        first = out.open()
        out.journal.append(Submitting("k9", "j9", "bv-9"))
    with OutputDir(root) as out:
        second = out.open()
    assert used == [False, True]
    assert set(second) == {*first, "k9"} and second["k9"].state == "submitting"
    assert _image(second) == _image(Journal(journal).replay())


def test_opening_sweeps_a_snapshot_s_orphaned_temporary_file(journal: Path) -> None:
    """A snapshot's temporary file left by a killed run is deleted when the directory opens."""
    orphan = journal.with_name(f".{snapshot.SNAPSHOT_NAME}.0badf00d.tmp")
    orphan.write_bytes(b"half a snapshot")
    with OutputDir(journal.parent.parent) as out:
        out.open()
    assert not orphan.exists()


def test_a_bad_last_line_is_left_out_of_the_snapshot_and_named_once_lines_follow_it(
    journal: Path, used: list[bool]
) -> None:
    """A bad last line with its newline (ignored, as a torn tail) is not covered by the
    snapshot: once a line follows it, the replay from the snapshot names it as the replay from
    the start does."""
    bad = b'{"event":"teleported","id":"a","key":"k1"}\n'
    journal.write_bytes(_lines(6) + bad)
    snapshot.replay(journal, save=True)
    assert _image(snapshot.replay(journal)) == _image(Journal(journal).replay())
    with journal.open("ab") as fh:
        fh.write(encode(_done(9)))
    for replay in (Journal(journal).replay, lambda: snapshot.replay(journal)):
        with pytest.raises(OutputDirError, match=r"journal.jsonl:7: the journal is corrupt"):
            replay()
    assert used == [False, True, True]


def test_a_rerun_from_a_snapshot_skips_done_jobs_and_never_creates_an_unanswered_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, used: list[bool]
) -> None:
    """Runs whose directory opens from a snapshot skip every done job without a request, and a
    create journaled after the snapshot (a run killed before its answer) is not sent again on
    GeekAI (no idempotency key): never paid twice."""
    from tests.test_runner import _jobs, _run

    monkeypatch.setattr(snapshot, "SAVE_LINES", 1)
    monkeypatch.setattr(journal_module, "CHUNK_LINES", 2)
    sim = Simulator(SimulatorConfig())
    jobs, out = _jobs(5), tmp_path / "out"
    _run(sim, jobs, out)
    result, transport, _ = _run(sim, jobs, out)
    assert transport.requests == [] and {o.status for o in result.outcomes} == {"skipped"}
    killed = make_job("job-9", 9)
    journal = Journal(out / ".batchvid" / "journal.jsonl")
    journal.open()
    journal.append(Submitting(killed.key, killed.id, None))
    journal.close()
    result, transport, _ = _run(sim, [*jobs, killed], out)
    assert used == [True, True]  # (the snapshot the first run left as it closed)
    assert [r for r in transport.requests if r.method == "POST"] == []
    assert [o.status for o in result.outcomes] == ["skipped"] * 5 + ["failed"]
