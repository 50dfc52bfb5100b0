"""prefect-dask's DaskTaskRunner on a CanfarCluster: a real Prefect server, real sessions."""

from __future__ import annotations

import os

from canfar_core.dask import CanfarCluster
from prefect import flow, get_run_logger, task
from prefect_dask import DaskTaskRunner

from tests.dask.conftest import listed

MESSAGE = "frame %d measured on a Dask worker in CANFAR session %s"


@task
def measure_frame(x: int) -> int:
    session = os.environ["skaha_sessionid"]  # noqa: SIM112 (the server's name)
    get_run_logger().info(MESSAGE, x, session)
    return 10 * x


def test_a_flow_maps_tasks_onto_dask_workers_in_sessions(
    prefect_api, platform, cluster_kwargs, wait_for
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    runner = DaskTaskRunner(
        cluster_class=CanfarCluster,
        cluster_kwargs=cluster_kwargs,
        adapt_kwargs={"minimum": 1, "maximum": 2},
    )

    @flow(task_runner=runner)
    def measure(frames: int) -> list[int]:
        return measure_frame.map(range(frames)).result()

    state = measure(6, return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == [10 * x for x in range(6)]
    assert listed(platform) == [], "the cluster's sessions are deleted with the flow"

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        assert len(runs) == 6
        assert {run.state.type.value for run in runs} == {"COMPLETED"}

        def task_logs() -> list[str]:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
            return [log.message for log in logs if "measured on a Dask worker" in log.message]

        messages = wait_for(lambda: len(task_logs()) == 6 and task_logs(), timeout=30)
    sessions = {message.rsplit(" ", 1)[1] for message in messages}
    assert sessions and all(len(s) == 8 for s in sessions), messages
