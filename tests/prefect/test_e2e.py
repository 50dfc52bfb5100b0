"""End to end: a real Prefect server, `prefect worker start --type canfar` in a
subprocess, flows deployed with `flow.from_source(...).deploy(...)`, and sessions on the
real embedded CANFAR platform running `python -m prefect.engine`.

What is asserted is what a user sees: final states and their messages, the flow run's
logs in Prefect, the session on the platform, and the worker's own output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import wait_for
from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.states import Cancelling
from prefect_canfar import CanfarWorker

from tests.core import official
from tests.prefect.conftest import (
    IMAGE,
    PrefectServer,
    Worker,
    final_flow_run,
    read_flow_run,
    running_worker,
)

POOL = "canfar-e2e"
FLOWS = Path(__file__).parent / "flows"
API_KEY = "pnu_e2e0secret0api0key0do0not0log0me"
CAPACITY_RAM_GIB = 64
UNPULLABLE = "images.canfar.net/skaha/astroml:no-such-tag"
RUN_SECONDS = 180


@pytest.fixture(scope="module")
def canfar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """The platform the worker reaches through its `canfar login` (an OIDC login whose
    2-minute access tokens the worker refreshes, and saves back, during the module)."""
    platform = LocalPlatform.start(
        PlatformConfig(
            root=tmp_path_factory.mktemp("canfar-e2e"),
            ram_gib=CAPACITY_RAM_GIB,
            unpullable_images=(UNPULLABLE,),
            access_token_seconds=120,
        )
    )
    yield platform
    platform.stop(kill_sessions=True)


@pytest.fixture(scope="module")
def worker(
    prefect_api: PrefectServer, canfar: LocalPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """`prefect work-pool create --type canfar`, then `prefect worker start` on it.

    The worker's only CANFAR credentials are the official client's ~/.canfar/config.yaml
    (saved by canfar's own code): no CANFAR_URL, no CANFAR_TOKEN.
    """
    home = tmp_path_factory.mktemp("worker-home")
    official.save(home, official.from_login(canfar.oidc_login()), canfar.url.rsplit("/v1", 1)[0])
    env = prefect_api.env(
        HOME=str(home),
        PREFECT_API_KEY=API_KEY,
        PREFECT_LOGGING_LEVEL="DEBUG",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_ENABLE_CANCELLATION="true",
        PREFECT_WORKER_CANCELLATION_POLL_SECONDS="1",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS="0.5",
        PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS="1",
        CANFAR_LOCAL_ROOT=str(tmp_path_factory.mktemp("canfar-local")),
    )
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(env, POOL, "e2e", log) as handle:
        yield handle


def deploy(entrypoint: str, name: str, image: str = IMAGE, **job_variables: Any) -> UUID:
    """Deploy a flow of `flows/` the way the README says."""
    source: Any = flow.from_source(source=str(FLOWS), entrypoint=f"e2e_flows.py:{entrypoint}")
    return source.deploy(
        name=name,
        work_pool_name=POOL,
        image=image,
        build=False,
        push=False,
        job_variables={"env": {"PREFECT_LOGGING_LEVEL": "INFO"}, **job_variables},
        print_next_steps=False,
    )


def start(deployment_id: UUID) -> FlowRun:
    return run_deployment(deployment_id, timeout=0)  # type: ignore[return-value]


def read(flow_run_id: UUID) -> FlowRun:
    return read_flow_run(flow_run_id)


def final(flow_run_id: UUID) -> FlowRun:
    return final_flow_run(flow_run_id, RUN_SECONDS)


def logs(flow_run_id: UUID, text: str) -> str:
    """The flow run's logs in Prefect once they contain `text`."""

    def find() -> str | None:
        with get_client(sync_client=True) as client:
            found = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
            )
        joined = "\n".join(entry.message for entry in found)
        return joined if text in joined else None

    return wait_for(find, timeout=120, interval=0.5, what=f"{text!r} in the flow run's logs")


def test_pool_was_created_from_the_cli(worker: Worker) -> None:
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(POOL)
    assert pool.type == "canfar"
    assert pool.base_job_template == CanfarWorker.get_default_base_job_template()


