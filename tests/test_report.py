"""Report files: deterministic bytes, schema-valid report.json, JUnit and dataset rows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema

from batchvid.junit import render_junit
from batchvid.report import Outcome, RunInfo, build_report, write_outputs
from tests.helpers import make_job

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "report.schema.json").read_text())


def _outcomes() -> list[Outcome]:
    ok = Outcome(make_job("ok", 0, fps=30), "succeeded", "submit", task_id="t1",
                 video={"path": "jobs/ok/video.mp4", "sha256": "a" * 64, "bytes": 10},
                 media={"width": 64, "height": 48, "fps": 30.0, "duration": 1.0,
                        "has_audio": False, "codec": "h264", "frame_count": 30},
                 attempts=2, seconds=1.5)
    bad = Outcome(make_job("bad", 1), "failed", "submit", task_id=None,
                  error={"kind": "content_filter", "message": "unsafe <prompt> & more"})
    wait = Outcome(make_job("wait", 2), "pending", "submit", task_id="t3",
                   error={"kind": "not_started", "message": "stopped"})
    return [ok, bad, wait]


def _info(seconds: float = 1.0, started: str = "2026-01-01T00:00:00+00:00") -> RunInfo:
    return RunInfo("m.yaml", "demo", "geekai", 3, {"reason": "interrupted", "message": "SIGINT"},
                   started, started, seconds, 0.0, "CNY")


def test_report_validates_against_the_shipped_schema() -> None:
    """report.json conforms to schemas/report.schema.json."""
    jsonschema.Draft202012Validator(SCHEMA).validate(build_report(_outcomes(), _info()))


def test_outputs_are_byte_identical_outside_timing(tmp_path: Path) -> None:
    """The same results give the same lock, metadata and report outside its timing section."""
    write_outputs(tmp_path / "a", _outcomes(), _info(1.0, "2026-01-01T00:00:00+00:00"))
    write_outputs(tmp_path / "b", _outcomes(), _info(9.0, "2026-02-02T00:00:00+00:00"))
    for name in ("batchvid.lock", "metadata.jsonl", "junit.xml", "report.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a.pop("timing") != b.pop("timing")
    assert a == b


def test_metadata_lists_only_finished_videos_with_file_name(tmp_path: Path) -> None:
    """metadata.jsonl has one row per finished video with a relative file_name."""
    write_outputs(tmp_path, _outcomes(), _info())
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == ["jobs/ok/video.mp4"]
    assert rows[0]["fps"] == 30.0 and rows[0]["prompt"] == "prompt of ok"


def test_junit_has_a_testcase_per_job_and_failures_with_kind() -> None:
    """junit.xml: one testcase per job; failed jobs are failures typed by error kind."""
    root = ET.fromstring(render_junit(build_report(_outcomes(), _info())))
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["ok", "bad", "wait"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("type") == "content_filter"
    assert failure.get("message") == "unsafe <prompt> & more"
    assert cases[2].find("skipped") is not None
    assert root.get("failures") == "1" and root.get("tests") == "3"


def test_markdown_names_failed_jobs_and_the_stop_reason(tmp_path: Path) -> None:
    """report.md shows the failures table and why the run stopped."""
    write_outputs(tmp_path, _outcomes(), _info())
    text = (tmp_path / "report.md").read_text()
    assert "| `bad` | failed | content_filter |" in text
    assert "Stopped early (interrupted)" in text


def test_lock_pins_only_done_jobs(tmp_path: Path) -> None:
    """batchvid.lock pins id -> key, task id and video sha256 for done jobs."""
    write_outputs(tmp_path, _outcomes(), _info())
    lock = json.loads((tmp_path / "batchvid.lock").read_text())
    assert list(lock["jobs"]) == ["ok"]
    assert lock["jobs"]["ok"]["sha256"] == "a" * 64 and lock["jobs"]["ok"]["task_id"] == "t1"


def _failed_with(message: str) -> list[Outcome]:
    return [Outcome(make_job("bad", 0), "failed", "submit",
                    error={"kind": "server_error", "message": message})]


def test_junit_stays_well_formed_with_control_characters_in_a_message() -> None:
    """A provider message with bytes XML forbids still gives parseable junit.xml."""
    xml = render_junit(build_report(_failed_with("bad\x00gateway\x1b[0m"), _info()))
    failure = ET.fromstring(xml).find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "bad\ufffdgateway\ufffd[0m"


def test_markdown_shows_an_html_error_page_as_text(tmp_path: Path) -> None:
    """An HTML error body in a message is one clean line of text in report.md, never markup."""
    write_outputs(tmp_path, _failed_with("HTTP 504: <html><title>Gateway</title> a|b <x"), _info())
    text = (tmp_path / "report.md").read_text()
    assert "| HTTP 504: Gateway a\\|b &lt;x |" in text
    assert "<html>" not in text


def test_exit_code_follows_the_job_statuses() -> None:
    """3 while any job is pending, else 1 if any failed, else 0 (even if a stop came late)."""
    from batchvid.report import exit_code

    assert exit_code(["succeeded", "skipped"]) == 0
    assert exit_code(["succeeded", "failed"]) == 1
    assert exit_code(["failed", "pending"]) == 3


def test_source_and_matrix_only_for_jobs_that_have_them() -> None:
    """A job expanded from a matrix gets ``source`` and ``matrix`` (sorted by name); a job
    without them keeps the entry shape of earlier versions."""
    swept = dataclasses.replace(make_job("sweep-fox-30", 0), source="sweep",
                                matrix={"fps": 30, "animal": "fox"})
    plain = make_job("plain", 1)
    report = build_report([Outcome(swept, "pending", "submit"), Outcome(plain, "pending", "submit")],
                          _info())
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    first, second = report["jobs"]
    assert first["source"] == "sweep"
    assert list(first["matrix"].items()) == [("animal", "fox"), ("fps", 30)]
    assert "source" not in second and "matrix" not in second


def test_sweep_axes_carry_the_matrix_names() -> None:
    """find_sweeps reads report.json's matrix: its axes are the manifest's names."""
    from batchvid.sweeps import find_sweeps

    jobs = [dataclasses.replace(make_job(f"s-{a}-{t}", i, prompt=f"{a} {t}"), source="s",
                                matrix={"animal": a, "time": t})
            for i, (a, t) in enumerate([("fox", "dawn"), ("fox", "dusk"), ("cat", "dawn"), ("cat", "dusk")])]
    report = build_report([Outcome(j, "pending", "submit") for j in jobs], _info())
    (sweep,) = find_sweeps(report["jobs"])
    assert [(a.name, a.values) for a in sweep.axes] == [("animal", ["fox", "cat"]), ("time", ["dawn", "dusk"])]
    assert sweep.coordinates == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_license_is_written_into_the_manifest_section() -> None:
    """RunInfo's license appears in report.json's manifest section (export reads it there)."""
    info = dataclasses.replace(_info(), license="cc-by-4.0")
    report = build_report(_outcomes(), info)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert report["manifest"]["license"] == "cc-by-4.0"
    assert "license" not in build_report(_outcomes(), _info())["manifest"]


def _junit_whole_tree(report: dict[str, object]) -> str:
    """junit.xml as ElementTree writes the whole suite indented at once (the reference layout)."""
    suite = ET.fromstring(render_junit(report))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def test_junit_written_a_testcase_at_a_time_has_the_whole_tree_layout() -> None:
    """junit.xml, built case by case, has ET.indent's bytes: failures, skips, passes, no jobs."""
    report = build_report(_outcomes(), _info())
    assert render_junit(report) == _junit_whole_tree(report)
    ok_only = build_report(_outcomes()[:1], _info())
    assert render_junit(ok_only) == _junit_whole_tree(ok_only)
    empty = build_report([], _info())
    assert render_junit(empty).endswith('skipped="0" />\n')
    assert render_junit(empty) == _junit_whole_tree(empty)


