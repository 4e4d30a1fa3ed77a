"""``--max-cost``: admit a create only while its price fits, and count what the run created.

A free create (price 0) is always admitted: the budget holds back only what costs. Once a
priced create does not fit, no later priced create is admitted either (the run's order stays
the order it pays in), but free ones still are.

A create's price is committed when the job is admitted; it goes back when the job ends without
having created a task and without a create that may have billed (``billing.keeps_budget_share``),
so the jobs still queued can use it. ``cost`` is report.json's cost: the price of the tasks
this run created.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchvid.billing import keeps_budget_share
from batchvid.jobs import Job


class Budget:
    def __init__(self, limit: float | None, prices: Mapping[str, float], currency: str) -> None:
        self.limit = limit
        self.prices = dict(prices)
        self.currency = currency
        self.committed = 0.0
        """Price of the creates admitted (a job that created nothing gives its share back)."""
        self.cost = 0.0
        """Price of the tasks this run created."""
        self.reached = False
        """A priced create did not fit: only free ones are admitted from now on."""

    def price(self, job: Job) -> float:
        return self.prices.get(job.model, 0.0)

    def admit(self, job: Job) -> str | None:
        """Commit the job's price, or say why it does not fit (None: admitted)."""
        price = self.price(job)
        if self.limit is None or price == 0:
            return None
        if self.reached or self.committed + price > self.limit + 1e-9:
            self.reached = True
            return (
                f"--max-cost {self.limit:g} {self.currency} reached: {job.id} ({job.model}) "
                f"costs {price:g} {self.currency}, {self.committed:g} {self.currency} committed"
            )
        self.committed += price
        return None

    def created(self, job: Job) -> None:
        """A task was created for ``job``: it costs its price."""
        self.cost += self.price(job)

    def settle(self, job: Job, task_id: str | None, error_kind: str | None) -> None:
        """A paying job ended: give its share back unless it created (or may have) a task."""
        if not keeps_budget_share(task_id, error_kind):
            self.committed -= self.price(job)
