"""An output directory copied (``cp -r``, ``rsync``, a CI cache restored from its archive: new
inodes, maybe new mtimes) keeps its record of report pieces: its files' bytes are checked
against the sha256 the record holds, and a rerun copies every reusable job's text, writing the
bytes of a rerun without a record; a file whose bytes differ makes the rerun write every file
afresh."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import types
from pathlib import Path
from typing import Any

import pytest

import batchvid.reportpieces as reportpieces
import batchvid.reportrecord as reportrecord
from batchvid.piecesjournal import identity
from batchvid.report import Outcome, write_outputs
from batchvid.reportrecord import FILES, PIECES_NAME
from tests.test_reportfiles import _info, _reference, _run
from tests.test_reportpieces import _made, _replayed, _reusable
from tests.test_reportpieces_generated import (  # noqa: F401  # (its autouse fixture: the same timing)
    _assert_record_places_each_piece,
    _run_cli,
    _warned_and_detailed,
)
from tests.test_reportpieces_moved import (
    _assert_reference,
    _cards_copied,
    _entries_made,
    _manifest_dir,
)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Outcome]]:
    """A directory a rerun wrote, then one that changed nothing (its page retimed): the record
    places every reusable job's piece, its card too."""
    root = tmp_path / "out"
    outcomes = _replayed(root, _run(13, 70))
    write_outputs(root, outcomes, _info(seconds=1.0))
    write_outputs(root, outcomes, _info(seconds=2.0))
    return root, outcomes


def _copytree(root: Path, to: Path) -> Path:
    """``root`` copied by ``shutil.copytree`` (``copy2``: new inodes, the same mtimes)."""
    shutil.copytree(root, to)
    for name in FILES:
        assert os.stat(to / name).st_ino != os.stat(root / name).st_ino
        assert os.stat(to / name).st_mtime_ns == os.stat(root / name).st_mtime_ns
    return to


def _through_tar(root: Path, to: Path) -> Path:
    """``root`` archived with tar, each member's mtime an hour later, and extracted at ``to``
    (as a CI cache is restored): new inodes and new mtimes."""
    archive = to.with_suffix(".tar")

    def later(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.mtime += 3600
        return member

    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="out", filter=later)
    with tarfile.open(archive) as tar:
        # ``filter`` exists from Python 3.11.4 (3.12 warns without it); this archive is our own.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(to.parent / "extracted", **safe)  # type: ignore[arg-type]
    (to.parent / "extracted" / "out").rename(to)
    for name in FILES:
        assert os.stat(to / name).st_mtime_ns != os.stat(root / name).st_mtime_ns
    return to


_COPIES = {"copytree": _copytree, "tar": _through_tar}


def _record_files(root: Path) -> Any:
    head = (root / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")[0]
    return json.loads(head)["files"]


@pytest.mark.parametrize("how", _COPIES)
def test_a_copied_directory_rerun_copies_every_reusable_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], how: str
) -> None:
    """The directory copied (new inodes; by tar, new mtimes too): the rerun makes only the jobs
    never reused, writes the reference bytes, and its record names the copy's files, so the
    next rerun there copies them again."""
    root, outcomes = written
    copy = _COPIES[how](root, tmp_path / "copy")
    made = _made(monkeypatch)
    _assert_reference(tmp_path / "first", copy, outcomes, made, seconds=3.0)
    never = sorted(o.job.id for o in outcomes if not _reusable(o))
    assert sorted(made) == never
    assert _record_files(copy) == {name: identity(os.stat(copy / name)) for name in FILES}
    _assert_reference(tmp_path / "second", copy, outcomes, made, seconds=4.0)
    assert sorted(made) == never


@pytest.mark.parametrize("how", _COPIES)
def test_a_copied_directory_whose_report_changed_copies_the_cards_from_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], how: str
) -> None:
    """The copy's rerun with another exit code and manifest path (report.html rendered again):
    every reusable job's card is copied from the copied page, no entry made for it; the
    reference bytes."""
    root, outcomes = written
    copy = _COPIES[how](root, tmp_path / "copy")
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    _assert_reference(tmp_path, copy, outcomes, made, copied, exit_code=3, manifest="/ci/m.yaml", seconds=3.0)
    assert sorted(made) == sorted(o.job.id for o in outcomes if not _reusable(o))
    assert sorted(copied) == [n for n, o in enumerate(outcomes) if _reusable(o)]


