"""report.json records `--shard I/N`; `merge` refuses an incomplete, repeated or mixed set of
shards unless `--partial`, and then says which shards are in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from batchvid.cli import main

ROOT = Path(__file__).parent.parent
FAST = ["--simulate", "--no-progress", "--sim-latency", "0.02", "--poll-interval", "0.01:0.02",
        "--rpm", "6000", "--max-in-flight", "8"]
MANIFEST = """\
version: 1
name: shards
defaults: {model: cogvideox-flash}
jobs:
  - id: clip
    prompt: "clip ${n}"
    matrix:
      n: [1, 2, 3, 4, 5, 6]
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Output directories of shards 1/3, 2/3, 3/3 and 1/2 of one manifest; do not modify."""
    base = tmp_path_factory.mktemp("shards")
    manifest = base / "m.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    dirs = {}
    for shard in ("1/3", "2/3", "3/3", "1/2"):
        out = base / shard.replace("/", "-of-")
        assert main(["run", str(manifest), "--out", str(out), "--shard", shard, *FAST]) == 0
        dirs[shard] = out
    return dirs


def test_a_sharded_report_records_its_shard(shards: dict[str, Path]) -> None:
    """report.json of `--shard 2/3` has shard {index: 2, count: 3} and matches the schema."""
    report = json.loads((shards["2/3"] / "report.json").read_text())
    assert report["shard"] == {"index": 2, "count": 3}
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(report)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["1/3", "2/3"], "shard 3/3 missing (given 1/3, 2/3): add its directory, or pass --partial"),
        (["1/3", "1/2"], "is shard 1/2 but"),
    ],
)
def test_merge_refuses_an_incomplete_or_mixed_set(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    given: list[str], message: str,
) -> None:
    """A missing or mismatched shard: exit 2 naming it, and no merged directory."""
    into = tmp_path / "merged"
    assert main(["merge", *(str(shards[s]) for s in given), "--into", str(into)]) == 2
    assert message in capsys.readouterr().err
    assert not into.exists()


def test_merge_refuses_a_repeated_shard(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two directories that are both shard 1/3: exit 2 naming both."""
    copy = shutil.copytree(shards["1/3"], tmp_path / "copy")
    into = tmp_path / "merged"
    args = [str(shards["1/3"]), str(copy), str(shards["2/3"]), str(shards["3/3"])]
    assert main(["merge", *args, "--into", str(into)]) == 2
    assert f"{shards['1/3']} and {copy} are both shard 1/3" in capsys.readouterr().err


