"""What the commands share: exit codes, defaults, loading a manifest, and turning flags and
a manifest's ``limits:`` into one ``settings.Settings``."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchvid.errors import (
    ConfigError,
    UsageError,
)
from batchvid.jobs import Manifest

if TYPE_CHECKING:
    import httpx

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 0, 1, 2, 3

SIMULATOR_KEY = "simulator-key"
SIMULATED_POLL = (0.2, 1.0)
# docs/providers.md: poll every 5-15 s with jitter. A finished task holds its in-flight slot
# until the next poll, so a longer maximum costs throughput when the cap binds.
DEFAULT_POLL = (5.0, 15.0)
DEFAULT_RPM = 30.0


# -- helpers ----------------------------------------------------------------------------------


def load(path: str, provider: str | None, root: str | None = None) -> Manifest:
    """The manifest at ``path``; its warnings go to stderr before anything else happens."""
    from batchvid.manifest import load_manifest

    manifest = load_manifest(path, provider_override=provider, root=root)
    for warning in manifest.warnings:
        print(warning, file=sys.stderr)
    return manifest


def poll_interval(value: Any, where: str) -> tuple[float, float]:
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


def _base_url(args: argparse.Namespace, provider: str) -> str | None:
    value = getattr(args, "base_url", None)
    where = "--base-url"
    if not value:
        value = os.environ.get("BATCHVID_BASE_URL") or None
        where = "BATCHVID_BASE_URL"
    if value is None:
        return None
    from urllib.parse import urlsplit

    from batchvid.providerinfo import check_base_url

    try:
        credentials = "@" in urlsplit(str(value)).netloc
    except ValueError:
        credentials = False  # check_base_url says what is wrong with it
    if credentials:  # said without the URL: what precedes the @ may be a key
        raise UsageError(
            f"{where}: a user name or password in the URL is not supported; give the API root "
            "alone (such as https://geekai.co/api/v1) and the key in the provider's environment "
            "variable"
        )
    check_base_url(value, provider, where)
    return str(value)


def build_settings(args: argparse.Namespace, manifest: Manifest) -> Any:
    from batchvid.jobs import select_jobs
    from batchvid.selection import parse_shard
    from batchvid.settings import Settings

    limits = dict(manifest.limits)
    out = Path(args.out) if args.out else Path("runs") / manifest.name
    simulate = bool(getattr(args, "simulate", False))
    poll_flag = getattr(args, "poll_interval", None)
    if poll_flag is not None:
        poll = poll_interval(poll_flag, "--poll-interval")
    elif limits.get("poll_interval") is not None:
        poll = poll_interval(limits["poll_interval"], "limits.poll_interval")
    else:
        poll = SIMULATED_POLL if simulate else DEFAULT_POLL
    max_in_flight = _number(args, "max_in_flight", limits, "max_in_flight", 4, minimum=1, inclusive=True)
    retries = _number(args, "retries", limits, "retries", 5, minimum=0, inclusive=True)
    if not float(max_in_flight or 0).is_integer() or not float(retries or 0).is_integer():
        raise UsageError("--max-in-flight and --retries take whole numbers")
    # The 30-per-minute default is meant for the real services; the simulator is not paced by
    # it unless --rpm or limits.requests_per_minute asks.
    default_rpm = None if simulate else DEFAULT_RPM
    rpm = _number(args, "rpm", limits, "requests_per_minute", default_rpm, minimum=0, inclusive=False)
    timeout = _number(args, "timeout", limits, "timeout", 1800.0, minimum=0, inclusive=False)
    max_cost = _number(args, "max_cost", limits, "max_cost", None, minimum=0, inclusive=True)
    if args.only:  # a pattern that selects nothing is an error (none: every job, not made here)
        select_jobs(manifest.jobs, args.only)
    assert max_in_flight is not None and retries is not None and timeout is not None
    return Settings(
        out_dir=out,
        provider=manifest.provider,
        base_url=_base_url(args, manifest.provider),
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
        re_enhance=bool(getattr(args, "re_enhance", False)),
        max_cost=max_cost,
        strict_media=bool(getattr(args, "strict_media", False)),
        handle_signals=True,
        manifest_label=args.manifest,
    )


def api_key(provider: str) -> str | None:
    """The provider's key from the first of its environment variables that is set."""
    from batchvid.providerinfo import key_variables

    for name in key_variables(provider):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def scrub_keys(text: str) -> str:
    """``text`` with the value of every provider's key variable blanked out: an error message
    may quote what a user typed (a URL, a path) with a key in it."""
    from batchvid.providerinfo import KEY_VARIABLES

    for names in KEY_VARIABLES.values():
        for name in names:
            value = os.environ.get(name, "").strip()
            if len(value) >= 4 and value in text:
                text = text.replace(value, "[REDACTED]")
    return text