def _byte_changed(path: Path) -> None:
    """A byte in the middle of the file changed, its size and mtime the same."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = ord("#") if data[len(data) // 2] != ord("#") else ord("%")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("name", FILES)
def test_a_copy_whose_file_has_other_bytes_reuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], name: str
) -> None:
    """A copy with a byte of one report file changed (its size and mtime kept): nothing is
    copied, not even the cards of the page rendered again; the reference bytes."""
    root, outcomes = written
    copy = _copytree(root, tmp_path / "copy")
    _byte_changed(copy / name)
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    _assert_reference(tmp_path, copy, outcomes, made, copied, exit_code=3, seconds=3.0)
    assert copied == []
    assert sorted(set(made)) == sorted(o.job.id for o in outcomes)


def test_a_copied_file_changed_while_it_is_hashed_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A copied file whose identity changes while its bytes are hashed (written meanwhile):
    nothing is copied; the reference bytes."""
    root, outcomes = written
    copy = _copytree(root, tmp_path / "copy")
    touched: list[int] = []

    def pread(fd: int, size: int, offset: int) -> bytes:
        if not touched:
            touched.append(fd)
            os.utime(f"/proc/self/fd/{fd}", ns=(1, 1))
        return os.pread(fd, size, offset)

    monkeypatch.setattr(reportrecord, "os", types.SimpleNamespace(**{**vars(os), "pread": pread}))
    made = _made(monkeypatch)
    _assert_reference(tmp_path, copy, outcomes, made, seconds=3.0)
    assert len(touched) == 1
    assert len(made) == len(outcomes)


# Real runs (the simulator): a generating run, its directory copied, then rerun there.


def _rerun_twins(tmp_path: Path, manifest: Path, copy: Path) -> list[str]:
    """``copy`` rerun with its record and, copied again without it, rerun: the same bytes in
    every file; the ids of the jobs whose entries the rerun with the record made."""
    without = tmp_path / "without"
    shutil.copytree(copy, without)
    (without / ".batchvid" / PIECES_NAME).unlink()
    _run_cli(manifest, without)
    with pytest.MonkeyPatch.context() as patch:
        made = _entries_made(patch)
        _run_cli(manifest, copy)
    for file in FILES:
        assert (copy / file).read_bytes() == (without / file).read_bytes(), file
    _assert_record_places_each_piece(copy)
    return made


@pytest.mark.parametrize("how", _COPIES)
def test_a_generating_runs_directory_copied_then_rerun_copies_every_job(tmp_path: Path, how: str) -> None:
    """A run generates every job; its directory is copied (a CI cache) and rerun there (every
    job now skipped as done): no job's entry is made, and every file has the bytes of a rerun
    of the copy without a record."""
    manifest, out = _manifest_dir(tmp_path / "a"), tmp_path / "out"
    _run_cli(manifest, out)
    copy = _COPIES[how](out, tmp_path / "copy")
    assert _rerun_twins(tmp_path, manifest, copy) == []
    assert {job["status"] for job in json.loads((copy / "report.json").read_text())["jobs"]} == {"skipped"}


# What else a copy can hold: each time the bytes of a rerun without a record.


def test_a_copy_whose_files_are_symlinks_to_the_originals_leaves_them_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A copy whose report files are symlinks to the originals (``cp -rs``): the files read are
    the recorded ones, so every reusable job is copied; the rerun replaces the links with its
    own files (the reference bytes), and the originals keep their bytes and inodes."""
    root, outcomes = written
    before = {name: ((root / name).read_bytes(), os.stat(root / name).st_ino) for name in FILES}
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(root / ".batchvid", copy / ".batchvid")
    for name in FILES:
        (copy / name).symlink_to(root / name)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, copy, outcomes, made, seconds=3.0)
    assert sorted(made) == sorted(o.job.id for o in outcomes if not _reusable(o))
    assert {name: ((root / name).read_bytes(), os.stat(root / name).st_ino) for name in FILES} == before


@pytest.mark.parametrize("name", ["report.json", "report.html"])
def test_a_copy_holding_another_passs_file_of_the_same_size_reuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], name: str
) -> None:
    """A copy whose report.json or report.html is the original's after a later rerun (another
    timing: the same size, other bytes): nothing is copied; the reference bytes."""
    root, outcomes = written
    copy = _copytree(root, tmp_path / "copy")
    write_outputs(root, outcomes, _info(seconds=7.0))
    assert os.stat(root / name).st_size == os.stat(copy / name).st_size
    assert (root / name).read_bytes() != (copy / name).read_bytes()
    shutil.copy2(root / name, copy / name)
    made = _made(monkeypatch)
    _assert_reference(tmp_path, copy, outcomes, made, seconds=3.0)
    assert len(made) == len(outcomes)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", ["missing", "cut"])
def test_a_copy_missing_a_file_or_with_one_cut_reuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], name: str, damage: str
) -> None:
    """A partial copy (one report file missing) or one whose file was cut short: nothing is
    copied; every file has the bytes a rerun without a record writes, and the reference bytes
    (a page cut after its header too: the record shows it is not the page it describes, so it
    is rendered again, not retimed as a rerun without a record leaves it)."""
    root, outcomes = written
    copy = _copytree(root, tmp_path / "copy")
    if damage == "missing":
        (copy / name).unlink()
    else:
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(data[:len(data) // 2])
    without = tmp_path / "without"
    shutil.copytree(copy, without, symlinks=True)
    (without / ".batchvid" / PIECES_NAME).unlink()
    write_outputs(without, outcomes, _info(seconds=3.0))
    made = _made(monkeypatch)
    write_outputs(copy, outcomes, _info(seconds=3.0))
    assert len(made) == len(outcomes)
    reference = tmp_path / "fresh"
    _reference(reference, outcomes, _info(seconds=3.0))
    for file in FILES:
        assert (copy / file).read_bytes() == (reference / file).read_bytes(), file
        if file != name or name != "report.html" or damage == "missing":
            assert (copy / file).read_bytes() == (without / file).read_bytes(), file
    _assert_reference(tmp_path, copy, outcomes, seconds=3.0)


@pytest.fixture
def all_reusable(tmp_path: Path) -> tuple[Path, list[Outcome]]:
    """A directory whose every job is reused by a rerun that changed nothing (which then keeps
    metadata.jsonl and batchvid.lock as they are), and a rerun's record."""
    root = tmp_path / "out"
    outcomes = [o for o in _replayed(root, _run(13, 70)) if _reusable(o)]
    write_outputs(root, outcomes, _info(seconds=1.0))
    write_outputs(root, outcomes, _info(seconds=2.0))
    return root, outcomes


