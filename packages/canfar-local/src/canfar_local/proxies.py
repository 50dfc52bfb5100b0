"""What the platform gives a session so that code inside it can call the platform back.

The real server writes the owner's proxy certificate to ``$HOME/.ssl/cadcproxy.pem``
before each session starts and again on every renew, valid for 7 days (reference §6,
§7): a process inside a session has no token, and authenticates with that proxy. The
platform does the same when it has a CA to sign with (``client_ca`` and
``client_ca_key``): a fresh key and a certificate whose subject CN is the user, which its
HTTPS listener accepts like any other client certificate from that CA.

CANFAR's server certificate is publicly trusted, so code in a session needs nothing to
trust it. The platform's is signed by a private CA; with ``session_ca_file`` set it writes
``<root>/session-ca.pem`` (the host's default roots plus that CA) and points every
session's ``SSL_CERT_FILE`` at it, which is as close as a laptop gets to "publicly
trusted".
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROXY_NAME = "cadcproxy.pem"
SESSION_CA_BUNDLE = "session-ca.pem"


@lru_cache(maxsize=4)
def _issuer(
    ca_path: str, key_path: str
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    ca = x509.load_pem_x509_certificates(Path(ca_path).read_bytes())[0]
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    return ca, key  # type: ignore[return-value]


def issue_proxy(ca_path: Path, key_path: Path, user: str, lifetime_seconds: float) -> bytes:
    """A PEM certificate (CN=user, signed by the CA) followed by its unencrypted key."""
    ca, ca_key = _issuer(str(ca_path), str(key_path))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, user),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "canfar-local"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A minute of slack for clocks, as cadc-get-cert does not backdate either.
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(seconds=lifetime_seconds))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically; mkstemp makes it 0600 from the first byte."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def inject_proxy(home: Path, ca_path: Path, key_path: Path, user: str, lifetime: float) -> Path:
    """Write a fresh proxy certificate for ``user`` to ``<home>/.ssl/cadcproxy.pem``."""
    target = home / ".ssl" / PROXY_NAME
    write_private(target, issue_proxy(ca_path, key_path, user, lifetime))
    return target


def host_roots() -> bytes:
    """The PEM roots this host trusts by default (what a public certificate chains to)."""
    candidates = [os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile]
    try:
        import certifi  # present wherever httpx is; optional for the platform itself

        candidates.append(certifi.where())
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


def write_session_bundle(root: Path, ca_file: Path) -> Path:
    """``<root>/session-ca.pem``: the host's roots plus the platform's CA."""
    roots = host_roots()
    if roots and not roots.endswith(b"\n"):
        roots += b"\n"
    target = root / SESSION_CA_BUNDLE
    # Certificates only, no key: sessions of every user read it.
    write_private(target, roots + ca_file.read_bytes(), mode=0o644)
    return target
