"""GeekAI's video API (``https://geekai.co/api/v1``), always in asynchronous mode.

Create: ``POST videos/generations`` with the generation parameters as named, the image as
``image`` (URL or data URI) and ``"async": true`` (without it GeekAI holds the request until the
video is done). Poll: ``GET video/{task_id}/result``, falling back to ``GET videos/{task_id}``
on a 404 (the docs name both, see api-notes §10 #2). Errors are classified by HTTP status: GeekAI
documents no error body, so business codes are not interpreted.
"""

from __future__ import annotations

from typing import Any

import httpx

from batchvid.errors import JobFatalError, ProviderError
from batchvid.jobs import Job
from batchvid.providers.base import (
    Provider,
    RawResponse,
    TaskResult,
    classify,
    created_but_unreadable,
    failure_message,
    quote_id,
    read_object,
    send,
    set_params,
    task_id_of,
    task_result,
    unreadable_poll,
)

LABEL = "GeekAI"


class GeekAIProvider(Provider):
    """The GeekAI protocol: request building, response parsing, error classification."""

    name = "geekai"
    default_base_url = "https://geekai.co/api/v1"
    key_env_vars = ("GEEKAI_API_KEY",)

    def build_body(self, job: Job) -> dict[str, Any]:
        body = set_params(job)
        if job.image is not None:
            body["image"] = job.image.data_uri()
        body["async"] = True
        return body

    async def create(
        self, client: httpx.AsyncClient, job: Job, *, request_id: str | None = None
    ) -> TaskResult:
        """Submit the job. GeekAI has no idempotency key: ``request_id`` is ignored."""
        raw = await send(client, "POST", "videos/generations", json_body=self.build_body(job))
        if not raw.ok:
            raise self._error(raw)
        payload = read_object(raw)
        task_id = task_id_of(payload.get("task_id")) if payload is not None else None
        if payload is None or task_id is None:
            raise created_but_unreadable(LABEL, raw)
        return self._result(payload, task_id)

    async def poll(self, client: httpx.AsyncClient, task_id: str) -> TaskResult:
        segment = quote_id(task_id)
        paths = (f"video/{segment}/result", f"videos/{segment}")
        raw = await send(client, "GET", paths[0])
        if raw.status == 404:
            raw = await send(client, "GET", paths[1])
            if raw.status == 404:
                raise JobFatalError(
                    "invalid_request",
                    f"{LABEL} knows no task {task_id} (HTTP 404 from both {paths[0]} and "
                    f"{paths[1]}); run again with --retry-failed to submit the job anew",
                    status=404,
                )
        if not raw.ok:
            raise self._error(raw)
        payload = read_object(raw)
        if payload is None or "task_status" not in payload:
            raise unreadable_poll(LABEL, task_id, raw)
        return self._result(payload, task_id)

    def _error(self, raw: RawResponse) -> ProviderError:
        return classify(raw, label=LABEL, env=self.key_env_vars[0])

    @staticmethod
    def _result(payload: dict[str, Any], task_id: str) -> TaskResult:
        return task_result(
            payload, task_id, label=LABEL, failure_message=failure_message(payload, LABEL)
        )
