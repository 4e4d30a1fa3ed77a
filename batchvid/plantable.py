"""``batchvid plan``'s table (a row per job, then the totals) and its ``--json`` form; apart
from ``display`` (which re-exports the table) so that planning imports neither the run's events
nor their printers."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any

from batchvid.jobs import JobColumns, shared_column
from batchvid.plan import NewSteps, Plan


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plan_table(plan: Plan, max_in_flight: int, rpm: float | None) -> str:
    if isinstance(plan.steps, NewSteps):  # new jobs not made yet: their columns as they are
        lines = _new_rows(plan.steps.columns, plan.models())
    else:
        lines = _rows(plan)
    counts = ", ".join(f"{n} {action}" for action, n in plan.counts().items())
    cost = f"{plan.cost:g} {plan.currency}"
    if plan.unpriced:
        cost += f" + unknown price for {', '.join(plan.unpriced)} (set pricing: in the manifest)"
    lines += [
        "",
        f"{len(plan.steps)} jobs: {counts or 'nothing to do'}",
        f"estimated cost: {cost}",
        f"estimated time: about {format_seconds(plan.estimated_seconds(max_in_flight, rpm))} "
        f"at {max_in_flight} in flight"
        + (f" and {rpm:g} creates/min" if rpm else ""),
    ]
    return "\n".join(lines)


def _rows(plan: Plan) -> list[str]:
    """The table's header and a row per step."""
    jobs = list(map(_JOB, plan.steps))
    # Column by column, then row by row, in C-level passes (``map``): a row per job at 100,000
    # jobs. Each cell is left-justified to its column's width (``%-Ns``: by code points), the
    # last column as it is, two spaces apart.
    columns = [
        _cells("JOB", list(map(_ID, jobs))),
        _cells("KEY", list(map(_SHORT_KEY, map(_KEY, jobs)))),
        _cells("MODEL", plan.models(), repeated=True),
        _cells("SIZE", shared_column(jobs, _size), repeated=True),
        _cells("ACTION", list(map(_ACTION, plan.steps)), repeated=True),
        ["REASON", *map(_REASON, plan.steps)],
    ]
    return list(map("  ".join, zip(*columns, strict=True)))


def _new_rows(columns: JobColumns, models: list[str]) -> list[str]:
    """``_rows`` of new jobs (``NewSteps``) from their columns: the same text, each row one
    ``%`` of its id and key (``%-N.12s``: the key's first 12 characters, padded as ``_cells``
    pads them), and of its model and size unless every row has the same."""
    sizes = columns.column(_size)
    widths = [
        max(len("JOB"), max(map(len, columns.ids), default=0)),
        max(len("KEY"), min(12, max(map(len, columns.keys), default=0))),
        max(len("MODEL"), max(map(len, set(models)), default=0)),
        max(len("SIZE"), max(map(len, set(sizes)), default=0)),
    ]
    head = "%-{}s  %-{}.12s  %-{}s  %-{}s  ".format(*widths)
    header = head % ("JOB", "KEY", "MODEL", "SIZE") + "ACTION  REASON"  # ACTION: as wide as "submit"
    if len(set(models)) == 1 and len(set(sizes)) == 1:  # the usual: one model, one size
        same = f"  {models[0].ljust(widths[2])}  {sizes[0].ljust(widths[3])}  submit  new job".replace("%", "%%")
        row = "%-{}s  %-{}.12s".format(*widths) + same
        return [header, *map(row.__mod__, zip(columns.ids, columns.keys, strict=True))]
    row = head + "submit  new job"
    return [header, *map(row.__mod__, zip(columns.ids, columns.keys, models, sizes, strict=True))]


def _cells(header: str, values: list[str], repeated: bool = False) -> list[str]:
    """``header`` and ``values``, each left-justified to the longest: a value that repeats
    (``repeated``: few distinct, as a column of models) justified once, not once per row."""
    if repeated:  # one value in every row (a C-level count of it) or a few
        distinct = {values[0]} if values and values.count(values[0]) == len(values) else set(values)
        width = max(len(header), max(map(len, distinct), default=0))
        padded = {value: value.ljust(width) for value in distinct}
        if len(padded) == 1:
            return [header.ljust(width), *repeat(padded[values[0]], len(values))]
        return [header.ljust(width), *map(padded.__getitem__, values)]
    lengths = list(map(len, values))
    width = max(len(header), max(lengths, default=0))
    if min(lengths, default=width) == width:  # every value as long as the column: as it is
        return [header.ljust(width), *values]
    return [header.ljust(width), *map(str.ljust, values, repeat(width))]


_JOB, _ID, _KEY, _ACTION, _REASON = (attrgetter(name) for name in ("job", "id", "key", "action", "reason"))
_SHORT_KEY = itemgetter(slice(0, 12))  # Job.short_key


def _size(params: Mapping[str, Any]) -> str:
    return str(params.get("size", "(provider default)"))


def plan_to_json(plan: Plan, max_in_flight: int, rpm: float | None) -> dict[str, Any]:
    return {
        "jobs": [
            {
                "id": s.job.id,
                "key": s.job.key,
                "model": s.job.model,
                "size": s.job.params.get("size"),
                "action": s.action,
                "reason": s.reason,
                "price": plan.price(s.job),
                **({"enhance": True} if s.enhance else {}),
            }
            for s in plan.steps
        ],
        "totals": {
            "jobs": len(plan.steps),
            "actions": dict(sorted(plan.counts().items())),
            "cost": round(plan.cost, 4),
            "currency": plan.currency,
            "unpriced_models": plan.unpriced,
            "estimated_seconds": round(plan.estimated_seconds(max_in_flight, rpm), 1),
        },
    }
