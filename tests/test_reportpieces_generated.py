"""The first rerun after a run that generated its jobs copies their report text, two words
swapped (``reportpieces``'s generated form): the bytes of a rerun that makes every piece."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import shutil
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import batchvid.download as download
import batchvid.reportpieces as reportpieces
import batchvid.reportrecord as reportrecord
import batchvid.runner as runner
import batchvid.simulator as simulator
from batchvid.cli import main
from batchvid.report import Outcome, RunInfo, write_outputs
from batchvid.reportrecord import (
    CARDS,
    FILES,
    JUNIT,
    LOCK,
    METADATA,
    PIECES_NAME,
    REPORT_JSON,
    REPORT_MD,
)
from tests.test_reportfiles import _info, _reference, _run
from tests.test_reportpieces import _made

_SIMULATED = ["--simulate", "--no-progress", "--sim-latency", "0", "--poll-interval", "0.01:0.02",
              "--max-in-flight", "4"]
_WARN = "[warn]"
"""A prompt marker of these tests: its job's video gets a warning (as a mismatched fps gives)."""


@pytest.fixture(autouse=True)
def _warned_and_detailed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Videos of ``[warn]`` prompts warned; GeekAI's answers with a cover, a revised prompt and
    a duration (the provider's fields a report shows); every run's timing the same (the twin
    reruns compared are otherwise a few milliseconds apart)."""
    real = download.check_media
    real_write = runner.write_outputs

    def write_outputs(root: Path, outcomes: list[Outcome], info: RunInfo) -> dict[str, Any]:
        for o in outcomes:
            o.seconds = None if o.seconds is None else 1.5
        timed = dataclasses.replace(info, started_at="2026-01-01T00:00:00+00:00",
                                    finished_at="2026-01-01T00:00:01+00:00", seconds=1.0)
        return real_write(root, outcomes, timed)

    monkeypatch.setattr(runner, "write_outputs", write_outputs)

    async def check_media(job: Any, path: Path, strict: bool, warnings: list[str]) -> Any:
        analysis = await real(job, path, strict, warnings)
        if _WARN in str(job.params.get("prompt")):
            if strict:
                raise download.JobFatalError("media_mismatch", "video fps is 29, 30 was requested")
            warnings.append("video fps is 29, 30 was requested")
        return analysis

    monkeypatch.setattr(download, "check_media", check_media)
    monkeypatch.setattr(simulator, "SimulatorConfig",
                        functools.partial(simulator.SimulatorConfig, geekai_cover=True, geekai_details=True))


def _manifest(path: Path, rng: random.Random, jobs: int = 10) -> Path:
    """A manifest of ``jobs`` jobs of random kinds: plain, failing, warned, enhanced, a sweep
    with samples, hostile prompts (the swapped tokens' text, markup), free and priced models."""
    lines = ["version: 1", "name: generated", f"provider: {rng.choice(['geekai', 'bigmodel'])}",
             "pricing: {cogvideox-flash: 0, cogvideox-2: 0.5}", "defaults:", "  model: cogvideox-flash", "jobs:"]
    for n in range(jobs):
        kind = rng.choice(["plain", "plain", "plain", "fail", "unsafe", "warn", "enhance", "sweep", "hostile",
                           "paid", "black"])
        prompt = {"fail": "boom [fail]", "unsafe": "bad [unsafe]", "warn": f"a warned clip {_WARN}",
                  "hostile": 'say \\"status\\": \\"succeeded\\", and ` | succeeded | <b>&',
                  "black": "a night [black]"}.get(kind, "a fox in the snow")
        lines += [f"  - id: {kind}-{n}", f'    prompt: "{prompt} {n}"']
        if kind == "enhance":
            lines.append("    enhance: {model: glm-4-flash}")
        elif kind == "sweep":
            lines += ["    matrix: {fps: [30, 60]}", "    samples: 2"]
        elif kind == "paid":
            lines.append("    model: cogvideox-2")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run_cli(manifest: Path, out: Path, *args: str) -> int:
    code = main(["run", str(manifest), "--out", str(out), *_SIMULATED, *args])
    assert code in (0, 1, 3)
    return code


def _copy(out: Path, to: Path) -> Path:
    """``out`` as another directory: its files hard links (the report files keep the identity
    the record holds), its ``.batchvid`` a real copy (a rerun appends to the journal)."""
    shutil.copytree(out, to, copy_function=os.link, ignore=shutil.ignore_patterns(".batchvid"))
    shutil.copytree(out / ".batchvid", to / ".batchvid")
    return to


def _record(root: Path) -> tuple[dict[str, Any], bytes, bytes, list[array[int]]]:
    """The record's header (but what names the directory's own files and journal), digests,
    forms and spans."""
    head, _, payload = (root / ".batchvid" / PIECES_NAME).read_bytes().partition(b"\n")
    header = json.loads(head)
    for name in ("files", "payload", "journal"):  # (a journal line names a video's inode)
        del header[name]
    count = header["jobs"]
    spans = []
    for file in range(len(FILES)):
        spans.append(array("I"))
        start = 17 * count + 8 * count * file
        spans[-1].frombytes(payload[start:start + 8 * count])
    return header, payload[:16 * count], payload[16 * count:17 * count], spans


def _assert_record_places_each_piece(root: Path) -> None:
    """Each recorded job's spans hold its piece of each report file (its entry, row, testcase,
    metadata line, pin and card), in the form the record says."""
    header, digests, forms, spans = _record(root)
    texts = [(root / name).read_bytes() for name in FILES]
    jobs = _report(root)["jobs"]
    assert header["jobs"] == len(jobs)
    for number, job in enumerate(jobs):
        if digests[16 * number:16 * number + 16] == bytes(16):
            continue
        assert job["status"] == ("succeeded" if forms[number] else "skipped")

        def piece(file: int, number: int = number) -> str:
            at = header["cards_at"] if file == CARDS else 0
            start, end = spans[file][2 * number] + at, spans[file][2 * number + 1] + at
            return texts[file][start:end].decode("utf-8")

        assert json.loads(piece(REPORT_JSON)) == job
        assert piece(REPORT_MD).startswith(f"| `{job['id']}` | {job['status']} |")
        assert piece(REPORT_MD).count("\n") == 0
        assert piece(JUNIT).startswith("<testcase ") and f' name="{job["id"]}" />' in piece(JUNIT)
        line = piece(METADATA)
        assert json.loads(line)["id"] == job["id"] if job["video"] else line == ""
        assert json.loads(piece(LOCK))["key"] == job["key"]
        if header["cards_at"] is not None:
            card = json.loads(piece(CARDS))
            assert (card["id"], card["status"]) == (job["id"], job["status"])
    if header["sweeps_at"] is not None:
        start, end = header["sweeps_at"]
        page = texts[CARDS].decode("utf-8")
        data = page[page.index('{"jobs":['):page.index("</script>", page.index('{"jobs":['))]
        assert json.loads(texts[CARDS][start:end]) == json.loads(data)["sweeps"]
        assert texts[CARDS][start - 10:start] == b',"sweeps":' and texts[CARDS][end:end + 1] == b"}"


def _assert_twin_reruns(tmp_path: Path, manifest: Path, out: Path, *args: str,
                        name: str = "rerun") -> tuple[Path, list[str]]:
    """Rerun ``out`` twice, on copies: with its record and with its record deleted. Every report
    file has the same bytes, and so has the next record (but for the files' identities); returns
    the rerun with the record, and the ids of the jobs it made."""
    with_record = _copy(out, tmp_path / f"{name}-with")
    without = _copy(out, tmp_path / f"{name}-without")
    (without / ".batchvid" / PIECES_NAME).unlink()
    _run_cli(manifest, without, *args)
    with pytest.MonkeyPatch.context() as patch:
        made = _made(patch)
        _run_cli(manifest, with_record, *args)
    for file in FILES:
        assert (with_record / file).read_bytes() == (without / file).read_bytes(), file
    _assert_record_places_each_piece(with_record)
    _assert_record_places_each_piece(without)
    (header, digests, forms, spans), (other, *rest) = _record(with_record), _record(without)
    assert (digests, forms, spans[:CARDS]) == (rest[0], rest[1], rest[2][:CARDS])
    if other["cards_at"] is None:  # the page only retimed, its cards' places unknown before
        header["cards_at"] = header["sweeps_at"] = None
    else:
        assert spans[CARDS] == rest[2][CARDS]
    assert header == other
    return with_record, made


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return report


def test_the_first_rerun_after_a_generating_run_copies_every_generated_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run generated every job: the first rerun makes no job's entry (each copied, its
    status and action swapped), the bytes of a rerun that makes them all; so does the next."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: plain\ndefaults: {model: cogvideox-flash}\njobs:\n"
                        "  - id: clip\n    prompt: \"a clip ${n}\"\n    matrix: {n: [1, 2, 3, 4, 5]}\n"
                        "  - id: two\n    prompt: two of them\n    samples: 2\n", encoding="utf-8")
    out = tmp_path / "out"
    _run_cli(manifest, out)
    assert {job["status"] for job in _report(out)["jobs"]} == {"succeeded"}
    _assert_record_places_each_piece(out)
    first, made = _assert_twin_reruns(tmp_path, manifest, out)
    assert made == []
    assert {job["status"] for job in _report(first)["jobs"]} == {"skipped"}
    _, made = _assert_twin_reruns(tmp_path, manifest, first, name="later")
    assert made == []


