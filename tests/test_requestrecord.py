"""A resumed job's request.json, lost or damaged by a power cut, is made again from the journal
when the job is finished (``batchvid.requestrecord``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchvid import requestrecord
from batchvid.events import JobSubmitted
from batchvid.requestrecord import latest_request_id, readable_record
from batchvid.runner import Runner
from batchvid.simulator import Simulator, SimulatorConfig
from tests.helpers import make_job, make_manifest
from tests.test_runner import _settings


def _jobs(provider: str, n: int = 4) -> list[Any]:
    return [make_job(f"job-{i}", i, provider) for i in range(n)]


def _run(sim: Simulator, jobs: list[Any], out: Path, provider: str, *, stop_when_submitted: bool = False,
         **kw: Any) -> Any:
    """A run of ``jobs``; ``stop_when_submitted``: interrupted once every job has its task."""
    return _run_manifest(sim, make_manifest(jobs), _settings(out, provider, **kw), stop_when_submitted)


def _run_manifest(sim: Simulator, manifest: Any, settings: Any, stop_when_submitted: bool = False) -> Any:
    submitted: set[str] = set()
    runner: Runner

    def on_event(event: object) -> None:
        if isinstance(event, JobSubmitted):
            submitted.add(event.job_id)
            if stop_when_submitted and len(submitted) == len(manifest.jobs):
                runner.interrupt("test: every job submitted")

    runner = Runner(manifest, settings, transport=httpx.ASGITransport(app=sim.app), subscribers=[on_event])
    result = anyio.run(runner.run)
    if stop_when_submitted:
        assert result.exit_code == 3
        assert {o.status for o in result.outcomes} == {"pending"} and all(o.task_id for o in result.outcomes)
    return result


def _submitted_not_downloaded(tmp_path: Path, provider: str, **kw: Any) -> tuple[Simulator, list[Any], Path]:
    """A run stopped while its tasks run: every job submitted, none downloaded."""
    sim = Simulator(SimulatorConfig(latency=1.0))
    jobs, out = _jobs(provider), tmp_path / "out"
    _run(sim, jobs, out, provider, stop_when_submitted=True, **kw)
    return sim, jobs, out


@pytest.mark.parametrize("provider", ["bigmodel", "geekai"])
def test_a_lost_or_damaged_request_json_is_written_again_when_the_resumed_job_finishes(
    tmp_path: Path, provider: str
) -> None:
    """request.json missing, empty, zero-filled or its whole folder gone after a power cut: the
    rerun that re-attaches and downloads the job writes it again, the bytes the create wrote."""
    sim, jobs, out = _submitted_not_downloaded(tmp_path, provider)
    paths = [out / "jobs" / job.id / "request.json" for job in jobs]
    original = [path.read_bytes() for path in paths]
    paths[0].unlink()
    paths[1].write_bytes(b"")
    paths[2].write_bytes(bytes(len(original[2])))
    for path in paths[3].parent.iterdir():
        path.unlink()
    paths[3].parent.rmdir()

    result = _run(sim, jobs, out, provider)
    assert result.exit_code == 0
    assert {o.action for o in result.outcomes} == {"reattach"}
    assert [path.read_bytes() for path in paths] == original
    assert sim.stats()["tasks_created"] == 4


def test_a_readable_request_json_is_never_written_over(tmp_path: Path) -> None:
    """A request.json that is a JSON object stays as it is, whatever it says."""
    sim, jobs, out = _submitted_not_downloaded(tmp_path, "bigmodel")
    path = out / "jobs" / jobs[0].id / "request.json"
    path.write_text('{"note": "kept by hand"}\n')
    assert _run(sim, jobs, out, "bigmodel").exit_code == 0
    assert path.read_text() == '{"note": "kept by hand"}\n'


def test_the_request_id_of_a_later_generation_is_the_one_the_journal_recorded(tmp_path: Path) -> None:
    """A --force resubmission (request_id ``bv-…-1``) whose request.json was lost gets that
    request id back, as its create sent it, not the job's first one."""
    sim, jobs, out = Simulator(SimulatorConfig(latency=0.5)), _jobs("bigmodel", 1), tmp_path / "out"
    assert _run(sim, jobs, out, "bigmodel").exit_code == 0
    _run(sim, jobs, out, "bigmodel", stop_when_submitted=True, force=True)
    path = out / "jobs" / jobs[0].id / "request.json"
    sent = json.loads(path.read_text())
    assert sent["request_id"].endswith("-1")
    path.unlink()
    assert _run(sim, jobs, out, "bigmodel").exit_code == 0
    assert json.loads(path.read_text()) == sent


