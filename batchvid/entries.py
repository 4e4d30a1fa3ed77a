"""The journal's entries: one frozen dataclass per ``event`` (``journal.py``'s docstring has
the table of their fields), how a line's object is checked (``check``) and typed
(``entry_from_dict``), and how an entry is spelled as a line (``encode``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

RecordState = Literal["submitting", "refused", "submitted", "succeeded", "failed", "enhanced"]
"""What the journal last said about a job key (the ``event`` of its latest entry)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line."""

    EVENT: ClassVar[RecordState]
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()
    """Fields added after the format was set: left out when None, so other lines keep the
    bytes earlier versions wrote."""
    key: str
    id: str

    def to_dict(self) -> dict[str, Any]:
        """The line's object: ``event`` and the fields, values as they are (not the deep copy
        ``dataclasses.asdict`` makes: the line is encoded at once)."""
        data: dict[str, Any] = {"event": self.EVENT}
        omitted = self.OMITTED_WHEN_NONE
        for name in _FIELD_NAMES[type(self)]:
            value = getattr(self, name)
            if value is not None or name not in omitted:
                data[name] = value
        return data


@dataclass(frozen=True, slots=True)
class Submitting(Entry):
    EVENT: ClassVar[RecordState] = "submitting"
    request_id: str | None = None
    """The idempotency key the create is sent under (None on a provider without one)."""


@dataclass(frozen=True, slots=True)
class Refused(Entry):
    EVENT: ClassVar[RecordState] = "refused"


@dataclass(frozen=True, slots=True)
class Submitted(Entry):
    EVENT: ClassVar[RecordState] = "submitted"
    task_id: str = ""


@dataclass(frozen=True, slots=True)
class Succeeded(Entry):
    EVENT: ClassVar[RecordState] = "succeeded"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("poster", "provided", "stat")
    task_id: str | None = None
    video: dict[str, Any] = field(default_factory=dict)
    cover: dict[str, Any] | None = None
    media: dict[str, Any] | None = None
    poster: dict[str, Any] | None = None
    provided: dict[str, Any] | None = None
    """``revised_prompt`` and ``provider_duration`` when the provider returned them."""
    stat: dict[str, int] | None = None
    """The video file as it was journaled (``durable.file_stat``): a later run that finds it
    unchanged (same size, mtime_ns and inode) skips re-hashing it."""


@dataclass(frozen=True, slots=True)
class Failed(Entry):
    EVENT: ClassVar[RecordState] = "failed"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("video", "media")
    task_id: str | None = None
    error: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] | None = None
    """A paid video the job rejected (``qc_failed``), kept under another name."""
    media: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Enhanced(Entry):
    """The prompt a job's create sends, rewritten by a chat model (``batchvid.enhance``)."""

    EVENT: ClassVar[RecordState] = "enhanced"
    prompt: str = ""
    original: str = ""
    status: str = ""
    """``enhanced``, ``truncated`` or ``fallback``."""
    warning: str | None = None
    model: str = ""
    requests: int = 0
    tokens: int = 0

    def result(self) -> dict[str, Any]:
        """The fields ``EnhanceResult.from_record`` reads."""
        data = self.to_dict()
        del data["event"], data["key"], data["id"]
        return data


ENTRY_TYPES: Mapping[str, type[Entry]] = {
    cls.EVENT: cls for cls in (Submitting, Refused, Submitted, Succeeded, Failed, Enhanced)
}
_FIELD_NAMES: Mapping[type[Entry], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in ENTRY_TYPES.values()
}
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "submitting": (),
    "refused": (),
    "submitted": ("task_id",),
    "succeeded": ("video",),
    "failed": ("error",),
    "enhanced": ("prompt", "original", "status", "model"),
}
"""Fields an entry must carry besides ``key`` and ``id``; the others default."""


def entry_from_dict(data: Mapping[str, Any]) -> Entry:
    """The typed entry of one decoded journal line; ``ValueError``/``KeyError`` when it is not
    one. Fields this version does not know are ignored."""
    check(data)
    event = data["event"]
    known = _FIELDS_BY_EVENT[event]
    return ENTRY_TYPES[event](**{name: value for name, value in data.items() if name in known})


_FIELDS_BY_EVENT: Mapping[str, frozenset[str]] = {
    event: frozenset(f.name for f in fields(cls)) for event, cls in ENTRY_TYPES.items()
}
NEEDED: Mapping[str, tuple[str, ...]] = {event: ("key", "id", *REQUIRED[event]) for event in ENTRY_TYPES}
NEEDED_KEYS: Mapping[Any, frozenset[str]] = {event: frozenset(("event", *names)) for event, names in NEEDED.items()}
UNKNOWN: frozenset[Any] = frozenset({None})
"""What no decoded line's keys (strings) include: the keys needed by an unknown event."""


def check(data: Any) -> None:
    """``ValueError``/``KeyError`` unless ``data`` is a journal entry's object."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    event = data["event"]
    if not isinstance(event, str) or event not in ENTRY_TYPES:
        raise ValueError(f"unknown journal event {event!r}")
    for name in NEEDED[event]:
        if name not in data:
            raise KeyError(name)


def encode(entry: Entry) -> bytes:
    """The journal line of an entry: compact JSON, sorted keys, UTF-8, newline."""
    text = json.dumps(entry.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"
