"""Where the server is and who we are, resolved the way a CANFAR user expects.

Server, first found: explicit `url`; `CANFAR_URL`; the active server of the official
client's `~/.canfar/config.yaml`; inside a CANFAR session, `https://<skaha_hostname>/skaha/v1`
(the server injects `skaha_hostname` into every session); canfar.net.

Credentials, first found: explicit `token` / `certificate`; `CANFAR_TOKEN` /
`CANFAR_CERTIFICATE`; the active authentication of `~/.canfar/config.yaml` (an X.509
proxy path, or an OIDC login the client refreshes, see `canfar_core.credentials`);
`~/.ssl/cadcproxy.pem`, which inside a CANFAR session is the proxy the server writes
into `$HOME/.ssl` at every create and renew. A user who ran `canfar login`, or whose
driver runs in a CANFAR session, configures nothing.

The official client's file is read as canfar 1.4 (schema version 1) and 1.5 (version 2)
write it; a later version is read for the fields we know, with one warning. Its
`CANFAR_ACTIVE__*` and `CANFAR_REGISTRY__*` environment overrides apply as they do there.
This module never writes the file; only a refreshed OIDC login is written back, by
`canfar_core.credentials`, exactly where the official client writes it.

Expired credentials are caught here, before the first request, with the command that
renews them; a 401 in the middle of a night's run helps nobody.
"""

from __future__ import annotations

import base64
import hashlib
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
# The schema versions of ~/.canfar/config.yaml written by canfar 1.4 (1) and 1.5 (2).
KNOWN_VERSIONS = (1, 2)
# Injected by the server into every session (reference §6): the host of its Skaha API.
SESSION_HOST_VARIABLE = "skaha_hostname"
_warned: set[tuple[str, str]] = set()


class SavedLogin(BaseModel):
    """A refreshable OIDC login saved by the official client, and where it is saved.

    The access token expires within the hour; these are what trade the refresh token for
    a new one at the identity provider's token endpoint. `path` and `idp` say where the
    official client keeps the login, which is where a refreshed one is written back.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    idp: str
    token_endpoint: str
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    refresh_expires_at: float | None = None
    client_secret_expires_at: float | None = None

    def refreshable(self, now: float | None = None) -> bool:
        """True while neither the refresh token nor the client secret is known to be expired."""
        moment = time.time() if now is None else now
        for expiry in (self.refresh_expires_at, self.client_secret_expires_at):
            if expiry and expiry <= moment:  # 0 means "never" for a client secret
                return False
        return True

    def __repr__(self) -> str:
        return f"SavedLogin(path={str(self.path)!r}, idp={self.idp!r})"


class CanfarConfig(BaseModel):
    """A resolved server URL and credentials; secrets stay `SecretStr`."""

    model_config = ConfigDict(frozen=True)

    url: str
    token: SecretStr | None = None
    certificate: Path | None = None
    source: str = "default"
    expires_at: float | None = None
    # When the credential was issued (certificate notBefore, JWT iat, time of a refresh):
    # with expires_at, its lifetime, which sets how near to expiry counts as "near".
    issued_at: float | None = None
    # An OIDC login the client may refresh (None for tokens given as such).
    login: SavedLogin | None = None
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

    @property
    def identity(self) -> str:
        """Who the requests act as, stable across refreshes and reloads (no secret in it).

        A refreshed OIDC login or a reloaded proxy is still the same identity: callers that
        keep one client or tracker per identity must not start another for each token.
        """
        if self.login is not None:
            return f"login:{self.login.path}#{self.login.idp}"
        if self.certificate is not None:
            return f"certificate:{self.certificate}"
        if self.token is not None:
            digest = hashlib.sha256(self.token.get_secret_value().encode()).hexdigest()
            return f"token:{digest}"
        return self.source

    def expired(self, now: float | None = None) -> bool:
        """True when the credential in hand has expired (a login may still be refreshed)."""
        moment = time.time() if now is None else now
        return self.expires_at is not None and moment >= self.expires_at

    def expired_error(self) -> CredentialsExpiredError:
        """The one sentence for expired credentials, with the command that renews them."""
        what = f"certificate {self.certificate}" if self.certificate else "access token"
        if self.login is not None:
            what = "login"
        expiry = self.expires_at
        if self.login is not None and not self.login.refreshable():
            expiry = self.login.refresh_expires_at or self.login.client_secret_expires_at
        when = datetime.fromtimestamp(expiry or 0, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return CredentialsExpiredError(
            f"The CANFAR {what} (from {self.source}) expired on {when}; {RENEW_HINT}."
        )

    def check_expiry(self, now: float | None = None) -> None:
        """Raise CredentialsExpiredError when the credentials have expired.

        An OIDC login whose access token expired is not expired while it can still be
        refreshed: the client refreshes it before its first request.
        """
        if self.login is not None and self.login.refreshable(now):
            return
        if self.expired(now):
            raise self.expired_error()

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
    saved = _with_environment_overrides(_read_official_config(home), env)
    registry = _mapping(saved.get("registry"))
    saved_label = f"url in {home / '.canfar' / 'config.yaml'}"
    in_session = bool(env.get(SESSION_HOST_VARIABLE))
    if url:
        chosen, label = url, "url"
    elif env.get("CANFAR_URL"):
        chosen, label = env["CANFAR_URL"], "CANFAR_URL"
    elif (saved_url := _saved_server_url(saved)) is not None:
        chosen, label = saved_url, saved_label
    elif in_session:
        host = env[SESSION_HOST_VARIABLE].strip().rstrip("/")
        chosen, label = f"https://{host}/skaha/v1", f"{SESSION_HOST_VARIABLE}={host!r}"
    else:
        chosen, label = DEFAULT_URL, "the default"
    resolved_url = chosen.strip().rstrip("/")
    check_url(resolved_url, label)
    extra = {
        **_registry(registry),
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
        or _default_certificate(home, in_session)
    )
    if creds is None:
        where = (
            " (this CANFAR session has no proxy certificate in $HOME/.ssl/cadcproxy.pem)"
            if in_session
            else ""
        )
        raise ConfigurationError(
            f"No CANFAR credentials found{where}: run `canfar login`, or set CANFAR_TOKEN "
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
        issued, expires = _jwt_times(secret)
        return {"token": secret, "source": source, "expires_at": expires, "issued_at": issued}
    if certificate:
        return _certificate(Path(certificate).expanduser(), source)
    return None


def _certificate(path: Path, source: str) -> dict[str, object]:
    if not path.is_file():
        raise ConfigurationError(
            f"The certificate {path} (from {source}) does not exist; {RENEW_HINT}."
        )
    issued, expires = certificate_validity(path)
    return {"certificate": path, "source": source, "expires_at": expires, "issued_at": issued}


def certificate_validity(path: Path) -> tuple[float, float]:
    """(notBefore, notAfter), in epoch seconds, of the first certificate in a PEM file."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise ConfigurationError(
            f"The certificate {path} could not be read as PEM ({exc.__class__.__name__})."
        ) from None
    return certs[0].not_valid_before_utc.timestamp(), certs[0].not_valid_after_utc.timestamp()


