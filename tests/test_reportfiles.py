"""The one-pass report writer: the same bytes as the file-at-a-time reference, for any run."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from batchvid.jobs import Job
from batchvid.report import (
    Outcome,
    RunInfo,
    build_report,
    entries_with_status,
    succeeded_counts,
    write_legacy,
    write_outputs,
)
from tests.helpers import make_job

FILES = ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html")
TEXTS = ["a fox", "ünï ≠ 😀", "line\u2028sep\u2029para", 'say "hi" & <b>', "{0} {x} %s %%", "tab\there\nnew",
         "<html><body><h1>502</h1></body></html>", "", "bell\x07\x1b[0m", "a|b"]


def _info(**changes: Any) -> RunInfo:
    info = RunInfo("m.yaml", "demo ✓", "geekai", 1, None, "2026-01-01T00:00:00+00:00",
                   "2026-01-01T00:00:09+00:00", 9.0, 1.25, "CNY")
    return dataclasses.replace(info, **changes)


def _sha(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(64))


def _media(rng: random.Random) -> dict[str, Any] | None:
    kind = rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return {}
    media: dict[str, Any] = {"width": 160, "height": rng.choice([90, 10**30]), "fps": rng.choice([30.0, 24, 0.1]),
                             "duration": 1.0, "has_audio": rng.random() < 0.5, "codec": "h264"}
    if kind >= 3:
        media["quality"] = {"motion": rng.random(), "black_fraction": 0.0, "frozen_fraction": 0.5,
                            "note": rng.choice(TEXTS)}
    if kind == 4:
        del media["duration"]
    return media


def _job(rng: random.Random, n: int) -> Job:
    params: dict[str, Any] = {"prompt": rng.choice(TEXTS) + f" {n}", "fps": rng.choice([30, 60])}
    if rng.random() < 0.2:
        params["we{ird}%"] = rng.choice(TEXTS)
    if rng.random() < 0.1:
        del params["prompt"]
    job = make_job(f"{rng.choice(['sweep-fox', 'z', 'a', 'ünï'])}-{n}", n, **params)
    if rng.random() < 0.2:
        job = dataclasses.replace(job, source="sweep", matrix={"animal": rng.choice(["fox", "owl"]), "n": n % 3})
    return job


def _outcome(rng: random.Random, n: int) -> Outcome:
    job = _job(rng, n)
    status = rng.choice(["succeeded", "succeeded", "skipped", "failed", "pending"])
    action = {"skipped": "skip"}.get(status, rng.choice(["submit", "reattach", "download"]))
    o = Outcome(job, status, action, task_id=rng.choice([None, f"t{n}", "ünï"]),
                attempts=rng.randrange(3), seconds=rng.choice([None, 1.5, 0.25]))
    if status in ("succeeded", "skipped") or rng.random() < 0.3:
        o.video = {"path": f"jobs/{job.id}/video.mp4", "sha256": _sha(rng), "bytes": rng.randrange(10**6)}
        o.media = _media(rng)
    if rng.random() < 0.5:
        o.poster = {"path": f"jobs/{job.id}/poster.jpg", "sha256": _sha(rng), "bytes": 3}
    if rng.random() < 0.2:
        o.cover = {"path": f"jobs/{job.id}/cover.jpg", "sha256": _sha(rng), "bytes": 4}
    if rng.random() < 0.3:
        o.provided = {"revised_prompt": rng.choice(TEXTS), "provider_duration": rng.choice([None, 5])}
    if status in ("failed", "pending"):
        o.error = {"kind": rng.choice(["content_filter", "not_started"]), "message": rng.choice(TEXTS)}
    if rng.random() < 0.15:
        o.warnings = [rng.choice(TEXTS), "b warning"]
    if rng.random() < 0.2:
        o.enhance = {"prompt": rng.choice(TEXTS), "original": rng.choice(TEXTS), "status": "ok",
                     "warning": rng.choice([None, "cut"]), "model": "glm-4-flash", "requests": 1, "tokens": 12}
    if rng.random() < 0.5:
        o.pack()
    return o


def _run(seed: int, jobs: int) -> list[Outcome]:
    rng = random.Random(seed)
    return [_outcome(rng, n) for n in range(jobs)]


def _reference(root: Path, outcomes: list[Outcome], info: RunInfo) -> None:
    write_legacy(root, build_report(outcomes, info), outcomes, info)


def _assert_same(tmp_path: Path, outcomes: list[Outcome], info: RunInfo) -> None:
    _reference(tmp_path / "reference", outcomes, info)
    report = write_outputs(tmp_path / "one-pass", outcomes, info)
    for name in FILES:
        assert (tmp_path / "one-pass" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert report["jobs"] == build_report(outcomes, info)["jobs"]


@pytest.mark.parametrize("seed", range(8))
def test_random_hostile_runs_write_the_reference_bytes(tmp_path: Path, seed: int) -> None:
    """Runs of every status, packed or not, with non-ASCII, U+2028, braces, big ints, enhanced
    jobs, sweeps and odd media: every file has the reference writer's bytes."""
    _assert_same(tmp_path, _run(seed, 60), _info(shard=(1, 2) if seed % 2 else None))


