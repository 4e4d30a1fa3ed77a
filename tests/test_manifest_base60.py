"""A plain `10:30` in a manifest is the text written (YAML 1.2, as editors read it through the
`$schema` line), never YAML 1.1's base-60 number 630; and a `limits.poll_interval` MIN:MAX
that `run` would refuse is an error `validate` reports at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.cli import main
from batchvid.manifest import load_manifest

SWEEP = """\
version: 1
name: clock
defaults: {model: cogvideox-flash, fps: 30}
limits:
  poll_interval: 2:15
jobs:
  - id: meet
    prompt: "a station clock showing ${time}"
    matrix:
      time: [10:30, 12:45]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_matrix_value_like_10_30_reaches_the_prompt_as_written(tmp_path: Path) -> None:
    """`time: [10:30, 12:45]` makes the prompts `... 10:30` and `... 12:45` (PyYAML alone
    read 630 and 765: paid-for videos of the wrong prompt, ids `meet-630`, `meet-765`)."""
    manifest = load_manifest(_write(tmp_path, SWEEP))
    assert [job.params["prompt"] for job in manifest.jobs] == [
        "a station clock showing 10:30", "a station clock showing 12:45"]
    assert [job.id for job in manifest.jobs] == ["meet-10-30", "meet-12-45"]
    assert all(job.params["fps"] == 30 for job in manifest.jobs)  # plain numbers stay numbers


def test_poll_interval_min_max_unquoted_is_min_max(tmp_path: Path) -> None:
    """`poll_interval: 2:15` is MIN 2, MAX 15 seconds, as quoted "2:15" is (it was 135 s)."""
    manifest = load_manifest(_write(tmp_path, SWEEP))
    assert manifest.limits["poll_interval"] == "2:15"


@pytest.mark.parametrize("written", ['"5:1"', "5:1", '"0:2"'])
def test_a_poll_interval_run_would_refuse_fails_validate_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str
) -> None:
    """MIN:MAX with MIN > MAX or MIN = 0 passed validate and was refused only by `run`
    (without a line): validate now exits 2 naming FILE:LINE:COL and the field."""
    path = _write(tmp_path, SWEEP.replace("poll_interval: 2:15", f"poll_interval: {written}"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5:18: $.limits.poll_interval: " in err and "needs 0 < MIN <= MAX" in err


def test_a_matrix_variable_filling_the_prompt_keeps_no_and_010_as_written(tmp_path: Path) -> None:
    """A matrix variable used only in `${...}` keeps `NO`, `on` and `010` as written (YAML 1.1
    read false, true and 8: the prompt said `flag of false`); a generation parameter's
    `with_audio: [yes, no]` still means true and false."""
    text = """\
version: 1
name: flags
defaults: {model: cogvideox-flash}
jobs:
  - id: flag
    prompt: "the flag of ${country}, plate ${code}"
    matrix:
      country: [NO, on, true]
      code: [010, 7]
      with_audio: [yes, no]
"""
    manifest = load_manifest(_write(tmp_path, text))
    prompts = sorted({job.params["prompt"] for job in manifest.jobs})
    assert prompts == sorted(f"the flag of {country}, plate {code}"
                             for country in ("NO", "on", "true") for code in ("010", "7"))
    assert {job.params["with_audio"] for job in manifest.jobs} == {True, False}


def test_base60_values_are_found_in_a_file_with_crlf_line_breaks(tmp_path: Path) -> None:
    """Written with CRLF line breaks (an editor on Windows), `10:30` is found at its place all
    the same: lines and columns are counted as YAML counts them."""
    path = tmp_path / "m.yaml"
    path.write_bytes(SWEEP.replace("\n", "\r\n").encode("utf-8"))
    manifest = load_manifest(path)
    assert manifest.limits["poll_interval"] == "2:15"
    assert [job.id for job in manifest.jobs] == ["meet-10-30", "meet-12-45"]
