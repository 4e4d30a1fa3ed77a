"""The pre-commit hook this repository offers (.pre-commit-hooks.yaml) and that its entry works."""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchvid.cli import main

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def hook() -> dict[str, Any]:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert isinstance(hooks, list)
    (found,) = [h for h in hooks if h.get("id") == "batchvid-validate"]
    assert isinstance(found, dict)
    return found


def test_hook_declares_what_pre_commit_requires(hook: dict[str, Any]) -> None:
    """The hook has id, name, entry and language, runs in a Python env, on YAML files."""
    assert {"id", "name", "entry", "language"} <= hook.keys()
    assert hook["entry"] == "batchvid validate"
    assert hook["language"] == "python"
    assert hook["types"] == ["yaml"]


def test_entry_is_the_installed_console_script(hook: dict[str, Any]) -> None:
    """The entry's program is the console script pyproject.toml installs, pointing at cli.main."""
    program = shlex.split(hook["entry"])[0]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[program] == "batchvid.cli:main"


@pytest.mark.parametrize(
    "path",
    ["manifests/quickstart.yaml", "video/manifests/sweep.yml", "rabbit.batchvid.yaml",
     "deep/dir/city.batchvid.yml"],
)
def test_files_pattern_selects_manifests(hook: dict[str, Any], path: str) -> None:
    """Files under a manifests/ directory and *.batchvid.yaml files are checked."""
    assert re.search(hook["files"], path)


@pytest.mark.parametrize(
    "path",
    ["tests/invalid_manifests/unknown-key.yaml", ".github/workflows/ci.yml",
     ".pre-commit-hooks.yaml", "manifests/prompts/city.jsonl", "manifests.yaml"],
)
def test_files_pattern_leaves_other_yaml_alone(hook: dict[str, Any], path: str) -> None:
    """Workflows, the deliberately invalid test manifests and non-YAML files are not checked."""
    assert not re.search(hook["files"], path)


def test_every_shipped_manifest_is_selected(hook: dict[str, Any]) -> None:
    """Every manifests/*.yaml of this repository matches the hook's pattern."""
    for path in sorted((ROOT / "manifests").glob("*.yaml")):
        assert re.search(hook["files"], path.relative_to(ROOT).as_posix()), path


def test_entry_passes_good_manifests(hook: dict[str, Any]) -> None:
    """The entry, given the files as pre-commit passes them, exits 0 on valid manifests."""
    files = [str(p) for p in sorted((ROOT / "manifests").glob("*.yaml"))]
    assert main([*shlex.split(hook["entry"])[1:], *files]) == 0


def test_entry_fails_a_bad_manifest_among_good_ones(
    hook: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One invalid manifest among valid ones makes the hook fail, naming the bad file's line."""
    bad = tmp_path / "manifests" / "bad.yaml"
    bad.parent.mkdir()
    shutil.copy(ROOT / "tests" / "invalid_manifests" / "unknown-key.yaml", bad)
    good = str(ROOT / "manifests" / "quickstart.yaml")
    assert main([*shlex.split(hook["entry"])[1:], good, str(bad)]) != 0
    err = capsys.readouterr().err
    assert re.search(rf"^{re.escape(str(bad))}:\d+:\d+: \$\S*: ", err, re.MULTILINE)
