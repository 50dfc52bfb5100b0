"""Configuration precedence, with real config files and certificates in temporary homes."""

from __future__ import annotations

import base64
import json
import logging
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

from tests.core import official
from tests.core.certs import write_proxy_pem


def write_canfar_config(home: Path, *, auth: dict, server_url: str, version: str = "v1") -> Path:
    """`~/.canfar/config.yaml` with one server and one login, saved by canfar's own code."""
    if auth.get("mode") == "x509":
        record: object = official.x509(Path(auth["path"]), idp="ctx")
    else:
        record = official.oidc("ctx", **auth)
    return official.save(
        home, record, server_url, version=version, registry=("reguser", "regsecret")
    )


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


# -- the official client's file, as canfar 1.4 and 1.5 write it ------------------------------


def saved_login_record(access: str = "savedaccess", expires: float | None = None) -> object:
    return official.oidc(
        endpoints={
            "discovery": "https://iam.example/.well-known/openid-configuration",
            "token": "https://iam.example/token",
        },
        client={"identity": "client-id", "secret": "client-secret-value"},
        token={"access": access, "refresh": "refresh-token-value"},
        expiry={"access": expires if expires is not None else time.time() + 3600},
    )


def test_versions_1_and_2_read_the_same_before_and_after_canfar_migrates(tmp_path: Path) -> None:
    """canfar 1.5 writes v2 and rewrites a 1.4 (v1) file to v2 on first use: all three read
    alike, and what was read is what canfar itself loads."""
    official.save(
        tmp_path, saved_login_record(), "https://saved.example/skaha", registry=("me", "pw")
    )
    seen = []
    for stage in ("v2", "v1", "migrated"):
        if stage == "v1":
            official.as_version_1(tmp_path)
            assert yaml.safe_load(official.config_path(tmp_path).read_text())["version"] == 1
        if stage == "migrated":
            assert official.load(tmp_path).version == 2  # canfar 1.5 rewrote the file
            assert yaml.safe_load(official.config_path(tmp_path).read_text())["version"] == 2
        config = resolve_config(environ={}, home=tmp_path)
        assert config.login is not None
        seen.append(
            (
                config.url,
                config.token.get_secret_value() if config.token else None,
                config.login.token_endpoint,
                config.login.client_id,
                config.login.refresh_token.get_secret_value(),
                config.registry_username,
            )
        )
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][:2] == ("https://saved.example/skaha/v1", "savedaccess")
    upstream = official.load(tmp_path).authentication["srcnet"]
    assert upstream.token.access.get_secret_value() == seen[0][1]  # type: ignore[union-attr]


def test_a_later_version_is_read_for_what_we_know_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem = write_proxy_pem(tmp_path / "certs" / "proxy.pem", days=3)
    path = official.save(tmp_path, official.x509(pem), "https://future.example/skaha")
    data = yaml.safe_load(path.read_text())
    data["version"] = 3  # a schema canfar has not published yet, with a section we don't know
    data["profiles"] = {"night": {"cores": 4}}
    path.write_text(yaml.safe_dump(data))
    caplog.set_level(logging.WARNING, logger="canfar_core.config")
    for _ in range(3):
        config = resolve_config(environ={}, home=tmp_path)
        assert (config.url, config.certificate) == ("https://future.example/skaha/v1", pem)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "version 3" in warnings[0] and "knows versions 1 and 2" in warnings[0]


def test_registry_and_active_selection_from_the_official_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = write_proxy_pem(tmp_path / "certs" / "proxy.pem", days=3)
    official.save(
        tmp_path,
        saved_login_record(),
        "https://saved.example/skaha",
        registry=("fileuser", "filesecret"),
        also={"cadc": official.x509(pem)},
    )
    env = {
        "CANFAR_REGISTRY__USERNAME": "envuser",
        "canfar_registry__secret": "envsecret",  # matched case-insensitively, as upstream
        "CANFAR_ACTIVE__AUTHENTICATION": "cadc",
    }
    config = resolve_config(environ=env, home=tmp_path)
    assert config.registry_username == "envuser"
    assert config.registry_secret is not None
    assert config.registry_secret.get_secret_value() == "envsecret"
    assert config.certificate == pem and config.login is None
    # The official client reads the same variables the same way.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    upstream = official.load(tmp_path)
    assert (upstream.registry.username, upstream.registry.secret) == ("envuser", "envsecret")
    assert upstream.active.authentication == "cadc"


def test_half_a_registry_login_is_one_sentence(tmp_path: Path) -> None:
    write_proxy_pem(tmp_path / ".ssl" / "cadcproxy.pem", days=5)
    with pytest.raises(ConfigurationError) as err:
        resolve_config(environ={"CANFAR_REGISTRY__USERNAME": "me"}, home=tmp_path)
    message = str(err.value)
    assert "CANFAR_REGISTRY__USERNAME" in message and "secret" in message
    assert ". " not in message and message.endswith("a private registry needs both.")


def test_a_saved_login_with_refresh_material_is_not_expired_and_hides_its_secrets(
    tmp_path: Path,
) -> None:
    official.save(tmp_path, saved_login_record(expires=time.time() - 60), "https://s.example/skaha")
    config = resolve_config(environ={}, home=tmp_path)  # the client refreshes it first
    assert config.login is not None and config.expired()
    assert config.identity == f"login:{official.config_path(tmp_path)}#srcnet"
    shown = repr(config) + str(config) + repr(config.login) + str(config.model_dump())
    for secret in ("client-secret-value", "refresh-token-value"):
        assert secret not in shown


# -- inside a CANFAR session --------------------------------------------------------------


def test_inside_a_session_the_server_comes_from_skaha_hostname_and_the_proxy_from_home(
    tmp_path: Path,
) -> None:
    pem = write_proxy_pem(tmp_path / ".ssl" / "cadcproxy.pem", days=7)
    env = {"skaha_hostname": "ws-uv.canfar.net", "skaha_sessionid": "abc12345"}
    config = resolve_config(environ=env, home=tmp_path)
    assert config.url == "https://ws-uv.canfar.net/skaha/v1"
    assert config.certificate == pem
    assert "the proxy CANFAR writes into this session" in config.source
    # Anything that names a server still wins over the session's host.
    assert (
        resolve_config(environ={**env, "CANFAR_URL": "https://other/skaha/v1"}, home=tmp_path).url
        == "https://other/skaha/v1"
    )


def test_inside_a_session_without_a_proxy_the_sentence_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        resolve_config(environ={"skaha_hostname": "ws-uv.canfar.net"}, home=tmp_path)
    assert "$HOME/.ssl/cadcproxy.pem" in str(err.value)
    assert "canfar login" in str(err.value)
