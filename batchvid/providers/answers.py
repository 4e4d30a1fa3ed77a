"""Reading a provider's answers: task payloads, status words, and error classification."""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from batchvid.errors import JobFatalError, ProviderError, RunFatalError, TransientError
from batchvid.jobs import GENERATION_PARAMETERS, Job
from batchvid.providers.wire import MAX_RESPONSE_BYTES, RawResponse, error_fields, excerpt

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
        parsed = parse_url(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return url


@functools.lru_cache(maxsize=256)
def parse_url(url: str) -> httpx.URL:
    """``httpx.URL(url)``, remembered for the last URLs parsed: the result URLs a poll answer
    names are checked here (``http_url``) and fetched moments later (``download``), and httpx
    takes ~50 µs to parse each one. ``httpx.URL`` is immutable, so sharing one is safe; a URL
    that fails to parse is not remembered (it raises again)."""
    return httpx.URL(url)


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
    why_failed: Callable[[dict[str, Any]], str],
) -> TaskResult:
    """A ``TaskResult`` from a task payload (create or poll answer).

    ``why_failed`` works out a failed task's message; it is only called for a failed one, since
    most answers say "running".

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
        message=why_failed(payload) if status == "failed" else None,
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
