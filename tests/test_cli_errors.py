"""What a user meets when something is wrong around a run: the output directory, the base URL,
a damaged journal. Each is one line naming what is wrong, with the exit code README.md gives,
never a traceback, never the API key."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchvid.cli import main
from batchvid.store import STATE_DIR
from tests.helpers import FAST

KEY = "sk-test-0123456789abcdef"

ONE = """\
version: 1
name: one
defaults:
  model: cogvideox-flash
jobs:
  - id: lake
    prompt: a calm lake at dawn
"""


def _manifest(directory: Path) -> Path:
    manifest = directory / "m.yaml"
    manifest.write_text(ONE, encoding="utf-8")
    return manifest


def _finished(directory: Path) -> Path:
    out = directory / "out"
    assert main(["run", str(_manifest(directory)), "--out", str(out), *FAST]) == 0
    return out


def test_base_url_with_credentials_is_refused_before_anything_is_journaled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --base-url with a user name and password (here the key) exits 2 before the output
    directory is made, saying why without echoing the URL: sent as it was, the HTTP client refused
    every create after its `submitting` line was journaled, and the jobs were then kept failed
    as possibly created."""
    monkeypatch.setenv("GEEKAI_API_KEY", KEY)
    out = tmp_path / "out"
    code = main(["run", str(_manifest(tmp_path)), "--out", str(out), "--no-progress",
                 "--base-url", f"http://user:{KEY}@127.0.0.1:9/api/v1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--base-url: a user name or password in the URL is not supported" in err
    assert KEY not in err
    assert not out.exists()


def test_an_error_quoting_a_url_never_shows_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error that quotes what the user typed (a base URL with the key in its query) shows
    the key blanked out."""
    monkeypatch.setenv("GEEKAI_API_KEY", KEY)
    code = main(["run", str(_manifest(tmp_path)), "--out", str(tmp_path / "out"),
                 "--base-url", f"https://open.bigmodel.cn/api/paas/v4?key={KEY}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is BigModel's API" in err and "key=[REDACTED]" in err
    assert KEY not in err


def test_verify_reports_a_corrupt_journal_as_a_problem_and_still_checks_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged journal line is a problem verify names (exit 1, `FILE:LINE`), after it has
    still re-hashed every file; it no longer aborts verify as if the directory were not one."""
    out = _finished(tmp_path)
    journal = out / STATE_DIR / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines(keepends=True)
    journal.write_text('{"event": "succeeded", garbage\n' + "".join(lines), encoding="utf-8")
    capsys.readouterr()
    (out / "jobs" / "lake" / "video.mp4").write_bytes(b"not the video")
    assert main(["verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert "journal.jsonl:1: the journal is corrupt" in err
    assert "jobs/lake/video.mp4:" in err  # the files were checked all the same


def test_an_output_directory_that_cannot_be_opened_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lock file a run cannot open (here a directory is in its place) is one `batchvid:
    error:` line naming the file and why, exit 2 as for an output directory that is not
    writable (nothing was sent), not a traceback."""
    out = _finished(tmp_path)
    lock = out / STATE_DIR / "lock"
    lock.unlink()
    lock.mkdir()
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err == f"batchvid: error: cannot open the lock file {lock}: it is a directory; move it out of " \
                  "the way (batchvid makes the lock file) or choose another --out\n"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (tmp_path's parents are private to ours)."""
    path = Path(tempfile.mkdtemp(prefix="batchvid-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for sub in [path, *path.rglob("*")]:
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o755)
        shutil.rmtree(path)


def test_a_read_only_output_directory_exits_2_naming_it(shared_dir: Path) -> None:
    """A finished output directory made read-only, run again, exits 2 naming the directory
    before anything is sent (it ended in a PermissionError traceback when the lock was
    opened). Run as another user when the tests run as root, whom permissions do not stop."""
    out = _finished(shared_dir)
    for sub in [out, *out.rglob("*")]:
        sub.chmod(sub.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | 0o444
                  | (0o111 if sub.is_dir() else 0))
    command = [sys.executable, "-m", "batchvid", "run", str(shared_dir / "m.yaml"),
               "--out", str(out), *FAST]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"batchvid: error: {out} is not writable" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_help_gives_the_exit_codes_and_the_defaults_readme_gives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`batchvid run --help` lists the exit codes a CI job branches on and the defaults of
    --retries (5) and --timeout (1800) that README.md gives."""
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "default 5); polls and downloads retry until --timeout" in text
    assert "submit to downloaded (default 1800)" in text
    for code in ("0 every selected job is done", "1 the run finished and at least one job failed",
                 "2 invalid manifest", "3 stopped early and resumable"):
        assert code in text


@pytest.mark.parametrize(("flag", "value"), [("--sim-fault-rate", "2"), ("--sim-latency", "-1")])
def test_a_simulator_flag_out_of_range_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """An out-of-range --sim-* value exits 2 naming the flag as typed (it named the
    simulator's internal field: `fault_rate must be between 0 and 1`)."""
    code = main(["run", str(_manifest(tmp_path)), "--out", str(tmp_path / "out"), "--simulate",
                 flag, value])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"batchvid: error: {flag} {value}: expected")


def test_status_says_when_a_run_is_writing_the_directory_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a run holds the directory's lock, status says so and names its pid: report.json
    is the previous run's (without a report, it said the run "was killed or is still running"
    and advised running the same command again, which a live run refuses)."""
    from batchvid.store import OutputDir

    out = _finished(tmp_path)
    capsys.readouterr()
    with OutputDir(out) as writing:
        writing.open()
        assert main(["status", str(out)]) == 0
        assert f"note: a batchvid run (pid {os.getpid()}) is writing {out} now" in capsys.readouterr().err
        (out / "report.json").unlink()
        assert main(["status", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"has no report yet: a batchvid run (pid {os.getpid()}) is writing it now" in err
    (out / STATE_DIR / "lock").write_text("4242\n")  # as a killed run leaves it: its pid
    assert main(["status", str(out)]) == 2
    assert "has no report yet: the run writing it was killed" in capsys.readouterr().err


def test_plan_into_a_file_says_it_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`plan --out FILE` exits 2 saying FILE is a file (it said the journal inside it could not
    be read: `Not a directory: 'FILE/.batchvid/journal.jsonl'`)."""
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")
    assert main(["plan", str(_manifest(tmp_path)), "--out", str(afile)]) == 2
    assert capsys.readouterr().err == (
        f"batchvid: error: {afile} is a file; --out names the run's output directory\n")
    assert afile.read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize(("shard", "message"), [
    ("1/0", "--shard '1/0': N, the number of shards, must be 1 or more"),
    ("5/4", "--shard '5/4': I must be between 1 and N (4)"),
])
def test_a_bad_shard_says_which_number_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shard: str, message: str
) -> None:
    """`--shard 1/0` says N is wrong (it said I must be between 1 and N, of N = 0)."""
    assert main(["plan", str(_manifest(tmp_path)), "--shard", shard]) == 2
    assert capsys.readouterr().err == f"batchvid: error: {message}\n"


def test_status_without_report_json_after_a_clean_run_says_it_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """report.json deleted after a run that ended (its lock left empty): status exits 2 saying
    report.json is missing and that running the manifest again writes it, not that a run was
    killed; that run does write it, sending nothing."""
    out = _finished(tmp_path)
    assert (out / STATE_DIR / "lock").read_text() == ""
    (out / "report.json").unlink()
    capsys.readouterr()
    assert main(["status", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchvid: error: {out} has no report.json: it is missing (the last run ended cleanly")
    assert "1 jobs, 1 done; run the same manifest again into it to write report.json again" in err
    assert "killed" not in err
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    assert "1 skipped" in capsys.readouterr().out
