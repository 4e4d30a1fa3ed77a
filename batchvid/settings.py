"""What a run needs besides the manifest (``Settings``), and the plan those settings make.

Kept apart from ``runner`` so that ``batchvid plan`` and ``build_settings`` do not import the
HTTP stack, the downloader or PyAV to plan a run they will not make.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from batchvid.jobs import Manifest
    from batchvid.journal import JobRecord
    from batchvid.plan import Plan

TransportKind = Literal["aiohttp", "httpx"]


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides the manifest; the CLI builds it from flags and limits."""


    out_dir: Path
    provider: str = "geekai"
    base_url: str | None = None
    api_key: str = ""
    max_in_flight: int = 4
    rpm: float | None = 30.0
    retries: int = 5
    timeout: float = 1800.0
    poll_min: float = 5.0
    poll_max: float = 15.0
    only: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None
    retry_failed: bool = False
    force: bool = False
    re_enhance: bool = False
    """Ask the chat model again for every enhanced job's prompt (and so regenerate it)."""
    max_cost: float | None = None
    strict_media: bool = False
    max_download_bytes: int = 4 << 30
    http_timeout: float = 60.0
    grace: float = 10.0
    """Seconds that downloads under way get to finish after the first SIGINT/SIGTERM. Waiting
    on tasks stops at once: their ids are journaled and the next run re-attaches."""
    handle_signals: bool = False
    manifest_label: str | None = None
    """How report.json names the manifest (the path as the user typed it)."""
    transport: TransportKind = "aiohttp"
    """The HTTP transport under httpx when the runner is given none (``batchvid.transport``)."""


def plan_for(
    manifest: Manifest, settings: Settings, records: Mapping[str, JobRecord], *, remember: bool = False
) -> Plan:
    """The plan of a run with these settings: the same for ``run``, ``run --dry-run`` and
    ``plan``. ``remember``: a run's, holding the directory's lock (``make_plan``)."""
    from batchvid.plan import make_plan

    return make_plan(
        manifest.jobs,
        records,
        settings.out_dir,
        provider=settings.provider,
        pricing=manifest.pricing,
        force=settings.force,
        retry_failed=settings.retry_failed,
        only=settings.only,
        shard=settings.shard,
        re_enhance=settings.re_enhance,
        remember=remember,
    )