def test_without_the_swap_the_first_rerun_would_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above catches a copy that leaves a generated job's text as it was: with
    the swap turned off, the rerun's report.json is not the reference's."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: plain\ndefaults: {model: cogvideox-flash}\njobs:\n"
                        "  - id: clip\n    prompt: a clip\n", encoding="utf-8")
    out = tmp_path / "out"
    _run_cli(manifest, out)
    monkeypatch.setattr(reportpieces, "_SWAPS", {})
    with pytest.raises(AssertionError, match="report.json"):
        _assert_twin_reruns(tmp_path, manifest, out)


@pytest.mark.parametrize("seed", range(6))
def test_random_generating_runs_then_reruns_write_the_bytes_of_a_rerun_without_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random manifests (failed, warned, enhanced, hostile, sweep and sample jobs, either
    provider), simulated faults, --strict-media, a run stopped by --max-cost then finished
    (a record of jobs skipped and generated), a video deleted (downloaded again), a journal line
    appended for a job after the record: each rerun writes the bytes, and the record, of a rerun
    without a record, and copies some generated jobs."""
    rng = random.Random(seed)
    manifest = _manifest(tmp_path / "m.yaml", rng)
    out = tmp_path / "out"
    args = ["--sim-seed", str(seed), "--sim-fault-rate", "0.2" if seed % 3 == 2 else "0", "--retries", "1"]
    if seed % 3 == 1:
        args.append("--strict-media")
    if seed % 2:
        _run_cli(manifest, out, *args, "--max-cost", "0.4", "--max-in-flight", "1")  # stopped: some left pending
    _run_cli(manifest, out, *args)
    generated = [job["id"] for job in _report(out)["jobs"] if job["status"] == "succeeded"
                 and not job["warnings"] and "enhance" not in job]
    rerun, made = _assert_twin_reruns(tmp_path, manifest, out, *args)
    assert set(generated).isdisjoint(made)
    done = [job for job in _report(rerun)["jobs"] if job["status"] == "skipped"]
    if done:  # a video deleted: downloaded again; a line appended for another job's key
        deleted = rng.choice(done)
        (rerun / deleted["video"]["path"]).unlink()
        appended = rng.choice(done)
        journal = rerun / ".batchvid" / "journal.jsonl"
        lines = journal.read_text(encoding="utf-8").splitlines()
        line = next(line for line in reversed(lines) if json.loads(line)["key"] == appended["key"])
        with open(journal, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    again, made = _assert_twin_reruns(tmp_path, manifest, rerun, *args, name="again")
    if done:
        assert appended["id"] in made
    _assert_twin_reruns(tmp_path, manifest, again, *args, name="third")


def _generated_then_replayed(outcomes: list[Outcome]) -> list[Outcome]:
    """Each generated job (``submit``, packed) as its next run has it: skipped as done."""
    for o in outcomes:
        if reportpieces.generated(o):
            o.status, o.action = "skipped", "skip"
    return outcomes


def _journal(root: Path) -> None:
    (root / ".batchvid").mkdir(parents=True, exist_ok=True)
    (root / ".batchvid" / "journal.jsonl").write_text('{"event":"submitting","id":"x","key":"k"}\n')


_HOSTILE: dict[str, Callable[[Outcome], None]] = {
    # (the status cell's text in the row's model cell: counted twice)
    "row": lambda o: setattr(o, "job", dataclasses.replace(o.job, params={**o.job.params, "model": "m` | succeeded | x"})),
    # (in the card's parameters: counted twice)
    "card": lambda o: setattr(o, "job", dataclasses.replace(
        o.job, params={**o.job.params, "opts": {"status": "succeeded", "z": 1}})),
    # (a provider's field sorted before the entry's action: its entry does not start with it)
    "first": lambda o: setattr(o, "provided", {"aaa": 1}),
    # (report.json's tokens at a nested dict's indentation: not the entry's own, left as they are)
    "nested": lambda o: setattr(o, "provided", {"extra": {"action": "submit", "status": "succeeded", "z": 1}}),
}


@pytest.mark.parametrize("seed", range(6))
def test_hostile_generated_jobs_are_swapped_only_where_each_token_is_the_fields_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random runs (every status, packed or not, odd texts) with jobs whose model, parameters or
    provider's fields hold a swapped token's text, or sort before the entry's action: those
    whose token is not found once as the field's own are made again, the others copied (a
    nested dict's ``status`` left as it was); every file has the reference bytes, and so has
    the next rerun's."""
    rng = random.Random(seed)
    outcomes = _run(seed, 40)
    for o in rng.sample(outcomes, 24):  # generated, as a run that did them has them
        o.status, o.action, o.error, o.warnings, o.enhance = "succeeded", "submit", None, [], None
        o.pack()
    kinds: dict[str, str] = {}
    for o in rng.sample(outcomes, 12):
        kinds[o.job.id] = rng.choice(list(_HOSTILE))
        _HOSTILE[kinds[o.job.id]](o)
        o.pack()
    root = tmp_path / "out"
    _journal(root)
    write_outputs(root, outcomes, _info(seconds=1.0))
    generated = {o.job.id for o in outcomes if reportpieces.generated(o)
                 and reportpieces.fingerprint(o, None) != reportpieces._NONE}
    outcomes = _generated_then_replayed(outcomes)
    made = _made(monkeypatch)
    reference = tmp_path / "reference"
    _reference(reference, outcomes, _info(seconds=2.0))
    write_outputs(root, outcomes, _info(seconds=2.0))
    for name in FILES:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name
    assert {n for n in generated if kinds.get(n, "nested") != "nested"} <= set(made)
    assert {n for n in generated if kinds.get(n) == "nested"}.isdisjoint(made)
    assert generated - set(made)
    made.clear()
    write_outputs(root, outcomes, _info(seconds=3.0))
    _reference(reference, outcomes, _info(seconds=3.0))
    for name in FILES:
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_generated_jobs_text_changed_as_it_is_read_is_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated job's report.json text read without the token its copy swaps (the file
    written over in place as it was read): the rerun writes every file afresh, the bytes of a
    rerun without a record, and keeps no record of pieces read from the changed file."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nname: plain\ndefaults: {model: cogvideox-flash}\njobs:\n"
                        "  - id: clip\n    prompt: \"a clip ${n}\"\n    matrix: {n: [1, 2, 3]}\n", encoding="utf-8")
    out = tmp_path / "out"
    _run_cli(manifest, out)
    with_record, without = _copy(out, tmp_path / "with"), _copy(out, tmp_path / "without")
    (without / ".batchvid" / PIECES_NAME).unlink()
    _run_cli(manifest, without)
    real = reportrecord.Previous.block
    changed: list[int] = []

    def block(self: reportrecord.Previous, file: int, number: int, end: int) -> bytes:
        data = real(self, file, number, end)
        if file == REPORT_JSON and not changed:
            changed.append(number)
            data = data.replace(b'"action": "submit"', b'"action": "submiT"', 1)
        return data

    monkeypatch.setattr(reportrecord.Previous, "block", block)
    _run_cli(manifest, with_record)
    assert changed == [0]
    for file in FILES:
        assert (with_record / file).read_bytes() == (without / file).read_bytes(), file
    assert not (with_record / ".batchvid" / PIECES_NAME).exists()
