"""The shipped JSON Schemas work with a standard tool: check-jsonschema (the ``test`` extra).

check-jsonschema vendors the draft 2020-12 metaschema, so nothing here needs the network; the
proxy variables below point at a closed port so that an attempt would fail loudly, not hang.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchvid.cli import main

ROOT = Path(__file__).parent.parent
MANIFEST_SCHEMA = ROOT / "schemas" / "manifest.schema.json"
REPORT_SCHEMA = ROOT / "schemas" / "report.schema.json"
INVALID = ROOT / "tests" / "invalid_manifests"


def _check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("check-jsonschema")
    exe = str(beside) if beside.exists() else shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[test]'")
    closed = "http://127.0.0.1:9"
    env = {**os.environ, "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "NO_PROXY": ""}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_shipped_schemas_are_valid_draft_2020_12() -> None:
    """Both schemas pass `check-jsonschema --check-metaschema`."""
    done = _check_jsonschema("--check-metaschema", MANIFEST_SCHEMA, REPORT_SCHEMA)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shipped_manifests_validate_as_yaml_instances() -> None:
    """Every manifests/*.yaml passes `check-jsonschema --schemafile manifest.schema.json`."""
    manifests = sorted((ROOT / "manifests").glob("*.yaml"))
    done = _check_jsonschema("--schemafile", MANIFEST_SCHEMA, *manifests)
    assert done.returncode == 0, done.stdout + done.stderr


def test_invalid_manifests_fail_with_their_path() -> None:
    """An invalid manifest fails in check-jsonschema too, naming the file and the JSON path."""
    done = _check_jsonschema("--schemafile", MANIFEST_SCHEMA,
                             INVALID / "bad-size-for-model.yaml", INVALID / "unknown-key.yaml")
    assert done.returncode == 1
    assert "bad-size-for-model.yaml::$.jobs[0].size: '1280x720'" in done.stdout
    assert "unknown-key.yaml::$.jobs[0]: Additional properties" in done.stdout
    assert "'wartermark' was unexpected" in done.stdout


def test_broken_schema_fails_the_metaschema_check(tmp_path: Path) -> None:
    """--check-metaschema rejects a schema that is not valid JSON Schema (the check has teeth)."""
    broken = tmp_path / "broken.schema.json"
    broken.write_text('{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": 12}')
    done = _check_jsonschema("--check-metaschema", broken)
    assert done.returncode == 1
    assert "broken.schema.json" in done.stdout


def test_report_of_a_run_validates_against_the_report_schema(tmp_path: Path) -> None:
    """A simulated run's report.json passes check-jsonschema with schemas/report.schema.json."""
    shutil.copy(ROOT / "manifests" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "quickstart.yaml"), "--out", str(out), "--simulate",
                 "--no-progress", "--sim-latency", "0.05", "--poll-interval", "0.01:0.05",
                 "--rpm", "6000"]) == 0
    done = _check_jsonschema("--schemafile", REPORT_SCHEMA, out / "report.json")
    assert done.returncode == 0, done.stdout + done.stderr
