"""`CanfarWorker.run` and `kill_infrastructure` in-process, against real parts.

A real Prefect server (flow runs, logs) and the real embedded CANFAR platform (sessions
are processes). The worker is driven the way Prefect's own worker tests drive theirs:
resolve a configuration, call `run()` with a task status, look at what it returns and
what reached the platform and the flow run's logs. Commands are small shell commands,
so no Prefect engine starts here; `test_e2e.py` runs real flows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest
from canfar_core import AsyncCanfarClient
from canfar_core.errors import (
    ConfigurationError,
    InvalidRequestError,
    SessionNotFoundError,
    SpecError,
)
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import async_wait_for
from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import InfrastructureNotFound
from prefect.logging.handlers import APILogHandler
from prefect.states import Pending
from prefect_canfar import CanfarCredentials, CanfarWorker, CanfarWorkerResult
from prefect_canfar.configuration import CanfarWorkerJobConfiguration

from tests.prefect.conftest import IMAGE, PrefectServer

POOL = "canfar-unit"
CAPACITY_RAM_GIB = 64


@flow(name="canfar-unit")
def noop() -> None:
    """The flow the unit flow runs belong to (never executed here)."""


@pytest.fixture(scope="module")
def canfar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """One embedded platform for this module; RAM capacity below /context's maximum,
    so a session asking for more stays Pending for ever, as on a full cluster."""
    platform = LocalPlatform.start(
        PlatformConfig(root=tmp_path_factory.mktemp("canfar-unit"), ram_gib=CAPACITY_RAM_GIB)
    )
    yield platform
    platform.stop(kill_sessions=True)


@pytest.fixture(autouse=True)
def _prefect(prefect_api: PrefectServer, monkeypatch: pytest.MonkeyPatch) -> PrefectServer:
    """The shared Prefect server, and a tracker that polls often (short tests)."""
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS", "0.2")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS", "1")
    return prefect_api


def canfar_worker() -> CanfarWorker:
    """A worker to enter with `async with` inside the test's own task (anyio requires the
    task that enters a worker's task group to exit it, so it cannot be a fixture)."""
    return CanfarWorker(work_pool_name=POOL)


async def new_flow_run() -> FlowRun:
    async with get_client() as client:
        return await client.create_flow_run(noop, state=Pending())


async def configure(
    canfar: LocalPlatform, flow_run: FlowRun, **values: Any
) -> CanfarWorkerJobConfiguration:
    """The configuration Prefect would build from the pool's default template."""
    values = {"image": IMAGE, "credentials": {"url": canfar.url, "token": canfar.token}, **values}
    configuration = await CanfarWorkerJobConfiguration.from_template_and_values(
        CanfarWorker.get_default_base_job_template(), values
    )
    configuration.prepare_for_flow_run(flow_run)
    return configuration


class Started:
    """A run in progress: the id it reported as started, and later its result."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.result: CanfarWorkerResult | None = None


async def run(
    worker: CanfarWorker, flow_run: FlowRun, configuration: CanfarWorkerJobConfiguration
) -> Started:
    started = Started()

    async def target(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        started.result = await worker.run(flow_run, configuration, task_status=task_status)

    async with anyio.create_task_group() as group:
        started.session_id = await group.start(target)
    return started


async def flow_run_logs(flow_run_id: UUID, text: str) -> str:
    """The flow run's logs in Prefect once they contain `text`."""

    async def read() -> str | None:
        await APILogHandler.aflush()
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=0
            )
        joined = "\n".join(log.message for log in logs)
        return joined if text in joined else None

    return await async_wait_for(read, timeout=90, interval=0.25, what=f"{text!r} in the logs")


async def session_exists(canfar: LocalPlatform, session_id: str) -> bool:
    async with AsyncCanfarClient(url=canfar.url, token=canfar.token) as client:
        try:
            await client.get(session_id)
        except SessionNotFoundError:
            return False
    return True


