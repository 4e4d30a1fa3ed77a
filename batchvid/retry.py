"""Retries as a policy: whether a failure is worth another attempt, and how long to wait first.

The runner owns the loop; it asks ``RetryPolicy.delay(attempt, error)`` after each failure and
gets back a number of seconds to wait, or None for "give up". Only ``TransientError`` is ever
retried: an invalid request, a content-filter refusal or an empty account would fail again.

How long:

* The provider said (``retry_after``, from a ``Retry-After`` header): at least that long, plus
  up to ``jitter * base`` seconds so that jobs refused together do not come back together.
* Otherwise exponential backoff with jitter: the ceiling is ``min(cap, base * 2**(attempt-1))``
  and the wait is drawn uniformly from ``[(1 - jitter) * ceiling, ceiling]``. ``jitter=1`` is
  AWS's "full jitter"; the default 0.9 keeps a floor of a tenth of the ceiling, so a retry is
  never fired back instantly at a server that just said it was overloaded.
* With ``remaining`` (seconds left before the job's deadline), a wait that would not fit gives
  None: the job fails now with its real error rather than timing out later.
"""

from __future__ import annotations

import math
import random

from batchvid.errors import TransientError


class RetryPolicy:
    """``retries`` more attempts after the first, waiting as described in the module docs."""

    def __init__(
        self,
        retries: int,
        base: float = 1.0,
        cap: float = 60.0,
        jitter: float = 0.9,
        rng: random.Random | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        if not (base > 0 and math.isfinite(base)):
            raise ValueError(f"base must be a finite number > 0, not {base!r}")
        if not (cap >= base and math.isfinite(cap)):
            raise ValueError(f"cap must be a finite number >= base, not {cap!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {jitter!r}")
        self.retries = retries
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()

    @property
    def attempts(self) -> int:
        """The most attempts a job gets: the first plus ``retries``."""
        return self.retries + 1

    @staticmethod
    def retryable(error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt at all (only ``TransientError`` is)."""
        return isinstance(error, TransientError)

    def backoff_ceiling(self, attempt: int) -> float:
        """The largest backoff after the ``attempt``-th failure: ``min(cap, base * 2**(attempt-1))``."""
        exponent = min(attempt - 1, 64)  # 2**64 * base is past any cap; avoid huge floats
        return min(self.cap, self.base * 2.0**exponent)

    def delay(
        self, attempt: int, error: BaseException, remaining: float | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        ``attempt`` counts the failures so far, from 1. Returns None when ``error`` is not a
        ``TransientError``, when ``retries`` are used up, or when the wait would exceed
        ``remaining`` seconds (the job's time left), if given.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts failures from 1, not {attempt!r}")
        if not self.retryable(error) or attempt > self.retries:
            return None
        assert isinstance(error, TransientError)
        if error.retry_after is not None:
            wait = max(0.0, error.retry_after) + self._rng.uniform(0.0, self.jitter * self.base)
        else:
            ceiling = self.backoff_ceiling(attempt)
            wait = ceiling * (1.0 - self.jitter) + self._rng.uniform(0.0, ceiling * self.jitter)
        if remaining is not None and wait > remaining:
            return None
        return wait
