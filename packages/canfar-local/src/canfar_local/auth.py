"""Who is calling: bearer tokens and client certificates mapped to user names.

Tokens persist in ``<root>/tokens.json`` (mode 0600) so that a restarted server accepts the
tokens its clients already hold.  Certificates are trusted when the TLS layer verified them
against the configured client CA; the subject's common name is the user.  Nothing here ever
logs a token.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path


class TokenRegistry:
    """Thread-safe token -> user map, written through to a private file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._tokens = {str(k): str(v) for k, v in data.get("tokens", {}).items()}
            except (OSError, ValueError, AttributeError):
                self._tokens = {}

    def _persist(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"tokens": self._tokens}, handle)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def merge(self, tokens: Mapping[str, str]) -> None:
        """Add configured tokens (configuration wins over what was persisted)."""
        with self._lock:
            self._tokens.update({str(k): str(v) for k, v in tokens.items()})
            self._persist()

    def token_for(self, user: str) -> str:
        """The user's token, creating and persisting one if the user has none yet."""
        with self._lock:
            for token, name in self._tokens.items():
                if name == user:
                    return token
            token = secrets.token_urlsafe(32)
            self._tokens[token] = user
            self._persist()
            return token

    def revoke(self, token: str) -> bool:
        """Forget a token (as an identity provider revokes one); True if it was known."""
        with self._lock:
            if self._tokens.pop(token, None) is None:
                return False
            self._persist()
            return True

    def user_for(self, token: str) -> str | None:
        """The user a token belongs to, compared in constant time."""
        with self._lock:
            items = list(self._tokens.items())
        found = None
        for known, user in items:
            if hmac.compare_digest(known.encode(), token.encode()):
                found = user
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def subject_common_name(
    peercert: Mapping[str, object] | None, now: float | None = None
) -> str | None:
    """The first CN of a verified peer certificate (``ssl.getpeercert()`` format).

    TLS verified the certificate when the connection was opened; a kept-alive connection
    outlives that check, so a certificate that has expired since is refused here, per
    request, as the server's authenticator checks a chain's validity on every call.
    """
    if not peercert:
        return None
    not_after = peercert.get("notAfter")
    if isinstance(not_after, str):
        moment = time.time() if now is None else now
        if moment >= ssl.cert_time_to_seconds(not_after):
            return None
    subject = peercert.get("subject", ())
    for rdn in subject:  # type: ignore[union-attr]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
