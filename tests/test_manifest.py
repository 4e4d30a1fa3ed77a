"""The manifest language: loading, validation, expansion and identity (batchvid.manifest)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from batchvid.errors import ManifestError, ManifestErrors
from batchvid.jobs import Manifest
from batchvid.manifest import MAX_JOBS, load_manifest, validate_files

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "manifests").glob("*.yaml"))
INVALID_DIR = Path(__file__).resolve().parent / "invalid_manifests"
INVALID = sorted(INVALID_DIR.glob("*.yaml"))
PNG = (REPO / "manifests" / "images" / "photo.png").read_bytes()
EXPECT = re.compile(
    r"#\s*expect:\s*(?:(?P<file>[^:\s]+\.\w+):)?(?P<line>\d+)(?::(?P<col>\d+))?:\s*(?P<text>.+)"
)


def write(directory: Path, text: str, name: str = "m.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load(directory: Path, text: str) -> Manifest:
    return load_manifest(write(directory, text))


def errors_of(directory: Path, text: str) -> list[ManifestError]:
    with pytest.raises(ManifestErrors) as caught:
        load(directory, text)
    return list(caught.value.errors)


def messages(directory: Path, text: str) -> str:
    return "\n".join(str(e) for e in errors_of(directory, text))


# --- examples and invalid manifests -----------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifest_validates(path: Path) -> None:
    """Every manifest shipped in manifests/ loads and expands to at least one job."""
    manifest = load_manifest(path)
    assert manifest.jobs


def test_examples_start_with_the_schema_comment() -> None:
    """Every example names the schema for editors on its first line."""
    for path in EXAMPLES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json", path


def test_examples_cover_the_required_set() -> None:
    """The examples named in the issue exist."""
    names = {p.name for p in EXAMPLES}
    assert {
        "quickstart.yaml",
        "text-to-video.yaml",
        "image-to-video.yaml",
        "sweep.yaml",
        "prompts-file.yaml",
        "bigmodel.yaml",
    } <= names


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_fails_as_expected(path: Path) -> None:
    """Each invalid manifest fails with its expected messages at their expected places."""
    header = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    expectations = [m for line in header if (m := EXPECT.fullmatch(line.strip()))]
    assert expectations, f"{path.name} has no '# expect:' line"
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(path)
    found = caught.value.errors
    for expect in expectations:
        file = os.path.join(str(path.parent), expect["file"]) if expect["file"] else str(path)
        matches = [
            e
            for e in found
            if e.location.file == file
            and e.location.line == int(expect["line"])
            and (expect["col"] is None or e.location.column == int(expect["col"]))
            and expect["text"] in e.message
        ]
        shown = "\n".join(str(e) for e in found)
        assert matches, f"expected {expect.group(0)!r} among:\n{shown}"


def test_errors_use_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FILE in a message is the manifest path as the user wrote it: relative stays relative."""
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "version: 1\njobs:\n  - id: a\n    prompt: hi\n    fps: 24\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestErrors) as caught:
        load_manifest("sub/m.yaml")
    assert str(caught.value).startswith("sub/m.yaml:5:10: $.jobs[0].fps: 24 is not one of 30, 60")


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    """Problems in several jobs are reported together, in file order."""
    errors = errors_of(
        tmp_path,
        "version: 1\njobs:\n  - id: a\n    prompt: hi\n    fps: 24\n"
        "  - id: b\n    prompt: hi\n    quality: best\n  - id: c\n    wartermark: true\n    prompt: x\n",
    )
    assert [e.location.line for e in errors] == [5, 8, 10]


def test_no_traceback_for_unreadable_path(tmp_path: Path) -> None:
    """A missing manifest is a ManifestError, not an OSError."""
    with pytest.raises(ManifestErrors, match="cannot read the manifest"):
        load_manifest(tmp_path / "nope.yaml")


