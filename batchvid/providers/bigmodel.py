"""Zhipu BigModel's video API (``https://open.bigmodel.cn/api/paas/v4``), asynchronous only.

Create: ``POST videos/generations`` with ``image_url`` for the image, ``watermark_enabled`` for
``watermark`` and a ``request_id`` derived from the job key, so that a second submission of the
same job is refused by the platform (business code 1231) instead of paying twice. Poll:
``GET async-result/{id}``; that answer carries no ``id``, so the polled id is kept.

Errors carry a business code (a string) beside the HTTP status, and the code decides: HTTP 429
means "slow down" for 1302/1303/1305 but "stop, the account is out of money" for 1113 (see
docs/providers.md). The table is ``CODES``; an unknown code falls back to the HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchvid.errors import JobFatalError, ProviderError, RunFatalError, TransientError
from batchvid.jobs import Job
from batchvid.providerinfo import KEY_VARIABLES, PROVIDER_ROOTS
from batchvid.providers.base import ErrorClass, Provider, RawResponse, set_params

LABEL, _ROOT = PROVIDER_ROOTS["bigmodel"]

DUPLICATE_REQUEST = "1231"


def _codes() -> dict[str, tuple[ErrorClass, str]]:
    table: dict[str, tuple[ErrorClass, str]] = {}

    def put(cls: ErrorClass, kind: str, *codes: int) -> None:
        for code in codes:
            table[str(code)] = (cls, kind)

    put(RunFatalError, "auth", 1000, 1001, 1002, 1003, 1004)
    put(RunFatalError, "account", 1110, 1111, 1112, 1121)
    put(RunFatalError, "insufficient_balance", 1113)
    put(TransientError, "server_error", 1120, 1230, 1234)
    put(JobFatalError, "invalid_request", 1210, 1212, 1213, 1214, 1215)
    put(JobFatalError, "unknown_model", 1211)
    put(RunFatalError, "forbidden", 1220, 1221, 1222)
    put(JobFatalError, "duplicate_request", 1231)
    put(JobFatalError, "prompt_too_long", 1261)
    put(JobFatalError, "content_filter", 1300, 1301)
    put(TransientError, "concurrency_limited", 1302)
    put(TransientError, "rate_limited", 1303)
    put(RunFatalError, "daily_quota", 1304)
    put(TransientError, "overloaded", 1305)
    put(RunFatalError, "quota", 1308)
    return table


CODES: Mapping[str, tuple[ErrorClass, str]] = _codes()
"""BigModel business code → (error class, kind). Codes not listed fall back to the HTTP status
(an unknown code on a 429 is therefore a transient ``rate_limited``)."""


class BigModelProvider(Provider):
    """The BigModel protocol, as data for the shared flow of ``Provider``."""

    name = "bigmodel"
    label, default_base_url = LABEL, _ROOT
    key_env_vars = KEY_VARIABLES[name]
    poll_paths = ("async-result/{id}",)
    task_id_field = "id"
    codes = CODES
    idempotent = True

    def build_body(self, job: Job, *, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name, value in set_params(job).items():
            body["watermark_enabled" if name == "watermark" else name] = value
        if job.image is not None:
            body["image_url"] = job.image.data_uri()
        body["request_id"] = request_id if request_id is not None else self.request_id(job)
        return body

    def error(self, raw: RawResponse, *, request_id: str | None = None) -> ProviderError:
        error = super().error(raw)
        if error.code == DUPLICATE_REQUEST:
            return JobFatalError(
                "duplicate_request",
                f"{LABEL} already has a request with request_id {request_id}: an earlier "
                "submission of this job was accepted but its answer, and so its task id, was "
                "lost. The job is not resubmitted automatically (that could pay twice); find "
                "the task in the BigModel console, or run again with --retry-failed to submit "
                f"a new one ({error.message})",
                status=error.status,
                code=error.code,
            )
        return error
