"""The 100,000-job fast paths (issue 12 #5) agree with the general ones they shortcut: prompts
files' usual rows, keys spelled once per manifest job, Jobs built without ``__init__``, the
JSON-lines file parsed in one call, the garbage collector paused while loading."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchvid.errors import Location, ManifestErrors
from batchvid.jobkey import PromptKeys, job_key, spelled_keys
from batchvid.jobs import Job, JobFields, PromptParams
from batchvid.manifest import expand, files, load_manifest
from batchvid.manifest.messages import validators
from batchvid.manifest.rows import (
    _jsonl_line_by_line,
    _LocationFields,
    _locations,
    _RowIds,
    parse_rows,
    row_id,
)
from batchvid.plan import decide, make_plan
from batchvid.plantable import plan_table
from batchvid.schemas import load_schema
from batchvid.store import JobRecord
from tests.helpers import make_job

TRICKY_PROMPTS = [
    "A lighthouse at dawn",
    'quotes " and \\ backslashes \\" and \\u0041 written out',
    "control \x01 \x1f and tab\t",
    "unicode: 灯塔 café ☃ 🐇 \u2028 \u2029 \x85",
    "\x00prompt\x00",  # PromptKeys' own placeholder, as a prompt
    "x" * 512,
]


@pytest.mark.parametrize("prompt", TRICKY_PROMPTS)
@pytest.mark.parametrize(
    ("params", "sample", "enhance_json"),
    [
        ({"model": "cogvideox-flash", "prompt": "p"}, 0, None),
        ({"size": "1024x1024", "prompt": "p", "model": "cogvideox-3", "fps": 60, "with_audio": True}, 2, None),
        ({"model": "cogvideox-3", "prompt": "p", "fps": 30.5}, 1, None),  # a float: the encoder's spelling
        ({"model": "cogvideox-flash", "prompt": "p"}, 0, '{"model":"glm","temperature":0.0}'),
    ],
)
def test_prompt_keys_give_job_key(prompt: str, params: dict[str, Any], sample: int, enhance_json: str | None) -> None:
    """A key spelled once per manifest job equals job_key of the request with each prompt."""
    spelled = PromptKeys("geekai", params, sample, enhance_json)
    assert spelled.usable
    expected = job_key("geekai", {**params, "prompt": prompt}, None, sample, enhance_json=enhance_json)
    assert spelled.key(prompt) == expected


def test_prompt_keys_step_aside_when_the_placeholder_is_not_unique() -> None:
    """Another parameter holding the placeholder makes PromptKeys unusable (job_key is used)."""
    spelled = PromptKeys("geekai", {"model": "cogvideox-flash", "prompt": "p", "size": "\x00prompt\x00"}, 0, None)
    assert not spelled.usable


def test_job_fields_freeze_into_an_equal_frozen_job() -> None:
    """JobFields(...).freeze() is a Job equal to Job(...) with the same fields, and as frozen."""
    assert JobFields.__slots__ == Job.__slots__
    values: tuple[Any, ...] = ("a-r1", "k" * 64, 3, "geekai", {"model": "m"}, None, 1, None, "a", None, {"fps": 30})
    built = JobFields(*values).freeze()
    assert type(built) is Job and built == Job(*values)
    assert dataclasses.astuple(built) == dataclasses.astuple(Job(*values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.id = "b"  # type: ignore[misc]


ROWS = [
    {"id": "a1", "prompt": "A lighthouse at dawn"},
    {"id": "a2", "prompt": "A lighthouse at noon"},
    {"prompt": "No id: one from the content"},
    {"id": "a4", "prompt": "Its own fps", "fps": 60.0},
    {"id": "a5", "prompt": "A ${name} with no matrix"},
    {"id": "a6", "prompt": "   "},
    {"id": "a7", "prompt": "y" * 513},
    {"id": "a8", "prompt": 42},
    {"id": "a9", "prompt": True},
    {"id": "Bad Id", "prompt": "a bad id"},
    {"id": 7, "prompt": "an id that is a number"},
    {"id": "a12", "prompt": "sets the provider", "provider": "bigmodel"},
    {"id": "a13", "prompt": "an unknown key", "colour": "red"},
    {"id": "a14", "prompt": "a bool fps", "fps": True},
    {"id": "a15", "prompt": "a fps the model lacks", "fps": 24},
    {"id": "a1", "prompt": "a duplicate id"},
    {"id": "a17", "prompt": "A lighthouse at dawn"},
    {"id": "a18", "prompt": "A lighthouse at dusk"},
]

MIXED_ROWS = [  # rows with parameters of their own, interleaved: a template per shape
    {"prompt": "No id, its own fps", "fps": 60},
    {"id": "m2", "prompt": "Prompt only"},
    {"fps": 60, "prompt": "No id, the keys the other way round"},
    {"id": "m4", "prompt": "Its own fps again", "fps": 60},
    {"id": "m5", "prompt": "Its own size", "size": "1280x720"},
    {"id": "m6", "prompt": "Its own fps as a float", "fps": 60.0},
    {"id": "m7", "prompt": "Size and audio", "size": "1280x720", "with_audio": True},
    {"id": "m8", "prompt": "Audio and size", "with_audio": True, "size": "1280x720"},
    {"id": "m9", "prompt": "Its own fps once more", "fps": 60},
    {"prompt": "No id, no fps"},
]

BAD_MIXED_ROWS = [  # shapes whose request is wrong, met more than once, beside good ones
    {"id": "b1", "prompt": "A fps the model lacks", "fps": 24},
    {"id": "b2", "prompt": "A good one", "fps": 60},
    {"id": "b3", "prompt": "The same wrong fps", "fps": 24},
    {"prompt": "No id, the same wrong fps", "fps": 24},
    {"id": "b5", "prompt": "A list", "fps": [60]},
    {"id": "b6", "prompt": "A list again", "fps": [60]},
    {"id": "b7", "fps": 60},
    {"id": "b8", "prompt": "An image of its own", "image": "missing.png"},
    {"id": "b9", "prompt": "A good one", "fps": 60},
    {"id": "b10", "prompt": "A good one"},
    {"prompt": "A good one", "fps": 60},
    {"id": "b12", "prompt": "Prompt only, then a bad fps"},
    {"id": "b13", "prompt": "A float fps the model lacks", "fps": 24.0},
]


def _manifest(tmp_path: Path, rows: list[dict[str, Any]], job_keys: str = "", samples: int = 2, job_id: str = "s") -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\ndefaults:\n  model: cogvideox-3\n  fps: 30.0\n"
        f"jobs:\n  - id: {job_id}\n    prompts_file: rows.jsonl\n    samples: {samples}\n{job_keys}",
        encoding="utf-8",
    )
    return path


def _outcome(path: Path) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Each job's fields (params with their order) and each error, as text."""
    try:
        manifest = load_manifest(path)
    except ManifestErrors as exc:
        return [], [str(e) for e in exc.errors]
    return [(*dataclasses.astuple(j), list(j.params.items()), j.location) for j in manifest.jobs], []


