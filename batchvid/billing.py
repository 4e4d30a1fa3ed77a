"""One billing verdict: could this failed create have made (and billed) a task?

The provider layer says how far a request got (``ProviderError.reach``, set once where httpx
errors are translated, in ``providers.base.send``):

- ``not_sent``: the connection never opened; the provider saw nothing;
- ``maybe_delivered``: the connection broke after the request may have left;
- ``answered``: the provider answered (an HTTP status, perhaps a business code).

``answer_of`` sorts an answer into ``refusal`` (4xx, 429, 500, 503: nothing was created),
``gateway`` (502, 504: a gateway answered; the provider behind it may have created the task),
``unusable`` (a 2xx without a readable task id: a task may exist) and ``duplicate`` (BigModel
1231: a task under this request_id exists already). ``verdict`` maps that, and whether the
provider refuses a repeated create by its idempotency key, to what batchvid does:

=================  ===========  ==========  ==============================================
reach              answer       idempotent  verdict
=================  ===========  ==========  ==============================================
not_sent           --           any         NOT_BILLED: journal ``refused``; retry if
                                            transient; the budget share goes back
answered           refusal      any         NOT_BILLED
maybe_delivered    --           yes         RESEND: may exist; ask again under the same key
maybe_delivered    --           no          UNCONFIRMED: may exist; fail, never resend
answered           gateway      yes         RESEND
answered           gateway      no          UNCONFIRMED
answered           unusable     any         UNCONFIRMED
answered           duplicate    any         UNCONFIRMED
=================  ===========  ==========  ==============================================

The runner applies it to each failed create, the planner to a create that a killed run left
unanswered (``verdict("maybe_delivered", None, idempotent)``), and the budget keeps the share
of every job whose create is ``UNCONFIRMED`` (``MAYBE_BILLED_KINDS``). ``status`` reads the
same plan. No other module decides whether a create may have billed.
"""

from __future__ import annotations

import enum
from typing import Literal

from batchvid.errors import ProviderError, Reach

Answer = Literal["refusal", "gateway", "unusable", "duplicate"]

GATEWAY_STATUSES = (502, 504)
"""Gateway errors: the request may have reached the provider behind the gateway."""

DUPLICATE_KIND = "duplicate_request"


class Verdict(enum.Enum):
    NOT_BILLED = "not_billed"
    """No task was created: a later run may submit again."""
    RESEND = "resend"
    """A task may exist, and the provider refuses a repeat under the same idempotency key: the
    create is sent again under that key (a retry now, or the next run)."""
    UNCONFIRMED = "unconfirmed"
    """A task may exist and a repeat could pay twice: the job fails; only ``--retry-failed``
    submits it again."""


def answer_of(status: int | None, kind: str) -> Answer | None:
    """The class of an answered create's error (None when there is no HTTP status)."""
    if kind == DUPLICATE_KIND:
        return "duplicate"
    if status is None:
        return None
    if 200 <= status < 300:
        return "unusable"
    if status in GATEWAY_STATUSES:
        return "gateway"
    return "refusal"


def verdict(reach: Reach, answer: Answer | None, idempotent: bool) -> Verdict:
    """What a failed create means for the money; see the table in the module docs."""
    if reach == "not_sent" or (reach == "answered" and answer == "refusal"):
        return Verdict.NOT_BILLED
    if answer in ("unusable", "duplicate"):
        return Verdict.UNCONFIRMED
    if reach == "answered" and answer is None:
        return Verdict.NOT_BILLED  # an answer without a status: nothing reached the provider
    return Verdict.RESEND if idempotent else Verdict.UNCONFIRMED


UNCONFIRMED_KIND = "create_unconfirmed"
"""The error kind of a job failed because its create may have made a task (no idempotency)."""

MAYBE_BILLED_KINDS = frozenset({UNCONFIRMED_KIND, "bad_response", DUPLICATE_KIND})
"""Error kinds of a create that may have made (and billed) a task whose id is unknown: such a
job keeps its share of ``--max-cost``."""


def keeps_budget_share(task_id: str | None, error_kind: str | None) -> bool:
    """Whether a job's price stays committed under ``--max-cost``: a task was created, or its
    create may have made one."""
    return task_id is not None or error_kind in MAYBE_BILLED_KINDS


def create_verdict(error: ProviderError, idempotent: bool) -> Verdict:
    """The verdict on one failed create attempt."""
    return verdict(error.reach, answer_of(error.status, error.kind), idempotent)


def unanswered_create(idempotent: bool) -> Verdict:
    """The verdict on a create that a killed run sent and never recorded an answer for."""
    return verdict("maybe_delivered", None, idempotent)
