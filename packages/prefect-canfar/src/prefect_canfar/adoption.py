"""Adopting the sessions of a worker that died, and watching runs for cancellation.

When it starts, and then every `adopt_interval_seconds`, a `canfar` worker reads its
pool's flow runs that are Pending, Running or Cancelling and have a session id
(`infrastructure_pid`), and the pool's workers. Runs no live worker holds (see
`prefect_canfar.leases`) are claimed; each won claim becomes a watch exactly like the
original worker's: one tracker per server and identity, the same status codes and log
lines, and a Crashed state (exit code, reason, log tail) when the session ended with
a failure the engine in it never reported. A session that ended while nobody watched is
still listed by CANFAR (for an hour) with its exit code, so it is reported on the
adopter's first tick; one CANFAR no longer lists is reported as vanished (-1).

The same tick serves the runs this worker watches: a run that turned Cancelling gets
its session deleted and is marked Cancelled (the engine alone, `python -m
prefect.engine`, does not watch for cancellation; Prefect's own observer only acts on
runs whose engine never started), and a run whose lease another live worker took is
marked superseded: its end is then reported by that worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from canfar_core import runtime_backstop
from prefect._internal.infrastructure_exit_codes import get_infrastructure_exit_info
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import InfrastructureNotFound

from prefect_canfar.connections import resolve_connection
from prefect_canfar.leases import (
    LEASE_LABEL,
    Lease,
    claimable,
    held_by_other,
    lease_of,
    live_workers,
    won,
    write_trusted,
)
from prefect_canfar.observer import SessionObserver

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from prefect_canfar.configuration import CanfarWorkerJobConfiguration
    from prefect_canfar.worker import CanfarWorker

log = logging.getLogger(__name__)
ADOPTABLE = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)
PAGE = 200
FIRST_TICK_SECONDS = 60.0


@dataclass
class Watched:
    """A run this worker watches: its session and the configuration it runs with."""

    session_id: str
    configuration: CanfarWorkerJobConfiguration


class Adopter:
    """The worker's adoption and cancellation tick (see the module docstring)."""

    def __init__(self, worker: CanfarWorker) -> None:
        self.worker = worker
        self.me = Lease(worker.name, uuid4().hex[:12])
        self.watched: dict[UUID, Watched] = {}
        self.superseded: set[UUID] = set()
        self.adopted = 0
        self._task: asyncio.Task[None] | None = None
        self._watches: set[asyncio.Task[None]] = set()
        self._first: asyncio.Event | None = None

    # -- life ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the tick (once); wait for the first one, so that adopted sessions are
        counted before this worker creates any (bounded: a slow API delays nothing long)."""
        if self._task is None:
            self._first = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="canfar-adoption"
            )
        assert self._first is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), FIRST_TICK_SECONDS)

    async def aclose(self) -> None:
        """Stop the tick and the adopted watches (their sessions keep running: the next
        worker adopts them)."""
        tasks = [t for t in (self._task, *self._watches) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._task = None

    def register(self, flow_run_id: UUID, session_id: str, configuration: Any) -> None:
        """A run whose session this worker created: watch it for cancellation."""
        self.watched[flow_run_id] = Watched(session_id, configuration)

    def unregister(self, flow_run_id: UUID) -> None:
        self.watched.pop(flow_run_id, None)
        self.superseded.discard(flow_run_id)

    async def _loop(self) -> None:
        assert self._first is not None
        interval = self.worker.settings.adopt_interval_seconds
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the Prefect API being down must not stop the loop
                self.worker._logger.warning(
                    "Looking for CANFAR sessions to adopt failed (%s: %s); trying again in %g s.",
                    type(exc).__name__,
                    exc,
                    interval,
                )
            finally:
                self._first.set()
            await asyncio.sleep(interval)

    # -- the tick --------------------------------------------------------------------

    async def tick(self) -> None:
        """One look at the pool: serve the runs I watch, claim and adopt orphans."""
        client = self.worker.client
        pool = self.worker._work_pool_name
        alive = live_workers(await client.read_workers_for_work_pool(pool))
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(ADOPTABLE)))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=PAGE,
        )
        queues = set(self.worker._work_queues or ())
        runs = [
            r for r in runs if r.infrastructure_pid and (not queues or r.work_queue_name in queues)
        ]
        mine = set(self.watched) | set(self.worker._watched_runs)
        candidates = [r for r in runs if claimable(r, self.me, alive, mine)]
        if candidates:
            await self._claim(candidates, alive)
        for run in runs:
            if run.id in mine:
                await self._serve(run, alive)

    async def _serve(self, run: FlowRun, alive: set[str]) -> None:
        """A run I watch: note if another worker took it; act on a cancellation."""
        if held_by_other(lease_of(run), self.me, alive):
            if run.id not in self.superseded:
                self.superseded.add(run.id)
                self.worker.get_flow_run_logger(run).info(
                    "Worker %s now watches CANFAR session %s; %s leaves it to it.",
                    lease_of(run).worker,  # type: ignore[union-attr]
                    run.infrastructure_pid,
                    self.me.worker,
                )
            return
        if run.state is not None and run.state.type is StateType.CANCELLING:
            await self._cancel(run)

    async def _cancel(self, run: FlowRun) -> None:
        """Delete a cancelling run's session and mark the run Cancelled, once."""
        watched = self.watched.get(run.id)
        if watched is None or watched.session_id in self.worker._killed:
            return
        if run.start_time is None and self.worker._cancelling_observer is not None:
            return  # Prefect's own observer cancels runs whose engine never started
        try:
            await self.worker.kill_infrastructure(watched.session_id, watched.configuration)
        except InfrastructureNotFound:
            self.worker._killed.add(watched.session_id)
        await self.worker._mark_flow_run_as_cancelled(
            run,
            state_updates={
                "message": f"Cancelled: CANFAR session {watched.session_id} was deleted."
            },
        )

    async def _claim(self, candidates: list[FlowRun], alive: set[str]) -> None:
        """Write my lease on each, wait, read back; adopt those whose lease is mine."""
        client = self.worker.client
        settle = self.worker.settings.lease_settle_seconds
        label = {LEASE_LABEL: self.me.label()}

        async def write(run: FlowRun) -> UUID | None:
            # The window starts at a fresh read of this run, not at the pool's listing,
            # so that a loaded API slows claims down without failing them all.
            started = time.monotonic()
            try:
                current = await client.read_flow_run(run.id)
                if not claimable(current, self.me, alive, set(self.worker._watched_runs)):
                    return None
                await client.update_flow_run_labels(run.id, label)
            except Exception as exc:
                log.warning("Could not claim flow run %s (%s); later.", run.id, exc)
                return None
            took = time.monotonic() - started
            if write_trusted(took, settle):
                return run.id
            self.worker._logger.debug(
                "Claim of flow run %s took %.1f s (over half of %g s); trying again.",
                run.id,
                took,
                settle,
            )
            return None

        trusted = [i for i in await asyncio.gather(*map(write, candidates)) if i is not None]
        if not trusted:
            return
        await asyncio.sleep(settle)
        fresh = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=trusted))
        )
        for run in fresh:
            if run.state is None or run.state.type not in ADOPTABLE:
                continue
            if run.id in self.worker._watched_runs or not won(run, self.me):
                continue
            self._adopt(run)

    # -- adopted watches -------------------------------------------------------------

    def _adopt(self, run: FlowRun) -> None:
        self.worker._watched_runs.add(run.id)
        self.worker._slots.hold(run.id, run.work_queue_name, run.infrastructure_pid)
        self.adopted += 1
        task = asyncio.get_running_loop().create_task(
            self._watch(run), name=f"canfar-adopted-{run.id}"
        )
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    async def _watch(self, run: FlowRun) -> None:
        """Follow an adopted session to its end, reporting as the original worker would."""
        worker = self.worker
        logger = worker.get_flow_run_logger(run)
        session_id = str(run.infrastructure_pid).strip()
        observer: SessionObserver | None = None
        try:
            configuration = await self._configuration(run)
            backend = await worker._backends.backend(resolve_connection(configuration))
            # The run's state, log and events show the adopted session as they would
            # have under the worker that created it (observer.py).
            observer = SessionObserver(
                flow_run_id=run.id,
                logger=logger,
                client=worker._client,
                related=worker._event_related_resources(
                    configuration=configuration, include_self=True
                ),
                heartbeat_seconds=worker.settings.heartbeat_seconds,
            )
            observer.watching(session_id, None)
            worker._observers[run.id] = observer
            backend.tracker.watch(
                session_id,
                state_dir=configuration.state_dir,
                pending_timeout=configuration.pending_timeout_seconds,
                runtime_limit=runtime_backstop(configuration.job_timeout_seconds),
                on_progress=observer.on_progress,
            )
            self.register(run.id, session_id, configuration)
            logger.info(
                "Worker %s adopted CANFAR session %s of this flow run (its watcher is gone).",
                self.me.worker,
                session_id,
            )
            if run.state is not None and run.state.type is StateType.CANCELLING:
                await self._cancel(run)
            status = await worker._follow(logger, configuration, backend, None, session_id)  # type: ignore[arg-type]
            if status == 0 or session_id in worker._killed:
                return
            if run.id in self.superseded or not await self._still_mine(run.id):
                logger.info("Another worker reports the end of CANFAR session %s.", session_id)
                return
            info = get_infrastructure_exit_info(status)
            await worker._propose_crashed_state(
                run,
                f"Flow run infrastructure exited with non-zero status code {status}. "
                f"{info.explanation}",
            )
            if info.resolution:
                logger.info(info.resolution)
        except Exception as exc:
            logger.error(
                "Could not watch adopted CANFAR session %s (%s: %s); the next adoption "
                "tick tries again.",
                session_id,
                type(exc).__name__,
                exc,
            )
        finally:
            if observer is not None:
                worker._observers.pop(run.id, None)
                with contextlib.suppress(Exception):
                    await observer.aclose()
            worker._killed.discard(session_id)
            worker._watched_runs.discard(run.id)
            worker._slots.release(run.id)
            self.unregister(run.id)

    async def _configuration(self, run: FlowRun) -> CanfarWorkerJobConfiguration:
        """The run's job configuration, resolved as Prefect resolved it at submission."""
        worker = self.worker
        return await worker.job_configuration.resolve_for_flow_run(
            run,
            client=worker.client,
            work_pool=worker.work_pool,
            worker_name=worker.name,
            worker_id=worker.backend_id,
        )

    async def _still_mine(self, flow_run_id: UUID) -> bool:
        """Whether my lease is still on the run (True when it cannot be read: the
        report is then Prefect's to refuse if the run is already final)."""
        try:
            current = await self.worker.client.read_flow_run(flow_run_id)
        except Exception:
            return True
        return won(current, self.me)
