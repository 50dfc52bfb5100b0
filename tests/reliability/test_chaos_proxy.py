"""The fault-injecting proxy produces each fault for real, and the core client rides them.

Each kind is checked at rate 1 against what the platform saw (its own request counters),
so a "reset before" provably never reached the server and a "reset after" provably did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from canfar_core import AsyncCanfarClient, RetryPolicy
from canfar_core.launch import envelope
from canfar_core.tracker import SessionTracker
from canfar_local import LocalPlatform
from canfar_local.chaos import ChaosProxy, FaultRates
from canfar_local.errors import PlatformError

from tests.reliability.conftest import BAD_NIGHT, duplicated_names, sessions_at, still_running

IMAGE = "images.canfar.net/skaha/terminal:1.1.2"


def post_session(proxy: ChaosProxy, platform: LocalPlatform, name: str) -> httpx.Response:
    with httpx.Client(headers={"Authorization": f"Bearer {platform.token}"}, timeout=30) as http:
        return http.post(f"{proxy.url}/session", data={"name": name, "image": IMAGE, "cmd": "true"})


def test_status_faults_answer_without_reaching_the_server(
    platform: LocalPlatform, chaos: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos(platform, FaultRates(server_error=1.0))
    platform.reset_counters()
    response = post_session(proxy, platform, "never")
    assert response.status_code == 500
    assert response.text.startswith("unexpected exception:")
    proxy.set_rates(FaultRates(unavailable=1.0, retry_after=7))
    response = post_session(proxy, platform, "never")
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert platform.counters().get("POST /v1/session", 0) == 0
    assert sessions_at(platform) == []


def test_reset_before_never_reaches_the_server(
    platform: LocalPlatform, chaos: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos(platform, FaultRates(reset_before=1.0))
    platform.reset_counters()
    with pytest.raises(httpx.TransportError):
        post_session(proxy, platform, "never")
    assert platform.counters().get("POST /v1/session", 0) == 0
    assert sessions_at(platform) == []


def test_reset_after_loses_the_answer_of_a_create_that_happened(
    platform: LocalPlatform, chaos: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos(platform, FaultRates(reset_after=1.0))
    with pytest.raises(httpx.TransportError):
        post_session(proxy, platform, "ambiguous")
    assert [s["name"] for s in sessions_at(platform)] == ["ambiguous"]
    assert proxy.counts()["reset_after POST"] == 1


def test_latency_spikes_delay_but_deliver(
    platform: LocalPlatform, chaos: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos(platform, FaultRates(latency=1.0, latency_seconds=(0.4, 0.4)))
    started = time.monotonic()
    with httpx.Client(headers={"Authorization": f"Bearer {platform.token}"}) as http:
        assert http.get(f"{proxy.url}/session").json() == []
    assert time.monotonic() - started >= 0.4


def test_rates_are_checked() -> None:
    with pytest.raises(PlatformError, match=r"^the fault rates sum to 1.2, which is not allowed"):
        FaultRates(server_error=0.6, reset_after=0.6)
    with pytest.raises(PlatformError, match=r"^latency=-0.1 is not allowed"):
        FaultRates(latency=-0.1)


async def test_forty_sessions_through_a_bad_night_no_duplicates_no_losses(
    platform: LocalPlatform, chaos: Callable[..., ChaosProxy]
) -> None:
    """Every create either succeeds once or is adopted after an ambiguous failure; every
    exit code arrives, though list, log and create requests all meet faults."""
    proxy = chaos(platform, BAD_NIGHT)
    retry = RetryPolicy(attempts=8, base_delay=0.1, max_delay=2, total_seconds=60)
    async with AsyncCanfarClient(url=proxy.url, token=platform.token, retry=retry) as client:
        tracker = SessionTracker(client, min_interval=0.2, max_interval=1)

        async def one(i: int) -> int | None:
            name = f"job-{i}"
            spec = envelope(["sh", "-c", f"exit {i % 3}"]).spec(name=name, image=IMAGE)
            session_id = await client.create(spec)
            return (await tracker.watch(session_id, name=name)).exit_code

        codes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(40))), 120)
        await tracker.aclose()
    assert codes == [i % 3 for i in range(40)]
    listed = sessions_at(platform)
    assert len(listed) == 40 and duplicated_names(listed) == []
    assert still_running(listed) == []
    assert proxy.faults_injected() >= 5, proxy.counts()
