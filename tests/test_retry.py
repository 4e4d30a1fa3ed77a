"""RetryPolicy: which errors are retried, how many times, and how long to wait."""

from __future__ import annotations

import random

import pytest

from batchvid.errors import JobFatalError, RunFatalError, TransientError
from batchvid.retry import RetryPolicy


def transient(retry_after: float | None = None) -> TransientError:
    return TransientError("server_error", "busy", status=503, retry_after=retry_after)


@pytest.mark.parametrize(
    "error",
    [
        JobFatalError("content_filter", "unsafe", status=400, code="1301"),
        RunFatalError("insufficient_balance", "top up", status=429, code="1113"),
        ValueError("a bug"),
    ],
    ids=["job-fatal", "run-fatal", "other"],
)
def test_only_transient_errors_are_retried(error: BaseException) -> None:
    """Anything but a TransientError gets None, even with retries left."""
    assert RetryPolicy(5, rng=random.Random(0)).delay(1, error) is None


def test_retries_count_after_the_first_attempt() -> None:
    """retries=2 allows waits after failures 1 and 2, and gives up after failure 3."""
    policy = RetryPolicy(2, rng=random.Random(0))
    assert policy.delay(1, transient()) is not None
    assert policy.delay(2, transient()) is not None
    assert policy.delay(3, transient()) is None
    assert policy.attempts == 3


def test_zero_retries_never_waits() -> None:
    """retries=0 gives up after the first failure."""
    assert RetryPolicy(0).delay(1, transient()) is None


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_stays_between_floor_and_capped_ceiling(attempt: int) -> None:
    """Backoff waits lie in [0.1, 1] x min(cap, base * 2**(attempt-1))."""
    policy = RetryPolicy(20, base=0.5, cap=30, rng=random.Random(attempt))
    ceiling = min(30, 0.5 * 2 ** (attempt - 1))
    waits = [policy.delay(attempt, transient()) for _ in range(200)]
    assert all(w is not None and 0.1 * ceiling <= w <= ceiling for w in waits)


def test_backoff_ceiling_grows_then_caps() -> None:
    """The ceiling doubles per failure until it reaches cap."""
    policy = RetryPolicy(50, base=1, cap=60)
    assert [policy.backoff_ceiling(a) for a in (1, 2, 3, 6, 7, 50)] == [1, 2, 4, 32, 60, 60]


def test_backoff_is_jittered() -> None:
    """Waits for the same attempt are spread out, not identical."""
    policy = RetryPolicy(5, rng=random.Random(3))
    waits = {policy.delay(4, transient()) for _ in range(50)}
    assert len(waits) == 50


def test_full_jitter_reaches_down_to_zero() -> None:
    """jitter=1 draws from the whole [0, ceiling] range."""
    policy = RetryPolicy(5, base=10, cap=10, jitter=1, rng=random.Random(1))
    waits = [policy.delay(1, transient()) for _ in range(500)]
    assert min(w for w in waits if w is not None) < 0.5


def test_seeded_policies_repeat_themselves() -> None:
    """The same seed gives the same sequence of waits."""
    first = RetryPolicy(9, rng=random.Random(42))
    second = RetryPolicy(9, rng=random.Random(42))
    assert [first.delay(a, transient()) for a in range(1, 9)] == [
        second.delay(a, transient()) for a in range(1, 9)
    ]


def test_retry_after_is_honoured_with_small_jitter() -> None:
    """With retry_after the wait is at least that long, plus at most jitter * base."""
    policy = RetryPolicy(3, base=1.0, jitter=0.9, rng=random.Random(5))
    waits = [policy.delay(1, transient(retry_after=45)) for _ in range(100)]
    assert all(w is not None and 45 <= w <= 45.9 for w in waits)


def test_retry_after_overrides_the_backoff_cap() -> None:
    """A server's Retry-After longer than cap is still honoured."""
    policy = RetryPolicy(3, cap=5, rng=random.Random(0))
    wait = policy.delay(1, transient(retry_after=120))
    assert wait is not None and wait >= 120


def test_wait_that_outlasts_the_deadline_gives_up() -> None:
    """With remaining time shorter than the wait, delay returns None."""
    policy = RetryPolicy(3, rng=random.Random(0))
    assert policy.delay(1, transient(retry_after=30), remaining=10) is None


def test_wait_that_fits_the_deadline_is_returned() -> None:
    """With enough remaining time the wait is returned unchanged."""
    policy = RetryPolicy(3, base=1, rng=random.Random(0))
    assert policy.delay(1, transient(retry_after=30), remaining=60) == pytest.approx(
        RetryPolicy(3, base=1, rng=random.Random(0)).delay(1, transient(retry_after=30))
    )


def test_attempt_counts_from_one() -> None:
    """attempt 0 is a programming error."""
    with pytest.raises(ValueError):
        RetryPolicy(3).delay(0, transient())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retries": -1},
        {"retries": 1, "base": 0},
        {"retries": 1, "base": 2, "cap": 1},
        {"retries": 1, "jitter": 1.5},
        {"retries": 1, "cap": float("inf")},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    """Negative retries, a non-positive base, cap below base or jitter outside [0, 1] fail."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