def test_a_rerun_over_the_files_keeps_the_reference_bytes(tmp_path: Path) -> None:
    """Written over an earlier run's files (report.html then only retimed), the bytes still match."""
    outcomes = _run(99, 40)
    for root in (tmp_path / "reference", tmp_path / "one-pass"):
        write_outputs(root, outcomes, _info(seconds=1.0))
    _assert_same(tmp_path, outcomes, _info())


def test_a_nan_falls_back_to_the_reference_writer(tmp_path: Path) -> None:
    """A NaN (only json.dumps writes it) in one job's media: the same bytes, NaN included."""
    outcomes = _run(3, 20)
    outcomes[7].media = {"width": 1, "fps": float("nan")}
    outcomes[7].status = "succeeded"
    outcomes[7].video = {"path": "jobs/x/video.mp4", "sha256": "a" * 64, "bytes": 1}
    _assert_same(tmp_path, outcomes, _info())
    assert "NaN" in (tmp_path / "one-pass" / "report.json").read_text()


def test_an_int_json_cannot_write_fails_as_the_reference_does(tmp_path: Path) -> None:
    """An int too long to print (Python's digit limit) raises the reference writer's error, and
    no temporary file is left behind."""
    outcomes = _run(5, 10)
    outcomes[2].attempts = 10**5000
    with pytest.raises(ValueError) as reference:
        _reference(tmp_path / "reference", outcomes, _info())
    with pytest.raises(ValueError) as one_pass:
        write_outputs(tmp_path / "one-pass", outcomes, _info())
    assert str(one_pass.value) == str(reference.value)
    assert not [p.name for p in (tmp_path / "one-pass").iterdir() if p.name.startswith(".")]


def test_an_empty_run_writes_the_reference_bytes(tmp_path: Path) -> None:
    """No jobs at all: the same (empty) files."""
    _assert_same(tmp_path, [], _info())


def test_metadata_rows_read_off_an_entry_match_when_a_provider_field_shadows_one(tmp_path: Path) -> None:
    """A provider's field named like an entry field the row is read from ("key") stands in the
    entry in its place; its row is made the long way and still matches."""
    outcomes = _run(11, 12)
    for o in outcomes:
        o.provided = {"key": "shadow", "revised_prompt": "x"}
    _assert_same(tmp_path, outcomes, _info())


def test_succeeded_counts_of_a_written_report_are_those_of_its_entries(tmp_path: Path) -> None:
    """The counts the CLI's summary shows, taken from the outcomes, equal the entries' counts."""
    outcomes = _run(4, 80)
    report = write_outputs(tmp_path, outcomes, _info())
    counts = succeeded_counts(report)
    assert counts == succeeded_counts({"jobs": list(report["jobs"])})
    assert sum(counts.values()) == sum(o.status == "succeeded" for o in outcomes) > 0


def test_entries_with_a_status_of_a_written_report_are_its_entries_of_that_status(tmp_path: Path) -> None:
    """The failed entries the CLI's summary lists, made from the outcomes, are the report's."""
    report = write_outputs(tmp_path, _run(6, 50), _info())
    failed = list(entries_with_status(report, "failed"))
    assert failed == [j for j in report["jobs"] if j["status"] == "failed"] and failed
    assert list(entries_with_status({"jobs": list(report["jobs"])}, "failed")) == failed