def test_manifest_over_size_limit(tmp_path: Path) -> None:
    """A manifest over 10 MB is refused, naming the limit."""
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"version: 1\n" + b"#" * (10 * 1024 * 1024))
    with pytest.raises(ManifestErrors, match=r"the limit is 10,485,760 bytes \(10 MB\)"):
        load_manifest(path)


def test_validate_files_collects_every_file(tmp_path: Path) -> None:
    """validate_files returns the errors of all files, and nothing for valid ones."""
    good = write(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n", "good.yaml")
    bad = write(tmp_path, "version: 1\njobs:\n  - id: A\n    prompt: hi\n", "bad.yaml")
    other = write(tmp_path, "version: 3\njobs: []\n", "other.yaml")
    errors = validate_files([good, bad, other])
    assert {Path(e.location.file).name for e in errors} == {"bad.yaml", "other.yaml"}


# --- the seed requests --------------------------------------------------------------------------


SEED_TEXT = """version: 1
jobs:
  - id: text-to-video
    model: cogvideox-flash
    prompt: 彼得兔开小汽车，游走在马路上，脸上的表情充满开心喜悦
    size: 1280x960
    quality: quality
    with_audio: true
    fps: 30
  - id: image-to-video
    model: cogvideox-flash
    prompt: 让画面动起来
    image: https://img.iplaysoft.com/wp-content/uploads/2019/free-images/free_stock_photo.jpg
    size: 3840x2160
    quality: quality
    with_audio: true
    WATERMARK: true
"""


def test_seed_requests_validate(tmp_path: Path) -> None:
    """Both request bodies of the GeekAI page validate as jobs (with watermark spelled right)."""
    manifest = load(tmp_path, SEED_TEXT.replace("WATERMARK", "watermark"))
    first, second = manifest.jobs
    assert dict(first.params) == {
        "model": "cogvideox-flash",
        "prompt": "彼得兔开小汽车，游走在马路上，脸上的表情充满开心喜悦",
        "size": "1280x960",
        "quality": "quality",
        "with_audio": True,
        "fps": 30,
    }
    assert second.image is not None and second.image.url is not None
    assert second.params["watermark"] is True


def test_seed_wartermark_is_rejected_with_suggestion(tmp_path: Path) -> None:
    """The seed's misspelt 'wartermark' is refused with a suggestion of 'watermark'."""
    text = messages(tmp_path, SEED_TEXT.replace("WATERMARK", "wartermark"))
    assert text == (
        f"{tmp_path / 'm.yaml'}:17:5: $.jobs[1].wartermark: "
        "unknown key 'wartermark'; did you mean 'watermark'?"
    )


# --- defaults, provider, name -------------------------------------------------------------------


def test_defaults_apply_under_job_keys(tmp_path: Path) -> None:
    """Defaults fill in parameters; a job's own keys win."""
    manifest = load(
        tmp_path,
        "version: 1\ndefaults:\n  fps: 60\n  quality: speed\njobs:\n"
        "  - id: a\n    prompt: hi\n    quality: quality\n",
    )
    assert dict(manifest.jobs[0].params) == {
        "model": "cogvideox-flash",
        "prompt": "hi",
        "fps": 60,
        "quality": "quality",
    }


def test_default_model_and_provider(tmp_path: Path) -> None:
    """Without model or provider, jobs use cogvideox-flash on geekai."""
    manifest = load(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n")
    assert manifest.provider == "geekai"
    assert manifest.jobs[0].model == "cogvideox-flash"


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    """Manifest.name is name: when given, else the file's stem."""
    path = write(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n", "peter-rabbit.yaml")
    assert load_manifest(path).name == "peter-rabbit"
    named = load(tmp_path, "version: 1\nname: demo\njobs:\n  - id: a\n    prompt: hi\n")
    assert named.name == "demo"


def test_limits_and_pricing_pass_through(tmp_path: Path) -> None:
    """limits and pricing reach the Manifest as plain dicts."""
    manifest = load(
        tmp_path,
        "version: 1\nlimits:\n  max_in_flight: 3\n  poll_interval: '2:10'\n"
        "pricing:\n  cogvideox-2: 0.5\njobs:\n  - id: a\n    prompt: hi\n",
    )
    assert manifest.limits == {"max_in_flight": 3, "poll_interval": "2:10"}
    assert manifest.pricing == {"cogvideox-2": 0.5}


def test_qc_and_license_pass_through(tmp_path: Path) -> None:
    """qc thresholds and the license reach the Manifest; without them, empty and None."""
    manifest = load(
        tmp_path,
        "version: 1\nlicense: cc-by-4.0\nqc:\n  min_motion: 0.01\n  max_black_fraction: 0.5\n"
        "jobs:\n  - id: a\n    prompt: hi\n",
    )
    assert manifest.qc == {"min_motion": 0.01, "max_black_fraction": 0.5}
    assert manifest.license == "cc-by-4.0"
    bare = load(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n")
    assert (bare.qc, bare.license) == ({}, None)


def test_expanded_jobs_know_their_source_and_matrix_combination(tmp_path: Path) -> None:
    """Each expanded job carries the manifest job it came from and its combination, name ->
    value (parameters and prompt variables alike); a job without matrix has none."""
    manifest = load(
        tmp_path,
        "version: 1\njobs:\n  - id: sweep\n    prompt: 'A ${animal}'\n"
        "    matrix:\n      animal: [rabbit, fox]\n      fps: [30, 60]\n  - id: plain\n    prompt: hi\n",
    )
    first, *_, last = manifest.jobs
    assert (first.source, dict(first.matrix)) == ("sweep", {"animal": "rabbit", "fps": 30})
    assert dict(manifest.jobs[3].matrix) == {"animal": "fox", "fps": 60}
    assert (last.source, dict(last.matrix)) == ("plain", {})


def test_provider_override_replaces_manifest_provider(tmp_path: Path) -> None:
    """--provider wins over provider: and is validated like it (cogvideox is not on bigmodel)."""
    path = write(tmp_path, "version: 1\nprovider: geekai\njobs:\n  - id: a\n    model: cogvideox\n    prompt: hi\n")
    assert load_manifest(path).provider == "geekai"
    with pytest.raises(ManifestErrors, match="not a model that bigmodel offers"):
        load_manifest(path, provider_override="bigmodel")


def test_duration_allowed_on_cogvideox_3(tmp_path: Path) -> None:
    """cogvideox-3 accepts duration 10 with its own sizes."""
    manifest = load(
        tmp_path,
        "version: 1\nprovider: bigmodel\njobs:\n  - id: a\n    model: cogvideox-3\n"
        "    size: 1280x720\n    duration: 10\n    prompt: hi\n",
    )
    assert manifest.jobs[0].params["duration"] == 10


def test_size_from_defaults_names_its_origin(tmp_path: Path) -> None:
    """A size from defaults that the job's model refuses is reported on the job, naming defaults."""
    text = messages(
        tmp_path,
        "version: 1\ndefaults:\n  size: 1280x720\njobs:\n  - id: a\n    model: cogvideox-2\n    prompt: hi\n",
    )
    assert ":5:5: $.jobs[0].size: '1280x720' is not a size that cogvideox-2 accepts" in text
    assert "(size comes from defaults, line 3)" in text


def test_unknown_version_hides_other_errors(tmp_path: Path) -> None:
    """With an unknown version only that is reported: the rest may be another language."""
    errors = errors_of(tmp_path, "version: 2\nwhatever: 1\njobs: 5\n")
    assert [e.message for e in errors] == [
        "unknown manifest version 2; this batchvid understands version 1"
    ]


def test_empty_jobs_list(tmp_path: Path) -> None:
    """A manifest without jobs is refused."""
    assert "a manifest needs at least one job" in messages(tmp_path, "version: 1\njobs: []\n")


# --- matrix and samples --------------------------------------------------------------------------


def test_matrix_expands_in_written_order_with_readable_ids(tmp_path: Path) -> None:
    """Combinations follow the order written; ids join the values; samples add -sN."""
    manifest = load(
        tmp_path,
        "version: 1\njobs:\n  - id: sweep\n    prompt: 'A ${animal} at ${time}'\n"
        "    matrix:\n      animal: [rabbit, fox]\n      time: [dawn, night]\n      fps: [30, 60]\n"
        "    samples: 2\n",
    )
    ids = [j.id for j in manifest.jobs]
    assert len(ids) == 16
    assert ids[:4] == ["sweep-rabbit-dawn-30-s0", "sweep-rabbit-dawn-30-s1", "sweep-rabbit-dawn-60-s0", "sweep-rabbit-dawn-60-s1"]
    assert ids[-1] == "sweep-fox-night-60-s1"
    first = manifest.jobs[0]
    assert first.params["prompt"] == "A rabbit at dawn" and first.params["fps"] == 30
    assert [j.sample for j in manifest.jobs[:2]] == [0, 1]
    assert [j.index for j in manifest.jobs] == list(range(16))


def test_samples_have_distinct_keys(tmp_path: Path) -> None:
    """Samples of one request share parameters but not keys."""
    manifest = load(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n    samples: 3\n")
    assert len({j.key for j in manifest.jobs}) == 3
    assert [j.id for j in manifest.jobs] == ["a-s0", "a-s1", "a-s2"]


def test_matrix_ids_fall_back_to_hash_when_unreadable(tmp_path: Path) -> None:
    """Values that sanitize to nothing or collide get a short hash, keeping ids unique and safe."""
    manifest = load(
        tmp_path,
        "version: 1\njobs:\n  - id: m\n    prompt: '${who}'\n    matrix:\n      who: [兔子, 狐狸, A B, a-b]\n",
    )
    ids = [j.id for j in manifest.jobs]
    assert len(set(ids)) == 4
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*", i) for i in ids)


def test_escaped_variable_is_literal(tmp_path: Path) -> None:
    """$${x} writes a literal ${x} into the prompt."""
    manifest = load(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: 'cost $${price}'\n")
    assert manifest.jobs[0].params["prompt"] == "cost ${price}"


def test_undefined_variable_without_matrix(tmp_path: Path) -> None:
    """A ${variable} in a job with no matrix is an error naming it."""
    text = messages(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: 'a ${thing}'\n")
    assert "the prompt uses ${thing}, which is not defined" in text


def test_matrix_total_over_cap_across_jobs(tmp_path: Path) -> None:
    """Jobs that each fit but together pass the cap are refused with a clear message."""
    values = ", ".join(str(i) for i in range(100))
    job = "  - id: j{n}\n    prompt: '${{a}}${{b}}'\n    matrix:\n      a: [{v}]\n      b: [{v}]\n    samples: 6\n"
    text = "version: 1\njobs:\n" + "".join(job.format(n=n, v=values) for n in range(2))
    assert f"more than {MAX_JOBS:,} jobs" in messages(tmp_path, text)


def test_bigmodel_example_explains_combinations(tmp_path: Path) -> None:
    """A bad matrix combination names the combination and points at the matrix."""
    text = messages(
        tmp_path,
        "version: 1\njobs:\n  - id: a\n    prompt: hi\n    matrix:\n"
        "      size: [1280x720]\n      model: [cogvideox-3, cogvideox-2]\n",
    )
    assert text.endswith(
        ":5:5: $.jobs[0].matrix: combination {size: 1280x720, model: cogvideox-2}: "
        "'1280x720' is not a size that cogvideox-2 accepts "
        "(one of 720x480, 1024x1024, 1280x960, 960x1280, 1920x1080, 1080x1920, 2048x1080, 3840x2160)"
    )


# --- prompts files --------------------------------------------------------------------------------


def test_prompts_txt_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    """A .txt file gives one job per non-blank, non-comment line, located at its line."""
    write(tmp_path, "# comment\n\nfirst prompt\n  second prompt  \n", "p.txt")
    manifest = load(tmp_path, "version: 1\njobs:\n  - id: t\n    prompts_file: p.txt\n")
    assert [j.params["prompt"] for j in manifest.jobs] == ["first prompt", "second prompt"]
    assert [j.location.line for j in manifest.jobs if j.location] == [3, 4]


def test_prompts_csv_coerces_values(tmp_path: Path) -> None:
    """CSV cells become ints and booleans for fps, duration, with_audio and watermark."""
    write(tmp_path, "id,prompt,fps,with_audio,model,duration\nr1,hi,60,yes,cogvideox-3,10\n", "p.csv")
    manifest = load(tmp_path, "version: 1\njobs:\n  - id: c\n    prompts_file: p.csv\n")
    (job,) = manifest.jobs
    assert job.id == "c-r1"
    assert dict(job.params) == {"prompt": "hi", "fps": 60, "with_audio": True, "model": "cogvideox-3", "duration": 10}


def test_prompts_rows_combine_with_matrix(tmp_path: Path) -> None:
    """A job with prompts_file may also have a matrix: every row times every combination."""
    write(tmp_path, '{"id": "x", "prompt": "a ${style} cat"}\n{"id": "y", "prompt": "${style} dog"}\n', "p.jsonl")
    manifest = load(
        tmp_path,
        "version: 1\njobs:\n  - id: r\n    prompts_file: p.jsonl\n    matrix:\n      style: [oil, ink]\n",
    )
    assert [j.id for j in manifest.jobs] == ["r-x-oil", "r-x-ink", "r-y-oil", "r-y-ink"]
    assert manifest.jobs[1].params["prompt"] == "a ink cat"


def test_identical_requests_under_two_ids_are_reported(tmp_path: Path) -> None:
    """A matrix variable a row does not use would make two ids of one request: an error."""
    write(tmp_path, '{"id": "y", "prompt": "dog"}\n', "p.jsonl")
    errors = errors_of(
        tmp_path,
        "version: 1\njobs:\n  - id: r\n    prompts_file: p.jsonl\n    matrix:\n      style: [oil, ink]\n",
    )
    assert [e.message for e in errors] == [
        "job 'r-y-ink' sends exactly the same request as job 'r-y-oil', so they would be one "
        "video; change one of them, or use 'samples:' for several videos of one request"
    ]


def test_inserting_a_row_moves_no_other_id(tmp_path: Path) -> None:
    """Rows without ids are named by content: inserting one leaves every other id and key alone."""
    manifest_text = "version: 1\njobs:\n  - id: r\n    prompts_file: p.txt\n"
    write(tmp_path, "one\ntwo\nthree\n", "p.txt")
    before = {j.id: j.key for j in load(tmp_path, manifest_text).jobs}
    write(tmp_path, "one\ninserted\ntwo\nthree\n", "p.txt")
    after = {j.id: j.key for j in load(tmp_path, manifest_text).jobs}
    assert len(after) == 4
    assert {k: after[k] for k in before} == before


def test_duplicate_rows_are_reported(tmp_path: Path) -> None:
    """Two identical rows would be the same job; the second is reported with the first's place."""
    write(tmp_path, "same\nsame\n", "p.txt")
    with pytest.raises(ManifestErrors) as caught:
        load(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: p.txt\n")
    (error,) = caught.value.errors
    assert error.location.line == 2 and "also produced at" in error.message


def test_prompts_file_must_stay_inside(tmp_path: Path) -> None:
    """prompts_file follows the same containment rules as images."""
    assert "leaves the manifest's directory" in messages(
        tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: ../p.txt\n"
    )


def test_prompts_file_missing(tmp_path: Path) -> None:
    """A missing prompts file is reported at the prompts_file key's value."""
    errors = errors_of(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: nope.csv\n")
    assert (errors[0].location.line, errors[0].location.column) == (4, 19)
    assert "does not exist" in errors[0].message


def test_csv_row_with_too_many_cells(tmp_path: Path) -> None:
    """A CSV row longer than its header is reported at its own line."""
    write(tmp_path, "prompt\nok\n\"a\",\"b\"\n", "p.csv")
    errors = errors_of(tmp_path, "version: 1\njobs:\n  - id: r\n    prompts_file: p.csv\n")
    assert [(Path(e.location.file).name, e.location.line) for e in errors] == [("p.csv", 3)]


# --- images in manifests --------------------------------------------------------------------------


def test_local_image_is_inline_and_shared(tmp_path: Path) -> None:
    """A local image is read once, sent inline, and its bytes shared by every job using it."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(PNG)
    manifest = load(
        tmp_path,
        "version: 1\ndefaults:\n  image: img/a.png\njobs:\n  - id: a\n  - id: b\n    prompt: hi\n",
    )
    first, second = manifest.jobs
    assert first.image is not None and second.image is not None
    assert first.image.media_type == "image/png"
    assert first.image.data is second.image.data
    assert "image" not in first.params


def test_image_over_5_mb(tmp_path: Path) -> None:
    """An image over 5 MB is refused with its size and the limit."""
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * (5 * 1024 * 1024))
    text = messages(tmp_path, "version: 1\njobs:\n  - id: a\n    image: big.png\n")
    assert "images may be at most 5 MB (5,242,880 bytes)" in text


def test_symlink_pointing_out_is_refused(tmp_path: Path) -> None:
    """A symlink inside the manifest's directory that resolves outside it is refused."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "link.png").symlink_to(outside)
    path = write(inner, "version: 1\njobs:\n  - id: a\n    image: link.png\n")
    with pytest.raises(ManifestErrors, match="outside the manifest's directory"):
        load_manifest(path)


def test_image_errors_point_at_matrix_value(tmp_path: Path) -> None:
    """A bad image in a matrix is reported at that very value."""
    shutil.copy(REPO / "manifests" / "images" / "photo.png", tmp_path / "ok.png")
    errors = errors_of(
        tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n    matrix:\n      image: [ok.png, no.png]\n"
    )
    assert [(e.path, e.location.line, e.location.column) for e in errors] == [
        ("$.jobs[0].matrix.image[1]", 6, 23)
    ]


# --- identity ----------------------------------------------------------------------------------


JOBS = {
    "a": "  - id: a\n    prompt: first\n",
    "b": "  - id: b\n    prompt: second\n    fps: 60\n",
    "c": "  - id: c\n    prompt: third\n    size: 1024x1024\n",
}


def keys_for(tmp_path: Path, order: str, edit: dict[str, str] | None = None) -> dict[str, str]:
    jobs = {**JOBS, **(edit or {})}
    manifest = load(tmp_path, "version: 1\njobs:\n" + "".join(jobs[name] for name in order))
    return {j.id: j.key for j in manifest.jobs}


def test_reordering_jobs_keeps_keys(tmp_path: Path) -> None:
    """Keys do not depend on where a job sits in the file."""
    assert keys_for(tmp_path, "abc") == keys_for(tmp_path, "cab")


def test_editing_one_job_changes_only_its_key(tmp_path: Path) -> None:
    """Changing one job's parameters changes its key and no other."""
    before = keys_for(tmp_path, "abc")
    after = keys_for(tmp_path, "abc", {"b": "  - id: b\n    prompt: second\n    fps: 30\n"})
    assert [name for name in before if before[name] != after[name]] == ["b"]


def test_renaming_a_job_keeps_its_key(tmp_path: Path) -> None:
    """The key is the request, not the id."""
    before = keys_for(tmp_path, "a")
    after = keys_for(tmp_path, "a", {"a": "  - id: renamed\n    prompt: first\n"})
    assert list(before.values()) == list(after.values())


def test_key_covers_provider(tmp_path: Path) -> None:
    """The same request on another provider is another job."""
    path = write(tmp_path, "version: 1\njobs:\n  - id: a\n    prompt: hi\n")
    assert load_manifest(path).jobs[0].key != load_manifest(path, provider_override="bigmodel").jobs[0].key
