"""What a flow run shows while its session waits (issue 16): state, log, events.

The worker runs in-process against the shared Prefect server and one embedded platform
(its RAM below /context's maximum so a big request stays queued; one image tag it
cannot pull). Everything is read back through the Prefect API, as a user would: the
flow run's state history, its logs (`read_logs` with a flow-run filter) and the events
(`/events/filter`). Each test is one session and a few seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from uuid import UUID

import anyio
import pytest
from canfar_core import AsyncCanfarClient, SessionSpec
from canfar_local import LocalPlatform, PlatformConfig
from canfar_local.testing import async_wait_for
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import Log
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.logging.handlers import APILogHandler
from prefect_canfar.exit_codes import IMAGE_FAILURE, UNKNOWN_FAILURE, VANISHED

from tests.prefect.conftest import IMAGE, PrefectServer
from tests.prefect.test_worker import Started, canfar_worker, configure, new_flow_run, run

CAPACITY_RAM_GIB = 64
MISSING = "images.canfar.net/skaha/base:no-such-tag"


@pytest.fixture(scope="module")
def canfar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    platform = LocalPlatform.start(
        PlatformConfig(
            root=tmp_path_factory.mktemp("canfar-observer"),
            ram_gib=CAPACITY_RAM_GIB,
            unpullable_images=(MISSING,),
        )
    )
    yield platform
    platform.stop(kill_sessions=True)


@pytest.fixture(autouse=True)
def _prefect(prefect_api: PrefectServer, monkeypatch: pytest.MonkeyPatch) -> PrefectServer:
    """The shared server; a fast tracker and an image-pull window of seconds."""
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_POLL_MIN_SECONDS", "0.2")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_POLL_MAX_SECONDS", "1")
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_IMAGE_PULL_TIMEOUT_SECONDS", "3")
    return prefect_api


async def logs_of(flow_run_id: UUID) -> list[Log]:
    await APILogHandler.aflush()
    async with get_client() as client:
        return await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=0
        )


async def logs_once(flow_run_id: UUID, text: str) -> list[Log]:
    """The flow run's logs from the Prefect API once one of them contains `text`."""

    async def read() -> list[Log] | None:
        logs = await logs_of(flow_run_id)
        return logs if any(text in log.message for log in logs) else None

    return await async_wait_for(read, timeout=60, interval=0.25, what=f"{text!r} in the logs")


async def events_of(session_id: str, *names: str) -> list[ReceivedEvent]:
    """The session's events in the Prefect API once every one of `names` is there."""
    query = EventFilter(
        event=EventNameFilter(prefix=["prefect-canfar.session."]),
        resource=EventResourceFilter(id=[f"prefect-canfar.session.{session_id}"]),
    )

    async def read() -> list[ReceivedEvent] | None:
        async with get_client() as client:
            page = await client.read_events(filter=query, limit=50)
        found = {event.event for event in page.events}
        return page.events if set(names) <= found else None

    return await async_wait_for(read, timeout=60, interval=0.5, what=f"events {names}")


