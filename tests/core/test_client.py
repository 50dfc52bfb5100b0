"""The client against the embedded platform over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from canfar_core import (
    AsyncCanfarClient,
    AuthenticationError,
    CanfarClient,
    CredentialsExpiredError,
    InvalidRequestError,
    ReplicaCreateError,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    SessionNotFoundError,
    SessionSpec,
    SpecError,
)
from canfar_core.config import CanfarConfig

from tests.core.test_config import jwt

IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, total_seconds=10)


def client_for(platform, **kwargs) -> AsyncCanfarClient:
    return AsyncCanfarClient(url=platform.url, token=platform.token, retry=FAST_RETRY, **kwargs)


def sleeper(name: str, seconds: str = "30") -> SessionSpec:
    return SessionSpec(name=name, image=IMAGE, cmd="sleep", args=seconds)


async def test_create_list_get_logs_delete_round_trip(platform) -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with client_for(platform) as client:
        client._http.event_hooks["request"].append(record)  # type: ignore[union-attr]
        spec = SessionSpec(
            name="hello", image=IMAGE, cores=1, ram=1, cmd="echo", args="hello world"
        )
        session_id = await client.create(spec)
        post = next(r for r in sent if r.method == "POST")
        assert post.url.query == b"", "create parameters must travel in the body"
        assert b"name=hello" in post.content
        listed = await client.list_sessions(type="headless")
        assert session_id in {s.id for s in listed}
        deadline = time.monotonic() + 20
        while (await client.get(session_id)).status != "Completed":
            assert time.monotonic() < deadline, "session did not complete"
        assert (await client.logs(session_id)).strip() == "hello world"
        session = await client.get(session_id)
        assert session.requested_cpu_cores == "1" and session.is_fixed_resources
        await client.delete(session_id)
        with pytest.raises(SessionNotFoundError) as err:
            await client.get(session_id)
        assert err.value.status == 404 and err.value.reason == f"session {session_id} not found"


async def test_validation_happens_before_submission(platform) -> None:
    async with client_for(platform) as client:
        await client.context()
        await client.repositories()
        platform.reset_counters()
        with pytest.raises(SpecError, match=r"images must come from images\.canfar\.net"):
            await client.create(SessionSpec(name="x", image="docker.io/library/ubuntu"))
        with pytest.raises(SpecError, match="cores=17"):
            await client.create(SessionSpec(name="x", image=IMAGE, cores=17))
        assert platform.counters().get("POST /v1/session", 0) == 0


async def test_server_errors_are_typed_and_keep_the_servers_sentence(platform) -> None:
    async with client_for(platform) as client:
        with pytest.raises(InvalidRequestError) as err:
            await client.create(SessionSpec(name="x", image="docker.io/x:1"), validate=False)
        assert err.value.status == 400
        assert err.value.reason == (
            "session image 'docker.io/x:1' must come from one of [images.canfar.net]"
        )
        with pytest.raises(InvalidRequestError, match="No active job"):
            await client.renew("abcdefgh")
        # A 500 is retried (Kubernetes hiccups); one that persists surfaces as itself.
        platform.inject_fault(method="GET", route="/v1/context", status=500, count=10)
        with pytest.raises(ServerError) as server_err:
            await client.context(refresh=True)
        assert server_err.value.status == 500
    async with AsyncCanfarClient(url=platform.url, token="wrong-token") as bad:
        with pytest.raises(AuthenticationError) as auth_err:
            await bad.list_sessions()
        assert auth_err.value.status == 401
        assert "wrong-token" not in str(auth_err.value)


async def test_transient_failures_are_retried_with_retry_after(platform) -> None:
    async with client_for(platform) as client:
        platform.inject_fault(method="GET", route="/v1/session", status=503, count=2, retry_after=0)
        platform.reset_counters()
        assert await client.list_sessions() == []
        assert platform.counters()["GET /v1/session"] == 3
        platform.inject_fault(method="GET", route="/v1/session", status=503, count=10)
        with pytest.raises(ServiceUnavailableError) as err:
            await client.list_sessions()
        assert err.value.retry_after == 30
        assert err.value.reason.startswith("temporarily unavailable")


async def test_retry_budget_bounds_total_time(platform) -> None:
    policy = RetryPolicy(attempts=50, base_delay=0.05, max_delay=0.1, total_seconds=0.5)
    async with AsyncCanfarClient(url=platform.url, token=platform.token, retry=policy) as client:
        platform.inject_fault(method="GET", route="/v1/session", status=502, count=1000)
        start = time.monotonic()
        with pytest.raises(ServerError):
            await client.list_sessions()
        assert time.monotonic() - start < 3


async def test_ambiguous_create_adopts_instead_of_duplicating(platform) -> None:
    async with client_for(platform) as client:
        platform.inject_fault(method="POST", route="/v1/session", count=1, drop_after_handling=True)
        session_id = await client.create(sleeper("adopt-me-7x2"))
        named = [s for s in await client.list_sessions() if s.name == "adopt-me-7x2"]
        assert [s.id for s in named] == [session_id]


async def test_gateway_error_on_create_is_checked_before_resending(platform) -> None:
    async with client_for(platform) as client:
        platform.inject_fault(method="POST", route="/v1/session", status=502, count=1)
        session_id = await client.create(sleeper("gateway-q9"))
        named = [s for s in await client.list_sessions() if s.name == "gateway-q9"]
        assert [s.id for s in named] == [session_id]
        counts = platform.counters()
        assert counts["POST /v1/session"] == 2


async def test_replicas_are_named_numbered_and_failures_reported(platform) -> None:
    async with client_for(platform) as client:
        ids = await client.create(sleeper("rep"), replicas=3)
        sessions = {s.id: s for s in await client.list_sessions()}
        assert sorted(sessions[i].name for i in ids) == ["rep-1", "rep-2", "rep-3"]
        platform.inject_fault(method="POST", route="/v1/session", status=400, count=1)
        with pytest.raises(ReplicaCreateError) as err:
            await client.create(sleeper("flaky"), replicas=3)
        assert len(err.value.created) == 2 and len(err.value.failures) == 1
        (missing,) = err.value.failures
        again = await client.create_replica(sleeper("flaky"), missing, 3)
        assert (await client.get(again)).name == f"flaky-{missing}"


async def test_replica_environment_reaches_the_process(platform) -> None:
    out = platform.home() / "replica-env"
    spec = SessionSpec(
        name="envrep",
        image=IMAGE,
        cmd="/bin/sh",
        args="-c $(SCRIPT)",
        env={"SCRIPT": f"echo $REPLICA_ID/$REPLICA_COUNT >> {out}"},
    )
    async with client_for(platform) as client:
        ids = await client.create(spec, replicas=2)
        deadline = time.monotonic() + 20
        while {(await client.get(i)).status for i in ids} != {"Completed"}:
            assert time.monotonic() < deadline
    assert sorted(out.read_text().split()) == ["1/2", "2/2"]


async def test_expired_token_is_caught_before_the_first_request(platform) -> None:
    config = CanfarConfig(
        url=platform.url, token=jwt(time.time() - 10), expires_at=time.time() - 10
    )
    platform.reset_counters()
    async with AsyncCanfarClient(config) as client:
        with pytest.raises(CredentialsExpiredError, match="canfar login"):
            await client.list_sessions()
    assert platform.counters().get("total", 0) == 0


async def test_base_url_without_version_is_completed_from_capabilities(platform) -> None:
    bare = platform.url.rsplit("/v1", 1)[0]
    async with AsyncCanfarClient(url=bare, token=platform.token) as client:
        await client.list_sessions()
        assert client.base_url is not None and client.base_url.endswith("/skaha/v1")


async def test_no_secret_in_logs_or_errors(platform, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = platform.token
    async with client_for(platform) as client:
        platform.inject_fault(method="GET", route="/v1/session", status=503, count=2, retry_after=0)
        await client.list_sessions()
        with pytest.raises(SessionNotFoundError) as err:
            await client.get("zzzzzzzz")
    assert token not in caplog.text
    assert token not in str(err.value)


def test_sync_facade(platform, tmp_path: Path) -> None:
    with CanfarClient(url=platform.url, token=platform.token) as client:
        session_id = client.create(sleeper("sync-one", "1"))
        assert client.get(session_id).name == "sync-one"
        assert client.context().cores.maximum == 16
        assert client.repositories() == ["images.canfar.net"]
        client.delete(session_id)
        assert session_id not in {s.id for s in client.list_sessions()}


async def test_images_stats_and_renew(platform) -> None:
    async with client_for(platform) as client:
        images = await client.images("headless")
        assert images and all("headless" in image.types for image in images)
        with pytest.raises(InvalidRequestError, match="unknown type: vm"):
            await client.images("vm")
        stats = await client.stats()
        assert {"cores", "ram"} <= set(stats)
        session_id = await client.create(sleeper("renewable"))
        deadline = time.monotonic() + 20
        while (await client.get(session_id)).status != "Running":
            assert time.monotonic() < deadline
        await client.renew(session_id)  # 200: the server decides whether to extend
        await client.delete(session_id)


async def test_private_images_need_registry_credentials(platform_factory) -> None:
    private = "images.canfar.net/myproject/secret-pipeline:1.0"
    platform = platform_factory(public_images=(IMAGE,))
    spec = SessionSpec(name="private", image=private, cmd="true")
    async with client_for(platform) as client:
        with pytest.raises(InvalidRequestError, match="No authentication provided"):
            await client.create(spec)
    async with client_for(platform, registry_auth=("alice", "s3cret-cli-key")) as client:
        session_id = await client.create(spec)
        assert (await client.get(session_id)).image == private


async def test_read_timeouts_on_idempotent_calls_are_retried(platform) -> None:
    config = CanfarConfig(url=platform.url, token=platform.token, timeout=0.5)
    async with AsyncCanfarClient(config, retry=FAST_RETRY) as client:
        platform.inject_fault(method="GET", route="/v1/session", delay=2, count=1)
        platform.reset_counters()
        assert await client.list_sessions() == []
        assert platform.counters()["GET /v1/session"] == 2


async def test_concurrent_first_creates_read_the_server_facts_once(platform) -> None:
    async with client_for(platform) as client:
        platform.reset_counters()
        await asyncio.gather(*(client.create(sleeper(f"race-{i}", "1")) for i in range(6)))
    counts = platform.counters()
    assert counts["GET /v1/repository"] == 1 and counts["GET /v1/context"] == 1
    assert counts["POST /v1/session"] == 6
