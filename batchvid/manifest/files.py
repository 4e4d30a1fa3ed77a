"""Stage four: images read and checked, ids made final, keys computed: the jobs.

Each distinct image file is read once (``ImageLoader``). A request with ``samples: n`` becomes
n jobs (``-s0`` ... ``-s{n-1}``). Expanded ids must be unique, and no two jobs may send the
same request (they would be one video). Requests stream through: nothing of a request but its
jobs outlives this stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from batchvid.errors import ManifestError
from batchvid.images import ImageLoader, ImageProblem
from batchvid.jobs import Image, Job, JobFields, PromptKeys, canonical_json, job_key
from batchvid.manifest.context import Claims, Context, Scope
from batchvid.manifest.expand import Request
from batchvid.manifest.place import place

if TYPE_CHECKING:
    from batchvid.enhance.settings import EnhanceSettings


def build_jobs(context: Context, scope: Scope, requests: Iterable[Request]) -> list[Job]:
    """The jobs of ``requests``, in order; problems reported into ``context``."""
    loader = ImageLoader(context.base_dir, os.path.dirname(context.display), root=context.root)
    ids: Claims[Request] = Claims()
    keys = _Keys(scope.provider)
    jobs: list[Job] = []
    enhancements: dict[int, tuple[EnhanceSettings, str] | None] = {}
    for request, image in _with_images(context, scope, loader, requests):
        params = request.params
        if "image" in params:
            params = {k: v for k, v in params.items() if k != "image"}
        index = request.origin.job_index
        if index not in enhancements:  # once per manifest job: its rows and combinations share it
            enhancements[index] = _enhancement(context, scope, request)
        enhance, fingerprint = enhancements[index] or (None, None)
        if not params.get("prompt"):
            enhance, fingerprint = None, None
        for sample in range(request.samples):
            job_id = f"{request.id}-s{sample}" if request.samples > 1 else request.id
            first = ids.claim(job_id, request)
            if first is not None:
                message = f"duplicate job id {job_id!r}: also produced at {first.location}"
                context.error(request.location, ("jobs", request.origin.job_index), message)
                continue
            key = keys.key(request, params, image, sample, fingerprint)
            twin = keys.claim(key, job_id)
            # Only on an otherwise clean manifest: a job with a dropped bad key would look like a
            # twin of its neighbour, and that echo is noise.
            if twin is not None and not context.diagnostics:
                context.error(
                    request.location,
                    ("jobs", request.origin.job_index),
                    f"job {job_id!r} sends exactly the same request as job {twin!r}, so they "
                    "would be one video; change one of them, or use 'samples:' for several "
                    "videos of one request",
                )
                continue
            fields = JobFields(job_id, key, len(jobs), scope.provider, params, image, sample, request.location,
                               request.source, enhance, request.origin.values)
            jobs.append(fields.freeze())
    return jobs


class _Keys(Claims[str]):
    """Each job's key, claimed first come, first served. Requests that differ in their prompt
    alone (``Request.shared``) share one spelling of the rest (``PromptKeys``)."""

    __slots__ = ("_provider", "_spelled")

    def __init__(self, provider: str) -> None:
        super().__init__()
        self._provider = provider
        self._spelled: dict[tuple[int, int], PromptKeys] = {}

    def key(
        self, request: Request, params: Mapping[str, Any], image: Image | None, sample: int, fingerprint: str | None
    ) -> str:
        if request.shared and image is None:
            where = (request.origin.job_index, sample)
            spelled = self._spelled.get(where)
            if spelled is None:
                spelled = self._spelled[where] = PromptKeys(self._provider, params, sample, fingerprint)
            if spelled.usable:
                return spelled.key(params["prompt"])
        return job_key(self._provider, params, image, sample, enhance_json=fingerprint)


def _enhancement(context: Context, scope: Scope, request: Request) -> tuple[EnhanceSettings, str] | None:
    """The enhancement settings of a manifest job (defaults' ``enhance`` under its own) and
    their fingerprint's JSON, or None; a wrong value or instructions file is reported where it
    was written."""
    index = request.origin.job_index
    written = request.origin.job.get("enhance")
    if written is None and scope.defaults.get("enhance") is None:
        return None  # without importing batchvid.enhance (its chat client imports httpx)
    from batchvid.enhance.settings import enhance_fingerprint, enhance_settings, merge_enhance

    value = merge_enhance(scope.defaults.get("enhance"), written)
    where = ("jobs", index, "enhance") if written is not None else ("defaults", "enhance")
    try:
        settings = enhance_settings(
            value,
            context.base_dir,
            location=context.at(where),
            path=f"$.jobs[{index}].enhance" if written is not None else "$.defaults.enhance",
            display_dir=os.path.dirname(context.display),
        )
    except ManifestError as exc:
        context.error(exc.location, exc.path, exc.message)
        return None
    return None if settings is None else (settings, canonical_json(enhance_fingerprint(settings)))


def _with_images(
    context: Context, scope: Scope, loader: ImageLoader, requests: Iterable[Request]
) -> Iterator[tuple[Request, Image | None]]:
    """Each request with its image loaded (requests whose image is unusable are reported)."""
    for request in requests:
        reference = request.params.get("image")
        if reference is None:
            yield request, None
            continue
        try:
            yield request, loader.load(reference)
        except ImageProblem as problem:
            place(context, scope, request.origin, "image", image_value=True).report(context, str(problem))
