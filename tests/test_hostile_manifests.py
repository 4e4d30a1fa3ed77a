"""Hostile manifests that cannot live in tests/invalid_manifests/ (huge, FIFOs, symlinks).

The files in ``invalid_manifests/`` are checked by ``test_manifest.py``; these cases are built in
``tmp_path``. Each must fail with a located, readable error, quickly, and never hang or read
what it should not.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchvid.errors import ManifestErrors
from batchvid.manifest import load_manifest

INVALID_DIR = Path(__file__).resolve().parent / "invalid_manifests"


def errors(path: Path) -> list[tuple[int, int, str]]:
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(path)
    return [(e.location.line, e.location.column, e.message) for e in caught.value.errors]


def test_a_50_mb_manifest_is_refused_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50 MB manifest fails at 1:1 with its size and the limit, and is never read."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.write(b"version: 1\njobs:\n")
        fh.truncate(50 * 1024 * 1024)  # sparse: no 50 MB written to disk

    def refuse(self: Path) -> bytes:
        raise AssertionError(f"{self} was read")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    ((line, column, message),) = errors(path)
    assert (line, column) == (1, 1)
    assert "the manifest is 52,428,800 bytes; the limit is 10,485,760 bytes" in message


def test_an_image_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """A named pipe posing as an image is refused at its value (reading it would block forever)."""
    os.mkfifo(tmp_path / "photo.png")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\njobs:\n  - id: a\n    prompt: hi\n    image: photo.png\n")
    assert errors(path) == [(5, 12, "image 'photo.png' is not a file")]


def test_a_prompts_file_symlinked_out_of_the_directory(tmp_path: Path) -> None:
    """A prompts file that is a symlink to a file outside the manifest's directory is refused."""
    (tmp_path / "secret.txt").write_text("a prompt from outside\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "prompts.txt").symlink_to(tmp_path / "secret.txt")
    path = inner / "m.yaml"
    path.write_text("version: 1\njobs:\n  - id: r\n    prompts_file: prompts.txt\n")
    ((line, column, message),) = errors(path)
    assert (line, column) == (4, 19)
    assert "outside the manifest's directory" in message


def test_an_image_symlinked_to_a_device(tmp_path: Path) -> None:
    """An image that is a symlink to /dev/zero is refused, never read."""
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\njobs:\n  - id: a\n    prompt: hi\n    image: zero.png\n")
    ((line, column, message),) = errors(path)
    assert (line, column) == (5, 12)
    assert "outside the manifest's directory" in message


def hostile_manifest_count() -> int:
    """How many hostile manifests the suite tries: the invalid_manifests files, the cases here
    and the generated ones in test_manifest.py (over 10 MB, image over 5 MB, symlinked image)."""
    here = sum(1 for name in globals() if name.startswith("test_"))
    return len(list(INVALID_DIR.glob("*.yaml"))) + here + 3
