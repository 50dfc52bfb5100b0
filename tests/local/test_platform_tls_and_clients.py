"""HTTPS with client certificates, and the official ``canfar`` client against the platform."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from canfar_local import LocalPlatform

from tests.core.certs import issue_cert, make_pki, new_key, pem_cert, pem_key

IMAGE = "images.canfar.net/skaha/base:latest"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_pem: Path  # certificate and key in one file, like ~/.ssl/cadcproxy.pem
    client_cert: Path
    client_key: Path
    stranger_pem: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = make_pki(tmp_path_factory.mktemp("pki"))
    directory = base.directory
    client_key = new_key()
    client = issue_cert("jdoe", client_key, base.ca_cert, base.ca_private)
    other_ca_key = new_key()
    other_ca = issue_cert("Other CA", other_ca_key, None, other_ca_key, ca=True)
    stranger_key = new_key()
    stranger = issue_cert("intruder", stranger_key, other_ca, other_ca_key)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    client_cert_pem = pem_cert(client)
    return Pki(
        ca=base.ca,
        server_cert=base.server_cert,
        server_key=base.server_key,
        client_pem=write("cadcproxy.pem", client_cert_pem + pem_key(client_key)),
        client_cert=write("client.pem", client_cert_pem),
        client_key=write("client.key", pem_key(client_key)),
        stranger_pem=write("stranger.pem", pem_cert(stranger) + pem_key(stranger_key)),
    )


@pytest.fixture
def tls_platform(platform_factory: Callable[..., LocalPlatform], pki: Pki) -> LocalPlatform:
    return platform_factory(tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca)


def _client_context(pki: Pki, pem: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if pem is not None:
        context.load_cert_chain(str(pem))
    return context


def test_https_with_a_client_certificate(tls_platform: LocalPlatform, pki: Pki) -> None:
    assert tls_platform.url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=_client_context(pki, pki.client_pem)) as client:
        response = client.get(tls_platform.url + "/session")
        assert (response.status_code, response.text) == (200, "[]")
        assert response.headers["x-vo-authenticated"] == "jdoe"
        created = client.post(
            tls_platform.url + "/session",
            data={"image": IMAGE, "name": "cert", "cmd": "true"},
        )
        assert created.status_code == 200
        session = client.get(tls_platform.url + "/session/" + created.text.strip()).json()
        assert session["userid"] == "jdoe"
    assert (tls_platform.home("jdoe")).is_dir()


def test_https_without_credentials_or_with_a_foreign_certificate(
    tls_platform: LocalPlatform, pki: Pki
) -> None:
    with httpx.Client(verify=_client_context(pki, None)) as client:
        response = client.get(tls_platform.url + "/session")
        assert response.status_code == 401
        assert "ivoa_x509" in response.headers.get_list("www-authenticate")
        token = client.get(
            tls_platform.url + "/session",
            headers={"Authorization": f"Bearer {tls_platform.token}"},
        )
        assert token.headers["x-vo-authenticated"] == tls_platform.user
    with (
        pytest.raises(httpx.TransportError),
        httpx.Client(verify=_client_context(pki, pki.stranger_pem)) as client,
    ):
        client.get(tls_platform.url + "/session")


def test_client_certificate_header_from_a_proxy(tls_platform: LocalPlatform, pki: Pki) -> None:
    pem = pki.client_cert.read_text()
    stranger = pki.stranger_pem.read_text().split("-----BEGIN PRIVATE KEY-----")[0]
    with httpx.Client(verify=_client_context(pki, None)) as client:
        ok = client.get(tls_platform.url + "/session", headers={"X-Client-Certificate": quote(pem)})
        assert ok.headers["x-vo-authenticated"] == "jdoe"
        bad = client.get(
            tls_platform.url + "/session",
            headers={"X-Client-Certificate": quote(stranger)},
        )
        assert bad.status_code == 401


CANFAR_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from canfar.sessions import Session

    out = {}
    with Session() as session:
        ids = session.create(
            name="Official", image=sys.argv[1], cmd="echo", args="hello from canfar",
            errors="raise",
        )
        out["ids"] = ids
        deadline = time.monotonic() + 20
        while True:
            info = session.info(ids, errors="raise")
            if info[0]["status"] in ("Completed", "Failed") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out["info"] = info
        out["fetch"] = session.fetch()
        out["logs"] = session.logs(ids, errors="raise")
        out["events"] = session.events(ids, errors="raise")
        out["destroy"] = session.destroy(ids)
        out["after"] = session.fetch()
    print(json.dumps(out))
    """
)


def _run_canfar(env_overrides: dict[str, str], home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANFAR_", "SKAHA_"))}
    env.update({"HOME": str(home), **env_overrides})
    result = subprocess.run(
        [sys.executable, "-c", CANFAR_SCRIPT, IMAGE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_canfar_run(out: dict, user: str) -> None:
    (session_id,) = out["ids"]
    info = out["info"][0]
    assert info["id"] == session_id
    assert info["status"] == "Completed"
    assert info["userid"] == user
    assert info["name"] == "official"
    assert [s["id"] for s in out["fetch"]] == [session_id]
    assert out["logs"] == {session_id: "hello from canfar\n"}
    events = out["events"][0][session_id]
    assert events.splitlines()[0].split() == [
        "TYPE",
        "REASON",
        "MESSAGE",
        "FIRST-TIME",
        "LAST-TIME",
    ]
    assert out["destroy"] == {session_id: True}
    assert out["after"] == []


def test_official_canfar_client_with_a_token(platform: LocalPlatform, tmp_path: Path) -> None:
    out = _run_canfar(
        {"CANFAR_URL": platform.url, "CANFAR_TOKEN": platform.token}, tmp_path / "home"
    )
    _check_canfar_run(out, platform.user)


def test_official_canfar_client_with_cadcproxy_pem(
    tls_platform: LocalPlatform, pki: Pki, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    proxy = home / ".ssl" / "cadcproxy.pem"
    proxy.parent.mkdir(parents=True)
    proxy.write_bytes(pki.client_pem.read_bytes())
    proxy.chmod(0o600)
    out = _run_canfar(
        {
            "CANFAR_URL": tls_platform.url,
            "CANFAR_CERTIFICATE": str(proxy),
            "SSL_CERT_FILE": str(pki.ca),
        },
        home,
    )
    _check_canfar_run(out, "jdoe")
