"""``batchvid export``: WebDataset shards and Parquet from a simulated run, with a dataset card.

Readers are the real ones: the ``webdataset`` library, pyarrow, ``datasets`` (offline, caches in
the test's directory) and ``huggingface_hub.DatasetCard``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchvid.cli import main
from batchvid.errors import UsageError
from batchvid.export import ExportError, ExportOptions, export, parse_shard_size
from batchvid.export.card import size_category
from batchvid.export.webdataset import header
from tests.test_dataset import FAST, offline  # noqa: F401 -- the fixture, reused

MANIFEST = """\
version: 1
name: export-test
defaults:
  model: cogvideox-flash
jobs:
  - id: rabbit
    prompt: 彼得兔开小汽车，游走在马路上
  - id: cat.v2
    prompt: a cat plays the piano
  - id: lighthouse
    prompt: a lighthouse in a storm
    fps: 60
  - id: boat
    prompt: a paper boat on a river
  - id: doomed
    prompt: a storm that will [fail]
"""
DONE = ["boat", "cat.v2", "lighthouse", "rabbit"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulated run: four videos and one failed job (do not modify)."""
    base = tmp_path_factory.mktemp("run")
    (base / "m.yaml").write_text(MANIFEST, encoding="utf-8")
    assert main(["run", str(base / "m.yaml"), "--out", str(base / "out"), *FAST]) == 1
    return base / "out"


@pytest.fixture(scope="module")
def report(out: Path) -> dict[str, Any]:
    return {j["id"]: j for j in json.loads((out / "report.json").read_text())["jobs"]}


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_samples(paths: list[Path]) -> list[dict[str, Any]]:
    """The samples of ``paths`` as the webdataset library groups them (its own tar iterator and
    key rules; WebDataset() itself leaves the shard files open, which this suite treats as an
    error)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    samples: list[dict[str, Any]] = []
    for path in paths:
        with open(path, "rb") as fh:
            samples += group_by_keys(tar_file_expander([{"url": str(path), "stream": fh}]))
    return samples


def run_export(out: Path, to: Path, *args: str) -> Path:
    assert main(["export", str(out), "--to", str(to), *args]) == 0
    return to


@pytest.fixture(scope="module")
def shards(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WebDataset export in shards of 3 samples, with failed jobs listed."""
    to = tmp_path_factory.mktemp("wds") / "export"
    return run_export(out, to, "--format", "webdataset", "--shard-size", "3", "--include-failed")


@pytest.fixture(scope="module")
def parquet(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_export(out, tmp_path_factory.mktemp("pq") / "export", "--format", "parquet")


def test_webdataset_library_reads_every_sample(shards: Path, report: dict[str, Any]) -> None:
    """webdataset iterates one sample per finished job: mp4 hash, json row and txt prompt match."""
    samples = read_samples(sorted(shards.glob("export-test-*.tar")))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == DONE
    for sample in samples:
        row = json.loads(sample["json"])
        job = report[row["id"]]
        assert hashlib.sha256(sample["mp4"]).hexdigest() == job["video"]["sha256"]
        assert sample["txt"].decode() == job["parameters"]["prompt"] == row["prompt"]
        assert row["quality"] == job["media"]["quality"]


def test_shards_hold_at_most_shard_size_samples(shards: Path) -> None:
    """--shard-size 3 splits four samples into shards of 3 and 1, named from the manifest."""
    names = sorted(p.name for p in shards.glob("*.tar"))
    assert names == ["export-test-000000.tar", "export-test-000001.tar"]
    with tarfile.open(shards / names[0]) as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:4] == ["boat.jpg", "boat.json", "boat.mp4", "boat.txt"]
    assert len(members) == 12  # three samples of four members: poster, row, video, prompt
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)
    }


def test_dotted_job_id_becomes_a_key_without_dots(shards: Path) -> None:
    """A WebDataset key stops at the first dot, so ``cat.v2`` is stored as ``cat%2ev2``."""
    with tarfile.open(shards / "export-test-000000.tar") as tar:
        assert "cat%2ev2.mp4" in tar.getnames()


