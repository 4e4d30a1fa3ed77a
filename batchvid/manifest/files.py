"""Stage four: images read and checked, ids made final, keys computed: the jobs.

Each distinct image file is read once (``ImageLoader``). A request with ``samples: n`` becomes
n jobs (``-s0`` ... ``-s{n-1}``). Expanded ids must be unique, and no two jobs may send the
same request (they would be one video).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from batchvid.images import ImageLoader, ImageProblem
from batchvid.jobs import Image, Job, job_key
from batchvid.manifest.context import Context, Scope, duplicates
from batchvid.manifest.expand import Request
from batchvid.manifest.place import place


def build_jobs(context: Context, scope: Scope, requests: list[Request]) -> list[Job]:
    """The jobs of ``requests``, in order; problems reported into ``context``."""
    loader = ImageLoader(context.base_dir, os.path.dirname(context.display), root=context.root)
    expanded = [
        (f"{r.id}-s{sample}" if r.samples > 1 else r.id, (r, image, sample))
        for r, image in _with_images(context, scope, loader, requests)
        for sample in range(r.samples)
    ]
    refused: set[int] = set()
    for job_id, first, later in duplicates((job_id, n) for n, (job_id, _) in enumerate(expanded)):
        request = expanded[later][1][0]
        context.error(
            request.location,
            ("jobs", request.origin.index),
            f"duplicate job id {job_id!r}: also produced at {expanded[first][1][0].location}",
        )
        refused.add(later)
    jobs: list[Job] = []
    keys: dict[str, str] = {}
    for position, (job_id, (request, image, sample)) in enumerate(expanded):
        if position in refused:
            continue
        key = job_key(scope.provider, request.params, image, sample)
        twin = keys.setdefault(key, job_id)
        # Only on an otherwise clean manifest: a job with a dropped bad key would look like a
        # twin of its neighbour, and that echo is noise.
        if twin != job_id and not context.diagnostics:
            context.error(
                request.location,
                ("jobs", request.origin.index),
                f"job {job_id!r} sends exactly the same request as job {twin!r}, so they "
                "would be one video; change one of them, or use 'samples:' for several "
                "videos of one request",
            )
            continue
        params = {k: v for k, v in request.params.items() if k != "image"}
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
            )
        )
    return jobs


def _with_images(
    context: Context, scope: Scope, loader: ImageLoader, requests: list[Request]
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
