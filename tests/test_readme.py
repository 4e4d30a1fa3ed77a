"""The README's examples run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_python_api_example_runs_and_generates_the_quickstart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Python API section's code runs from a checkout and produces five verified videos."""
    blocks = re.findall(r"```python\n(.*?)```", _section("Python API"), flags=re.S)
    assert len(blocks) == 1
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md:Python API", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'submit': 5}"
    assert printed[1].startswith("0 {")
    report = json.loads((tmp_path / "runs" / "api-demo" / "report.json").read_text())
    assert report["summary"]["succeeded"] == 5 and report["exit_code"] == 0
    videos = list((tmp_path / "runs" / "api-demo" / "jobs").glob("*/video.mp4"))
    assert len(videos) == 5 and all(os.path.getsize(v) > 0 for v in videos)
