"""Retry a Prefect API call that failed for a reason that heals by waiting.

Prefect's client already retries 429/502/503 a few times; under load (a SQLite server
whose writers collide) a 503 or a "database is locked" 500 can outlast that. Before a
session exists, any exception in the worker's submission turns the run Crashed with
"Failed to submit flow run to infrastructure", so the calls made there (the label
update) are retried here for a bounded time. A 4xx other than 408/429 is the caller's
mistake and is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

log = logging.getLogger(__name__)
DEFAULT_BUDGET_SECONDS = 120.0
MIN_RETRIES = 3


def is_transient(exc: BaseException) -> bool:
    """Whether the error may heal by waiting: a dropped connection, a timeout, a 5xx,
    408 or 429."""
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status in (408, 429)
    return False


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    budget: float = DEFAULT_BUDGET_SECONDS,
    first_delay: float = 1.0,
    max_delay: float = 15.0,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> T:
    """`await call()`, retrying transient errors with backoff for `budget` s after the
    first failure, and at least `MIN_RETRIES` times.

    The budget starts at the first failure, not at the first call: Prefect's client
    retries a 503 itself, so one call to a stalled server can take longer than the
    whole budget, and a budget counted from the start would then give up without one
    retry of ours (seen in the 20-run fault test: one call took 137 s).
    """
    deadline: float | None = None
    delay = first_delay
    warned = False
    retries = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if deadline is None:
                deadline = time.monotonic() + budget
            if retries >= MIN_RETRIES and time.monotonic() + delay > deadline:
                raise
            retries += 1
            if not warned:
                (logger or log).warning(
                    "The Prefect API failed to %s (%s: %s); retrying for up to %.0f s.",
                    what,
                    type(exc).__name__,
                    exc,
                    budget,
                )
                warned = True
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)
