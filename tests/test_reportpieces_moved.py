"""A rerun whose report differs from the previous one only after its jobs (the manifest at
another path, spelt otherwise, a shard, a stop) copies every reusable job's text and card, and
records where they are: the bytes of a rerun that makes them all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import batchvid.gallery as gallery
import batchvid.pagecards as pagecards
import batchvid.report as report
import batchvid.reportfiles as reportfiles
import batchvid.reportrecord as reportrecord
from batchvid.report import Outcome, write_outputs
from batchvid.reportpieces import PIECES_NAME
from tests.test_reportfiles import FILES, _info, _reference, _run
from tests.test_reportpieces import _journaled, _replayed, _reusable, _with_params
from tests.test_reportpieces_generated import (  # noqa: F401  # (its autouse fixture: the same timing)
    _assert_record_places_each_piece,
    _copy,
    _record,
    _run_cli,
    _warned_and_detailed,
)


def _entries_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs whose entries are made, by the report pass or by report.html's own
    rendering of its cards (``report.JobEntries``)."""
    made: list[str] = []
    for module in (reportfiles, report):
        real = module.job_entry

        def job_entry(o: Outcome, files: Any, real: Any = real) -> dict[str, Any]:
            made.append(o.job.id)
            return real(o, files)

        monkeypatch.setattr(module, "job_entry", job_entry)
    return made


def _cards_copied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The numbers of the jobs whose cards are copied from the page being replaced."""
    copied: list[int] = []
    real = pagecards.CardTexts.add_block

    def add_block(self: pagecards.CardTexts, data: bytes, number: int, end: int) -> None:
        copied.extend(range(number, end))
        real(self, data, number, end)

    monkeypatch.setattr(pagecards.CardTexts, "add_block", add_block)
    return copied


def _assert_reference(tmp_path: Path, root: Path, outcomes: list[Outcome], *counted: list[Any],
                      **info: Any) -> None:
    """Write ``outcomes`` over ``root``'s files: each file has the bytes of a fresh reference
    write (made first: ``counted``, the lists of what the pass does, hold the pass's only)."""
    reference = tmp_path / "reference"
    _reference(reference, outcomes, _info(**info))
    for kept in counted:
        kept.clear()
    write_outputs(root, outcomes, _info(**info))
    for name in FILES:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def _cards_at(root: Path) -> Any:
    head = (root / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")[0]
    return json.loads(head)["cards_at"]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Outcome]]:
    """A directory a rerun wrote (manifest ``m.yaml``), then one that changed nothing (its page
    only retimed): the record places every reusable job's card."""
    root = tmp_path / "out"
    outcomes = _replayed(root, _run(11, 80))
    write_outputs(root, outcomes, _info(seconds=1.0))
    write_outputs(root, outcomes, _info(seconds=2.0))
    assert _cards_at(root) is not None
    return root, outcomes


_TAILS: dict[str, dict[str, Any]] = {
    "manifest moved": {"manifest": "/elsewhere/checkout/m.yaml"},
    "manifest spelt otherwise": {"manifest": "./m.yaml"},
    "shard": {"shard": (1, 2)},
    "stopped": {"stopped": {"reason": "max_cost", "message": "spent"}},
}


@pytest.mark.parametrize("tail", _TAILS)
def test_a_rerun_whose_report_differs_only_after_its_jobs_copies_every_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], tail: str
) -> None:
    """Only what report.json holds after its jobs changed: report.html is rendered again with
    every reusable job's card copied (no entry made again for the page), the reference bytes,
    and the record places the cards."""
    root, outcomes = written
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, made, copied, seconds=3.0, **_TAILS[tail])
    reusable = [n for n, o in enumerate(outcomes) if _reusable(o)]
    assert sorted(made) == sorted(o.job.id for o in outcomes if not _reusable(o))
    assert sorted(copied) == reusable
    assert _cards_at(root) is not None