@pytest.mark.parametrize(
    "rows",
    [
        ROWS,
        [r for r in ROWS if r.get("id") in ("a1", "a2", "a4", "a18")] + [{"prompt": "x"}],
        MIXED_ROWS,
        BAD_MIXED_ROWS,
        ROWS + MIXED_ROWS + BAD_MIXED_ROWS,
    ],
    ids=["with-errors", "valid", "mixed", "mixed-with-errors", "all"],
)
@pytest.mark.parametrize("job_keys", ["", "    size: 1280x720\n", "    prompt: a default ${x}\n"])
@pytest.mark.parametrize("samples", [1, 2])
def test_rows_shortcut_agrees_with_the_general_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]], job_keys: str, samples: int
) -> None:
    """A prompts file's jobs and located errors are the same with the rows' shortcut as through
    _request for every row: keys, params (in order), ids, locations, each message."""
    path = _manifest(tmp_path, rows, job_keys, samples)
    fast = _outcome(path)
    monkeypatch.setattr(expand, "_expand_rows", expand._expand_combinations)
    slow = _outcome(path)
    assert fast == slow
    assert fast[0] or fast[1]  # something was compared


@pytest.mark.parametrize("job_keys", ["", "    size: 1280x720\n", "    enhance: {model: glm-4-flash}\n"])
@pytest.mark.parametrize("samples", [1, 2])
def test_mixed_rows_take_the_shortcut_and_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_keys: str, samples: int
) -> None:
    """Rows with parameters of their own go through _request once per shape, not once per row,
    and their jobs are those of the general expansion."""
    path = _manifest(tmp_path, MIXED_ROWS, job_keys, samples)
    calls: list[object] = []
    original = expand._request

    def counted(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(expand, "_request", counted)
    fast = _outcome(path)
    shapes = len(calls)
    monkeypatch.setattr(expand, "_expand_rows", expand._expand_combinations)
    assert fast == _outcome(path) and fast[0]
    assert shapes == 7 < len(MIXED_ROWS)  # prompt; fps; fps first; size; fps 60.0; size+audio; audio+size


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "p"},
        {"prompt": "p", "fps": 60},
        {"fps": 60, "prompt": "灯塔 \u2028 \" \\"},
        {"prompt": "p", "fps": 60.5, "size": "1280x720", "with_audio": False, "quality": None},
        {"prompt": "p", "fps": [60]},
        {"prompt": 42},
        {"fps": 60},
        {"prompt": "\x00prompt\x00"},
        {"prompt": "p", "size": "\x00prompt\x00"},
    ],
)
def test_row_ids_spelled_per_shape_are_row_id(fields: dict[str, Any]) -> None:
    """An id-less row's id from its shape's spelled JSON equals row_id of its fields, the
    second time (spelled) as the first."""
    ids = _RowIds()
    assert ids.of(dict(fields)) == row_id(fields)
    if isinstance(fields.get("prompt"), str):
        other = {**fields, "prompt": fields["prompt"] + " and more"}
        assert ids.of(other) == row_id(other)


