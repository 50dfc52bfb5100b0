"""HTTPS with client certificates, and the official ``canfar`` client against the platform."""

from __future__ import annotations

import datetime
import ipaddress
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "cadc"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("Test CA", ca_key, None, ca_key, ca=True)
    server_key = _key()
    server = _cert("127.0.0.1", server_key, ca, ca_key, server=True)
    client_key = _key()
    client = _cert("jdoe", client_key, ca, ca_key)
    other_ca_key = _key()
    other_ca = _cert("Other CA", other_ca_key, None, other_ca_key, ca=True)
    stranger_key = _key()
    stranger = _cert("intruder", stranger_key, other_ca, other_ca_key)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    client_cert_pem = client.public_bytes(serialization.Encoding.PEM)
    return Pki(
        ca=write("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        server_cert=write("server.pem", server.public_bytes(serialization.Encoding.PEM)),
        server_key=write("server.key", _pem_key(server_key)),
        client_pem=write("cadcproxy.pem", client_cert_pem + _pem_key(client_key)),
        client_cert=write("client.pem", client_cert_pem),
        client_key=write("client.key", _pem_key(client_key)),
        stranger_pem=write(
            "stranger.pem",
            stranger.public_bytes(serialization.Encoding.PEM) + _pem_key(stranger_key),
        ),
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
