"""What a flow run's configuration becomes on the wire, and the reachability warning."""

from __future__ import annotations

import base64
from uuid import uuid4

import pytest
from canfar_core.context import Context
from canfar_core.errors import SpecError
from canfar_core.launch import BOOT_VAR, SCRIPT_VAR_PREFIX
from canfar_core.local import is_loopback_url
from prefect.client.schemas.objects import FlowRun
from prefect_canfar import CanfarCredentials
from prefect_canfar.configuration import CanfarWorkerJobConfiguration
from prefect_canfar.reachability import unreachable_api_warning

from tests.prefect.conftest import IMAGE

API_KEY = 'pnu_k3y "with" quotes=and=equals\\'


def prepared(**values: object) -> tuple[CanfarWorkerJobConfiguration, FlowRun]:
    flow_run = FlowRun(flow_id=uuid4(), name="gentle-otter")
    configuration = CanfarWorkerJobConfiguration(image=IMAGE, **values)  # type: ignore[arg-type]
    configuration.prepare_for_flow_run(flow_run)
    return configuration, flow_run


def test_secrets_and_the_command_travel_only_inside_the_envelope() -> None:
    configuration, flow_run = prepared(env={"PREFECT_API_KEY": API_KEY, "EMPTY": ""})
    request = configuration.session_request()
    params = request.spec.to_params()
    job = request.envelope
    assert (request.spec.cmd, request.spec.args) == (job.cmd, job.args)
    assert BOOT_VAR in job.args
    env_names = {value.split("=", 1)[0] for key, value in params if key == "env"}
    assert env_names == {BOOT_VAR, f"{SCRIPT_VAR_PREFIX}0"}
    assert all(API_KEY not in value for _, value in params)
    script = request.envelope.script
    assert "python -m prefect.engine" in script
    assert f"PREFECT__FLOW_RUN_ID={flow_run.id}" in script
    assert "export EMPTY=''" in script  # empty values survive (the API would drop them)
    # The key is in the script, shell-quoted, and the script is what the session decodes.
    encoded = "".join(v for k, v in job.env.items() if k.startswith(SCRIPT_VAR_PREFIX))
    assert "PREFECT_API_KEY=" in base64.b64decode(encoded).decode()


def test_default_name_is_prefixed_sanitised_and_unique() -> None:
    first, _ = prepared()
    second, _ = prepared()
    name = first.session_request().spec.name
    assert name.startswith("prefect-gentle-otter-")
    assert name != second.session_request().spec.name


def test_name_template_is_rendered_and_sanitised() -> None:
    configuration, _ = prepared(name="Reduce {{ ctx.flow_run.name }} / Night #1")
    assert configuration.session_request().spec.name.startswith("reduce-gentle-otter-night-1-")


def test_timeouts_map_to_the_envelope_and_the_tracker() -> None:
    configuration, _ = prepared(job_timeout_seconds=60, pending_timeout_seconds=30)
    request = configuration.session_request()
    assert request.envelope.timeout == 60
    assert request.runtime_limit is not None and request.runtime_limit > 60
    assert request.pending_timeout == 30
    assert prepared(pending_timeout_seconds=None)[0].session_request().pending_timeout is None


def test_resources_are_raised_to_the_smallest_allowed_value() -> None:
    context = Context.model_validate(
        {
            "cores": {"options": [1, 2, 4, 8]},
            "memoryGB": {"options": [1, 2, 4, 8, 16]},
            "gpus": {"options": [1, 2]},
        }
    )
    configuration, _ = prepared(cores=3, ram=16, gpus=2)
    request = configuration.session_request(context)
    assert (request.spec.cores, request.spec.ram, request.spec.gpus) == (4, 16, 2)
    assert request.adjustments == ("cores 3 raised to 4, the smallest value the server allows",)
    with pytest.raises(SpecError, match="ram=32 is not allowed: the largest ram allowed is 16"):
        prepared(ram=32)[0].session_request(context)


def test_zero_gpus_means_none() -> None:
    configuration, _ = prepared(gpus=0)
    assert configuration.session_request().spec.gpus is None


def test_credentials_take_a_token_or_a_certificate_not_both() -> None:
    with pytest.raises(ValueError, match="a token or a certificate path, not both"):
        CanfarCredentials(token="t", certificate="/tmp/cert.pem")
    credentials = CanfarCredentials(url="https://canfar.example.org/skaha/v1", token="secret-t")
    assert "secret-t" not in repr(credentials)
    config = credentials.resolve()
    assert config.url == "https://canfar.example.org/skaha/v1" and config.token is not None
    assert credentials.resolve("local").is_local


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:4200/api", True),
        ("http://localhost:4200/api", True),
        ("http://[::1]:4200/api", True),
        ("http://0.0.0.0:4200/api", True),
        ("https://prefect.example.org/api", False),
        ("http://10.0.0.5:4200/api", False),
        (None, False),
    ],
)
def test_loopback_urls(url: str | None, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_warning_only_when_sessions_run_elsewhere() -> None:
    api = "http://127.0.0.1:4200/api"
    warning = unreachable_api_warning(api, "https://ws-uv.canfar.net/skaha/v1")
    assert warning is not None and "loopback" in warning and api in warning
    assert unreachable_api_warning(api, "local") is None
    assert unreachable_api_warning(api, "http://127.0.0.1:5000/skaha/v1") is None
    assert unreachable_api_warning("https://prefect.example.org/api", "https://x/skaha") is None
