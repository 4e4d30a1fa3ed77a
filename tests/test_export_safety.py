"""``batchvid export`` when something is wrong: a shard name that is a path, a damaged or
missing poster, a full disk, an unwritable target. The export names the file and leaves
``--to`` as it found it; the output directory is never written."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from batchvid.cli import main
from batchvid.export import ExportError, ExportOptions, export
from tests.test_dataset import FAST

MANIFEST = """\
version: 1
name: safety
defaults:
  model: cogvideox-flash
jobs:
  - id: alpha
    prompt: a kite over the hills
  - id: beta
    prompt: a boat on a lake
  - id: gamma
    prompt: a train in the snow
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulated run of three videos with posters (copy it before changing it)."""
    base = tmp_path_factory.mktemp("run")
    (base / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    assert main(["run", str(base / "m.yaml"), "--out", str(base / "out"), *FAST]) == 0
    return base / "out"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_of(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


def test_shard_name_that_is_a_path_is_refused(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--name with a '/' (or a leading '.') is a usage error: the shards never land outside
    --to, such as in the output directory itself."""
    copy = copy_of(out, tmp_path)
    before = tree(copy)
    escape = f"../{copy.name}/stolen"
    assert main(["export", str(copy), "--format", "webdataset", "--to", str(tmp_path / "w"),
                 "--name", escape]) == 2
    assert "--name" in capsys.readouterr().err
    assert tree(copy) == before
    assert not (tmp_path / "w").exists()


