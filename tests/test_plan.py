"""Planning: what a run does with each job, given the journal, and what it costs."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.errors import UsageError
from batchvid.plan import decide, make_plan
from batchvid.selection import parse_shard, select, shard_of
from batchvid.store import JobRecord, sha256_file
from tests.helpers import make_job


def _done(tmp_path: Path, job_id: str, key: str, content: bytes = b"video") -> JobRecord:
    video = tmp_path / "jobs" / job_id / "video.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(content)
    digest, size = sha256_file(video)
    return JobRecord(key, job_id, "succeeded", "t1",
                     video={"path": f"jobs/{job_id}/video.mp4", "sha256": digest, "bytes": size})


def test_new_job_is_submitted(tmp_path: Path) -> None:
    """A job the journal has never seen is submitted."""
    assert decide(make_job(), None, tmp_path).action == "submit"


def test_done_job_with_verified_video_is_skipped(tmp_path: Path) -> None:
    """A done job whose video matches its recorded hash is skipped."""
    job = make_job()
    step = decide(job, _done(tmp_path, job.id, job.key), tmp_path)
    assert step.action == "skip"


def test_done_job_with_damaged_video_is_downloaded_not_regenerated(tmp_path: Path) -> None:
    """A damaged video is fetched again from its task; it is never paid for twice."""
    job = make_job()
    record = _done(tmp_path, job.id, job.key)
    (tmp_path / "jobs" / job.id / "video.mp4").write_bytes(b"vid")
    step = decide(job, record, tmp_path)
    assert step.action == "download"
    assert "size 3 differs" in step.reason and "does not match its record" in step.reason


def test_submitted_job_is_reattached_even_with_force(tmp_path: Path) -> None:
    """A task in flight is polled again, never resubmitted, even under --force."""
    job = make_job()
    record = JobRecord(job.key, job.id, "submitted", "task-9")
    assert decide(job, record, tmp_path).action == "reattach"
    assert decide(job, record, tmp_path, force=True).action == "reattach"


def test_failed_job_is_kept_unless_retry_failed(tmp_path: Path) -> None:
    """Failed jobs stay failed; --retry-failed submits them again."""
    job = make_job()
    record = JobRecord(job.key, job.id, "failed", None,
                       error={"kind": "content_filter", "message": "unsafe"})
    assert decide(job, record, tmp_path).action == "keep-failed"
    assert decide(job, record, tmp_path, retry_failed=True).action == "submit"


def test_timed_out_job_is_reattached_by_retry_failed(tmp_path: Path) -> None:
    """A job that timed out has a task on the server: --retry-failed polls it, not resubmits."""
    job = make_job()
    record = JobRecord(job.key, job.id, "failed", "task-3", error={"kind": "timeout", "message": "slow"})
    assert decide(job, record, tmp_path, retry_failed=True).action == "reattach"


def test_unanswered_create_is_resent_where_the_provider_refuses_duplicates(tmp_path: Path) -> None:
    """A create cut off by a crash is sent again when the idempotency key makes that safe."""
    job = make_job(provider="bigmodel")
    record = JobRecord(job.key, job.id, "submitting", creates=1, request_id="bv-1")
    assert decide(job, record, tmp_path, idempotent=True).action == "submit"


def test_unanswered_create_is_kept_failed_without_an_idempotency_key(tmp_path: Path) -> None:
    """Without an idempotency key a cut-off create is not resent; --retry-failed sends it."""
    job = make_job()
    record = JobRecord(job.key, job.id, "submitting", creates=1)
    step = decide(job, record, tmp_path)
    assert step.action == "keep-failed" and "--retry-failed" in step.reason
    assert decide(job, record, tmp_path, retry_failed=True).action == "submit"


def test_make_plan_resends_unanswered_creates_on_bigmodel_only(tmp_path: Path) -> None:
    """make_plan takes the resend decision from the provider: BigModel yes, GeekAI no."""
    for provider, action in (("bigmodel", "submit"), ("geekai", "keep-failed")):
        job = make_job(provider=provider)
        records = {job.key: JobRecord(job.key, job.id, "submitting", creates=1)}
        plan = make_plan([job], records, tmp_path, provider=provider)
        assert plan.steps[0].action == action, provider


def test_force_resubmits_done_jobs(tmp_path: Path) -> None:
    """--force regenerates a done job."""
    job = make_job()
    assert decide(job, _done(tmp_path, job.id, job.key), tmp_path, force=True).action == "submit"


def test_shard_assignment_does_not_move_when_jobs_are_added() -> None:
    """Adding jobs to a manifest moves no existing job to another shard."""
    jobs = [make_job(f"j{i}", i) for i in range(50)]
    before = {j.id: shard_of(j, 4) for j in jobs}
    more = jobs + [make_job(f"new{i}", 50 + i) for i in range(20)]
    after = {j.id: shard_of(j, 4) for j in more}
    assert all(after[k] == v for k, v in before.items())
    shards = [select(more, shard=(i, 4)) for i in range(1, 5)]
    assert sorted(j.id for s in shards for j in s) == sorted(j.id for j in more)


def test_only_selects_by_glob() -> None:
    """--only keeps the jobs whose id matches any pattern."""
    jobs = [make_job("city-1"), make_job("city-2", 1), make_job("forest", 2)]
    assert [j.id for j in select(jobs, only=["city-*"])] == ["city-1", "city-2"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "1", "1/0"])
def test_bad_shard_is_a_usage_error(text: str) -> None:
    """A malformed --shard is refused with the expected form."""
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def test_cost_counts_only_submits_and_honours_pricing(tmp_path: Path) -> None:
    """The cost is price x submits, with manifest pricing overriding the table."""
    jobs = [make_job("a", 0, "bigmodel", model="cogvideox-3"),
            make_job("b", 1, "bigmodel", model="cogvideox-2"),
            make_job("c", 2, "bigmodel", model="cogvideox-2")]
    records = {jobs[2].key: _done(tmp_path, "c", jobs[2].key)}
    plan = make_plan(jobs, records, tmp_path, provider="bigmodel")
    assert plan.cost == pytest.approx(1.5)
    plan = make_plan(jobs, records, tmp_path, provider="bigmodel", pricing={"cogvideox-3": 2})
    assert plan.cost == pytest.approx(2.5)


def test_unknown_prices_are_listed() -> None:
    """Models without a known price are named so the estimate is not silently low."""
    plan = make_plan([make_job(model="cogvideox-2")], {}, Path("nowhere"), provider="geekai")
    assert plan.unpriced == ["cogvideox-2"]


def test_plan_only_and_run_only_list_the_same_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan --only X` lists exactly the jobs and actions `run --only X` then works through."""
    import json
    import shutil

    from batchvid.cli import main

    for name in ("GEEKAI_API_KEY", "ZHIPUAI_API_KEY", "BIGMODEL_API_KEY", "BATCHVID_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    manifest = tmp_path / "quickstart.yaml"
    shutil.copy(Path(__file__).parent.parent / "manifests" / "quickstart.yaml", manifest)
    out = tmp_path / "out"
    fast = ["--simulate", "--no-progress", "--sim-latency", "0.05", "--poll-interval",
            "0.01:0.05", "--rpm", "6000", "--out", str(out)]
    assert main(["run", str(manifest), "--only", "paper-boat", *fast]) == 0
    capsys.readouterr()
    assert main(["plan", str(manifest), "--json", "--only", "c*", *fast[-2:]]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert main(["run", str(manifest), "--only", "c*", "--log-format", "json", *fast]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    started = next(e for e in events if e["event"] == "RunStarted")
    report = json.loads((out / "report.json").read_text())
    assert planned["totals"]["actions"] == {"skip": 1, "submit": 2}
    assert started["actions"] == planned["totals"]["actions"]
    assert started["total"] == planned["totals"]["jobs"]
    assert [j["id"] for j in report["jobs"]] == [j["id"] for j in planned["jobs"]]


@pytest.mark.parametrize("seed", range(12))
def test_a_plan_decides_each_job_as_decide_does(tmp_path: Path, seed: int) -> None:
    """``make_plan``'s steps (its shortcuts for new and done jobs included) are ``decide``'s
    for each chosen job, and the verified done jobs among the others, whatever the journal
    says: done with the video intact, pinned by its stat or not, damaged, missing, or done
    under another id; in flight, failed, refused, unanswered; under --force or --only."""
    import random

    from batchvid.durable import file_stat

    rng = random.Random(seed)
    jobs = [make_job(f"j{i}", i) for i in range(30)]
    records: dict[str, JobRecord] = {}
    for number, job in enumerate(jobs):
        kind = rng.choice(["new", "done", "done", "pinned", "damaged", "missing", "moved", "submitted",
                           "failed", "refused", "submitting"])
        if kind in ("done", "pinned", "damaged", "missing", "moved"):
            record = _done(tmp_path, job.id, job.key, b"video %d" % number)
            video = tmp_path / "jobs" / job.id / "video.mp4"
            if kind == "pinned":
                record.stat = file_stat(video)
            elif kind == "damaged":
                video.write_bytes(b"other")
            elif kind == "missing":
                video.unlink()
            elif kind == "moved":
                record.id = f"old-{number}"
            records[job.key] = record
        elif kind == "failed":
            records[job.key] = JobRecord(job.key, job.id, "failed", "t", error={"kind": "timeout", "message": "m"})
        elif kind != "new":
            records[job.key] = JobRecord(job.key, job.id, kind, "t" if kind == "submitted" else None)
    force = rng.random() < 0.3
    only = ["j1*"] if rng.random() < 0.4 else []
    chosen = {job.key for job in select(jobs, only)}
    expected = []
    for job in jobs:
        record = records.get(job.key)
        if job.key in chosen:
            expected.append(decide(job, record, tmp_path, force=force))
        elif record is not None and record.state == "succeeded":
            step = decide(job, record, tmp_path)
            if step.action == "skip":
                expected.append(step)
    plan = make_plan(jobs, records, tmp_path, provider="geekai", force=force, only=only)
    assert list(plan.steps) == expected


@pytest.mark.parametrize(
    "content",
    [None, b"", b"\0" * 64, b'{\n  "prompt": "an old pro', b"[]\n"],
    ids=["no-folder", "empty", "zeros", "torn", "not-an-object"],
)
def test_an_edited_jobs_reason_is_not_misled_by_a_request_json_a_power_cut_damaged(
    tmp_path: Path, content: bytes | None
) -> None:
    """request.json is not fsynced, nor is its folder before the job's download: after a power
    cut it may be missing, empty, zero-filled or torn. The plan of the edited job then says
    only that it was edited, naming no change it cannot know; a whole one's changes are named."""
    from batchvid.edited import edited_reason

    job = make_job("j1", prompt="a new prompt")
    earlier = JobRecord("old-key", "j1", "submitted", "t1")
    if content is not None:
        (tmp_path / "jobs" / "j1").mkdir(parents=True)
        (tmp_path / "jobs" / "j1" / "request.json").write_bytes(content)
    assert edited_reason(job, earlier, tmp_path, "geekai") == "edited since its earlier request (task t1): a new job"
    (tmp_path / "jobs" / "j1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "jobs" / "j1" / "request.json").write_text('{"model": "cogvideox-flash", "prompt": "old"}\n', encoding="utf-8")
    assert edited_reason(job, earlier, tmp_path, "geekai") == "edited since its earlier request (task t1): prompt; a new job"
