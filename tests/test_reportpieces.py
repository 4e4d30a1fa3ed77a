"""Reusing the previous report's pieces on a rerun: the same bytes as a pass that makes them all."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import batchvid.piecesjournal as piecesjournal
import batchvid.reportfiles as reportfiles
import batchvid.reportpieces as reportpieces
import batchvid.reportrecord as reportrecord
import batchvid.runner as runner
from batchvid.cli import main
from batchvid.jobkey import job_key
from batchvid.jobs import Job
from batchvid.report import Outcome, write_outputs
from batchvid.reportpieces import PIECES_NAME
from tests.helpers import make_job
from tests.test_reportfiles import FILES, TEXTS, _info, _outcome, _reference, _run


def _replayed(root: Path, outcomes: list[Outcome], seed: int = 0) -> list[Outcome]:
    """``outcomes`` as a rerun has them: most succeeded jobs skipped, each job's files records
    read from its journal line (written in ``root``'s journal)."""
    rng = random.Random(seed)
    for o in outcomes:
        if o.status == "succeeded" and rng.random() < 0.9:
            o.status, o.action = "skipped", "skip"
    _journaled(root, *outcomes)
    return outcomes


def _journaled(root: Path, *outcomes: Outcome) -> None:
    """A journal line appended for each of ``outcomes`` (as a job worked on again gets)."""
    (root / ".batchvid").mkdir(parents=True, exist_ok=True)
    with open(root / ".batchvid" / "journal.jsonl", "a", encoding="utf-8") as fh:
        for o in outcomes:
            fh.write(json.dumps({"event": "succeeded", "id": o.job.id, "key": o.job.key, "task_id": o.task_id},
                                sort_keys=True) + "\n")


def _made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs whose entries the pass makes (their pieces not copied)."""
    made: list[str] = []
    real = reportfiles.job_entry

    def job_entry(o: Outcome, files: Any) -> dict[str, Any]:
        made.append(o.job.id)
        return real(o, files)

    monkeypatch.setattr(reportfiles, "job_entry", job_entry)
    return made


def _assert_reference(tmp_path: Path, root: Path, outcomes: list[Outcome], **info: Any) -> None:
    """Write ``outcomes`` over ``root``'s files: each file has the bytes of a fresh reference write."""
    reference = tmp_path / "reference"
    _reference(reference, outcomes, _info(**info))
    write_outputs(root, outcomes, _info(**info))
    for name in FILES:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def _reusable(o: Outcome) -> bool:
    return (o.status == "skipped" and o.action == "skip" and not o.warnings and o.enhance is None
            and o.error is None and not {"key", "status", "video", "poster", "prompt"} & set(o.provided))


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Outcome]]:
    """A directory whose report files (and their pieces' record) a rerun wrote."""
    root = tmp_path / "out"
    outcomes = _replayed(root, _run(7, 80))
    write_outputs(root, outcomes, _info(seconds=1.0))
    assert (root / ".batchvid" / PIECES_NAME).exists()
    return root, outcomes


def test_an_unchanged_rerun_copies_every_reusable_job_and_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """Nothing changed but the timing: only the jobs that are never reused (failed, pending,
    warned, enhanced) are made again, and every file has the reference bytes."""
    root, outcomes = written
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=2.5)
    kept = [o.job.id for o in outcomes if not _reusable(o)]
    assert len(kept) < len(outcomes) - 20
    assert sorted(made) == sorted(kept)


def test_a_second_unchanged_rerun_reuses_the_pieces_the_first_one_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The record written by a pass that copied pieces places them right: the next pass
    copies them again and still writes the reference bytes."""
    root, outcomes = written
    write_outputs(root, outcomes, _info(seconds=2.0))
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=3.0)
    assert len(made) == sum(not _reusable(o) for o in outcomes)


def test_a_job_whose_journal_line_changed_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A job downloaded again (a new line: other files records, another digest) gets its
    pieces made; the reference bytes either way."""
    root, outcomes = written
    at = max(n for n, o in enumerate(outcomes) if _reusable(o))
    o = outcomes[at]
    o.video = {**(o.video or {}), "sha256": "f" * 64}
    _journaled(root, o)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert o.job.id in made
    assert len(made) < len(outcomes)