def check_writable(out: Path) -> None:
    """Refuse (exit 2, before anything is sent) an output directory whose existing parts a run
    must write and cannot: a read-only directory, a lock or journal file without write
    permission."""
    from batchvid.errors import OutputDirError
    from batchvid.store import JOURNAL, LOCK, STATE_DIR

    state = out / STATE_DIR
    for path in (out, state, out / "jobs", state / LOCK, state / JOURNAL):
        if path.exists() and not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
            raise OutputDirError(
                f"{path} is not writable: a run must write there (its lock, journal and "
                "files); fix its permissions or choose another --out"
            )


def require_api_key(provider: str) -> str:
    from batchvid.providerinfo import key_variables

    key = api_key(provider)
    if key is None:
        names = " or ".join(key_variables(provider))
        raise ConfigError(
            f"no API key for provider {provider!r}: set {names} in the environment "
            "(or try the simulator with --simulate)"
        )
    return key



def check_sim_flags(args: argparse.Namespace) -> None:
    """``--sim-*`` flags mean nothing without ``--simulate``: refuse them rather than ignore them."""
    given = [f"--{n.replace('_', '-')}" for n in ("sim_latency", "sim_fault_rate", "sim_seed") if getattr(args, n) is not None]
    if given and not args.simulate:
        them = "it" if len(given) == 1 else "them"
        raise UsageError(f"{', '.join(given)}: only used with --simulate; add --simulate or drop {them}")
    latency, rate = args.sim_latency, args.sim_fault_rate
    if latency is not None and not (math.isfinite(latency) and latency >= 0):
        raise UsageError(f"--sim-latency {latency:g}: expected seconds, a finite number >= 0")
    if rate is not None and not 0 <= rate <= 1:
        raise UsageError(f"--sim-fault-rate {rate:g}: expected a probability from 0 to 1")



def append_step_summary(report_md: Path) -> None:
    """In GitHub Actions, add report.md to the job's step summary."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target or not report_md.exists():
        return
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(report_md.read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"batchvid: warning: cannot append to GITHUB_STEP_SUMMARY: {exc}", file=sys.stderr)




def simulated(settings: Any, *, latency: float, fault_rate: float, seed: int) -> tuple[httpx.AsyncBaseTransport, Any]:
    """The in-process simulator's transport, and ``settings`` pointed at it. Its tasks live in
    the output directory, so a rerun re-attaches to them as it would against a server."""
    import httpx

    from batchvid.simulator import BIGMODEL_PREFIX, GEEKAI_PREFIX, Simulator, SimulatorConfig

    sim = Simulator(
        SimulatorConfig(latency=latency, fault_rate=fault_rate, seed=seed),
        state_dir=settings.out_dir / ".batchvid" / "simulator",
    )
    prefix = GEEKAI_PREFIX if settings.provider == "geekai" else BIGMODEL_PREFIX
    key = api_key(settings.provider) or SIMULATOR_KEY
    pointed = dataclasses.replace(settings, base_url=f"http://simulator{prefix}", api_key=key)
    return httpx.ASGITransport(app=sim.app), pointed