def test_location_fields_freeze_into_an_equal_location() -> None:
    """_LocationFields(file, line).freeze() is a Location equal to Location(file, line, 1), and as frozen."""
    built = _LocationFields("rows.jsonl", 7).freeze()
    assert type(built) is Location and built == Location("rows.jsonl", 7, 1) and hash(built) == hash(Location("rows.jsonl", 7, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.line = 8  # type: ignore[misc]


def test_locations_made_slot_by_slot_equal_locations_built_one_by_one() -> None:
    """_locations(file, lines) are Locations equal to Location(file, line, 1) each, and as frozen."""
    built = _locations("rows.jsonl", range(1, 5))
    assert built == [Location("rows.jsonl", n, 1) for n in range(1, 5)] and all(type(b) is Location for b in built)
    assert str(built[2]) == "rows.jsonl:3:1" and hash(built[0]) == hash(Location("rows.jsonl", 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].line = 8  # type: ignore[misc]


def test_rows_shortcut_reports_a_bad_shared_default_once_per_place(tmp_path: Path) -> None:
    """A wrong job-level value under prompt-only rows is reported at the job, as before."""
    path = _manifest(tmp_path, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}], "    size: 999x999\n")
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(path)
    assert [e.path for e in caught.value.errors] == ["$.jobs[0].size"]


@pytest.mark.parametrize(
    "text",
    [
        '{"prompt": "a"}\n{"prompt": "b"}\n',
        '{"prompt": "a"}\n{"prompt": "b"}',
        '{"prompt": "a"}\n\n{"prompt": "b"}\n',
        '{"prompt": "a"}\n   \n{"prompt": "b"}\n\n',
        '{"prompt": "a"}\r\n{"prompt": "b"}\r\n',
        '{"prompt": "a\u2028b"}\n{"prompt": "c"}\n',
        '{"prompt": "a"}, {"prompt": "b"}\n{"prompt": "c"}\n',
        '[{"prompt": "a"}\n{"prompt": "b"}]\n',
        '{"prompt": "a",\n"fps": 30}\n',
        '{"prompt": "a"}\n"text"\n',
        '{"prompt": "a\x0bb"}\n{"prompt": "c"}\n',
        '{"prompt": "a"}\x0c\n{"prompt": "c"}\n',
        '{"prompt": "a\\u2028b"}\n',
        "\n",
        "",
    ],
)
def test_jsonl_parsed_at_once_agrees_with_line_by_line(text: str) -> None:
    """Rows (with their line numbers) and problems equal those of reading line by line."""
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows, problems = parse_rows(text, ".jsonl")
    assert (list(rows), problems) == _jsonl_line_by_line(numbered)


def test_loading_pauses_the_collector_and_restores_it(tmp_path: Path) -> None:
    """The collector is on after a load (valid or not), and stays off if it was off."""
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = _manifest(tmp_path / "good", [{"id": "a", "prompt": "p"}])
    assert gc.isenabled()
    load_manifest(good)
    assert gc.isenabled()
    with pytest.raises(ManifestErrors):
        load_manifest(_manifest(tmp_path / "bad", [{"id": "Bad Id", "prompt": "p"}]))
    assert gc.isenabled()
    gc.disable()
    try:
        load_manifest(good)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_plan_of_new_jobs_is_what_decide_says_of_each(tmp_path: Path) -> None:
    """make_plan's shortcut for new jobs gives decide's step; an edited job (same id, new
    key) and the jobs --only leaves out are still decided in full."""
    jobs = [make_job(f"j{i}", i, size="1024x1024" if i % 2 else "1280x960") for i in range(6)]
    plan = make_plan(jobs, {}, tmp_path, provider="geekai")
    assert list(plan.steps) == [decide(job, None, tmp_path) for job in jobs]
    earlier = JobRecord("another-key", "j2", "succeeded", "t1", video={"path": "x", "sha256": "0", "bytes": 1})
    plan = make_plan(jobs, {"another-key": earlier}, tmp_path, provider="geekai", only=["j[0-3]"])
    assert [s.job.id for s in plan.steps] == ["j0", "j1", "j2", "j3"]
    assert plan.steps[2].reason == "edited since its earlier request (task t1): a new job"


def test_plan_table_pads_each_column_to_its_widest_cell(tmp_path: Path) -> None:
    """Every cell but the reason is left-justified to its column's width, two spaces apart."""
    jobs = [make_job("a", 0), make_job("a-much-longer-id", 1, size="1280x960", model="cogvideox-3")]
    plan = make_plan(jobs, {}, tmp_path, provider="bigmodel")
    plan = dataclasses.replace(plan, steps=(plan.steps[0], dataclasses.replace(plan.steps[1], reason="édité → x")))
    lines = plan_table(plan, 4, None).splitlines()
    rows = [("JOB", "KEY", "MODEL", "SIZE", "ACTION", "REASON")] + [
        (s.job.id, s.job.key[:12], s.job.model, str(s.job.params.get("size", "(provider default)")), s.action, s.reason)
        for s in plan.steps
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    expected = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5] for row in rows]
    assert lines[:3] == expected
    assert lines[1].startswith("a                 ") and lines[2].endswith("submit  édité → x")