def test_a_temporary_file_that_cannot_be_made_leaves_no_other_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata.jsonl's temporary file failing (too many open files, say) raises, and
    junit.xml's, made just before it, is removed too: the directory holds no temporary file."""
    import batchvid.textfile as textfile

    real = textfile.create_temp

    def failing(final: Path, suffix: str, **options: Any) -> Any:
        if final.name == "metadata.jsonl":
            raise OSError(24, "Too many open files")
        return real(final, suffix, **options)

    monkeypatch.setattr(textfile, "create_temp", failing)
    with pytest.raises(OSError):
        write_outputs(tmp_path, _run(1, 5), _info())
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cards_read_off_entries_match_for_odd_links_and_shadowing_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """report.html's cards made in the pass (``pagecards``) give the reference page for videos
    and covers whose paths are no links, jobs with and without posters, and a provider's field
    named like one a card reads (that card made the long way)."""
    outcomes = _run(21, 40)
    odd = ["jobs/../x/video.mp4", "jobs/a/video.mp4\n", "/abs/video.mp4", "jobs/Ü/video.mp4", ""]
    for n, o in enumerate(outcomes):
        if o.video is not None:
            o.video = {**o.video, "path": odd[n % len(odd)]} if n % 3 == 0 else o.video
        if n % 4 == 0:
            o.cover = {"path": odd[n % len(odd)] if n % 8 else f"jobs/{o.job.id}/cover.jpg", "sha256": "c"}
        if n % 5 == 0:
            o.provided = {"prompt_original": "shadow"} if n % 10 else {"task_id": "other", "error": None}
    _assert_made_in_the_pass(tmp_path, outcomes, monkeypatch)


def _assert_made_in_the_pass(tmp_path: Path, outcomes: list[Outcome], monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference bytes, with every card and pin made in the pass (none left to the long way)."""
    import batchvid.pagecards as pagecards
    import batchvid.reportfiles as reportfiles

    made: list[bool] = []
    for kind in (pagecards.CardTexts, reportfiles.PinTexts):
        real_add = kind.add

        def add(self: Any, *args: Any, real_add: Any = real_add, **kw: Any) -> None:
            real_add(self, *args, **kw)
            made.append(self.complete)

        monkeypatch.setattr(kind, "add", add)
    _assert_same(tmp_path, outcomes, _info())
    assert made and all(made)


def test_pins_read_off_entries_match_for_enhanced_jobs_and_jobs_without_a_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batchvid.lock's pins made in the pass give the reference lock for enhanced jobs, jobs
    with and without a poster, a done job without a video, and a provider field named like
    one a pin reads (that pin made the long way); ids out of manifest order are sorted."""
    outcomes = [o for o in _run(31, 80) if o.status in ("succeeded", "skipped")]
    outcomes.reverse()
    for n, o in enumerate(outcomes):
        if n % 7 == 0:
            o.video = None
        if n % 9 == 0:
            o.provided = {"prompt": "shadow"}
    _assert_made_in_the_pass(tmp_path, outcomes, monkeypatch)


def test_card_template_of_an_entry_is_the_cards_compact_json() -> None:
    """The template of an entry's shape, filled with its encoded scalars, is ``_card``'s JSON."""
    from batchvid.gallery import _COMPACT, _card, _href
    from batchvid.jsontext import shaped_parts
    from batchvid.pagecards import card_template
    from batchvid.report import job_entry

    checked = 0
    for o in _run(5, 60):
        entry = job_entry(o, o.files())
        _, shape, parts = shaped_parts(entry, "\n    ")
        if shape is None or o.provided:
            continue
        link = json.dumps(_href((entry["video"] or {}).get("path")), ensure_ascii=False)
        expected = _COMPACT(_card(entry, "p.jpg"))
        assert card_template(shape).format(*parts, '"p.jpg"', link) == expected
        checked += 1
    assert checked > 10


def test_sweeps_found_from_job_fields_are_those_of_the_full_entries() -> None:
    """The entries' own fields read lazily (``JobFields``) read as the entries' id, sample,
    parameters, source and matrix, and give the sweeps the full entries give."""
    from batchvid.report import JobEntries
    from batchvid.sweeps import find_sweeps

    for seed in range(4):
        outcomes = _run(seed, 60)
        entries, light = list(JobEntries(outcomes)), JobEntries(outcomes).without_files()
        assert [dict(fields) for fields in light] == [
            {k: e[k] for k in ("id", "sample", "parameters", "source", "matrix") if k in e} for e in entries
        ]
        assert [s.to_dict() for s in find_sweeps(light)] == [s.to_dict() for s in find_sweeps(entries)]
    plain = [Outcome(make_job(f"fox-{c}", n, prompt=f"a {c} fox"), "pending", "submit")
             for n, c in enumerate(["red", "blue", "green"])]
    found = find_sweeps(JobEntries(plain).without_files())
    assert found and [s.to_dict() for s in found] == [s.to_dict() for s in find_sweeps(list(JobEntries(plain)))]


@pytest.mark.parametrize(("changed", "first"), [
    (None, None), ({"exit_code": 0}, 0), ({"manifest": "other.yaml"}, None), (0, 0), (17, 17), (39, 39)])
def test_a_rerun_makes_cards_only_from_the_first_entry_that_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changed: Any, first: int | None
) -> None:
    """Written over an earlier run's files, cards are made in the pass only from the first job
    whose entry differs from the replaced report.json, or from the first job when what comes
    before the jobs does (none when nothing before the timing differs, or only what follows the
    jobs: the page then makes its cards itself when it must); every file has the reference bytes."""
    import batchvid.pagecards as pagecards

    # No job skipped or generated: no pieces recorded (with them, the cards before are copied:
    # test_reportpieces).
    outcomes = [o for o in _run(41, 60) if not o.warnings and o.status != "skipped"
                and (o.status, o.action) != ("succeeded", "submit")]
    write_outputs(tmp_path / "one-pass", outcomes, _info(seconds=1.0))
    info = _info(**changed) if isinstance(changed, dict) else _info()
    if isinstance(changed, int):
        first = changed = min(changed, len(outcomes) - 1)
        outcomes[changed].status, outcomes[changed].error = "failed", {"kind": "k", "message": "new"}
    firsts: list[int] = []
    real_init = pagecards.CardTexts.__init__

    def init(self: pagecards.CardTexts, root: Path, first: int = 0, marks: Any = None) -> None:
        real_init(self, root, first, marks)
        firsts.append(first)

    monkeypatch.setattr(pagecards.CardTexts, "__init__", init)
    _assert_same(tmp_path, outcomes, info)
    assert firsts == ([] if first is None else [first])


