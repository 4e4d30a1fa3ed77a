"""Stage four: images read and checked, ids made final, keys computed: the jobs.

Each distinct image file is read once (``ImageLoader``). A request with ``samples: n`` becomes
n jobs (``-s0`` ... ``-s{n-1}``). Expanded ids must be unique, and no two jobs may send the
same request (they would be one video). Requests stream through: nothing of a request but its
jobs outlives this stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from batchvid.enhance.settings import (
    EnhanceSettings,
    enhance_fingerprint,
    enhance_settings,
    merge_enhance,
)
from batchvid.errors import ManifestError
from batchvid.images import ImageLoader, ImageProblem
from batchvid.jobs import Image, Job, canonical_json, job_key
from batchvid.manifest.context import Claims, Context, Scope
from batchvid.manifest.expand import Request
from batchvid.manifest.place import place


def build_jobs(context: Context, scope: Scope, requests: Iterable[Request]) -> list[Job]:
    """The jobs of ``requests``, in order; problems reported into ``context``."""
    loader = ImageLoader(context.base_dir, os.path.dirname(context.display), root=context.root)
    ids: Claims[Request] = Claims()
    keys: Claims[str] = Claims()
    jobs: list[Job] = []
    enhancements: dict[int, tuple[EnhanceSettings, str] | None] = {}
    for request, image in _with_images(context, scope, loader, requests):
        params = request.params
        if "image" in params:
            params = {k: v for k, v in params.items() if k != "image"}
        index = request.origin.job_index
        if index not in enhancements:  # once per manifest job: its rows and combinations share it
            settings = _enhancement(context, scope, request)
            enhancements[index] = (
                None if settings is None else (settings, canonical_json(enhance_fingerprint(settings)))
            )
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
            key = job_key(scope.provider, params, image, sample, enhance_json=fingerprint)
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
            jobs.append(
                Job(
                    id=job_id,
                    key=key,
                    index=len(jobs),
                    provider=scope.provider,
                    params=params,
                    image=image,
                    sample=sample,
                    location=request.location,
                    source=request.source,
                    enhance=enhance,
                    matrix=request.origin.values,
                )
            )
    return jobs


def _enhancement(context: Context, scope: Scope, request: Request) -> EnhanceSettings | None:
    """The enhancement settings of a manifest job (defaults' ``enhance`` under its own), or
    None; a wrong value or instructions file is reported where it was written."""
    index = request.origin.job_index
    written = request.origin.job.get("enhance")
    value = merge_enhance(scope.defaults.get("enhance"), written)
    where = ("jobs", index, "enhance") if written is not None else ("defaults", "enhance")
    try:
        return enhance_settings(
            value,
            context.base_dir,
            location=context.at(where),
            path=f"$.jobs[{index}].enhance" if written is not None else "$.defaults.enhance",
            display_dir=os.path.dirname(context.display),
        )
    except ManifestError as exc:
        context.error(exc.location, exc.path, exc.message)
        return None


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
