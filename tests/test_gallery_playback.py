"""report.html's player in headless Chromium: played from the keyboard, the video takes the
focus the play button had; a video that is gone says so, naming its file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from batchvid.cli import main
from tests.test_gallery import simulated_run
from tests.test_gallery_browser import _wait, browser  # noqa: F401 -- the fixture, reused


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose job 'hostile' lost its video after the run (``batchvid view`` run again)."""
    run = simulated_run(tmp_path_factory.mktemp("playback"))
    copy = run.parent / "copy"
    shutil.copytree(run, copy)
    (copy / "jobs" / "hostile" / "video.mp4").unlink()
    assert main(["view", str(copy)]) == 0
    return copy


def _open(driver: Any, out: Path) -> None:
    driver.get("about:blank")
    driver.get((out / "report.html").as_uri())
    _wait(driver, "return document.documentElement.dataset.ready === 'true'")


def _first_playable(driver: Any) -> str:
    return str(driver.execute_script(
        "const b = [...document.querySelectorAll('.card .play')]"
        ".find(b => b.closest('.card').dataset.id !== 'hostile');"
        "return b.closest('.card').dataset.id"))


def test_play_from_the_keyboard_keeps_the_focus(browser: Any, out: Path) -> None:  # noqa: F811
    """Enter on a card's play button makes the player and moves the focus onto it (the button
    it replaces is gone), so Space and the arrow keys work on the video."""
    from selenium.webdriver.common.keys import Keys

    _open(browser, out)
    job = _first_playable(browser)
    button = browser.find_element("css selector", f".card[data-id='{job}'] .play")
    button.send_keys(Keys.ENTER)
    _wait(browser, f"return !!document.querySelector(\".card[data-id='{job}'] video\")")
    active = browser.execute_script(
        "const a = document.activeElement; return [a.tagName, a.closest('.card')?.dataset.id]")
    assert active == ["VIDEO", job]


def test_missing_video_says_so(browser: Any, out: Path) -> None:  # noqa: F811
    """Playing a card whose video file is gone shows 'cannot play jobs/<id>/video.mp4',
    instead of an empty player."""
    _open(browser, out)
    browser.find_element("css selector", "main > .card[data-id='hostile'] .play").click()
    _wait(browser, "return !!document.querySelector(\".card[data-id='hostile'] .missing\")")
    text = browser.execute_script(
        "return document.querySelector(\".card[data-id='hostile'] .missing\").textContent")
    assert text.startswith("cannot play jobs/hostile/video.mp4: missing or unreadable")
    assert "batchvid view --serve" in text