def test_text_utf8_cannot_hold_fails_as_the_reference_does_and_leaves_no_file(tmp_path: Path) -> None:
    """A lone surrogate (a journal's "\\ud800") in a failed job's message: the one-pass writer
    raises the reference writer's error, and neither leaves a file or a temporary one (the
    cards' and pins' included)."""
    outcomes = _run(3, 20)
    outcomes[2].status, outcomes[2].error = "failed", {"kind": "k", "message": "bad \ud800 text"}
    with pytest.raises(UnicodeEncodeError) as reference:
        _reference(tmp_path / "reference", outcomes, _info())
    with pytest.raises(UnicodeEncodeError) as one_pass:
        write_outputs(tmp_path / "one-pass", outcomes, _info())
    assert str(one_pass.value) == str(reference.value)
    assert list((tmp_path / "one-pass").iterdir()) == list((tmp_path / "reference").iterdir()) == []


def test_a_format_template_fills_as_str_format_does() -> None:
    """``FormatTemplate``'s ``fill(values)`` is ``str.format``'s text: fields reordered and
    repeated, one field or none, literal "%" and escaped braces."""
    from batchvid.pagecards import FormatTemplate

    values = ("a%s", "{b}", "100%", "d")
    for template in ("{{x}} {2}-{0}-{2} 50%% {3}%", "only {1}", "no fields %d {{}}", "{3}{0}"):
        made = FormatTemplate(template)
        assert made.fill(values) == template.format(*values), template


@pytest.mark.parametrize("read_bytes", [1, 700, 1 << 20])
def test_pins_read_back_a_run_at_a_time_give_the_reference_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    """The lock's pins, read back from the pass's file a run at a time (pins next to each other
    both in id order and in the file, a run cut at any size), give the reference lock: ids in
    manifest order, then in reverse order, then one out of place."""
    import batchvid.lockpins as lockpins

    monkeypatch.setattr(lockpins, "_READ_BYTES", read_bytes)
    rng = random.Random(5)
    outcomes = []
    for n in range(40):
        o = _outcome(rng, n)
        number = n if n < 20 else 59 - n if n < 39 else 7.5
        o.job = dataclasses.replace(o.job, id=f"job-{number:05.1f}")
        o.status, o.action = "skipped", "skip"
        o.video = {"path": f"jobs/{o.job.id}/video.mp4", "sha256": _sha(rng), "bytes": n}
        o.enhance, o.provided = None, {}
        outcomes.append(o)
    _assert_made_in_the_pass(tmp_path, outcomes, monkeypatch)


def _rerun_dir(root: Path) -> list[Outcome]:
    """``root`` written by a run whose jobs a rerun can reuse: its report kept with a record of
    pieces (report.html then written through ``textfile.TextFile``, hashed)."""
    from tests.test_reportpieces import _replayed

    outcomes = _replayed(root, _run(7, 40))
    write_outputs(root, outcomes, _info(seconds=1.0))
    head = (root / ".batchvid" / "report-pieces").read_bytes().partition(b"\n")[0]
    assert json.loads(head)["digests"]["report.html"]
    return outcomes


