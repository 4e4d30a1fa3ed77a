"""`batchvid merge`: combine shard output directories into the directory one run would write."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchvid.errors import OutputDirError
from batchvid.report import RunInfo, assemble_report, write_report_files
from batchvid.store import STATE_DIR, OutputDir, verify_file


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputDirError(f"{path} not found: is {path.parent} a batchvid output directory?") from None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise OutputDirError(f"{path} is not a JSON object")
    return data


def merge_dirs(sources: Sequence[Path], into: Path) -> dict[str, Any]:
    """Copy every shard's job files into ``into`` and write one report, lock and index.

    Shards must come from the same manifest and provider; a job present in two shards must have
    the same key and the same video hash there. The merged directory is resumable like any other:
    its journal is the concatenation of the shards'.
    """
    reports = [(src, _read_json(src / "report.json")) for src in sources]
    first = reports[0][1]
    for src, report in reports[1:]:
        if report["manifest"] != first["manifest"]:
            raise OutputDirError(
                f"{src} was written for {report['manifest']}, not {first['manifest']}: "
                "merge only shards of one manifest"
            )
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
    ordered = sorted(jobs.values(), key=lambda j: j["index"])
    out = OutputDir(into)
    out.open()
    try:
        for job in ordered:
            src = owners[job["id"]]
            for entry in (job.get("video"), job.get("cover")):
                if entry and verify_file(src / entry["path"], entry) is not None:
                    raise OutputDirError(f"{src / entry['path']} does not match its report; run verify")
            job_dir = src / "jobs" / job["id"]
            if job_dir.is_dir():
                shutil.copytree(job_dir, into / "jobs" / job["id"], dirs_exist_ok=True)
        for src, _ in reports:
            journal = src / STATE_DIR / "journal.jsonl"
            if journal.exists():
                for line in journal.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        out.journal.append(json.loads(line))
        rows: list[dict[str, Any]] = []
        lock_jobs: dict[str, Any] = {}
        for src, _ in reports:
            for line in (src / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    if owners.get(row["id"]) == src:
                        rows.append(row)
            lock = _read_json(src / "batchvid.lock")
            lock_jobs.update({k: v for k, v in lock["jobs"].items() if owners.get(k) == src})
        index = {j["id"]: j["index"] for j in ordered}
        rows.sort(key=lambda r: index[r["id"]])
        statuses = {j["status"] for j in ordered}
        stopped = next((r["stopped"] for _, r in reports if r["stopped"]), None)
        exit_code = 3 if stopped or "pending" in statuses else 1 if "failed" in statuses else 0
        timings = [r["timing"] for _, r in reports]
        info = RunInfo(
            manifest=first["manifest"]["path"],
            name=first["manifest"]["name"],
            provider=first["manifest"]["provider"],
            exit_code=exit_code,
            stopped=stopped,
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
        lock_data = {
            "lock_version": 1,
            "manifest": info.name,
            "provider": info.provider,
            "jobs": lock_jobs,
        }
        write_report_files(into, report, rows, lock_data)
    finally:
        out.close()
    return report
