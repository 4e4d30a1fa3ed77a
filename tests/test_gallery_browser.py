"""report.html in a real browser: the system's headless Chromium, driven by Selenium.

Skipped, with the reason, when Chromium or its driver is not installed here; under CI=true
(`.ci/run` installs them) a missing browser is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.chromium import chromium, missing, requested
from tests.test_gallery import HOSTILE, simulated_run


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated_run(tmp_path_factory.mktemp("browser"))


@pytest.fixture
def page(browser: Any, out: Path) -> Any:
    """report.html freshly opened, its console log and request log emptied first."""
    browser.get("about:blank")
    browser.get_log("browser")
    requested(browser)
    browser.get((out / "report.html").as_uri())
    _wait(browser, "return document.documentElement.dataset.ready === 'true'")
    return browser


def _wait(driver: Any, script: str, timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _cards(driver: Any) -> list[str]:
    return list(driver.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => c.dataset.id)"))


def _shown(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('shown').textContent"))


def _type(driver: Any, text: str, shown: str) -> None:
    """Type ``text`` into the search box and wait until the count reads ``shown``."""
    box = driver.find_element("id", "text-filter")
    box.clear()
    box.send_keys(text)
    _wait(driver, f"return document.getElementById('shown').textContent === {shown!r}")


def test_page_opens_without_console_errors_or_requests_outside_the_directory(page: Any, out: Path) -> None:
    """From file://: no console message of level SEVERE, and every request (posters, a video
    played, the page) is a file under the output directory."""
    page.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    _wait(page, "return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.find_element("css selector", ".card[data-id='hostile'] .play").click()
    _wait(page, "const v = document.querySelector('.card[data-id=hostile] video');"
                "return v && v.readyState >= 1")
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    urls = requested(page)
    inside = out.resolve().as_uri() + "/"
    assert inside + "report.html" in urls and inside + "jobs/hostile/video.mp4" in urls
    assert any(u.endswith("/poster.jpg") for u in urls)
    assert [u for u in urls if not (u.startswith(inside) or u.startswith("data:"))] == []


def test_one_card_per_job_and_the_counts(page: Any, out: Path) -> None:
    """Every job has one card; the header and the status filter count what report.json says."""
    import json

    report = json.loads((out / "report.json").read_text())
    assert sorted(_cards(page)) == sorted(j["id"] for j in report["jobs"])
    chips = page.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#status-filter .chip')]"
        ".map(c => [c.dataset.status || 'all', Number(c.querySelector('.n').textContent)]))")
    s = report["summary"]
    assert chips == {"all": s["total"], "succeeded": s["succeeded"], "skipped": s["skipped"],
                     "failed": s["failed"], "pending": s["pending"]}
    assert _shown(page) == f"{s['total']} jobs"
    assert page.execute_script("return document.querySelectorAll('video').length") == 0


def test_video_player_is_made_only_when_a_card_is_opened(page: Any) -> None:
    """No <video> exists until a card is played or its details opened; then one, for that job."""
    assert page.execute_script("return document.querySelectorAll('video').length") == 0
    page.find_element("css selector", ".card[data-id='hostile'] details summary").click()
    _wait(page, "return document.querySelectorAll('video').length > 0")
    sources = page.execute_script("return [...document.querySelectorAll('video')].map(v => v.getAttribute('src'))")
    assert sources == ["jobs/hostile/video.mp4"]


def test_text_filter_keeps_matching_ids_and_prompts(page: Any) -> None:
    """Typing 'fox' leaves the four fox jobs (matched in id and prompt) and counts them."""
    _type(page, "fox", "4 of 10 jobs shown")
    assert sorted(_cards(page)) == ["sweep-fox-dawn-s0", "sweep-fox-dawn-s1",
                                    "sweep-fox-night-s0", "sweep-fox-night-s1"]
    _type(page, "STORM THAT", "1 of 10 jobs shown")  # case-insensitive, over the prompt too
    assert _cards(page) == ["doomed"]


def test_model_filter_keeps_that_models_jobs(page: Any) -> None:
    """Choosing cogvideox-2 leaves its one job; the status counts follow the filter."""
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "model-filter")).select_by_value("cogvideox-2")
    assert _cards(page) == ["doomed"]
    assert _shown(page) == "1 of 10 jobs shown"
    assert page.find_element("css selector", "#status-filter .chip[data-status='succeeded'] .n").text == "0"


def test_status_filter_and_failed_first(page: Any) -> None:
    """The 'failed' chip shows only the failed job; 'failed first' puts it before the sweep."""
    page.find_element("css selector", "#status-filter .chip[data-status='failed']").click()
    assert _cards(page) == ["doomed"]
    assert _shown(page) == "1 of 10 jobs shown"
    page.find_element("css selector", "#status-filter .chip:not([data-status])").click()
    assert _cards(page)[0].startswith("sweep-")
    page.find_element("id", "failed-first").click()
    assert _cards(page)[0] == "doomed"


def test_sweep_is_a_grid_and_the_axis_across_can_be_chosen(page: Any) -> None:
    """The matrix is one grid under its own axis names (from report.json's ``matrix``): animals
    across, times down, two samples per cell; choosing the other axis puts times across."""
    heads = "return [...document.querySelectorAll('.sweep[data-sweep=sweep] .colhead')].map(h => h.textContent)"
    rows = "return [...document.querySelectorAll('.sweep[data-sweep=sweep] .rowhead')].map(h => h.textContent)"
    assert page.execute_script(heads) == ["animal rabbit", "animal fox"]
    assert page.execute_script(rows) == ["time dawn", "time night"]
    cells = page.execute_script(
        "return [...document.querySelectorAll('.sweep[data-sweep=sweep] .cell')]"
        ".map(c => [...c.querySelectorAll('.card')].map(k => k.dataset.id))")
    assert cells[1] == ["sweep-fox-dawn-s0", "sweep-fox-dawn-s1"]
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("css selector", ".sweep[data-sweep=sweep] select.axis-select")).select_by_visible_text("time")
    assert page.execute_script(heads) == ["time dawn", "time night"]
    assert page.execute_script(rows) == ["animal rabbit", "animal fox"]


def test_hostile_prompt_is_text_and_no_script_runs(page: Any) -> None:
    """The `<script>`/`<img onerror>` prompt is shown verbatim, including in the details
    dialog, and the flag it tries to set stays unset."""
    prompt = page.find_element("css selector", ".card[data-id='hostile'] .prompt")
    assert prompt.text == HOSTILE
    page.find_element("css selector", ".card[data-id='hostile'] details summary").click()
    page.find_element("css selector", ".card[data-id='sweep-rabbit-dawn-s0'] .more-btn").click()
    assert page.execute_script("return document.getElementById('detail').open") is True
    assert page.execute_script("return window.__pwned") is None
    assert page.execute_script("return document.querySelectorAll('img[src=x], script:not([type])').length") == 1


def test_original_prompt_and_quality_signals_are_shown(browser: Any, out: Path, tmp_path: Path) -> None:
    """A job entry's `prompt_original` and `quality` (added by later features) appear on its card."""
    import json
    import shutil

    from batchvid.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    report = json.loads((copy / "report.json").read_text())
    hostile = next(j for j in report["jobs"] if j["id"] == "hostile")
    hostile["prompt_original"] = "the prompt <b>as written</b>"
    hostile["quality"] = {"blur": 0.25, "motion": "low"}
    (copy / "report.json").write_text(json.dumps(report))
    assert main(["view", str(copy)]) == 0
    browser.get((copy / "report.html").as_uri())
    _wait(browser, "return document.documentElement.dataset.ready === 'true'")
    card = browser.find_element("css selector", ".card[data-id='hostile']")
    assert card.find_element("css selector", ".original").text == "as written: the prompt <b>as written</b>"
    card.find_element("css selector", "details summary").click()
    details = card.find_element("css selector", "dl.kv").text
    assert "quality blur\n0.25" in details and "quality motion\nlow" in details


def test_screenshot_is_not_blank(page: Any, tmp_path: Path) -> None:
    """A screenshot of the page has real content: posters, text and colours, not one flat tone."""
    page.execute_script("window.scrollTo(0, 0)")
    _wait(page, "return [...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
                ".every(i => i.complete && i.naturalWidth > 0)")
    shot = tmp_path / "page.png"
    shot.write_bytes(page.get_screenshot_as_png())
    with av.open(str(shot)) as image:
        pixels = next(image.decode(video=0)).to_ndarray(format="rgb24")
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert float(np.std(pixels)) > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200


@pytest.mark.slow
@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_browser_fails_under_ci_and_skips_elsewhere(ci: str, outcome: str) -> None:
    """Without Chromium the browser tests error out when CI=true, and skip (saying why) otherwise."""
    import subprocess
    import sys

    env = dict(os.environ, CI=ci, BATCHVID_CHROMIUM="/nonexistent/chromium")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         f"{__file__}::test_one_card_per_job_and_the_counts"],
        env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )
    assert outcome in result.stdout, result.stdout
    assert "/nonexistent/chromium not found" in result.stdout
