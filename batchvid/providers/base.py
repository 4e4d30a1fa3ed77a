"""What every provider protocol offers the runner. Nothing about scheduling lives here."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from batchvid.jobs import Job

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
    """One provider's HTTP contract: building requests, parsing responses, classifying errors.

    Methods that talk HTTP take an ``httpx.AsyncClient`` whose ``base_url`` is the provider's API
    root (for example ``https://geekai.co/api/v1``) and which already carries the
    ``Authorization`` header. They raise ``TransientError``, ``JobFatalError`` or
    ``RunFatalError`` (see ``batchvid.errors``) and nothing else.
    """

    name: str
    default_base_url: str
    key_env_vars: tuple[str, ...]

    @abc.abstractmethod
    def build_body(self, job: Job) -> dict[str, Any]:
        """The JSON body of the create request, images inline as data URIs."""

    def recorded_body(self, job: Job) -> dict[str, Any]:
        """The body as written to ``request.json``: inline images replaced by their description."""
        body = self.build_body(job)
        if job.image is not None:
            for name in ("image", "image_url"):
                if name in body:
                    body[name] = job.image.describe()
        return body

    @abc.abstractmethod
    async def create(self, client: httpx.AsyncClient, job: Job) -> TaskResult:
        """Submit the job; returns the task (usually ``running``)."""

    @abc.abstractmethod
    async def poll(self, client: httpx.AsyncClient, task_id: str) -> TaskResult:
        """Fetch the task's current state."""
