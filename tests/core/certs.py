"""Real X.509 certificates for tests, generated with `cryptography`.

`make_pki` is what an HTTPS platform with client certificates needs: a CA (and its key,
with which the platform signs the proxies it writes into sessions), a server certificate
for 127.0.0.1, and `platform_tls(pki)`, the `PlatformConfig` fields that use them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
    lifetime: dt.timedelta = dt.timedelta(days=2),
) -> x509.Certificate:
    """A CA (self-signed when `issuer` is None), server or client certificate."""
    now = dt.datetime.now(dt.UTC)
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
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
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


@dataclass
class Pki:
    """A CA and an HTTPS server certificate for 127.0.0.1, as files."""

    directory: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    ca_cert: x509.Certificate
    ca_private: ec.EllipticCurvePrivateKey

    def client_pem(self, name: str, cn: str, lifetime: dt.timedelta) -> Path:
        """A cert + key PEM (like cadcproxy.pem) for `cn`, signed by this CA."""
        key = new_key()
        cert = issue_cert(cn, key, self.ca_cert, self.ca_private, lifetime=lifetime)
        path = self.directory / name
        path.write_bytes(pem_cert(cert) + pem_key(key))
        path.chmod(0o600)
        return path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca = issue_cert("Test CA", ca_key, None, ca_key, ca=True)
    server_key = new_key()
    server = issue_cert("127.0.0.1", server_key, ca, ca_key, server=True)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return Pki(
        directory=directory,
        ca=write("ca.pem", pem_cert(ca)),
        ca_key=write("ca.key", pem_key(ca_key)),
        server_cert=write("server.pem", pem_cert(server)),
        server_key=write("server.key", pem_key(server_key)),
        ca_cert=ca,
        ca_private=ca_key,
    )


def platform_tls(pki: Pki, **more: Any) -> dict[str, Any]:
    """`PlatformConfig` fields: HTTPS, client certificates from the CA, proxies written
    into sessions, and sessions that trust the CA as they would CANFAR's public cert."""
    return {
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "client_ca": pki.ca,
        "client_ca_key": pki.ca_key,
        "session_ca_file": pki.ca,
        **more,
    }


def write_proxy_pem(path: Path, *, days: float, cn: str = "testuser") -> Path:
    """Write a self-signed cert + key PEM (like cadcproxy.pem) valid for `days` (<0: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=2), now + dt.timedelta(days=days))
    if days < 0:
        start, end = now - dt.timedelta(days=10), now + dt.timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem_cert(cert) + pem_key(key))
    return path
