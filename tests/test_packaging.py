"""The wheel carries the schemas: a non-editable install validates and prints schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_wheel_ships_schemas_and_works_outside_the_checkout(tmp_path: Path) -> None:
    """Built as a wheel and imported from it, batchvid finds its schemas and validates."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("batchvid-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    assert {"batchvid/_schemas/manifest.schema.json", "batchvid/_schemas/report.schema.json"} <= names
    # report.html's template, style and script (batchvid/gallery.py)
    assert {f"batchvid/templates/{n}" for n in ("report.html.j2", "gallery.css", "gallery.js")} <= names
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    work = tmp_path / "elsewhere"
    work.mkdir()

    def batchvid(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "batchvid", *args], cwd=work, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)

    where = subprocess.run([sys.executable, "-c", "import batchvid; print(batchvid.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(tmp_path / "site"))
    schema = batchvid("schema", "manifest")
    assert schema.returncode == 0 and json.loads(schema.stdout)["$schema"].endswith("2020-12/schema")
    checked = batchvid("validate", str(ROOT / "manifests" / "quickstart.yaml"))
    assert checked.returncode == 0, checked.stderr
