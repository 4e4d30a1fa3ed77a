"""GeekAI's video API (``https://geekai.co/api/v1``), always in asynchronous mode.

Create: ``POST videos/generations`` with the generation parameters as named, the image as
``image`` (URL or data URI) and ``"async": true`` (without it GeekAI holds the request until the
video is done); the answer names the task ``task_id``. Poll: ``GET video/{task_id}/result``,
falling back to ``GET videos/{task_id}`` on a 404 (the docs name both; see docs/providers.md).
Errors are classified by HTTP status: GeekAI documents no error body, so business codes are not
interpreted. No idempotency key: a create whose answer was lost is never sent again.
"""

from __future__ import annotations

from typing import Any

from batchvid.jobs import Job
from batchvid.providerinfo import KEY_VARIABLES, PROVIDER_ROOTS
from batchvid.providers.base import Provider, set_params


class GeekAIProvider(Provider):
    """The GeekAI protocol, as data for the shared flow of ``Provider``."""

    name = "geekai"
    label, default_base_url = PROVIDER_ROOTS[name]
    key_env_vars = KEY_VARIABLES[name]
    poll_paths = ("video/{id}/result", "videos/{id}")
    task_id_field = "task_id"

    def build_body(self, job: Job, *, request_id: str | None = None) -> dict[str, Any]:
        """The body (GeekAI has no idempotency key: ``request_id`` is ignored)."""
        body = set_params(job)
        if job.image is not None:
            body["image"] = job.image.data_uri()
        body["async"] = True
        return body
