"""The one billing verdict: every row of its table, and how provider errors reach it."""

from __future__ import annotations

import httpx
import pytest

from batchvid.billing import (
    Verdict,
    answer_of,
    create_verdict,
    keeps_budget_share,
    unanswered_create,
    verdict,
)
from batchvid.errors import JobFatalError, TransientError
from batchvid.providers.base import send

NB, RS, UC = Verdict.NOT_BILLED, Verdict.RESEND, Verdict.UNCONFIRMED

TABLE = [
    # reach, answer, idempotent -> verdict
    ("not_sent", None, True, NB),
    ("not_sent", None, False, NB),
    ("answered", "refusal", True, NB),
    ("answered", "refusal", False, NB),
    ("maybe_delivered", None, True, RS),
    ("maybe_delivered", None, False, UC),
    ("answered", "gateway", True, RS),
    ("answered", "gateway", False, UC),
    ("answered", "unusable", True, UC),
    ("answered", "unusable", False, UC),
    ("answered", "duplicate", True, UC),
    ("answered", "duplicate", False, UC),
]


@pytest.mark.parametrize(("reach", "answer", "idempotent", "expected"), TABLE)
def test_verdict_table(reach: str, answer: str | None, idempotent: bool, expected: Verdict) -> None:
    """Each (reach, answer, idempotency) row gives the verdict the module's table documents."""
    assert verdict(reach, answer, idempotent) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "kind", "answer"),
    [
        (400, "invalid_request", "refusal"),
        (429, "rate_limited", "refusal"),
        (500, "server_error", "refusal"),
        (503, "server_error", "refusal"),
        (502, "server_error", "gateway"),
        (504, "server_error", "gateway"),
        (200, "bad_response", "unusable"),
        (400, "duplicate_request", "duplicate"),
        (None, "network", None),
    ],
)
def test_answer_classes(status: int | None, kind: str, answer: str | None) -> None:
    """Statuses sort into refusal, gateway, unusable 2xx and duplicate."""
    assert answer_of(status, kind) == answer


def test_unanswered_create_resends_only_where_the_provider_refuses_duplicates() -> None:
    """A create a killed run left unanswered is resent on BigModel, kept failed on GeekAI."""
    assert unanswered_create(True) is Verdict.RESEND
    assert unanswered_create(False) is Verdict.UNCONFIRMED


def test_budget_share_is_kept_for_created_or_maybe_billed_jobs() -> None:
    """A task, or a create that may have billed, keeps the job's --max-cost share."""
    assert keeps_budget_share("t1", None)
    assert keeps_budget_share(None, "create_unconfirmed")
    assert keeps_budget_share(None, "bad_response")
    assert keeps_budget_share(None, "duplicate_request")
    assert not keeps_budget_share(None, "content_filter")
    assert not keeps_budget_share(None, "network")


@pytest.mark.parametrize(
    ("error", "reach"),
    [
        (httpx.ConnectError("refused"), "not_sent"),
        (httpx.ConnectTimeout("slow"), "not_sent"),
        (httpx.PoolTimeout("pool"), "not_sent"),
        (httpx.ReadError("reset"), "maybe_delivered"),
        (httpx.ReadTimeout("slow"), "maybe_delivered"),
        (httpx.WriteError("broken"), "maybe_delivered"),
        (httpx.RemoteProtocolError("closed"), "maybe_delivered"),
    ],
)
@pytest.mark.anyio
async def test_send_says_how_far_a_failed_request_got(error: Exception, reach: str) -> None:
    """The httpx boundary turns each transport failure into a network error with its reach."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail), base_url="http://x") as c:
        with pytest.raises(TransientError) as caught:
            await send(c, "POST", "videos/generations", json_body={})
    assert caught.value.kind == "network" and caught.value.reach == reach


def test_create_verdict_reads_the_error() -> None:
    """create_verdict combines an error's reach, status and kind with the provider's idempotency."""
    lost = TransientError("network", "reset", reach="maybe_delivered")
    assert create_verdict(lost, idempotent=False) is Verdict.UNCONFIRMED
    assert create_verdict(lost, idempotent=True) is Verdict.RESEND
    refused = JobFatalError("content_filter", "no", status=400)
    assert create_verdict(refused, idempotent=False) is Verdict.NOT_BILLED
    gateway = TransientError("server_error", "bad gateway", status=502)
    assert create_verdict(gateway, idempotent=False) is Verdict.UNCONFIRMED


def test_a_budget_refusal_names_the_job_and_its_price() -> None:
    """When a priced create does not fit, the reason names the job, its model and price and
    what is committed (it said `--max-cost 0.5 CNY reached (0 CNY committed)`, which reads as
    a contradiction when the first job alone costs more than the budget)."""
    from batchvid.budget import Budget
    from tests.helpers import make_job

    budget = Budget(0.5, {"cogvideox-3": 1.0}, "CNY")
    job = make_job("harbour", model="cogvideox-3")
    assert budget.admit(job) == (
        "--max-cost 0.5 CNY reached: harbour (cogvideox-3) costs 1 CNY, 0 CNY committed")
