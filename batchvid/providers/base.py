"""What every provider protocol offers the runner. Nothing about scheduling lives here."""

from __future__ import annotations

import abc
import datetime
import email.utils
import json
import math
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from batchvid.errors import JobFatalError, ProviderError, RunFatalError, TransientError
from batchvid.jobs import GENERATION_PARAMETERS, Job

TaskStatus = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task as the provider last described it, normalised."""

    task_id: str
    status: TaskStatus
    raw: dict[str, Any] = field(repr=False)
    """The response body as received (the runner scrubs secrets before writing it)."""
    video_url: str | None = None
    cover_url: str | None = None
    message: str | None = None
    """Why the task failed, when the provider says."""
    provider_status: str | None = None
    """The status word as the provider spelled it (``succeed``, ``PROCESSING``, …)."""


class Provider(abc.ABC):
    """One provider's HTTP contract, as data plus the shared create and poll flow.

    A provider declares its ``label`` (named in messages), its create path, the paths a task
    is polled at (``{id}`` is the quoted task id; on a 404 the next one is tried), the field
    its create answer names the task id in, its business-code table (``codes``) and its body
    builder. The base class sends, reads and classifies; ``error`` is the hook for a code
    that needs its own message (BigModel's duplicate ``request_id``).

    Methods that talk HTTP take an ``httpx.AsyncClient`` whose ``base_url`` is the provider's API
    root (for example ``https://geekai.co/api/v1``) and which already carries the
    ``Authorization`` header. They raise ``TransientError``, ``JobFatalError`` or
    ``RunFatalError`` (see ``batchvid.errors``) and nothing else.
    """

    name: str
    label: str
    default_base_url: str
    key_env_vars: tuple[str, ...]
    create_path: str = "videos/generations"
    poll_paths: tuple[str, ...]
    task_id_field: str
    codes: Mapping[str, tuple[ErrorClass, str]] = {}
    """Business code -> (error class, kind); codes not listed fall back to the HTTP status."""
    idempotent: bool = False
    """Whether re-sending a create whose answer was lost is safe: the provider recognises the
    repeat by its ``request_id`` and refuses it (BigModel, code 1231) instead of paying twice."""

    @staticmethod
    def request_id(job: Job, generation: int = 0) -> str:
        """The client's idempotency key for a job (sent where the provider takes one): ``bv-``
        and 32 hex digits of its key.

        ``generation`` > 0 (a deliberate new submission, such as ``--retry-failed`` or
        ``--force`` after an earlier accepted one) appends ``-<n>``, since BigModel refuses a
        request_id it has already seen (code 1231).
        """
        base = "bv-" + job.key[:32]
        return base if generation == 0 else f"{base}-{generation}"

    @abc.abstractmethod
    def build_body(self, job: Job, *, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body of the create request, images inline as data URIs. ``request_id`` is
        the idempotency key where the provider takes one (None: ``request_id(job)``);
        providers without one ignore it."""

    def recorded_body(self, job: Job, *, request_id: str | None = None) -> dict[str, Any]:
        """The body as written to ``request.json`` (the one sent under ``request_id``), inline
        images replaced by their description."""
        body = self.build_body(job, request_id=request_id)
        if job.image is not None:
            for name in ("image", "image_url"):
                if name in body:
                    body[name] = job.image.describe()
        return body

    async def create(
        self, client: httpx.AsyncClient, job: Job, *, request_id: str | None = None
    ) -> TaskResult:
        """Submit the job under ``request_id`` (see ``build_body``); returns the task (usually
        ``running``)."""
        body = self.build_body(job, request_id=request_id)
        sent_id = body.get("request_id")
        raw = await send(client, "POST", self.create_path, json_body=body)
        if not raw.ok:
            raise self.error(raw, request_id=sent_id)
        payload = read_object(raw)
        task_id = task_id_of(payload.get(self.task_id_field)) if payload is not None else None
        if payload is None or task_id is None:
            if self._known_code(payload):
                # An error dressed as a 2xx answer: the code says what it is.
                raise self.error(raw, request_id=sent_id)
            raise created_but_unreadable(self.label, raw)
        return self.result(payload, task_id)

    async def poll(self, client: httpx.AsyncClient, task_id: str) -> TaskResult:
        """Fetch the task's current state."""
        paths = [path.format(id=quote_id(task_id)) for path in self.poll_paths]
        for path in paths:
            raw = await send(client, "GET", path)
            if raw.status != 404:
                break
        else:
            where = paths[0] if len(paths) == 1 else "both " + " and ".join(paths)
            raise JobFatalError(
                "invalid_request",
                f"{self.label} knows no task {task_id} (HTTP 404 from {where}); run again with "
                "--retry-failed to submit the job anew",
                status=404,
            )
        if not raw.ok:
            raise self.error(raw)
        payload = read_object(raw)
        if payload is None or "task_status" not in payload:
            if self._known_code(payload):
                raise self.error(raw)
            raise unreadable_poll(self.label, task_id, raw)
        return self.result(payload, task_id)

    def error(self, raw: RawResponse, *, request_id: str | None = None) -> ProviderError:
        """The error an answer means (``classify`` with this provider's codes)."""
        return classify(raw, label=self.label, env=self.key_env_vars[0], codes=self.codes)

    def result(self, payload: dict[str, Any], task_id: str) -> TaskResult:
        return task_result(
            payload, task_id, label=self.label, failure_message=failure_message(payload, self.label)
        )

    def _known_code(self, payload: dict[str, Any] | None) -> bool:
        code, _ = error_fields(payload)
        return code is not None and code in self.codes


# --- Shared HTTP plumbing for the provider protocols -----------------------------------------
#
# Both providers speak the same dialect: JSON in, JSON out, errors as an HTTP status plus an
# optional ``{"error": {"code", "message"}}`` body. What follows reads a response with a size
# limit, turns transport failures into ``TransientError("network")`` and parses the pieces an
# error classification needs. Nothing here keeps or shows request headers.

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""API answers are small JSON documents; a larger body is refused as ``bad_response``."""

MAX_RETRY_AFTER = 600.0
"""The longest ``Retry-After`` honoured, in seconds: a larger value is capped to this."""

EXCERPT_CHARS = 500
"""How much of a body that is not the expected JSON goes into an error message."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    """An HTTP answer read with a size limit: status, the headers that matter, and the body."""

    status: int
    body: bytes
    """At most ``MAX_RESPONSE_BYTES``; see ``too_large``."""
    too_large: bool = False
    """The body was longer than ``MAX_RESPONSE_BYTES`` and was not read to the end."""
    retry_after: float | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON or too large."""
        if self.too_large:
            raise ValueError(f"response body larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(self.body.decode("utf-8"))
        except RecursionError:  # absurdly deep nesting: garbage, not a crash
            raise ValueError("response body nested too deeply") from None

    def excerpt(self) -> str:
        """A short, printable piece of the body for a person to read."""
        return excerpt(self.body.decode("utf-8", errors="replace"))


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, trimmed to ``limit`` characters (with an ellipsis when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    Returns None when absent or unreadable; clamps to ``[0, MAX_RETRY_AFTER]``. ``now`` is the
    wall-clock time (``time.time()``) an HTTP-date is measured from.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with ones that omit it
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def normalise_code(value: Any) -> str | None:
    """A business code as a string (``1302`` and ``"1302"`` are the same), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def error_fields(payload: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` from an error body such as ``{"error": {"code", "message"}}``.

    Also accepts the flatter shapes some gateways use (``{"code", "message"}``,
    ``{"error": "text"}``); returns None for what is not there.
    """
    if not isinstance(payload, dict):
        return None, None
    err = payload.get("error")
    source: dict[str, Any] = err if isinstance(err, dict) else payload
    code = normalise_code(source.get("code"))
    message = source.get("message") or source.get("msg")
    if isinstance(err, str) and err.strip():
        message = err
    return code, (excerpt(str(message)) if message else None)


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    json_body: dict[str, Any] | None = None,
) -> RawResponse:
    """Send one request and read at most ``MAX_RESPONSE_BYTES`` of the answer.

    Transport failures (connection refused or reset, timeouts, protocol errors) become
    ``TransientError("network")`` whose ``reach`` says whether the request may have left (the
    one place httpx errors are read for that), chained from a copy of the httpx exception (same type and
    message, so a caller can still tell a refused connection from a lost answer) that does not
    hold the request: the original carries the headers, ``Authorization`` included.
    """
    try:
        async with client.stream(method, path, json=json_body) as response:
            declared = response.headers.get("content-length")
            too_large = (
                declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES
            )
            chunks: list[bytes] = []
            size = 0
            if not too_large:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        too_large = True
                        break
                    chunks.append(chunk)
            return RawResponse(
                status=response.status_code,
                body=b"".join(chunks)[:MAX_RESPONSE_BYTES],
                too_large=too_large,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                reason=response.reason_phrase,
            )
    except httpx.TransportError as exc:
        detail = excerpt(str(exc)) or "no detail"
        error = TransientError(
            "network",
            f"{method} {path} failed: {type(exc).__name__}: {detail}",
            reach="not_sent" if isinstance(exc, NOT_SENT) else "maybe_delivered",
        )
        raise error from _without_request(exc)


NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
"""Transport failures raised before a request left: the provider saw nothing. Every other one
(a read or write that broke, a timeout waiting for the answer) may have delivered it."""


def _without_request(exc: httpx.TransportError) -> BaseException | None:
    """The same kind of httpx error with the same message, minus the request it was raised for."""
    try:
        return type(exc)(str(exc))
    except Exception:  # an exotic subclass with another constructor: drop the cause
        return None


def task_status(word: Any) -> TaskStatus:
    """The normalised status of a provider's status word (any case).

    ``success``/``succeed``/``succeeded`` → succeeded; ``failed``/``fail`` → failed; everything
    else, including ``pending``, ``running``, ``PROCESSING``, ``SUBMITTED`` and words no
    document lists, → running (the runner bounds an unknown state by the job timeout).
    """
    text = str(word).strip().lower() if word is not None else ""
    if text in _SUCCEEDED:
        return "succeeded"
    if text in _FAILED:
        return "failed"
    return "running"


_SUCCEEDED = frozenset({"success", "succeed", "succeeded"})
_FAILED = frozenset({"failed", "fail"})


def http_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL with a host, else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return url


def video_results(value: Any) -> list[dict[str, Any]]:
    """``video_result`` as a list of objects: an object is wrapped, anything else dropped."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def first_video(value: Any) -> tuple[str | None, str | None]:
    """``(video_url, cover_url)`` of the first ``video_result`` entry with a usable URL."""
    for item in video_results(value):
        url = http_url(item.get("url"))
        if url is not None:
            return url, http_url(item.get("cover_image_url"))
    return None, None


def payload_summary(payload: Any) -> str:
    """A one-line, trimmed JSON rendering of a payload, for messages."""
    return excerpt(json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str))


def quote_id(task_id: str) -> str:
    """A task id made safe as one path segment."""
    return urllib.parse.quote(task_id, safe="")


def set_params(job: Job) -> dict[str, Any]:
    """The job's generation parameters that are set (present and not None), in display order."""
    return {
        name: job.params[name]
        for name in GENERATION_PARAMETERS
        if name in job.params and job.params[name] is not None
    }


# --- Error classification --------------------------------------------------------------------

ErrorClass = type[ProviderError]

STATUS_KINDS: Mapping[int, tuple[ErrorClass, str]] = {
    400: (JobFatalError, "invalid_request"),
    404: (JobFatalError, "invalid_request"),
    413: (JobFatalError, "invalid_request"),
    422: (JobFatalError, "invalid_request"),
    435: (JobFatalError, "invalid_request"),
    401: (RunFatalError, "auth"),
    402: (RunFatalError, "insufficient_balance"),
    403: (RunFatalError, "forbidden"),
    434: (RunFatalError, "forbidden"),
    408: (TransientError, "server_error"),
    429: (TransientError, "rate_limited"),
    500: (TransientError, "server_error"),
    502: (TransientError, "server_error"),
    503: (TransientError, "server_error"),
    504: (TransientError, "server_error"),
}
"""What an HTTP status means when the body carries no business code we know."""

HINTS: Mapping[str, str] = {
    "auth": "the API key was refused; check {env}",
    "forbidden": "the API key has no access to this API or model",
    "insufficient_balance": "the account is out of balance; top it up, then run again to resume",
    "account": "the account cannot be used (inactive, missing or locked); see the provider console",
    "daily_quota": "the daily call quota is used up; run again after it resets to resume",
    "quota": "a usage cap was reached; run again after it resets to resume",
    "content_filter": "the prompt or image was judged unsafe; change it",
    "prompt_too_long": "shorten the prompt (BigModel accepts at most 512 characters)",
    "unknown_model": "the provider does not know this model",
}
"""What a person should do, by error kind; appended to the provider's own message."""


def classify(
    raw: RawResponse,
    *,
    label: str,
    env: str,
    codes: Mapping[str, tuple[ErrorClass, str]] | None = None,
) -> ProviderError:
    """The error a non-2xx answer means: business code first (when known), then HTTP status.

    ``label`` names the provider in the message; ``env`` is the key's environment variable,
    named in the hint for ``auth``. Unknown 5xx are transient; other unknown statuses fail the
    job as ``invalid_request`` (a request the provider would not take).
    """
    try:
        payload: Any = raw.json()
    except ValueError:
        payload = None
    code, provider_message = error_fields(payload)
    if code is not None and codes is not None and code in codes:
        cls, kind = codes[code]
    elif raw.status in STATUS_KINDS:
        cls, kind = STATUS_KINDS[raw.status]
    elif raw.status >= 500:
        cls, kind = TransientError, "server_error"
    else:
        cls, kind = JobFatalError, "invalid_request"
    if provider_message is None:
        if raw.too_large:
            provider_message = f"an error body larger than {MAX_RESPONSE_BYTES} bytes"
        else:
            provider_message = raw.excerpt() or raw.reason or "no error message"
    message = f"{label}: {provider_message}"
    hint = HINTS.get(kind)
    if hint:
        message += f" — {hint.format(env=env)}"
    return cls(kind, message, status=raw.status, code=code, retry_after=raw.retry_after)


def read_object(raw: RawResponse) -> dict[str, Any] | None:
    """The body when it is a JSON object, else None (not JSON, too large, another JSON type)."""
    try:
        payload = raw.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def describe_garbage(raw: RawResponse) -> str:
    """Why a 2xx body is unusable, for a message."""
    if raw.too_large:
        return f"the answer is larger than {MAX_RESPONSE_BYTES} bytes"
    try:
        payload = raw.json()
    except ValueError:
        return f"the answer is not JSON: {raw.excerpt() or '(empty body)'}"
    if not isinstance(payload, dict):
        return f"the answer is not a JSON object: {payload_summary(payload)}"
    code, message = error_fields(payload)
    if message or code:
        return f"the answer carries an error and no task: {message or ''} (code {code})"
    return f"the answer has no task id: {payload_summary(payload)}"


def created_but_unreadable(label: str, raw: RawResponse) -> JobFatalError:
    """A 2xx create answer that cannot be used: the task may exist, so never resubmit blindly."""
    return JobFatalError(
        "bad_response",
        f"{label} accepted the create request but {describe_garbage(raw)}; a task may have "
        "been created (and billed), so the job is not resubmitted automatically: check the "
        "provider console, then run again with --retry-failed to submit it anew",
        status=raw.status,
    )


def unreadable_poll(label: str, task_id: str, raw: RawResponse) -> TransientError:
    """A 2xx poll answer that cannot be used: ask again later."""
    return TransientError(
        "bad_response",
        f"{label} answered the status query for task {task_id} but {describe_garbage(raw)}",
        status=raw.status,
        retry_after=raw.retry_after,
    )


def task_result(
    payload: dict[str, Any],
    task_id: str,
    *,
    label: str,
    failure_message: str | None,
) -> TaskResult:
    """A ``TaskResult`` from a task payload (create or poll answer).

    A succeeded task without a usable http(s) video URL raises ``JobFatalError("bad_response")``:
    polling again would not help, and the runner must not treat it as done.
    """
    word = payload.get("task_status")
    status = task_status(word)
    video_url, cover_url = first_video(payload.get("video_result"))
    if status == "succeeded" and video_url is None:
        raise JobFatalError(
            "bad_response",
            f"{label} reports task {task_id} succeeded but gives no usable http(s) video URL: "
            f"{payload_summary(payload.get('video_result'))}",
        )
    return TaskResult(
        task_id=task_id,
        status=status,
        raw=payload,
        video_url=video_url if status == "succeeded" else None,
        cover_url=cover_url if status == "succeeded" else None,
        message=failure_message if status == "failed" else None,
        provider_status=None if word is None else str(word),
    )


def task_id_of(value: Any) -> str | None:
    """A task id as a non-empty string (ids may arrive as numbers), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def failure_message(payload: dict[str, Any], label: str) -> str:
    """Why a task failed: the payload's ``error`` (message and code) or, lacking one, a summary
    of the whole payload (BigModel's task schema has no error field)."""
    error = payload.get("error")
    if error:
        code, message = error_fields({"error": error})
        if message:
            return f"{label}: {message}" + (f" (code {code})" if code else "")
    return f"{label} reports the task failed without a reason: {payload_summary(payload)}"
