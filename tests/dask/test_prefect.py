"""prefect-dask's DaskTaskRunner on a CanfarCluster, through the reduction example's
Dask variant: a real Prefect server, real worker sessions on the embedded platform.

One flow proves what a Prefect user checks: it completes with the right science, its
per-frame tasks ran on the Dask workers (adaptive, 1 to 2 sessions) and are Completed in
Prefect, the tasks' own log lines reached Prefect from the workers, and no session is
left once the flow returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.dask.conftest import ROOT, listed

sys.path.insert(0, str(ROOT / "examples" / "reduction"))
import flow_dask


def test_a_flow_runs_its_per_frame_steps_on_dask_workers_in_sessions(
    prefect_api, platform, cluster_kwargs, wait_for, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    runner = flow_dask.runner(
        cluster_kwargs["image"],
        2,
        python=cluster_kwargs["python"],
        shared_dir=cluster_kwargs["shared_dir"],
    )
    out = tmp_path / "night"
    state = flow_dask.reduce_night_dask.with_options(task_runner=runner)(
        out=str(out), frames=2, return_state=True
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["recovered"] == summary["planted"] >= 10, summary
    assert listed(platform) == [], "the cluster's sessions are deleted with the flow"
    workers = [entry for entry in platform.created() if entry["name"].startswith("dask-")]
    assert 1 <= len(workers) <= 2, "adapt kept the cluster between minimum and maximum"

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        per_frame = [r for r in runs if r.name.startswith(("calibrate_frame", "detect_sources"))]
        assert len(per_frame) == 4
        assert {r.state.type.value for r in runs} == {"COMPLETED"}

        def detections() -> list[str]:
            logs = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
            return [log.message for log in logs if log.message.endswith(" sources")]

        found = wait_for(lambda: len(detections()) == 2 and detections(), timeout=30)
    assert sorted(message.split(":")[0] for message in found) == ["frame00", "frame01"]
