"""A minimal OpenID Connect provider: the refresh-token grant and short-lived access tokens.

A CANFAR OIDC login (the official client's ``srcnet`` mode) ends with a client id and
secret from dynamic registration, a refresh token and an access token that lives about
an hour. Every later access token comes from the provider's token endpoint in exchange
for the refresh token. That exchange is what a long-running driver depends on, so the
platform serves it for real: ``POST /oidc/token`` with ``grant_type=refresh_token``
(client authentication by HTTP Basic, as the official client sends it, or in the form),
answered as RFC 6749 says, including its error codes. The device flow that produces the
first tokens needs a person at a browser; ``LocalPlatform.oidc_login`` stands in for it.

Access tokens are HS256 JWTs signed with a per-root key, so the Skaha routes accept them
as bearer tokens until their ``exp`` and need no lookup. Refresh tokens are opaque and
rotate on every use (the previous one stops working), which is the case that breaks a
client that forgets to save the new one. State persists in ``<root>/oidc.json`` (0600), so
a restarted platform honours the logins its clients hold. Nothing here logs a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCOPE = "openid profile email offline_access"
OIDC_PREFIX = "/oidc"


class OidcError(Exception):
    """An RFC 6749 §5.2 error: ``error`` is the code, ``status`` the HTTP status."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass(frozen=True)
class OidcLogin:
    """What a finished device-flow login leaves a client holding (secrets included)."""

    user: str
    issuer: str
    discovery_url: str
    token_endpoint: str
    client_id: str
    client_secret: str
    access_token: str
    refresh_token: str
    expires_at: int
    token_type: str = "Bearer"
    scope: str = SCOPE

    def __repr__(self) -> str:
        return f"OidcLogin(user={self.user!r}, token_endpoint={self.token_endpoint!r})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OidcProvider:
    """Clients, refresh tokens and the signing key of one platform root (thread-safe)."""

    def __init__(self, path: Path, access_seconds: int) -> None:
        self.path = path
        self.access_seconds = access_seconds
        self._lock = threading.Lock()
        state: dict[str, object] = {}
        if path.exists():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
        key = state.get("key")
        self._key = bytes.fromhex(key) if isinstance(key, str) else secrets.token_bytes(32)
        clients = state.get("clients")
        refresh = state.get("refresh")
        self._clients: dict[str, dict[str, str]] = clients if isinstance(clients, dict) else {}
        self._refresh: dict[str, dict[str, str]] = refresh if isinstance(refresh, dict) else {}
        with self._lock:
            self._persist()

    def _persist(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(
                {"key": self._key.hex(), "clients": self._clients, "refresh": self._refresh},
                handle,
            )
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    # -- issuing ---------------------------------------------------------------------------

    def login(self, user: str, issuer: str) -> OidcLogin:
        """Register a client for ``user`` and issue its first tokens (the device flow's end)."""
        client_id = "canfar-local-" + secrets.token_hex(8)
        client_secret = secrets.token_urlsafe(32)
        with self._lock:
            self._clients[client_id] = {"secret_sha256": _digest(client_secret), "user": user}
            answer = self._issue(client_id, user, issuer)
        return OidcLogin(
            user=user,
            issuer=issuer,
            discovery_url=f"{issuer}/.well-known/openid-configuration",
            token_endpoint=f"{issuer}/token",
            client_id=client_id,
            client_secret=client_secret,
            access_token=str(answer["access_token"]),
            refresh_token=str(answer["refresh_token"]),
            expires_at=int(time.time()) + int(answer["expires_in"]),
        )

    def refresh(
        self,
        client_id: str | None,
        client_secret: str | None,
        refresh_token: str | None,
        issuer: str,
    ) -> dict[str, object]:
        """The token response for a refresh grant; OidcError with the RFC code otherwise."""
        if not client_id or not client_secret:
            raise OidcError("invalid_client", 401)
        if not refresh_token:
            raise OidcError("invalid_request")
        with self._lock:
            client = self._clients.get(client_id)
            if client is None or not hmac.compare_digest(
                client.get("secret_sha256", ""), _digest(client_secret)
            ):
                raise OidcError("invalid_client", 401)
            grant = self._refresh.get(_digest(refresh_token))
            if grant is None or grant.get("client") != client_id:
                raise OidcError("invalid_grant")
            del self._refresh[_digest(refresh_token)]  # rotation: the old one is spent
            return self._issue(client_id, grant["user"], issuer)

    def _issue(self, client_id: str, user: str, issuer: str) -> dict[str, object]:
        """A new access token and rotated refresh token; the caller holds the lock."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": user,
            "aud": client_id,
            "iat": now,
            "exp": now + self.access_seconds,
            "jti": secrets.token_hex(8),
        }
        refresh_token = secrets.token_urlsafe(32)
        self._refresh[_digest(refresh_token)] = {"client": client_id, "user": user}
        self._persist()
        return {
            "access_token": self._sign(claims),
            "token_type": "Bearer",
            "expires_in": self.access_seconds,
            "refresh_token": refresh_token,
            "scope": SCOPE,
        }

    # -- verifying -------------------------------------------------------------------------

    def _sign(self, claims: dict[str, object]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def user_for(self, token: str, now: float | None = None) -> str | None:
        """The user of a valid, unexpired access token this provider signed; else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header, payload, signature = parts
        expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _unb64(signature)):
                return None
            claims = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if not isinstance(exp, int | float) or (now if now is not None else time.time()) >= exp:
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) and sub else None


def _digest(token: str) -> str:
    """Secrets are stored hashed: the state file alone does not let anyone log in."""
    return hashlib.sha256(token.encode()).hexdigest()


def discovery_document(issuer: str) -> dict[str, object]:
    """The provider metadata (RFC 8414 fields a refreshing client reads)."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "grant_types_supported": ["refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["token"],
        "scopes_supported": SCOPE.split(),
    }


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """(client_id, client_secret) from ``Authorization: Basic``, form-URL-decoded (RFC 6749)."""
    from urllib.parse import unquote_plus

    if not header:
        return None, None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None, None
    identity, sep, secret = decoded.partition(":")
    if not sep:
        return None, None
    return unquote_plus(identity), unquote_plus(secret)