def test_partial_merge_says_which_shards_are_in(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--partial merges a subset; report.json, report.md and the command say what is missing."""
    into = tmp_path / "merged"
    assert main(["merge", str(shards["1/3"]), str(shards["3/3"]), "--into", str(into), "--partial"]) == 0
    assert "partial: shard 2/3 not merged" in capsys.readouterr().out
    report = json.loads((into / "report.json").read_text())
    assert report["shards"] == {"count": 3, "merged": [1, 3], "missing": [2]}
    assert "shard" not in report
    assert "> Partial merge: shards 1/3, 3/3 are in; 2/3 missing." in (into / "report.md").read_text()


def test_complete_merge_has_no_shard_field(shards: dict[str, Path], tmp_path: Path) -> None:
    """The merge of every shard reads like one unsharded run: neither shard nor shards."""
    into = tmp_path / "merged"
    assert main(["merge", *(str(shards[s]) for s in ("3/3", "1/3", "2/3")), "--into", str(into)]) == 0
    report = json.loads((into / "report.json").read_text())
    assert "shard" not in report and "shards" not in report
    assert report["summary"]["succeeded"] == 6


def test_a_complete_merge_exports_every_clip(shards: dict[str, Path], tmp_path: Path) -> None:
    """The merged directory passes the export's checks (metadata.jsonl against report.json,
    recorded posters) in both formats: all six clips, each with its poster in the shards."""
    import tarfile

    from batchvid.export import ExportOptions, export

    into = tmp_path / "merged"
    assert main(["merge", *(str(shards[s]) for s in ("1/3", "2/3", "3/3")), "--into", str(into)]) == 0
    assert export(into, ExportOptions(format="parquet", to=tmp_path / "pq"))["samples"] == 6
    assert export(into, ExportOptions(format="webdataset", to=tmp_path / "wds"))["samples"] == 6
    with tarfile.open(tmp_path / "wds" / "shards-000000.tar") as tar:
        assert sum(name.endswith(".jpg") for name in tar.getnames()) == 6


def _third_shard_with(shards: dict[str, Path], tmp_path: Path, **manifest: str) -> Path:
    """A copy of shard 3/3 whose report.json says these ``manifest`` fields instead."""
    copy = tmp_path / "3-of-3"
    shutil.copytree(shards["3/3"], copy)
    report = json.loads((copy / "report.json").read_text())
    report["manifest"].update(manifest)
    (copy / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return copy


def test_merge_takes_shards_given_the_manifest_by_other_paths(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    """Shards of one manifest given to each run by another path (`m.yaml`, `./m.yaml`, another
    runner's absolute path) merge: only report.json's manifest path differs."""
    moved = _third_shard_with(shards, tmp_path, path="/elsewhere/checkout/m.yaml")
    into = tmp_path / "merged"
    assert main(["merge", str(shards["1/3"]), str(shards["2/3"]), str(moved), "--into", str(into)]) == 0
    assert main(["verify", str(into)]) == 0


def test_merge_of_two_manifests_names_them(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shards of two manifests are refused with exit 2, naming each side's manifest and shard
    directory in words, not as a Python dict."""
    other = _third_shard_with(shards, tmp_path, name="another")
    into = tmp_path / "merged"
    assert main(["merge", str(shards["1/3"]), str(shards["2/3"]), str(other), "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert (f"{other} was written for manifest 'another' (provider geekai) but {shards['1/3']} "
            "for manifest 'shards' (provider geekai): merge only shards of one manifest") in err
    assert not into.exists()


def test_merge_refuses_a_shard_a_run_is_writing(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard directory whose run still holds its lock is refused (exit 2, naming it and the
    pid), and nothing is merged: its report is the previous run's and its files are changing."""
    import os

    from batchvid.store import OutputDir

    busy = tmp_path / "3-of-3"
    shutil.copytree(shards["3/3"], busy)
    into = tmp_path / "merged"
    with OutputDir(busy) as writing:
        writing.open()
        code = main(["merge", str(shards["1/3"]), str(shards["2/3"]), str(busy), "--into", str(into)])
    assert code == 2
    assert f"{busy} is being written by a batchvid run (pid {os.getpid()})" in capsys.readouterr().err
    assert not into.exists()


def test_a_merged_directory_ends_cleanly_so_clean_takes_it(shards: dict[str, Path], tmp_path: Path) -> None:
    """merge leaves the merged directory's lock file empty, as a run that ended cleanly does,
    so `clean` (which refuses a directory whose last writer left its pid) works on it."""
    into = tmp_path / "merged"
    assert main(["merge", *(str(shards[s]) for s in ("1/3", "2/3", "3/3")), "--into", str(into)]) == 0
    assert (into / ".batchvid" / "lock").read_text() == ""
    assert main(["clean", str(into)]) == 0


def test_card_of_a_partial_merge_names_every_missing_shard(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    """The export card of a merge that lacks two shards names both, in the plural."""
    from batchvid.export import ExportOptions, export

    into = tmp_path / "merged"
    assert main(["merge", str(shards["1/3"]), "--into", str(into), "--partial"]) == 0
    export(into, ExportOptions(format="parquet", to=tmp_path / "pq"))
    card = (tmp_path / "pq" / "README.md").read_text(encoding="utf-8")
    assert "shards 2/3, 3/3 are missing, and their jobs are not in this dataset" in card


def test_a_shard_whose_run_was_killed_is_no_running_writer(
    shards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shard whose lock file still holds the pid of a killed run (no process holds the lock)
    is merged, and status names no run writing it: only a held lock is a live run."""
    killed = tmp_path / "3-of-3"
    shutil.copytree(shards["3/3"], killed)
    (killed / ".batchvid" / "lock").write_text("999999\n")
    assert main(["status", str(killed)]) == 0
    assert "is writing" not in capsys.readouterr().err
    into = tmp_path / "merged"
    assert main(["merge", str(shards["1/3"]), str(shards["2/3"]), str(killed), "--into", str(into)]) == 0
