"""Configuration precedence, with real config files and certificates in temporary homes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import yaml
from canfar_core.config import (
    DEFAULT_URL,
    parse_capabilities,
    resolve_config,
)
from canfar_core.errors import ConfigurationError, CredentialsExpiredError

from tests.core.certs import write_proxy_pem


def write_canfar_config(home: Path, *, auth: dict, server_url: str, version: str = "v1") -> None:
    """Write an official-client `~/.canfar/config.yaml` with one server and one auth."""
    data = {
        "version": 1,
        "active": {"authentication": "ctx", "server": "srv"},
        "authentication": {"ctx": auth},
        "servers": {"srv": {"name": "srv", "url": server_url, "version": version}},
        "registry": {"username": "reguser", "secret": "regsecret"},
    }
    (home / ".canfar").mkdir(parents=True, exist_ok=True)
    (home / ".canfar" / "config.yaml").write_text(yaml.safe_dump(data))


def jwt(exp: float) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': exp, 'sub': 'u'})}.sig"


def test_explicit_arguments_beat_environment_and_files(tmp_path: Path) -> None:
    write_proxy_pem(tmp_path / ".ssl" / "cadcproxy.pem", days=5)
    env = {"CANFAR_URL": "https://env.example/skaha/v1", "CANFAR_TOKEN": "envtoken"}
    config = resolve_config("https://arg.example/skaha/v1", "argtoken", environ=env, home=tmp_path)
    assert config.url == "https://arg.example/skaha/v1"
    assert config.token is not None and config.token.get_secret_value() == "argtoken"
    assert config.source == "arguments"


def test_environment_beats_saved_config(tmp_path: Path) -> None:
    write_canfar_config(
        tmp_path,
        auth={"mode": "oidc", "token": {"access": "savedtoken"}},
        server_url="https://saved.example/skaha",
    )
    env = {"CANFAR_URL": "https://env.example/skaha/v1", "CANFAR_TOKEN": "envtoken"}
    config = resolve_config(environ=env, home=tmp_path)
    assert config.url == "https://env.example/skaha/v1"
    assert config.token is not None and config.token.get_secret_value() == "envtoken"


def test_saved_oidc_config_gives_server_version_and_token(tmp_path: Path) -> None:
    write_canfar_config(
        tmp_path,
        auth={
            "mode": "oidc",
            "token": {"access": "savedtoken"},
            "expiry": {"access": time.time() + 3600},
        },
        server_url="https://saved.example/skaha",
    )
    config = resolve_config(environ={}, home=tmp_path)
    assert config.url == "https://saved.example/skaha/v1"
    assert config.token is not None and config.token.get_secret_value() == "savedtoken"
    assert config.registry_username == "reguser"


def test_saved_x509_config_uses_its_certificate(tmp_path: Path) -> None:
    pem = write_proxy_pem(tmp_path / "certs" / "proxy.pem", days=3)
    write_canfar_config(
        tmp_path, auth={"mode": "x509", "path": str(pem)}, server_url="https://s.example/skaha"
    )
    config = resolve_config(environ={}, home=tmp_path)
    assert config.certificate == pem
    assert config.expires_at is not None and config.expires_at > time.time()


def test_default_certificate_and_url_when_nothing_else(tmp_path: Path) -> None:
    pem = write_proxy_pem(tmp_path / ".ssl" / "cadcproxy.pem", days=5)
    config = resolve_config(environ={}, home=tmp_path)
    assert config.url == DEFAULT_URL
    assert config.certificate == pem


def test_expired_certificate_is_reported_with_the_renewal_command(tmp_path: Path) -> None:
    write_proxy_pem(tmp_path / ".ssl" / "cadcproxy.pem", days=-1)
    with pytest.raises(CredentialsExpiredError) as err:
        resolve_config(environ={}, home=tmp_path)
    assert "cadcproxy.pem" in str(err.value)
    assert "canfar login" in str(err.value)


def test_expired_jwt_is_reported_without_leaking_it(tmp_path: Path) -> None:
    token = jwt(time.time() - 60)
    with pytest.raises(CredentialsExpiredError) as err:
        resolve_config("https://x.example/skaha/v1", token, environ={}, home=tmp_path)
    assert token not in str(err.value)
    assert "canfar login" in str(err.value)


def test_expired_saved_oidc_token(tmp_path: Path) -> None:
    write_canfar_config(
        tmp_path,
        auth={"mode": "oidc", "token": {"access": "t"}, "expiry": {"access": time.time() - 5}},
        server_url="https://saved.example/skaha",
    )
    with pytest.raises(CredentialsExpiredError):
        resolve_config(environ={}, home=tmp_path)


def test_no_credentials_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="canfar login"):
        resolve_config(environ={}, home=tmp_path)


def test_missing_certificate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.pem"):
        resolve_config(environ={"CANFAR_CERTIFICATE": str(tmp_path / "nope.pem")}, home=tmp_path)


def test_local_needs_no_credentials(tmp_path: Path) -> None:
    config = resolve_config(environ={"CANFAR_URL": "local"}, home=tmp_path)
    assert config.is_local


def test_config_repr_hides_the_token(tmp_path: Path) -> None:
    config = resolve_config("https://x.example/skaha/v1", "sekrit-token", environ={}, home=tmp_path)
    assert "sekrit-token" not in repr(config)
    assert "sekrit-token" not in str(config.model_dump())


def test_version_completion_reads_the_session_capability() -> None:
    xml = """<?xml version="1.0"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
  xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <capability standardID="vos://cadc.nrc.ca~vospace/CADC/std/Proc#sessions-1.0">
    <interface xsi:type="vs:ParamHTTP"><accessURL use="base">https://h/skaha/v0</accessURL></interface>
  </capability>
  <capability standardID="http://www.opencadc.org/std/platform#session-1">
    <interface xsi:type="vs:ParamHTTP">
      <accessURL use="base">https://h/skaha/v1/session</accessURL>
    </interface>
  </capability>
</vosi:capabilities>"""
    assert parse_capabilities(xml) == "https://h/skaha/v1"
