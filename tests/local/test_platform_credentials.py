"""The platform issues credentials as CANFAR does: an OIDC token endpoint, and proxy
certificates written into each session's home at create and renew."""

from __future__ import annotations

import ssl
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from canfar_local import LocalPlatform
from canfar_local.testing import skaha_client, wait_for
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.core.certs import Pki, make_pki, platform_tls

IMAGE = "images.canfar.net/skaha/base:latest"


def test_the_token_endpoint_speaks_rfc_6749(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    platform = platform_factory(access_token_seconds=2)
    login = platform.oidc_login("alice")
    assert login.client_secret not in repr(login) and login.refresh_token not in repr(login)
    with httpx.Client(timeout=30) as http:
        meta = http.get(login.discovery_url).json()
        assert meta["token_endpoint"] == login.token_endpoint == f"{platform.issuer}/token"
        grant = {"grant_type": "refresh_token", "refresh_token": login.refresh_token}
        wrong = http.post(login.token_endpoint, data=grant, auth=(login.client_id, "wrong"))
        assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})
        assert wrong.headers["WWW-Authenticate"].startswith("Basic")
        password = http.post(
            login.token_endpoint,
            data={"grant_type": "password"},
            auth=(login.client_id, login.client_secret),
        )
        assert password.json() == {"error": "unsupported_grant_type"}
        # client_secret_post works too; the answer must not be cached.
        fresh = http.post(
            login.token_endpoint,
            data={**grant, "client_id": login.client_id, "client_secret": login.client_secret},
        )
        assert fresh.status_code == 200 and fresh.headers["Cache-Control"] == "no-store"
        token = fresh.json()
        assert token["token_type"] == "Bearer" and token["expires_in"] == 2
        assert token["refresh_token"] != login.refresh_token  # rotated
        spent = http.post(
            login.token_endpoint, data=grant, auth=(login.client_id, login.client_secret)
        )
        assert spent.json() == {"error": "invalid_grant"}
    with skaha_client(platform, token["access_token"]) as client:
        answer = client.get("session")
        assert answer.headers["x-vo-authenticated"] == "alice"
        wait_for(lambda: client.get("session").status_code == 401, timeout=10, what="expiry")
    assert platform.counters()["POST /oidc/token"] == 4
    assert stat.S_IMODE((platform.root / "oidc.json").stat().st_mode) == 0o600
    assert login.client_secret not in (platform.root / "oidc.json").read_text()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_sessions_get_a_proxy_at_create_and_renew_and_trust_the_platform(
    platform_factory: Callable[..., LocalPlatform], pki: Pki
) -> None:
    platform = platform_factory(**platform_tls(pki, proxy_lifetime_seconds=3600))
    trust = ssl.create_default_context(cafile=str(pki.ca))
    proxy = platform.home() / ".ssl" / "cadcproxy.pem"
    assert not proxy.exists()
    with skaha_client(platform, verify=trust) as client:
        created = client.post(
            "session", data={"name": "p", "image": IMAGE, "cmd": "sleep", "args": "30"}
        )
        session_id = created.text.strip()
        first = x509.load_pem_x509_certificates(proxy.read_bytes())[0]
        assert stat.S_IMODE(proxy.stat().st_mode) == 0o600
        assert stat.S_IMODE(proxy.parent.stat().st_mode) == 0o700
        cn = first.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == platform.user
        lifetime = first.not_valid_after_utc.timestamp() - time.time()
        assert 3500 < lifetime <= 3600
        wait_for(lambda: platform.session_state(session_id)["phase"] == "running", timeout=20)
        env = platform.session_state(session_id)["env"]  # type: ignore[index]
        assert "SSL_CERT_FILE" not in env  # the image's trust store, not a user env entry
        assert client.post(f"session/{session_id}", data={"action": "renew"}).status_code == 200
        second = x509.load_pem_x509_certificates(proxy.read_bytes())[0]
        assert second.serial_number != first.serial_number
    bundle = Path(str(platform.session_ca_bundle))
    assert pki.ca.read_bytes() in bundle.read_bytes()
    # The proxy alone authenticates as the user over the platform's HTTPS listener.
    context = ssl.create_default_context(cafile=str(bundle))
    context.load_cert_chain(str(proxy))
    with httpx.Client(verify=context) as http:
        listed = http.get(platform.url + "/session")
    assert listed.headers["x-vo-authenticated"] == platform.user
    assert [s["id"] for s in listed.json()] == [session_id]


def test_the_command_line_refuses_a_ca_key_without_its_ca() -> None:
    from canfar_local.cli import build_parser, config_from
    from canfar_local.errors import PlatformError

    with pytest.raises(PlatformError, match="--client-ca-key needs --client-ca"):
        config_from(build_parser().parse_args(["serve", "--client-ca-key", "ca.key"]))
    with pytest.raises(PlatformError, match="--proxy-lifetime=0 is not allowed"):
        config_from(build_parser().parse_args(["serve", "--proxy-lifetime", "0"]))