async def run_then(
    worker: Any, flow_run: Any, configuration: Any, after_start: Callable[[], Awaitable[None]]
) -> Started:
    """`run()`, doing `after_start` once the session exists and is watched."""
    started = Started()

    async def target(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        started.result = await worker.run(flow_run, configuration, task_status=task_status)

    async with anyio.create_task_group() as group:
        started.session_id = await group.start(target)
        await after_start()
    return started


async def state_history(flow_run_id: UUID) -> list[Any]:
    async with get_client() as client:
        return await client.read_flow_run_states(flow_run_id)


async def test_a_queued_session_says_why_once_in_the_flow_runs_state_log_and_events(
    canfar: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_CANFAR_HEARTBEAT_SECONDS", "2")
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(
            canfar, flow_run, ram=CAPACITY_RAM_GIB + 1, pending_timeout_seconds=5
        )
        # The session list fails twice while it waits: the client's retry warnings are
        # canfar-core records, and they belong in this flow run's log too.
        canfar.inject_fault(method="GET", route="/v1/session", status=500, count=2)
        started = await run(worker, flow_run, configuration)
    assert started.result is not None and started.result.status_code == UNKNOWN_FAILURE
    session_id = started.session_id
    assert session_id is not None

    logs = await logs_once(flow_run.id, "was still Pending after pending_timeout_seconds")
    queued = [log.message for log in logs if "is Pending: queued" in log.message]
    assert len(queued) == 1, queued
    assert session_id in queued[0] and "admission queue has not admitted it yet" in queued[0]
    assert any(f"{session_id} is still Pending after" in log.message for log in logs)
    retries = [log for log in logs if "GET session failed (HTTP 500" in log.message]
    assert retries and retries[0].name == "canfar_core.client"

    states = await state_history(flow_run.id)
    pending = [s for s in states if s.name == "InfrastructurePending"]
    assert len(pending) == 1 and "is Pending: queued" in (pending[0].message or "")
    # The session never started: the Crashed state itself explains, with the events.
    final = states[-1]
    assert final.type.value == "CRASHED", final
    assert "still Pending after pending_timeout_seconds (5 s)" in (final.message or "")
    assert f"Events of CANFAR session {session_id}" in (final.message or "")

    events = await events_of(
        session_id, "prefect-canfar.session.pending", "prefect-canfar.session.ended"
    )
    queued_event = next(e for e in events if e.resource.get("prefect-canfar.diagnosis") == "Queued")
    assert queued_event.event == "prefect-canfar.session.pending"
    assert queued_event.resource.get("prefect-canfar.session-id") == session_id
    roles = {r.role: r.id for r in queued_event.related}
    assert roles["flow-run"] == f"prefect.flow-run.{flow_run.id}"
    [ended] = [e for e in events if e.event == "prefect-canfar.session.ended"]
    assert ended.resource.get("prefect-canfar.outcome") == "pending-timeout"


async def test_an_unpullable_image_crashes_the_flow_run_within_the_window(
    canfar: LocalPlatform,
) -> None:
    async with AsyncCanfarClient(url=canfar.url, token=canfar.token) as platform:
        # The machine is full: the run's session first queues, then is admitted and
        # cannot pull its image; its state follows the reason as it changes.
        blocker = await platform.create(
            SessionSpec(name="blocker", image=IMAGE, ram=CAPACITY_RAM_GIB, cmd="sleep", args="120")
        )
        async with canfar_worker() as worker:
            flow_run = await new_flow_run()
            # A mistyped tag fails in the 3 s window, not at the hour-long pending timeout.
            configuration = await configure(
                canfar, flow_run, image=MISSING, ram=1, pending_timeout_seconds=3600
            )

            async def admit() -> None:
                await logs_once(flow_run.id, "is Pending: queued")
                await platform.delete(blocker)

            started = await run_then(worker, flow_run, configuration, admit)
    assert started.result is not None and started.result.status_code == IMAGE_FAILURE
    session_id = started.session_id
    assert session_id is not None

    logs = await logs_once(flow_run.id, "could not pull its image and was deleted")
    assert any("the image cannot be pulled" in log.message for log in logs)
    states = await state_history(flow_run.id)
    pending = [s.message or "" for s in states if s.name == "InfrastructurePending"]
    assert len(pending) == 2, pending
    assert "is Pending: queued" in pending[0]
    assert "is Pending: the image cannot be pulled" in pending[1]
    final = states[-1]
    assert final.type.value == "CRASHED", final
    message = final.message or ""
    assert "could not pull its image" in message
    assert "ErrImagePull" in message and "ImagePullBackOff" in message

    events = await events_of(session_id, "prefect-canfar.session.ended")
    [ended] = [e for e in events if e.event == "prefect-canfar.session.ended"]
    assert ended.resource.get("prefect-canfar.outcome") == "image-pull-failed"
    assert ended.resource.get("prefect-canfar.diagnosis") == "ImagePull"
    assert ended.resource.get("prefect-canfar.status-code") == str(IMAGE_FAILURE)


async def test_credentials_refused_while_following_are_reported_as_a_refusal(
    canfar: LocalPlatform,
) -> None:
    async with canfar_worker() as worker:
        flow_run = await new_flow_run()
        configuration = await configure(canfar, flow_run, ram=CAPACITY_RAM_GIB + 1)

        # The session waits; then CANFAR refuses the token on the next listing.
        async def refuse() -> None:
            canfar.inject_fault(method="GET", route="/v1/session", status=401, count=1)

        started = await run_then(worker, flow_run, configuration, refuse)
    assert started.result is not None and started.result.status_code == VANISHED
    logs = await logs_once(flow_run.id, "refused the credentials")
    assert not any("Lost track" in log.message for log in logs)
    final = (await state_history(flow_run.id))[-1]
    assert final.type.value == "CRASHED" and "refused the credentials" in (final.message or "")
    async with AsyncCanfarClient(url=canfar.url, token=canfar.token) as client:
        await client.delete(started.session_id or "")
