"""What the manifest stages catch that a new user ran into (issue 11): canonical values,
silent acceptances, ``version: "1"``, near-miss values, large matrices, the files' root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchvid.errors import ManifestError, ManifestErrors
from batchvid.jobs import Manifest
from batchvid.manifest import WARN_JOBS, load_manifest

PNG = (Path(__file__).resolve().parent.parent / "manifests" / "images" / "photo.png").read_bytes()


def write(directory: Path, text: str, name: str = "m.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(directory: Path, text: str) -> Manifest:
    return load_manifest(write(directory, text))


def errors_of(path: Path, **kwargs: str) -> list[ManifestError]:
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(path, **kwargs)
    return list(caught.value.errors)


def located(errors: list[ManifestError]) -> list[str]:
    return [str(e) for e in errors]


# --- #3 canonical values -------------------------------------------------------------------------

ONE_JOB = "version: 1\njobs:\n  - id: a\n    prompt: A lighthouse at dawn\n"


def test_a_known_canonical_manifest_keeps_its_key(tmp_path: Path) -> None:
    """An already-canonical manifest's key is the one earlier versions gave (paid videos stay found)."""
    manifest = load(
        tmp_path,
        ONE_JOB + "    fps: 30\n    duration: 5\n    model: cogvideox-3\n    size: 1280x720\n",
    )
    assert manifest.jobs[0].key == "66f19891d17647412074d25a24f486f620e13eb77acb5de11273bd8ac6cd0833"


def test_integral_floats_are_sent_and_hashed_as_integers(tmp_path: Path) -> None:
    """fps: 30.0 and duration: 5.0 give the same params and key as fps: 30 and duration: 5."""
    tail = "    model: cogvideox-3\n    size: 1280x720\n"
    as_float = load(tmp_path, ONE_JOB + "    fps: 30.0\n    duration: 5.0\n" + tail).jobs[0]
    as_int = load(tmp_path, ONE_JOB + "    fps: 30\n    duration: 5\n" + tail).jobs[0]
    assert as_float.params["fps"] == 30 and type(as_float.params["fps"]) is int
    assert type(as_float.params["duration"]) is int
    assert as_float.key == as_int.key


def test_duplicate_request_check_sees_through_number_spelling(tmp_path: Path) -> None:
    """Two jobs differing only in fps: 30 vs fps: 30.0 are reported as the same request."""
    text = "version: 1\njobs:\n  - id: a\n    prompt: p\n    fps: 30\n  - id: b\n    prompt: p\n    fps: 30.0\n"
    (error,) = errors_of(write(tmp_path, text))
    assert "job 'b' sends exactly the same request as job 'a'" in error.message


# --- #4 silent acceptances -----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ['"   "', '"\\t\\n"'])
def test_whitespace_only_prompt_is_an_error(tmp_path: Path, prompt: str) -> None:
    """A prompt of only whitespace fails at its value, not sent."""
    (error,) = errors_of(write(tmp_path, f"version: 1\njobs:\n  - id: a\n    prompt: {prompt}\n"))
    assert str(error).endswith("m.yaml:4:13: $.jobs[0].prompt: the prompt is only whitespace")


