"""Reruns with the manifest edited in ways a job's digest might miss, or run on a subset
(a matrix's values typed or renamed or reordered, its axes reordered, defaults, a job removed,
added or moved, the name, --only, --shard; sweeps declared by a matrix and recovered from ids):
with the record of pieces, every report file has the bytes of the same rerun without it, twice
in a row (the second from the first's record)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batchvid.reportpieces import PIECES_NAME
from tests.test_reportfiles import FILES
from tests.test_reportpieces_generated import _copy, _run_cli, _warned_and_detailed  # noqa: F401

BASE = """version: 1
name: moved
defaults: {model: cogvideox-flash}
jobs:
  - id: clip
    prompt: "a clip ${n}"
    matrix: {n: [1, 2, 3]}
  - id: grid
    prompt: "a ${animal} at ${time}"
    matrix: {animal: [fox, owl], time: [dawn, dusk]}
  - id: animate
    prompt: the colours swirl
  - id: pair-a
    prompt: "pair red"
  - id: pair-b
    prompt: "pair blue"
"""

PLAIN = """version: 1
name: plain
defaults: {model: cogvideox-flash}
jobs:
  - id: fox-dawn
    prompt: a fox at dawn
  - id: fox-dusk
    prompt: a fox at dusk
  - id: fox-noon
    prompt: a fox at noon
  - id: owl
    prompt: an owl
"""

VARIANTS = {
    "same": (BASE, ()),
    "labels typed": (BASE.replace("[1, 2, 3]", '["1", "2", "3"]'), ()),
    "matrix renamed": (BASE.replace("${n}", "${k}").replace("{n:", "{k:"), ()),
    "axes reordered": (BASE.replace("{animal: [fox, owl], time: [dawn, dusk]}", "{time: [dawn, dusk], animal: [fox, owl]}"), ()),
    "values reordered": (BASE.replace("[fox, owl]", "[owl, fox]"), ()),
    "defaults": (BASE.replace("defaults: {model: cogvideox-flash}", "defaults: {model: cogvideox-flash, fps: 60}"), ()),
    "job removed": (BASE.replace('  - id: animate\n    prompt: the colours swirl\n', ""), ()),
    "job added": (BASE + '  - id: pair-c\n    prompt: "pair green"\n', ()),
    "jobs swapped": (BASE.replace('  - id: pair-a\n    prompt: "pair red"\n  - id: pair-b\n    prompt: "pair blue"\n',
                                  '  - id: pair-b\n    prompt: "pair blue"\n  - id: pair-a\n    prompt: "pair red"\n'), ()),
    "name": (BASE.replace("name: moved", "name: other"), ()),
    "only": (BASE, ("--only", "clip-*")),
    "only grid": (BASE, ("--only", "grid-*", "--only", "pair-*")),
    "shard": (BASE, ("--shard", "1/2")),
    "shard2": (BASE, ("--shard", "2/2")),
    "h same": (PLAIN, ()),
    "h prompt": (PLAIN.replace("a fox at dawn", "a cat at dawn"), ()),
    "h removed": (PLAIN.replace('  - id: fox-dusk\n    prompt: a fox at dusk\n', ""), ()),
    "h fps": (PLAIN.replace("prompt: a fox at dusk", "prompt: a fox at dusk\n    fps: 60"), ()),
    "h only": (PLAIN, ("--only", "fox-*")),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_rerun_with_the_record_writes_the_bytes_of_one_without(tmp_path: Path, variant: str) -> None:
    """Three runs of the first manifest (its page's sweeps placed in the record), then two
    reruns of ``variant`` in a row, each against a twin whose record was removed: the same
    bytes in every file, and the page's sweeps found (not empty) where the variant keeps them."""
    m = tmp_path / "a" / "m.yaml"
    m.parent.mkdir()
    m.write_text(PLAIN if variant.startswith("h ") else BASE)
    out = tmp_path / "out"
    for _ in range(3):
        _run_cli(m, out)
    head = json.loads((out / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")[0])
    assert head["sweeps_at"] is not None
    text, args = VARIANTS[variant]
    m2 = tmp_path / "b" / "m.yaml"
    m2.parent.mkdir()
    m2.write_text(text)
    for chain in range(2):
        w, wo = _copy(out, tmp_path / f"w{chain}"), _copy(out, tmp_path / f"wo{chain}")
        (wo / ".batchvid" / PIECES_NAME).unlink()
        _run_cli(m2, wo, *args)
        _run_cli(m2, w, *args)
        page = (w / "report.html").read_text()
        assert variant in ('h prompt', 'h fps') or '"sweeps":[]' not in page, variant
        for f in FILES:
            assert (w / f).read_bytes() == (wo / f).read_bytes(), (chain, f)
        shutil.rmtree(out)
        out = w