def certificate_expiry(path: Path) -> float:
    """The expiry (epoch seconds) of the first certificate in a PEM file."""
    return certificate_validity(path)[1]


def _jwt_times(token: SecretStr) -> tuple[float | None, float | None]:
    """The `iat` and `exp` claims of a JWT access token; opaque tokens have neither."""
    parts = token.get_secret_value().split(".")
    if len(parts) != 3:
        return None, None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    iat, exp = claims.get("iat"), claims.get("exp")
    return (
        float(iat) if isinstance(iat, int | float) else None,
        float(exp) if isinstance(exp, int | float) else None,
    )


def _jwt_expiry(token: SecretStr) -> float | None:
    """The `exp` claim of a JWT access token; opaque tokens have no known expiry."""
    return _jwt_times(token)[1]


def _mapping(value: object) -> dict:
    """`value` when it is a mapping, else an empty one: a later schema may reshape a field."""
    return value if isinstance(value, dict) else {}


def official_config_path(home: Path | None = None) -> Path:
    """`~/.canfar/config.yaml`, where the official client keeps servers and logins."""
    return (home if home is not None else Path.home()) / ".canfar" / "config.yaml"


def read_official_config(path: Path) -> dict:
    """The official client's file as a mapping ({} when absent), any schema version.

    Versions 1 and 2 are read silently; any other is read for the fields both define
    (`active`, `authentication`, `servers`, `registry`), with one warning per process.
    """
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError) as exc:
        raise ConfigurationError(
            f"{path} is not readable YAML ({exc.__class__.__name__})."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{path} is not a mapping of settings: remove it and run `canfar login` again."
        )
    version = data.get("version")
    if isinstance(version, str) and version.isdecimal():
        version = int(version)
    if version not in KNOWN_VERSIONS and (str(path), repr(version)) not in _warned:
        _warned.add((str(path), repr(version)))
        log.warning(
            "%s has schema version %r; this reader knows versions %s, and reads only its "
            "active server, authentication and registry.",
            path,
            version,
            " and ".join(str(v) for v in KNOWN_VERSIONS),
        )
    return data


def _read_official_config(home: Path) -> dict:
    return read_official_config(official_config_path(home))


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    """An environment variable, its name matched case-insensitively (pydantic-settings')."""
    if name in env:
        return env[name] or None
    wanted = name.casefold()
    for key, value in env.items():
        if key.casefold() == wanted:
            return value or None
    return None


