"""The tracker against the embedded platform: one list per tick, every outcome."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from canfar_core import (
    AsyncCanfarClient,
    CredentialsRefusedError,
    OutcomeKind,
    RetryPolicy,
    SessionSpec,
    SessionTracker,
    TrackerOutageError,
    envelope,
)

IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
NO_RETRY = RetryPolicy(attempts=1)


def client_for(platform, **kwargs) -> AsyncCanfarClient:
    return AsyncCanfarClient(url=platform.url, token=platform.token, **kwargs)


async def test_one_list_request_per_tick_for_200_sessions(platform_factory) -> None:
    platform = platform_factory(cores=400, ram_gib=1000)
    spec = SessionSpec(name="bulk", image=IMAGE, cmd="sleep", args="2")
    async with client_for(platform) as client:
        ids = await client.create(spec, replicas=200)
        platform.reset_counters()
        # Events of Pending sessions are read after events_delay; 200 supervisors starting
        # on a loaded machine may take that long, and this test counts only the list.
        tracker = SessionTracker(client, min_interval=0.3, max_interval=1.0, events_delay=600)
        futures = [tracker.watch(i, enveloped=False) for i in ids]
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), timeout=120)
        await tracker.aclose()
    counts = platform.counters()
    assert all(o.success for o in outcomes)
    assert counts["GET /v1/session"] == tracker.ticks
    assert tracker.ticks < 200, "the whole point: not one request per session"
    # Per-session requests are only the log fetch at the end (one each), never polling.
    assert counts.get("GET /v1/session/{id}", 0) == 200


async def test_interval_backs_off_while_idle_and_resets_on_change(platform) -> None:
    async with client_for(platform) as client:
        session_id = await client.create(
            SessionSpec(name="idle", image=IMAGE, cmd="sleep", args="3")
        )
        tracker = SessionTracker(client, min_interval=0.1, max_interval=0.8, backoff=2)
        future = tracker.watch(session_id, enveloped=False)
        await asyncio.sleep(1.5)
        assert tracker.interval == pytest.approx(0.8)
        outcome = await future
        await tracker.aclose()
    assert outcome.success and tracker.ticks < 15


async def test_vanished_without_exit_file_is_a_failure(platform, tmp_path: Path) -> None:
    async with client_for(platform) as client:
        wrapped = envelope(["sleep", "30"], state_dir=tmp_path)
        session_id = await client.create(wrapped.spec(name="gone", image=IMAGE))
        tracker = SessionTracker(client, min_interval=0.1, vanish_grace=0.5)
        future = tracker.watch(session_id, state_dir=str(tmp_path))
        await client.delete(session_id)  # behind the tracker's back
        outcome = await future
        await tracker.aclose()
    assert outcome.kind is OutcomeKind.VANISHED and not outcome.success
    assert "without recording an exit code" in (outcome.reason or "")


async def test_vanished_with_exit_file_uses_the_file(platform, tmp_path: Path) -> None:
    async with client_for(platform) as client:
        wrapped = envelope(["true"], state_dir=tmp_path)
        session_id = await client.create(wrapped.spec(name="quick", image=IMAGE))
        for _ in range(200):
            if (tmp_path / f"{session_id}.exit").exists():
                break
            await asyncio.sleep(0.05)
        await client.delete(session_id)
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, state_dir=str(tmp_path))
        await tracker.aclose()
    assert outcome.success and outcome.exit_code == 0


async def test_pending_timeout_deletes_and_reports_events(platform_factory) -> None:
    platform = platform_factory(cores=2, ram_gib=8)
    async with client_for(platform) as client:
        hog = await client.create(
            SessionSpec(name="hog", image=IMAGE, cores=2, ram=1, cmd="sleep", args="60")
        )
        queued = await client.create(
            SessionSpec(name="queued", image=IMAGE, cores=2, ram=1, cmd="true")
        )
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(queued, pending_timeout=1.0)
        await tracker.aclose()
        remaining = {s.id for s in await client.list_sessions()}
        await client.delete(hog)
    assert outcome.kind is OutcomeKind.PENDING_TIMEOUT
    assert "still Pending after 1 s" in (outcome.reason or "")
    assert "still queued" in (outcome.reason or "")
    assert queued not in remaining


async def test_pending_timeout_on_an_unpullable_image_shows_the_pull_events(
    platform_factory,
) -> None:
    missing = "images.canfar.net/skaha/terminal:no-such-tag"
    platform = platform_factory(unpullable_images=(missing,))
    async with client_for(platform) as client:
        session_id = await client.create(SessionSpec(name="pull", image=missing, cmd="true"))
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, pending_timeout=1.0)
        await tracker.aclose()
    assert outcome.kind is OutcomeKind.PENDING_TIMEOUT
    assert outcome.events_table is not None and "ErrImagePull" in outcome.events_table
    assert "ImagePullBackOff" in (outcome.reason or "")


async def test_runtime_limit_deletes_a_running_session(platform) -> None:
    async with client_for(platform) as client:
        session_id = await client.create(
            SessionSpec(name="long", image=IMAGE, cmd="sleep", args="60")
        )
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, runtime_limit=0.5)
        await tracker.aclose()
        assert session_id not in {s.id for s in await client.list_sessions()}
    assert outcome.kind is OutcomeKind.RUNTIME_EXCEEDED and not outcome.success


async def test_out_of_memory_is_reported_as_137(platform, tmp_path: Path) -> None:
    hog = "b = bytearray(3 * 1024**3); import time; time.sleep(30)"
    wrapped = envelope([sys.executable, "-c", hog], state_dir=tmp_path)
    async with client_for(platform) as client:
        session_id = await client.create(wrapped.spec(name="oom", image=IMAGE, ram=1))
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, state_dir=str(tmp_path))
        await tracker.aclose()
    assert outcome.kind is OutcomeKind.OUT_OF_MEMORY
    assert outcome.exit_code == 137
    assert "memory" in (outcome.reason or "")


async def test_failed_session_reports_log_tail_and_events(platform) -> None:
    async with client_for(platform) as client:
        spec = SessionSpec(
            name="fails", image=IMAGE, cmd="/bin/sh", args="-c $(S)", env={"S": "echo boom; exit 2"}
        )
        session_id = await client.create(spec)
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, enveloped=False)
        await tracker.aclose()
    assert outcome.kind is OutcomeKind.FAILED and outcome.exit_code is None
    assert "boom" in outcome.log_tail()
    assert outcome.events_table is not None and "Started" in outcome.events_table


async def test_short_outage_is_tolerated(platform) -> None:
    async with client_for(platform, retry=NO_RETRY) as client:
        session_id = await client.create(
            SessionSpec(name="calm", image=IMAGE, cmd="sleep", args="1")
        )
        platform.inject_fault(method="GET", route="/v1/session", status=503, count=3)
        tracker = SessionTracker(client, min_interval=0.1, outage_seconds=30)
        outcome = await tracker.watch(session_id, enveloped=False)
        await tracker.aclose()
    assert outcome.success


async def test_long_outage_gives_up_with_a_clear_error(platform) -> None:
    async with client_for(platform, retry=NO_RETRY) as client:
        session_id = await client.create(
            SessionSpec(name="stormy", image=IMAGE, cmd="sleep", args="30")
        )
        platform.inject_fault(method="GET", route="/v1/session", status=503, count=10_000)
        tracker = SessionTracker(client, min_interval=0.1, max_interval=0.2, outage_seconds=1)
        with pytest.raises(TrackerOutageError, match="unreadable"):
            await tracker.watch(session_id)
        lost = tracker.outcome(session_id)
        assert lost is not None and lost.kind is OutcomeKind.LOST and not lost.success
        await tracker.aclose()
        platform.clear_faults()
        await client.delete(session_id)


async def test_a_session_missing_just_after_watch_gets_a_grace(platform) -> None:
    async with client_for(platform) as client:
        tracker = SessionTracker(client, min_interval=0.1, vanish_grace=30)
        tracker.watch("nosuchid")  # as if the list lagged behind the create
        for _ in range(3):
            await tracker.tick()
        assert tracker.outcome("nosuchid") is None
        tracker.vanish_grace = 0
        await tracker.tick()
        await tracker.aclose()
    outcome = tracker.outcome("nosuchid")
    assert outcome is not None and outcome.kind is OutcomeKind.VANISHED


def test_tracker_refuses_an_interval_near_the_retention() -> None:
    with pytest.raises(ValueError, match="max_interval=3600"):
        SessionTracker(AsyncCanfarClient(url="http://x/skaha/v1", token="t"), max_interval=3600)


def mock_client(handler) -> AsyncCanfarClient:
    """A client on httpx's MockTransport: a unit test of one rule, beside the e2e ones."""
    return AsyncCanfarClient(
        url="http://canfar.test/skaha/v1",
        token="t",
        retry=NO_RETRY,
        transport=httpx.MockTransport(handler),
    )