def test_the_prompt_check_agrees_with_the_schema() -> None:
    """The prompt's fast check accepts exactly what jsonschema accepts under $defs/prompt (a
    lone newline passes both: ``$`` matches before a final newline)."""
    import sys

    checks = validators()
    prompt = checks.manifest.evolve(schema=load_schema("manifest")["$defs"]["prompt"])
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    samples = ["", "a", " a ", "\n\n", "".join(spaces), "\u200b", "\ufeff", "x" * 512, "x" * 513, " " * 512, *spaces]
    for text in samples:
        assert checks.prompt_ok(text) == prompt.is_valid(text), repr(text)


def test_prompt_params_are_the_dict_they_stand_for() -> None:
    """PromptParams(shared, prompt) reads, iterates (in order), compares, copies and pickles as
    {**shared, "prompt": prompt}, and keys the same."""
    import copy
    import pickle

    shared = {"model": "cogvideox-3", "prompt": "first", "size": "1280x720", "fps": 60}
    params = PromptParams(shared, "second")
    expected = {**shared, "prompt": "second"}
    assert params == expected and expected == params and params != shared
    assert list(params.items()) == list(expected.items()) and dict(params) == expected
    assert params["prompt"] == params.get("prompt") == "second" and params.get("quality", "-") == "-"
    assert "fps" in params and "quality" not in params and len(params) == 4
    with pytest.raises(KeyError):
        params["quality"]
    assert {**params} == expected and repr(params) == repr(expected)
    assert pickle.loads(pickle.dumps(params)) == expected and copy.deepcopy(params) == expected
    assert job_key("geekai", params, None, 1) == job_key("geekai", expected, None, 1)
    assert shared["prompt"] == "first"


def test_prompts_file_jobs_share_their_template(tmp_path: Path) -> None:
    """Jobs of a prompts file's rows hold PromptParams over one shared template per shape."""
    manifest = load_manifest(_manifest(tmp_path, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}]))
    first, second = (job.params for job in manifest.jobs[::2])
    assert isinstance(first, PromptParams) and isinstance(second, PromptParams)
    assert first._shared is second._shared and (first["prompt"], second["prompt"]) == ("p", "q")


