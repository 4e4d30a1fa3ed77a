"""report.html without a browser: posters, sweep detection, escaping, determinism, `view`."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from batchvid.cli import main
from batchvid.gallery import render_gallery, script_json, write_gallery
from batchvid.manifest import load_manifest
from batchvid.poster import make_poster
from batchvid.simulator.video import VideoSpec, render_video
from batchvid.store import sha256_file
from batchvid.sweeps import find_sweeps
from tests.helpers import FAST

ROOT = Path(__file__).parent.parent
HOSTILE = '</script><script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">'
MANIFEST = f"""\
version: 1
name: gallery
defaults:
  model: cogvideox-flash
jobs:
  - id: sweep
    prompt: "A ${{animal}} drives a small car at ${{time}}"
    matrix:
      animal: [rabbit, fox]
      time: [dawn, night]
    samples: 2
  - id: hostile
    prompt: {json.dumps(HOSTILE)}
  - id: doomed
    prompt: a storm that will [fail]
    model: cogvideox-2
"""


def _report_jobs(manifest: Path) -> list[dict[str, Any]]:
    """report.json-shaped job entries for a manifest's expanded jobs."""
    return [{"id": j.id, "sample": j.sample, "parameters": j.canonical_params()}
            for j in load_manifest(manifest).jobs]


def simulated_run(base: Path) -> Path:
    """MANIFEST run with the in-process simulator into base/out (one job fails: exit 1)."""
    (base / "gallery.yaml").write_text(MANIFEST)
    assert main(["run", str(base / "gallery.yaml"), "--out", str(base / "out"), *FAST]) == 1
    return base / "out"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated_run(tmp_path_factory.mktemp("gallery"))


# -- posters ----------------------------------------------------------------------------------


