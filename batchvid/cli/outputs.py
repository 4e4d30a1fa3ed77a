"""The commands that work on a finished output directory: view (report.html), export (a
dataset) and clean (leftovers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from batchvid.cli.common import EXIT_OK
from batchvid.errors import OutputDirError, UsageError


def cmd_view(args: argparse.Namespace) -> int:
    from batchvid.export import unfinished
    from batchvid.gallery import write_gallery
    from batchvid.serving import make_server
    from batchvid.store import read_report

    root = Path(args.out_dir)
    try:
        report = read_report(root)
    except OutputDirError as exc:
        why = unfinished(root)
        if why is None:
            raise
        raise OutputDirError(f"{root} has no report.json yet: {why}") from exc
    try:
        page = write_gallery(root, report, make_posters=True)
    except OSError as exc:
        raise OutputDirError(
            f"{root}: cannot write report.html or a poster there ({exc.strerror}: "
            f"{exc.filename}); `batchvid view` writes into the output directory: make it "
            "writable, or view a copy"
        ) from exc
    if not args.serve:
        print(page.resolve().as_uri())
        return EXIT_OK
    try:
        server = make_server(root, args.port)
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


def cmd_export(args: argparse.Namespace) -> int:
    from batchvid.export import ExportOptions, export, parse_shard_size

    samples, size = parse_shard_size(args.shard_size) if args.shard_size else (None, None)
    if args.embed_video and args.format != "parquet":
        raise UsageError("--embed-video: only with --format parquet")
    options = ExportOptions(
        format=args.format, to=Path(args.to), name=args.name, shard_samples=samples,
        shard_bytes=size, embed_video=args.embed_video, include_failed=args.include_failed,
        license=args.license,
    )
    summary = export(Path(args.out_dir), options)
    print(f"exported {summary['samples']} clip(s) as {args.format} into {args.to} "
          f"({len(summary['files'])} files, hashes in SHA256SUMS)")
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from batchvid.clean import clean

    root = Path(args.out_dir)
    leftovers = clean(root, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for leftover in leftovers:
        print(f"{verb} {leftover.describe(root)}")
    total = sum(leftover.bytes for leftover in leftovers)
    print(f"{verb} {len(leftovers)} leftover(s), {total} bytes")
    return EXIT_OK