def test_a_job_whose_manifest_entry_changed_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """Same journal line, other parameters (a manifest edit: another key, as every job's key is
    the hash of its request): made again."""
    root, outcomes = written
    at = max(n for n, o in enumerate(outcomes) if _reusable(o))
    o = outcomes[at]
    o.job = _with_params(o.job, {**o.job.params, "fps": 7})
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert o.job.id in made


def _with_params(job: Job, params: dict[str, Any]) -> Job:
    """``job`` with other parameters, and so its key (``jobkey.job_key``)."""
    return dataclasses.replace(job, params=params, key=job_key(job.provider, params, job.image, job.sample))


_ONE_INPUT: dict[str, Callable[[Outcome], None]] = {
    "action": lambda o: setattr(o, "action", "download" if o.action == "skip" else "skip"),
    "status": lambda o: setattr(o, "status", "succeeded" if o.status == "skipped" else "skipped"),
    "error": lambda o: setattr(o, "error", {"kind": "k", "message": "m"}),
    "journal line": lambda o: setattr(o, "task_id", f"{o.task_id}-3"),  # and a line appended
    "id": lambda o: setattr(o, "job", dataclasses.replace(o.job, id=o.job.id + "-2")),
    "key": lambda o: setattr(o, "job", dataclasses.replace(o.job, key="f" * 64)),
    "sample": lambda o: setattr(o, "job", dataclasses.replace(o.job, sample=o.job.sample + 1)),
    "source": lambda o: setattr(o, "job", dataclasses.replace(o.job, source=o.job.source + "-2")),
    "matrix": lambda o: setattr(o, "job", dataclasses.replace(o.job, matrix={**o.job.matrix, "m": 1})),
    "parameters": lambda o: setattr(o, "job", _with_params(o.job, {**o.job.params, "x": 1})),
    "warnings": lambda o: setattr(o, "warnings", ["w"]),
}


@pytest.mark.parametrize("change", _ONE_INPUT)
def test_each_input_of_a_jobs_pieces_changed_alone_makes_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], change: str
) -> None:
    """One input of a copied job's text changed, all else the same (its records too, but for
    ``journal line``: a line appended for its key): its pieces are made, the reference bytes."""
    root, outcomes = written
    o = outcomes[[n for n, o in enumerate(outcomes) if _reusable(o)][3]]
    _ONE_INPUT[change](o)
    if change == "journal line":
        _journaled(root, o)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    assert o.job.id in made


def test_a_pass_that_copies_nothing_compares_each_digest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The first job changed (report.html's cards made from it on: nothing is copied after
    it): each job's digest is compared at most once, not again for each job before it (a
    look-ahead of up to 256 jobs per job: 5 million comparisons at 20,000 jobs)."""
    root, outcomes = written
    first = outcomes[0]
    first.status, first.action, first.error = "failed", "keep-failed", {"kind": "k", "message": "m"}
    compared = []
    real_same = reportrecord.Previous.same

    def same(self: reportrecord.Previous, number: int, digest: bytes) -> bool:
        compared.append(number)
        return real_same(self, number, digest)

    monkeypatch.setattr(reportrecord.Previous, "same", same)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    assert len(compared) == len(set(compared))


@pytest.mark.parametrize("change", ["failed", "pending", "video deleted", "inserted", "renamed"])
def test_a_changed_run_writes_the_reference_bytes(
    tmp_path: Path, written: tuple[Path, list[Outcome]], change: str
) -> None:
    """A job failed, left pending, or whose video was deleted (to download again), a job
    inserted before the others, the manifest renamed: the reference bytes."""
    root, outcomes = written
    at = [n for n, o in enumerate(outcomes) if _reusable(o)][5]
    o = outcomes[at]
    info: dict[str, Any] = {}
    if change == "failed":
        o.status, o.action, o.error = "failed", "keep-failed", {"kind": "qc_failed", "message": "dark"}
    elif change == "pending":
        o.status, o.action, o.error = "pending", "reattach", {"kind": "not_started", "message": "later"}
    elif change == "video deleted":
        o.status, o.action, o.video, o.media = "pending", "download", None, None
    elif change == "inserted":
        outcomes = [Outcome(make_job("new", 0), "skipped", "skip")] + [
            _reindexed(o, n + 1) for n, o in enumerate(outcomes)]
    else:
        info["name"] = "renamed"
    _assert_reference(tmp_path, root, outcomes, **info)


def _reindexed(o: Outcome, index: int) -> Outcome:
    o.job = dataclasses.replace(o.job, index=index)
    return o


def _edit_appending(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b" ")


def _replace_with_copy(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)


def _edit_in_place(path: Path) -> None:
    """A byte within the file's jobs changed, its size the same."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = ord("#") if data[len(data) // 2] != ord("#") else ord("%")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "change"), [
    *((name, change) for name in reportrecord.FILES for change in (_edit_appending, _edit_in_place)),
])
def test_a_report_file_edited_since_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]],
    name: str, change: Callable[[Path], None]
) -> None:
    """A report file whose bytes changed since its pieces were recorded (a byte appended, or
    one changed in place): nothing is copied, and every file has the reference bytes
    (report.html, its header intact, rendered again: not only retimed)."""
    root, outcomes = written
    change(root / name)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert len(made) == len(outcomes)