def test_damaged_poster_fails_the_export_naming_it(out: Path, tmp_path: Path) -> None:
    """A poster whose bytes are not the ones report.json records stops the export (a reader
    decoding it would fail that sample), naming the file and how to make it again."""
    copy = copy_of(out, tmp_path)
    poster = copy / "jobs" / "beta" / "poster.jpg"
    poster.write_bytes(b"x" * poster.stat().st_size)  # same size, other bytes
    with pytest.raises(ExportError, match=r"beta/poster.jpg: sha256 differs.*batchvid view"):
        export(copy, ExportOptions(format="webdataset", to=tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_missing_recorded_poster_fails_the_export(out: Path, tmp_path: Path) -> None:
    """A poster report.json records but the directory lacks stops the export, naming it,
    instead of a sample silently without its .jpg."""
    copy = copy_of(out, tmp_path)
    (copy / "jobs" / "gamma" / "poster.jpg").unlink()
    with pytest.raises(ExportError, match=r"gamma/poster.jpg: missing; `batchvid view"):
        export(copy, ExportOptions(format="webdataset", to=tmp_path / "w"))


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_failed_export_leaves_the_target_as_it_found_it(
    out: Path, tmp_path: Path, fmt: str
) -> None:
    """A video that changed, met after other files were written, fails the export and leaves
    no shard, copy or temporary file behind: an empty --to stays empty, a new one is not made."""
    copy = copy_of(out, tmp_path)
    (copy / "jobs" / "gamma" / "video.mp4").write_bytes(b"not the video")
    args = ["--shard-size", "1"] if fmt == "webdataset" else []
    (tmp_path / "empty").mkdir()
    for to in (tmp_path / "new", tmp_path / "empty"):
        assert main(["export", str(copy), "--format", fmt, "--to", str(to), *args]) == 1
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written (no file name in
    the error, as the real one has none)."""

    def __init__(self, fh: Any, room: int) -> None:
        self._fh, self._room = fh, room

    def write(self, data: bytes) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self._fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def test_full_disk_is_an_error_naming_the_file(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disk that fills during the export: exit 1, one line naming the file being written and
    the cause, no traceback, and --to left as it was."""
    import batchvid.export as export_module

    def tight_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = open(path, mode, *args, **kwargs)  # noqa: SIM115 -- closed by its user
        return _FullDisk(fh, 4096) if "w" in mode else fh

    monkeypatch.setattr(export_module, "open", tight_open, raising=False)
    to = tmp_path / "w"
    assert main(["export", str(out), "--format", "webdataset", "--to", str(to)]) == 1
    err = capsys.readouterr().err
    assert "safety-000000.tar: No space left on device" in err
    assert str(to / "safety-000000.tar") in err
    assert "Traceback" not in err
    assert not to.exists()


def test_unwritable_target_is_an_error_naming_it(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--to that cannot be made (a file where a directory should be) is exit 1 naming it."""
    (tmp_path / "file").write_text("x")
    to = tmp_path / "file" / "export"
    assert main(["export", str(out), "--format", "parquet", "--to", str(to)]) == 1
    assert f"--to {to}: cannot write there" in capsys.readouterr().err


def test_target_left_by_a_killed_export_is_named(
    out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --to holding the hidden directory of an export that was killed is refused, saying so."""
    (tmp_path / "w" / ".export-abc").mkdir(parents=True)
    assert main(["export", str(out), "--format", "parquet", "--to", str(tmp_path / "w")]) == 2
    assert "left by an export that was killed" in capsys.readouterr().err


def _edit_metadata(copy: Path, job_id: str, **fields: Any) -> None:
    lines = (copy / "metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        if row["id"] == job_id:
            row.update(fields)
    (copy / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("field", ["file_name", "id"])
def test_paths_outside_the_directory_are_refused(out: Path, tmp_path: Path, field: str) -> None:
    """A metadata.jsonl (from a directory received from elsewhere) whose file_name or id leads
    out of the directory is refused, naming the line: no file outside is read into the export,
    and none is written outside --to."""
    copy = copy_of(out, tmp_path)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"a file outside the output directory")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    value = "../secret.mp4" if field == "file_name" else "../../escaped"
    _edit_metadata(copy, "beta", **{field: value, "sha256": digest})
    for fmt in ("webdataset", "parquet"):
        with pytest.raises(ExportError, match=r"metadata.jsonl:2: id .* is not a name inside"):
            export(copy, ExportOptions(format=fmt, to=tmp_path / fmt))
        assert not (tmp_path / fmt).exists()
    assert not list(tmp_path.glob("escaped*"))


def test_metadata_that_disagrees_with_the_report_is_refused(out: Path, tmp_path: Path) -> None:
    """A metadata.jsonl that lacks a finished job of report.json (or names another video) is
    refused, rather than exported as a dataset silently missing that clip."""
    copy = copy_of(out, tmp_path)
    lines = (copy / "metadata.jsonl").read_text().splitlines(keepends=True)
    (copy / "metadata.jsonl").write_text("".join(lines[:2]))
    with pytest.raises(ExportError, match=r"lacks 1 finished job\(s\) of report.json \(gamma"):
        export(copy, ExportOptions(format="parquet", to=tmp_path / "w"))
    _edit_metadata(copy, "alpha", sha256="0" * 64)
    with pytest.raises(ExportError, match=r"metadata.jsonl:1: job 'alpha' is not the finished"):
        export(copy, ExportOptions(format="webdataset", to=tmp_path / "w"))


def test_poster_path_outside_the_directory_is_refused(out: Path, tmp_path: Path) -> None:
    """A report.json whose poster path leads out of the directory is refused, naming it: no
    file outside is read into a shard."""
    copy = copy_of(out, tmp_path)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"\xff\xd8 not from this run")
    data = json.loads((copy / "report.json").read_text())
    data["jobs"][0]["poster"] = {"path": "../outside.jpg", "bytes": outside.stat().st_size,
                                 "sha256": hashlib.sha256(outside.read_bytes()).hexdigest()}
    (copy / "report.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match=r"poster path '../outside.jpg' is not a name inside"):
        export(copy, ExportOptions(format="webdataset", to=tmp_path / "w"))


@pytest.mark.parametrize("failure", [OSError(errno.EACCES, "Permission denied"), KeyboardInterrupt()])
def test_failure_while_moving_into_place_takes_back_what_was_moved(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """The files move into --to one by one, the card and SHA256SUMS last; a rename that fails
    there (or Ctrl-C between two) takes back the ones already moved: --to is left empty, as it
    was, and no hidden directory stays behind."""
    import os

    to = tmp_path / "w"
    to.mkdir()
    moved: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).parent == to:
            if Path(dst).name == "SHA256SUMS":
                raise failure
            moved.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises((ExportError, KeyboardInterrupt)):
        export(out, ExportOptions(format="webdataset", to=to, shard_samples=1, include_failed=False))
    assert moved == ["safety-000000.tar", "safety-000001.tar", "safety-000002.tar", "README.md"]
    assert list(to.iterdir()) == []


def test_directories_batchvid_makes_are_exported(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks refuse no directory batchvid itself makes: a copy that a later run left with
    its old clips skipped and a new job pending (the key refused), or one of an older version
    (report.json records no posters, and a job has no poster.jpg at all)."""
    copy = copy_of(out, tmp_path)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST + "  - id: delta.v2\n    prompt: a bell in a tower\n")
    monkeypatch.setenv("GEEKAI_API_KEY", "sim-arrears")  # the simulator: out of balance
    assert main(["run", str(manifest), "--out", str(copy), *FAST]) == 3
    statuses = {j["id"]: j["status"] for j in json.loads((copy / "report.json").read_text())["jobs"]}
    assert statuses == {"alpha": "skipped", "beta": "skipped", "gamma": "skipped",
                        "delta.v2": "pending"}
    summary = export(copy, ExportOptions(format="webdataset", to=tmp_path / "w",
                                         include_failed=True))
    assert (summary["samples"], summary["failed"]) == (3, 1)
    assert json.loads((tmp_path / "w" / "failed.jsonl").read_text())["status"] == "pending"

    data = json.loads((copy / "report.json").read_text())
    for job in data["jobs"]:
        job.pop("poster", None)
    (copy / "report.json").write_text(json.dumps(data))
    (copy / "jobs" / "beta" / "poster.jpg").unlink()
    for fmt in ("webdataset", "parquet"):
        assert export(copy, ExportOptions(format=fmt, to=tmp_path / f"old-{fmt}"))["samples"] == 3
    with tarfile.open(tmp_path / "old-webdataset" / "safety-000000.tar") as tar:
        names = tar.getnames()
    assert "alpha.jpg" in names and "beta.mp4" in names and "beta.jpg" not in names
