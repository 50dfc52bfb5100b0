"""Client certificates passed by a proxy in the ``X-Client-Certificate`` header.

An ingress that terminates TLS forwards the client's certificate as (URL-escaped) PEM.  It
is trusted here only if it was issued by the configured client CA and is within its
validity period; its subject CN is then the user.
"""

from __future__ import annotations

import datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID


@lru_cache(maxsize=8)
def _load_cas(path: str) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def common_name_from_pem_header(header: str, client_ca: Path) -> str | None:
    """The CN of a CA-issued, currently valid certificate in a header, else None."""
    text = unquote(header) if "%" in header else header
    text = text.replace("\t", "\n")
    try:
        cert = x509.load_pem_x509_certificate(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    now = datetime.datetime.now(datetime.UTC)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        return None
    for ca in _load_cas(str(client_ca)):
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature, wrong key type, ...
            continue
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None
    return None
