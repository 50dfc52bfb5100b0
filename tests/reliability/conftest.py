"""Fixtures of the reliability tests: a fault-injecting proxy in front of the platform.

`chaos(platform, rates)` starts a `ChaosProxy` whose `url` replaces `platform.url` for
the code under test; every proxy is stopped at teardown. Assertions about what reached
the platform (sessions by name, phases) are made directly against the platform, never
through the proxy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from canfar_local import LocalPlatform
from canfar_local.chaos import ChaosProxy, FaultRates
from canfar_local.testing import wait_for

from tests.snakemake.conftest import workflow

__all__ = ["workflow"]  # the Snakemake tests' fixture, shared with these

# What a bad night looks like: one request in six meets a fault, every kind represented.
BAD_NIGHT = FaultRates(
    server_error=0.03,
    unavailable=0.03,
    reset_before=0.03,
    reset_after=0.04,
    latency=0.04,
    latency_seconds=(0.2, 1.5),
    retry_after=1,
    seed=20261121,
)


@pytest.fixture
def chaos() -> Iterator[Callable[..., ChaosProxy]]:
    """`chaos(platform, rates=BAD_NIGHT)` → a proxy whose `.url` is the platform's API URL."""
    started: list[ChaosProxy] = []

    def start(platform: LocalPlatform, rates: FaultRates = BAD_NIGHT) -> ChaosProxy:
        proxy = ChaosProxy.start(platform.url, rates)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def sessions_at(platform: LocalPlatform, token: str | None = None) -> list[dict[str, Any]]:
    """Every headless session the platform lists for the user, asked directly."""
    with httpx.Client(
        headers={"Authorization": f"Bearer {token or platform.token}"}, timeout=30
    ) as http:
        response = http.get(f"{platform.url}/session", params={"type": "headless"})
        response.raise_for_status()
        return response.json()


def duplicated_names(sessions: list[dict[str, Any]]) -> list[str]:
    """Session names that occur more than once."""
    return sorted(name for name, n in Counter(s["name"] for s in sessions).items() if n > 1)


def still_running(sessions: list[dict[str, Any]]) -> list[str]:
    """Ids of listed sessions that have not finished."""
    return [s["id"] for s in sessions if s["status"] not in ("Completed", "Failed", "Succeeded")]


def left_running(platform: LocalPlatform) -> list[str]:
    """Ids of every session ever created on the platform that is still Pending or Running.

    Asked of the platform's own records, so deleted sessions and other users' count too.
    A deleted session vanishes from the listing at once but keeps its record (Pending)
    until its processes have gone, as a pod stays Terminating: see `none_left_running`.
    """
    left = []
    for entry in platform.created():
        state = platform.session_state(entry["id"])
        if state is not None and state["status"] in ("Pending", "Running"):
            left.append(entry["id"])
    return left


def none_left_running(platform: LocalPlatform, timeout: float = 30) -> None:
    """Wait until no session's processes are left, or fail naming the ones that are.

    Deletion is asynchronous on the platform as on Kubernetes (SIGTERM, a grace period,
    SIGKILL), so a session deleted a moment ago may still be going: a deadline, not an
    instant check. 30 s is fifteen grace periods; a session still there after that was
    never told to stop.
    """
    try:
        wait_for(lambda: left_running(platform) == [], timeout=timeout, interval=0.2)
    except AssertionError:
        left = left_running(platform)
        if left:
            states = {i: platform.session_state(i) for i in left}
            raise AssertionError(
                f"sessions still going {timeout:.0f} s after the run ended: {states}"
            ) from None