async def test_run_reports_the_session_and_its_exit_code(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(canfar, flow_run, command="echo working hard; exit 3")
        started = await run(worker, flow_run, configuration)
        assert started.result is not None
        assert started.result.identifier == started.session_id
        assert started.result.status_code == 3
        state = canfar.session_state(started.session_id)
        assert state is not None and state["exit_code"] == 3
        assert state["argv"][:2] == ["/bin/sh", "-c"]  # the command travelled in the envelope
        logs = await flow_run_logs(flow_run.id, "working hard")
        assert f"CANFAR session {started.session_id}" in logs
        assert "the command exited with code 3" in logs
        assert "Last 2 lines of the output" in logs


async def test_success_returns_zero_and_can_delete_the_session(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar,
            flow_run,
            command='test "$PREFECT__FLOW_RUN_ID" = "$EXPECTED"',
            env={"EXPECTED": str(flow_run.id)},
            name="Reduce {{ ctx.flow_run.name }} / night 1",
            delete_session_on_completion=True,
        )
        started = await run(worker, flow_run, configuration)
        assert started.result is not None and started.result.status_code == 0
        assert started.session_id is not None
        assert not await session_exists(canfar, started.session_id)
        logs = await flow_run_logs(flow_run.id, "completed with exit code 0")
        expected_name = f"reduce-{flow_run.name}-night-1-"
        assert f"({expected_name}" in logs


async def test_pending_timeout_deletes_the_session_and_logs_its_events(
    canfar: LocalPlatform,
) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar, flow_run, ram=CAPACITY_RAM_GIB + 1, pending_timeout_seconds=1
        )
        started = await run(worker, flow_run, configuration)
        assert started.result is not None and started.result.status_code == 1
        assert started.session_id is not None
        assert not await session_exists(canfar, started.session_id)
        logs = await flow_run_logs(flow_run.id, "still Pending after pending_timeout_seconds (1 s)")
        assert f"Events of CANFAR session {started.session_id}" in logs


async def test_job_timeout_stops_the_command_with_124(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar, flow_run, command="echo started; sleep 60", job_timeout_seconds=1
        )
        began = time.monotonic()
        started = await run(worker, flow_run, configuration)
        assert started.result is not None and started.result.status_code == 124
        assert time.monotonic() - began < 20
        assert started.session_id is not None
        assert not await session_exists(canfar, started.session_id)
        logs = await flow_run_logs(flow_run.id, "ran longer than job_timeout_seconds (1 s)")
        assert "runtime limit of 1 s exceeded" in logs  # the envelope's own line, forwarded