def test_new_job_steps_are_frozen_steps(tmp_path: Path) -> None:
    """A plan's new-job step is a Step equal to Step(job, "submit", "new job"), and as frozen."""
    from batchvid.plan import Step, _StepFields

    assert _StepFields.__slots__ == Step.__slots__
    job = make_job("a", 0)
    (step,) = make_plan([job], {}, tmp_path, provider="geekai").steps
    assert type(step) is Step and step == Step(job, "submit", "new job")
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.action = "skip"  # type: ignore[misc]


@pytest.mark.parametrize(
    "rows",
    [
        MIXED_ROWS,
        MIXED_ROWS + [{"id": "m2", "prompt": "A duplicate id"}],
        MIXED_ROWS + [{"id": "m11", "prompt": "Prompt only"}],  # the same request as m2
        MIXED_ROWS + [{"id": "x" * 100, "prompt": "An id cut to the limit (with the job's)"}],
    ],
    ids=["usual", "duplicate-id", "duplicate-request", "long-id"],
)
def test_runs_added_at_once_agree_with_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]
) -> None:
    """A run of one-sample rows is added in bulk only when no id or key is taken or too long,
    and its jobs (or errors) are those of the row-by-row loop."""
    path = _manifest(tmp_path, rows, samples=1, job_id="j" * 100)
    taken: list[bool] = []
    at_once = files._Jobs._add_at_once
    monkeypatch.setattr(files._Jobs, "_add_at_once", lambda self, run: taken.append(at_once(self, run)) or taken[-1])
    fast = _outcome(path)
    monkeypatch.setattr(files._Jobs, "_add_at_once", lambda self, run: False)
    assert fast == _outcome(path) and (fast[0] or fast[1])
    assert taken == [rows is MIXED_ROWS]


def test_spelled_keys_are_each_prompts_key() -> None:
    """spelled_keys of (spelling, prompt) pairs equals each spelling's key of its prompt."""
    spellings = [PromptKeys("geekai", {"model": "cogvideox-3", "prompt": "p", "fps": fps}, 0, None) for fps in (30, 60)]
    pairs = [(spellings[i % 2], prompt) for i, prompt in enumerate(TRICKY_PROMPTS)]
    assert spelled_keys([s for s, _ in pairs], [p for _, p in pairs]) == [s.key(p) for s, p in pairs]


# -- rows read, expanded and planned in C-level passes (issue 12, fourth pass) ------------------

GOOD_SHAPES_ONE_BAD = [  # every prompt valid, no image or list: the rows' bulk expansion's case
    {"id": "g1", "prompt": "Prompt only"},
    {"prompt": "No id, its own fps", "fps": 60},
    {"id": "g3", "prompt": "A fps the model lacks", "fps": 24},
    {"id": "g4", "prompt": "Prompt only again"},
    {"id": "g5", "prompt": "The wrong fps again", "fps": 24},
    {"prompt": "No id, prompt only"},
    {"id": "g7", "prompt": "Its own size", "size": "1280x720"},
    {"id": "g8", "prompt": "Its own fps again", "fps": 60},
]
ROW_SETS = {
    "ids": [{"id": f"r{i}", "prompt": f"Prompt {i}"} for i in range(5)],
    "no-ids": [{"prompt": f"Prompt {i}"} for i in range(5)],
    "some-ids": [{"id": f"r{i}", "prompt": f"Prompt {i}"} if i % 2 else {"prompt": f"Prompt {i}"} for i in range(6)],
    "some-ids-own-fps": [{"prompt": f"P {i}", **({"id": f"r{i}"} if i % 2 else {}), **({"fps": 60} if i % 3 == 0 else {})} for i in range(7)],
    "no-prompt-no-id": [{"prompt": "a"}, {"fps": 60}, {"id": "r3", "prompt": "c"}],
    "bad-id": [{"id": "r1", "prompt": "a"}, {"id": "R2", "prompt": "b"}],
    "number-id": [{"id": "r1", "prompt": "a"}, {"id": 2, "prompt": "b"}],
    "provider": [{"id": "r1", "prompt": "a"}, {"prompt": "b", "provider": "bigmodel"}],
    "long-id": [{"id": "r" * 101, "prompt": "a"}, {"prompt": "b"}],
    "one-bad-shape": GOOD_SHAPES_ONE_BAD,
    "first-shape-bad": GOOD_SHAPES_ONE_BAD[2:],
    "only-bad": [{"prompt": "a", "fps": 24}, {"prompt": "b", "fps": 24}],
    "dollar": [{"id": "r1", "prompt": "a"}, {"id": "r2", "prompt": "costs $5"}],
    "empty-prompt": [{"id": "r1", "prompt": "a"}, {"id": "r2", "prompt": ""}],
}


