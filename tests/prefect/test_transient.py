"""Transient Prefect API errors at submission are retried (issue 17, item 4).

Unit tests of the retry rule with a plain callable; the 20-run fault test
(tests/reliability/test_faults_prefect.py) meets the same errors from a real server.
"""

from __future__ import annotations

import httpx
import pytest
from prefect_canfar.transient import MIN_RETRIES, retry_transient


def status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("PATCH", "http://prefect/api/flow_runs/1/labels")
    return httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(code, request=request)
    )


async def test_a_call_slower_than_the_budget_is_still_retried() -> None:
    # Prefect's client retries a 503 itself, so one call may outlast the whole budget;
    # the budget counts from the first failure, and a few retries are always made.
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= MIN_RETRIES:
            raise status_error(503)
        return "labelled"

    result = await retry_transient(flaky, "label flow run", budget=0.0, first_delay=0.01)
    assert result == "labelled" and calls == MIN_RETRIES + 1


async def test_a_client_error_is_raised_at_once() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise status_error(422)

    with pytest.raises(httpx.HTTPStatusError):
        await retry_transient(refused, "label flow run", first_delay=0.01)
    assert calls == 1