def test_two_exports_are_byte_identical(out: Path, shards: Path, tmp_path: Path) -> None:
    """Exporting the same directory again gives the same bytes in every file."""
    again = run_export(out, tmp_path / "again", "--format", "webdataset", "--shard-size", "3",
                       "--include-failed")
    assert tree_hash(again) == tree_hash(shards)


def test_sha256sums_lists_every_file(shards: Path) -> None:
    """SHA256SUMS holds the right sha256 of every other file in the export."""
    listed = dict(reversed(line.split("  ")) for line in
                  (shards / "SHA256SUMS").read_text().splitlines())
    files = tree_hash(shards)
    del files["SHA256SUMS"]
    assert listed == files


def test_failed_jobs_listed_for_audit_without_media(shards: Path) -> None:
    """--include-failed writes failed.jsonl with the failed job, its error and no media."""
    rows = [json.loads(line) for line in (shards / "failed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"], r["error"]["kind"]) for r in rows] == [
        ("doomed", "failed", "task_failed")]
    assert "file_name" not in rows[0] and "sha256" not in rows[0]


def test_export_never_modifies_the_output_directory(out: Path, tmp_path: Path) -> None:
    """Every format leaves the output directory's files byte for byte as they were."""
    before = tree_hash(out)
    run_export(out, tmp_path / "w", "--format", "webdataset")
    run_export(out, tmp_path / "p", "--format", "parquet", "--include-failed")
    run_export(out, tmp_path / "e", "--format", "parquet", "--embed-video")
    assert tree_hash(out) == before


def test_parquet_has_every_metadata_field_typed(parquet: Path, out: Path) -> None:
    """metadata.parquet has one row per video with every metadata.jsonl field, typed."""
    table = pq.read_table(parquet / "metadata.parquet")
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert table.num_rows == len(rows) == 4
    assert set(rows[0]) | {"quality"} == set(table.column_names)
    assert str(table.schema.field("quality").type).startswith("struct<black_fraction: double")
    assert str(table.schema.field("parameters").type).startswith("struct<")
    assert str(table.schema.field("width").type) == "int64"


