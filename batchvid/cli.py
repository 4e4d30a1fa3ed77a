"""The command line: the only module that prints or exits.

Parse the arguments into one ``Settings``, build what the command needs, run it, and map the
outcome to an exit code here and nowhere else (see README.md, "Exit codes").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchvid import __version__
from batchvid.errors import (
    BatchvidError,
    ConfigError,
    ManifestError,
    ManifestErrors,
    OutputDirError,
    UsageError,
)
from batchvid.events import Subscriber
from batchvid.jobs import Manifest

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 0, 1, 2, 3

SIMULATOR_KEY = "simulator-key"
SIMULATED_POLL = (0.2, 1.0)
# docs/providers.md: poll every 5-15 s with jitter. A finished task holds its in-flight slot
# until the next poll, so a longer maximum costs throughput when the cap binds.
DEFAULT_POLL = (5.0, 15.0)


# -- argument parsing -------------------------------------------------------------------------


def _run_options(p: argparse.ArgumentParser, *, full: bool) -> None:
    p.add_argument("manifest", help="manifest file (YAML)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: runs/<name>)")
    p.add_argument("--provider", choices=("geekai", "bigmodel"), help="override the manifest's provider")
    p.add_argument("--max-in-flight", type=int, metavar="N", help="tasks submitted and not yet finished")
    p.add_argument("--rpm", type=float, metavar="N", help="create requests per minute")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN", help="job ids (glob); repeatable")
    p.add_argument("--shard", metavar="I/N", help="run only shard I of N (by job key)")
    p.add_argument("--retry-failed", action="store_true", help="try failed jobs again")
    p.add_argument("--force", action="store_true", help="regenerate even what is done (pays again)")
    p.add_argument("--root", metavar="DIR", help="images and prompts files may be anywhere inside DIR")
    if not full:
        return
    p.add_argument("--base-url", metavar="URL", help="provider API root (env BATCHVID_BASE_URL)")
    p.add_argument("--simulate", action="store_true", help="use the built-in simulator: no key, no network")
    p.add_argument("--sim-latency", type=float, metavar="S", help="simulated task time (with --simulate; default 1)")
    p.add_argument("--sim-fault-rate", type=float, metavar="P", help="simulated fault rate (with --simulate; default 0)")
    p.add_argument("--sim-seed", type=int, metavar="N", help="simulator seed (with --simulate; default 0)")
    p.add_argument("--retries", type=int, metavar="N", help="retries of a failed create request")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="per job, submit to downloaded")
    p.add_argument("--poll-interval", metavar="MIN[:MAX]",
                   help="seconds between polls: start at MIN, back off to MAX (default 5:15)")
    p.add_argument("--max-cost", type=float, metavar="AMOUNT", help="stop submitting past this cost")
    p.add_argument("--strict-media", action="store_true", help="fail jobs whose video does not match the request")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (same as `plan`)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
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

    p = sub.add_parser("validate", help="check manifests; print every error; nothing is sent")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST")
    p.add_argument("--provider", choices=("geekai", "bigmodel"))
    p.add_argument("--root", metavar="DIR", help="images and prompts files may be anywhere inside DIR")

    p = sub.add_parser("plan", help="what a run would do, job by job, and why; cost and time")
    _run_options(p, full=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("run", help="execute; resumable; writes the output directory")
    _run_options(p, full=True)

    p = sub.add_parser("status", help="summarise an output directory")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="re-hash every output against the report and lock")
    p.add_argument("out_dir", metavar="OUT_DIR")

    p = sub.add_parser("merge", help="combine shard output directories into one")
    p.add_argument("sources", nargs="+", metavar="DIR")
    p.add_argument("--into", required=True, metavar="OUT")

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

    p = sub.add_parser("view", help="write report.html for an output directory and print its URL")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--serve", action="store_true", help="serve the directory on 127.0.0.1 until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (0 picks a free one)")

    p = sub.add_parser("schema", help="print a JSON Schema")
    p.add_argument("which", nargs="?", choices=("manifest", "report"), default="manifest")
    return parser


# -- helpers ----------------------------------------------------------------------------------


def _load(path: str, provider: str | None, root: str | None = None) -> Manifest:
    """The manifest at ``path``; its warnings go to stderr before anything else happens."""
    from batchvid.manifest import load_manifest

    manifest = load_manifest(path, provider_override=provider, root=root)
    for warning in manifest.warnings:
        print(warning, file=sys.stderr)
    return manifest


def _poll_interval(value: Any, where: str) -> tuple[float, float]:
    text = str(value)
    try:
        parts = [float(x) for x in text.split(":")]
    except ValueError:
        raise UsageError(f"{where} {text!r}: expected MIN or MIN:MAX seconds") from None
    if (
        len(parts) not in (1, 2)
        or not all(math.isfinite(p) for p in parts)
        or parts[0] <= 0
        or parts[-1] < parts[0]
    ):
        raise UsageError(f"{where} {text!r}: expected MIN or MIN:MAX seconds with 0 < MIN <= MAX")
    low = parts[0]
    high = parts[1] if len(parts) == 2 else low
    return low, high


def _number(
    args: argparse.Namespace,
    flag: str,
    limits: dict[str, Any],
    key: str,
    default: float | None,
    *,
    minimum: float,
    inclusive: bool,
) -> float | None:
    """A run setting from its flag, else from ``limits:``, else the default; finite and in
    range wherever it came from (NaN would silently switch a check off)."""
    value = getattr(args, flag, None)
    where = "--" + flag.replace("_", "-")
    if value is None:
        value = limits.get(key, default)
        where = f"limits.{key}"
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise UsageError(f"{where} {value!r}: expected a finite number {bound}")
    return number


def _base_url(args: argparse.Namespace) -> str | None:
    value = getattr(args, "base_url", None)
    where = "--base-url"
    if not value:
        value = os.environ.get("BATCHVID_BASE_URL") or None
        where = "BATCHVID_BASE_URL"
    if value is None:
        return None
    import httpx

    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"{where} {value!r}: expected an http(s) URL such as https://geekai.co/api/v1")
    return str(value)


def build_settings(args: argparse.Namespace, manifest: Manifest) -> Any:
    from batchvid.jobs import select_jobs
    from batchvid.plan import parse_shard
    from batchvid.runner import Settings

    limits = dict(manifest.limits)
    out = Path(args.out) if args.out else Path("runs") / manifest.name
    simulate = bool(getattr(args, "simulate", False))
    poll_flag = getattr(args, "poll_interval", None)
    if poll_flag is not None:
        poll = _poll_interval(poll_flag, "--poll-interval")
    elif limits.get("poll_interval") is not None:
        poll = _poll_interval(limits["poll_interval"], "limits.poll_interval")
    else:
        poll = SIMULATED_POLL if simulate else DEFAULT_POLL
    max_in_flight = _number(args, "max_in_flight", limits, "max_in_flight", 4, minimum=1, inclusive=True)
    retries = _number(args, "retries", limits, "retries", 5, minimum=0, inclusive=True)
    if not float(max_in_flight or 0).is_integer() or not float(retries or 0).is_integer():
        raise UsageError("--max-in-flight and --retries take whole numbers")
    rpm = _number(args, "rpm", limits, "requests_per_minute", 30.0, minimum=0, inclusive=False)
    timeout = _number(args, "timeout", limits, "timeout", 1800.0, minimum=0, inclusive=False)
    max_cost = _number(args, "max_cost", limits, "max_cost", None, minimum=0, inclusive=True)
    select_jobs(manifest.jobs, args.only)  # a pattern that selects nothing is an error
    assert max_in_flight is not None and retries is not None and timeout is not None
    return Settings(
        out_dir=out,
        provider=manifest.provider,
        base_url=_base_url(args),
        max_in_flight=int(max_in_flight),
        rpm=rpm,
        retries=int(retries),
        timeout=timeout,
        poll_min=poll[0],
        poll_max=poll[1],
        only=tuple(args.only),
        shard=parse_shard(args.shard) if args.shard else None,
        retry_failed=args.retry_failed,
        force=args.force,
        max_cost=max_cost,
        strict_media=bool(getattr(args, "strict_media", False)),
        handle_signals=True,
        manifest_label=args.manifest,
    )


def api_key(provider: str) -> str | None:
    """The provider's key from the first of its environment variables that is set."""
    from batchvid.providers import get_provider

    for name in get_provider(provider).key_env_vars:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def require_api_key(provider: str) -> str:
    from batchvid.providers import get_provider

    key = api_key(provider)
    if key is None:
        names = " or ".join(get_provider(provider).key_env_vars)
        raise ConfigError(
            f"no API key for provider {provider!r}: set {names} in the environment "
            "(or try the simulator with --simulate)"
        )
    return key