def test_flow_completes_and_its_logs_are_in_prefect(worker: Worker) -> None:
    run = start(deploy("hello", "hello"))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.COMPLETED, done.state
    session_id = done.infrastructure_pid
    assert session_id
    fingerprint = hashlib.sha256(API_KEY.encode()).hexdigest()[:16]
    found = logs(run.id, f"hello CANFAR from session {session_id}")
    # The API key reached the session (inside the launch envelope) ...
    assert f"api key sha256 {fingerprint}" in found
    assert f"Created CANFAR session {session_id}" in found
    assert "loopback" not in found  # the platform is this machine: no reachability warning


def test_flow_that_raises_ends_failed(worker: Worker) -> None:
    run = start(deploy("explode", "explode"))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.FAILED, done.state
    assert "this flow raises on purpose" in logs(run.id, "this flow raises on purpose")


def test_killed_flow_process_ends_crashed_with_the_oom_hint(worker: Worker) -> None:
    run = start(deploy("killed", "killed"))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.CRASHED, done.state
    message = done.state.message or ""
    assert "non-zero status code 137" in message
    assert "out-of-memory" in message
    found = logs(run.id, "Increase the memory allocation")
    assert "(exit code 137), most likely for using more memory than its `ram`" in found


def test_flow_over_its_ram_ends_crashed_with_the_oom_hint(worker: Worker) -> None:
    """The platform enforces `ram` as the kernel would: the flow's process is killed."""
    run = start(deploy("hog", "hog", ram=1))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.CRASHED, done.state
    # The engine is killed with no supervisor above it: the worker reports the code.
    message = done.state.message or ""
    assert "non-zero status code 137" in message and "out-of-memory" in message


def test_run_stuck_pending_ends_crashed_with_the_events(
    worker: Worker, canfar: LocalPlatform
) -> None:
    deployment = deploy("hello", "unpullable", image=UNPULLABLE, pending_timeout_seconds=2)
    run = start(deployment)
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.CRASHED, done.state
    found = logs(run.id, "still Pending after pending_timeout_seconds (2 s)")
    assert f"Events of CANFAR session {done.infrastructure_pid}" in found
    assert "ErrImagePull" in found and "ImagePullBackOff" in found
    # The worker's explanation is the Crashed state's message, not only a log line.
    assert f"Events of CANFAR session {done.infrastructure_pid}" in (done.state.message or "")
    assert done.infrastructure_pid
    gone = canfar.session_state(done.infrastructure_pid)
    assert gone is None or gone["phase"] == "deleted"


def test_pending_run_is_cancelled_and_its_session_deleted(
    worker: Worker, canfar: LocalPlatform
) -> None:
    deployment = deploy("hello", "queued", ram=CAPACITY_RAM_GIB + 1, pending_timeout_seconds=600)
    run = start(deployment)
    session_id = wait_for(
        lambda: read(run.id).infrastructure_pid, timeout=150, interval=0.5, what="a session"
    )
    assert canfar.session_state(session_id)["status"] == "Pending"  # type: ignore[index]
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling())
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.CANCELLED, done.state
    state = canfar.session_state(session_id)
    assert state is None or state["phase"] == "deleted"


def test_local_mode_starts_the_platform_in_the_worker(worker: Worker) -> None:
    run = start(deploy("hello", "local", url="local"))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.COMPLETED, done.state
    logs(run.id, f"hello CANFAR from session {done.infrastructure_pid}")


def test_the_api_key_appears_in_no_worker_log_line(worker: Worker) -> None:
    """The worker logs at DEBUG level and streams the session's output; the key set in
    its environment reaches the session but none of that output."""
    run = start(deploy("hello", "streamed", stream_output=True))
    done = final(run.id)
    assert done.state is not None and done.state.type == StateType.COMPLETED, done.state
    streamed = f"hello CANFAR from session {done.infrastructure_pid}"

    def streamed_output() -> str | None:
        text = worker.output()
        return text if streamed in text else None

    output = wait_for(
        streamed_output,
        timeout=30,
        interval=0.2,
        what="the session's output on the worker's stdout",
    )
    assert API_KEY not in output