async def test_a_403_on_the_list_is_a_refusal_not_an_outage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="Not authorized to use the skaha system\n")

    async with mock_client(handler) as client:
        tracker = SessionTracker(client, min_interval=0.1, outage_seconds=600)
        with pytest.raises(CredentialsRefusedError, match="but denied access") as caught:
            await asyncio.wait_for(tracker.watch("abc"), 5)
        await tracker.aclose()
    assert caught.value.sessions == ["abc"]
    assert "CANFAR at http://canfar.test/skaha/v1 accepted the credentials from arguments" in str(
        caught.value
    )
    assert tracker.refusal is caught.value


async def test_with_an_injected_clock_a_terminating_session_is_deleted_as_stuck() -> None:
    """The stuck rule on a fake clock: logs read at the grace and once more at the end."""
    now = [0.0]
    seen: list[str] = []
    gone: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        view = request.url.params.get("view")
        seen.append(f"{request.method} {view or request.url.path}")
        if request.method == "DELETE":
            gone.append(request.url.path.rsplit("/", 1)[1])
            return httpx.Response(200)
        if view == "logs":
            return httpx.Response(200, text="still going\n")
        if view == "events":
            return httpx.Response(200, text="<none>\n")
        listing = [{"id": "abc", "status": "Terminating", "type": "headless"}]
        return httpx.Response(200, json=[s for s in listing if s["id"] not in gone])

    async with mock_client(handler) as client:
        tracker = SessionTracker(client, stuck_grace=60, stuck_timeout=600, clock=lambda: now[0])
        future = tracker.watch("abc")
        await tracker.aclose()  # tick by hand, on the fake clock
        for moment in (0, 59, 60, 300, 599):
            now[0] = moment
            await tracker.tick()
            assert not future.done(), moment
        now[0] = 600
        await tracker.tick()
    outcome = future.result()
    assert outcome.kind is OutcomeKind.STUCK and gone == ["abc"]
    assert seen.count("GET logs") == 2, seen
    assert "stayed Terminating for 600 s" in (outcome.reason or "")
