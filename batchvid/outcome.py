"""``Outcome``: how one job ended in a run, the data of its line in the report.

A run holds one per job (100,000 of them for a large manifest). A finished job's files records
(video, cover, media with its quality signals, poster, what the provider said) are most of a
job's memory as dicts, ~2.6 KB; ``pack`` keeps them as one compact JSON text instead (~0.7 KB),
decoded again where the report files are written (``files``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from batchvid.jobs import Job

Status = Literal["succeeded", "skipped", "failed", "pending"]

Files = tuple[
    dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]
]
"""video, cover, media, poster, provided."""

_PACK = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Outcome:
    """How one job ended in this run.

    ``video``: {path, sha256, bytes}, path relative to the output directory; ``cover``,
    ``poster`` (``poster.jpg``, the first frame) likewise; ``media``: the probe and its
    ``quality`` signals; ``error``: {kind, message} for failed and pending jobs; ``enhance``: the
    prompt's rewrite (``EnhanceResult.record``) for an enhanced job; ``provided``: what the
    provider said beside the video (``revised_prompt``, ``provider_duration``).
    """

    __slots__ = ("_files", "action", "attempts", "enhance", "error", "job", "seconds", "status",
                 "task_id", "warnings")

    def __init__(
        self,
        job: Job,
        status: Status,
        action: str,
        task_id: str | None = None,
        video: dict[str, Any] | None = None,
        cover: dict[str, Any] | None = None,
        media: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        warnings: list[str] | None = None,
        attempts: int = 0,
        seconds: float | None = None,
        enhance: dict[str, Any] | None = None,
        poster: dict[str, Any] | None = None,
        provided: dict[str, Any] | None = None,
    ) -> None:
        self.job = job
        self.status = status
        self.action = action
        self.task_id = task_id
        self.error = error
        self.warnings = [] if warnings is None else warnings
        self.attempts = attempts
        self.seconds = seconds
        self.enhance = enhance
        self._files: Files | bytes = (video, cover, media, poster, {} if provided is None else provided)

    def files(self) -> Files:
        """video, cover, media, poster and provided (decoded once when packed)."""
        files = self._files
        if type(files) is bytes:
            video, cover, media, poster, provided = json.loads(files)
            return video, cover, media, poster, provided
        return files  # type: ignore[return-value]

    def pack(self) -> None:
        """Keep the files records as one compact JSON text (they read back equal)."""
        if type(self._files) is not bytes:
            self._files = _PACK(self._files).encode("utf-8")

    @property
    def packed(self) -> bool:
        return type(self._files) is bytes

    def _set(self, position: int, value: Any) -> None:
        files = list(self.files())
        files[position] = value
        self._files = (files[0], files[1], files[2], files[3], files[4] if files[4] is not None else {})

    @property
    def video(self) -> dict[str, Any] | None:
        return self.files()[0]

    @video.setter
    def video(self, value: dict[str, Any] | None) -> None:
        self._set(0, value)

    @property
    def cover(self) -> dict[str, Any] | None:
        return self.files()[1]

    @cover.setter
    def cover(self, value: dict[str, Any] | None) -> None:
        self._set(1, value)

    @property
    def media(self) -> dict[str, Any] | None:
        return self.files()[2]

    @media.setter
    def media(self, value: dict[str, Any] | None) -> None:
        self._set(2, value)

    @property
    def poster(self) -> dict[str, Any] | None:
        return self.files()[3]

    @poster.setter
    def poster(self, value: dict[str, Any] | None) -> None:
        self._set(3, value)

    @property
    def provided(self) -> dict[str, Any]:
        return self.files()[4]

    @provided.setter
    def provided(self, value: dict[str, Any]) -> None:
        self._set(4, value)

    def _fields(self) -> tuple[Any, ...]:
        return (self.job, self.status, self.action, self.task_id, *self.files(), self.error,
                self.warnings, self.attempts, self.seconds, self.enhance)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it was

    def __repr__(self) -> str:
        return (f"Outcome(job={self.job.id!r}, status={self.status!r}, action={self.action!r}, "
                f"task_id={self.task_id!r}, error={self.error!r})")
