"""The plan table's bytes, against a straightforward formatter of the same rows."""

from __future__ import annotations

import random
from pathlib import Path

from batchvid.jobs import Job, JobColumns, JobSequence, PromptParams
from batchvid.plan import Action, NewSteps, Plan, Step, prices_for
from batchvid.plantable import plan_table

HOSTILE = ["", "a", "a-much-longer-value", "灯塔", "café", "e\u0301", "🐇🐇", "\t", " x ", "%s", "%-3s", "{0}", "\\n"]
ACTIONS: list[Action] = ["submit", "reattach", "download", "skip", "keep-failed"]


def reference_table(plan: Plan, max_in_flight: int) -> str:
    """The table as ``%-Ns`` formats it, row by row (the rows, not the totals)."""
    rows = [("JOB", "KEY", "MODEL", "SIZE", "ACTION", "REASON")] + [
        (s.job.id, s.job.key[:12], s.job.model, str(s.job.params.get("size", "(provider default)")), s.action, s.reason)
        for s in plan.steps
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    row_format = "  ".join(f"%-{width}s" for width in widths) + "  %s"
    return "\n".join(row_format % row for row in rows)


def random_plan(rng: random.Random, count: int) -> Plan:
    """``count`` steps whose cells are drawn from hostile values (wide, combining, empty, ``%``)."""
    models = rng.sample(HOSTILE, rng.randint(1, 3))
    sizes = [*rng.sample(HOSTILE, rng.randint(0, 2)), None]
    reasons = rng.sample(HOSTILE, rng.randint(1, 4))
    steps = []
    for i in range(count):
        params = {"model": rng.choice(models), "prompt": "p"}
        size = rng.choice(sizes)
        if size is not None:
            params["size"] = size
        key = rng.choice(["", "k" * rng.randint(0, 20), "0123456789abcdef" * 4, "灯" * 13])
        job = Job(id=rng.choice(HOSTILE) + str(i) * rng.randint(0, 2), key=key, index=i, provider="geekai", params=params)
        steps.append(Step(job, rng.choice(ACTIONS), rng.choice(reasons)))
    return Plan(tuple(steps), prices_for("geekai", {}))


def test_plan_table_rows_equal_a_percent_format_of_each_row(tmp_path: Path) -> None:
    """Over random hostile cells (wide characters, combining marks, empty, ``%``), the table's
    rows are byte for byte those of a ``%-Ns`` format of each row, widths by code points."""
    rng = random.Random(12)
    for trial in range(300):
        plan = random_plan(rng, rng.choice([0, 1, 2, 5, 30]))
        rows = reference_table(plan, 4)
        table = plan_table(plan, 4, None)
        assert table.startswith(rows + "\n\n"), trial
        assert table.count("\n") == rows.count("\n") + 4, trial


def test_plan_table_of_one_model_and_size_pads_them_once() -> None:
    """A column whose every cell is the same value (a prompts file's model) is padded to its
    header's width when the header is wider, as each row's format would."""
    params = {"model": "m", "prompt": "p", "size": "s"}
    steps = tuple(Step(Job(f"j{i}", f"{i:064x}", i, "geekai", params), "submit", "new job") for i in range(3))
    plan = Plan(steps, prices_for("geekai", {}))
    lines = plan_table(plan, 4, None).splitlines()
    assert lines[:2] == [
        "JOB  KEY           MODEL  SIZE  ACTION  REASON",
        "j0   000000000000  m      s     submit  new job",
    ]


def random_new_steps(rng: random.Random, count: int) -> NewSteps:
    """``count`` new jobs kept as columns (``JobColumns``), cells drawn from hostile values,
    the model and size shared by many rows as a prompts file's templates share them."""
    templates = []
    for _ in range(rng.randint(1, 3)):
        template = {"model": rng.choice(HOSTILE), "prompt": "p"}
        if rng.random() < 0.7:
            template["size"] = rng.choice(HOSTILE)
        templates.append(template)
    shared = [rng.choice(templates) for _ in range(count)]
    ids = [rng.choice(HOSTILE) + str(i) for i in range(count)]
    keys = [rng.choice(["", "k" * rng.randint(0, 20), "0123456789abcdef" * 4, "灯" * 13]) for _ in range(count)]
    jobs = JobSequence()
    made = [Job(i, k, n, "geekai", PromptParams(t, "p")) for n, (i, k, t) in enumerate(zip(ids, keys, shared, strict=True))]
    jobs.defer(count, lambda: made, JobColumns(ids, keys, shared, templates, True))
    return NewSteps(jobs, JobColumns(ids, keys, shared, templates, True))


def test_plan_table_of_new_jobs_kept_as_columns_is_the_table_of_their_steps() -> None:
    """The table of new jobs read from their columns (``NewSteps``: no Job or Step made) is
    byte for byte the table of the same steps made one by one, over hostile cells."""
    rng = random.Random(6)
    for trial in range(300):
        steps = random_new_steps(rng, rng.choice([0, 1, 2, 5, 30]))
        table = plan_table(Plan(steps, prices_for("geekai", {})), 4, 30.0)
        assert steps._made is None, trial  # read from the columns alone
        made = Plan(tuple(Step(job, "submit", "new job") for job in steps.jobs), prices_for("geekai", {}))
        assert table == plan_table(made, 4, 30.0), trial
        assert table.startswith(reference_table(made, 4) + "\n\n"), trial