def test_parquet_file_name_points_at_a_copy(parquet: Path, report: dict[str, Any]) -> None:
    """Each file_name is relative to the export and names a copy with the recorded sha256."""
    for row in pq.read_table(parquet / "metadata.parquet").to_pylist():
        assert row["file_name"] == f"videos/{row['id']}.mp4"
        data = (parquet / row["file_name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == report[row["id"]]["video"]["sha256"]


def test_embed_video_stores_bytes_in_a_column(out: Path, tmp_path: Path,
                                              report: dict[str, Any]) -> None:
    """--embed-video puts each video's bytes in a binary ``video`` column; no videos/ folder."""
    to = run_export(out, tmp_path / "e", "--format", "parquet", "--embed-video")
    table = pq.read_table(to / "metadata.parquet")
    assert "file_name" not in table.column_names and not (to / "videos").exists()
    for row in table.to_pylist():
        assert hashlib.sha256(row["video"]).hexdigest() == report[row["id"]]["video"]["sha256"]


def test_parquet_include_failed_adds_rows_without_media(out: Path, tmp_path: Path) -> None:
    """--include-failed adds the failed job as a row with status, error and no file."""
    to = run_export(out, tmp_path / "f", "--format", "parquet", "--include-failed")
    rows = {r["id"]: r for r in pq.read_table(to / "metadata.parquet").to_pylist()}
    assert len(rows) == 5
    assert rows["doomed"]["status"] == "failed" and rows["doomed"]["file_name"] is None
    assert rows["doomed"]["error"]["kind"] == "task_failed"
    assert rows["rabbit"]["status"] == "succeeded" and rows["rabbit"]["error"] is None


def test_datasets_loads_both_formats_offline(offline: Any, parquet: Path, shards: Path,  # noqa: F811
                                             tmp_path: Path) -> None:
    """datasets.load_dataset reads the Parquet and WebDataset exports with every row."""
    table = offline.load_dataset("parquet", data_files=str(parquet / "metadata.parquet"),
                                 split="train", cache_dir=str(tmp_path / "c1"))
    assert table.num_rows == 4
    assert {"file_name", "id", "prompt", "parameters", "quality", "sha256"} <= set(table.column_names)
    tars = sorted(str(p) for p in shards.glob("*.tar"))
    wds = offline.load_dataset("webdataset", data_files={"train": tars}, split="train",
                               cache_dir=str(tmp_path / "c2"))
    assert wds.num_rows == 4
    assert {"__key__", "mp4", "json", "txt"} <= set(wds.column_names)


def test_card_configs_load_the_export_as_a_dataset(offline: Any, parquet: Path,  # noqa: F811
                                                  shards: Path, tmp_path: Path) -> None:
    """load_dataset(export directory) follows the card's configs: Parquet as a videofolder
    with a video column, shards as WebDataset samples."""
    folder = offline.load_dataset(str(parquet), split="train", cache_dir=str(tmp_path / "c1"))
    assert folder.num_rows == 4 and isinstance(folder.features["video"], offline.Video)
    samples = offline.load_dataset(str(shards), split="train", cache_dir=str(tmp_path / "c2"))
    assert sorted(row["id"] for row in samples["json"]) == DONE


def test_card_parses_as_a_hub_dataset_card(shards: Path, out: Path, tmp_path: Path) -> None:
    """README.md's front matter loads with huggingface_hub.DatasetCard, with configs and tags."""
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(shards / "README.md")
    data = card.data.to_dict()
    assert data["task_categories"] == ["text-to-video"]
    assert data["size_categories"] == ["n<1K"]
    assert data["configs"][0]["data_files"][0]["path"] == [
        "export-test-000000.tar", "export-test-000001.tar"]
    assert "license" not in data
    assert "| 5 | 4 | 1 | 0 |" in card.text
    licensed = run_export(out, tmp_path / "l", "--format", "parquet", "--license", "cc-by-4.0")
    assert DatasetCard.load(licensed / "README.md").data.license == "cc-by-4.0"


def test_card_states_provenance_and_hashes(shards: Path) -> None:
    """The card names manifest, provider and version, and lists each shard's sha256."""
    text = (shards / "README.md").read_text()
    assert "manifest `export-test`" in text and "`geekai`" in text and "batchvid 0." in text
    for line in (shards / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        if name.endswith(".tar"):
            assert f"| {name} | `{digest}` |" in text


def test_poster_joins_its_sample(out: Path, tmp_path: Path) -> None:
    """A jobs/<id>/poster.jpg in the output directory becomes the sample's .jpg member; a job
    without one has none (a directory from before posters: report.json records none; a
    recorded poster is checked, tests/test_export_safety.py)."""
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    data = json.loads((copy / "report.json").read_text())
    for job in data["jobs"]:
        job.pop("poster", None)
    (copy / "report.json").write_text(json.dumps(data))
    (copy / "jobs" / "boat" / "poster.jpg").write_bytes(b"\xff\xd8poster")
    (copy / "jobs" / "rabbit" / "poster.jpg").unlink()
    to = run_export(copy, tmp_path / "w", "--format", "webdataset")
    samples = {s["__key__"]: s for s in read_samples(sorted(to.glob("*.tar")))}
    assert samples["boat"]["jpg"] == b"\xff\xd8poster"
    assert "jpg" not in samples["rabbit"]


@pytest.mark.parametrize(
    ("name", "size"),
    [("a.mp4", 0), ("cat%2ev2.json", 641), ("x" * 96 + ".txt", 8**11 - 1), ("y" * 120 + ".mp4", 5),
     ("big.mp4", 8**11), ("é.txt", 3)],
)
def test_header_is_what_tarfile_writes(name: str, size: int) -> None:
    """A member header is byte for byte tarfile's pax header with the fixed fields."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    assert header(name, size) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_shard_is_what_tarfile_writes(shards: Path) -> None:
    """A shard equals the archive tarfile writes from its members (same headers, padding, end)."""
    shard = shards / "export-test-000001.tar"
    copy = io.BytesIO()
    with tarfile.open(shard) as source, tarfile.open(fileobj=copy, mode="w",
                                                     format=tarfile.PAX_FORMAT) as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member))
    assert copy.getvalue() == shard.read_bytes()


def test_changed_video_fails_the_export(out: Path, tmp_path: Path) -> None:
    """A video whose bytes no longer match the report stops the export, naming the file."""
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "jobs" / "rabbit" / "video.mp4").write_bytes(b"not the video")
    with pytest.raises(ExportError, match=r"rabbit/video.mp4: sha256 differs"):
        export(copy, ExportOptions(format="webdataset", to=tmp_path / "w"))
    assert not list((tmp_path / "w").glob("*.tar"))


def test_export_refuses_a_used_or_inner_target(out: Path, tmp_path: Path) -> None:
    """--to must be new or empty, and never inside the output directory."""
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(UsageError, match="not an empty directory"):
        export(out, ExportOptions(format="parquet", to=tmp_path / "used"))
    with pytest.raises(UsageError, match="never writes into the output directory"):
        export(out, ExportOptions(format="parquet", to=out / "dataset"))


def test_embed_video_only_with_parquet(out: Path, tmp_path: Path) -> None:
    """--embed-video with --format webdataset is a usage error (exit 2), and nothing is written."""
    assert main(["export", str(out), "--format", "webdataset", "--embed-video",
                 "--to", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_export_of_a_directory_without_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory that is not a finished run is refused with exit 2, as status and verify do."""
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--format", "parquet",
                 "--to", str(tmp_path / "x")]) == 2
    assert "report.json not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_of_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A directory that does not exist is refused with exit 2, naming it."""
    assert main(["export", str(tmp_path / "nowhere"), "--format", "webdataset",
                 "--to", str(tmp_path / "x")]) == 2
    assert "nowhere: no such output directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parquet_without_pyarrow_names_the_extra(
    out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow, --format parquet says to install batchvid[dataset]."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ExportError, match=r"pip install 'batchvid\[dataset\]'"):
        export(out, ExportOptions(format="parquet", to=tmp_path / "p"))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1000", (1000, None)), ("500MB", (None, 500_000_000)), ("1GiB", (None, 1 << 30)),
     ("64k", (None, 64_000)), ("2.5GB", (None, 2_500_000_000))],
)
def test_parse_shard_size(text: str, parsed: tuple[int | None, int | None]) -> None:
    """--shard-size reads a count of samples or a size with a unit."""
    assert parse_shard_size(text) == parsed


