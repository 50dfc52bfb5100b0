"""Bounded, jittered exponential backoff.

The official client has no retries at all (reference §10.8), so one dropped connection
fails a night's pipeline. Retries here are bounded in attempts *and* in total time, so
an outage surfaces as an error instead of a hang.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx

# 500 is in: Skaha answers it for Kubernetes API hiccups (any uncaught exception becomes
# "unexpected exception"), and a deterministic 500 still surfaces once the bounded budget
# is spent. 429 is what an ingress rate limit would answer.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    `attempts` and `total_seconds` bound one logical call: the defaults ride out about
    two minutes of outage (a Skaha pod restarting, an ingress reloading), with waits of
    0.5, 1, 2, 4, ... 30 s. `first_contact_attempts` is the budget while this client has
    never had an answer from the server: a server that cannot be reached at all is far
    more likely a wrong URL or a missing network than an outage, and the user should
    hear so in seconds, not minutes.
    """

    attempts: int = 10
    base_delay: float = 0.5
    max_delay: float = 30.0
    total_seconds: float = 180.0
    first_contact_attempts: int = 3

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based), honouring Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        jittered = random.uniform(ceiling / 2, ceiling)
        return max(jittered, retry_after) if retry_after is not None else jittered

    def budget(self) -> RetryBudget:
        """A fresh budget for one logical call."""
        return RetryBudget(self, time.monotonic() + self.total_seconds)


@dataclass
class RetryBudget:
    """The attempts and time left for one logical call."""

    policy: RetryPolicy
    deadline: float
    attempt: int = 0

    def next_delay(
        self, retry_after: float | None = None, *, first_contact: bool = False
    ) -> float | None:
        """The wait before the next try, or None when attempts or time are used up.

        `first_contact`: the server has never answered this client (see RetryPolicy).
        """
        attempts = self.policy.attempts
        if first_contact:
            attempts = min(attempts, self.policy.first_contact_attempts)
        if self.attempt + 1 >= attempts:
            return None
        wait = self.policy.delay(self.attempt, retry_after)
        if time.monotonic() + wait > self.deadline:
            return None
        self.attempt += 1
        return wait


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Parse a `Retry-After` header given in seconds (HTTP dates are ignored)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def is_unsent(exc: Exception) -> bool:
    """True when the request certainly never reached the server (safe to re-send)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def is_transient(exc: Exception) -> bool:
    """True for transport failures worth retrying on an idempotent call.

    A URL httpx cannot use (no scheme, an unknown one) is not transient: retrying it
    only delays the error.
    """
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)
