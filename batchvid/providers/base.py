"""What every provider protocol offers the runner. Nothing about scheduling lives here.

``Provider`` owns the flow of a create and a poll; a provider module declares its data (paths,
fields, codes, body builder). The HTTP exchange is ``providers.wire``; reading answers and
classifying errors is ``providers.answers``. Their public names are re-exported here.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import httpx

from batchvid.errors import JobFatalError, ProviderError
from batchvid.jobs import Job
from batchvid.providers.answers import (
    HINTS,
    STATUS_KINDS,
    ErrorClass,
    TaskResult,
    TaskStatus,
    classify,
    created_but_unreadable,
    describe_garbage,
    failure_message,
    first_video,
    http_url,
    payload_summary,
    quote_id,
    set_params,
    task_id_of,
    task_result,
    task_status,
    unreadable_poll,
    video_results,
)
from batchvid.providers.wire import (
    EXCERPT_CHARS,
    MAX_RESPONSE_BYTES,
    MAX_RETRY_AFTER,
    NOT_SENT,
    RawResponse,
    error_fields,
    excerpt,
    normalise_code,
    parse_retry_after,
    read_object,
    send,
)

__all__ = [
    "EXCERPT_CHARS",
    "HINTS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER",
    "NOT_SENT",
    "STATUS_KINDS",
    "ErrorClass",
    "Provider",
    "RawResponse",
    "TaskResult",
    "TaskStatus",
    "classify",
    "created_but_unreadable",
    "describe_garbage",
    "error_fields",
    "excerpt",
    "failure_message",
    "first_video",
    "http_url",
    "normalise_code",
    "parse_retry_after",
    "payload_summary",
    "quote_id",
    "read_object",
    "send",
    "set_params",
    "task_id_of",
    "task_result",
    "task_status",
    "unreadable_poll",
    "video_results",
]


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
        quoted = quote_id(task_id)
        paths = [path.format(id=quoted) for path in self.poll_paths]
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
        return task_result(payload, task_id, label=self.label, why_failed=self._why_failed)

    def _why_failed(self, payload: dict[str, Any]) -> str:
        return failure_message(payload, self.label)

    def _known_code(self, payload: dict[str, Any] | None) -> bool:
        code, _ = error_fields(payload)
        return code is not None and code in self.codes