# -- commands ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    errors: list[ManifestError] = []
    jobs = 0
    for path in args.manifests:
        try:
            jobs += len(_load(path, args.provider, args.root).jobs)
        except ManifestErrors as exc:
            errors.extend(exc.errors)
        except ManifestError as exc:
            errors.append(exc)
    for error in errors:
        print(ManifestError.__str__(error), file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in {len(args.manifests)} manifest(s)", file=sys.stderr)
        return EXIT_INVALID
    print(f"ok: {len(args.manifests)} manifest(s), {jobs} jobs")
    return EXIT_OK


def _plan(args: argparse.Namespace, manifest: Manifest) -> int:
    from batchvid.display import plan_table
    from batchvid.plan import plan_to_json
    from batchvid.runner import plan_for
    from batchvid.store import read_records

    settings = build_settings(args, manifest)
    records = read_records(settings.out_dir) if settings.out_dir.exists() else {}
    plan = plan_for(manifest, settings, records)
    if getattr(args, "json", False):
        data = plan_to_json(plan, settings.max_in_flight, settings.rpm)
        data["out_dir"] = str(settings.out_dir)
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(plan_table(plan, settings.max_in_flight, settings.rpm))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    return _plan(args, _load(args.manifest, args.provider, args.root))


def _check_sim_flags(args: argparse.Namespace) -> None:
    """``--sim-*`` flags mean nothing without ``--simulate``: refuse them rather than ignore them."""
    given = [f"--{n.replace('_', '-')}" for n in ("sim_latency", "sim_fault_rate", "sim_seed") if getattr(args, n) is not None]
    if given and not args.simulate:
        them = "it" if len(given) == 1 else "them"
        raise UsageError(f"{', '.join(given)}: only used with --simulate; add --simulate or drop {them}")


def cmd_run(args: argparse.Namespace) -> int:
    from batchvid.display import JsonLog, ProgressDisplay, TextLog, run_summary
    from batchvid.runner import Runner
    from batchvid.transport import backend_options

    _check_sim_flags(args)
    manifest = _load(args.manifest, args.provider, args.root)
    if args.dry_run:
        return _plan(args, manifest)
    settings = build_settings(args, manifest)
    import httpx

    transport: httpx.AsyncBaseTransport | None = None
    if args.simulate:
        from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig

        sim = Simulator(
            SimulatorConfig(
                latency=1.0 if args.sim_latency is None else args.sim_latency,
                fault_rate=args.sim_fault_rate or 0.0,
                seed=args.sim_seed or 0,
            ),
            state_dir=settings.out_dir / ".batchvid" / "simulator",  # tasks survive a rerun
        )
        transport = httpx.ASGITransport(app=sim.app)
        prefix = GEEKAI_PREFIX if settings.provider == "geekai" else BIGMODEL_PREFIX
        key = api_key(settings.provider) or SIMULATOR_KEY
        settings = dataclasses.replace(settings, base_url=f"http://simulator{prefix}", api_key=key)
    else:
        settings = dataclasses.replace(settings, api_key=require_api_key(settings.provider))
        settings = dataclasses.replace(settings, transport=args.transport)
    subscribers: list[Subscriber] = []
    if args.log_format == "json":
        subscribers.append(JsonLog())
    elif not args.no_progress and sys.stderr.isatty():
        subscribers.append(ProgressDisplay())
    else:
        subscribers.append(TextLog())
    runner = Runner(manifest, settings, transport=transport, subscribers=subscribers)
    import anyio

    result = anyio.run(runner.run, backend_options=backend_options(not args.no_uvloop))
    print(run_summary(result.report, str(settings.out_dir)))
    _append_step_summary(settings.out_dir / "report.md")
    return result.exit_code


def _append_step_summary(report_md: Path) -> None:
    """In GitHub Actions, add report.md to the job's step summary."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or not report_md.exists():
        return
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(report_md.read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"batchvid: warning: cannot append to GITHUB_STEP_SUMMARY: {exc}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from batchvid.display import status_text
    from batchvid.jobs import Job
    from batchvid.plan import make_plan
    from batchvid.store import read_records, read_report

    root = Path(args.out_dir)
    records = read_records(root) if root.is_dir() else {}
    if not (root / "report.json").exists() and records:
        in_flight = sum(1 for r in records.values() if r.state in ("submitting", "submitted"))
        raise OutputDirError(
            f"{root} has no report yet: the run writing it was killed or is still running. "
            f"Its journal records {len(records)} jobs, {in_flight} of them submitted and not "
            "finished; run the same command again to resume (or `batchvid plan MANIFEST "
            f"--out {root}` to see what it would do)"
        )
    report = read_report(root)
    provider = report["manifest"]["provider"]
    jobs = [
        Job(id=j["id"], key=j["key"], index=j["index"], provider=provider, params=j["parameters"])
        for j in report["jobs"]
    ]
    plan = make_plan(jobs, records, root, provider=provider)
    actions = plan.counts()
    if args.json:
        print(json.dumps({"summary": report["summary"], "stopped": report["stopped"],
                          "rerun": actions,
                          "problems": [{"id": j["id"], "status": j["status"], "error": j["error"]}
                                       for j in report["jobs"] if j["status"] in ("failed", "pending")]},
                         indent=2, ensure_ascii=False))
    else:
        print(status_text(report, actions))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from batchvid.verify import verify_dir

    problems, checked = verify_dir(Path(args.out_dir))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {checked} file(s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"ok: {checked} file(s) match report.json and batchvid.lock")
    return EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from batchvid.merge import merge_dirs

    into = Path(args.into)
    if any(Path(src).resolve() == into.resolve() for src in args.sources):
        raise UsageError("--into must be a new directory, not one of the shards")
    report = merge_dirs([Path(src) for src in args.sources], into)
    _append_step_summary(into / "report.md")
    s = report["summary"]
    print(f"merged {len(args.sources)} shard(s) into {into}: {s['total']} jobs, "
          f"{s['succeeded'] + s['skipped']} done, {s['failed']} failed, {s['pending']} pending")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from batchvid.simulator import config_from_args, serve

    def ready(base_url: str) -> None:
        print(
            f"batchvid simulator on {base_url} (GeekAI at {base_url}/api/v1, BigModel at "
            f"{base_url}/api/paas/v4, stats at {base_url}/_simulator/stats); Ctrl-C stops it",
            flush=True,
        )

    try:
        serve(config_from_args(args), host=args.host, port=args.port, on_ready=ready)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_view(args: argparse.Namespace) -> int:
    import functools
    import http.server

    from batchvid.gallery import write_gallery
    from batchvid.store import read_report

    root = Path(args.out_dir)
    page = write_gallery(root, read_report(root))
    if not args.serve:
        print(page.resolve().as_uri())
        return EXIT_OK
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as exc:
        raise UsageError(f"--port {args.port}: cannot listen on 127.0.0.1 ({exc.strerror})") from exc
    with server:
        print(f"serving {root} at http://127.0.0.1:{server.server_port}/{page.name}; Ctrl-C stops",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from batchvid.schemas import load_schema

    print(json.dumps(load_schema(args.which), indent=2, ensure_ascii=False))
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "run": cmd_run,
    "status": cmd_status,
    "verify": cmd_verify,
    "merge": cmd_merge,
    "simulate": cmd_simulate,
    "view": cmd_view,
    "schema": cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ManifestErrors as exc:
        for error in exc.errors:
            print(ManifestError.__str__(error), file=sys.stderr)
        return EXIT_INVALID
    except (ManifestError, UsageError, ConfigError, OutputDirError) as exc:
        print(f"batchvid: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except BatchvidError as exc:
        print(f"batchvid: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("batchvid: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        # The reader went away (`batchvid schema | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
