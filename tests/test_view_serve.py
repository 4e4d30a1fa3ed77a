"""``batchvid view --serve``'s server (batchvid/serving.py) on 127.0.0.1, started in-process on
port 0: byte ranges (206, 416, ignored), HEAD, media types, nothing outside the directory or
under a dot-named path, and a client hanging up mid-video printing nothing."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchvid.serving import ViewHandler, ViewServer, make_server, parse_range
from tests.helpers import serving

VIDEO = bytes(range(256)) * 1200  # 307,200 bytes, every offset's byte known


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A directory shaped like an output directory, served; yields (base URL, directory)."""
    base = tmp_path_factory.mktemp("serve")
    (base / "secret.txt").write_text("outside the output directory")
    root = base / "out"
    job = root / "jobs" / "a"
    job.mkdir(parents=True)
    (job / "video.mp4").write_bytes(VIDEO)
    (job / "poster.jpg").write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    (job / "empty.mp4").write_bytes(b"")
    (job / "leak.txt").symlink_to(base / "secret.txt")
    (job / "inside.mp4").symlink_to(job / "video.mp4")
    (root / "report.html").write_text("<!DOCTYPE html><title>report</title>")
    (root / "report.json").write_text("{}\n")
    (root / ".batchvid").mkdir()
    (root / ".batchvid" / "journal.jsonl").write_text('{"task_id": "t"}\n')
    (job / "journal.txt").symlink_to(root / ".batchvid" / "journal.jsonl")
    (root / "linked").mkdir()
    (root / "linked" / "index.html").symlink_to(base / "secret.txt")
    (root / "site").mkdir()
    (root / "site" / "index.html").write_text("<!DOCTYPE html><title>site index</title>")
    os.mkfifo(job / "pipe.mp4")
    with serving(make_server(root, 0)) as url:
        yield url, root


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


def _raw(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (httpx would fold ``..`` away before sending)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_server_listens_on_loopback_only(served: tuple[str, Path]) -> None:
    """make_server binds 127.0.0.1, not every interface."""
    url, root = served
    server = make_server(root, 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_full_get_is_200_with_accept_ranges(served: tuple[str, Path], client: httpx.Client) -> None:
    """A GET without Range sends the whole file, 200, saying it accepts byte ranges."""
    url, _ = served
    response = client.get(f"{url}/jobs/a/video.mp4")
    assert response.status_code == 200
    assert response.content == VIDEO
    assert response.headers["content-length"] == str(len(VIDEO))
    assert response.headers["accept-ranges"] == "bytes"
    assert "content-range" not in response.headers


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=100-199", 100, 199),           # a-b
    ("bytes=300000-", 300000, len(VIDEO) - 1),  # a-
    ("bytes=-500", len(VIDEO) - 500, len(VIDEO) - 1),  # -n
    ("bytes=307000-999999", 307000, len(VIDEO) - 1),  # b past the end: up to the end
    ("bytes=-999999", 0, len(VIDEO) - 1),   # a suffix longer than the file: all of it
    ("BYTES=0-0", 0, 0),                    # the unit is case-insensitive
])
def test_range_is_206_with_exactly_those_bytes(
    served: tuple[str, Path], client: httpx.Client, spec: str, first: int, last: int
) -> None:
    """Each single-range form is answered 206 with Content-Range, its Content-Length and
    exactly the bytes asked for."""
    url, _ = served
    response = client.get(f"{url}/jobs/a/video.mp4", headers={"Range": spec})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(VIDEO)}"
    assert response.headers["content-length"] == str(last - first + 1)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == VIDEO[first:last + 1]


@pytest.mark.parametrize(("path", "spec"), [
    ("video.mp4", f"bytes={len(VIDEO)}-"),
    ("video.mp4", f"bytes={len(VIDEO) + 10}-{len(VIDEO) + 20}"),
    ("video.mp4", "bytes=-0"),
    ("empty.mp4", "bytes=0-"),
    ("empty.mp4", "bytes=-10"),
])
def test_unsatisfiable_range_is_416_with_the_size(
    served: tuple[str, Path], client: httpx.Client, path: str, spec: str
) -> None:
    """A range starting at or past the end (or an empty suffix) is 416 with
    Content-Range: bytes */SIZE and no body."""
    url, root = served
    size = (root / "jobs" / "a" / path).stat().st_size
    response = client.get(f"{url}/jobs/a/{path}", headers={"Range": spec})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert response.content == b""


