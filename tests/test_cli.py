"""The command line as a user drives it: `batchvid.cli.main([...])`, plus `python -m batchvid`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from batchvid import __version__
from batchvid.cli import main
from tests.helpers import FAST

ROOT = Path(__file__).parent.parent
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
QUICKSTART = ROOT / "manifests" / "quickstart.yaml"
QUICKSTART_IDS = ["rabbit-car", "lighthouse", "paper-boat", "city-timelapse", "cat-piano"]
ERROR_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<path>\$\S*): (?P<msg>.+)$")
KEY_VARIABLES = ("GEEKAI_API_KEY", "ZHIPUAI_API_KEY", "BIGMODEL_API_KEY", "BATCHVID_BASE_URL")

FAILING = """\
version: 1
name: failing
defaults:
  model: cogvideox-flash
jobs:
  - id: fine
    prompt: a calm lake at dawn
  - id: doomed
    prompt: a storm that will [fail]
"""

INVALID = """\
version: 1
name: bad
jobs:
  - id: one
    prompt: hello
    wartermark: true
  - id: two
    model: cogvideox-2
    prompt: hi
    size: 1280x720
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, base URL or CI step summary leaks in from the machine running the tests."""
    for name in (*KEY_VARIABLES, "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of manifests/quickstart.yaml, alone in its directory."""
    path = tmp_path / "quickstart.yaml"
    shutil.copy(QUICKSTART, path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output directory of quickstart run to completion on the simulator (do not modify)."""
    base = tmp_path_factory.mktemp("finished")
    shutil.copy(QUICKSTART, base / "quickstart.yaml")
    out = base / "out"
    assert main(["run", str(base / "quickstart.yaml"), "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def with_failure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An output directory where job `doomed` failed, and the run's exit code."""
    base = tmp_path_factory.mktemp("failing")
    (base / "failing.yaml").write_text(FAILING, encoding="utf-8")
    out = base / "out"
    return out, main(["run", str(base / "failing.yaml"), "--out", str(out), *FAST])


@pytest.fixture
def finished_copy(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished output directory, free to damage."""
    return Path(shutil.copytree(finished, tmp_path / "copy"))


# -- validate ---------------------------------------------------------------------------------


def test_validate_accepts_every_shipped_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    """`validate manifests/*.yaml` exits 0 and says ok."""
    assert main(["validate", *map(str, MANIFESTS)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {len(MANIFESTS)} manifest(s)")


def test_validate_prints_every_error_located_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each error is one FILE:LINE:COL: $.path: message line; all of them at once; exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID, encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    located = [m for m in map(ERROR_LINE.match, lines) if m]
    assert [(m["file"], m["line"], m["col"], m["path"]) for m in located] == [
        (str(bad), "6", "5", "$.jobs[0].wartermark"),
        (str(bad), "10", "11", "$.jobs[1].size"),
    ]
    assert "did you mean 'watermark'?" in located[0]["msg"]
    assert "Traceback" not in "\n".join(lines)


# -- plan -------------------------------------------------------------------------------------


def test_plan_table_lists_each_job_with_its_action(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan` prints one row per job, each to be submitted in a new directory."""
    assert main(["plan", str(quickstart), "--out", str(tmp_path / "out")]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    for job_id in QUICKSTART_IDS:
        assert "submit" in rows[job_id]


def test_plan_json_has_jobs_and_totals(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan --json` is one JSON document with jobs, action counts and the cost."""
    assert main(["plan", str(quickstart), "--out", str(tmp_path / "out"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in data["jobs"]] == QUICKSTART_IDS
    assert data["totals"]["actions"] == {"submit": 5}
    assert data["totals"]["cost"] == 0 and data["totals"]["currency"] == "CNY"


def test_dry_run_prints_the_plan(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --dry-run` prints exactly what `plan` prints and writes nothing."""
    common = [str(quickstart), "--out", str(tmp_path / "out"), "--rpm", "6000", "--only", "c*"]
    assert main(["plan", *common]) == 0
    planned = capsys.readouterr().out
    assert main(["run", *common, "--dry-run", "--simulate", "--no-progress"]) == 0
    assert capsys.readouterr().out == planned
    assert not (tmp_path / "out").exists()


def test_only_selects_jobs_by_glob(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--only` keeps the jobs whose id matches any of the globs."""
    argv = ["plan", str(quickstart), "--out", str(tmp_path / "o"), "--json",
            "--only", "c*", "--only", "paper-boat"]
    assert main(argv) == 0
    ids = [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]]
    assert ids == ["paper-boat", "city-timelapse", "cat-piano"]


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1/0", "half"])
def test_invalid_shard_exits_2_with_a_clear_message(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], shard: str
) -> None:
    """An impossible `--shard` is a usage error naming the flag and value; nothing is written."""
    assert main(["run", str(quickstart), "--out", str(tmp_path / "out"), "--shard", shard, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchvid: error: --shard {shard!r}: ")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


# -- run --------------------------------------------------------------------------------------


def test_simulated_run_writes_the_output_layout(finished: Path) -> None:
    """`run --simulate` exits 0 and leaves the report files and each job's files."""
    for name in ("report.json", "report.md", "report.html", "junit.xml", "metadata.jsonl", "batchvid.lock"):
        assert (finished / name).is_file(), name
    for job_id in QUICKSTART_IDS:
        job_dir = finished / "jobs" / job_id
        assert {p.name for p in job_dir.iterdir()} == {"request.json", "response.json", "video.mp4", "poster.jpg"}
    summary = json.loads((finished / "report.json").read_text())["summary"]
    assert summary["succeeded"] == 5 and summary["total"] == 5


def test_second_run_generates_nothing(
    finished_copy: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running a finished directory again exits 0 with zero generated, all skipped."""
    manifest = finished.parent / "quickstart.yaml"
    assert main(["run", str(manifest), "--out", str(finished_copy), *FAST]) == 0
    assert "5 jobs: 0 generated, 5 already done" in capsys.readouterr().out
    summary = json.loads((finished_copy / "report.json").read_text())["summary"]
    assert (summary["succeeded"], summary["skipped"]) == (0, 5)


def test_missing_api_key_exits_2_naming_the_variable_and_sends_nothing(
    quickstart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --simulate and without GEEKAI_API_KEY: exit 2, the variable named, no request."""
    sent: list[httpx.Request] = []

    async def record(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ConnectError("the test forbids the network", request=request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", record)
    out = tmp_path / "out"
    assert main(["run", str(quickstart), "--out", str(out), "--no-progress"]) == 2
    assert "GEEKAI_API_KEY" in capsys.readouterr().err
    assert sent == []
    assert not out.exists()


def test_json_log_is_one_object_per_line(
    quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--log-format json` writes only JSON objects, one per line, on stderr."""
    assert main(["run", str(quickstart), "--out", str(tmp_path / "o"), *FAST,
                 "--log-format", "json"]) == 0
    lines = capsys.readouterr().err.splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) and "event" in e for e in events)
    submitted = {e["job_id"] for e in events if e["event"] == "JobSubmitted"}
    assert submitted == set(QUICKSTART_IDS)


def test_failed_job_gives_exit_1(with_failure: tuple[Path, int]) -> None:
    """A task that ends failed makes the run exit 1; the other job still succeeds."""
    out, code = with_failure
    assert code == 1
    statuses = {j["id"]: j["status"] for j in json.loads((out / "report.json").read_text())["jobs"]}
    assert statuses == {"fine": "succeeded", "doomed": "failed"}


def test_junit_records_the_failure_with_kind_and_message(with_failure: tuple[Path, int]) -> None:
    """junit.xml has a <failure> for the failed job, typed by error kind, with its message."""
    out, _ = with_failure
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["fine"].find("failure") is None
    failure = cases["doomed"].find("failure")
    assert failure is not None
    assert failure.get("type") == "task_failed"
    assert "[fail]" in (failure.get("message") or "")


def test_github_step_summary_gets_report_md_appended(
    quickstart: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GITHUB_STEP_SUMMARY set, report.md is appended to that file, keeping what was there."""
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "out"
    assert main(["run", str(quickstart), "--out", str(out), *FAST]) == 0
    report_md = (out / "report.md").read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "earlier step\n" + report_md


# -- status -----------------------------------------------------------------------------------


def test_status_text_names_the_failed_job(
    with_failure: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` summarises the counts and names the failed job."""
    out, _ = with_failure
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 succeeded" in text and "1 failed" in text
    assert "doomed" in text


def test_status_json_lists_the_failure_with_its_kind(
    with_failure: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` gives the summary and each problem job with its error kind."""
    out, _ = with_failure
    assert main(["status", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["failed"] == 1 and data["summary"]["succeeded"] == 1
    assert [(p["id"], p["status"], p["error"]["kind"]) for p in data["problems"]] == [
        ("doomed", "failed", "task_failed")
    ]


def test_status_of_a_directory_without_report_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` on a directory that is not an output directory says so, without a traceback."""
    assert main(["status", str(tmp_path)]) == 2
    assert "report.json not found" in capsys.readouterr().err


# -- verify -----------------------------------------------------------------------------------


def test_verify_passes_on_an_untouched_directory(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` on a finished run exits 0 having checked every video and its poster."""
    assert main(["verify", str(finished)]) == 0
    assert capsys.readouterr().out.startswith("ok: 10 file(s)")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [(_truncate, "size"), (_flip_byte, "sha256 differs"), (_delete, "missing")],
    ids=["truncated", "flipped-byte", "deleted"],
)
def test_verify_names_a_damaged_video_and_exits_1(
    finished_copy: Path, capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None], problem: str,
) -> None:
    """A truncated, altered or deleted video is reported by its path; exit 1."""
    damage(finished_copy / "jobs" / "paper-boat" / "video.mp4")
    assert main(["verify", str(finished_copy)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("jobs/paper-boat/video.mp4: ") and problem in lines[0]
    assert lines[1] == "1 problem(s) in 10 file(s)"  # five videos, five posters


# -- schema, version --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["manifest", "report"])
def test_schema_prints_a_json_schema(which: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`schema manifest|report` prints the shipped JSON Schema as valid JSON."""
    assert main(["schema", which]) == 0
    printed = json.loads(capsys.readouterr().out)
    shipped = json.loads((ROOT / "schemas" / f"{which}.schema.json").read_text(encoding="utf-8"))
    assert printed == shipped
    assert "$schema" in printed


def test_python_m_batchvid_prints_the_version() -> None:
    """`python -m batchvid --version` is the same program and prints the package version."""
    done = subprocess.run([sys.executable, "-m", "batchvid", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert done.stdout.strip() == f"batchvid {__version__}"


def test_python_m_batchvid_exit_code_reaches_the_shell(tmp_path: Path) -> None:
    """A real process exits 2 on an invalid manifest, printing located errors and no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(INVALID, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "batchvid", "validate", str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{bad}:6:5: $.jobs[0].wartermark: " in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("text", "expected"), [("5", (5.0, 5.0)), ("0.5:15", (0.5, 15.0))])
def test_poll_interval_parses_min_and_max(text: str, expected: tuple[float, float]) -> None:
    """--poll-interval MIN is a fixed interval; MIN:MAX backs off from MIN to MAX."""
    from batchvid.cli.common import poll_interval as _poll_interval

    assert _poll_interval(text, "--poll-interval") == expected


@pytest.mark.parametrize("text", ["x", "0", "5:1", "1:2:3", "-1"])
def test_bad_poll_interval_is_a_usage_error(text: str) -> None:
    """A malformed --poll-interval names the flag and the expected form."""
    from batchvid.cli.common import poll_interval as _poll_interval
    from batchvid.errors import UsageError

    with pytest.raises(UsageError, match="--poll-interval"):
        _poll_interval(text, "--poll-interval")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_plan_works_on_every_shipped_manifest(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchvid plan` prints a plan for every example, whatever its limits: section."""
    assert main(["plan", str(manifest), "--out", str(tmp_path / "out")]) == 0
    assert "estimated cost:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [["--max-cost", "nan"], ["--max-cost", "-1"], ["--rpm", "inf"], ["--timeout", "nan"],
     ["--poll-interval", "nan"], ["--max-in-flight", "0"], ["--base-url", "ftp://host/x"],
     ["--base-url", "not a url"]],
    ids=lambda f: " ".join(f),
)
def test_unusable_numbers_and_urls_are_refused_before_sending(
    flags: list[str], quickstart: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN, infinite, negative or zero limits and non-http base URLs exit 2 naming the flag."""
    assert main(["run", str(quickstart), "--out", str(tmp_path / "out"), "--simulate", *flags]) == 2
    assert flags[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_nan_limit_in_the_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`max_cost: .nan` under limits: cannot switch the budget off: exit 2 naming limits.max_cost."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nlimits:\n  max_cost: .nan\njobs:\n  - id: a\n    prompt: hi\n")
    assert main(["run", str(manifest), "--out", str(tmp_path / "out"), "--simulate"]) == 2
    assert "limits.max_cost" in capsys.readouterr().err


def test_status_predicts_what_plan_would_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` reads the journal: a job stopped mid-create on GeekAI is kept failed, as plan says."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\njobs:\n  - id: a\n    prompt: one\n  - id: b\n    prompt: two\n")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), *FAST]) == 0
    journal = out / ".batchvid" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    key_b = json.loads((out / "report.json").read_text())["jobs"][1]["key"]
    journal.write_text("\n".join(lines) + "\n" + json.dumps(
        {"event": "submitting", "key": key_b, "id": "b", "request_id": "x"}) + "\n")
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rerun"] == {"skip": 1, "keep-failed": 1}


def _journal_only(tmp_path: Path, lines: str) -> Path:
    """An output directory holding only a journal of ``lines``: a run killed before its report."""
    out = tmp_path / "out"
    (out / ".batchvid").mkdir(parents=True)
    (out / ".batchvid" / "journal.jsonl").write_text(lines)
    return out


def test_status_of_a_killed_run_without_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a crash before the first report, status explains instead of 'not found'."""
    out = _journal_only(tmp_path, '{"event":"submitted","id":"a","key":"k","task_id":"t"}\n')
    assert main(["status", str(out)]) == 2
    assert "no report yet" in capsys.readouterr().err


def test_status_without_report_tells_unanswered_creates_from_running_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A create journaled but unanswered (sent or not) is not counted as a submitted task."""
    out = _journal_only(
        tmp_path,
        '{"event":"submitting","id":"a","key":"ka","request_id":"ra"}\n'
        '{"event":"submitted","id":"a","key":"ka","task_id":"ta"}\n'
        '{"event":"submitting","id":"b","key":"kb","request_id":"rb"}\n'
        '{"event":"submitting","id":"c","key":"kc","request_id":"rc"}\n',
    )
    assert main(["status", str(out)]) == 2
    err = capsys.readouterr().err
    assert "records 3 jobs: 1 submitted with a task id and not finished, " in err
    assert "2 with a create journaled but no answer recorded" in err
