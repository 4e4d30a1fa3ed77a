"""The command line: the only package that prints or exits.

Parse the arguments into one ``Settings``, build what the command needs, run it, and map the
outcome to an exit code here and nowhere else (see README.md, "Exit codes").

    parser.py    every subcommand and its options
    common.py    exit codes, defaults, flags + ``limits:`` -> ``settings.Settings``
    commands.py  validate, plan, run, status, verify, merge, simulate, schema
    outputs.py   view, export, clean: tools for a finished output directory
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from batchvid.cli.commands import (
    cmd_enhance,
    cmd_merge,
    cmd_plan,
    cmd_run,
    cmd_schema,
    cmd_simulate,
    cmd_status,
    cmd_validate,
    cmd_verify,
)
from batchvid.cli.common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_STOPPED, scrub_keys
from batchvid.cli.outputs import cmd_clean, cmd_export, cmd_view
from batchvid.cli.parser import build_parser
from batchvid.errors import (
    BatchvidError,
    ConfigError,
    ManifestError,
    ManifestErrors,
    OutputDirError,
    UsageError,
)

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "run": cmd_run,
    "enhance": cmd_enhance,
    "status": cmd_status,
    "verify": cmd_verify,
    "merge": cmd_merge,
    "simulate": cmd_simulate,
    "view": cmd_view,
    "export": cmd_export,
    "schema": cmd_schema,
    "clean": cmd_clean,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ManifestErrors as exc:
        for error in exc.errors:
            print(scrub_keys(ManifestError.__str__(error)), file=sys.stderr)
        return EXIT_INVALID
    except (ManifestError, UsageError, ConfigError, OutputDirError) as exc:
        print(scrub_keys(f"batchvid: error: {exc}"), file=sys.stderr)
        return EXIT_INVALID
    except BatchvidError as exc:
        print(scrub_keys(f"batchvid: error: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("batchvid: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        # The reader went away (`batchvid schema | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        # A file the command needed could not be read or written (permissions, a full disk):
        # said in one line, naming the file, rather than as a traceback.
        print(scrub_keys(f"batchvid: error: {exc}"), file=sys.stderr)
        return EXIT_FAILED