@pytest.mark.parametrize("spec", ["bytes=0-9,20-29", "bytes=5-2", "items=0-9", "bytes=x-y"])
def test_range_not_served_is_ignored_whole_file_200(
    served: tuple[str, Path], client: httpx.Client, spec: str
) -> None:
    """Several ranges, a reversed range, another unit or bad syntax: the Range is ignored (RFC
    9110 allows it) and the whole file is sent, 200."""
    url, _ = served
    response = client.get(f"{url}/jobs/a/video.mp4", headers={"Range": spec})
    assert response.status_code == 200
    assert response.content == VIDEO


def test_stale_if_range_sends_the_whole_file(served: tuple[str, Path], client: httpx.Client) -> None:
    """A Range whose If-Range is not the file's Last-Modified gets the whole (changed) file;
    with the current one it gets the part."""
    url, _ = served
    full = client.get(f"{url}/jobs/a/video.mp4")
    current = {"Range": "bytes=0-9", "If-Range": full.headers["last-modified"]}
    assert client.get(f"{url}/jobs/a/video.mp4", headers=current).status_code == 206
    stale = {"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1998 00:00:00 GMT"}
    response = client.get(f"{url}/jobs/a/video.mp4", headers=stale)
    assert response.status_code == 200 and response.content == VIDEO


def test_head_sends_the_headers_only(served: tuple[str, Path], client: httpx.Client) -> None:
    """HEAD answers like GET (length, type, Accept-Ranges) with no body; a Range on HEAD is
    ignored (RFC 9110 14.2: ranges are defined for GET only): 200 and the whole length."""
    url, _ = served
    full = client.head(f"{url}/jobs/a/video.mp4")
    assert full.status_code == 200 and full.content == b""
    assert full.headers["content-length"] == str(len(VIDEO))
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "video/mp4"
    part = client.head(f"{url}/jobs/a/video.mp4", headers={"Range": "bytes=10-19"})
    assert part.status_code == 200 and part.content == b""
    assert part.headers["content-length"] == str(len(VIDEO))
    assert "content-range" not in part.headers


def test_unchanged_file_is_304(served: tuple[str, Path], client: httpx.Client) -> None:
    """If-Modified-Since at the file's Last-Modified is answered 304 without a body."""
    url, _ = served
    modified = client.get(f"{url}/jobs/a/poster.jpg").headers["last-modified"]
    response = client.get(f"{url}/jobs/a/poster.jpg", headers={"If-Modified-Since": modified})
    assert response.status_code == 304 and response.content == b""


@pytest.mark.parametrize(("path", "media_type"), [
    ("jobs/a/video.mp4", "video/mp4"),
    ("jobs/a/poster.jpg", "image/jpeg"),
    ("report.html", "text/html; charset=utf-8"),
    ("report.json", "application/json"),
])
def test_media_types(
    served: tuple[str, Path], client: httpx.Client, path: str, media_type: str
) -> None:
    """The page, its posters, its videos and report.json go out with their own media type."""
    url, _ = served
    assert client.get(f"{url}/{path}").headers["content-type"] == media_type


@pytest.mark.parametrize("target", [
    "/../secret.txt", "/jobs/../../secret.txt", "/%2e%2e/secret.txt", "/jobs/%2E%2E/%2e%2e/secret.txt",
    "/jobs/a/..%2f..%2f..%2fsecret.txt",
])
def test_paths_leaving_the_directory_are_refused(served: tuple[str, Path], target: str) -> None:
    """``..``, raw or percent-encoded, never reaches a file above the directory: 404."""
    url, _ = served
    status, body = _raw(url, target)
    assert status == 404
    assert b"outside the output directory" not in body


def test_symlink_pointing_outside_is_refused(served: tuple[str, Path], client: httpx.Client) -> None:
    """A symlink in the directory to a file outside it is 404; one to a file inside is served."""
    url, root = served
    assert (root / "jobs" / "a" / "leak.txt").read_text() == "outside the output directory"
    leak = client.get(f"{url}/jobs/a/leak.txt")
    assert leak.status_code == 404 and b"outside the output directory" not in leak.content
    inside = client.get(f"{url}/jobs/a/inside.mp4", headers={"Range": "bytes=0-3"})
    assert inside.status_code == 206 and inside.content == VIDEO[:4]