@pytest.mark.parametrize("name", reportrecord.FILES)
def test_a_report_file_replaced_by_the_same_bytes_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], name: str
) -> None:
    """A report file replaced by a copy of its bytes (another inode and mtime): its bytes are
    the recorded ones, so every reusable job is copied; every file has the reference bytes."""
    root, outcomes = written
    _replace_with_copy(root / name)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert sorted(made) == sorted(o.job.id for o in outcomes if not _reusable(o))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-9])


def _garbage_head(path: Path) -> None:
    path.write_bytes(b"{not json\n" + path.read_bytes())


@pytest.mark.parametrize("damage", [_flip_last_byte, _cut, _garbage_head, Path.unlink])
def test_a_damaged_or_missing_record_reuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]],
    damage: Callable[[Path], None]
) -> None:
    """The pieces' record corrupted, cut, unreadable or gone: every piece is made, the
    reference bytes, and a new record is written."""
    root, outcomes = written
    damage(root / ".batchvid" / PIECES_NAME)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert len(made) == len(outcomes)
    assert (root / ".batchvid" / PIECES_NAME).exists()


def test_a_record_made_by_another_python_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A record written under another Python (its json module writes the text): nothing is copied."""
    root, outcomes = written
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert len(made) == len(outcomes)


def _header_changed(record: Path, name: str, change: Callable[[Any], Any]) -> None:
    """The record's header field ``name`` changed, the record otherwise as written."""
    head, _, payload = record.read_bytes().partition(b"\n")
    header = json.loads(head)
    header[name] = change(header[name])
    record.write_bytes(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload)


@pytest.mark.parametrize(("name", "change"), [
    ("cards_at", lambda at: at - 1),
    ("sweeps_at", lambda at: [at[0] - 1, at[1] - 1]),
    ("pins", lambda pins: pins - 1),
    ("journal", lambda state: [*state[:4], "0" * 64]),
])
def test_a_record_whose_header_was_damaged_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]],
    name: str, change: Callable[[Any], Any]
) -> None:
    """A field of the record's header changed (a damaged disk, a hand edit), its payload not:
    nothing is copied, and the next rerun (its head changed: the cards copied) writes the
    reference bytes."""
    root, outcomes = written
    _header_changed(root / ".batchvid" / PIECES_NAME, name, change)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, exit_code=3)
    assert len(made) == len(outcomes)


