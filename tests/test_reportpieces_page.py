"""A report.html damaged since the record of pieces was made, its header intact, is rendered
again by the next pass, not retimed (``reportrecord.page_as_recorded``), at the cost of a stat
when it is the recorded file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import batchvid.reportpieces as reportpieces
import batchvid.reportrecord as reportrecord
from batchvid.report import Outcome, write_outputs
from batchvid.reportrecord import PIECES_NAME, page_as_recorded
from tests.helpers import FAST
from tests.test_reportfiles import FILES, _info, _reference
from tests.test_reportpieces import _edit_in_place, _replace_with_copy
from tests.test_reportpieces import written as written  # (the fixture)


def _assert_fresh(tmp_path: Path, root: Path, outcomes: list[Outcome], seconds: float) -> None:
    """Every file of ``root`` has the bytes of a reference write of ``outcomes``."""
    reference = tmp_path / f"reference-{seconds}"
    _reference(reference, outcomes, _info(seconds=seconds))
    for name in FILES:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_damaged_page_is_rendered_again_when_the_record_is_not_used_for_another_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The record of another format (a batchvid upgraded) still names the page's bytes: a page
    damaged since (its header intact) is rendered again, not retimed."""
    root, outcomes = written
    _edit_in_place(root / "report.html")
    monkeypatch.setattr(reportrecord, "PIECES_FORMAT", reportrecord.PIECES_FORMAT + 1)
    write_outputs(root, outcomes, _info(seconds=3.0))
    _assert_fresh(tmp_path, root, outcomes, 3.0)


def test_an_intact_page_is_only_stated_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: tuple[Path, list[Outcome]]
) -> None:
    """The record not used (another format) and the page the recorded file: it is retimed, as
    before, and never hashed; a copy of its bytes (another identity) is hashed and retimed."""
    root, outcomes = written
    hashed: list[int] = []
    real = reportrecord._same_bytes

    def same_bytes(fd: int, *args: object, **kw: object) -> bool:
        hashed.append(fd)
        return real(fd, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(reportrecord, "_same_bytes", same_bytes)
    retimed: list[int] = []
    monkeypatch.setattr(reportpieces.Pieces, "retimed", lambda self, moved: retimed.append(moved))
    record = root / ".batchvid" / PIECES_NAME
    assert page_as_recorded(record, root) and hashed == []
    _replace_with_copy(root / "report.html")
    assert page_as_recorded(record, root) and len(hashed) == 1
    monkeypatch.setattr(reportrecord, "PIECES_FORMAT", reportrecord.PIECES_FORMAT + 1)
    write_outputs(root, outcomes, _info(seconds=3.0))
    assert len(hashed) == 2 and len(retimed) == 1
    _assert_fresh(tmp_path, root, outcomes, 3.0)


@pytest.mark.parametrize("record", ["missing", "header cut"])
def test_without_a_record_that_says_otherwise_the_page_is_taken_as_it_is(
    written: tuple[Path, list[Outcome]], record: str
) -> None:
    """No record, or one whose header does not read: nothing says the page changed."""
    root, _ = written
    path = root / ".batchvid" / PIECES_NAME
    if record == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:40])
    _edit_in_place(root / "report.html")
    assert page_as_recorded(path, root)


def test_a_rerun_mends_a_page_damaged_after_its_header(tmp_path: Path) -> None:
    """`batchvid run` twice, then the page's bytes after its header damaged: the next rerun
    writes it as the one before it did, its timing apart."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: page\njobs:\n  - id: clip\n    prompt: 'clip ${n}'\n"
                        "    matrix:\n      n: [1, 2, 3]\n")
    out = tmp_path / "out"

    def run() -> None:
        done = subprocess.run([sys.executable, "-m", "batchvid", "run", str(manifest), "--out", str(out), *FAST],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    run()
    run()
    page = out / "report.html"
    before = page.read_bytes()
    damaged = bytearray(before)
    at = before.index(b'"jobs":[') + 20
    damaged[at:at + 8] = b"XXXXXXXX"
    page.write_bytes(bytes(damaged))
    run()
    timing = re.compile(rb"<!--timing-->.*?<!--/timing-->", re.S)
    assert timing.sub(b"", page.read_bytes()) == timing.sub(b"", before)
