"""`~/.canfar/config.yaml` written and read by the official client's own code (canfar 1.5).

Tests never hand-write that file: they build it with canfar's configuration model and
save it with its editor (its atomic save to `canfar.models.config.CONFIG_PATH`), so a
schema change upstream fails this suite instead of passing against a stale imitation.
canfar 1.5 can only write schema version 2; `as_version_1` turns such a file into the
version 1 that canfar 1.4 wrote (the inverse of canfar's own `_v1_to_v2` step) and has
canfar 1.5 accept it as such.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from canfar.models.auth import Client, Endpoint, Expiry, OIDCCredential, Token, X509Credential
from canfar.models.config import Configuration
from canfar.models.http import Server
from canfar.models.registry import ContainerRegistry
from canfar_local.oidc import OidcLogin


def config_path(home: Path) -> Path:
    return home / ".canfar" / "config.yaml"


@contextlib.contextmanager
def canfar_home(home: Path) -> Iterator[Path]:
    """Point the official client's config path at `home` (it reads it at call time)."""
    import canfar.models.config as module

    previous = module.CONFIG_PATH
    module.CONFIG_PATH = config_path(home)
    try:
        yield module.CONFIG_PATH
    finally:
        module.CONFIG_PATH = previous


def save(
    home: Path,
    credential: OIDCCredential | X509Credential,
    server_url: str,
    *,
    version: str = "v1",
    server: str = "srv",
    registry: tuple[str, str] | None = None,
    also: dict[str, OIDCCredential | X509Credential] | None = None,
) -> Path:
    """Save a login and its server as `canfar login` would, with canfar's own code."""
    authentication = {credential.idp: credential, **(also or {})}
    config = Configuration.from_document(
        {
            "active": {
                "authentication": credential.idp,
                "server": server,
                "servers": {credential.idp: server},
            },
            "authentication": authentication,
            "servers": {
                server: Server(
                    idp=credential.idp, url=server_url, version=version, auths=[credential.mode]
                )
            },
            "registry": ContainerRegistry(username=registry[0], secret=registry[1])
            if registry
            else ContainerRegistry(),
        }
    )
    with canfar_home(home) as path:
        config.editor.save()
    return path


def oidc(idp: str = "srcnet", **fields: Any) -> OIDCCredential:
    """An OIDC record validated by canfar's model (fields as in the YAML)."""
    return OIDCCredential.model_validate({"idp": idp, **fields})


def x509(path: Path, idp: str = "cadc") -> X509Credential:
    return X509Credential(idp=idp, path=path, expiry=0.0)


def from_login(login: OidcLogin, *, idp: str = "srcnet", **overrides: Any) -> OIDCCredential:
    """The record a device-flow login against the embedded platform's provider leaves."""
    record = OIDCCredential(
        idp=idp,
        endpoints=Endpoint(discovery=login.discovery_url, token=login.token_endpoint),
        client=Client(identity=login.client_id, secret=login.client_secret),
        token=Token(
            access=login.access_token,
            refresh=login.refresh_token,
            token_type=login.token_type,
            scope=login.scope,
        ),
        expiry=Expiry(access=float(login.expires_at)),
    )
    return record.model_copy(update=overrides)


def load(home: Path) -> Configuration:
    """The file as canfar 1.5 loads it (migrating an older schema, as it does)."""
    with canfar_home(home), contextlib.redirect_stderr(io.StringIO()):
        return Configuration()


def as_version_1(home: Path) -> None:
    """Rewrite the saved file as canfar 1.4 wrote it, then check canfar 1.5 reads it as v1.

    Version 1 is version 2 plus the server limits (`cores`, `ram`, `gpus`) that canfar 1.5's
    `_v1_to_v2` drops; canfar 1.5 migrates such a file on first use and says so on stderr.
    """
    path = config_path(home)
    data = yaml.safe_load(path.read_text())
    data["version"] = 1
    for server in data["servers"].values():
        server.update({"cores": 16, "ram": 32, "gpus": 7})
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    path.chmod(0o600)
    stderr = io.StringIO()
    with tempfile.TemporaryDirectory() as scratch:  # canfar 1.5 rewrites what it migrates
        copy = Path(scratch)
        config_path(copy).parent.mkdir(parents=True)
        config_path(copy).write_text(path.read_text())
        with canfar_home(copy), contextlib.redirect_stderr(stderr):
            Configuration()
    assert "Migrating canfar client config v1" in stderr.getvalue(), stderr.getvalue()


def soon(seconds: float) -> float:
    return time.time() + seconds
