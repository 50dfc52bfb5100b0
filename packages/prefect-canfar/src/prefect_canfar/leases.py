"""Who watches a flow run's session: a lease in the run's labels, and its rules.

A `canfar` worker keeps what it watches in memory, so a worker that dies leaves runs
Pending or Running that nobody will ever report. Any worker of the pool may adopt
them, but only those nobody else watches, and only one worker each. The rules are
pure functions here (the I/O is in `prefect_canfar.adoption`):

- **The lease** is the flow-run label `canfar.io/watcher` = `<worker name>#<incarnation>`.
  The incarnation is random per worker process, so a worker restarted under the same
  `--name` tells its own runs from its predecessor's. The submitting worker writes it
  with Prefect's own label update, before the session exists; an adopter overwrites it.
- **Liveness** is Prefect's own worker heartbeat: a lease is held while the named
  worker's `last_heartbeat_time` is younger than `HEARTBEAT_MISSES` of its heartbeat
  interval (Prefect counts a worker offline on the same rule). No per-run renewal is
  written: a lease costs one label write per run, and one read of the pool's workers
  per adoption tick.
- **Claiming** is read, write, wait, read back. Labels have no compare-and-set, so each
  claimer reads the run, writes its lease if no live rival holds it, waits `settle`
  seconds, and reads the run again: whoever's lease is there then owns it, and the
  others leave it. A claim whose read and write took longer than half of `settle` is not
  trusted (its write may land after a rival's read-back); it is tried again on the next
  tick. Why that suffices: a rival whose write landed before my read made me see a held
  lease, so I did not write; one whose write landed after my read landed within
  `settle / 2` of my write (both windows are that short), so both read-backs, each at
  least `settle` after its own write, come after both writes and see the same last one.
- **Superseded** watchers report nothing: before reporting a run's end, a watcher reads
  the lease; if another live worker holds it, it stays silent. At most one watcher
  therefore reports a run, and Prefect refuses a Crashed over a final state anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from prefect.client.schemas.objects import FlowRun, Worker

LEASE_LABEL = "canfar.io/watcher"
# Prefect's own label naming the worker that submitted a run (runs without our lease).
WORKER_NAME_LABEL = "prefect.worker.name"
HEARTBEAT_MISSES = 3
DEFAULT_HEARTBEAT_SECONDS = 30.0
SEPARATOR = "#"


@dataclass(frozen=True)
class Lease:
    """A worker process: its name and the incarnation (None if unknown)."""

    worker: str
    incarnation: str | None = None

    def label(self) -> str:
        """The label value that names this worker process."""
        return f"{self.worker}{SEPARATOR}{self.incarnation or ''}"

    @classmethod
    def parse(cls, value: object) -> Lease | None:
        """The lease in a label value, or None if there is none."""
        if not isinstance(value, str) or not value:
            return None
        worker, sep, incarnation = value.rpartition(SEPARATOR)
        if not sep:
            return cls(value, None)
        return cls(worker, incarnation or None)


def lease_of(flow_run: FlowRun) -> Lease | None:
    """Who holds the run: its lease label, else the worker Prefect says submitted it."""
    labels: Mapping[str, object] = flow_run.labels or {}
    lease = Lease.parse(labels.get(LEASE_LABEL))
    if lease is not None:
        return lease
    name = labels.get(WORKER_NAME_LABEL)
    return Lease(name, None) if isinstance(name, str) and name else None


def live_workers(workers: Sequence[Worker], now: datetime | None = None) -> set[str]:
    """Names of the pool's workers whose heartbeat is recent enough to hold leases."""
    now = now or datetime.now(UTC)
    alive = set()
    for worker in workers:
        beat = worker.last_heartbeat_time
        if beat is None:
            continue
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        interval = float(worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS)
        if (now - beat).total_seconds() <= HEARTBEAT_MISSES * interval:
            alive.add(worker.name)
    return alive


def held_by_other(lease: Lease | None, me: Lease, alive: set[str]) -> bool:
    """Whether a live worker other than `me` holds the lease.

    A lease naming my worker name but another incarnation is my predecessor's (a
    restart under the same `--name`): not held. Two live workers sharing one name are
    one worker to Prefect too (they share a heartbeat); that is not supported.
    """
    if lease is None:
        return False
    if lease.worker == me.worker:
        return False
    return lease.worker in alive


def claimable(flow_run: FlowRun, me: Lease, alive: set[str], watching: set[object]) -> bool:
    """A run this worker may try to adopt: it has a session, I do not watch it, no
    other live worker holds it."""
    if not flow_run.infrastructure_pid or flow_run.id in watching:
        return False
    return not held_by_other(lease_of(flow_run), me, alive)


def won(flow_run: FlowRun, me: Lease) -> bool:
    """After the settle delay: whether the lease read back is mine."""
    return lease_of(flow_run) == me


def write_trusted(seconds: float, settle: float) -> bool:
    """Whether a lease write was quick enough for its read-back to decide (see above)."""
    return seconds <= settle / 2
