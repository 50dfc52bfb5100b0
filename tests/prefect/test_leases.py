"""The lease rules of `prefect_canfar.leases` and the session count of `slots`: pure, fast."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prefect.client.schemas.objects import FlowRun, Worker
from prefect_canfar.leases import (
    LEASE_LABEL,
    WORKER_NAME_LABEL,
    Lease,
    claimable,
    held_by_other,
    lease_of,
    live_workers,
    won,
    write_trusted,
)
from prefect_canfar.slots import Slots

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ME = Lease("canfar-1", "aaaa")


def run(labels: dict[str, str] | None = None, pid: str | None = "sess1") -> FlowRun:
    return FlowRun(flow_id=uuid4(), labels=labels or {}, infrastructure_pid=pid)


def worker(name: str, seconds_ago: float, interval: int | None = 30) -> Worker:
    return Worker(
        name=name,
        work_pool_id=uuid4(),
        last_heartbeat_time=NOW - timedelta(seconds=seconds_ago),
        heartbeat_interval_seconds=interval,
    )


def test_a_lease_names_a_worker_process_and_round_trips() -> None:
    assert Lease.parse(ME.label()) == ME
    assert Lease.parse("name with # inside#bbbb") == Lease("name with # inside", "bbbb")
    assert Lease.parse("") is None and Lease.parse(None) is None
    # Runs submitted before leases existed: Prefect's worker-name label stands in.
    assert lease_of(run({WORKER_NAME_LABEL: "old"})) == Lease("old", None)
    assert lease_of(run({LEASE_LABEL: ME.label(), WORKER_NAME_LABEL: "x"})) == ME


def test_liveness_is_three_missed_heartbeats() -> None:
    workers = [worker("fresh", 80), worker("stale", 100), worker("fast", 20, interval=5)]
    assert live_workers(workers, NOW) == {"fresh"}


def test_who_may_adopt() -> None:
    alive = {"canfar-2"}
    other_live = run({LEASE_LABEL: "canfar-2#cccc"})
    other_dead = run({LEASE_LABEL: "canfar-3#dddd"})
    predecessor = run({LEASE_LABEL: "canfar-1#zzzz"})  # restarted under the same name
    unleased = run()
    no_session = run(pid=None)
    assert held_by_other(lease_of(other_live), ME, alive)
    assert not claimable(other_live, ME, alive, set())
    assert claimable(other_dead, ME, alive, set())
    assert claimable(predecessor, ME, alive, set())
    assert claimable(unleased, ME, alive, set())
    assert not claimable(no_session, ME, alive, set())
    assert not claimable(predecessor, ME, alive, {predecessor.id})  # already mine


def test_a_race_has_one_winner() -> None:
    """Two claimers write within settle/2; both read back the last write: one wins."""
    rival = Lease("canfar-2", "cccc")
    after_both = run({LEASE_LABEL: rival.label()})
    assert won(after_both, rival) and not won(after_both, ME)
    # A slow write is not trusted: its read-back could come before a rival's write.
    assert write_trusted(1.9, settle=4) and not write_trusted(2.1, settle=4)


def test_slots_wait_for_a_session_to_end() -> None:
    async def scenario() -> list[str]:
        slots, seen = Slots(), []
        first, second = uuid4(), uuid4()
        slots.hold(first, "default")
        slots.hold(second, "other")
        assert slots.full("default", pool_limit=2, queue_limit=None)
        assert slots.full("default", pool_limit=None, queue_limit=1)
        assert not slots.full("third", pool_limit=None, queue_limit=1)

        async def waiter() -> None:
            await slots.wait("default", 2, None, on_wait=lambda n: seen.append(f"wait {n}"))
            seen.append("go")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        assert seen == ["wait 2"]
        slots.release(second)
        await asyncio.wait_for(task, 5)
        return seen

    assert asyncio.run(scenario()) == ["wait 2", "go"]