def test_reruns_alternating_between_two_manifest_paths_copy_every_card_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """A CI checkout at a new path each time: each rerun, its manifest elsewhere than the
    last one's, copies every reusable job's card from the page the one before wrote."""
    root, outcomes = written
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    reusable = sum(_reusable(o) for o in outcomes)
    for round_, path in enumerate(["/ci/run-1/m.yaml", "/ci/run-2/m.yaml", "m.yaml", "/ci/run-2/m.yaml"]):
        _assert_reference(tmp_path / str(round_), root, outcomes, made, copied, manifest=path, seconds=3.0 + round_)
        assert len(made) == len(outcomes) - reusable
        assert len(copied) == reusable


def test_a_record_without_the_cards_places_gets_them_from_a_rerun_whose_tail_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record that does not place the cards (written by a rerun whose page was only
    retimed, with no record before it): the next rerun, its manifest moved, makes each card
    and places it, so the one after copies them; the reference bytes each time."""
    root = tmp_path / "out"
    outcomes = _replayed(root, _run(12, 60))
    write_outputs(root, outcomes, _info(seconds=1.0))
    (root / ".batchvid" / PIECES_NAME).unlink()
    write_outputs(root, outcomes, _info(seconds=2.0))
    assert _cards_at(root) is None
    _assert_reference(tmp_path / "moved", root, outcomes, manifest="/moved/m.yaml", seconds=3.0)
    assert _cards_at(root) is not None
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    _assert_reference(tmp_path / "back", root, outcomes, made, copied, seconds=4.0)
    assert len(made) == sum(not _reusable(o) for o in outcomes)
    assert len(copied) == sum(_reusable(o) for o in outcomes)


def test_a_manifest_that_moved_and_changed_one_job_makes_that_job_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The manifest at another path with one job's parameters edited: that job's entry and
    card are made, every other reusable job's copied; the reference bytes."""
    root, outcomes = written
    at = [n for n, o in enumerate(outcomes) if _reusable(o)][-3]
    outcomes[at].job = _with_params(outcomes[at].job, {**outcomes[at].job.params, "fps": 9})
    made, copied = _entries_made(monkeypatch), _cards_copied(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, made, copied, manifest="/elsewhere/m.yaml", seconds=3.0)
    assert outcomes[at].job.id in made
    assert len(made) == sum(not _reusable(o) for o in outcomes) + 1
    assert at not in copied and len(copied) == sum(_reusable(o) for o in outcomes) - 1


