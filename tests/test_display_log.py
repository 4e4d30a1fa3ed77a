"""The text log's error lines: a gateway's HTML page is one short line with its status code and
title; the JSON log keeps the whole error, one line per event; the API key is in neither."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import httpx
import pytest

from batchvid.display import JsonLog, TextLog
from batchvid.errors import TransientError
from batchvid.events import JobFinished, JobRetrying
from batchvid.runner import Runner, Settings
from batchvid.shorttext import LOG_MESSAGE_CHARS, log_message
from tests.helpers import make_job, make_manifest
from tests.test_hostile_servers import HOST, fast_sleep, mp4

KEY = "sk-gateway-secret-5b1e0c9a7d"
NGINX_504 = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    "<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _error(body: str, status: int = 504) -> str:
    return str(TransientError("server_error", f"GeekAI: {body}", status=status))


def test_a_retry_line_shows_an_html_page_as_its_title_and_status() -> None:
    """A retry after a 504 HTML page is one log line: the page's title and ``(HTTP 504)``."""
    stream = io.StringIO()
    TextLog(stream)(JobRetrying("j1", "poll", 2, 1.5, _error(NGINX_504)))
    assert stream.getvalue() == (
        "retry poll j1 in 1.5s (attempt 2): server_error: GeekAI: 504 Gateway Time-out (HTTP 504)\n"
    )


def test_a_long_page_is_cut_but_keeps_its_status_code() -> None:
    """A page without a title, longer than a log line and cut inside a tag, is its text, bounded,
    still ending in ``(HTTP 502)``."""
    page = "<html><body><p>" + "upstream went away " * 40 + "</p><div class='x"
    text = log_message(_error(page, status=502))
    assert len(text) <= LOG_MESSAGE_CHARS and "\n" not in text and "<" not in text
    assert text.startswith("server_error: GeekAI: upstream went away") and text.endswith("… (HTTP 502)")


def test_a_failed_line_is_shortened_and_plain_text_is_kept() -> None:
    """A failed job's line shortens an HTML page too; a short plain message is printed as it is."""
    stream = io.StringIO()
    log = TextLog(stream)
    log(JobFinished("j1", "failed", "server_error", f"GeekAI: {NGINX_504} (HTTP 504)"))
    log(JobFinished("j2", "failed", "invalid_request", "GeekAI: size <1024 & >0 required (HTTP 400, code 1214)"))
    assert stream.getvalue().splitlines() == [
        "failed: j1: server_error: GeekAI: 504 Gateway Time-out (HTTP 504)",
        "failed: j2: invalid_request: GeekAI: size <1024 & >0 required (HTTP 400, code 1214)",
    ]


class Gateway:
    """A GeekAI server whose first two polls answer a 504 HTML page that echoes the caller's
    Authorization header."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        what = "create" if request.method == "POST" else "download" if "/files/" in request.url.path else "poll"
        self.calls[what] = self.calls.get(what, 0) + 1
        auth = request.headers.get("authorization", "")
        if what == "poll" and self.calls[what] <= 2:
            page = NGINX_504.replace("nginx/1.25.3", f"nginx (for {auth})")
            return httpx.Response(504, text=page, headers={"content-type": "text/html"})
        if what == "create":
            return httpx.Response(200, json={"task_id": "t1", "task_status": "pending"})
        if what == "download":
            return httpx.Response(200, content=mp4())
        url = f"{HOST}/files/v.mp4"
        return httpx.Response(200, json={"task_id": "t1", "task_status": "succeed",
                                         "video_result": [{"url": url, "cover_image_url": url}]})


@pytest.mark.anyio
async def test_a_run_logs_gateway_pages_short_in_text_and_whole_in_json(tmp_path: Path) -> None:
    """Through a real run: each retry's text line is short and plain, the JSON log has one JSON
    object per line with the whole page, and neither carries the API key."""
    settings = Settings(
        out_dir=tmp_path / "out", provider="geekai", base_url=f"{HOST}/api/v1", api_key=KEY,
        max_in_flight=1, rpm=None, retries=3, timeout=10.0, poll_min=0.01, poll_max=0.02,
    )  # fmt: skip
    text, js = io.StringIO(), io.StringIO()
    runner = Runner(make_manifest([make_job("j0", 0, "geekai")]), settings, transport=httpx.MockTransport(Gateway()),
                    subscribers=[TextLog(text), JsonLog(js)], sleep=fast_sleep)  # fmt: skip
    with anyio.fail_after(20):
        result = await runner.run()
    assert [o.status for o in result.outcomes] == ["succeeded"]
    retries = [line for line in text.getvalue().splitlines() if line.startswith("retry ")]
    assert [line.split(":", 1)[0].rsplit(" ", 5)[0] for line in retries] == ["retry poll"] * 2
    for line in retries:
        assert line.endswith(": server_error: GeekAI: 504 Gateway Time-out (HTTP 504)"), line
    records = [json.loads(line) for line in js.getvalue().splitlines()]
    errors = [r["error"] for r in records if r["event"] == "JobRetrying"]
    assert len(errors) == 2 and all("<title>504 Gateway Time-out</title>" in e for e in errors)
    assert KEY not in text.getvalue() and KEY not in js.getvalue()
    assert all("[REDACTED]" in e for e in errors)


def test_the_json_log_keeps_an_error_whole_on_one_line() -> None:
    """An error with every kind of line break (CR LF, NEL, U+2028, U+2029) is one JSON line in
    the JSON log, whole: ``str.splitlines`` gives one line that decodes back to the error."""
    error = _error(NGINX_504 + "\x85next\u2028line\u2029end")
    stream = io.StringIO()
    JsonLog(stream, clock=lambda: 1.0)(JobRetrying("j1", "poll", 1, 0.5, error))
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["error"] == error
