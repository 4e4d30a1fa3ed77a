"""``batchvid enhance`` when it cannot finish: its last line counts what it really did, a stop
(the key refused) exits 3 as ``run`` does, and the same command run again resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.cli import main
from batchvid.enhance import EnhanceResult
from batchvid.enhancing import Rewrite, rewrite_summary
from batchvid.manifest import load_manifest
from tests.test_enhance_run import FOX, events, write_manifest


def test_summary_counts_only_rewrites_that_exist(tmp_path: Path) -> None:
    """A failed rewrite, or one never asked because the command stopped, is counted as a job
    without a rewrite: neither as rewritten now nor as taken from the journal."""
    job = load_manifest(write_manifest(tmp_path, FOX)).jobs[0]
    result = EnhanceResult("A fox in deep snow.", "a fox in the snow", "enhanced", None, "glm-4-flash")
    rows = [
        Rewrite(job, result, asked=True),
        Rewrite(job, result),
        Rewrite(job, None, asked=True, error="auth: the API key was refused"),
        Rewrite(job, None, error="stopped before the rewrite"),
    ]
    assert rewrite_summary(rows, "runs/x") == (
        "4 enhanced job(s): 1 rewritten now, 1 from the journal of runs/x, 2 without a "
        "rewrite; no video was requested"
    )


def test_refused_key_stops_with_exit_3_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key the chat API refuses stops `batchvid enhance` with exit 3 (resumable, as `run`),
    says that nothing was rewritten, and the same command with a good key asks again."""
    path, out = write_manifest(tmp_path, FOX), tmp_path / "out"
    monkeypatch.setenv("GEEKAI_API_KEY", "sim-invalid")  # the simulator refuses it (401)
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 3
    captured = capsys.readouterr()
    assert "0 rewritten now, 0 from the journal" in captured.out
    assert "1 without a rewrite" in captured.out
    assert "run the same command again to resume" in captured.err
    assert events(out) == []
    monkeypatch.delenv("GEEKAI_API_KEY")
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    assert "1 rewritten now" in capsys.readouterr().out
    assert events(out) == [("enhanced", "fox")]


def test_shorter_rewrite_from_the_simulator_is_a_description(tmp_path: Path) -> None:
    """An over-long first answer ([long]) is asked again; the simulator's second answer
    describes the prompt, and never echoes batchvid's own request to shorten it, so the
    prompt sent is about the fox."""
    import json

    body = FOX.replace("a fox in the snow", "a fox in the snow [long]")
    out = tmp_path / "out"
    assert main(["run", str(write_manifest(tmp_path, body)), "--out", str(out),
                 "--simulate", "--no-progress", "--sim-latency", "0.05"]) == 0
    fox = json.loads((out / "report.json").read_text())["jobs"][0]
    assert fox["enhance"]["requests"] == 2 and fox["enhance"]["status"] == "enhanced"
    assert fox["prompt"].startswith("A fox in the snow")
    assert "characters long" not in fox["prompt"]


def test_status_after_enhance_alone_says_no_run_has_written_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` on a directory only `batchvid enhance` wrote into (its pid left in the lock, as
    found) exits 2 saying the journal holds only prompt rewrites and `batchvid run` writes the
    report; not that a run writing it was killed."""
    path, out = write_manifest(tmp_path, FOX), tmp_path / "out"
    assert main(["enhance", str(path), "--out", str(out), "--simulate"]) == 0
    capsys.readouterr()
    assert main(["status", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"batchvid: error: {out} has no report yet: its journal holds only prompt rewrites (1, made "
        f"by `batchvid enhance`); no run has generated a video here. `batchvid run MANIFEST --out "
        f"{out}` sends them and writes the report\n"
    )