@pytest.mark.parametrize("name", ["metadata.jsonl", "batchvid.lock"])
@pytest.mark.parametrize("copied", [False, True], ids=["in place", "copied"])
def test_a_file_kept_as_it_is_but_replaced_during_the_pass_is_written_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_reusable: tuple[Path, list[Outcome]], name: str,
    copied: bool
) -> None:
    """A file the rerun keeps as it is (every piece copied), renamed over by another run's once
    the record's files are opened and checked (their pieces read from the open ones): it is
    not left as the rerun's; every file is written afresh, the reference bytes."""
    root, outcomes = all_reusable
    other = tmp_path / "other"
    write_outputs(other, [o for o in _replayed(other, _run(29, 70)) if _reusable(o)], _info())
    target = _copytree(root, tmp_path / "copy") if copied else root
    kept = os.stat(target / name).st_ino
    replaced: list[str] = []
    real_load = reportrecord.Previous.load.__func__  # type: ignore[attr-defined]

    def load(cls: type[reportrecord.Previous], path: Path, at: Path, run: str) -> reportrecord.Previous | None:
        previous = real_load(cls, path, at, run)
        if previous is not None and not replaced:
            replaced.append(name)
            shutil.copy2(other / name, at / ".swap")
            os.replace(at / ".swap", at / name)
        return previous

    with pytest.MonkeyPatch.context() as patch:
        made = _made(patch)
        write_outputs(target, outcomes, _info(seconds=3.0))  # (as it is: that file kept)
        assert made == [] and os.stat(target / name).st_ino == kept
    assert (other / name).read_bytes() != (target / name).read_bytes()
    monkeypatch.setattr(reportrecord.Previous, "load", classmethod(load))
    _assert_reference(tmp_path, target, outcomes, seconds=4.0)
    assert replaced == [name]


def _header_changed(root: Path, change: Any) -> None:
    record = root / ".batchvid" / PIECES_NAME
    head, _, payload = record.read_bytes().partition(b"\n")
    header = json.loads(head)
    del header["payload"]
    change(header)
    header["payload"] = reportrecord.record_digest(header, payload)
    record.write_bytes(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload)


def _format_3(header: dict[str, Any]) -> None:
    header["format"] = 3
    del header["digests"]


def _format_5(header: dict[str, Any]) -> None:
    header["format"] = 5


@pytest.mark.parametrize("change", [_format_3, _format_5], ids=["older (3: no sha256)", "newer"])
def test_a_record_of_an_older_or_newer_format_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], change: Any
) -> None:
    """A whole record of format 3 (before each file's sha256) or of a newer one, its run
    otherwise this one's: nothing is copied, the reference bytes, and a record of this format
    written, which the next rerun uses."""
    root, outcomes = written
    _header_changed(root, change)
    made = _made(monkeypatch)
    _assert_reference(tmp_path / "first", root, outcomes, made, seconds=3.0)
    assert len(made) == len(outcomes)
    assert json.loads((root / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")[0])["format"] == 4
    _assert_reference(tmp_path / "second", root, outcomes, made, seconds=4.0)
    assert sorted(made) == sorted(o.job.id for o in outcomes if not _reusable(o))


@pytest.mark.parametrize("name", ["metadata.jsonl", "batchvid.lock"])
def test_a_kept_file_replaced_after_its_check_is_not_recorded_as_the_kept_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, all_reusable: tuple[Path, list[Outcome]], name: str
) -> None:
    """A file kept as it is, renamed over after the pass checked it (as the record is saved):
    the record names the file checked, so the next rerun does not take the one now there for
    it; that rerun writes the reference bytes."""
    root, outcomes = all_reusable
    other = tmp_path / "other"
    write_outputs(other, [o for o in _replayed(other, _run(29, 70)) if _reusable(o)], _info())
    real_state = reportpieces.journal_state

    def journal_state(at: Path, known: Any = None) -> Any:
        shutil.copy2(other / name, at / ".swap")
        os.replace(at / ".swap", at / name)
        return real_state(at, known)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reportpieces, "journal_state", journal_state)
        write_outputs(root, outcomes, _info(seconds=3.0))
    assert (root / name).read_bytes() == (other / name).read_bytes()
    _assert_reference(tmp_path, root, outcomes, seconds=4.0)
