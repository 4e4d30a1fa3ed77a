"""The run's record: report.json, report.md, junit.xml, metadata.jsonl and batchvid.lock.

Everything here is a pure function of the outcomes, except the ``timing`` section of
report.json, so the same manifest and the same results give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from batchvid import __version__
from batchvid.gallery import ContentHash, write_gallery
from batchvid.jsontext import Streamed, StreamedItems
from batchvid.junit import junit_pieces
from batchvid.markdown import AGAIN as AGAIN
from batchvid.markdown import MarkdownJobs as MarkdownJobs
from batchvid.markdown import counted_succeeded
from batchvid.markdown import render_markdown as render_markdown
from batchvid.outcome import Files
from batchvid.outcome import Outcome as Outcome
from batchvid.outcome import Status as Status
from batchvid.store import write_atomic, write_json

_ROW = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
"""A metadata.jsonl line (``json.dumps(row, sort_keys=True, ensure_ascii=False)``'s text)."""

REPORT_VERSION = 1
LOCK_VERSION = 1
STATUSES: tuple[Status, ...] = ("succeeded", "skipped", "failed", "pending")


@dataclass(frozen=True)
class RunInfo:
    manifest: str
    name: str
    provider: str
    exit_code: int
    stopped: dict[str, str] | None
    started_at: str
    finished_at: str
    seconds: float
    cost: float
    currency: str
    shard: tuple[int, int] | None = None
    """``--shard I/N`` as (I, N); None for an unsharded run (its report has no ``shard``)."""
    license: str | None = None


def _job_entry(o: Outcome) -> dict[str, Any]:
    return job_entry(o, o.files())


def job_entry(o: Outcome, files: Files) -> dict[str, Any]:
    """report.json's entry of ``o``, its files records (``Outcome.files``) given."""
    video, cover, media, poster, provided = files
    job = o.job
    entry: dict[str, Any] = {
        "id": job.id,
        "index": job.index,
        "key": job.key,
        "status": o.status,
        "action": o.action,
        "sample": job.sample,
        "parameters": job.canonical_params(),
        "task_id": o.task_id,
        "video": video,
        "cover": cover,
        "media": media,
        "error": o.error,
        "warnings": sorted(o.warnings),
        "quality": (media or {}).get("quality"),
    }
    if o.enhance is not None:
        entry.update(enhance_fields(o.enhance))
    # Only where there is something to say, so the entries of older reports keep their shape.
    if poster is not None:
        entry["poster"] = poster
    if provided:
        entry.update((name, value) for name, value in sorted(provided.items()) if value is not None)
    if job.source:
        entry["source"] = job.source
    if job.matrix:
        entry["matrix"] = dict(sorted(job.matrix.items()))
    return entry


def enhance_fields(rewrite: Mapping[str, Any]) -> dict[str, Any]:
    """What report.json adds to an enhanced job's entry: both prompts and how the rewrite went."""
    return {
        "prompt": rewrite["prompt"],
        "prompt_original": rewrite["original"],
        "enhance": {name: rewrite.get(name) for name in ("status", "warning", "model", "requests", "tokens")},
    }


def enhance_totals(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """report.json's ``enhance``: the enhanced jobs, and the chat requests and tokens behind
    their prompts (those of an earlier run included: a reused rewrite costs nothing again)."""
    return _enhance_totals([j["enhance"] for j in jobs if "enhance" in j])


def _enhance_totals(enhanced: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``enhance_totals`` of the enhanced entries' ``enhance`` sections."""
    return {
        "jobs": len(enhanced),
        "requests": sum(e.get("requests") or 0 for e in enhanced),
        "tokens": sum(e.get("tokens") or 0 for e in enhanced),
        "fallback": sum(1 for e in enhanced if e.get("status") == "fallback"),
        "truncated": sum(1 for e in enhanced if e.get("status") == "truncated"),
    }


def build_report(outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """report.json's content. Its ``jobs`` are a list of entries, or, when some outcome is
    packed (a run's finished jobs), ``JobEntries``: each entry made again where it is read, so a
    100,000-job run never holds them all (``Outcome.pack``)."""
    jobs: Sequence[dict[str, Any]]
    if any(o.packed for o in outcomes):
        jobs = JobEntries(outcomes)
    else:
        jobs = [_job_entry(o) for o in outcomes]
    return assemble_report(jobs, info, _job_timing(outcomes))


class _Made(Streamed):
    """Dicts made from outcomes as they are read (a ``Sequence``), by ``make``."""

    def __init__(self, outcomes: Sequence[Outcome], make: Callable[[Outcome], dict[str, Any]]) -> None:
        self._outcomes, self._make = outcomes, make

    def __len__(self) -> int:
        return len(self._outcomes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self._make, self._outcomes)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._make(o) for o in self._outcomes[index]]
        return self._make(self._outcomes[index])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


class JobEntries(_Made):
    """report.json's job entries, made from the outcomes as they are read (a ``Sequence``)."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        super().__init__(outcomes, _job_entry)

    @property
    def outcomes(self) -> Sequence[Outcome]:
        return self._outcomes

    def without_files(self) -> Sequence[Mapping[str, Any]]:
        """The entries with their job's fields only (id, sample, parameters, source, matrix),
        made without decoding an outcome: what the gallery finds sweeps by (``JobFields``)."""
        return _Made(self._outcomes, JobFields)  # type: ignore[arg-type]  # a Mapping, not a dict


class JobFields(Mapping[str, Any]):
    """A job entry's own fields (id, sample, parameters, and source and matrix when it has
    them), each made when read: finding sweeps reads the ids of every job but the parameters
    of few, and ``canonical_params`` is most of an entry's cost."""

    __slots__ = ("_job",)

    def __init__(self, o: Outcome) -> None:
        self._job = o.job

    def __getitem__(self, name: str) -> Any:
        job = self._job
        if name == "id":
            return job.id
        if name == "sample":
            return job.sample
        if name == "parameters":
            return job.canonical_params()
        if name == "source" and job.source:
            return job.source
        if name == "matrix" and job.matrix:
            return dict(sorted(job.matrix.items()))
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        job = self._job
        return iter(("id", "sample", "parameters", *(("source",) if job.source else ()),
                     *(("matrix",) if job.matrix else ())))

    def __len__(self) -> int:
        return 3 + bool(self._job.source) + bool(self._job.matrix)


def assemble_report(
    jobs: Sequence[dict[str, Any]], info: RunInfo, job_timing: Mapping[str, Any]
) -> dict[str, Any]:
    """The report from its job entries (in manifest order) and the run's facts."""
    counts: dict[str, int] = {s: 0 for s in STATUSES}
    enhanced = []
    for j in jobs:  # one pass: the entries may be made as they are read
        counts[j["status"]] += 1
        if "enhance" in j:
            enhanced.append(j["enhance"])
    return _assembled(jobs, info, job_timing, counts, enhanced)


def lazy_report(outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """``build_report``'s content, its ``jobs`` always ``JobEntries``, its ``timing``'s
    ``jobs`` a ``JobTiming``, and the rest made from the outcomes without making their entries."""
    counts: dict[str, int] = {s: 0 for s in STATUSES}
    for o in outcomes:
        counts[o.status] += 1
    enhanced = [enhance_fields(o.enhance)["enhance"] for o in outcomes if o.enhance is not None]
    return _assembled(JobEntries(outcomes), info, JobTiming(outcomes), counts, enhanced)


def _timed(o: Outcome) -> bool:
    return o.seconds is not None or bool(o.attempts)


def _job_timing(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    return {o.job.id: {"attempts": o.attempts, "seconds": o.seconds} for o in outcomes if _timed(o)}


class JobTiming(StreamedItems):
    """report.json's ``timing.jobs`` (``_job_timing``'s items, by job id), each made as it is
    read: a 100,000-job run held them as 100,000 dicts (~18 MB) while its report files were
    written. The outcomes in manifest order are read as they are when their ids ascend (a
    manifest's usual order); else they are put in id order once, here."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        count, last, ascending = 0, None, True
        for o in outcomes:
            if _timed(o):
                job_id = o.job.id
                if last is not None and job_id <= last:
                    ascending = False
                count, last = count + 1, job_id
        self._count = count
        self._outcomes: Sequence[Outcome] = outcomes
        if not ascending:  # (a repeated id: its last outcome, as the dict keeps it)
            by_id = {o.job.id: o for o in outcomes if _timed(o)}
            self._outcomes = [by_id[job_id] for job_id in sorted(by_id)]
            self._count = len(self._outcomes)

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((o.job.id, {"attempts": o.attempts, "seconds": o.seconds}) for o in self._outcomes if _timed(o))


def _assembled(
    jobs: Sequence[dict[str, Any]],
    info: RunInfo,
    job_timing: Mapping[str, Any] | JobTiming,
    counts: dict[str, int],
    enhanced: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    counts["total"] = len(jobs)
    shard = {"shard": {"index": info.shard[0], "count": info.shard[1]}} if info.shard else {}
    totals = _enhance_totals(enhanced)
    extra = {"enhance": totals} if totals["jobs"] else {}
    return {
        "report_version": REPORT_VERSION,
        "batchvid_version": __version__,
        "manifest": _manifest_section(info),
        **shard,
        "exit_code": info.exit_code,
        "stopped": info.stopped,
        "summary": counts,
        "cost": {"amount": round(info.cost, 4), "currency": info.currency},
        "jobs": jobs if isinstance(jobs, Streamed) else list(jobs),
        **extra,
        "timing": {
            "started_at": info.started_at,
            "finished_at": info.finished_at,
            "seconds": round(info.seconds, 3),
            "jobs": job_timing if isinstance(job_timing, JobTiming) else dict(sorted(job_timing.items())),
        },
    }


def _manifest_section(info: RunInfo) -> dict[str, Any]:
    section: dict[str, Any] = {"path": info.manifest, "name": info.name, "provider": info.provider}
    if info.license is not None:
        section["license"] = info.license
    return section


def exit_code(statuses: Iterable[str]) -> int:
    """The exit code of a run (README, "Exit codes"): 3 jobs left pending (resumable), 1 some failed, 0."""
    seen = set(statuses)
    if "pending" in seen:  # every early stop leaves its unfinished jobs pending
        return 3
    return 1 if "failed" in seen else 0


def lock_document(name: str, provider: str, jobs: Mapping[str, Any]) -> dict[str, Any]:
    """batchvid.lock around its ``jobs`` pins."""
    return {"lock_version": LOCK_VERSION, "manifest": name, "provider": provider, "jobs": dict(jobs)}


def lock_data(outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """job id -> key, task id, video sha256: the pin to commit beside the manifest (each pin
    made as it is written: ``Pins``)."""
    return lock_document(info.name, info.provider, {}) | {"jobs": Pins(outcomes)}


class Pins(StreamedItems):
    """batchvid.lock's ``jobs``: the done jobs' pins by id, made as they are read."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self._done = sorted((o for o in outcomes if o.status in ("succeeded", "skipped")),
                            key=lambda o: o.job.id)

    def __len__(self) -> int:
        return len(self._done)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((o.job.id, _pin(o)) for o in self._done)


def _pin(o: Outcome) -> dict[str, Any]:
    video, _, _, poster, _ = o.files()
    pin: dict[str, Any] = {
        "key": o.job.key,
        "task_id": o.task_id,
        "sha256": video["sha256"] if video else None,
        **_both_prompts(o),
    }
    if poster is not None:
        pin["poster"] = poster
    return pin


def metadata_rows(outcomes: Iterable[Outcome]) -> Iterator[dict[str, Any]]:
    """One row per finished video, as a Hugging Face ``videofolder`` reads ``metadata.jsonl``
    (made as they are written, not all held)."""
    for o in outcomes:
        if o.status in ("succeeded", "skipped"):
            video, _, media, _, _ = o.files()
            if video is not None:
                yield metadata_row(o, video, media)


def metadata_row(
    o: Outcome,
    video: Mapping[str, Any],
    media: Mapping[str, Any] | None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata.jsonl row of finished outcome ``o``, its ``video`` and ``media`` records
    given (and its job's ``canonical_params()``, when made already)."""
    media = media or {}
    if params is None:
        params = o.job.canonical_params()
    return {
        "file_name": video["path"],
        "id": o.job.id,
        "key": o.job.key,
        "prompt": params.get("prompt"),
        **_both_prompts(o),
        "parameters": params,
        "sha256": video["sha256"],
        "width": media.get("width"),
        "height": media.get("height"),
        "fps": media.get("fps"),
        "duration": media.get("duration"),
        "quality": media.get("quality"),
    }


def succeeded_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """The report's succeeded jobs by how the run got them (``markdown.counted_succeeded``);
    of a report written from outcomes, counted from them without making the entries again."""
    jobs = report["jobs"]
    if isinstance(jobs, JobEntries):
        return counted_succeeded((o.status, o.action) for o in jobs.outcomes)
    return counted_succeeded((job["status"], job.get("action", "submit")) for job in jobs)


def entries_with_status(report: Mapping[str, Any], status: str) -> Iterator[Mapping[str, Any]]:
    """The report's job entries of ``status``; of a report written from outcomes, only those
    entries are made (the run's summary lists its failed jobs)."""
    jobs = report["jobs"]
    if isinstance(jobs, JobEntries):
        return (_job_entry(o) for o in jobs.outcomes if o.status == status)
    return (j for j in jobs if j["status"] == status)


def _both_prompts(o: Outcome) -> dict[str, Any]:
    """``prompt`` as sent and ``prompt_original`` as written, for an enhanced job only."""
    if o.enhance is None:
        return {}
    return {"prompt": o.enhance["prompt"], "prompt_original": o.enhance["original"]}


def write_outputs(root: Path, outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """Write every report file atomically, in one pass over the outcomes
    (``batchvid.reportfiles``); returns the report, its ``jobs`` made as they are read."""
    from batchvid.reportfiles import write_outputs

    return write_outputs(root, outcomes, info)


def write_legacy(root: Path, report: Mapping[str, Any], outcomes: Sequence[Outcome], info: RunInfo,
                 *, fresh: bool = False) -> None:
    """``write_outputs``'s files, a file at a time (the reference ``batchvid.reportfiles``
    must equal, and what it falls back to; ``fresh``: report.html rendered, never retimed)."""
    _write_files(root, report, metadata_rows(outcomes), lambda: lock_data(outcomes, info), fresh=fresh)


def metadata_text(row: Mapping[str, Any]) -> str:
    """A metadata.jsonl line."""
    return _ROW(row) + "\n"


def write_report_files(
    root: Path, report: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], lock: Mapping[str, Any]
) -> None:
    """Write report.json, report.md, junit.xml, metadata.jsonl, batchvid.lock and report.html,
    each atomically and in pieces (a 100,000-job report is never in memory as one text)."""
    _write_files(root, report, rows, lambda: lock)


def _write_files(
    root: Path,
    report: Mapping[str, Any],
    rows: Iterable[Mapping[str, Any]],
    lock: Callable[[], Mapping[str, Any]],
    *,
    fresh: bool = False,
) -> None:
    """``write_report_files``, the lock made only when it is written (after the rows)."""
    content = ContentHash()
    content.write_report(root / "report.json", report)
    write_atomic(root / "report.md", render_markdown(report))
    write_atomic(root / "junit.xml", junit_pieces(report))
    write_atomic(
        root / "metadata.jsonl",
        map(metadata_text, rows),
    )
    write_json(root / "batchvid.lock", lock())
    write_gallery(root, report, content=content, fresh=fresh)
