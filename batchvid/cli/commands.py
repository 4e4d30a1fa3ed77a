"""The commands that check, plan and run manifests, and the ones that read an output directory's
report: validate, plan, run, status, verify, merge, simulate, schema."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from batchvid.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_STOPPED,
    append_step_summary,
    build_settings,
    check_sim_flags,
    check_writable,
    load,
    require_api_key,
    simulated,
)
from batchvid.errors import (
    ManifestError,
    ManifestErrors,
    OutputDirError,
    UsageError,
)
from batchvid.gcpause import paused_gc
from batchvid.jobs import Manifest

if TYPE_CHECKING:
    import httpx

    from batchvid.events import Subscriber  # the run's events: not imported to validate or plan

# -- commands ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    errors: list[ManifestError] = []
    jobs = 0
    # The collector stays off until each manifest is dropped: on again right after a load, it
    # would first walk every object of the manifest (a fifth of a 100,000-job validate).
    with paused_gc():
        for path in args.manifests:
            try:
                jobs += len(load(path, args.provider, args.root).jobs)
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
    from batchvid.plantable import plan_table, plan_to_json
    from batchvid.settings import plan_for

    settings = build_settings(args, manifest)
    records = {}
    if settings.out_dir.exists() and not settings.out_dir.is_dir():
        raise OutputDirError(f"{settings.out_dir} is a file; --out names the run's output directory")
    if settings.out_dir.exists():  # else nothing to read: the store (and anyio) not even imported
        from batchvid.store import read_records

        records = read_records(settings.out_dir)
    plan = plan_for(manifest, settings, records)
    with paused_gc():  # a row (or a mapping) per job, all alive until printed
        if getattr(args, "json", False):
            data = plan_to_json(plan, settings.max_in_flight, settings.rpm)
            data["out_dir"] = str(settings.out_dir)
            text = json.dumps(data, indent=2, ensure_ascii=False)
        else:
            text = plan_table(plan, settings.max_in_flight, settings.rpm)
    print(text)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    with paused_gc():  # as for validate: the manifest and the plan live until the command ends
        return _plan(args, load(args.manifest, args.provider, args.root))


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from batchvid.display import JsonLog, ProgressDisplay, ProgressLines, TextLog, run_summary
    from batchvid.eventloop import backend_options
    from batchvid.runner import Runner

    check_sim_flags(args)
    manifest = load(args.manifest, args.provider, args.root)
    if args.dry_run:
        return _plan(args, manifest)
    settings = build_settings(args, manifest)
    check_writable(settings.out_dir)
    transport: httpx.AsyncBaseTransport | None = None
    if args.simulate:
        transport, settings = simulated(
            settings,
            latency=1.0 if args.sim_latency is None else args.sim_latency,
            fault_rate=args.sim_fault_rate or 0.0,
            seed=args.sim_seed or 0,
        )
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
        if not args.no_progress:
            subscribers.append(ProgressLines())
    runner = Runner(manifest, settings, transport=transport, subscribers=subscribers, owns_process=True)
    result = anyio.run(runner.run, backend_options=backend_options(not args.no_uvloop))
    print(run_summary(result.written, str(settings.out_dir)))
    append_step_summary(settings.out_dir / "report.md")
    return result.exit_code


def cmd_enhance(args: argparse.Namespace) -> int:
    import anyio

    """``batchvid enhance`` (docs/enhance.md): rewrite and journal prompts; no video request."""
    from batchvid.display import TextLog
    from batchvid.enhancing import rewrite_summary
    from batchvid.runner import Runner

    manifest = load(args.manifest, args.provider, args.root)
    settings = build_settings(args, manifest)
    check_writable(settings.out_dir)
    transport: httpx.AsyncBaseTransport | None = None
    if args.simulate:
        transport, settings = simulated(settings, latency=1.0, fault_rate=0.0, seed=0)
    else:
        settings = dataclasses.replace(settings, api_key=require_api_key(settings.provider))
    runner = Runner(manifest, settings, transport=transport, subscribers=[TextLog()])
    rows = anyio.run(runner.enhance_only)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2, ensure_ascii=False))
    else:
        print("\n".join([*(row.as_text() for row in rows), rewrite_summary(rows, str(settings.out_dir))]))
    if runner.stopped is not None:  # interrupted, key refused, no balance: as `run`, exit 3
        print(f"batchvid: stopped: {runner.stopped['message']}; the rewrites made are "
              "journaled: run the same command again to resume", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_FAILED if any(row.error for row in rows) else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from batchvid.clean import find_leftovers, last_run_unfinished, writer_running
    from batchvid.display import leftover_lines, status_json, status_text
    from batchvid.jobs import Job
    from batchvid.plan import make_plan
    from batchvid.store import LOCK, STATE_DIR, read_records, read_report

    root = Path(args.out_dir)
    records = read_records(root) if root.is_dir() else {}
    writer = writer_running(root) if root.is_dir() else None
    if not (root / "report.json").exists() and records:
        states = [record.state for record in records.values()]
        if writer is not None:
            raise OutputDirError(
                f"{root} has no report yet: a batchvid run (pid {writer}) is writing it now; its "
                f"journal records {len(records)} jobs so far, {states.count('succeeded')} done. "
                "Its report is written when it ends"
            )
        if states.count("enhanced") == len(states):  # `batchvid enhance` leaves the lock as found
            raise OutputDirError(
                f"{root} has no report yet: its journal holds only prompt rewrites "
                f"({len(records)}, made by `batchvid enhance`); no run has generated a video here. "
                f"`batchvid run MANIFEST --out {root}` sends them and writes the report"
            )
        if (root / STATE_DIR / LOCK).is_file() and last_run_unfinished(root) is None:
            # An empty lock: the last run ended and wrote report.json, removed since.
            raise OutputDirError(
                f"{root} has no report.json: it is missing (the last run ended cleanly and wrote it). "
                f"Its journal records {len(records)} jobs, {states.count('succeeded')} done; run the "
                "same manifest again into it to write report.json again (done jobs are verified "
                f"and skipped, not paid again; `batchvid plan MANIFEST --out {root}` shows what it would do)"
            )
        raise OutputDirError(
            f"{root} has no report yet: the run writing it was killed. "
            f"Its journal records {len(records)} jobs: {states.count('submitted')} submitted "
            f"with a task id and not finished, {states.count('submitting')} with a create "
            "journaled but no answer recorded (sent or not); run the same command again to "
            f"resume (or `batchvid plan MANIFEST --out {root}` to see what it would do)"
        )
    report = read_report(root)
    provider = report["manifest"]["provider"]
    jobs = [
        Job(id=j["id"], key=j["key"], index=j["index"], provider=provider, params=j["parameters"])
        for j in report["jobs"]
    ]
    plan = make_plan(jobs, records, root, provider=provider)
    actions = plan.counts()
    leftovers = find_leftovers(root)
    if args.json:
        print(json.dumps(status_json(report, actions, root, leftovers), indent=2, ensure_ascii=False))
    else:
        print("\n".join([status_text(report, actions, plan, root),
                         *leftover_lines(root, leftovers, "  leftover ")]))
    if writer is not None:
        print(f"note: a batchvid run (pid {writer}) is writing {root} now: report.json is the "
              "previous run's until it ends", file=sys.stderr)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from batchvid.clean import find_leftovers
    from batchvid.display import leftover_lines
    from batchvid.verify import verify_dir

    root = Path(args.out_dir)
    notes: list[str] = []
    problems, checked = verify_dir(root, notes)
    try:
        leftovers = find_leftovers(root)
    except OutputDirError as exc:  # a corrupt journal: the files were still checked; say both
        problems.append(str(exc))
        leftovers = []
    for line in [*(f"note: {note}" for note in notes), *leftover_lines(root, leftovers, "note: leftover ")]:
        print(line)
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
    report = merge_dirs([Path(src) for src in args.sources], into, partial=args.partial)
    append_step_summary(into / "report.md")
    s = report["summary"]
    print(f"merged {len(args.sources)} shard(s) into {into}: {s['total']} jobs, "
          f"{s['succeeded'] + s['skipped']} done, {s['failed']} failed, {s['pending']} pending")
    if report.get("shards"):
        count, missing = report["shards"]["count"], report["shards"]["missing"]
        names = ", ".join(f"{i}/{count}" for i in missing)
        print(f"partial: shard {names} not merged; its jobs are missing from this directory")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from batchvid.simulator import Simulator, config_from_args, serve

    def ready(base_url: str) -> None:
        print(
            f"batchvid simulator on {base_url} (GeekAI at {base_url}/api/v1, BigModel at "
            f"{base_url}/api/paas/v4, stats at {base_url}/_simulator/stats); Ctrl-C stops it",
            flush=True,
        )

    config = config_from_args(args)
    state_dir = Path(args.state_dir) if args.state_dir else None
    if state_dir is not None:
        try:
            (state_dir / "tasks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--state-dir {state_dir}: cannot use it ({exc.strerror})") from exc
    simulator = Simulator(config, state_dir=state_dir)
    try:
        serve(host=args.host, port=args.port, simulator=simulator, on_ready=ready)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


SCHEMAS = ("manifest", "report")


def cmd_schema(args: argparse.Namespace) -> int:
    from batchvid.schemas import load_schema

    if args.which not in SCHEMAS:
        raise UsageError(f"schema: unknown schema {args.which!r}; choose {' or '.join(SCHEMAS)}")
    print(json.dumps(load_schema(args.which), indent=2, ensure_ascii=False))
    return EXIT_OK


