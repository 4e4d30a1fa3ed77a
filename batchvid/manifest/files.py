"""Stage four: images read and checked, ids made final, keys computed: the jobs.

Each distinct image file is read once (``ImageLoader``). A request with ``samples: n`` becomes
n jobs (``-s0`` ... ``-s{n-1}``). Expanded ids must be unique, and no two jobs may send the
same request (they would be one video). Requests stream through: nothing of a request but its
jobs outlives this stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from itertools import repeat
from operator import add, attrgetter, itemgetter
from typing import TYPE_CHECKING

from batchvid.errors import Location, ManifestError
from batchvid.images import ImageLoader, ImageProblem
from batchvid.jobkey import PromptKeys, canonical_json, job_key, spelled_keys
from batchvid.jobs import (
    Job,
    JobColumns,
    JobFields,
    JobSequence,
    PromptParams,
)
from batchvid.manifest.context import Claims, Context, Scope
from batchvid.manifest.expand import MAX_ID_LENGTH as _MAX_ID
from batchvid.manifest.expand import Request, SharedRows, Template, bounded_id
from batchvid.manifest.place import Origin, place

if TYPE_CHECKING:
    from batchvid.enhance.settings import EnhanceSettings


def build_jobs(context: Context, scope: Scope, requests: Iterable[Request | SharedRows]) -> JobSequence:
    """The jobs of ``requests``, in order; problems reported into ``context``."""
    maker = _Jobs(context, scope)
    for item in requests:
        if isinstance(item, SharedRows):
            maker.add_rows(item)
        else:
            maker.add(item)
    return maker.jobs


_Spelled = tuple["EnhanceSettings | None", "str | None", list[PromptKeys]]


class _Jobs:
    """The jobs made so far, and the ids and keys they claim (first come, first served)."""

    def __init__(self, context: Context, scope: Scope) -> None:
        self.context, self.scope = context, scope
        self.loader = ImageLoader(context.base_dir, os.path.dirname(context.display), root=context.root)
        self.ids: Claims[Location] = Claims()
        self.keys: Claims[str] = Claims()
        self.jobs = JobSequence()
        self._enhancements: dict[int, tuple[EnhanceSettings, str] | None] = {}

    def enhancement(self, origin: Origin) -> tuple[EnhanceSettings, str] | None:
        """Once per manifest job: its rows and combinations share it."""
        if origin.job_index not in self._enhancements:
            self._enhancements[origin.job_index] = _enhancement(self.context, self.scope, origin)
        return self._enhancements[origin.job_index]

    def add(self, request: Request) -> None:
        """The jobs of one request (one per sample), its image loaded (or reported)."""
        params, image = request.params, None
        if params.get("image") is not None:
            try:
                image = self.loader.load(params["image"])
            except ImageProblem as problem:
                place(self.context, self.scope, request.origin, "image", image_value=True).report(self.context, str(problem))
                return
        if "image" in params:
            params = {k: v for k, v in params.items() if k != "image"}
        enhance, fingerprint = self.enhancement(request.origin) or (None, None)
        if not params.get("prompt"):
            enhance, fingerprint = None, None
        for sample in range(request.samples):
            job_id = f"{request.id}-s{sample}" if request.samples > 1 else request.id
            key = job_key(self.scope.provider, params, image, sample, enhance_json=fingerprint)
            if self.claim(job_id, key, request.location, request.origin.job_index):
                fields = JobFields(job_id, key, len(self.jobs), self.scope.provider, params, image, sample,
                                   request.location, request.source, enhance, request.origin.values)
                self.jobs.append(fields.freeze())

    def add_rows(self, run: SharedRows) -> None:
        """The jobs of rows whose requests are their shape's template with their prompt: ``add``
        for each, in one loop, each key spelled from its template's (``PromptKeys``)."""
        if self._add_at_once(run):
            return
        provider, source, jobs, ids, keys = self.scope.provider, run.source, self.jobs, self.ids, self.keys
        spelled: dict[Template, _Spelled] = {}
        for row, template in zip(run.rows, run.templates, strict=True):
            found = spelled.get(template)
            if found is None:
                found = spelled[template] = self._spelled(template, run.samples)
            enhance, fingerprint, keyed = found
            prompt = row.fields["prompt"]
            params = PromptParams(template.params, prompt)
            head = bounded_id(f"{source}-{row.id}")
            for sample, spelling in enumerate(keyed):
                job_id = f"{head}-s{sample}" if run.samples > 1 else head
                key = spelling.key(prompt) if spelling.usable else job_key(provider, params, None, sample, enhance_json=fingerprint)
                if job_id in ids or key in keys:  # taken: claim() says by whom, or lets it pass
                    if not self.claim(job_id, key, row.location, template.origin.job_index):
                        continue
                else:  # what claim() does with free names, inline
                    ids[job_id], keys[key] = row.location, job_id
                fields = JobFields(job_id, key, len(jobs), provider, params, None, sample, row.location, source,
                                   enhance, template.origin.values)
                jobs.append(fields.freeze())

    def _add_at_once(self, run: SharedRows) -> bool:
        """``add_rows`` of the usual run in C-level passes over its rows (``map``), not a loop:
        one sample a row, every id short and new, every key new and its own. False (nothing
        added) for any other run: the loop then says which id or key is taken, and by whom."""
        if run.samples != 1:
            return False
        made = {template: self._spelled(template, 1) for template in dict.fromkeys(run.templates)}
        if not all(keyed[0].usable for _, _, keyed in made.values()):
            return False
        spelling = {template: keyed[0] for template, (_, _, keyed) in made.items()}
        enhancement = {template: enhance for template, (enhance, _, _) in made.items()}
        prompts = list(map(_PROMPT, map(_FIELDS, run.rows)))
        job_ids = list(map(add, repeat(f"{run.source}-"), map(_ID, run.rows)))  # each row's id a str
        keys = spelled_keys(map(spelling.__getitem__, run.templates), prompts)
        locations = list(map(_LOCATION, run.rows))
        new_ids, new_keys = dict(zip(job_ids, locations, strict=True)), dict(zip(keys, job_ids, strict=True))
        fresh = len(new_ids) == len(job_ids) == len(new_keys) and max(map(len, job_ids), default=0) <= _MAX_ID
        if not (fresh and self.ids.keys().isdisjoint(new_ids.keys()) and self.keys.keys().isdisjoint(new_keys.keys())):
            return False
        self.ids.update(new_ids)
        self.keys.update(new_keys)
        start, count, provider, templates = len(self.jobs), len(job_ids), self.scope.provider, run.templates

        def make() -> Iterable[Job]:  # when a job is first asked for (``JobSequence``)
            fields = map(
                JobFields, job_ids, keys, range(start, start + count), repeat(provider),
                map(PromptParams, map(_PARAMS, templates), prompts), repeat(None), repeat(0),
                locations, repeat(run.source), map(enhancement.__getitem__, templates), map(_VALUES, templates),
            )  # fmt: skip
            return map(JobFields.freeze, fields)

        plain = all(enhance is None for enhance in enhancement.values())
        self.jobs.defer(count, make, JobColumns(job_ids, keys, list(map(_PARAMS, templates)), list(map(_PARAMS, made)), plain))
        return True

    def _spelled(self, template: Template, samples: int) -> _Spelled:
        """The enhancement of a template's rows, its fingerprint and their keys' spelling per sample."""
        enhance, fingerprint = self.enhancement(template.origin) or (None, None)
        return enhance, fingerprint, [PromptKeys(self.scope.provider, template.params, s, fingerprint) for s in range(samples)]

    def claim(self, job_id: str, key: str, location: Location, index: int) -> bool:
        """Whether the job may be added: a duplicate id, or a request another job sends, is reported."""
        first = self.ids.claim(job_id, location)
        if first is not None:
            message = f"duplicate job id {job_id!r}: also produced at {first}"
            self.context.error(location, ("jobs", index), message)
            return False
        twin = self.keys.claim(key, job_id)
        # Only on an otherwise clean manifest: a job with a dropped bad key would look like a
        # twin of its neighbour, and that echo is noise.
        if twin is not None and not self.context.diagnostics:
            self.context.error(
                location,
                ("jobs", index),
                f"job {job_id!r} sends exactly the same request as job {twin!r}, so they "
                "would be one video; change one of them, or use 'samples:' for several "
                "videos of one request",
            )
            return False
        return True


_PROMPT, _FIELDS, _ID, _LOCATION = itemgetter("prompt"), attrgetter("fields"), attrgetter("id"), attrgetter("location")
_PARAMS, _VALUES = attrgetter("params"), attrgetter("origin.values")


def _enhancement(context: Context, scope: Scope, origin: Origin) -> tuple[EnhanceSettings, str] | None:
    """The enhancement settings of a manifest job (defaults' ``enhance`` under its own) and
    their fingerprint's JSON, or None; a wrong value or instructions file is reported where it
    was written."""
    index = origin.job_index
    written = origin.job.get("enhance")
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