def _sweeps_found(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of jobs each time report.html's sweeps are found from them."""
    found: list[int] = []
    real = gallery.find_sweeps

    def find_sweeps(jobs: Any) -> Any:
        found.append(len(jobs))
        return real(jobs)

    monkeypatch.setattr(gallery, "find_sweeps", find_sweeps)
    return found


def _placed_sweeps(root: Path) -> Any:
    """The text at the record's place of report.html's sweeps, read as JSON."""
    head = (root / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")[0]
    start, end = json.loads(head)["sweeps_at"]
    return json.loads((root / "report.html").read_bytes()[start:end])


def test_a_rerun_that_copies_every_job_copies_the_pages_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job's pieces copied (the manifest moved, after a rerun that only retimed the
    page: its sweeps moved with it): the sweeps are copied from the page being replaced, not
    found again; one job changed, they are found again; the reference bytes each time."""
    root = tmp_path / "out"
    outcomes = [o for o in _replayed(root, _run(9, 90)) if _reusable(o)]
    expected = [s.to_dict() for s in gallery.find_sweeps(report.JobEntries(outcomes))]
    assert expected
    write_outputs(root, outcomes, _info(seconds=1.0))
    write_outputs(root, outcomes, _info(seconds=123456.5, started_at="2026-01-01T00:00:00.123456+00:00"))
    found, made = _sweeps_found(monkeypatch), _entries_made(monkeypatch)
    _assert_reference(tmp_path / "moved", root, outcomes, found, made, manifest="/moved/m.yaml")
    assert (found, made) == ([], [])
    assert _placed_sweeps(root) == expected
    changed = outcomes[len(outcomes) // 2]
    changed.video = {**(changed.video or {}), "sha256": "e" * 64}
    _journaled(root, changed)
    _assert_reference(tmp_path / "changed", root, outcomes, found, made, manifest="/moved/m.yaml")
    assert (found, made) == ([len(outcomes)], [changed.job.id])
    assert _placed_sweeps(root) == expected


# Real runs (the simulator): the manifest, its image and its prompts file moved together.

_MANIFEST = """version: 1
name: moved
defaults: {model: cogvideox-flash}
jobs:
  - id: clip
    prompt: "a clip ${n}"
    matrix: {n: [1, 2, 3]}
  - id: animate
    prompt: the colours swirl
    image: images/photo.png
  - id: rows
    prompts_file: prompts.txt
    samples: 2
"""


def _manifest_dir(at: Path, prompt: str = "the colours swirl") -> Path:
    """A manifest in ``at`` with its image and prompts file beside it (relative paths)."""
    (at / "images").mkdir(parents=True)
    shutil.copyfile(Path(__file__).parents[1] / "manifests" / "images" / "photo.png", at / "images" / "photo.png")
    (at / "prompts.txt").write_text("a fox\nan owl at night\n", encoding="utf-8")
    manifest = at / "m.yaml"
    manifest.write_text(_MANIFEST.replace("the colours swirl", prompt), encoding="utf-8")
    return manifest


def _twins(tmp_path: Path, manifest: Path | str, out: Path, name: str) -> tuple[Path, list[str], list[int]]:
    """Rerun copies of ``out`` with and without its record: the same bytes in every file; the
    rerun with the record, the ids of the jobs whose entries it made and the cards it copied."""
    with_record, without = _copy(out, tmp_path / f"{name}-with"), _copy(out, tmp_path / f"{name}-without")
    (without / ".batchvid" / PIECES_NAME).unlink()
    _run_cli(Path(manifest), without)
    with pytest.MonkeyPatch.context() as patch:
        made, copied = _entries_made(patch), _cards_copied(patch)
        _run_cli(Path(manifest), with_record)
    for file in FILES:
        assert (with_record / file).read_bytes() == (without / file).read_bytes(), file
    _assert_record_places_each_piece(with_record)
    assert _cards_at(with_record) is not None
    return with_record, made, copied


def _generated_then_rerun(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest in ``tmp_path/a``, its run, then a rerun (every job done, its page retimed
    by a second rerun): the manifest and the output directory."""
    manifest, out = _manifest_dir(tmp_path / "a"), tmp_path / "out"
    _run_cli(manifest, out)
    _run_cli(manifest, out)
    _run_cli(manifest, out)
    assert {job["status"] for job in json.loads((out / "report.json").read_text())["jobs"]} == {"skipped"}
    return manifest, out


def _jobs_text(out: Path) -> tuple[Any, ...]:
    """Every job's text in the report files (report.json's entries, the page's cards, and the
    files whose every line is a job's)."""
    page = (out / "report.html").read_text(encoding="utf-8")
    data = page[page.index('{"jobs":['):page.index("</script>", page.index('{"jobs":['))]
    return (json.loads((out / "report.json").read_text())["jobs"], json.loads(data)["jobs"],
            *((out / name).read_bytes() for name in ("junit.xml", "metadata.jsonl", "batchvid.lock")),
            (out / "report.md").read_text().split("<details>")[1])


def test_a_manifest_moved_with_its_files_changes_no_jobs_text_and_copies_it_all(tmp_path: Path) -> None:
    """The manifest, its image and its prompts file copied to another directory (a CI checkout
    elsewhere): the rerun makes no job's entry nor card, writes the bytes of a rerun without a
    record, and each job's text is the one a rerun at the old path writes; only the path the
    report names changes."""
    manifest, out = _generated_then_rerun(tmp_path)
    moved = _manifest_dir(tmp_path / "checkout-2")
    here, _, _ = _twins(tmp_path, manifest, out, "here")
    there, made, copied = _twins(tmp_path, moved, out, "there")
    assert made == []
    assert len(copied) == 8
    assert _jobs_text(there) == _jobs_text(here)
    assert json.loads((there / "report.json").read_text())["manifest"]["path"] == str(moved)
    _, made, copied = _twins(tmp_path, manifest, there, "back")
    assert (made, len(copied)) == ([], 8)


def test_a_relative_then_an_absolute_manifest_path_copies_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same manifest named relatively (from its directory), then absolutely: each rerun
    copies every job's text and card, the bytes of a rerun without a record."""
    manifest, out = _generated_then_rerun(tmp_path)
    monkeypatch.chdir(manifest.parent)
    relative, made, copied = _twins(tmp_path, "m.yaml", out, "relative")
    assert (made, len(copied)) == ([], 8)
    assert json.loads((relative / "report.json").read_text())["manifest"]["path"] == "m.yaml"
    _, made, copied = _twins(tmp_path, manifest.resolve(), relative, "absolute")
    assert (made, len(copied)) == ([], 8)


def test_an_output_directory_moved_keeps_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output directory renamed (its files the same inodes), then rerun there: every job's
    text copied, the bytes of a rerun without a record; so with the manifest moved too."""
    manifest, out = _generated_then_rerun(tmp_path)
    without = _copy(out, tmp_path / "without")
    (without / ".batchvid" / PIECES_NAME).unlink()
    (tmp_path / "elsewhere").mkdir()
    moved = out.rename(tmp_path / "elsewhere" / "out")
    with monkeypatch.context() as patch:
        made, copied = _entries_made(patch), _cards_copied(patch)
        _run_cli(manifest, moved)
    assert (made, copied) == ([], [])  # (nothing before the timing changed: the page retimed)
    _run_cli(manifest, without)
    for file in FILES:
        assert (moved / file).read_bytes() == (without / file).read_bytes(), file
    _, made, copied = _twins(tmp_path, _manifest_dir(tmp_path / "b"), moved, "both")
    assert (made, len(copied)) == ([], 8)


def test_a_manifest_moved_and_one_job_changed_makes_that_job_only(tmp_path: Path) -> None:
    """The manifest at another path with one job's prompt edited: that job is generated
    again, its entry and card made; every other job's copied; the bytes of a rerun without a
    record, and the next rerun copies them all."""
    _, out = _generated_then_rerun(tmp_path)
    moved = _manifest_dir(tmp_path / "checkout-2", prompt="the colours swirl slowly")
    rerun, made, copied = _twins(tmp_path, moved, out, "edited")
    assert made == ["animate"]
    assert len(copied) == 7
    _, made, copied = _twins(tmp_path, moved, rerun, "after")
    assert (made, len(copied)) == ([], 8)
    assert os.path.exists(rerun / "jobs" / "animate" / "video.mp4")


def test_a_rerun_whose_manifest_moved_compares_each_digest_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The page found to change only once report.json is written: its cards are copied run by
    run as the entries were, each job's digest compared once (not again for the cards)."""
    root, outcomes = written
    compared: list[int] = []
    real_same = reportrecord.Previous.same

    def same(self: reportrecord.Previous, number: int, digest: bytes) -> bool:
        compared.append(number)
        return real_same(self, number, digest)

    monkeypatch.setattr(reportrecord.Previous, "same", same)
    copied = _cards_copied(monkeypatch)
    _assert_reference(tmp_path, root, outcomes, compared, copied, manifest="/moved/m.yaml")
    assert len(copied) == sum(_reusable(o) for o in outcomes)
    assert sorted(compared) == sorted(set(compared))


def _sweeps_placed_at(record: Path, place: list[int]) -> None:
    """The record's ``sweeps_at`` set to ``place``, its digest made again (a crafted header
    its own digest does not catch)."""
    head, _, payload = record.read_bytes().partition(b"\n")
    header = json.loads(head)
    header["sweeps_at"] = place
    del header["payload"]
    header["payload"] = reportrecord.record_digest(header, payload)
    record.write_bytes(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload)


def _other_lists(page: bytes, start: int, end: int) -> list[list[int]]:
    """Places of JSON lists in ``page`` other than the one at ``start``..``end``: in the cards
    before it and within it."""
    places = []
    for first in range(len(page)):
        if page[first:first + 1] == b"[" and first != start:
            stop = page.find(b"]", first) + 1
            if 0 < stop <= end and [first, stop] != [start, end]:
                places.append([first, stop])
    return places


@pytest.mark.parametrize("where", ["within the sweeps", "within the cards", "past the page"])
def test_a_record_placing_the_sweeps_elsewhere_is_not_trusted_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A record whose ``sweeps_at`` (its digest made again) names another list of the page
    (one inside the sweeps, one among the cards) or bytes past its end: the page written
    is the reference's, its sweeps found again."""
    root = tmp_path / "out"
    outcomes = [o for o in _replayed(root, _run(9, 90)) if _reusable(o)]
    write_outputs(root, outcomes, _info(seconds=1.0))
    write_outputs(root, outcomes, _info(seconds=2.0))
    record = root / ".batchvid" / PIECES_NAME
    start, end = json.loads(record.read_bytes().partition(b"\n")[0])["sweeps_at"]
    page = (root / "report.html").read_bytes()
    others = _other_lists(page, start, end)
    place = {
        "within the sweeps": next(p for p in others if start < p[0] and p[1] <= end),
        "within the cards": next(p for p in others if p[1] < start),
        "past the page": [len(page) + 5, len(page) + 9],
    }[where]
    _sweeps_placed_at(record, place)
    found = _sweeps_found(monkeypatch)
    _assert_reference(tmp_path / "moved", root, outcomes, found, manifest="/moved/m.yaml")
    assert found == [len(outcomes)]


def _when_read(monkeypatch: pytest.MonkeyPatch, file: int, change: Any) -> list[int]:
    """``change(fd)`` done to ``file`` (the open previous one) the first time its pieces are
    read; the list of the times it was done."""
    done: list[int] = []
    real = reportrecord.Previous.read

    def read(self: reportrecord.Previous, which: int, start: int, stop: int) -> bytes:
        if which == file and not done:
            done.append(which)
            change(self._fds[which])
        return real(self, which, start, stop)

    monkeypatch.setattr(reportrecord.Previous, "read", read)
    return done


def _cut(fd: int) -> None:
    os.truncate(f"/proc/self/fd/{fd}", os.fstat(fd).st_size // 2)


def _written_over(fd: int) -> None:
    """A byte of the file, within its jobs, written over in place (its size the same)."""
    size = os.fstat(fd).st_size
    with open(f"/proc/self/fd/{fd}", "r+b") as fh:
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(b"#" if byte != b"#" else b"%")
    os.utime(f"/proc/self/fd/{fd}", ns=(1, 1))


@pytest.mark.parametrize("change", [_cut, _written_over])
@pytest.mark.parametrize("file", [reportrecord.REPORT_JSON, reportrecord.CARDS])
def test_a_report_file_cut_or_written_over_while_its_pieces_are_read_is_not_copied_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]], change: Any, file: int
) -> None:
    """report.json or report.html cut, or a byte written over in place, as the rerun (the
    manifest moved: the page's cards copied after report.json) reads its pieces: no crash,
    every file the reference's bytes, and no record of pieces read from the changed file."""
    root, outcomes = written
    done = _when_read(monkeypatch, file, change)
    _assert_reference(tmp_path, root, outcomes, manifest="/moved/m.yaml", seconds=3.0)
    assert done == [file]
    assert not (root / ".batchvid" / PIECES_NAME).exists()
