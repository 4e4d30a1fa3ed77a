"""Stage two: the manifest's shape, checked against the manifest schema.

Reports every shape error and says which jobs (and which of their keys) cannot be expanded,
and whether nothing can be: errors in ``version``, ``provider`` or ``defaults`` block expansion,
since every job depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchvid.manifest.context import Claims, Context
from batchvid.manifest.messages import Issue, issues, show
from batchvid.yamlload import PathKey

_BLOCKING = (("version",), ("provider",), ("defaults",))

_VERSION_AS_TEXT = (
    "version must be the number 1, not the text {value}; write version: 1 without quotes"
)


@dataclass(frozen=True, slots=True)
class Shape:
    """What the shape check leaves for expansion."""

    bad_keys: dict[int, set[str]] = field(default_factory=dict)
    """Job index -> its keys with errors (an error on the job as a whole counts as one on ``id``)."""
    blocked: bool = False


def check_top_level(context: Context, data: Any) -> bool:
    """Whether the document is a mapping (reported if not: nothing else can be checked)."""
    if isinstance(data, dict):
        return True
    got = "empty" if data is None else show(data)
    context.error(
        context.at(()),
        (),
        f"the top level of a manifest must be a mapping, starting with 'version: 1' (got {got})",
    )
    return False


def check_shape(context: Context, data: dict[str, Any]) -> Shape:
    """Validate ``data`` against the manifest schema, reporting every error."""
    found: list[Issue] = []
    errors = () if context.checks.manifest_ok(data) else context.checks.manifest.iter_errors(data)
    for error in errors:
        found.extend(issues(error, model_near(data, tuple(error.absolute_path))))
    found = _version_first(data, found)
    shape = Shape()
    blocked = False
    for issue in found:
        context.error(context.at(issue.path, key=issue.at_key), issue.path, issue.message)
        blocked = blocked or (issue.path[:1] in _BLOCKING and not _version_as_text(data, issue))
        if len(issue.path) >= 2 and issue.path[0] == "jobs" and isinstance(issue.path[1], int):
            key = str(issue.path[2]) if len(issue.path) > 2 else "id"
            shape.bad_keys.setdefault(issue.path[1], set()).add(key)
    _check_written_ids(context, data, shape)
    _check_poll_interval(context, data)
    return Shape(shape.bad_keys, blocked)


def _check_poll_interval(context: Context, data: dict[str, Any]) -> None:
    """``limits.poll_interval: "MIN:MAX"`` (the schema checks its form) needs 0 < MIN <= MAX,
    as ``--poll-interval`` does: said here, where validate sees it, not first by ``run``."""
    limits = data.get("limits")
    value = limits.get("poll_interval") if isinstance(limits, dict) else None
    if not isinstance(value, str) or value.count(":") != 1:
        return
    try:
        low, high = (float(part) for part in value.split(":"))
    except ValueError:
        return  # not of the schema's form: reported already
    if not 0 < low <= high:
        where: PathKey = ("limits", "poll_interval")
        context.error(context.at(where), where,
                      f"{show(value)}: MIN:MAX needs 0 < MIN <= MAX (seconds between polls)")


def _version_as_text(data: dict[str, Any], issue: Issue) -> bool:
    value = data.get("version")
    return issue.path == ("version",) and isinstance(value, str) and value.strip() == "1"


def _version_first(data: dict[str, Any], found: list[Issue]) -> list[Issue]:
    """An unknown version hides every other error: the file may be in another language version.

    ``version: "1"`` is version 1 written as text: say so, and report the rest.
    """
    if "version" not in data or not any(issue.path[:1] == ("version",) for issue in found):
        return found
    if isinstance(data["version"], str) and data["version"].strip() == "1":
        message = _VERSION_AS_TEXT.format(value=show(data["version"]))
        return [Issue(("version",), message), *(i for i in found if i.path[:1] != ("version",))]
    return [issue for issue in found if issue.path[:1] == ("version",)]


def _check_written_ids(context: Context, data: dict[str, Any], shape: Shape) -> None:
    """Ids must be unique as written, even when their expansions differ."""
    jobs = data.get("jobs")
    ids: Claims[int] = Claims()
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        job_id = job.get("id") if isinstance(job, dict) else None
        first = ids.claim(job_id, index) if isinstance(job_id, str) else None
        if first is not None:
            where: PathKey = ("jobs", index, "id")
            also = context.at(("jobs", first, "id"))
            context.error(context.at(where), where, f"duplicate job id {job_id!r} (also at {also})")
            shape.bad_keys.setdefault(index, set()).add("id")


def model_near(data: Any, path: PathKey) -> str | None:
    """The model in force around ``path`` (for messages): the nearest mapping's, or the default."""
    node: Any = data
    found: str | None = None
    for part in path:
        if isinstance(node, dict) and isinstance(node.get("model"), str):
            found = node["model"]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    if isinstance(node, dict) and isinstance(node.get("model"), str):
        found = node["model"]
    return found