def _with_environment_overrides(saved: dict, env: Mapping[str, str]) -> dict:
    """The official client's `CANFAR_ACTIVE__*` / `CANFAR_REGISTRY__*` overrides applied.

    Its configuration is a pydantic-settings model with prefix `CANFAR_` and nested
    delimiter `__`, so these variables beat the file there; they do here too.
    """
    merged = dict(saved)
    for section, fields in (
        ("active", ("authentication", "server")),
        ("registry", ("username", "secret")),
    ):
        values = {
            field: value
            for field in fields
            if (value := _env_value(env, f"CANFAR_{section.upper()}__{field.upper()}"))
        }
        if values:
            merged[section] = {**_mapping(saved.get(section)), **values}
    return merged


def _registry(registry: dict) -> dict[str, object]:
    """The private-registry login, refused when half of it is given (as upstream does)."""
    username = registry.get("username") or None
    secret = registry.get("secret") or None
    if bool(username) != bool(secret):
        given, missing = ("username", "secret") if username else ("secret", "username")
        raise ConfigurationError(
            f"The container registry {given} is set (CANFAR_REGISTRY__{given.upper()} or "
            f"registry.{given} in ~/.canfar/config.yaml) but its {missing} is not: "
            "a private registry needs both."
        )
    return {
        "registry_username": str(username) if username else None,
        "registry_secret": SecretStr(str(secret)) if secret else None,
    }


def _saved_server_url(saved: dict) -> str | None:
    name = _mapping(saved.get("active")).get("server")
    server = _mapping(_mapping(saved.get("servers")).get(name)) if name else {}
    url = server.get("url")
    if not isinstance(url, str) or not url:
        return None
    version = server.get("version")
    return f"{url.rstrip('/')}/{version}" if version else url


def _saved_credentials(saved: dict, home: Path) -> dict[str, object] | None:
    name = _mapping(saved.get("active")).get("authentication")
    auth = _mapping(_mapping(saved.get("authentication")).get(name)) if name else {}
    if not auth:
        return None
    path = official_config_path(home)
    source = f"{path} ({name})"
    if auth.get("mode") == "x509":
        cert = Path(auth.get("path") or home / ".ssl" / "cadcproxy.pem").expanduser()
        return _certificate(cert, source)
    if auth.get("mode") == "oidc":
        return _saved_oidc(auth, str(name), path, source)
    return None


def saved_login(auth: dict, idp: str, path: Path) -> SavedLogin | None:
    """The refresh material of a saved OIDC record, when it has all of it.

    The official client refreshes only a record with a token endpoint, a client id and
    secret and a refresh token (`OIDCCredential.valid`); so does this one.
    """
    endpoints, client = _mapping(auth.get("endpoints")), _mapping(auth.get("client"))
    token, expiry = _mapping(auth.get("token")), _mapping(auth.get("expiry"))
    values = (endpoints.get("token"), client.get("identity"), client.get("secret"))
    refresh = token.get("refresh")
    if not all(isinstance(v, str) and v for v in (*values, refresh)):
        return None
    secret_expiry = client.get("secret_expires_at")
    return SavedLogin(
        path=path,
        idp=idp,
        token_endpoint=str(endpoints["token"]),
        client_id=str(client["identity"]),
        client_secret=SecretStr(str(client["secret"])),
        refresh_token=SecretStr(str(refresh)),
        refresh_expires_at=_number(expiry.get("refresh")),
        client_secret_expires_at=_number(secret_expiry),
    )


def saved_access(auth: dict, login: SavedLogin | None) -> dict[str, object]:
    """The access token of a saved OIDC record: token, expiry and issue time."""
    access = _mapping(auth.get("token")).get("access")
    secret = SecretStr(access) if isinstance(access, str) and access else None
    issued, claimed = _jwt_times(secret) if secret is not None else (None, None)
    expires = _number(_mapping(auth.get("expiry")).get("access"))
    if expires is None:
        # The official client treats an unknown expiry as expired, and refreshes.
        expires = claimed if claimed is not None else (0.0 if login is not None else None)
    if secret is None and login is not None:
        expires = 0.0
    if claimed is None or expires is None or abs(claimed - expires) > 60:
        issued = None  # the token's own times do not describe the saved expiry
    return {"token": secret, "expires_at": expires, "issued_at": issued}


def _saved_oidc(auth: dict, idp: str, path: Path, source: str) -> dict[str, object]:
    login = saved_login(auth, idp, path)
    access = saved_access(auth, login)
    if access["token"] is None and login is None:
        raise ConfigurationError(f"{source} has no access token; run `canfar login`.")
    return {**access, "login": login, "source": source}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _default_certificate(home: Path, in_session: bool = False) -> dict[str, object] | None:
    path = home / ".ssl" / "cadcproxy.pem"
    if not path.is_file():
        return None
    source = f"{path} (the proxy CANFAR writes into this session)" if in_session else str(path)
    return _certificate(path, source)


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
