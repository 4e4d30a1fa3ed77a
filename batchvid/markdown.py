"""report.md: the run at a glance for a person or a CI step summary (GitHub Markdown)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batchvid.shorttext import short_message

AGAIN = {"reattach": "re-attached", "download": "downloaded again"}
"""How a succeeded job that this run did not pay for is counted (none of them is "generated")."""


def counted_succeeded(jobs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """The succeeded jobs among (status, action) pairs, split by how the run got them:
    ``generated`` (a create it paid for, or an older report that did not record the action),
    then ``AGAIN``'s words when nonzero."""
    counts = _new_counts()
    for status, action in jobs:
        if status == "succeeded":
            counts[AGAIN.get(action, "generated")] += 1
    return _said(counts)


def _new_counts() -> dict[str, int]:
    return {"generated": 0} | {word: 0 for word in AGAIN.values()}


def _said(counts: dict[str, int]) -> dict[str, int]:
    return {word: n for word, n in counts.items() if n or word == "generated"}


class MarkdownJobs:
    """What report.md shows of the job entries, gathered an entry at a time: the succeeded
    counts, the failed, warned and enhanced jobs (the fields shown of each) and a row per job."""

    def __init__(self) -> None:
        self.counts = _new_counts()
        self.failed: list[Mapping[str, Any]] = []
        self.warned: list[Mapping[str, Any]] = []
        self.enhanced: list[Mapping[str, Any]] = []
        self.rows: list[str] = []

    def add(self, j: Mapping[str, Any]) -> None:
        status = j["status"]
        if status == "succeeded":
            self.counts[AGAIN.get(j.get("action", "submit"), "generated")] += 1
        elif status in ("failed", "pending"):
            self.failed.append({"id": j["id"], "status": status, "error": j["error"]})
        if j["warnings"]:
            self.warned.append({"id": j["id"], "warnings": j["warnings"]})
        if "enhance" in j:
            self.enhanced.append({k: j[k] for k in ("id", "enhance", "prompt", "prompt_original") if k in j})
        self.rows.append(self.row(j))

    def add_rows(self, rows: str, jobs: Iterable[tuple[str, str]]) -> None:
        """``add`` of the entries of succeeded or skipped ``jobs`` (status, action) without
        warnings or an enhanced prompt, whose ``rows`` are known (``reportpieces``: one text,
        a line each)."""
        for status, action in jobs:
            if status == "succeeded":
                self.counts[AGAIN.get(action, "generated")] += 1
        self.rows.append(rows)

    @staticmethod
    def row(j: Mapping[str, Any]) -> str:
        """The "All jobs" table's row of job entry ``j``."""
        sha = j["video"]["sha256"][:12] if j["video"] else ""
        p = j["parameters"]
        return (f"| `{j['id']}` | {j['status']} | {p.get('model')} | {p.get('size', '')} | {sha} "
                f"| {_signals(j.get('quality'))} |")


def render_markdown(report: Mapping[str, Any], jobs: MarkdownJobs | None = None) -> str:
    """report.md, from one pass over the job entries (they may be made as they are read), or
    from ``jobs`` gathered from them already."""
    if jobs is None:
        jobs = MarkdownJobs()
        for j in report["jobs"]:
            jobs.add(j)
    return "\n".join(markdown_lines(report, jobs))


def markdown_lines(report: Mapping[str, Any], jobs: MarkdownJobs) -> list[str]:
    """report.md's lines (joined by newlines, without a last one), ``jobs`` gathered."""
    s = report["summary"]
    manifest = report["manifest"]
    icon = {0: "✅", 1: "❌", 3: "⏸️"}.get(report["exit_code"], "❌")
    lines = [
        f"## {icon} batchvid: {manifest['name']}",
        "",
        f"{s['total']} jobs: "
        + "".join(f"**{n} {w}**, " if w == "generated" else f"{n} {w}, "
                  for w, n in _said(jobs.counts).items())
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
    if jobs.failed:
        lines += ["| job | status | kind | message |", "|---|---|---|---|"]
        for j in jobs.failed:
            err = j["error"] or {}
            message = _cell(short_message(str(err.get("message", ""))))
            lines.append(f"| `{j['id']}` | {j['status']} | {err.get('kind', '')} | {message} |")
        lines.append("")
    if jobs.warned:
        lines += ["Warnings:", ""]
        lines += [f"- `{j['id']}`: {w}" for j in jobs.warned for w in j["warnings"]]
        lines.append("")
    lines += enhance_markdown(report, jobs.enhanced)
    lines += ["<details><summary>All jobs</summary>", "",
              "| job | status | model | size | sha256 | motion · black · frozen |",
              "|---|---|---|---|---|---|"]
    lines += jobs.rows
    lines += ["", "</details>", ""]
    return lines


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
