"""The client's one injection seam (`transport=`) and its refusal to be used once closed.

Unit tests on `httpx.MockTransport` (no server); the same behaviour end to end against the
embedded platform is in `test_client.py`.
"""

from __future__ import annotations

import httpx
import pytest
from canfar_core import (
    AsyncCanfarClient,
    CanfarConfig,
    ClientClosedError,
    RetryPolicy,
    SessionSpec,
)
from canfar_core.client import ClientState
from pydantic import SecretStr

FAST = RetryPolicy(base_delay=0.001, max_delay=0.002)


def config(url: str = "https://canfar.example/skaha/v1") -> CanfarConfig:
    return CanfarConfig(url=url, token=SecretStr("t"), source="test")


async def test_requests_go_through_the_injected_transport_and_503_is_retried() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            return httpx.Response(503, text="temporarily unavailable: null\n")
        return httpx.Response(200, json=[{"id": "abcd1234", "status": "Running"}])

    async with AsyncCanfarClient(
        config(), retry=FAST, transport=httpx.MockTransport(answer)
    ) as client:
        sessions = await client.list_sessions()
    assert [s.id for s in sessions] == ["abcd1234"]
    assert seen == ["GET /skaha/v1/session", "GET /skaha/v1/session"]


async def test_an_unversioned_url_is_completed_through_the_same_transport() -> None:
    capabilities = (
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0">'
        '<capability standardID="http://www.opencadc.org/std/platform#session-1">'
        '<interface><accessURL use="base">https://canfar.example/skaha/v1/session</accessURL>'
        "</interface></capability></vosi:capabilities>"
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/skaha/capabilities":
            return httpx.Response(200, text=capabilities)
        return httpx.Response(200, json=[])

    client = AsyncCanfarClient(
        config("https://canfar.example/skaha"), transport=httpx.MockTransport(answer)
    )
    async with client:
        assert await client.list_sessions() == []
    assert client.base_url == "https://canfar.example/skaha/v1"


async def test_a_closed_client_refuses_instead_of_reopening() -> None:
    client = AsyncCanfarClient(
        config(), transport=httpx.MockTransport(lambda r: httpx.Response(200, json=[]))
    )
    assert client.state is ClientState.UNOPENED
    async with client:
        await client.list_sessions()
        assert client.state is ClientState.OPENED
    assert client.state is ClientState.CLOSED
    with pytest.raises(ClientClosedError, match="has been closed"):
        await client.list_sessions()
    with pytest.raises(ClientClosedError):
        async with client:
            pass


async def test_an_ambiguous_create_is_adopted_by_name_never_sent_twice() -> None:
    posts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(request.content.decode())
            # The server made the session, then the answer was lost behind a 503.
            return httpx.Response(503, text="temporarily unavailable: null\n")
        if request.url.path.endswith("/context"):
            return httpx.Response(200, json={"cores": {"options": [1, 2]}})
        if request.url.path.endswith("/repository"):
            return httpx.Response(200, json=["images.canfar.net"])
        listed = [{"id": "made1234", "name": "job-abc123", "status": "Pending"}]
        return httpx.Response(200, json=listed)

    async with AsyncCanfarClient(
        config(), retry=FAST, transport=httpx.MockTransport(answer)
    ) as client:
        spec = SessionSpec(name="job-abc123", image="images.canfar.net/skaha/base:latest")
        assert await client.create(spec) == "made1234"
    assert len(posts) == 1
