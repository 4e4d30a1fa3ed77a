"""`batchvid merge`: combine shard output directories into the directory one run would write."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchvid.clean import writer_running
from batchvid.errors import OutputDirError
from batchvid.journal import Entry, read_entries
from batchvid.report import (
    RunInfo,
    assemble_report,
    exit_code,
    lock_document,
    write_report_files,
)
from batchvid.store import (
    JOURNAL,
    STATE_DIR,
    OutputDir,
    read_json_lines,
    read_json_object,
    read_report,
    verify_file,
)


def merge_dirs(sources: Sequence[Path], into: Path, *, partial: bool = False) -> dict[str, Any]:
    """Copy every shard's job files into ``into`` and write one report, lock and index.

    Shards must come from the same manifest and provider; a job present in two shards must have
    the same key and the same video hash there. ``into`` must be new (or empty). The merged
    directory is resumable like any other: its journal joins the shards' journals, each job's
    history taken from the shard whose result is kept.

    Shards written with ``--shard I/N`` must form the whole set 1..N, each once (``check_shards``);
    with ``partial`` a subset is merged and the report's ``shards`` says which are in.
    """
    reports = _read_shards(sources, into)
    shards = check_shards(reports, partial=partial)
    ordered, owners = _choose_jobs(reports)
    # Read and check everything before writing anything, so a refused merge leaves no directory.
    for job in ordered:
        src = owners[job["id"]]
        for entry in (job.get("video"), job.get("cover"), job.get("poster")):
            if entry and verify_file(src / entry["path"], entry) is not None:
                raise OutputDirError(f"{src / entry['path']} does not match its report; run verify")
    # A key reported by two shards keeps the history of the shard whose result is kept, so the
    # merged journal never contradicts the merged report.
    owner_of_key = {j["key"]: owners[j["id"]] for j in ordered}
    journal: list[Entry] = []
    rows: list[dict[str, Any]] = []
    lock_jobs: dict[str, Any] = {}
    for src, _ in reports:
        if (src / STATE_DIR / JOURNAL).exists():
            journal += [e for e in read_entries(src / STATE_DIR / JOURNAL)
                        if owner_of_key.get(e.key, src) == src]
        rows += [r for r in read_json_lines(src / "metadata.jsonl") if owners.get(r.get("id", "")) == src]
        lock = read_json_object(src / "batchvid.lock")
        lock_jobs.update({k: v for k, v in lock.get("jobs", {}).items() if owners.get(k) == src})
    out = OutputDir(into)
    out.open()
    merged = False
    try:
        for job in ordered:
            job_dir = owners[job["id"]] / "jobs" / job["id"]
            if job_dir.is_dir():
                shutil.copytree(job_dir, into / "jobs" / job["id"], dirs_exist_ok=True)
        for entry in journal:
            out.journal.append(entry)
        index = {j["id"]: j["index"] for j in ordered}
        rows.sort(key=lambda r: index[r["id"]])
        report = _merged_report(reports, ordered)
        if shards is not None:
            report = _with_shards(report, shards)
        info = report["manifest"]
        write_report_files(into, report, rows, lock_document(info["name"], info["provider"], lock_jobs))
        merged = True
    finally:
        # Ended cleanly, as a finished run does (the lock file emptied, the journal's snapshot
        # left when it is long): a pid left there says the report may be stale (`clean`).
        out.close(clean=merged)
    return report


def _shard_name(report: dict[str, Any]) -> str:
    shard = report.get("shard")
    return f"shard {shard['index']}/{shard['count']}" if shard else "written without --shard"


def check_shards(
    reports: list[tuple[Path, dict[str, Any]]], *, partial: bool
) -> dict[str, Any] | None:
    """Refuse a set of shards with one missing (unless ``partial``), repeated or of another
    split; returns the report's ``shards`` for a partial merge of a subset, else None.
    Directories written without ``--shard`` (or merges of them) merge as before."""
    sharded = [(src, r) for src, r in reports if r.get("shard")]
    if not sharded:
        return None
    seen: dict[int, Path] = {}
    count = sharded[0][1]["shard"]["count"]
    for src, report in reports:
        shard = report.get("shard")
        if shard is None or shard["count"] != count:
            raise OutputDirError(
                f"{src} is {_shard_name(report)} but {sharded[0][0]} is "
                f"{_shard_name(sharded[0][1])}: merge the shards of one --shard I/{count} split"
            )
        if shard["index"] in seen:
            raise OutputDirError(
                f"{seen[shard['index']]} and {src} are both {_shard_name(report)}: "
                "give each shard's directory once"
            )
        seen[shard["index"]] = src
    missing = [i for i in range(1, count + 1) if i not in seen]
    if not missing:
        return None
    if not partial:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise OutputDirError(
            f"shard {names} missing (given {', '.join(f'{i}/{count}' for i in sorted(seen))}): "
            "add its directory, or pass --partial to merge these alone"
        )
    return {"count": count, "merged": sorted(seen), "missing": missing}


def _with_shards(report: dict[str, Any], shards: dict[str, Any]) -> dict[str, Any]:
    """``report`` with ``shards`` after its manifest (where a shard's report has ``shard``)."""
    out: dict[str, Any] = {}
    for key, value in report.items():
        out[key] = value
        if key == "manifest":
            out["shards"] = shards
    return out


def _read_shards(sources: Sequence[Path], into: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Each shard's report, after checking the shards are distinct, of one manifest, and
    that ``into`` is new."""
    seen: set[Path] = set()
    for src in sources:
        if src.resolve() in seen:
            raise OutputDirError(f"{src} is given twice: name each shard once")
        seen.add(src.resolve())
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise OutputDirError(f"{into} already exists and is not empty: merge into a new directory")
    for src in sources:
        writer = writer_running(src)
        if writer is not None:  # its files and journal are changing; its report is the last run's
            raise OutputDirError(
                f"{src} is being written by a batchvid run (pid {writer}): merge it once that "
                "run has ended"
            )
    reports = [(src, read_report(src)) for src in sources]
    first_src, first = reports[0]
    for src, report in reports[1:]:
        if _identity(report) != _identity(first):
            raise OutputDirError(
                f"{src} was written for {_describe(report)} but {first_src} for "
                f"{_describe(first)}: merge only shards of one manifest"
            )
    return reports


def _identity(report: dict[str, Any]) -> dict[str, Any]:
    """What makes two shards' manifests one: all of report.json's ``manifest`` but its
    ``path``, which is only how each run was given it (``m.yaml``, ``./m.yaml``, an absolute
    path on another runner's checkout)."""
    return {k: v for k, v in report["manifest"].items() if k != "path"}


def _describe(report: dict[str, Any]) -> str:
    info = report["manifest"]
    facts = [f"provider {info.get('provider')}"]
    if info.get("license") is not None:
        facts.append(f"license {info['license']}")
    return f"manifest {info.get('name')!r} ({', '.join(facts)})"


def _choose_jobs(
    reports: list[tuple[Path, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """The merged job entries in manifest order, and the shard each is taken from: a done
    result wins over any other; two done results must agree."""
    jobs: dict[str, dict[str, Any]] = {}
    owners: dict[str, Path] = {}
    for src, report in reports:
        for job in report["jobs"]:
            other = jobs.get(job["id"])
            if other is not None and other["status"] in ("succeeded", "skipped"):
                if job["status"] in ("succeeded", "skipped") and (
                    job["key"] != other["key"] or job["video"]["sha256"] != other["video"]["sha256"]
                ):
                    raise OutputDirError(
                        f"job {job['id']!r} differs between {owners[job['id']]} and {src}"
                    )
                continue
            jobs[job["id"]] = job
            owners[job["id"]] = src
    return sorted(jobs.values(), key=lambda j: j["index"]), owners


def _merged_report(
    reports: list[tuple[Path, dict[str, Any]]], ordered: list[dict[str, Any]]
) -> dict[str, Any]:
    first = reports[0][1]
    timings = [r["timing"] for _, r in reports]
    info = RunInfo(
        manifest=first["manifest"]["path"],
        name=first["manifest"]["name"],
        provider=first["manifest"]["provider"],
        exit_code=exit_code(j["status"] for j in ordered),
        stopped=next((r["stopped"] for _, r in reports if r["stopped"]), None),
        started_at=min(t["started_at"] for t in timings),
        finished_at=max(t["finished_at"] for t in timings),
        seconds=max(t["seconds"] for t in timings),
        cost=sum(r["cost"]["amount"] for _, r in reports),
        currency=first["cost"]["currency"],
    )
    job_timing: dict[str, Any] = {}
    for t in timings:
        job_timing.update(t["jobs"])
    report = assemble_report(ordered, info, job_timing)
    report["batchvid_version"] = first["batchvid_version"]
    return report