async def test_kill_infrastructure_deletes_the_session(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(canfar, flow_run, command="sleep 60")
        started = Started()

        async def target(*, task_status: anyio.abc.TaskStatus[str]) -> None:
            started.result = await worker.run(flow_run, configuration, task_status=task_status)

        async with anyio.create_task_group() as group:
            session_id = await group.start(target)
            await worker.kill_infrastructure(session_id, configuration)
        assert started.result is not None and started.result.status_code == 143
        assert not await session_exists(canfar, session_id)
        with pytest.raises(InfrastructureNotFound, match=f"CANFAR session {session_id} does not"):
            await worker.kill_infrastructure(session_id, configuration)
        await flow_run_logs(flow_run.id, "was deleted because the flow run was cancelled")


async def test_errors_before_started_raise_with_a_sentence(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()

        async def submit(**values: Any) -> None:
            configuration = await configure(canfar, flow_run, **values)
            reported: list[str] = []

            class Status:
                def started(self, value: str) -> None:
                    reported.append(value)

            try:
                await worker.run(flow_run, configuration, task_status=Status())  # type: ignore[arg-type]
            finally:
                assert reported == [], "nothing may be reported as started"

        with pytest.raises(ConfigurationError, match=r"refused the credentials .*Unauthorized"):
            await submit(credentials={"url": canfar.url, "token": "not-the-token"})
        with pytest.raises(SpecError, match=r"images must come from images\.canfar\.net"):
            await submit(image="docker.io/library/python:3.11")
        with pytest.raises(SpecError, match=r"cores=32 is not allowed: the largest cores"):
            await submit(cores=32)
        with pytest.raises(SpecError, match="env key='MY-VAR' is not allowed"):
            await submit(env={"MY-VAR": "x"})
        with pytest.raises(ValueError, match="job variable 'image' is not set"):
            await submit(image=" ")


async def test_credentials_come_from_a_saved_block(canfar: LocalPlatform) -> None:
    async with canfar_worker() as worker:
        block_id = await CanfarCredentials(url=canfar.url, token=canfar.token).save(
            "canfar-unit", overwrite=True
        )
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar,
            flow_run,
            command="exit 0",
            credentials={"$ref": {"block_document_id": str(block_id)}},
        )
        assert configuration.credentials is not None
        started = await run(worker, flow_run, configuration)
        assert started.result is not None and started.result.status_code == 0


async def test_twenty_concurrent_runs_cost_one_list_request_per_tick(
    canfar: LocalPlatform, tmp_path: Path
) -> None:
    """Every session waits until all 20 have started, so they provably overlap."""
    async with canfar_worker() as worker:
        runs = 20
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        flow_runs = [await new_flow_run() for _ in range(runs)]
        configurations = [
            await configure(
                canfar,
                flow_run,
                ram=1,
                state_dir=str(tmp_path / "state"),
                command=(
                    f"touch {barrier}/{index}; "
                    f'while [ "$(ls {barrier} | wc -l)" -lt {runs} ]; do sleep 0.1; done; '
                    f"exit {100 + index}"
                ),
            )
            for index, flow_run in enumerate(flow_runs)
        ]
        canfar.reset_counters()
        results: dict[int, CanfarWorkerResult] = {}

        async def one(index: int) -> None:
            results[index] = await worker.run(flow_runs[index], configurations[index])

        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for index in range(runs):
                    group.start_soon(one, index)
        assert {i: r.status_code for i, r in results.items()} == {i: 100 + i for i in range(runs)}
        assert len({r.identifier for r in results.values()}) == runs
        counters = canfar.counters()
        (backend,) = worker._backends._backends.values()
        assert backend.tracker.ticks > 0
        assert counters["GET /v1/session"] == backend.tracker.ticks
        assert counters["POST /v1/session"] == runs


async def test_private_images_need_registry_credentials(
    platform_factory: Callable[..., LocalPlatform],
) -> None:
    private = platform_factory(public_images=(IMAGE,))
    image = "images.canfar.net/team/private-pipeline:2.1"
    secret = "harbor-cli-secret-not-for-logs"
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        with pytest.raises(InvalidRequestError, match="No authentication provided for unknown"):
            await worker.run(flow_run, await configure(private, flow_run, image=image))
        configuration = await configure(
            private,
            flow_run,
            image=image,
            command="exit 0",
            registry_credentials={"username": "astro", "secret": secret},
        )
        assert secret not in repr(configuration)
        result = await worker.run(flow_run, configuration)
        assert result.status_code == 0
        logs = await flow_run_logs(flow_run.id, "completed with exit code 0")
        assert secret not in logs


async def test_a_session_deleted_behind_the_workers_back_is_reported_not_raised(
    canfar: LocalPlatform,
) -> None:
    """Someone runs `canfar delete` on the session: the run ends with -1 and a reason."""
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(canfar, flow_run, command="sleep 60")
        started = Started()

        async def target(*, task_status: anyio.abc.TaskStatus[str]) -> None:
            started.result = await worker.run(flow_run, configuration, task_status=task_status)

        async with anyio.create_task_group() as group:
            session_id = await group.start(target)
            async with AsyncCanfarClient(url=canfar.url, token=canfar.token) as user:
                await user.delete(session_id)
        assert started.result is not None and started.result.status_code == -1
        logs = await flow_run_logs(flow_run.id, "ended without recording an exit code")
        assert f"CANFAR session {session_id}" in logs


@pytest.mark.parametrize("shared_directory", [True, False])
async def test_stream_output_prints_the_sessions_output_once(
    canfar: LocalPlatform,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shared_directory: bool,
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_STREAM_INTERVAL_SECONDS", "0.2")
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar,
            flow_run,
            command="echo first line; sleep 1; echo second line",
            stream_output=True,
            state_dir=str(tmp_path) if shared_directory else None,
        )
        assert (await run(worker, flow_run, configuration)).result.status_code == 0  # type: ignore[union-attr]
    out = capsys.readouterr().out
    assert out.count("first line\n") == 1 and out.count("second line\n") == 1
    assert out.index("first line") < out.index("second line")
