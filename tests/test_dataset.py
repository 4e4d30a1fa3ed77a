"""An output directory loads unchanged as a Hugging Face ``videofolder`` dataset.

``datasets`` is a test-only dependency (the ``test`` extra). Videos are not decoded: that needs
torchcodec, and the point here is that ``metadata.jsonl`` and the folder layout load as they
are, with prompt, parameters and hashes on every row. Everything runs offline with its caches
inside the test's temporary directory.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchvid.cli import main
from batchvid.manifest import load_manifest

ROOT = Path(__file__).parent.parent
FAST = ["--simulate", "--no-progress", "--sim-latency", "0.05", "--poll-interval", "0.01:0.05",
        "--rpm", "6000", "--max-in-flight", "8"]
# plain text jobs; local PNG/JPEG and URL images; rows from .txt, .jsonl and .csv files
MANIFESTS = ["quickstart", "image-to-video", "prompts-file"]


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The ``datasets`` module with its caches in a temporary directory and no network."""
    home = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"HF_HOME": home, "HF_DATASETS_CACHE": home / "datasets",
                            "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}.items():
            mp.setenv(name, str(value))

        def no_network(*args: object, **kwargs: object) -> None:
            raise OSError("the dataset test must not use the network")

        mp.setattr(socket.socket, "connect", no_network)
        # datasets reads the variables above when first imported; if an earlier test imported
        # it, its settings are fixed already, so point them here as well.
        import datasets  # type: ignore[import-untyped]

        mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
        mp.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield datasets


@dataclass(frozen=True)
class Output:
    out: Path
    manifest: Path

    def jobs(self) -> dict[str, Any]:
        return {job.id: job for job in load_manifest(self.manifest).jobs}


@pytest.fixture(scope="module", params=MANIFESTS)
def output(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Output:
    """A finished simulated run of one shipped manifest (copied with its images and prompts)."""
    base = tmp_path_factory.mktemp(request.param)
    shutil.copytree(ROOT / "manifests", base / "manifests")
    manifest = base / "manifests" / f"{request.param}.yaml"
    assert main(["run", str(manifest), "--out", str(base / "out"), *FAST]) == 0
    return Output(base / "out", manifest)


@pytest.fixture(scope="module")
def rows(offline: Any, output: Output) -> list[dict[str, Any]]:
    """The ``train`` split of the output directory, loaded as a videofolder, videos undecoded."""
    metadata = output.out / "metadata.jsonl"
    before = metadata.read_bytes()
    ds = offline.load_dataset("videofolder", data_dir=str(output.out), split="train",
                              cache_dir=str(output.out.parent / "cache"))
    ds = ds.cast_column("video", offline.Video(decode=False))
    assert metadata.read_bytes() == before
    return list(ds)


def test_every_video_is_one_row_in_manifest_order(
    rows: list[dict[str, Any]], output: Output
) -> None:
    """The dataset has one row per finished job, in the order of the manifest."""
    assert [r["id"] for r in rows] == list(output.jobs())


def test_each_row_points_at_its_video_with_its_hash(rows: list[dict[str, Any]]) -> None:
    """The ``video`` column is the file named in metadata.jsonl and ``sha256`` is its hash."""
    for row in rows:
        path = Path(row["video"]["path"])
        assert path.parts[-3:] == ("jobs", row["id"], "video.mp4")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]


def test_prompt_and_parameters_travel_with_each_row(
    rows: list[dict[str, Any]], output: Output
) -> None:
    """Each row carries the job's prompt, its key and every parameter that was sent."""
    jobs = output.jobs()
    for row in rows:
        job = jobs[row["id"]]
        params = job.canonical_params()
        assert row["key"] == job.key
        assert row["prompt"] == params.get("prompt")
        # a struct column holds the union of every row's keys; the others are None
        assert _without_nulls(row["parameters"]) == _without_nulls(params)


def test_media_columns_describe_the_video(rows: list[dict[str, Any]]) -> None:
    """width, height, fps and duration are numbers probed from each video."""
    for row in rows:
        assert row["width"] > 0 and row["height"] > 0
        assert row["fps"] in (30.0, 60.0)
        assert row["duration"] > 0


def _without_nulls(value: Any) -> Any:
    """``value`` without the None members a struct column adds, at any depth."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