@pytest.mark.parametrize("rows", list(ROW_SETS.values()), ids=list(ROW_SETS))
@pytest.mark.parametrize("samples", [1, 2])
def test_rows_in_bulk_agree_with_the_general_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]], samples: int
) -> None:
    """Rows read (ids, locations) and expanded (a template per shape) in bulk give the jobs and
    located errors of the row-by-row reading through _request for every row."""
    from batchvid.manifest import rows as rows_module

    path = _manifest(tmp_path, rows, samples=samples)
    taken: list[bool] = []
    at_once = rows_module._rows_at_once
    monkeypatch.setattr(rows_module, "_rows_at_once", lambda *args: taken.append(at_once(*args) is not None) or at_once(*args))
    fast = _outcome(path)
    assert taken == [not any(r.get("id") in ("R2", 2, "r" * 101) or "provider" in r for r in rows)]
    monkeypatch.setattr(rows_module, "_rows_at_once", lambda *args: None)
    monkeypatch.setattr(expand, "_expand_rows", expand._expand_combinations)
    assert fast == _outcome(path) and (fast[0] or fast[1])


@pytest.mark.parametrize("rows", list(ROW_SETS.values()), ids=list(ROW_SETS))
def test_rows_expanded_in_bulk_agree_with_the_rows_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]]
) -> None:
    """The bulk expansion makes the _request calls (in order), jobs and errors of the loop it
    shortcuts, when a shape's request is wrong too; also with more shapes than it takes."""
    path = _manifest(tmp_path, rows, samples=1)
    calls: list[Any] = []
    original = expand._request
    monkeypatch.setattr(expand, "_request", lambda *args: calls.append(args[2].row.number) or original(*args))
    fast, fast_calls = _outcome(path), list(calls)
    calls.clear()
    monkeypatch.setattr(expand, "_MANY_SHAPES", 1)
    few = _outcome(path)
    assert (few, calls) == (fast, fast_calls)
    calls.clear()
    monkeypatch.setattr(expand, "_rows_at_once", lambda c, s, f, b, rows, shapes, t: expand._rows_in_turn(c, s, f, b, rows, t, None))
    assert (_outcome(path), calls) == (fast, fast_calls)


