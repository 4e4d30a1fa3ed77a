"""The argument parser: every subcommand and its options."""

from __future__ import annotations

import argparse
from typing import TypeAlias

from batchvid import __version__

# -- argument parsing -------------------------------------------------------------------------

RUN_EXIT_CODES = """\
exit codes (README.md, "Exit codes"):
  0  every selected job is done (generated now, or already done and verified)
  1  the run finished and at least one job failed; the report says which and why
  2  invalid manifest, invalid arguments, missing API key, or output directory in use or
     not writable: nothing was sent
  3  stopped early and resumable: interrupted, budget reached, out of balance or quota,
     authentication refused mid-run; run the same command again to resume"""


def _run_options(p: argparse.ArgumentParser, *, full: bool) -> None:
    p.add_argument("manifest", help="manifest file (YAML)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/<name>)")
    p.add_argument("--provider", choices=("geekai", "bigmodel"), help="override the manifest's provider")
    p.add_argument("--max-in-flight", type=int, metavar="N", help="tasks submitted and not yet finished (default 4)")
    p.add_argument("--rpm", type=float, metavar="N", help="create requests per minute (default 30; unpaced under --simulate)")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN", help="job ids (glob); repeatable")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (by job key)")
    p.add_argument("--retry-failed", action="store_true", help="try failed jobs again")
    p.add_argument("--force", action="store_true", help="regenerate even what is done (pays again)")
    p.add_argument("--root", metavar="DIR", help="images and prompts files may be anywhere inside DIR")
    p.add_argument("--re-enhance", action="store_true",
                   help="rewrite enhanced jobs' prompts again (and so regenerate them)")
    if not full:
        return
    p.add_argument("--base-url", metavar="URL", help="provider API root (env BATCHVID_BASE_URL)")
    p.add_argument("--simulate", action="store_true", help="use the built-in simulator: no key, no network")
    p.add_argument("--sim-latency", type=float, metavar="S", help="simulated task time (with --simulate; default 1)")
    p.add_argument("--sim-fault-rate", type=float, metavar="P", help="simulated fault rate (with --simulate; default 0)")
    p.add_argument("--sim-seed", type=int, metavar="N", help="simulator seed (with --simulate; default 0)")
    p.add_argument("--retries", type=int, metavar="N", help="retries of a create request that failed for a passing reason (a 429, a 5xx, the network; default 5); polls and downloads retry until --timeout")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="per job, submit to downloaded (default 1800)")
    p.add_argument("--poll-interval", metavar="MIN[:MAX]",
                   help="seconds between polls: start at MIN, back off to MAX "
                        "(default 5:15; 0.2:1 under --simulate)")
    p.add_argument("--max-cost", type=float, metavar="AMOUNT", help="stop submitting before the estimated cost passes AMOUNT (CNY, as `plan` estimates it)")
    p.add_argument("--strict-media", action="store_true", help="fail jobs whose video does not match the request")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (same as `plan`)")
    p.add_argument("--no-progress", action="store_true", help="no progress display (a live bar on a terminal, else a line every 10 s)")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="stderr log format")
    p.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp",
                   help="HTTP transport under httpx (default aiohttp; httpx: httpx's own)")
    p.add_argument("--no-uvloop", action="store_true", help="run on asyncio's own event loop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchvid", description="Declarative batch runner for CogVideoX video generation."
    )
    parser.add_argument("--version", action="version", version=f"batchvid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _manifest_commands(sub)
    _directory_commands(sub)
    _tool_commands(sub)
    return parser


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _manifest_commands(sub: Subparsers) -> None:
    """The commands that take a manifest: validate, plan, run, enhance."""
    p = sub.add_parser("validate", help="check manifests; print every error; nothing is sent")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST")
    p.add_argument("--provider", choices=("geekai", "bigmodel"))
    p.add_argument("--root", metavar="DIR", help="images and prompts files may be anywhere inside DIR")

    p = sub.add_parser("plan", help="what a run would do, job by job, and why; cost and time")
    _run_options(p, full=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("run", help="execute; resumable; writes the output directory",
                       epilog=RUN_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_options(p, full=True)

    p = sub.add_parser("enhance", help="rewrite prompts (enhance:) and journal them; no video is requested")
    _run_options(p, full=False)
    p.add_argument("--base-url", metavar="URL", help="provider API root (env BATCHVID_BASE_URL)")
    p.add_argument("--simulate", action="store_true", help="use the built-in simulator: no key, no network")
    p.add_argument("--retries", type=int, metavar="N", help="retries of a failed chat request")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _directory_commands(sub: Subparsers) -> None:
    """The commands that take an output directory: status, verify, merge, clean, view, export."""
    p = sub.add_parser("status", help="summarise an output directory")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="re-hash every output against the report and lock")
    p.add_argument("out_dir", metavar="OUT_DIR")

    p = sub.add_parser("merge", help="combine shard output directories into one")
    p.add_argument("sources", nargs="+", metavar="DIR")
    p.add_argument("--into", required=True, metavar="OUT")
    p.add_argument("--partial", action="store_true",
                   help="merge an incomplete set of shards (the report says which are in)")

    p = sub.add_parser("clean", help="remove the job folders no job of the manifest owns")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")

    p = sub.add_parser("view", help="write report.html for an output directory and print its URL")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--serve", action="store_true", help="serve the directory on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (0 picks a free one)")

    p = sub.add_parser("export", help="an output directory as a dataset: WebDataset or Parquet, with a card")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--format", choices=("webdataset", "parquet"), required=True)
    p.add_argument("--to", required=True, metavar="DIR", help="a new or empty directory")
    p.add_argument("--shard-size", metavar="N|SIZE", help="samples (1000) or bytes (500MB) per shard; default 1GB")
    p.add_argument("--name", help="shard name prefix (default: the manifest name)")
    p.add_argument("--embed-video", action="store_true", help="parquet: video bytes in a column")
    p.add_argument("--include-failed", action="store_true", help="add failed jobs' rows, without media")
    p.add_argument("--license", help="license id for the card (default: the manifest's license:)")


def _tool_commands(sub: Subparsers) -> None:
    """The simulator and the schemas."""
    p = sub.add_parser("simulate", help="serve the built-in API simulator on loopback")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--latency", type=float, default=2.0, metavar="SECONDS", help="mean task duration")
    p.add_argument("--rpm", type=int, metavar="N", help="server create-request limit per minute")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="server limit of unfinished tasks")
    p.add_argument("--fault-rate", type=float, default=0.0, metavar="P", help="probability of an injected fault")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lost-create-rate", type=float, metavar="P",
                   help="probability that a created task's response is dropped")
    p.add_argument("--video-seconds", type=float, metavar="S", help="length of returned videos")
    p.add_argument("--download-bytes", type=int, metavar="N", help="pad every video to N bytes")
    p.add_argument("--state-dir", metavar="DIR",
                   help="keep tasks in DIR, so a restarted simulator still knows them")

    p = sub.add_parser("schema", help="print a JSON Schema")
    p.add_argument("which", nargs="?", default="manifest", metavar="{manifest,report}")