def test_jobs_submitted_by_the_run_itself_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only jobs an earlier run submitted have their request.json checked: a run that submits
    and downloads its jobs reads none back."""
    checked: list[Path] = []
    real = requestrecord.readable_record

    def counting(path: Path) -> str | None:
        checked.append(path)
        return real(path)

    monkeypatch.setattr(requestrecord, "readable_record", counting)
    sim, jobs = Simulator(SimulatorConfig(latency=0.05)), _jobs("bigmodel", 3)
    assert _run(sim, jobs, tmp_path / "out", "bigmodel").exit_code == 0
    assert checked == []


def test_the_latest_submitting_line_of_the_key_is_found_across_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """latest_request_id reads the journal back a block at a time: lines across a block's edge
    and longer than a block are read whole, and the key's latest create wins."""
    monkeypatch.setattr(requestrecord, "_BLOCK", 64)
    key, other = "a" * 64, "b" * 64
    lines = [
        {"event": "submitting", "id": "x", "key": key, "request_id": "bv-first"},
        {"event": "submitted", "id": "x", "key": key, "task_id": "t1"},
        {"event": "submitting", "id": "x" * 300, "key": key, "request_id": "bv-second"},
        {"event": "submitting", "id": "y", "key": other, "request_id": "bv-other"},
        {"event": "submitted", "id": "x", "key": key, "task_id": "t2"},
    ]
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))
    assert latest_request_id(journal, key) == "bv-second"
    assert latest_request_id(journal, other) == "bv-other"
    assert latest_request_id(journal, "c" * 64) is None
    assert latest_request_id(tmp_path / "none.jsonl", key) is None


def _reference_request_id(data: bytes, key: str) -> str | None:
    """The request id of ``key``'s latest ``submitting`` line, read forwards (whole lines that
    decode; a torn or damaged line is none)."""
    found = None
    for raw in data.split(b"\n")[: -1 if not data.endswith(b"\n") else None]:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == "submitting" and line.get("key") == key:
            found = line.get("request_id") if isinstance(line.get("request_id"), str) else None
    return found


@pytest.mark.parametrize("seed", range(40))
def test_the_backward_read_finds_what_a_forward_read_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random journals read back in small blocks: lines across block edges or longer than a
    block, CRLF line ends, a torn last line, keys that are a part of other keys (``a-1`` in
    ``a-10``, and in another line's id), a latest create without a request id: the request id
    is the one the key's latest whole ``submitting`` line holds, as a forward read finds it."""
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(requestrecord, "_BLOCK", rng.choice([7, 16, 64, 200]))
    keys = ["a-1", "a-10", "a-100", "b-1"]
    lines = []
    for n in range(rng.randrange(1, 40)):
        key = rng.choice(keys)
        event = rng.choice(["submitting", "submitting", "submitted", "succeeded", "enhanced"])
        line: dict[str, Any] = {"event": event, "id": rng.choice(keys) + "x" * rng.choice([0, 0, 150]), "key": key}
        if event == "submitting" and rng.random() < 0.9:
            line["request_id"] = f"bv-{key}-{n}"
        text = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        lines.append(text + (b"\r\n" if rng.random() < 0.2 else b"\n"))
    data = b"".join(lines)
    if rng.random() < 0.5:  # a torn last line (a kill mid-write)
        data += lines[rng.randrange(len(lines))][: rng.randrange(1, 30)].rstrip(b"\r\n")
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(data)
    for key in [*keys, "a"]:
        assert latest_request_id(journal, key) == _reference_request_id(data, key), key


def test_a_latest_create_without_a_request_id_gives_none_not_an_older_ones(tmp_path: Path) -> None:
    """The key's latest ``submitting`` line holds no request id: none is given, not the one of
    the create before it (a request.json made with it would not be the one sent)."""
    key = "a" * 64
    lines = [{"event": "submitting", "id": "x", "key": key, "request_id": "bv-first"},
             {"event": "submitting", "id": "x", "key": key}]
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))
    assert latest_request_id(journal, key) is None


@pytest.mark.parametrize("what", ["a folder", "a link to itself"])
def test_a_request_json_that_cannot_be_read_is_not_written_over_and_the_job_finishes(
    tmp_path: Path, what: str
) -> None:
    """A request.json the run cannot read (a folder in its place, a link it cannot follow)
    may be a good one: it is left as it is, and the resumed job finishes all the same."""
    sim, jobs, out = _submitted_not_downloaded(tmp_path, "bigmodel")
    path = out / "jobs" / jobs[0].id / "request.json"
    path.unlink()
    if what == "a folder":
        path.mkdir()
        (path / "kept").write_text("kept")
    else:
        path.symlink_to(path.name)
    assert readable_record(path).startswith("unreadable (")  # type: ignore[union-attr]
    result = _run(sim, jobs, out, "bigmodel")
    assert result.exit_code == 0 and {o.status for o in result.outcomes} == {"succeeded"}
    if what == "a folder":
        assert (path / "kept").read_text() == "kept"
    else:
        assert path.is_symlink() and str(path.readlink()) == path.name