@pytest.mark.parametrize("seconds", [1.0, 2.0], ids=["rendered", "retimed"])
def test_the_page_written_with_a_record_is_fsynced_before_its_rename_and_its_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """report.html, rendered or only retimed, written while a record of pieces is kept, takes
    ``durable.write_atomic``'s steps: a temporary name beside it, fsynced, renamed over it,
    then its directory fsynced."""
    from tests.test_durable_order import Trace

    root = tmp_path / "out"
    outcomes = _rerun_dir(root)
    page = str(root / "report.html")
    if seconds == 1.0:
        (root / "report.html").unlink()  # (rendered again)
    trace = Trace(monkeypatch)
    write_outputs(root, outcomes, _info(seconds=seconds))
    renamed = trace.index(("rename", page))
    synced = [n for n, (what, path) in enumerate(trace.calls)
              if what == "fsync" and Path(path).name.startswith(".report.html.") and path.endswith(".tmp")]
    assert len(synced) == 1 and synced[0] < renamed
    assert any(n > renamed for n in trace.indices("fsync", str(root)))


@pytest.mark.parametrize("seconds", [1.0, 2.0], ids=["rendered", "retimed"])
def test_a_page_write_failing_midway_leaves_the_old_page_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    """report.html's write (with a record kept) failing after some of its bytes (the disk
    full): the error is raised, the page in place keeps its bytes, and no temporary file is
    left; one a crash leaves instead has a name the next run's sweep removes."""
    import batchvid.gallery as gallery
    import batchvid.textfile as textfile
    from batchvid.store import _temporaries

    root = tmp_path / "out"
    outcomes = _rerun_dir(root)
    if seconds == 1.0:
        (root / "report.html").write_text("<p>another page</p>\n")  # (rendered again, not retimed)
    old = (root / "report.html").read_bytes()
    name = "_page_pieces" if seconds == 1.0 else "_copied"
    real = getattr(gallery, name)
    failed: list[str] = []

    def failing(*args: Any) -> Any:
        for number, piece in enumerate(real(*args)):
            if number == 1:
                failed.append(name)
                raise OSError(28, "No space left on device")
            yield piece

    monkeypatch.setattr(gallery, name, failing)
    with pytest.raises(OSError, match="No space"):
        write_outputs(root, outcomes, _info(seconds=seconds))
    assert failed == [name]
    assert (root / "report.html").read_bytes() == old
    assert not [p.name for p in root.iterdir() if p.name.startswith(".report.html.")]
    # A crash instead: the temporary file closed (by the kernel), not removed.
    monkeypatch.setattr(textfile.TextFile, "discard", lambda self: self._fh.close())
    with pytest.raises(OSError, match="No space"):
        write_outputs(root, outcomes, _info(seconds=seconds))
    left = [p for p in root.iterdir() if p.name.startswith(".report.html.")]
    assert len(left) == 1 and (root / "report.html").read_bytes() == old
    assert str(left[0]) in _temporaries(root, (".tmp",))


def test_timing_of_jobs_in_id_order_writes_the_reference_bytes(tmp_path: Path) -> None:
    """A run whose job ids ascend (a manifest's usual order, the outcomes read as they are),
    some jobs without timing: every file has the reference writer's bytes."""
    rng = random.Random(11)
    outcomes = []
    for n in range(40):
        o = _outcome(rng, n)
        o.job = dataclasses.replace(o.job, id=f"job-{n:03d}")
        o.attempts, o.seconds = (0, None) if n % 3 == 0 else (n % 4, n / 8 if n % 2 else None)
        outcomes.append(o)
    _assert_same(tmp_path, outcomes, _info())


@pytest.mark.parametrize("ids", [["a", "b", "c", "d"], ["d", "b", "c", "a"], ["b", "a", "b", "c"], ["a", "a"], []])
def test_job_timing_reads_as_the_sorted_dict_of_the_timed_jobs(ids: list[str]) -> None:
    """``JobTiming`` (report.json's ``timing.jobs`` as a run writes it) has the items, order
    and length of the dict it replaces: the timed jobs by id, a repeated id's last outcome."""
    from batchvid.report import JobTiming, _job_timing

    outcomes = [Outcome(make_job(job_id, n), "succeeded", "submit", attempts=n % 3, seconds=None if n % 2 else n / 4)
                for n, job_id in enumerate(ids)]
    expected = dict(sorted(_job_timing(outcomes).items()))
    timing = JobTiming(outcomes)
    assert list(timing.items()) == list(expected.items())
    assert len(timing) == len(expected)
