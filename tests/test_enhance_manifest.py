"""``enhance:`` in a manifest: validated with located errors, resolved per job, and in the job
key exactly when it is on."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from batchvid.errors import ManifestErrors
from batchvid.jobkey import canonical_json, job_key
from batchvid.jobs import Job
from batchvid.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, body: str) -> list[Job]:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\n" + body, encoding="utf-8")
    return list(load_manifest(path).jobs)


def errors(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ManifestErrors) as caught:
        load(tmp_path, body)
    return [str(e) for e in caught.value.errors]


JOBS = "jobs:\n  - id: a\n    prompt: a fox\n  - id: b\n    prompt: an owl\n"


def test_job_settings_win_over_defaults_and_false_turns_it_off(tmp_path: Path) -> None:
    """A job's enhance keys win one by one over the defaults'; enhance: false leaves it off."""
    a, b, c = load(
        tmp_path,
        "defaults:\n  enhance: {model: glm-4-plus, temperature: 0.3}\n" + JOBS
        + "    enhance: {temperature: 0}\n  - id: c\n    prompt: a cat\n    enhance: false\n",
    )  # fmt: skip
    assert a.enhance is not None and (a.enhance.model, a.enhance.temperature) == ("glm-4-plus", 0.3)
    assert b.enhance is not None and (b.enhance.model, b.enhance.temperature) == ("glm-4-plus", 0.0)
    assert c.enhance is None
    assert a.enhance.instructions_source == "default"


def test_key_changes_only_when_enhancement_is_on(tmp_path: Path) -> None:
    """Without enhance a key is the request's alone (as before); with it, the fingerprint
    joins the key; required does not."""
    plain = load(tmp_path, JOBS)
    assert plain[0].key == job_key("geekai", {"model": "cogvideox-flash", "prompt": "a fox"}, None, 0)
    on = load(tmp_path, "defaults:\n  enhance: true\n" + JOBS)
    required = load(tmp_path, "defaults:\n  enhance: {required: true}\n" + JOBS)
    warmer = load(tmp_path, "defaults:\n  enhance: {temperature: 0.5}\n" + JOBS)
    assert on[0].key != plain[0].key and on[0].params == plain[0].params
    assert [j.key for j in required] == [j.key for j in on]
    assert warmer[0].key != on[0].key


def test_image_job_without_prompt_is_not_enhanced(tmp_path: Path) -> None:
    """A job with an image and no prompt has nothing to rewrite: no enhancement, no change of key."""
    shutil.copy(ROOT / "manifests" / "images" / "photo.png", tmp_path / "photo.png")
    body = "jobs:\n  - id: still\n    image: photo.png\n"
    (job,) = load(tmp_path, "defaults:\n  enhance: true\n" + body)
    assert job.enhance is None
    assert job.key == load(tmp_path, body)[0].key


def test_missing_instructions_file_is_a_located_error(tmp_path: Path) -> None:
    """A misspelt instructions file under defaults is reported once, at its place."""
    (message,) = errors(tmp_path, "defaults:\n  enhance: {instructions: styel.txt}\n" + JOBS)
    assert message.startswith(f"{tmp_path / 'm.yaml'}:3:")
    assert "$.defaults.enhance" in message and "styel.txt" in message and "does not exist" in message


def test_bad_enhance_values_are_located_schema_errors(tmp_path: Path) -> None:
    """A temperature out of range under a job, and enhance as a matrix name, fail where written."""
    body = JOBS + "    enhance: {temperature: 2}\n  - id: c\n    prompt: x ${enhance}\n    matrix: {enhance: [a]}\n"
    found = errors(tmp_path, body)
    assert any("$.jobs[1].enhance.temperature" in m and "from 0 to 1" in m for m in found)
    assert any("$.jobs[2].matrix" in m and "cannot be a matrix name" in m for m in found)


def test_instructions_file_text_decides_the_key_not_its_place(tmp_path: Path) -> None:
    """The same instructions text gives the same key from another file; other text another key."""
    (tmp_path / "one.txt").write_text("Be vivid.\n", encoding="utf-8")
    (tmp_path / "two.md").write_text("Be vivid.\r\n", encoding="utf-8")
    (tmp_path / "three.txt").write_text("Be plain.\n", encoding="utf-8")
    keys = [
        load(tmp_path, f"defaults:\n  enhance: {{instructions: {name}}}\n" + JOBS)[0].key
        for name in ("one.txt", "two.md", "three.txt")
    ]
    assert keys[0] == keys[1] != keys[2]


@pytest.mark.parametrize("params", [{"model": "cogvideox-flash", "prompt": "a \"fox\" ü"}, {"prompt": "x", "fps": 30.5}])
def test_key_with_enhancement_is_the_hash_of_the_canonical_document(params: dict[str, object]) -> None:
    """Both spellings of the key (direct and encoder) hash the same canonical document."""
    fingerprint = {"model": "glm-4-flash", "instructions_sha256": "ab" * 32, "temperature": 0.1}
    document = {"enhance": fingerprint, "provider": "geekai", "request": params, "sample": 2}
    expected = hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
    assert job_key("geekai", params, None, 2, fingerprint) == expected
    assert job_key("geekai", params, None, 2, enhance_json=canonical_json(fingerprint)) == expected