def test_a_request_json_that_cannot_be_written_again_does_not_fail_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing the record again fails (a full disk, say): the job, its video downloaded, is
    finished all the same, the record still lost."""
    sim, jobs, out = _submitted_not_downloaded(tmp_path, "bigmodel")
    path = out / "jobs" / jobs[0].id / "request.json"
    path.unlink()

    def full(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(requestrecord, "write_atomic", full)
    result = _run(sim, jobs, out, "bigmodel")
    assert result.exit_code == 0 and {o.status for o in result.outcomes} == {"succeeded"}
    assert not path.exists()


@pytest.mark.parametrize(("data", "problem"), [
    (None, "missing"), (b"", "empty"), (bytes(40), "empty"), (b'{"a": 1', "damaged (not JSON)"),
    (b"[1]", "damaged (not a JSON object)"), (b'{"a": 1}\n', None),
])
def test_readable_record_names_what_is_wrong(tmp_path: Path, data: bytes | None, problem: str | None) -> None:
    """A record file is good only as a JSON object; otherwise the problem is named."""
    path = tmp_path / "request.json"
    if data is not None:
        path.write_bytes(data)
    assert readable_record(path) == problem


def test_an_enhanced_jobs_request_json_holds_the_rewrite_its_task_was_created_with(tmp_path: Path) -> None:
    """An enhanced BigModel job re-attached after a power cut lost its request.json: the file
    made again holds the rewritten prompt the create sent, as the create wrote it."""
    from batchvid.manifest import load_manifest
    from tests.test_enhance_run import FOX, settings, write_manifest

    manifest = load_manifest(write_manifest(tmp_path, FOX, "bigmodel"))
    sim, out = Simulator(SimulatorConfig(latency=1.0)), tmp_path / "out"
    _run_manifest(sim, manifest, settings(out, "bigmodel"), stop_when_submitted=True)
    paths = [out / "jobs" / job_id / "request.json" for job_id in ("fox", "exact")]
    original = [path.read_bytes() for path in paths]
    assert json.loads(original[0])["prompt"] != "a fox in the snow"  # the rewrite was sent
    for path in paths:
        path.unlink()
    result = _run_manifest(sim, manifest, settings(out, "bigmodel"))
    assert result.exit_code == 0 and {o.action for o in result.outcomes} == {"reattach"}
    assert [path.read_bytes() for path in paths] == original


def test_status_says_a_pending_jobs_lost_request_json_is_written_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchvid status` on a directory whose run stopped with tasks running: the job whose
    request.json is lost says so, and that the rerun writes it again; the others do not."""
    from batchvid.cli import main

    _, jobs, out = _submitted_not_downloaded(tmp_path, "bigmodel")
    (out / "jobs" / jobs[1].id / "request.json").write_bytes(b"")
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("pending")]
    noted = [line for line in lines if "request.json" in line]
    assert len(lines) == 4 and len(noted) == 1
    assert f" {jobs[1].id}: submitted as task" in noted[0]
    assert noted[0].endswith("; its request.json is empty: the rerun writes it again from the journal")


def test_status_says_nothing_of_a_renamed_jobs_folder_to_be_moved(tmp_path: Path) -> None:
    """A pending job done earlier under another id: its folder (its request.json in it) moves to
    the new id on the rerun, so its new id's missing request.json is not noted; the same job
    under its own id is."""
    from batchvid.display import status_text
    from batchvid.journal import JobRecord
    from batchvid.plan import Plan, Step

    job = make_job("new-name", 0, "bigmodel")
    video = {"path": "jobs/old-name/video.mp4", "sha256": "0" * 64, "bytes": 1}
    report = {"manifest": {"name": "m", "provider": "bigmodel"},
              "summary": {"succeeded": 0, "skipped": 0, "failed": 0, "pending": 1, "total": 1},
              "jobs": [{"id": job.id, "status": "pending", "error": None}]}

    def text(record_id: str) -> str:
        record = JobRecord(job.key, record_id, "succeeded", "task-1", video)
        plan = Plan((Step(job, "download", "done earlier", record),), {})
        return status_text(report, {"download": 1}, plan, tmp_path)

    assert "request.json" not in text("old-name")
    assert "its request.json is missing: the rerun writes it again" in text(job.id)
