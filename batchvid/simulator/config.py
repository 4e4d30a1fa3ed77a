"""The simulator's knobs, and the names of its markers, special keys and faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchvid.errors import UsageError

GEEKAI_PREFIX = "/api/v1"
BIGMODEL_PREFIX = "/api/paas/v4"
FILES_PREFIX = "/files"
CONTROL_PREFIX = "/_simulator"

TRANSIENT_FAULTS = frozenset({"status_500", "status_503", "status_504", "reset"})
"""Faults that can hit any create, poll or download response (create faults come first:
the task is never created when one fires)."""
DOWNLOAD_FAULTS = frozenset({"truncated", "expired_url"})
"""Faults that only hit file downloads."""
TASK_FAULTS = frozenset({"task_fail"})
"""Decided when a task is created: the task later ends in ``FAIL`` / ``failed``."""
DEFAULT_FAULTS = TRANSIENT_FAULTS | DOWNLOAD_FAULTS | TASK_FAULTS
OPTIONAL_FAULTS = frozenset({"overloaded"})
"""Opt-in: a create answered 429 code ``1305`` (BigModel) or 503 (GeekAI), with no task."""
ALL_FAULTS = DEFAULT_FAULTS | OPTIONAL_FAULTS

# Markers in the last user message of a chat completion request.
CHAT_LONG_MARKER = "[long]"
"""The answer is longer than a video prompt may be (over 512 characters)."""
CHAT_EMPTY_MARKER = "[empty]"
"""The answer's content is the empty string."""
CHAT_ERROR_MARKER = "[chat-error]"
"""The request is refused: HTTP 400, BigModel code ``1301`` (content safety), GeekAI 400."""
CHAT_PREAMBLE_MARKER = "[preamble]"
"""The answer is wrapped as ``Here is the enhanced prompt: "..."``."""
CHAT_MARKERS = (CHAT_LONG_MARKER, CHAT_EMPTY_MARKER, CHAT_ERROR_MARKER, CHAT_PREAMBLE_MARKER)

# API keys with a fixed meaning. Any other non-empty key is a healthy account.
KEY_INVALID = "sim-invalid"
"""401: BigModel code ``1002`` (invalid token); GeekAI 401."""
KEY_EXPIRED = "sim-expired"
"""401: BigModel code ``1003`` (token expired); GeekAI 401."""
KEY_ARREARS = "sim-arrears"
"""Creates refused: BigModel 429 code ``1113`` (account in arrears); GeekAI 402."""
KEY_DAILY_QUOTA = "sim-quota-exhausted"
"""Creates refused: BigModel 429 code ``1304`` (daily quota); GeekAI 429."""


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated providers behave. Every field has a harmless default."""

    latency: float = 0.0
    """Mean seconds a task takes; each task draws uniformly from 0.5x to 1.5x of it."""
    rpm: int | None = None
    """Create requests admitted per API key in any sliding 60 s window; beyond it, 429."""
    max_concurrent: int | None = None
    """Tasks not yet terminal per API key; beyond it, creates get 429 (BigModel ``1302``)."""
    fault_rate: float = 0.0
    """Probability that a response carries an injected fault (one of ``faults``)."""
    faults: frozenset[str] = DEFAULT_FAULTS
    """The fault kinds ``fault_rate`` draws from (see ``ALL_FAULTS``)."""
    lost_create_rate: float = 0.0
    """Probability that a create succeeds (the task exists) but its response is lost."""
    seed: int = 0
    """Seeds ids, latencies, faults and video colours."""
    video_seconds: float = 1.0
    """Length of every returned video, unless ``full_duration``."""
    max_side: int = 160
    """Returned videos are scaled down so their longer side is at most this, unless
    ``full_size``; the aspect ratio of the requested ``size`` is kept."""
    full_size: bool = False
    """Render videos at exactly the requested ``size`` (slow for large sizes)."""
    full_duration: bool = False
    """Render ``duration`` seconds for cogvideox-3 (default 5) and 5 s for other models."""
    fail_marker: str = "[fail]"
    """A prompt containing this is accepted, and its task ends in FAIL / failed."""
    unsafe_marker: str = "[unsafe]"
    """A prompt containing this is refused at create with content-safety code 1301."""
    black_marker: str = "[black]"
    """A prompt containing this gets an all-black video."""
    frozen_marker: str = "[frozen]"
    """A prompt containing this gets a video whose frames are all the same (not black)."""
    download_bytes: int | None = None
    """Serve every video padded to this many bytes with a trailing MP4 ``free`` box, so the file
    stays valid; streamed in 1 MiB chunks, never held in memory by the server. (Through
    ``httpx.ASGITransport`` the *client* buffers whole bodies: serve over TCP for big sizes.)
    Ignored when smaller than the video plus 8 bytes."""
    geekai_cover: bool = False
    """Add ``cover_image_url`` to GeekAI results (its documented example has none)."""
    geekai_details: bool = False
    """Add ``duration`` and ``revised_prompt`` to GeekAI results, as the API page's example
    result has them (the CogVideoX page's sample has neither; docs/api-notes.md, 3.1)."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Create bodies larger than this are refused with 413."""

    def __post_init__(self) -> None:
        problems = []
        if self.latency < 0:
            problems.append("latency must be >= 0")
        if self.rpm is not None and self.rpm < 1:
            problems.append("rpm must be >= 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append("max_concurrent must be >= 1")
        for name in ("fault_rate", "lost_create_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be between 0 and 1")
        unknown = set(self.faults) - ALL_FAULTS
        if unknown:
            problems.append(f"unknown fault kinds: {', '.join(sorted(unknown))}")
        if self.video_seconds <= 0:
            problems.append("video_seconds must be > 0")
        if self.max_side < 16:
            problems.append("max_side must be >= 16")
        if self.download_bytes is not None and self.download_bytes < 0:
            problems.append("download_bytes must be >= 0")
        if problems:
            raise UsageError("invalid simulator settings: " + "; ".join(problems))


def config_from_args(args: Any) -> SimulatorConfig:
    """A config from an argparse namespace; attributes that are absent or None keep defaults.

    Reads ``latency``, ``rpm``, ``max_concurrent``, ``fault_rate``, ``lost_create_rate``,
    ``seed``, ``video_seconds`` and ``download_bytes``.
    """
    names = (
        "latency",
        "rpm",
        "max_concurrent",
        "fault_rate",
        "lost_create_rate",
        "seed",
        "video_seconds",
        "download_bytes",
    )
    values = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return SimulatorConfig(**values)
