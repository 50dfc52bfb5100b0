"""Concurrency limits that hold at the platform: count sessions, not flow-run states.

Prefect frees a pool's (or queue's) concurrency slot when the engine in a session
reports a final state; the session then still lives a moment (the engine exits, the
envelope records the exit code) while Prefect hands the slot to the next run. A worker
that created the next session at once would have N+1 sessions alive under a limit of N.
So before creating a session the worker waits until the sessions it still watches, in
that pool (and in that queue, for a queue limit), are fewer than the limit. Prefect has
already given this run a slot, so the wait is only for sessions whose engines are done.

Only this worker's own sessions (created or adopted) are counted: several workers on
one pool each bound their own, and Prefect's slot accounting bounds the runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Held:
    """A session this worker watches, and the queue of its flow run."""

    session_id: str | None
    queue: str | None


class Slots:
    """The sessions the worker watches, and a wait for room under a limit."""

    def __init__(self) -> None:
        self._held: dict[UUID, Held] = {}
        self._changed = asyncio.Event()

    def hold(self, flow_run_id: UUID, queue: str | None, session_id: str | None = None) -> None:
        """Count the run's session as alive (from just before it is created)."""
        self._held[flow_run_id] = Held(session_id, queue)

    def release(self, flow_run_id: UUID) -> None:
        """The run's session has ended (or was never created): free its place."""
        if self._held.pop(flow_run_id, None) is not None:
            self._changed.set()

    def count(self, queue: str | None = None) -> int:
        """Sessions held in the pool, or in one queue."""
        if queue is None:
            return len(self._held)
        return sum(1 for held in self._held.values() if held.queue == queue)

    def full(self, queue: str | None, pool_limit: int | None, queue_limit: int | None) -> bool:
        """Whether one more session would exceed the pool's or the queue's limit."""
        if pool_limit is not None and self.count() >= pool_limit:
            return True
        return queue_limit is not None and self.count(queue) >= queue_limit

    async def wait(
        self,
        queue: str | None,
        pool_limit: int | None,
        queue_limit: int | None,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        """Return once a session more fits under both limits (`on_wait` hears once
        how many are alive when it must wait)."""
        told = False
        while self.full(queue, pool_limit, queue_limit):
            if not told and on_wait is not None:
                on_wait(self.count())
                told = True
            self._changed.clear()
            await self._changed.wait()
