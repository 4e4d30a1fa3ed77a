"""The CLI's side of manifest loading: warnings on stderr, --root, --only, --sim-* flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchvid.cli import main
from batchvid.manifest import WARN_JOBS

PNG = (Path(__file__).resolve().parent.parent / "manifests" / "images" / "photo.png").read_bytes()


def big_matrix(tmp_path: Path) -> Path:
    values = ", ".join(f"v{i}" for i in range(WARN_JOBS + 1))
    path = tmp_path / "big.yaml"
    path.write_text(f'version: 1\njobs:\n  - id: big\n    prompt: "x ${{v}}"\n    matrix:\n      v: [{values}]\n')
    return path


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_large_matrix_warning_goes_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """validate and plan print the manifest's warning, with the job count, on stderr."""
    extra = ["--out", str(tmp_path / "out")] if command == "plan" else []
    assert main([command, str(big_matrix(tmp_path)), *extra]) == 0
    err = capsys.readouterr().err
    assert f"big.yaml:5:5: $.jobs[0].matrix: warning: this job expands to {WARN_JOBS + 1:,} jobs" in err


def test_run_prints_the_warning_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --dry-run shows the warning on stderr too (it comes from the same load)."""
    assert main(["run", str(big_matrix(tmp_path)), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "warning: this job expands to" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--sim-latency", "1"], ["--sim-seed", "3", "--sim-fault-rate", "0.1"]])
def test_sim_flags_without_simulate_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """--sim-* flags without --simulate are a usage error (exit 2), not silently ignored."""
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\njobs:\n  - id: a\n    prompt: p\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert "only used with --simulate" in err and flags[0] in err


def test_only_that_selects_nothing_suggests_a_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan --only with a near-miss pattern exits 2 with a did-you-mean."""
    path = tmp_path / "m.yaml"
    path.write_text('version: 1\njobs:\n  - id: coffee\n    prompt: "c ${n}"\n    matrix: {n: [a, b]}\n')
    assert main(["plan", str(path), "--only", "cofee", "--out", str(tmp_path / "o")]) == 2
    assert "--only cofee: no job id matches; did you mean 'coffee'?" in capsys.readouterr().err


def test_root_flag_lets_images_come_from_elsewhere_under_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate --root DIR accepts an image in DIR/assets for a manifest in DIR/batches."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "cat.png").write_bytes(PNG)
    (tmp_path / "batches").mkdir()
    path = tmp_path / "batches" / "m.yaml"
    path.write_text("version: 1\njobs:\n  - id: a\n    image: ../assets/cat.png\n")
    assert main(["validate", str(path)]) == 2
    assert main(["validate", str(path), "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 manifest(s), 1 jobs")


def test_only_names_a_manifest_job_and_selects_what_it_expanded_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan --only coffee --json lists the coffee-* jobs its matrix expanded to, and no other."""
    import json

    path = tmp_path / "m.yaml"
    path.write_text('version: 1\njobs:\n  - id: coffee\n    prompt: "c ${n}"\n    matrix: {n: [a, b]}\n'
                    "  - id: tea\n    prompt: t\n")
    assert main(["plan", str(path), "--only", "coffee", "--json", "--out", str(tmp_path / "o")]) == 0
    steps = json.loads(capsys.readouterr().out)["jobs"]
    assert [(s["id"], s["action"]) for s in steps] == [("coffee-a", "submit"), ("coffee-b", "submit")]
