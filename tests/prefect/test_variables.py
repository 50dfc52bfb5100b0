"""The pool's job variables: names, schema, and refusal of unknown names."""

from __future__ import annotations

import json
import subprocess

import pytest
from prefect_canfar import CanfarWorker
from prefect_canfar.configuration import CanfarWorkerJobConfiguration
from prefect_canfar.variables import check_variable_names

from tests.prefect.conftest import IMAGE, PREFECT, PrefectServer

DOCUMENTED = {
    "image",
    "cores",
    "ram",
    "gpus",
    "env",
    "name",
    "command",
    "url",
    "credentials",
    "registry_credentials",
    "pending_timeout_seconds",
    "job_timeout_seconds",
    "stream_output",
    "delete_session_on_completion",
    "state_dir",
}


def test_default_template_offers_the_documented_variables() -> None:
    template = CanfarWorker.get_default_base_job_template()
    properties = template["variables"]["properties"]
    assert set(properties) >= DOCUMENTED
    assert set(properties) - DOCUMENTED == {"labels"}  # Prefect's own, kept for compatibility
    assert properties["cores"]["type"] == "integer" and properties["cores"]["minimum"] == 1
    assert properties["ram"]["default"] == 4
    assert template["variables"]["required"] == ["image"]
    credentials = template["variables"]["definitions"]["CanfarCredentials"]
    assert credentials["block_type_slug"] == "canfar-credentials"
    assert credentials["secret_fields"] == ["token"]
    registry = template["variables"]["definitions"]["CanfarRegistryCredentials"]
    assert registry["secret_fields"] == ["secret"]
    # Every variable reaches the job configuration.
    assert set(template["job_configuration"]) >= DOCUMENTED


def test_unknown_variable_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError) as error:
        check_variable_names({"image": IMAGE, "memory": 8}, DOCUMENTED)
    message = str(error.value)
    assert "'memory' (did you mean 'ram'?)" in message
    assert "known job variables are command, cores, credentials" in message
    # Prefect's dotted overrides of dict variables stay allowed.
    check_variable_names({"env.FOO": "1", "cores": 2}, DOCUMENTED)
    with pytest.raises(ValueError, match=r"'cores\.x'"):
        check_variable_names({"cores.x": 1}, DOCUMENTED)


async def test_worker_refuses_unknown_variables_before_submitting(
    prefect_api: PrefectServer,
) -> None:
    template = CanfarWorker.get_default_base_job_template()
    with pytest.raises(ValueError, match=r"Unknown job variable 'cpus' \(did you mean 'cores'\?\)"):
        await CanfarWorkerJobConfiguration.from_template_and_values(
            template, {"image": IMAGE, "cpus": 4}
        )
    configuration = await CanfarWorkerJobConfiguration.from_template_and_values(
        template, {"image": IMAGE, "cores": 4, "env": {"A": "1"}, "env.B": "2"}
    )
    assert configuration.cores == 4 and configuration.env == {"A": "1", "B": "2"}


def test_cli_prints_the_default_template(prefect_server: PrefectServer) -> None:
    result = subprocess.run(
        [*PREFECT, "work-pool", "get-default-base-job-template", "--type", "canfar"],
        env=prefect_server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout) == CanfarWorker.get_default_base_job_template()


async def test_server_refuses_a_deployment_with_an_unknown_variable(
    prefect_api: PrefectServer,
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import PrefectHTTPStatusError

    async with get_client() as client:
        await client.create_work_pool(
            WorkPoolCreate(
                name="canfar-variables",
                type="canfar",
                base_job_template=CanfarWorker.get_default_base_job_template(),
            ),
            overwrite=True,
        )
        flow_id = await client.create_flow_from_name("variables-check")
        with pytest.raises(PrefectHTTPStatusError) as error:
            await client.create_deployment(
                flow_id=flow_id,
                name="misspelt",
                work_pool_name="canfar-variables",
                job_variables={"image": IMAGE, "memory": 8},
            )
        assert error.value.response.status_code == 422
        assert "'memory' is not one of" in error.value.response.text
        assert "'ram'" in error.value.response.text
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name="correct",
            work_pool_name="canfar-variables",
            job_variables={"image": IMAGE, "ram": 8, "env.MODE": "fast"},
        )
        assert deployment_id is not None
