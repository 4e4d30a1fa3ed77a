"""The dataset card of ``batchvid export`` says what the clips are: image-to-video where they
were made from an image, which prompt is which when a chat model rewrote them, a shard or a
partial merge as such, parameters as JSON writes them, and loading code that runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from batchvid.cli import main
from tests.test_dataset import FAST, offline  # noqa: F401 -- the fixture, reused

IMAGES = Path(__file__).resolve().parents[1] / "manifests" / "images"
MIXED = """\
version: 1
name: mixed
defaults:
  model: cogvideox-flash
jobs:
  - id: text
    prompt: a kite over the hills
    with_audio: true
  - id: still
    prompt: the water ripples
    image: photo.png
  - id: remote
    prompt: the leaves move
    image: https://example.com/a.jpg
"""
ENHANCED = """\
version: 1
name: enhanced
defaults:
  model: cogvideox-flash
  enhance: {model: glm-4-flash}
jobs:
  - id: short
    prompt: a fox in the snow
  - id: exact
    prompt: A red fox trots through deep snow at dawn, low tracking shot.
    enhance: false
"""


def run(tmp_path: Path, text: str, *args: str) -> Path:
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "photo.png").write_bytes((IMAGES / "photo.png").read_bytes())
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(out), *FAST, *args]) == 0
    return out


def card(out: Path, to: Path, fmt: str = "webdataset") -> str:
    assert main(["export", str(out), "--format", fmt, "--to", str(to)]) == 0
    return (to / "README.md").read_text(encoding="utf-8")


def test_image_jobs_are_image_to_video(tmp_path: Path) -> None:
    """Clips made from a first-frame image are counted and tagged image-to-video; the image is
    shown by its sha256 or its URL, booleans as JSON writes them."""
    from huggingface_hub import DatasetCard

    text = card(run(tmp_path, MIXED), tmp_path / "w")
    data = DatasetCard(text).data.to_dict()
    assert data["task_categories"] == ["text-to-video", "image-to-video"]
    assert "3 clips (1 text-to-video, 2 image-to-video from a first-frame image)" in text
    assert "`https://example.com/a.jpg` (1)" in text
    assert "| with_audio | `true` (1) |" in text
    assert "{'url'" not in text and "True" not in text


def test_enhanced_prompts_are_explained(tmp_path: Path) -> None:
    """A run whose prompts a chat model rewrote says how many, by which model, and which field
    holds which prompt."""
    text = card(run(tmp_path, ENHANCED), tmp_path / "w", "parquet")
    assert "1 of 2 prompts were rewritten by a chat model" in text
    assert "`glm-4-flash` (1)" in text
    assert "| prompt_original |" in text


def test_shard_and_partial_merge_are_named(tmp_path: Path) -> None:
    """The card of one shard's run, or of a partial merge, says that other jobs are missing."""
    out = run(tmp_path, MIXED, "--shard", "1/2")
    assert "This run is shard 1/2 of the manifest" in card(out, tmp_path / "w1")
    merged = tmp_path / "merged"
    assert main(["merge", str(out), "--into", str(merged), "--partial"]) == 0
    assert "shard 2/2 is missing, and its jobs are not in this dataset" in card(
        merged, tmp_path / "w2")


# WebDataset() leaves its shard open after the loop (the library's; tests/test_export.py reads
# shards with its tar iterator for that reason): here the card's own code must run as written.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_loading_code_of_the_card_runs(offline: Any, tmp_path: Path,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's Python block runs as written in the export directory (webdataset and
    datasets, offline) and reads every clip, without torchcodec."""
    out = run(tmp_path, MIXED)
    to = tmp_path / "w"
    text = card(out, to)
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert block is not None
    code = block.group(1)
    monkeypatch.chdir(to)
    scope: dict[str, Any] = {}
    exec(compile(code + "rows = [ds[i] for i in range(len(ds))]\n", "card", "exec"), scope)
    assert scope["prompt"] in {"a kite over the hills", "the water ripples", "the leaves move"}
    assert len(scope["rows"]) == 3
    assert all(row["mp4"]["path"].endswith(".mp4") for row in scope["rows"])


def test_card_of_failed_rows_names_their_statuses(tmp_path: Path) -> None:
    """With --include-failed, the Parquet card says the rows without a video are those whose
    status is failed or pending: a clip made by an earlier run is 'skipped', and filtering on
    'not succeeded' would drop it."""
    (tmp_path / "m.yaml").write_text(MIXED.replace("the leaves move", "the leaves [fail]"))
    (tmp_path / "photo.png").write_bytes((IMAGES / "photo.png").read_bytes())
    out = tmp_path / "out"
    for _ in range(2):  # the second run finds the clips done: their status is skipped
        assert main(["run", str(tmp_path / "m.yaml"), "--out", str(out), *FAST]) == 1
    to = tmp_path / "w"
    assert main(["export", str(out), "--format", "parquet", "--to", str(to),
                 "--include-failed"]) == 0
    text = (to / "README.md").read_text()
    assert "rows whose `status` is `failed` or `pending`" in text
    assert "other than succeeded" not in text
