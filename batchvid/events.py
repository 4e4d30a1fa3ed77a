"""What the runner reports as it goes: small frozen values. The progress display, the log and
the tests subscribe; the runner knows nothing of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    total: int
    actions: dict[str, int]


@dataclass(frozen=True, slots=True)
class JobSubmitted(Event):
    job_id: str
    task_id: str


@dataclass(frozen=True, slots=True)
class JobPolled(Event):
    job_id: str
    task_id: str
    status: str


@dataclass(frozen=True, slots=True)
class JobRetrying(Event):
    job_id: str
    step: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class JobDownloaded(Event):
    job_id: str
    bytes: int


@dataclass(frozen=True, slots=True)
class JobFinished(Event):
    job_id: str
    status: str
    error_kind: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RunStopping(Event):
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    exit_code: int
    summary: dict[str, int]


Subscriber = Callable[[Event], None]


@dataclass
class Collector:
    """A subscriber that keeps every event, in order (for tests and embedding programs)."""

    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)
