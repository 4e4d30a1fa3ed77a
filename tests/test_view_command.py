"""``batchvid view`` and ``export`` on a directory they cannot use as it is: one that a run is
still writing (no report yet), and one where report.html cannot be written. Each is one line
naming the directory and what to do; no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.cli import main
from tests.test_gallery import simulated_run


def test_directory_a_run_is_writing_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory with a journal and no report.json yet (a run under way, or killed) is
    refused by view and export with exit 2, saying so rather than asking whether it is a
    batchvid directory."""
    out = tmp_path / "out"
    (out / ".batchvid").mkdir(parents=True)
    (out / ".batchvid" / "journal.jsonl").write_text("")
    assert main(["view", str(out)]) == 2
    assert main(["export", str(out), "--format", "webdataset", "--to", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    for line in err:
        assert f"{out} has no report.json yet: a run is writing this directory" in line
    assert not (tmp_path / "w").exists()


def test_view_that_cannot_write_the_page_names_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When report.html cannot be written (here a directory stands at its name, as a
    read-only directory refuses it), view exits 2 with one line naming the directory."""
    out = simulated_run(tmp_path)
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    (out / "report.html" / "keep").write_text("x")
    capsys.readouterr()
    assert main(["view", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: cannot write report.html or a poster there" in err
    assert "Traceback" not in err
    assert (out / "report.html" / "keep").read_text() == "x"