@pytest.mark.parametrize("target", ["/.batchvid/journal.jsonl", "/.batchvid/", "/jobs/../.batchvid/journal.jsonl",
                                    "/%2ebatchvid/journal.jsonl"])
def test_run_state_is_not_served(served: tuple[str, Path], target: str) -> None:
    """Nothing under .batchvid/ (the journal, the lock) is served, nor listed."""
    url, _ = served
    status, body = _raw(url, target)
    assert status == 404
    assert b"task_id" not in body


def test_listing_leaves_out_dot_entries(served: tuple[str, Path], client: httpx.Client) -> None:
    """The directory listing shows the output files and not .batchvid/."""
    url, _ = served
    listing = client.get(f"{url}/")
    assert listing.status_code == 200
    assert "report.html" in listing.text and "jobs/" in listing.text
    assert ".batchvid" not in listing.text


def test_client_hanging_up_mid_video_prints_nothing(
    served: tuple[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A client closing the connection mid-stream (as a browser does on each seek) leaves no
    traceback on the terminal, and the server keeps serving."""
    url, root = served
    big = root / "jobs" / "a" / "big.mp4"
    big.write_bytes(os.urandom(1024) * 16 * 1024)  # 16 MiB: more than the socket buffers hold
    try:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /jobs/a/big.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.0 200")
            # RST rather than FIN: the server's next write fails at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        with httpx.Client() as client:
            assert client.get(f"{url}/jobs/a/poster.jpg").status_code == 200
    finally:
        big.unlink()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_parse_range_forms() -> None:
    """parse_range: the inclusive part, None for a Range to ignore, False for 416."""
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=990-", 1000) == (990, 999)
    assert parse_range("bytes=-10", 1000) == (990, 999)
    assert parse_range("bytes=1000-", 1000) is False
    assert parse_range("bytes=0-1,3-4", 1000) is None
    assert parse_range("bytes=-", 1000) is None
    huge = "9" * 5000  # past Python's 4,300-digit int() limit: no ValueError
    assert parse_range(f"bytes={huge}-", 1000) is False
    assert parse_range(f"bytes=0-{huge}", 1000) == (0, 999)
    assert parse_range(f"bytes=-{huge}", 1000) == (0, 999)
    assert parse_range("bytes=0000000000000000000000000005-6", 1000) == (5, 6)


def test_server_class_is_quiet_only_about_hang_ups(capfd: pytest.CaptureFixture[str]) -> None:
    """ViewServer.handle_error stays silent for a dropped connection and still reports any
    other error (a bug must not be hidden)."""
    server = ViewServer(("127.0.0.1", 0), lambda *a: None)  # type: ignore[arg-type,return-value]
    try:
        for exc in (BrokenPipeError(), ConnectionResetError(), ValueError("a bug")):
            try:
                raise exc
            except Exception:
                server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()
    err = capfd.readouterr().err
    assert "a bug" in err and "BrokenPipe" not in err and "ConnectionReset" not in err


@pytest.mark.slow
def test_view_serve_answers_ranges(tmp_path: Path) -> None:
    """`batchvid view --serve` itself serves with ranges: a video's part comes back 206."""
    from tests.test_gallery import simulated_run

    out = simulated_run(tmp_path)
    video = next((out / "jobs").glob("*/video.mp4"))
    proc = subprocess.Popen([sys.executable, "-m", "batchvid", "view", str(out), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline())
        assert found is not None
        target = found.group(0) + video.relative_to(out).as_posix()
        response = httpx.get(target, headers={"Range": "bytes=4-11"})
        assert response.status_code == 206
        assert response.content == video.read_bytes()[4:12]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as written on a fresh connection; the whole answer (HTTP/1.0: the
    server closes), or what came before a 10 s timeout."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("target", ["/jobs/a/video.mp4%00", "/%00/secret.txt", "/report.html%00.txt"])
def test_nul_byte_in_path_is_404(
    served: tuple[str, Path], target: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A percent-encoded NUL gets a 404 answer (it used to raise in realpath: no answer and a
    traceback on the terminal)."""
    url, _ = served
    answer = _raw_request(url, f"GET {target} HTTP/1.0\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 404")
    assert "Traceback" not in capfd.readouterr().err


def test_huge_range_numbers_are_answered(
    served: tuple[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """A Range with a 5,000-digit position is 416 (start past the end), one with a 5,000-digit
    last position is the rest of the file: an answer either way, no traceback."""
    url, _ = served
    huge = "9" * 5000
    past = _raw_request(url, f"GET /jobs/a/video.mp4 HTTP/1.0\r\nRange: bytes={huge}-\r\n\r\n".encode())
    assert past.startswith(b"HTTP/1.0 416") and f"bytes */{len(VIDEO)}".encode() in past
    rest = _raw_request(url, f"GET /jobs/a/video.mp4 HTTP/1.0\r\nRange: bytes=7-{huge}\r\n\r\n".encode())
    assert rest.startswith(b"HTTP/1.0 206")
    assert rest.split(b"\r\n\r\n", 1)[1] == VIDEO[7:]
    assert "Traceback" not in capfd.readouterr().err


def test_symlink_into_run_state_is_refused(served: tuple[str, Path], client: httpx.Client) -> None:
    """A symlink whose target is under .batchvid/ is 404 like .batchvid/ itself."""
    url, root = served
    assert "task_id" in (root / "jobs" / "a" / "journal.txt").read_text()
    response = client.get(f"{url}/jobs/a/journal.txt")
    assert response.status_code == 404 and "task_id" not in response.text


def test_directory_index_is_checked_and_sent_whole(served: tuple[str, Path], client: httpx.Client) -> None:
    """A directory's index.html is served with its body; one that is a symlink out is 404 (it
    used to go through the base class: no check, and a Content-Length with no body)."""
    url, _ = served
    site = client.get(f"{url}/site/")
    assert site.status_code == 200 and "site index" in site.text
    linked = client.get(f"{url}/linked/")
    assert linked.status_code == 404 and "outside the output directory" not in linked.text
    assert client.get(f"{url}/site", follow_redirects=False).status_code == 301


def test_fifo_is_404_without_blocking(served: tuple[str, Path], client: httpx.Client) -> None:
    """A named pipe in the directory is not a file to serve: 404 at once (opening it for reading
    would wait for a writer forever)."""
    url, _ = served
    assert client.get(f"{url}/jobs/a/pipe.mp4", timeout=5).status_code == 404


def test_file_swapped_for_a_symlink_after_the_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOCTOU: a file replaced by a symlink pointing out, between the path check and the open,
    is refused (the open follows no symlink), and so is a directory swapped for one."""
    (tmp_path / "secret.txt").write_text("outside the output directory")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "video.mp4").write_text("outside the output directory")
    root = tmp_path / "out"
    (root / "jobs" / "a").mkdir(parents=True)
    (root / "jobs" / "a" / "video.mp4").write_bytes(VIDEO)
    (root / "jobs" / "b").mkdir()
    (root / "jobs" / "b" / "video.mp4").write_bytes(VIDEO)
    checked = ViewHandler._inside

    def check_then_swap(self: ViewHandler, path: str) -> str | None:
        real = checked(self, path)
        if path.endswith("a/video.mp4"):
            os.replace(_link(root / "jobs" / "a" / "new", tmp_path / "secret.txt"), path)
        elif path.endswith("b/video.mp4"):
            moved = root / "jobs" / "b-gone"
            (root / "jobs" / "b").rename(moved)
            (root / "jobs" / "b").symlink_to(tmp_path / "elsewhere")
        return real

    monkeypatch.setattr(ViewHandler, "_inside", check_then_swap)
    with serving(make_server(root, 0)) as url:
        for target in ("jobs/a/video.mp4", "jobs/b/video.mp4"):
            response = httpx.get(f"{url}/{target}")
            assert response.status_code == 404, target
            assert "outside the output directory" not in response.text


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 421), ("evil.example:8000", 421), ("127.0.0.1.evil.example", 421),
    ("localhost", 200), ("127.0.0.1:1", 200), ("[::1]:8000", 200), ("app.localhost", 200),
])
def test_only_local_host_names_are_served(
    served: tuple[str, Path], client: httpx.Client, host: str, status: int
) -> None:
    """A request naming another host (a web page re-pointing its name at 127.0.0.1: DNS
    rebinding) is refused 421 without a byte of the file; local names are served."""
    url, _ = served
    response = client.get(f"{url}/report.json", headers={"Host": host})
    assert response.status_code == status
    assert (response.text == "{}\n") == (status == 200)
