"""Credentials that stay valid for as long as a driver or worker runs.

A Snakemake run or a Prefect worker outlives what it authenticates with: an OIDC access
token lives about an hour, a proxy certificate 7 days (30 from `canfar login`). Both
have a fresh successor within reach: a saved OIDC login carries a refresh token for
its identity provider's token endpoint, and CANFAR writes a new proxy certificate into
`$HOME/.ssl/cadcproxy.pem` of every session at each create and renew. So a request
never fails "expired" while something valid is at hand:

- before a request, credentials near expiry are renewed: an OIDC login is refreshed
  (and written back to `~/.canfar/config.yaml`, where and as the official client writes
  it), a certificate is re-read from disk if the file changed;
- a request refused with 401 renews them once and is sent again; if nothing newer
  exists, the 401 stands;
- only what has actually expired, with nothing newer in sight, is an error: the one
  sentence of `CanfarConfig.expired_error`, with the command that renews it.

"Near" is the last `REFRESH_MARGIN_SECONDS` (5 minutes) of the credential's life, or its
last quarter when it lives less than 20 minutes (so a 1-minute test token is not
refreshed on every request). The official client refreshes only once the token has
expired; a margin keeps a request from racing the expiry on its way to the server.
Tokens, refresh tokens and client secrets never reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from canfar_core.config import (
    RENEW_HINT,
    CanfarConfig,
    SavedLogin,
    certificate_validity,
    read_official_config,
    saved_access,
    saved_login,
)
from canfar_core.errors import CanfarTransportError, ConfigurationError, CredentialsExpiredError

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 300.0
TOKEN_TIMEOUT_SECONDS = 30.0
# How long a refused refresh waits for another client's write-back of a rotated token.
ROTATION_WAIT_SECONDS = 2.0


def near_expiry(
    expires_at: float | None, issued_at: float | None = None, now: float | None = None
) -> bool:
    """Whether a credential is in the last part of its life (see the module docstring)."""
    if expires_at is None:
        return False
    margin = REFRESH_MARGIN_SECONDS
    if issued_at is not None and expires_at > issued_at:
        margin = min(margin, (expires_at - issued_at) / 4)
    return (time.time() if now is None else now) >= expires_at - margin


def ssl_context(
    verify: str | Path | bool = True, certificate: Path | None = None
) -> ssl.SSLContext | bool:
    """The TLS settings of a client: whom it trusts, and the certificate it presents.

    Trust follows httpx's rule for `verify=True` (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else
    certifi's roots) whether or not a client certificate is loaded, so a proxy
    certificate never changes which servers are trusted. A path is a CA bundle.
    """
    if verify is False:
        if certificate is None:
            return False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        if certificate is None:
            return True  # httpx builds the same context itself
        if os.environ.get("SSL_CERT_FILE"):
            context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
    else:
        context = ssl.create_default_context(cafile=str(verify))
    if certificate is not None:
        try:
            context.load_cert_chain(str(certificate))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"The certificate {certificate} could not be loaded as a certificate and "
                f"its key ({exc.__class__.__name__})."
            ) from None
    return context


class Kind(enum.Enum):
    """What changed when credentials were renewed."""

    TOKEN = "token"
    CERTIFICATE = "certificate"


@dataclass(frozen=True)
class Renewal:
    """Renewed credentials: the new configuration, and a TLS context if it changed."""

    config: CanfarConfig
    kind: Kind
    verify: ssl.SSLContext | bool | None = None


class CredentialKeeper:
    """Keeps one client's credentials fresh; single-flight under concurrent requests.

    `on_renewal` installs a renewal in the client (a new Authorization header, or a new
    connection pool for a new certificate); it runs once per renewal, under the lock,
    so requests that wait for it send with what it installed.
    """

    def __init__(
        self,
        config: CanfarConfig,
        on_renewal: Callable[[Renewal], Awaitable[None]],
        *,
        verify: str | Path | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.generation = 0
        self._on_renewal = on_renewal
        self._verify = verify
        self._transport = transport
        self._lock = asyncio.Lock()
        self._certificate_stamp = _stamp(config.certificate)
        self._certificate_print = _fingerprint(config.certificate)

    @property
    def renewable(self) -> bool:
        """Whether anything can replace the credentials (a login, or a certificate file)."""
        return self.config.login is not None or self.config.certificate is not None

    async def before_request(self) -> int:
        """Renew credentials near expiry; raise when they expired with nothing newer.

        Returns the generation the request is sent with, for `after_refusal`.
        """
        config = self.config
        if not near_expiry(config.expires_at, config.issued_at):
            return self.generation
        if self.renewable:
            generation = self.generation
            async with self._lock:
                if self.generation == generation:
                    await self._renew(forced=False)
        config = self.config
        if config.expired():
            raise config.expired_error()
        return self.generation

    async def after_refusal(self, generation: int) -> bool:
        """After a 401: True when there is something new to send the request again with."""
        if not self.renewable:
            return False
        async with self._lock:
            if self.generation != generation:
                return True  # renewed by another request since this one was sent
            return await self._renew(forced=True)

    # -- renewing ------------------------------------------------------------------------

    async def _renew(self, *, forced: bool) -> bool:
        if self.config.login is not None:
            renewal = await self._refresh_login(self.config.login, forced=forced)
        else:
            renewal = self._reload_certificate(forced=forced)
        if renewal is None:
            return False
        await self._on_renewal(renewal)
        self.config = renewal.config
        self.generation += 1
        return True

    def _reload_certificate(self, *, forced: bool) -> Renewal | None:
        """The certificate file again, if it changed on disk to something newer."""
        config = self.config
        path = config.certificate
        if path is None:
            return None
        stamp = _stamp(path)
        if stamp is None or stamp == self._certificate_stamp:
            return None
        try:
            issued, expires = certificate_validity(path)
        except ConfigurationError:
            log.warning(
                "The certificate %s changed but cannot be read yet; keeping the one in use.", path
            )
            return None
        fingerprint = _fingerprint(path)
        newer = expires > (config.expires_at or 0)
        if fingerprint == self._certificate_print or not (newer or forced):
            self._certificate_stamp = stamp
            return None
        try:
            verify = ssl_context(self._verify, path)
        except ConfigurationError as exc:
            log.warning("%s Keeping the certificate in use.", exc)
            return None
        self._certificate_stamp = stamp
        self._certificate_print = fingerprint
        log.info("Reloaded the CANFAR certificate %s (valid until %s).", path, _utc(expires))
        renewed = config.model_copy(update={"expires_at": expires, "issued_at": issued})
        return Renewal(renewed, Kind.CERTIFICATE, verify)

    async def _refresh_login(self, login: SavedLogin, *, forced: bool) -> Renewal | None:
        """A new access token: from the saved file if another process refreshed, else the IdP."""
        config = self.config
        on_disk = self._saved(login)
        if on_disk is not None and on_disk.config.token != config.token:
            usable = not near_expiry(on_disk.config.expires_at, on_disk.config.issued_at)
            if usable or (forced and not on_disk.config.expired()):
                log.info("Using the CANFAR login %s refreshed by another process.", login.idp)
                return on_disk
        current = on_disk.config.login if on_disk is not None and on_disk.config.login else login
        if not current.refreshable():
            if forced or config.expired():
                raise config.expired_error()
            return None
        try:
            answer = await self._token_request(current)
        except CredentialsExpiredError:
            # Another client (this process or another) may have spent the same refresh
            # token a moment ago: rotation makes ours invalid, and its write-back of the
            # new one lands one round trip after the provider answered it.
            again = await self._rotated_by_another(login, current)
            if again is None or again.config.login is None:
                raise
            if not again.config.expired():
                return again
            current = again.config.login
            answer = await self._token_request(current)
        except CanfarTransportError as exc:
            if config.expired() or forced:
                raise
            log.warning(
                "Could not refresh the CANFAR login yet (%s); using the current token.", exc
            )
            return None
        return self._install(config, current, answer)

    async def _rotated_by_another(self, login: SavedLogin, spent: SavedLogin) -> Renewal | None:
        """The saved login once its refresh token differs from `spent` (waits briefly)."""
        deadline = time.monotonic() + ROTATION_WAIT_SECONDS
        while True:
            again = self._saved(login)
            if (
                again is not None
                and again.config.login is not None
                and again.config.login.refresh_token != spent.refresh_token
            ):
                return again
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.2)

    def _saved(self, login: SavedLogin) -> Renewal | None:
        """The login as saved in the file now (None if it is gone or unreadable)."""
        try:
            data = read_official_config(login.path)
        except ConfigurationError:
            return None
        auth = _section(_section(data, "authentication"), login.idp)
        fresh = saved_login(auth, login.idp, login.path)
        access = saved_access(auth, fresh)
        if fresh is None or access["token"] is None:
            return None
        renewed = self.config.model_copy(update={**access, "login": fresh})
        return Renewal(renewed, Kind.TOKEN)

    async def _token_request(self, login: SavedLogin) -> dict[str, Any]:
        """POST the refresh grant (client_secret_basic, as the official client sends it)."""
        verify = ssl_context(self._verify)
        try:
            async with httpx.AsyncClient(
                verify=verify, timeout=TOKEN_TIMEOUT_SECONDS, transport=self._transport
            ) as http:
                response = await http.post(
                    login.token_endpoint,
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": login.refresh_token.get_secret_value(),
                    },
                    auth=(login.client_id, login.client_secret.get_secret_value()),
                    headers={"Accept": "application/json"},
                )
        except httpx.TransportError as exc:
            raise CanfarTransportError(
                f"The token endpoint {login.token_endpoint} could not be reached "
                f"({exc.__class__.__name__})."
            ) from None
        answer = _json(response)
        error = answer.get("error") if isinstance(answer.get("error"), str) else None
        if response.status_code in (400, 401) and error in ("invalid_grant", "invalid_client"):
            # The login itself is gone (revoked, expired, client deleted): only a new
            # `canfar login` helps. The provider's error_description is not repeated.
            raise CredentialsExpiredError(
                f"The CANFAR login {login.idp!r} (from {login.path}) can no longer be "
                f"refreshed (its identity provider answered {error}); {RENEW_HINT}."
            )
        access = answer.get("access_token")
        if response.status_code != 200 or not isinstance(access, str) or not access:
            detail = f"error {error}" if error else f"HTTP {response.status_code}"
            raise CanfarTransportError(
                f"The token endpoint {login.token_endpoint} did not issue a token ({detail})."
            )
        return answer

    def _install(self, config: CanfarConfig, login: SavedLogin, answer: dict[str, Any]) -> Renewal:
        """The refreshed configuration, written back where the official client keeps it."""
        now = time.time()
        expires = _expires_at(answer, now)
        rotated = answer.get("refresh_token")
        refresh = rotated if isinstance(rotated, str) and rotated else None
        new_login = login.model_copy(
            update={
                "refresh_token": SecretStr(refresh) if refresh else login.refresh_token,
                # A new refresh token's expiry is unknown (the official client's rule).
                "refresh_expires_at": None
                if refresh and refresh != login.refresh_token.get_secret_value()
                else login.refresh_expires_at,
            }
        )
        try:
            write_back(login, answer, expires)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.warning(
                "Refreshed the CANFAR login %r but could not save it to %s (%s); "
                "this process keeps using it.",
                login.idp,
                login.path,
                exc.__class__.__name__,
            )
        log.info("Refreshed the CANFAR login %r (valid until %s).", login.idp, _utc(expires))
        renewed = config.model_copy(
            update={
                "token": SecretStr(str(answer["access_token"])),
                "expires_at": expires,
                "issued_at": now,
                "login": new_login,
            }
        )
        return Renewal(renewed, Kind.TOKEN)


def write_back(login: SavedLogin, answer: dict[str, Any], expires_at: float | None) -> None:
    """Save a refreshed token into `~/.canfar/config.yaml` as the official client does.

    Only `authentication.<idp>.token` and `.expiry` change (canfar's `oidc._persist`):
    the new access token, the new refresh token if one was issued (else the old one),
    `token_type` and `scope` if given, `expiry.access`, and `expiry.refresh` cleared when
    the refresh token changed. Every other byte of meaning is kept; the file is written
    with sorted keys and no nulls, to a 0600 temporary file that replaces it atomically.
    """
    data = read_official_config(login.path)
    record = _section(_section(data, "authentication"), login.idp)
    if not record:
        raise ValueError(f"no authentication record {login.idp!r}")
    token = record.setdefault("token", {})
    expiry = record.setdefault("expiry", {})
    if not isinstance(token, dict) or not isinstance(expiry, dict):
        raise ValueError("unexpected record shape")
    previous = token.get("refresh")
    rotated = answer.get("refresh_token")
    refresh = rotated if isinstance(rotated, str) and rotated else previous
    token["access"] = str(answer["access_token"])
    if refresh:
        token["refresh"] = refresh
    for key in ("token_type", "scope"):
        if isinstance(answer.get(key), str) and answer[key]:
            token[key] = answer[key]
    _set_or_drop(expiry, "access", expires_at)
    _set_or_drop(expiry, "refresh", None if refresh != previous else expiry.get("refresh"))
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True, indent=2)
    write_private(login.path, text.encode())


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 from the first byte (mkstemp)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _set_or_drop(mapping: dict, key: str, value: object) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _section(data: object, key: str) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _expires_at(answer: dict[str, Any], now: float) -> float | None:
    """`expires_at` as Authlib computes it for the official client: given, or now + expires_in."""
    given = answer.get("expires_at")
    if isinstance(given, int | float) and not isinstance(given, bool):
        return float(given)
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdecimal():
        lifetime = int(lifetime)
    if isinstance(lifetime, int | float) and not isinstance(lifetime, bool):
        return float(int(now) + int(lifetime))
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What identifies a file's current content cheaply: inode, size, mtime."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _fingerprint(path: Path | None) -> str | None:
    """SHA-256 of the first certificate in the file (its identity, not its key)."""
    if path is None:
        return None
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (ValueError, OSError, IndexError):
        return None
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _utc(moment: float | None) -> str:
    if moment is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))
