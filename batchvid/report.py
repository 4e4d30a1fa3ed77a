"""The run's record: report.json, report.md, junit.xml, metadata.jsonl and batchvid.lock.

Everything here is a pure function of the outcomes, except the ``timing`` section of
report.json, so the same manifest and the same results give the same bytes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from batchvid import __version__
from batchvid.gallery import ContentHash, write_gallery
from batchvid.jsontext import Streamed, StreamedItems
from batchvid.junit import junit_pieces, short_message
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
    video, cover, media, poster, provided = o.files()
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
    return assemble_report(
        jobs,
        info,
        {o.job.id: {"attempts": o.attempts, "seconds": o.seconds}
         for o in outcomes if o.seconds is not None or o.attempts},
    )


class JobEntries(Streamed):
    """report.json's job entries, made from the outcomes as they are read (a ``Sequence``)."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self._outcomes = outcomes

    def __len__(self) -> int:
        return len(self._outcomes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(_job_entry, self._outcomes)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [_job_entry(o) for o in self._outcomes[index]]
        return _job_entry(self._outcomes[index])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


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
            "jobs": dict(sorted(job_timing.items())),
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
        if o.status not in ("succeeded", "skipped"):
            continue
        video, _, media, _, _ = o.files()
        if video is None:
            continue
        media = media or {}
        params = o.job.canonical_params()
        yield {
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


AGAIN = {"reattach": "re-attached", "download": "downloaded again"}
"""How a succeeded job that this run did not pay for is counted (none of them is "generated")."""


def succeeded_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """The succeeded jobs split by how this run got them: ``generated`` (a create it paid for,
    or an older report that did not record the action), then ``AGAIN``'s words when nonzero."""
    counts = _new_counts()
    for job in report["jobs"]:
        if job["status"] == "succeeded":
            counts[AGAIN.get(job.get("action", "submit"), "generated")] += 1
    return _said(counts)


def _new_counts() -> dict[str, int]:
    return {"generated": 0} | {word: 0 for word in AGAIN.values()}


def _said(counts: dict[str, int]) -> dict[str, int]:
    return {word: n for word, n in counts.items() if n or word == "generated"}


def _both_prompts(o: Outcome) -> dict[str, Any]:
    """``prompt`` as sent and ``prompt_original`` as written, for an enhanced job only."""
    if o.enhance is None:
        return {}
    return {"prompt": o.enhance["prompt"], "prompt_original": o.enhance["original"]}


def render_markdown(report: Mapping[str, Any]) -> str:
    """report.md, from one pass over the job entries (they may be made as they are read)."""
    counts = _new_counts()
    failed: list[Mapping[str, Any]] = []
    warned: list[Mapping[str, Any]] = []
    enhanced: list[Mapping[str, Any]] = []
    rows = []
    for j in report["jobs"]:
        status = j["status"]
        if status == "succeeded":
            counts[AGAIN.get(j.get("action", "submit"), "generated")] += 1
        elif status in ("failed", "pending"):
            failed.append(j)
        if j["warnings"]:
            warned.append(j)
        if "enhance" in j:
            enhanced.append(j)
        sha = j["video"]["sha256"][:12] if j["video"] else ""
        p = j["parameters"]
        rows.append(f"| `{j['id']}` | {status} | {p.get('model')} | {p.get('size', '')} | {sha} "
                    f"| {_signals(j.get('quality'))} |")
    s = report["summary"]
    manifest = report["manifest"]
    icon = {0: "✅", 1: "❌", 3: "⏸️"}.get(report["exit_code"], "❌")
    lines = [
        f"## {icon} batchvid: {manifest['name']}",
        "",
        f"{s['total']} jobs: "
        + "".join(f"**{n} {w}**, " if w == "generated" else f"{n} {w}, "
                  for w, n in _said(counts).items())
        + f"{s['skipped']} already done, "
        f"**{s['failed']} failed**, {s['pending']} pending · provider `{manifest['provider']}` · "
        f"cost {report['cost']['amount']:g} {report['cost']['currency']}",
        "",
        "Every job with its poster, video, prompt and parameters: [report.html](report.html)",
        "",
    ]
    if report.get("shards"):
        count, shards = report["shards"]["count"], report["shards"]
        lines += [f"> Partial merge: shards {', '.join(f'{i}/{count}' for i in shards['merged'])} "
                  f"are in; {', '.join(f'{i}/{count}' for i in shards['missing'])} missing.", ""]
    if report["stopped"]:
        lines += [f"> Stopped early ({report['stopped']['reason']}): "
                  f"{report['stopped']['message']} — run again to resume.", ""]
    if failed:
        lines += ["| job | status | kind | message |", "|---|---|---|---|"]
        for j in failed:
            err = j["error"] or {}
            message = _cell(short_message(str(err.get("message", ""))))
            lines.append(f"| `{j['id']}` | {j['status']} | {err.get('kind', '')} | {message} |")
        lines.append("")
    if warned:
        lines += ["Warnings:", ""]
        lines += [f"- `{j['id']}`: {w}" for j in warned for w in j["warnings"]]
        lines.append("")
    lines += enhance_markdown(report, enhanced)
    lines += ["<details><summary>All jobs</summary>", "",
              "| job | status | model | size | sha256 | motion · black · frozen |",
              "|---|---|---|---|---|---|"]
    lines += rows
    lines += ["", "</details>", ""]
    return "\n".join(lines)


MARKDOWN_PROMPTS = 50
"""Up to this many enhanced jobs, report.md shows both prompts of each; beyond, a count."""


def enhance_markdown(
    report: Mapping[str, Any], enhanced: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """report.md's lines on prompt enhancement: each enhanced job's prompt as written and as
    sent (or, for many jobs, the counts), and the rewrites' warnings. None without any.
    ``enhanced``: the report's enhanced job entries, when already picked out."""
    totals = report.get("enhance")
    if not totals:
        return []
    jobs = [j for j in report["jobs"] if "enhance" in j] if enhanced is None else enhanced
    lines = [
        f"Prompt enhancement: {totals['jobs']} jobs, {totals['requests']} chat requests, "
        f"{totals['tokens']} tokens; {totals['truncated']} cut to fit, "
        f"{totals['fallback']} sent as written.",
        "",
    ]
    if len(jobs) <= MARKDOWN_PROMPTS:
        lines += ["| job | enhance | prompt as written | prompt as sent |", "|---|---|---|---|"]
        lines += [
            f"| `{j['id']}` | {j['enhance']['status']} | {_cell(j['prompt_original'])} | {_cell(j['prompt'])} |"
            for j in jobs
        ]
        lines.append("")
    warned = [j for j in jobs if j["enhance"].get("warning")]
    if warned:
        lines += [f"- `{j['id']}`: {_cell(j['enhance']['warning'])}" for j in warned]
        lines.append("")
    return lines


def _signals(quality: Mapping[str, Any] | None) -> str:
    """A clip's quality signals in one table cell: motion, then black and frozen shares."""
    if not quality:
        return ""
    return (f"{quality['motion']:.3f} · {quality['black_fraction']:.0%} · "
            f"{quality['frozen_fraction']:.0%}")


def _cell(text: str) -> str:
    """``text`` as literal text in one Markdown table cell: a provider's HTML error page must
    not become markup in a CI step summary."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def write_outputs(root: Path, outcomes: Sequence[Outcome], info: RunInfo) -> dict[str, Any]:
    """Write every report file atomically; returns the report."""
    report = build_report(outcomes, info)
    _write_files(root, report, metadata_rows(outcomes), lambda: lock_data(outcomes, info))
    return report


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
) -> None:
    """``write_report_files``, the lock made only when it is written (after the rows)."""
    content = ContentHash()
    content.write_report(root / "report.json", report)
    write_atomic(root / "report.md", render_markdown(report))
    write_atomic(root / "junit.xml", junit_pieces(report))
    write_atomic(
        root / "metadata.jsonl",
        (_ROW(r) + "\n" for r in rows),
    )
    write_json(root / "batchvid.lock", lock())
    write_gallery(root, report, content=content)