@pytest.mark.parametrize("text", ["0", "lots", "5 parsecs"])
def test_parse_shard_size_refuses_nonsense(text: str) -> None:
    """A zero, a word or an unknown unit is a usage error naming --shard-size."""
    with pytest.raises(UsageError, match="--shard-size"):
        parse_shard_size(text)


def test_shard_size_in_bytes_closes_shards(out: Path, tmp_path: Path) -> None:
    """A byte size smaller than one sample gives one shard per sample."""
    to = run_export(out, tmp_path / "b", "--format", "webdataset", "--shard-size", "1k")
    assert len(list(to.glob("*.tar"))) == 4


@pytest.mark.parametrize(("count", "label"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"),
                                              (250_000, "100K<n<1M")])
def test_size_category(count: int, label: str) -> None:
    """Row counts map onto the Hub's size_categories labels."""
    assert size_category(count) == label


def test_run_without_videos_exports_a_card_only(tmp_path: Path) -> None:
    """A run whose every job failed exports no shard, and its card says there is nothing."""
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: none\njobs:\n  - id: doomed\n    prompt: this will [fail]\n")
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), *FAST]) == 1
    to = run_export(tmp_path / "out", tmp_path / "w", "--format", "webdataset")
    assert sorted(p.name for p in to.iterdir()) == ["README.md", "SHA256SUMS"]
    assert "Nothing to load" in (to / "README.md").read_text()


def test_card_license_comes_from_the_report(out: Path, tmp_path: Path) -> None:
    """Without --license, the card takes the license report.json records from the manifest."""
    from huggingface_hub import DatasetCard

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    report = json.loads((copy / "report.json").read_text())
    report["manifest"]["license"] = "apache-2.0"
    (copy / "report.json").write_text(json.dumps(report))
    to = run_export(copy, tmp_path / "w", "--format", "webdataset")
    assert DatasetCard.load(to / "README.md").data.license == "apache-2.0"
