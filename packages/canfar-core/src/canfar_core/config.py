"""Where the server is and who we are, resolved the way a CANFAR user expects.

Order: explicit arguments; `CANFAR_URL` / `CANFAR_TOKEN` / `CANFAR_CERTIFICATE` (the
official client's names); the official client's `~/.canfar/config.yaml` (read-only);
`~/.ssl/cadcproxy.pem` with canfar.net. A user who ran `canfar login` configures
nothing. Expired credentials are caught here, before the first request, with the
command that renews them; a 401 in the middle of a night's run helps nobody.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr

from canfar_core.errors import ConfigurationError, CredentialsExpiredError

log = logging.getLogger(__name__)

DEFAULT_URL = "https://ws-uv.canfar.net/skaha/v1"
LOCAL_URL = "local"
RENEW_HINT = "renew it with `canfar login` (or `cadc-get-cert -u <your CADC username>`)"
_VERSIONED = re.compile(r"/v\d+(\.\d+)*/?$")


class CanfarConfig(BaseModel):
    """A resolved server URL and credentials; secrets stay `SecretStr`."""

    model_config = ConfigDict(frozen=True)

    url: str
    token: SecretStr | None = None
    certificate: Path | None = None
    source: str = "default"
    expires_at: float | None = None
    registry_username: str | None = None
    registry_secret: SecretStr | None = None
    timeout: float = 30.0

    @property
    def is_local(self) -> bool:
        """True when the embedded platform is selected (`url == "local"`)."""
        return self.url == LOCAL_URL

    @property
    def has_version(self) -> bool:
        """True when the URL already ends in an API version such as `/v1`."""
        return bool(_VERSIONED.search(self.url))

    def check_expiry(self, now: float | None = None) -> None:
        """Raise CredentialsExpiredError when the credentials have expired."""
        if self.expires_at is None:
            return
        if (now if now is not None else time.time()) >= self.expires_at:
            what = f"certificate {self.certificate}" if self.certificate else "access token"
            when = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
            raise CredentialsExpiredError(
                f"The CANFAR {what} (from {self.source}) expired on {when}; {RENEW_HINT}."
            )

    def __repr__(self) -> str:
        return f"CanfarConfig(url={self.url!r}, source={self.source!r})"


def resolve_config(
    url: str | None = None,
    token: str | SecretStr | None = None,
    certificate: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    timeout: float | None = None,
    check_expiry: bool = True,
    source: str = "arguments",
) -> CanfarConfig:
    """Resolve the server URL and credentials (see the module docstring for the order).

    `source` names where `token`/`certificate` came from in messages (a plugin passes
    its setting's name, e.g. `--canfar-token`), so a refusal points at what to fix.
    """
    env = os.environ if environ is None else environ
    home = home if home is not None else Path.home()
    saved = _read_official_config(home)
    registry = saved.get("registry") or {}
    if url:
        chosen, label = url, "url"
    elif env.get("CANFAR_URL"):
        chosen, label = env["CANFAR_URL"], "CANFAR_URL"
    else:
        chosen = _saved_server_url(saved) or DEFAULT_URL
        label = f"url in {home / '.canfar' / 'config.yaml'}"
    resolved_url = chosen.strip().rstrip("/")
    check_url(resolved_url, label)
    extra = {
        "registry_username": registry.get("username") or None,
        "registry_secret": SecretStr(registry["secret"]) if registry.get("secret") else None,
        "timeout": (
            _timeout(timeout, "timeout")
            if timeout is not None
            else _timeout(env.get("CANFAR_TIMEOUT"), "CANFAR_TIMEOUT")
        ),
    }
    if resolved_url == LOCAL_URL:
        return CanfarConfig(url=LOCAL_URL, source="local", **extra)
    creds = (
        _explicit(token, certificate, source)
        or _explicit(env.get("CANFAR_TOKEN"), env.get("CANFAR_CERTIFICATE"), "environment")
        or _saved_credentials(saved, home)
        or _default_certificate(home)
    )
    if creds is None:
        raise ConfigurationError(
            "No CANFAR credentials found: run `canfar login`, or set CANFAR_TOKEN "
            "(or CANFAR_CERTIFICATE to a proxy certificate PEM)."
        )
    config = CanfarConfig(url=resolved_url, **creds, **extra)
    if check_expiry:
        config.check_expiry()
    return config


def url_problem(url: str) -> str | None:
    """What a CANFAR URL must look like, when `url` does not; None when it is usable.

    A URL without `https://` (`ws-uv.canfar.net/skaha/v1`, pasted from a browser bar)
    would otherwise reach httpx as a relative URL and fail only after every retry, as
    an "unsupported protocol" transport error that names no setting.
    """
    if url == LOCAL_URL:
        return None
    parts = urlsplit(url)
    if parts.scheme in ("https", "http") and parts.hostname:
        return None
    return f"use a URL that starts with https://, such as {DEFAULT_URL}, or '{LOCAL_URL}'"


def check_url(url: str, field: str = "url") -> None:
    """Raise ConfigurationError naming `field` when `url` is not a usable CANFAR URL."""
    problem = url_problem(url)
    if problem is not None:
        raise ConfigurationError(f"{field}={url!r} is not allowed: {problem}.")


def _timeout(value: object, field: str) -> float:
    """The request timeout in seconds; a sentence instead of float()'s ValueError."""
    if value is None or value == "":
        return 30.0
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigurationError(
            f"{field}={value!r} is not allowed: a number of seconds greater than 0."
        )
    return seconds


def _explicit(
    token: str | SecretStr | None, certificate: str | Path | None, source: str
) -> dict[str, object] | None:
    if token:
        secret = token if isinstance(token, SecretStr) else SecretStr(token)
        if certificate:
            log.warning("Both a token and a certificate given in %s; using the token.", source)
        return {"token": secret, "source": source, "expires_at": _jwt_expiry(secret)}
    if certificate:
        return _certificate(Path(certificate).expanduser(), source)
    return None


def _certificate(path: Path, source: str) -> dict[str, object]:
    if not path.is_file():
        raise ConfigurationError(
            f"The certificate {path} (from {source}) does not exist; {RENEW_HINT}."
        )
    return {"certificate": path, "source": source, "expires_at": certificate_expiry(path)}


def certificate_expiry(path: Path) -> float:
    """The expiry (epoch seconds) of the first certificate in a PEM file."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise ConfigurationError(
            f"The certificate {path} could not be read as PEM ({exc.__class__.__name__})."
        ) from None
    return certs[0].not_valid_after_utc.timestamp()


def _jwt_expiry(token: SecretStr) -> float | None:
    """The `exp` claim of a JWT access token; opaque tokens have no known expiry."""
    parts = token.get_secret_value().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
    except (ValueError, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def _read_official_config(home: Path) -> dict:
    path = home / ".canfar" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, OSError) as exc:
        raise ConfigurationError(
            f"{path} is not readable YAML ({exc.__class__.__name__})."
        ) from None
    if not isinstance(data, dict) or data.get("version") != 1:
        log.warning("Ignoring %s: its version is not 1 (run `canfar login` to rewrite it).", path)
        return {}
    return data


def _saved_server_url(saved: dict) -> str | None:
    name = (saved.get("active") or {}).get("server")
    server = (saved.get("servers") or {}).get(name) if name else None
    if not server or not server.get("url"):
        return None
    version = server.get("version")
    return f"{server['url'].rstrip('/')}/{version}" if version else server["url"]


def _saved_credentials(saved: dict, home: Path) -> dict[str, object] | None:
    name = (saved.get("active") or {}).get("authentication")
    auth = (saved.get("authentication") or {}).get(name) if name else None
    if not auth:
        return None
    source = f"{home / '.canfar' / 'config.yaml'} ({name})"
    if auth.get("mode") == "x509":
        path = Path(auth.get("path") or home / ".ssl" / "cadcproxy.pem").expanduser()
        return _certificate(path, source)
    if auth.get("mode") == "oidc":
        access = (auth.get("token") or {}).get("access")
        if not access:
            raise ConfigurationError(f"{source} has no access token; run `canfar login`.")
        expiry = (auth.get("expiry") or {}).get("access")
        secret = SecretStr(access)
        expires = float(expiry) if expiry else _jwt_expiry(secret)
        return {"token": secret, "source": source, "expires_at": expires}
    return None


def _default_certificate(home: Path) -> dict[str, object] | None:
    path = home / ".ssl" / "cadcproxy.pem"
    return _certificate(path, str(path)) if path.is_file() else None


def parse_capabilities(xml_text: str) -> str:
    """Return the versioned base URL (e.g. `https://host/skaha/v1`) from VOSI capabilities."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ConfigurationError(f"The capabilities document is not XML ({exc}).") from None
    best: tuple[int, str] | None = None
    for cap in root.iter():
        if not cap.tag.endswith("capability"):
            continue
        standard = cap.get("standardID", "")
        if not standard.startswith("http://www.opencadc.org/std/platform#session-"):
            continue
        for element in cap.iter():
            if element.tag.endswith("accessURL") and element.get("use") == "base":
                base = (element.text or "").strip().rstrip("/")
                if base.endswith("/session"):
                    base = base[: -len("/session")]
                match = _VERSIONED.search(base)
                rank = int(match.group(0).strip("/v").split(".")[0]) if match else 0
                if best is None or rank > best[0]:
                    best = (rank, base)
    if best is None:
        raise ConfigurationError("The capabilities document lists no session capability.")
    return best[1]
