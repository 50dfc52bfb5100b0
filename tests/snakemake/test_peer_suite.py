"""Snakemake's own executor-plugin test suite, run against the embedded CANFAR platform.

`TestWorkflowsLocalStorageBase` runs the `simple` and `groups` workflows shipped with
Snakemake through `snakemake --executor canfar`: every job becomes a real session on a
real (embedded) Skaha server, and Snakemake checks that every output file appeared.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from canfar_local import LocalPlatform
from snakemake.common.tests import TestWorkflowsLocalStorageBase
from snakemake.settings import types as settings
from snakemake_executor_plugin_canfar import ExecutorSettings


class TestCanfarWorkflows(TestWorkflowsLocalStorageBase):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _platform(self, platform: LocalPlatform) -> None:
        self.canfar = platform

    def get_executor(self) -> str:
        return "canfar"

    def get_executor_settings(self) -> Any:
        # A loopback server runs sessions on this machine: the current interpreter and
        # the default image are used, and the /arc check does not apply.
        return ExecutorSettings(url=self.canfar.url, token=self.canfar.token)

    def get_remote_execution_settings(self) -> settings.RemoteExecutionSettings:
        return settings.RemoteExecutionSettings(
            seconds_between_status_checks=0.5,  # type: ignore[arg-type]
            envvars=self.get_envvars(),
        )

    def cleanup_test(self) -> None:
        # Every finished session is deleted once its log is saved: nothing is left.
        with httpx.Client(
            base_url=self.canfar.url,
            headers={"Authorization": f"Bearer {self.canfar.token}"},
            timeout=30,
        ) as http:
            assert http.get("session").json() == []