def test_a_record_of_another_format_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A record written by a version that writes the pieces otherwise: nothing is copied."""
    root, outcomes = written
    monkeypatch.setattr(reportpieces, "PIECES_FORMAT", reportrecord.PIECES_FORMAT + 1)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert len(made) == len(outcomes)


def test_a_record_made_by_other_code_of_the_same_version_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The package's modules changed since the record was made (a checkout updated, a branch
    merged), the version and PIECES_FORMAT not: nothing is copied."""
    root, outcomes = written
    code = tmp_path / "code"
    shutil.copytree(Path(reportpieces.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(reportpieces, "_CODE", code)
    reportpieces.code_digest.cache_clear()
    try:
        made = _made(monkeypatch)
        _assert_reference(tmp_path, root, outcomes, seconds=2.0)
        assert len(made) == sum(not _reusable(o) for o in outcomes)  # the same code: reused
        with open(code / "report.py", "a") as fh:
            fh.write("# changed\n")
        reportpieces.code_digest.cache_clear()
        made.clear()
        _assert_reference(tmp_path, root, outcomes, seconds=3.0)
        assert len(made) == len(outcomes)
    finally:
        reportpieces.code_digest.cache_clear()


_SIMULATED = ["--simulate", "--no-progress", "--sim-latency", "0.01", "--poll-interval", "0.01:0.02",
              "--rpm", "6000", "--max-in-flight", "8"]


def test_modules_changed_during_a_run_are_not_the_code_its_record_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's modules changed on disk while a rerun was under way (a checkout updated
    during a long run): its record names the code the run started with, so the next run, of
    the changed code, copies nothing."""
    code = tmp_path / "code"
    shutil.copytree(Path(reportpieces.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(reportpieces, "_CODE", code)
    manifest, out = tmp_path / "m.yaml", tmp_path / "out"
    manifest.write_text("version: 1\nname: code\ndefaults: {model: cogvideox-flash}\njobs:\n"
                        "  - id: clip\n    prompt: \"clip ${n}\"\n    matrix: {n: [1, 2, 3, 4]}\n", encoding="utf-8")

    def run() -> None:
        reportpieces.code_digest.cache_clear()  # each run in a process of its own
        assert main(["run", str(manifest), "--out", str(out), *_SIMULATED]) == 0

    real = runner.write_outputs

    def updated_then_written(*args: Any) -> Any:
        with open(code / "report.py", "a", encoding="utf-8") as fh:
            fh.write("# changed while the run was under way\n")
        return real(*args)

    try:
        run()
        with monkeypatch.context() as patch:
            patch.setattr(runner, "write_outputs", updated_then_written)
            run()
        assert (out / ".batchvid" / PIECES_NAME).exists()
        made = _made(monkeypatch)
        run()
        assert len(made) == 4
    finally:
        reportpieces.code_digest.cache_clear()


def test_a_crash_before_the_record_is_written_leaves_none_that_describes_the_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """Killed after the report files are replaced but before the record is: the old record is
    gone, and even put back (its removal lost), it no longer matches the files: the next pass
    makes every piece, the reference bytes."""
    root, outcomes = written
    record = root / ".batchvid" / PIECES_NAME
    old = record.read_bytes()
    changed = outcomes[-1]
    changed.status, changed.error = "failed", {"kind": "k", "message": "m"}

    def crash(self: reportpieces.Pieces, root: Path) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(reportpieces.Pieces, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            write_outputs(root, outcomes, _info())
    assert not record.exists()
    record.write_bytes(old)
    changed.status, changed.error = "skipped", None
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes)
    assert len(made) == len(outcomes)


def test_a_run_without_a_job_done_or_generated_writes_no_record(tmp_path: Path) -> None:
    """No job skipped as done nor generated (every job failed, or done another way): no record,
    no cost."""
    outcomes = [o for o in _run(3, 30) if o.status != "skipped" and (o.status, o.action) != ("succeeded", "submit")]
    _journaled(tmp_path, *outcomes)
    write_outputs(tmp_path, outcomes, _info())
    assert not (tmp_path / ".batchvid" / PIECES_NAME).exists()


def test_a_pass_that_writes_no_record_removes_the_previous_one(
    tmp_path: Path, written: tuple[Path, list[Outcome]]
) -> None:
    """Every job failed this time: no record is written, and the previous one, which describes
    the files now replaced, is removed (not left to their inodes and mtimes)."""
    root, outcomes = written
    for o in outcomes:
        o.status, o.action, o.error = "failed", "keep-failed", {"kind": "k", "message": "m"}
    write_outputs(root, outcomes, _info())
    assert not (root / ".batchvid" / PIECES_NAME).exists()


def _rewrite_same_size(path: Path) -> None:
    data = path.read_bytes()
    at = data.index(b'"task_id"')
    path.write_bytes(data[:at] + b'"task_iD"' + data[at + 9:])


def _torn_line(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b'{"event":"succeeded","key":"')


def _line_without_key(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b'{"event":"succeeded"}\n')


@pytest.mark.parametrize("change", [_rewrite_same_size, _torn_line, _line_without_key, _replace_with_copy, Path.unlink])
def test_a_journal_changed_otherwise_than_by_whole_lines_appended_reuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]],
    change: Callable[[Path], None]
) -> None:
    """The journal rewritten (same size, other bytes), a line being written or torn at its end,
    a line without a key, the journal replaced by a copy of itself (its recorded bytes are the
    same: reused) or gone (nothing to check the records against: nothing reused, no record)."""
    root, outcomes = written
    journal = root / ".batchvid" / "journal.jsonl"
    change(journal)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    if change is _replace_with_copy:
        assert len(made) == sum(not _reusable(o) for o in outcomes)
    else:
        assert len(made) == len(outcomes)
    assert (root / ".batchvid" / PIECES_NAME).exists() == (change is not Path.unlink)


def test_a_journal_as_the_record_found_it_is_not_read_again_to_record_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A rerun whose journal has the identity the record holds records the journal's state
    without reading it (once its check, a journal of gigabytes, not twice); the next rerun,
    after a line appended, or its journal replaced by a copy (another inode), reads it once:
    the check hashes it, and that state is recorded; each writes the reference bytes."""
    root, outcomes = written
    read: list[str] = []
    real_open = open

    def traced_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(piecesjournal, "open", traced_open, raising=False)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    assert read.count("journal.jsonl") == 1  # the record's check only
    _journaled(root, outcomes[0])
    read.clear()
    _assert_reference(tmp_path / "again", root, outcomes, seconds=3.0)
    assert read.count("journal.jsonl") == 1
    journal = root / ".batchvid" / "journal.jsonl"
    shutil.copy2(journal, journal.with_suffix(".copy"))
    journal.with_suffix(".copy").replace(journal)
    read.clear()
    _assert_reference(tmp_path / "copied", root, outcomes, seconds=3.5)
    assert read.count("journal.jsonl") == 1
    made = _made(monkeypatch)
    _assert_reference(tmp_path / "third", root, outcomes, seconds=4.0)
    assert len(made) == sum(not _reusable(o) for o in outcomes)


def test_jobs_with_journal_lines_appended_since_are_made_again_the_others_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """Lines appended for two jobs (their records changed: downloaded again): those two are
    made, every other reusable job copied, the reference bytes."""
    root, outcomes = written
    reusable = [o for o in outcomes if _reusable(o)]
    for o in (reusable[1], reusable[-2]):
        o.video = {**(o.video or {}), "sha256": "d" * 64}
    _journaled(root, reusable[1], reusable[-2])
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    assert sorted(made) == sorted([o.job.id for o in outcomes if not _reusable(o)]
                                  + [reusable[1].job.id, reusable[-2].job.id])


def test_files_whose_every_piece_is_copied_stay_and_their_pieces_are_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job reusable and copied: batchvid.lock and metadata.jsonl are left as they are
    (the same bytes), and the record still places their pieces: a later pass that copies all
    but one job writes the reference bytes."""
    root = tmp_path / "out"
    outcomes = [o for o in _replayed(root, _run(9, 90)) if _reusable(o)]
    write_outputs(root, outcomes, _info(seconds=1.0))
    inodes = {name: (root / name).stat().st_ino for name in FILES}
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, seconds=2.0)
    assert made == []
    assert [name for name in FILES if (root / name).stat().st_ino == inodes[name]] == [
        "metadata.jsonl", "batchvid.lock"]
    changed = outcomes[len(outcomes) // 2]
    changed.video = {**(changed.video or {}), "sha256": "e" * 64}
    _journaled(root, changed)
    _assert_reference(tmp_path, root, outcomes, seconds=3.0)
    assert 0 < len(made) < len(outcomes)


def _changed(rng: random.Random, root: Path, outcomes: list[Outcome], round_: int) -> list[Outcome]:
    """``outcomes`` after a few random changes of the kinds a rerun meets."""
    for _ in range(1 if rng.random() < 0.8 else 3):  # one: the first change is where copying stops
        reusable = [n for n, o in enumerate(outcomes) if _reusable(o)]
        at = rng.choice(reusable) if reusable and rng.random() < 0.8 else rng.randrange(len(outcomes))
        o, kind = outcomes[at], rng.randrange(10)
        if kind == 0:
            o.status, o.action = rng.choice([("skipped", "skip"), ("succeeded", "download"), ("succeeded", "submit")])
        elif kind == 1:
            o.status, o.action, o.error = "failed", "keep-failed", {"kind": "x", "message": rng.choice(TEXTS)}
        elif kind == 2:  # downloaded again: another journal line
            o.video = {"path": f"jobs/{o.job.id}/video.mp4", "sha256": f"{rng.getrandbits(256):064x}", "bytes": 5}
            _journaled(root, o)
        elif kind == 3:
            o.job = _with_params(o.job, {**o.job.params, "prompt": rng.choice(TEXTS)})
        elif kind == 4:
            o.warnings = [] if o.warnings else ["w"]
        elif kind == 5:  # another task's line
            o.task_id = rng.choice([None, "t", "ünï"])
            _journaled(root, o)
        elif kind == 6 and len(outcomes) > 1:
            del outcomes[at]
        elif kind == 7:
            new = _outcome(rng, 1000 + round_)
            _journaled(root, new)
            outcomes.insert(at, new)
        elif kind == 8:
            o.job = dataclasses.replace(o.job, id=o.job.id + "x")
        else:
            o.job = dataclasses.replace(o.job, **rng.choice([{"matrix": {"k": rng.randrange(3)}}, {"source": "s"},
                                                            {"sample": 1}, {"key": f"{rng.getrandbits(256):064x}"}]))
    return [o if o.job.index == n else _reindexed(o, n) for n, o in enumerate(outcomes)]


@pytest.mark.parametrize("seed", range(5))
def test_chained_random_reruns_write_the_reference_bytes(tmp_path: Path, seed: int) -> None:
    """Reruns over one directory, each after random changes (status, journal line, manifest
    entry, warnings, task id, jobs removed, inserted or renamed, the run's name): every file
    has the bytes of a fresh reference write, and pieces are copied along the way."""
    rng = random.Random(seed)
    root, copied = tmp_path / "out", []
    outcomes = _replayed(root, _run(seed, 30), seed)
    real_save = reportpieces.Pieces.save

    def save(self: reportpieces.Pieces, root: Path) -> None:
        copied.append(self.copied)
        real_save(self, root)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reportpieces.Pieces, "save", save)
        for round_ in range(10):
            info = _info(seconds=float(round_), name="other" if rng.random() < 0.15 else "demo ✓")
            _reference(tmp_path / f"reference{round_}", outcomes, info)
            write_outputs(root, outcomes, info)
            for name in FILES:
                assert (root / name).read_bytes() == (tmp_path / f"reference{round_}" / name).read_bytes(), (round_, name)
            outcomes = _changed(rng, root, outcomes, round_)
    assert sum(copied) > 0


def test_a_rerun_whose_head_changed_still_copies_every_reusable_job_and_its_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """report.json's head differs from its first bytes (another exit code and cost): report.html
    is rendered again, yet every reusable job's pieces and card are copied; the reference bytes."""
    root, outcomes = written
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, exit_code=3, cost=7.5)
    assert len(made) == sum(not _reusable(o) for o in outcomes)
    assert b'"exit_code":3' in (root / "report.html").read_bytes()


def test_cards_are_found_again_in_a_page_whose_timing_was_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A rerun that changed nothing renews only the page's timing (longer text: its cards move);
    the next one, whose page changes, copies each card from where it now is: reference bytes."""
    root, outcomes = written
    _assert_reference(tmp_path, root, outcomes, seconds=123456.5, started_at="2026-01-01T00:00:00.123456+00:00")
    made = _made(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, exit_code=0)
    assert len(made) == sum(not _reusable(o) for o in outcomes)
