"""``batchvid view --serve``'s server with headless Chromium: a served video seeks, the browser
fetching it by byte ranges (206)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchvid.serving import ViewHandler, ViewServer
from tests.helpers import serving
from tests.test_gallery import simulated_run
from tests.test_gallery_browser import _wait, browser  # noqa: F401 -- the fixture, reused


class _Recording(ViewHandler):
    statuses: list[tuple[str, str]] = []

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.statuses.append((self.path, str(int(code))))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    out = simulated_run(tmp_path_factory.mktemp("servebrowser"))
    with serving(ViewServer(("127.0.0.1", 0), functools.partial(_Recording, directory=str(out)))) as url:
        yield url, out


def test_served_video_seeks(browser: Any, served: tuple[str, Path]) -> None:  # noqa: F811
    """A video from the served page seeks (currentTime set, 'seeked' fires, the time holds),
    and Chromium fetched it by ranges: the server answered 206."""
    url, out = served
    video = next((out / "jobs").glob("*/video.mp4")).relative_to(out).as_posix()
    browser.get(f"{url}/report.html")
    _Recording.statuses.clear()
    browser.execute_script(
        "window.seekedAt = null; const v = document.createElement('video');"
        "v.muted = true; v.preload = 'auto'; v.src = arguments[0]; document.body.append(v);"
        "v.addEventListener('seeked', () => { window.seekedAt = v.currentTime; });"
        "v.addEventListener('loadedmetadata', () => { window.target = v.duration / 2;"
        " v.currentTime = window.target; });", video)
    _wait(browser, "return window.seekedAt !== null")
    seeked, target = browser.execute_script("return [window.seekedAt, window.target]")
    assert target > 0 and abs(seeked - target) < 0.05
    assert (f"/{video}", "206") in _Recording.statuses
