"""A `canfar` worker that dies and a new one that adopts its sessions (issue 17).

Real parts: the shared Prefect server, `prefect worker start --type canfar` in its own
process group (SIGKILLed, as the OOM killer or a lost node would), the embedded
platform. Checked as a user would: what Prefect shows for each run, what the new
worker printed, and what the platform ran (no session duplicated, none left running);
and, for concurrency limits, how many sessions the platform had alive at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from canfar_local import LocalPlatform
from prefect import flow, get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from tests.prefect.conftest import (
    IMAGE,
    PrefectServer,
    create_pool,
    final_flow_run,
    read_flow_run,
    running_worker,
)
from tests.reliability.conftest import duplicated_names, none_left_running

FLOWS = Path(__file__).parent / "flows"
CRASH_CODE = 3


def worker_env(prefect_api: PrefectServer, platform: LocalPlatform) -> dict[str, str]:
    """A worker that polls and adopts often (short tests), reaching the platform."""
    return prefect_api.env(
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS="0.3",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_ADOPT_INTERVAL_SECONDS="2",
        PREFECT_INTEGRATIONS_CANFAR_LEASE_SETTLE_SECONDS="4",
        CANFAR_URL=platform.url,
        CANFAR_TOKEN=platform.token,
    )


def deploy(pool: str, entrypoint: str, name: str) -> Any:
    source: Any = flow.from_source(source=str(FLOWS), entrypoint=f"reliable_flows.py:{entrypoint}")
    return source.deploy(
        name=name, work_pool_name=pool, image=IMAGE, build=False, push=False, print_next_steps=False
    )


def test_a_new_worker_adopts_a_dead_workers_sessions(
    prefect_api: PrefectServer,
    platform_factory: Callable[..., LocalPlatform],
    tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    pool = "canfar-restart"
    platform = platform_factory()
    env = worker_env(prefect_api, platform)
    create_pool(env, pool)
    deployment = deploy(pool, "gated", "gated")
    marks = {key: tmp_path / key for key in ("a-started", "a-gate", "b-started", "b-gate")}
    survivor = run_deployment(
        deployment,
        parameters={"started": str(marks["a-started"]), "gate": str(marks["a-gate"])},
        timeout=0,
    )
    crasher = run_deployment(
        deployment,
        parameters={
            "started": str(marks["b-started"]),
            "gate": str(marks["b-gate"]),
            "exit_code": CRASH_CODE,
        },
        timeout=0,
    )
    with running_worker(env, pool, "restart", tmp_path / "first.log", create=False) as first:
        wait_for(
            lambda: marks["a-started"].exists() and marks["b-started"].exists(),
            timeout=180,
            interval=0.3,
            what="both flows to run in their sessions",
        )
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(30)
    # While no worker is up, the second flow's session ends without its engine reporting.
    crashed_session = read_flow_run(crasher.id).infrastructure_pid  # type: ignore[union-attr]
    marks["b-gate"].touch()
    wait_for(
        lambda: (platform.session_state(crashed_session) or {}).get("status") == "Failed",
        timeout=60,
        interval=0.3,
        what="the second session to end while no worker runs",
    )
    assert read_flow_run(crasher.id).state.type is StateType.RUNNING  # type: ignore[union-attr]

    with running_worker(env, pool, "restart", tmp_path / "second.log", create=False) as second:
        crashed = final_flow_run(crasher.id, timeout=60)  # type: ignore[union-attr]
        assert crashed.state is not None and crashed.state.type is StateType.CRASHED
        assert f"non-zero status code {CRASH_CODE}" in (crashed.state.message or "")
        assert read_flow_run(survivor.id).state.type is StateType.RUNNING  # type: ignore[union-attr]
        # Released only once adopted: a run that ends before the new worker's claim
        # settles (slow lease writes under load are retried a tick later) is reported
        # by its engine alone, with nothing for the new worker to see.
        survivor_session = read_flow_run(survivor.id).infrastructure_pid  # type: ignore[union-attr]
        try:
            wait_for(
                lambda: f"adopted CANFAR session {survivor_session}" in second.output(),
                timeout=120,
                interval=0.3,
                what="the new worker to adopt the first session",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it printed:\n{second.output()[-4000:]}") from None
        marks["a-gate"].touch()
        done = final_flow_run(survivor.id, timeout=120)  # type: ignore[union-attr]
        assert done.state is not None and done.state.type is StateType.COMPLETED, done.state
        # The engine reports Completed before its process exits; the exit waits for its
        # logs and events to reach the Prefect server, which on SQLite under load can
        # stall for its 60 s busy timeout. So: the session's end first, then the report.
        assert done.infrastructure_pid == survivor_session
        wait_for(
            lambda: (platform.session_state(survivor_session) or {}).get("status") == "Completed",
            timeout=240,
            interval=0.3,
            what="the first session to end",
        )
        try:
            wait_for(
                lambda: "completed with exit code 0." in second.output(),
                timeout=60,
                interval=0.3,
                what="the new worker to see the first session end",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it printed:\n{second.output()[-4000:]}") from None
        none_left_running(platform)
        output = second.output()
    assert output.count("adopted CANFAR session") == 2, output[-4000:]
    assert output.count("completed with exit code 0.") == 1, output[-4000:]
    assert f"failed: the command exited with code {CRASH_CODE}" in output
    assert "Traceback" not in output, output[-4000:]
    created = platform.created()
    assert len(created) == 2 and duplicated_names(created) == []


def test_a_concurrency_limit_bounds_live_sessions(
    prefect_api: PrefectServer,
    platform_factory: Callable[..., LocalPlatform],
    tmp_path: Path,
) -> None:
    pool, limit, runs = "canfar-limited", 2, 6
    platform = platform_factory()
    env = worker_env(prefect_api, platform)
    create_pool(env, pool)
    with get_client(sync_client=True) as client:
        client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=limit))
    deployment = deploy(pool, "brief", "brief")
    with running_worker(env, pool, "limited", tmp_path / "worker.log", create=False) as worker:
        ids = [run_deployment(deployment, timeout=0).id for _ in range(runs)]  # type: ignore[union-attr]
        finals = [final_flow_run(i, timeout=240) for i in ids]
        output = worker.output()
    assert {r.state.type for r in finals if r.state} == {StateType.COMPLETED}, output[-3000:]
    assert len(platform.created()) == runs
    # Sampled by the platform at every create: never more sessions alive than the limit.
    assert platform.peak_alive() == limit, output[-3000:]