def test_good_shapes_with_a_bad_one_go_in_bulk_up_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose prompts all pass are expanded in bulk: _request once per shape up to the
    first wrong one, then row by row (each row of a wrong shape reported where it is)."""
    calls: list[int] = []
    original, in_turn = expand._request, expand._rows_in_turn
    monkeypatch.setattr(expand, "_request", lambda *args: calls.append(args[2].row.number) or original(*args))
    handed: list[list[int]] = []
    monkeypatch.setattr(expand, "_rows_in_turn", lambda *args: handed.append([r.number for r in args[4]]) or in_turn(*args))
    with pytest.raises(ManifestErrors) as caught:
        load_manifest(_manifest(tmp_path, GOOD_SHAPES_ONE_BAD, samples=1))
    assert calls == [0, 1, 2, 4, 6]  # prompt only; fps 60; fps 24 (wrong); row 4 (fps 24) alone; size
    assert handed == [[3, 4, 5, 6, 7]]  # the rows after the wrong shape's first; those before in bulk
    assert [str(e.location.line) for e in caught.value.errors] == ["3", "5"]


WHITESPACE = [chr(c) for c in range(0x3001) if re.fullmatch(r"\s", chr(c))] + ["\u200b", "\ufeff", "\x1c"]


@pytest.mark.parametrize(
    "texts",
    [["a", "b-1", "x" * 100], [], ["a", "A"], ["a", "x" * 101], ["a", ""], ["a\n"], ["a", " b"], [" ", "a"],
     ["a/b"], ["a/", "b"], ["a", "/b"], ["a", "b\n", "c"], ["a", "b\nc"], ["a.b", "-c"], ["0", "9_z", "a..b"], ["é"],
     *([space, f"{space}a{space}", space * 3] for space in WHITESPACE)],
)  # fmt: skip
def test_bulk_string_checks_agree_with_each(texts: list[str]) -> None:
    """ids_ok and prompts_ok of a list say whether id_ok and prompt_ok pass every string of it."""
    checks = validators()
    assert checks.ids_ok(texts) == all(map(checks.id_ok, texts))
    assert checks.prompts_ok(texts) == all(map(checks.prompt_ok, texts))
    assert checks.prompts_ok(texts) == all(checks.prompts_ok([text]) for text in texts)


@pytest.mark.parametrize("rows", list(ROW_SETS.values())[:5], ids=list(ROW_SETS)[:5])
def test_row_ids_in_bulk_are_each_rows_id(rows: list[dict[str, Any]]) -> None:
    """_RowIds.many gives each row its written id, or of() its fields when it has none."""
    givens = [row.get("id") for row in rows]
    fields = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    assert _RowIds().many(givens, fields) == [g if g is not None else row_id(f) for g, f in zip(givens, fields, strict=True)]


def test_a_plan_of_many_shapes_is_tabled_and_priced_as_job_by_job(tmp_path: Path) -> None:
    """The plan's table, cost and unpriced models, read once per parameters dict, are those
    read job by job: prompts-file jobs (shared parameters) beside jobs with their own dict."""
    rows = [{"prompt": f"P {i}", **({"size": "1280x720"} if i % 3 else {})} for i in range(7)]
    manifest = load_manifest(_manifest(tmp_path, rows, samples=1))
    mixed = [*manifest.jobs, make_job("own", 7, model="cogvideox-2"), make_job("odd", 8, model="no-such-model")]
    plan = make_plan(mixed, {}, tmp_path, provider="bigmodel", pricing={"cogvideox-3": 0.1, "cogvideox-2": 0.2})
    submits = [s for s in plan.steps if s.action == "submit"]
    assert plan.cost == sum(plan.prices.get(s.job.model) or 0.0 for s in submits)
    assert plan.unpriced == ["no-such-model"]
    rows_shown = [("JOB", "KEY", "MODEL", "SIZE", "ACTION", "REASON")] + [
        (s.job.id, s.job.short_key, s.job.model, str(s.job.params.get("size", "(provider default)")), s.action, s.reason)
        for s in plan.steps
    ]
    widths = [max(len(row[i]) for row in rows_shown) for i in range(5)]
    expected = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5] for row in rows_shown]
    table = plan_table(plan, 4, None).splitlines()
    assert table[: len(expected)] == expected
    assert table[len(expected) + 2] == f"estimated cost: {plan.cost:g} CNY + unknown price for no-such-model (set pricing: in the manifest)"
    without = {name: dataclasses.replace(plan, steps=tuple(s for s in plan.steps if s.job.id != name)) for name in ("odd", "own")}
    assert without["odd"].unpriced == [] and plan.unpriced == ["no-such-model"]  # each plan's models its own
    assert without["own"].cost == pytest.approx(plan.cost - 0.2) and without["own"].unpriced == ["no-such-model"]


def test_a_verified_jobs_step_is_a_frozen_step(tmp_path: Path) -> None:
    """A rerun's step for a job whose video verifies is a Step equal to Step(job, "skip", ...), and as frozen."""
    import hashlib

    from batchvid.plan import Step

    job = make_job("a", 0)
    video = tmp_path / "jobs" / "a" / "video.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"frames")
    digest = hashlib.sha256(b"frames").hexdigest()
    record = JobRecord(job.key, "a", "succeeded", "t1", video={"path": "jobs/a/video.mp4", "sha256": digest, "bytes": 6})
    (step,) = make_plan([job], {job.key: record}, tmp_path, provider="geekai").steps
    assert type(step) is Step and step == Step(job, "skip", f"done; video verified ({digest[:12]})", record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.action = "submit"  # type: ignore[misc]


def test_the_provider_is_asked_for_idempotence_only_for_an_unanswered_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning a journaled directory asks the providers (importing httpx) only when a create's
    answer is missing, the one decision that depends on it."""
    import batchvid.plan as plan_module

    asked: list[str] = []
    monkeypatch.setattr(plan_module, "_idempotent", lambda provider: asked.append(provider) or True)
    jobs = [make_job("a", 0), make_job("b", 1)]
    failed = JobRecord(jobs[0].key, "a", "failed", "t1", error={"kind": "timeout", "message": "m"})
    make_plan(jobs, {jobs[0].key: failed}, tmp_path, provider="bigmodel")
    assert asked == []
    sent = JobRecord(jobs[1].key, "b", "submitting", None)
    plan = make_plan(jobs, {jobs[0].key: failed, jobs[1].key: sent}, tmp_path, provider="bigmodel")
    assert asked == ["bigmodel"] and plan.steps[1].action == "submit"


def test_shared_column_reads_each_jobs_parameters() -> None:
    """shared_column is read(job.params) of each job, whether jobs share a template (prompts
    files' PromptParams), hold equal dicts of their own, or differ; read once per distinct dict."""
    from batchvid.jobs import shared_column

    flash, three = {"model": "cogvideox-flash", "prompt": "p"}, {"model": "cogvideox-3", "prompt": "p", "size": "1280x720"}
    jobs = [
        dataclasses.replace(make_job(f"j{i}"), params=params)
        for i, params in enumerate(
            [PromptParams(flash, "a"), PromptParams(flash, "c"), PromptParams(three, "b"), dict(three),
             dict(three, size="720x1280"), PromptParams(three, "d"), PromptParams(three, "e"), flash]
        )
    ]  # fmt: skip
    reads: list[object] = []

    def size(params: Any) -> str:
        reads.append(params)
        return str(params.get("size", "-"))

    column = shared_column(jobs, size)
    assert len(reads) == 4  # flash, three, and the two dicts of their own
    assert shared_column(jobs[:2], size) == ["-", "-"] and len(reads) == 5  # one dict: one read
    assert column == [size(job.params) for job in jobs] == ["-", "-", "1280x720", "1280x720", "720x1280", "1280x720", "1280x720", "-"]


def test_a_prompts_files_jobs_are_made_only_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded manifest counts its prompts-file jobs without making them (what validate
    asks); once one is asked for, the sequence is the tuple the row-by-row loop makes."""
    from batchvid.jobs import JobSequence

    rows = [{"id": "a", "prompt": "first"}, {"id": "b", "prompt": "second"}, {"id": "c", "prompt": "third"}]
    path = _manifest(tmp_path, rows, samples=1, job_keys="  - id: plain\n    prompt: one of its own\n")
    made: list[int] = []
    freeze = JobFields.freeze
    monkeypatch.setattr(JobFields, "freeze", lambda self: made.append(1) or freeze(self))
    jobs = load_manifest(path).jobs
    assert isinstance(jobs, JobSequence) and len(jobs) == 4 and bool(jobs) and made == [1]  # "plain" alone
    monkeypatch.setattr(files._Jobs, "_add_at_once", lambda self, run: False)
    looped = tuple(load_manifest(path).jobs)
    assert jobs[0] == looped[0] and len(made) == 1 + 3 + 4  # the first ask made the rest; the loop all
    assert jobs == looped and looped == jobs and list(jobs) == list(looped) and jobs[1:3] == looped[1:3]
    assert [job.index for job in jobs] == [0, 1, 2, 3] and jobs[-1].id == "plain" and looped[2] in jobs


def test_a_plan_of_new_prompts_file_jobs_makes_no_job_and_shows_what_the_made_jobs_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make_plan`` of a fresh directory keeps a prompts file's new jobs as columns (no Job
    made); its table, counts and cost are those of the plan of the same jobs made one by one,
    and its steps, once asked for, equal that plan's."""
    rows = [{"prompt": f"scene {i}", **({"id": f"r{i}"} if i % 2 else {}), **({"size": "1920x1080"} if i % 3 else {})} for i in range(7)]
    path = _manifest(tmp_path, rows, samples=1)
    made: list[int] = []
    freeze = JobFields.freeze
    monkeypatch.setattr(JobFields, "freeze", lambda self: made.append(1) or freeze(self))
    manifest = load_manifest(path)
    plan = make_plan(manifest.jobs, {}, tmp_path / "out", provider="geekai", pricing={"cogvideox-3": 0.5})
    table = plan_table(plan, 4, 30.0)
    assert made == [] and (plan.cost, plan.counts(), plan.unpriced) == (3.5, {"submit": 7}, [])
    looped = make_plan(tuple(load_manifest(path).jobs), {}, tmp_path / "out", provider="geekai", pricing={"cogvideox-3": 0.5})
    assert isinstance(looped.steps, tuple) and table == plan_table(looped, 4, 30.0) and "1920x1080" in table
    assert plan.steps == looped.steps and looped.steps == plan.steps and plan.steps[3] == looped.steps[3]