def test_whitespace_only_prompt_in_a_jsonl_row_is_an_error(tmp_path: Path) -> None:
    """A prompts-file row whose prompt is only whitespace fails at its line."""
    write(tmp_path, '{"prompt": "fine"}\n{"prompt": "  "}\n', "p.jsonl")
    (error,) = errors_of(write(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: p.jsonl\n"))
    assert (error.location.line, error.path, error.message) == (
        2,
        "$.jobs[0].prompts_file[1].prompt",
        "the prompt is only whitespace",
    )


def test_csv_unclosed_quote_is_an_error_at_its_row(tmp_path: Path) -> None:
    """A CSV row whose quote never closes fails at FILE:LINE instead of swallowing later rows."""
    write(tmp_path, 'id,prompt\na,first\nb,"second\nc,third\nd,fourth\n', "p.csv")
    (error,) = errors_of(write(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: p.csv\n"))
    assert error.location.file.endswith("p.csv") and (error.location.line, error.location.column) == (3, 1)
    assert "a quote opened in this row is never closed" in error.message


def test_csv_quote_closing_mid_cell_is_an_error(tmp_path: Path) -> None:
    """A cell like "he"llo (quote closed mid-cell) fails at its row instead of being mangled."""
    write(tmp_path, 'id,prompt\na,"he"llo\n', "p.csv")
    (error,) = errors_of(write(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: p.csv\n"))
    assert error.location.line == 2
    assert "a quote closes in the middle of a cell" in error.message


def test_prompt_beside_prompts_file_is_an_error(tmp_path: Path) -> None:
    """prompt: next to prompts_file: in one job fails at the prompt key instead of being dropped."""
    write(tmp_path, "a cat\n", "p.txt")
    text = "version: 1\njobs:\n  - id: r\n    prompts_file: p.txt\n    prompt: ignored\n"
    (error,) = errors_of(write(tmp_path, text))
    assert (error.location.line, error.location.column, error.path) == (5, 5, "$.jobs[0].prompt")
    assert error.message.startswith("'prompt' cannot stand beside 'prompts_file'")


# --- #5 version as text --------------------------------------------------------------------------


def test_version_as_text_says_number_and_keeps_reporting(tmp_path: Path) -> None:
    """version: "1" says it must be the number 1, and the file's other errors are still reported."""
    text = 'version: "1"\njobs:\n  - id: a\n    prompt: p\n    size: 1x1\n  - id: b\n    prompt: q\n    fps: 45\n'
    errors = errors_of(write(tmp_path, text))
    assert [(e.location.line, e.path) for e in errors] == [(1, "$.version"), (5, "$.jobs[0].size"), (8, "$.jobs[1].fps")]
    assert errors[0].message == "version must be the number 1, not the text '1'; write version: 1 without quotes"


def test_other_unknown_versions_still_hide_the_rest(tmp_path: Path) -> None:
    """version: 2 is another language version: only that error is reported."""
    (error,) = errors_of(write(tmp_path, "version: 2\njobs:\n  - id: a\n    size: 1x1\n"))
    assert error.message == "unknown manifest version 2; this batchvid understands version 1"


# --- #12 near misses and large matrices ----------------------------------------------------------


def test_size_in_capitals_gets_a_did_you_mean(tmp_path: Path) -> None:
    """1280X960 is refused with "did you mean '1280x960'?"."""
    (error,) = errors_of(write(tmp_path, ONE_JOB + "    size: 1280X960\n"))
    assert error.message.endswith("; did you mean '1280x960'?")
    assert error.message.startswith("'1280X960' is not a CogVideoX size")


def test_matrix_over_the_threshold_warns_with_the_count(tmp_path: Path) -> None:
    """A job whose matrix expands past WARN_JOBS loads, with a located warning giving the count."""
    values = ", ".join(f"v{i}" for i in range(WARN_JOBS // 2 + 1))
    text = f'version: 1\njobs:\n  - id: big\n    prompt: "x ${{v}}"\n    matrix:\n      v: [{values}]\n    samples: 2\n'
    manifest = load(tmp_path, text)
    count = (WARN_JOBS // 2 + 1) * 2
    (warning,) = manifest.warnings
    assert warning.startswith(f"{tmp_path / 'm.yaml'}:5:5: $.jobs[0].matrix: warning: this job expands to {count:,} jobs")


def test_matrix_under_the_threshold_has_no_warning(tmp_path: Path) -> None:
    """A small matrix loads without warnings."""
    text = 'version: 1\njobs:\n  - id: s\n    prompt: "x ${v}"\n    matrix: {v: [a, b]}\n'
    assert load(tmp_path, text).warnings == ()


# --- #7 where a job came from --------------------------------------------------------------------


def test_expanded_jobs_record_their_manifest_job(tmp_path: Path) -> None:
    """Jobs expanded by a matrix or a prompts file carry the id of the manifest job they came from."""
    write(tmp_path, "one\ntwo\n", "p.txt")
    text = (
        'version: 1\njobs:\n  - id: coffee\n    prompt: "cup ${n}"\n    matrix: {n: [a, b]}\n'
        "  - id: rows\n    prompts_file: p.txt\n  - id: plain\n    prompt: p\n"
    )
    jobs = load(tmp_path, text).jobs
    assert [(j.source, j.id.split("-")[0]) for j in jobs] == [
        ("coffee", "coffee"), ("coffee", "coffee"), ("rows", "rows"), ("rows", "rows"), ("plain", "plain"),
    ]


# --- #13 files anywhere inside the repository ----------------------------------------------------


def repo_with_assets(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / ".git").mkdir(parents=True)
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "cat.png").write_bytes(PNG)
    return tmp_path, "version: 1\njobs:\n  - id: a\n    image: ../assets/cat.png\n"


def test_image_elsewhere_in_the_git_work_tree_is_allowed(tmp_path: Path) -> None:
    """An image in a shared assets/ folder of the manifest's git work tree loads."""
    repo, text = repo_with_assets(tmp_path)
    manifest = load_manifest(write(repo / "batches", text))
    image = manifest.jobs[0].image
    assert image is not None and image.data == PNG


def test_image_outside_the_git_work_tree_is_refused(tmp_path: Path) -> None:
    """A path that leaves the work tree is refused, naming the root."""
    repo, _ = repo_with_assets(tmp_path / "repo")
    (tmp_path / "other.png").write_bytes(PNG)
    text = "version: 1\njobs:\n  - id: a\n    image: ../../other.png\n"
    (error,) = errors_of(write(repo / "batches", text))
    assert "outside the root" in error.message and str(repo.resolve()) in error.message


def test_symlink_leaving_the_work_tree_is_refused(tmp_path: Path) -> None:
    """A symlink inside the work tree that points outside it is refused."""
    repo, _ = repo_with_assets(tmp_path / "repo")
    (tmp_path / "secret.png").write_bytes(PNG)
    os.symlink(tmp_path / "secret.png", repo / "assets" / "link.png")
    text = "version: 1\njobs:\n  - id: a\n    image: ../assets/link.png\n"
    (error,) = errors_of(write(repo / "batches", text))
    assert "outside the root" in error.message


def test_without_a_work_tree_the_manifest_directory_is_the_root(tmp_path: Path) -> None:
    """With no .git above it, '..' is refused as before."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "cat.png").write_bytes(PNG)
    (error,) = errors_of(write(tmp_path / "batches", "version: 1\njobs:\n  - id: a\n    image: ../assets/cat.png\n"))
    assert "leaves the manifest's directory ('..')" in error.message


def test_root_key_and_root_argument_widen_the_root(tmp_path: Path) -> None:
    """root: in the manifest, or root= (--root), lets files elsewhere under that directory load."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "cat.png").write_bytes(PNG)
    text = "version: 1\njobs:\n  - id: a\n    image: ../assets/cat.png\n"
    assert load_manifest(write(tmp_path / "b1", "root: ..\n" + text)).jobs[0].image is not None
    assert load_manifest(write(tmp_path / "b2", text), root=tmp_path).jobs[0].image is not None


def test_absolute_paths_stay_refused_inside_a_work_tree(tmp_path: Path) -> None:
    """An absolute image path is refused even when it points inside the work tree."""
    repo, _ = repo_with_assets(tmp_path)
    text = f"version: 1\njobs:\n  - id: a\n    image: {repo / 'assets' / 'cat.png'}\n"
    (error,) = errors_of(write(repo / "batches", text))
    assert "is an absolute path" in error.message


# --- linear loading ------------------------------------------------------------------------------


def test_each_distinct_request_goes_through_the_schema_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows differing by prompt, and matrix combinations differing only by prompt variables,
    are checked against $defs/request once per distinct set of other parameters."""
    from batchvid.manifest.messages import validators

    checked: list[object] = []
    checks = validators()
    real = checks.request_ok  # each request's first check (jsonschema's only when it fails)

    def counting(instance: object) -> bool | None:
        checked.append(instance)
        return real(instance)

    monkeypatch.setattr(checks, "request_ok", counting)
    write(tmp_path, "".join(f'{{"prompt": "scene {i}", "fps": {30 if i % 2 else 60}}}\n' for i in range(200)), "p.jsonl")
    text = (
        "version: 1\njobs:\n  - id: rows\n    prompts_file: p.jsonl\n"
        '  - id: sweep\n    prompt: "a ${a} in ${b}"\n    matrix:\n'
        f"      a: [{', '.join(f'a{i}' for i in range(30))}]\n"
        f"      b: [{', '.join(f'b{i}' for i in range(30))}]\n"
        "      size: [720x480, 1024x1024]\n"
    )
    assert len(load(tmp_path, text).jobs) == 200 + 30 * 30 * 2
    assert len(checked) == 2 + 2  # rows: fps 30 / 60; sweep: two sizes