def test_poster_is_the_first_frame_at_most_320_wide_and_deterministic(tmp_path: Path) -> None:
    """make_poster writes a JPEG no wider than 320 px, aspect kept, same bytes every time."""
    video = tmp_path / "video.mp4"
    video.write_bytes(render_video(VideoSpec(1280, 720, 30, 0.2, False, 3)))
    assert make_poster(video, tmp_path / "a.jpg") and make_poster(video, tmp_path / "b.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8" and data == (tmp_path / "b.jpg").read_bytes()
    with av.open(str(tmp_path / "a.jpg")) as image:
        frame = next(image.decode(video=0))
    assert (frame.width, frame.height) == (320, 180)


def test_poster_of_a_broken_video_is_not_made(tmp_path: Path) -> None:
    """A file that is not a video gives False and no poster file."""
    video = tmp_path / "video.mp4"
    video.write_bytes(b"not a video at all" * 100)
    assert make_poster(video, tmp_path / "poster.jpg") is False
    assert list(tmp_path.iterdir()) == [video]


# -- sweeps -----------------------------------------------------------------------------------


def test_sweeps_of_the_example_manifest_are_recovered_with_their_axes() -> None:
    """manifests/sweep.yaml: two sweeps, axes in matrix order, each job's coordinates right."""
    jobs = _report_jobs(ROOT / "manifests" / "sweep.yaml")
    sweeps = {s.name: s for s in find_sweeps(jobs)}
    assert set(sweeps) == {"sweep", "models"}
    sweep = sweeps["sweep"]
    assert [(a.name, a.values) for a in sweep.axes] == [
        ("‹1›", ["rabbit", "fox"]), ("‹2›", ["dawn", "night"]), ("fps", [30, 60])]
    assert sweep.template == "A ‹1› drives a small car at ‹2›"
    fox_night_60 = [jobs[m]["id"] for m, c in zip(sweep.members, sweep.coordinates, strict=True)
                    if c == [1, 1, 1]]
    assert fox_night_60 == ["sweep-fox-night-60-s0", "sweep-fox-night-60-s1"]
    models = sweeps["models"]
    assert [(a.name, a.values) for a in models.axes] == [
        ("model", ["cogvideox-flash", "cogvideox-2"]), ("quality", ["speed", "quality"])]


def test_unrelated_neighbours_with_a_common_first_word_are_not_a_sweep() -> None:
    """rabbit-car and rabbit-boat (different prompts, not one matrix) are not grouped."""
    jobs = [{"id": "rabbit-car", "sample": 0, "parameters": {"model": "m", "prompt": "a rabbit drives a car"}},
            {"id": "rabbit-boat", "sample": 0, "parameters": {"model": "m", "prompt": "a rabbit rows a boat"}}]
    assert find_sweeps(jobs) == []


def test_samples_of_one_job_are_a_sweep_without_axes() -> None:
    """`samples: 3` alone gives one group of three, side by side, and no axis."""
    jobs = [{"id": f"shot-s{n}", "sample": n, "parameters": {"model": "m", "prompt": "p"}} for n in range(3)]
    (sweep,) = find_sweeps(jobs)
    assert (sweep.name, sweep.axes, sweep.members) == ("shot", [], [0, 1, 2])


def test_declared_source_and_matrix_are_used_as_they_are() -> None:
    """Job entries with `source` and `matrix` are grouped by source, axes from the matrix."""
    jobs = [{"id": f"x{i}", "sample": 0, "source": "grid", "matrix": {"a": a, "b": b},
             "parameters": {"prompt": "same"}} for i, (a, b) in enumerate([(1, "p"), (1, "q"), (2, "p")])]
    (sweep,) = find_sweeps(jobs)
    assert [(a.name, a.values) for a in sweep.axes] == [("a", [1, 2]), ("b", ["p", "q"])]
    assert sweep.coordinates == [[0, 0], [0, 1], [1, 0]]


# -- the page ---------------------------------------------------------------------------------


def test_script_json_cannot_close_its_script_block() -> None:
    """`</script>`, `<!--` and `&` in data never appear raw in the JSON written into the page."""
    text = str(script_json({"p": "</script><!-- & \u2028"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"p": "</script><!-- & \u2028"}


def test_run_writes_report_html_with_every_job_and_posters(run_dir: Path) -> None:
    """`run` leaves report.html with one card entry per job and a poster per finished video."""
    html = (run_dir / "report.html").read_text()
    data = json.loads(re.search(r'id="batchvid-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    report = json.loads((run_dir / "report.json").read_text())
    assert [c["id"] for c in data["jobs"]] == [j["id"] for j in report["jobs"]]
    for card in data["jobs"]:
        if card["status"] == "succeeded":
            assert card["poster"] == f"jobs/{card['id']}/poster.jpg"
            assert (run_dir / card["poster"]).read_bytes()[:2] == b"\xff\xd8"
            assert card["video"] == f"jobs/{card['id']}/video.mp4"
    doomed = next(c for c in data["jobs"] if c["id"] == "doomed")
    assert doomed["error"]["kind"] == "task_failed" and doomed["poster"] is None


def test_hostile_prompt_never_reaches_the_page_as_markup(run_dir: Path) -> None:
    """The prompt's `<script>` and `<img onerror>` appear nowhere unescaped in report.html."""
    html = (run_dir / "report.html").read_text()
    assert "window.__pwned" in html  # the data is there, escaped
    assert "<script>window" not in html and "<img src=x" not in html
    assert html.count("<script") == 2  # the data block and the page's own script


def test_page_loads_nothing_from_another_host(run_dir: Path) -> None:
    """No src or href in report.html names a scheme or host; the CSP forbids the rest."""
    html = (run_dir / "report.html").read_text()
    assert not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', html)
    assert "default-src 'none'" in html


def test_report_md_links_to_report_html(run_dir: Path) -> None:
    """report.md points at report.html."""
    assert "](report.html)" in (run_dir / "report.md").read_text()


def test_report_html_is_deterministic_outside_timing(run_dir: Path, tmp_path: Path) -> None:
    """Two runs of the same manifest write the same report.html once timing is equal. (One
    create at a time: the samples of a GeekAI job send identical bodies, so which sample gets
    which simulated video follows the order the creates arrive in.)"""
    manifest = run_dir.parent / "gallery.yaml"
    outs = [tmp_path / "first", tmp_path / "again"]
    for out in outs:
        assert main(["run", str(manifest), "--out", str(out), *FAST, "--max-in-flight", "1"]) == 1
    first, second = (json.loads((out / "report.json").read_text()) for out in outs)
    second["timing"] = first["timing"]
    posters = {j["id"]: f"jobs/{j['id']}/poster.jpg" for j in first["jobs"] if j["video"]}
    assert render_gallery(second, posters) == render_gallery(copy.deepcopy(first), posters)
    for job_id in posters:
        assert (outs[0] / posters[job_id]).read_bytes() == (outs[1] / posters[job_id]).read_bytes()


def test_merge_writes_report_html(run_dir: Path, tmp_path: Path) -> None:
    """`merge` writes report.html for the merged directory, posters included."""
    assert main(["merge", str(run_dir), "--into", str(tmp_path / "merged")]) == 0
    html = (tmp_path / "merged" / "report.html").read_text()
    assert "sweep-fox-night-s1" in html
    assert (tmp_path / "merged" / "jobs" / "sweep-fox-night-s1" / "poster.jpg").is_file()


def test_view_regenerates_report_html_and_prints_its_url(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`view OUT` writes report.html again (posters too) and prints its file:// URL."""
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    (out / "report.html").unlink()
    (out / "jobs" / "hostile" / "poster.jpg").unlink()
    assert main(["view", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (out / "report.html").resolve().as_uri()
    assert (out / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()
    assert (out / "jobs" / "hostile" / "poster.jpg").is_file()


def test_view_of_a_directory_without_report_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`view` of a directory that is not an output directory says so and exits 2."""
    assert main(["view", str(tmp_path)]) == 2
    assert "report.json not found" in capsys.readouterr().err


@pytest.mark.slow
def test_view_serve_serves_the_directory_on_loopback(run_dir: Path) -> None:
    """`view --serve --port 0` prints an http://127.0.0.1 URL that serves report.html and videos."""
    proc = subprocess.Popen([sys.executable, "-m", "batchvid", "view", str(run_dir), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/report\.html", line).group(0)  # type: ignore[union-attr]
        page = httpx.get(url)
        assert page.status_code == 200 and page.text == (run_dir / "report.html").read_text()
        video = httpx.get(url.replace("report.html", "jobs/hostile/video.mp4"))
        assert video.content == (run_dir / "jobs" / "hostile" / "video.mp4").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_write_gallery_returns_the_page_path(run_dir: Path, tmp_path: Path) -> None:
    """write_gallery writes root/report.html and returns that path."""
    report = json.loads((run_dir / "report.json").read_text())
    report["jobs"] = [j for j in report["jobs"] if j["status"] == "failed"]
    assert write_gallery(tmp_path, report) == tmp_path / "report.html"
    assert "doomed" in (tmp_path / "report.html").read_text()


def test_report_time_trusts_recorded_posters_and_makes_none(run_dir: Path, tmp_path: Path) -> None:
    """At report time a recorded poster is linked without looking at the disk and a missing
    unrecorded one (an older directory) is not made; `view`'s make=True makes it."""
    from batchvid.gallery import ensure_posters

    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    jobs = json.loads((out / "report.json").read_text())["jobs"]
    recorded = next(j for j in jobs if j.get("poster"))
    (out / recorded["poster"]["path"]).unlink()
    assert ensure_posters(out, jobs)[recorded["id"]] == recorded["poster"]["path"]
    old = [{k: v for k, v in j.items() if k != "poster"} for j in jobs]
    assert recorded["id"] not in ensure_posters(out, old)
    assert not (out / recorded["poster"]["path"]).exists()
    assert ensure_posters(out, old, make=True)[recorded["id"]] == recorded["poster"]["path"]
    assert sha256_file(out / recorded["poster"]["path"])[0] == recorded["poster"]["sha256"]


def test_unchanged_page_gets_only_its_timing_renewed(run_dir: Path, tmp_path: Path) -> None:
    """Writing the page of a report that differs only in timing gives the bytes a full render
    gives; a changed job renders the page again."""
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    report = json.loads((out / "report.json").read_text())
    report["timing"] = dict(report["timing"], seconds=123.4, started_at="2030-01-01T00:00:00+00:00")
    page = out / "report.html"
    before = page.read_text()
    write_gallery(out, report)
    after = page.read_text()
    assert after != before and "123.4 s" in after and "2030-01-01T00:00:00+00:00" in after
    from batchvid.gallery import ensure_posters

    assert after == render_gallery(report, ensure_posters(out, report["jobs"]))
    report["jobs"][0]["status"] = "failed"
    write_gallery(out, report)
    assert page.read_text() == render_gallery(report, ensure_posters(out, report["jobs"]))


def test_page_data_written_card_by_card_is_script_json_of_the_whole() -> None:
    """The data block, written a card at a time, is script_json of gallery_data: same bytes."""
    from batchvid.gallery import _data_pieces, gallery_data

    jobs = [{"id": f"j{i}", "status": "failed", "sample": 0, "parameters": {"prompt": "</script>&\u2028"},
             "error": {"kind": "k", "message": "<b>"}, "warnings": [], "video": None, "cover": None}
            for i in range(3)]
    report = {"jobs": jobs, "manifest": {"name": "n", "path": "m.yaml", "provider": "geekai"},
              "exit_code": 1, "stopped": None, "summary": {}, "cost": {}, "batchvid_version": "1"}
    assert "".join(_data_pieces(report, {})) == script_json(gallery_data(report, {}))
    assert "".join(_data_pieces({**report, "jobs": []}, {})) == script_json(gallery_data({**report, "jobs": []}, {}))


def test_a_link_is_what_quote_gives_for_every_path_accepted() -> None:
    """``_href`` returns a path as it is, as ``quote`` gave it before: that holds for every
    character the pattern admits, and for the final newline its ``$`` also matches before
    (a report.json edited or damaged by hand; ``quote`` makes it ``%0A``)."""
    from urllib.parse import quote

    from batchvid.gallery import _href

    for path in ("jobs/a/video.mp4", "jobs/a-1.b_c/poster.jpg", "jobs/a/video.mp4\n", "jobs/a/poster.jpg\n"):
        assert _href(path) == quote(path), repr(path)


def test_timing_span_made_without_jinja_is_the_templates_render() -> None:
    """``timing_html`` gives the bytes timing.html.j2 renders, for every kind of value a
    report's timing holds (and falls back to the template for any other)."""
    from batchvid.gallery import _TIMING, _environment, timing_html

    template = _environment().get_template(_TIMING)
    values = [(None, None), (0.0, ""), (1.25, "2026-01-01T00:00:00+00:00"), (3, None), (-0.05, "x"),
              (1e300, "<&\"'>\u2028é"), (float("nan"), "a b"), (True, "t"), (None, 5), (12.3456, ["l"])]
    for seconds, started_at in values:
        report = {"timing": {"seconds": seconds, "started_at": started_at}}
        assert timing_html(report) == template.render(seconds=seconds, started_at=started_at), (seconds, started_at)
    assert timing_html({}) == template.render(seconds=None, started_at=None)


def test_sources_digest_hashes_the_templates_as_jinja_loads_them() -> None:
    """The page's content digest covers the template sources as Jinja2's loader reads them
    (read here without importing Jinja2)."""
    import hashlib

    from batchvid.gallery import _SOURCES, _TIMING, _environment, _source, sources_digest

    expected = hashlib.sha256()
    for name in (*_SOURCES, _TIMING):
        expected.update(_source(_environment(), name).encode("utf-8"))
    assert sources_digest().hexdigest() == expected.hexdigest()
