"""Credentials that outlive their expiry: OIDC refresh and proxy reload, over real HTTP.

The OIDC tests log in at the embedded platform's token endpoint (`/oidc/token`: refresh
grant, rotating refresh tokens, short-lived access tokens the Skaha routes accept) and
save the login with the official client's own code. The certificate tests run the
platform over HTTPS with client certificates, and let it write proxies into the user's
`$HOME/.ssl/cadcproxy.pem` as the real server does at each create and renew.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from canfar.auth import oidc as upstream_oidc
from canfar.models.auth import Expiry, OIDCCredential
from canfar_core.client import AsyncCanfarClient
from canfar_core.config import RENEW_HINT, certificate_validity, resolve_config
from canfar_core.errors import AuthenticationError, CredentialsExpiredError
from canfar_core.models import SessionSpec
from canfar_local import LocalPlatform
from pydantic import SecretStr

from tests.core import official
from tests.core.certs import Pki, make_pki, platform_tls

IMAGE = "images.canfar.net/skaha/base:latest"
TOKEN_ROUTE = "POST /oidc/token"


def saved_home(platform: LocalPlatform, home: Path, **overrides: object) -> Path:
    """A home whose ~/.canfar/config.yaml holds an OIDC login at `platform`, as canfar saves it."""
    login = platform.oidc_login()
    record = official.from_login(login, **overrides)
    server_url = platform.url.rsplit("/v1", 1)[0]
    official.save(home, record, server_url)
    return home


def with_token(record: OIDCCredential, **token: str) -> OIDCCredential:
    """The same saved login with other token values (canfar's model validates them)."""
    return record.model_copy(
        update={
            "token": record.token.model_copy(update={k: SecretStr(v) for k, v in token.items()})
        }
    )


def secrets_of(home: Path) -> list[str]:
    record = official.load(home).authentication["srcnet"]
    values = [record.client.secret, record.token.access, record.token.refresh]  # type: ignore[union-attr]
    return [v.get_secret_value() for v in values if v is not None]


async def test_a_login_near_expiry_is_refreshed_once_and_saved_where_canfar_saves_it(
    platform_factory: Callable[..., LocalPlatform],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    platform = platform_factory(access_token_seconds=120)
    home = tmp_path / "home"
    before = official.load(saved_home(platform, home, expiry=Expiry(access=time.time() + 5)))
    old = before.authentication["srcnet"]
    old_secrets = secrets_of(home)
    config = resolve_config(environ={}, home=home)
    platform.reset_counters()

    async with AsyncCanfarClient(config) as client:
        # Ten requests at once find the token near expiry: one refresh serves them all.
        await asyncio.gather(*(client.list_sessions() for _ in range(10)))
        assert platform.counters()[TOKEN_ROUTE] == 1
        assert platform.counters()["GET /v1/session"] == 10
        await client.list_sessions()  # a fresh 120 s token is not near expiry
        assert platform.counters()[TOKEN_ROUTE] == 1

    path = official.config_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    after = official.load(home)  # canfar itself reads what was written back
    new = after.authentication["srcnet"]
    assert new.access_usable  # type: ignore[union-attr]
    assert new.token.access != old.token.access  # type: ignore[union-attr]
    assert new.token.refresh != old.token.refresh  # type: ignore[union-attr]  (rotated)
    assert new.expiry.access == pytest.approx(time.time() + 120, abs=10)  # type: ignore[union-attr]
    assert new.client == old.client and after.servers == before.servers  # type: ignore[union-attr]
    assert after.active == before.active
    # The spent refresh token is refused, so a login not saved back would be lost; the
    # saved one works, also for canfar's own refresh code (the wire format is upstream's).
    login = config.login
    assert login is not None
    with pytest.raises(upstream_oidc.ReauthenticationRequiredError):
        upstream_oidc.sync_refresh(
            login.token_endpoint,
            login.client_id,
            login.client_secret.get_secret_value(),
            old.token.refresh.get_secret_value(),  # type: ignore[union-attr]
        )
    upstream_oidc.sync_refresh(
        login.token_endpoint,
        login.client_id,
        login.client_secret.get_secret_value(),
        new.token.refresh.get_secret_value(),  # type: ignore[union-attr]
    )
    for secret in old_secrets + secrets_of(home):
        assert secret not in caplog.text


async def test_two_clients_refreshing_one_login_at_once_both_go_on(
    platform_factory: Callable[..., LocalPlatform], tmp_path: Path
) -> None:
    """The refresh token rotates: the client that loses the race takes the winner's
    token from the saved file instead of declaring the login dead."""
    platform = platform_factory()
    home = saved_home(platform, tmp_path / "home")
    record = official.load(home).authentication["srcnet"]
    official.save(home, with_token(record, access="revoked"), platform.url.rsplit("/v1", 1)[0])
    config = resolve_config(environ={}, home=home)
    async with AsyncCanfarClient(config) as one, AsyncCanfarClient(config) as two:
        platform.reset_counters()
        # Both are refused at once and refresh with the same refresh token.
        assert await asyncio.gather(one.list_sessions(), two.list_sessions()) == [[], []]
        assert platform.counters()[TOKEN_ROUTE] == 2  # the loser's refresh was refused
        assert one.config.token == two.config.token
    assert official.load(home).authentication["srcnet"].access_usable  # type: ignore[union-attr]


async def test_a_refused_token_is_refreshed_once_and_a_dead_login_says_how_to_renew(
    platform_factory: Callable[..., LocalPlatform], tmp_path: Path
) -> None:
    platform = platform_factory()
    # The saved access token claims an hour, but the server no longer takes it (revoked).
    home = saved_home(platform, tmp_path / "home")
    record = official.load(home).authentication["srcnet"]
    server_url = platform.url.rsplit("/v1", 1)[0]
    official.save(home, with_token(record, access="revoked-access-token"), server_url)
    config = resolve_config(environ={}, home=home)
    platform.reset_counters()
    async with AsyncCanfarClient(config) as client:
        assert await client.list_sessions() == []
        # 401, one refresh, the same request again: no second refresh, no retry storm.
        assert platform.counters()["GET /v1/session"] == 2
        assert platform.counters()[TOKEN_ROUTE] == 1

    # A login whose refresh token is dead (another `canfar login` elsewhere revoked it).
    dead = with_token(record, access="revoked-access-token", refresh="dead-refresh-token")
    official.save(home, dead, server_url)
    platform.reset_counters()
    async with AsyncCanfarClient(resolve_config(environ={}, home=home)) as client:
        with pytest.raises(CredentialsExpiredError) as err:
            await client.list_sessions()
    message = str(err.value)
    assert "invalid_grant" in message and "canfar login" in message
    assert "dead-refresh-token" not in message and "revoked" not in message
    assert platform.counters()["GET /v1/session"] == 1


async def test_a_plain_token_that_is_refused_is_not_retried(platform: LocalPlatform) -> None:
    platform.reset_counters()
    async with AsyncCanfarClient(url=platform.url, token="not-a-token") as client:
        with pytest.raises(AuthenticationError):
            await client.list_sessions()
    assert platform.counters()["GET /v1/session"] == 1


# -- proxy certificates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def proxy_of(platform: LocalPlatform) -> Path:
    return platform.home() / ".ssl" / "cadcproxy.pem"


async def start_session(platform: LocalPlatform) -> str:
    """A running session created with the platform's token, which writes the first proxy."""
    async with AsyncCanfarClient(
        url=platform.url, token=platform.token, verify=platform_ca(platform)
    ) as c:
        return await c.create(SessionSpec(name="keep", image=IMAGE, cmd="sleep", args="60"))


def platform_ca(platform: LocalPlatform) -> Path:
    assert platform.config.client_ca is not None
    return platform.config.client_ca


async def test_a_proxy_is_reread_from_disk_before_it_expires(
    platform_factory: Callable[..., LocalPlatform], pki: Pki, async_wait_for: Callable
) -> None:
    """A driver outliving its proxy keeps working, because each renew writes a new one."""
    platform = platform_factory(**platform_tls(pki, proxy_lifetime_seconds=4))
    session_id = await start_session(platform)
    proxy = proxy_of(platform)
    assert stat.S_IMODE(proxy.stat().st_mode) == 0o600
    first_expiry = certificate_validity(proxy)[1]
    calls = 0
    async with AsyncCanfarClient(
        url=platform.url, certificate=proxy, verify=platform_ca(platform)
    ) as client:

        async def past_the_first_expiry() -> bool:
            nonlocal calls
            await client.renew(session_id)  # the server writes a fresh proxy, as CANFAR does
            assert [s.id for s in await client.list_sessions()] == [session_id]
            calls += 1
            return time.time() > first_expiry + 1.5

        await async_wait_for(past_the_first_expiry, timeout=30, interval=0.2, what="time")
        assert client.config.expires_at is not None and client.config.expires_at > first_expiry
    assert calls >= 5


async def test_after_a_401_a_changed_proxy_is_reloaded_and_an_unchanged_one_is_not(
    platform_factory: Callable[..., LocalPlatform], pki: Pki
) -> None:
    """The platform answers 401 once (injected: a real one needs a revoked certificate)."""
    platform = platform_factory(**platform_tls(pki))
    session_id = await start_session(platform)
    async with AsyncCanfarClient(
        url=platform.url, certificate=proxy_of(platform), verify=platform_ca(platform)
    ) as client:
        await client.list_sessions()
        platform.reset_counters()
        platform.inject_fault(method="GET", route="/v1/session", status=401)
        with pytest.raises(AuthenticationError):
            await client.list_sessions()  # nothing newer on disk: the 401 stands
        assert platform.counters()["GET /v1/session"] == 1

        async with AsyncCanfarClient(
            url=platform.url, token=platform.token, verify=platform_ca(platform)
        ) as other:
            await other.renew(session_id)  # a new proxy on disk
        platform.reset_counters()
        platform.inject_fault(method="GET", route="/v1/session", status=401)
        assert [s.id for s in await client.list_sessions()] == [session_id]
        assert platform.counters()["GET /v1/session"] == 2


async def test_an_expired_proxy_with_nothing_newer_is_one_sentence_before_any_request(
    platform_factory: Callable[..., LocalPlatform], pki: Pki, async_wait_for: Callable
) -> None:
    platform = platform_factory(**platform_tls(pki, proxy_lifetime_seconds=2))
    await start_session(platform)
    proxy = proxy_of(platform)
    async with AsyncCanfarClient(
        url=platform.url, certificate=proxy, verify=platform_ca(platform)
    ) as client:
        await client.list_sessions()
        expiry = certificate_validity(proxy)[1]

        async def expired() -> bool:
            return time.time() > expiry

        await async_wait_for(expired, timeout=10, what="the proxy to expire")
        platform.reset_counters()
        with pytest.raises(CredentialsExpiredError) as err:
            await client.list_sessions()
    assert str(err.value).endswith(f"{RENEW_HINT}.")
    assert str(proxy) in str(err.value)
    assert dt.datetime.fromtimestamp(expiry, dt.UTC).strftime("%H:%M") in str(err.value)
    assert platform.counters().get("total", 0) == 0