def _junit_by_element_tree(report: dict[str, object]) -> str:
    """junit.xml as earlier versions built it: an ElementTree per testcase, ET.indent's layout."""
    from batchvid.junit import _clean, short_message

    s, name = report["summary"], report["manifest"]["name"]  # type: ignore[index]
    suite = ET.Element("testsuite", {"name": f"batchvid.{name}", "tests": str(s["total"]),  # type: ignore[index]
                                     "failures": str(s["failed"]), "errors": "0",  # type: ignore[index]
                                     "skipped": str(s["pending"])})  # type: ignore[index]
    for j in report["jobs"]:  # type: ignore[attr-defined]
        case = ET.SubElement(suite, "testcase", {"classname": name, "name": j["id"]})
        err = j["error"] or {}
        message = short_message(str(err.get("message", "")))
        if j["status"] == "failed":
            node = ET.SubElement(case, "failure", {"type": _clean(err.get("kind", "error")),
                                                   "message": _clean(message)})
            node.text = _clean(f"{err.get('kind')}: {message}")
        elif j["status"] == "pending":
            ET.SubElement(case, "skipped", {"message": _clean(message or "not finished")})
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def test_junit_text_is_element_trees_for_messages_full_of_markup_quotes_and_control_characters() -> None:
    """Messages and kinds with <, >, &, quotes, tabs, newlines, CR and control characters, and
    a manifest name with quotes: the same bytes as ElementTree's serialisation."""
    hostile = ['a "quoted" <b>&amp; \'x\'', "tab\there\r\nnew\nline", "bell\x07\x1b[0m", "", "ünï ≠ 😀",
               "<html><body><h1>502 Bad Gateway</h1></body></html>"]
    outcomes = []
    for i, text in enumerate(hostile * 2):
        status = ["failed", "pending", "succeeded"][i % 3]
        o = Outcome(make_job(f"job-{i}", i), status, "submit")
        if status != "succeeded":
            o.error = {"kind": f"k<{i}>\"&\t\r\n{text[:3]}", "message": text}
        outcomes.append(o)
    info = dataclasses.replace(_info(), name='say "hi" & <go>')
    report = build_report(outcomes, info)
    assert render_junit(report) == _junit_by_element_tree(report)
    empty = build_report([], info)
    assert render_junit(empty) == _junit_by_element_tree(empty)


def test_packed_outcomes_write_the_same_files_as_unpacked_ones(tmp_path: Path) -> None:
    """A run's finished outcomes are packed (Outcome.pack): every report file, report.html
    included, has the same bytes as from the same outcomes unpacked, and they read back equal."""
    plain = _outcomes()
    plain[0].poster = {"path": "jobs/ok/poster.jpg", "sha256": "b" * 64, "bytes": 3}
    plain[0].provided = {"revised_prompt": "a fox, ünï", "provider_duration": None}
    packed = _outcomes()
    packed[0].poster, packed[0].provided = plain[0].poster, dict(plain[0].provided)
    for o in packed:
        o.pack()
    assert all(o.packed for o in packed) and packed == plain
    write_outputs(tmp_path / "plain", plain, _info())
    report = write_outputs(tmp_path / "packed", packed, _info())
    assert not isinstance(report["jobs"], list)  # made where read, never all held
    assert report["jobs"] == build_report(plain, _info())["jobs"]
    for name in ("report.json", "report.md", "junit.xml", "metadata.jsonl", "batchvid.lock", "report.html"):
        assert (tmp_path / "packed" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name
