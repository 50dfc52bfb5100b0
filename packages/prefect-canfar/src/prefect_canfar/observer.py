"""What a flow run shows while its CANFAR session waits, runs and ends.

The tracker says once what happened to a session (`canfar_core.progress` records, the
outcome and its `canfar_core.diagnosis`); this module says it the Prefect way, as
prefect-kubernetes' observer does for pods:

- the flow run's state: `InfrastructurePending` with the scheduler's reason while the
  session queues (the engine in the session moves it to Running as before), and for a
  session that never started (its image cannot be pulled, the pending timeout) a
  `Crashed` state whose message holds the explanation and the session's events;
- the flow run's log: the reason a session waits (once, and again only when it changes),
  that it started, a heartbeat at a low rate, and every record of `canfar_core` and
  `prefect_canfar` loggers (retries, outages) while the run is followed (`LogRouter`);
- Prefect events for automations: `prefect-canfar.session.<phase>` (pending, running,
  terminating, completed, failed, unknown) as the tracker sees each phase, again
  `...pending` when the reason a session waits changes, and one
  `prefect-canfar.session.ended` with the outcome, its diagnosis category and the status
  code. The resource is `prefect-canfar.session.<session id>`; the related resources are
  the worker's (flow run, deployment, flow, work pool, worker, tags).

Nothing here decides what a session's state means: that is canfar-core's. A hook runs
on the worker's event loop and only schedules what needs the Prefect API.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from canfar_core import (
    CORE_LOGGER,
    Diagnosis,
    DiagnosisLevel,
    Outcome,
    OutcomeKind,
    Phase,
    Progress,
    ProgressKind,
    diagnose_outcome,
)
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.events.schemas.events import Event, RelatedResource
from prefect.exceptions import Abort, ObjectNotFound
from prefect.logging.handlers import APILogHandler
from prefect.states import Crashed, InfrastructurePending
from prefect.utilities.engine import propose_state

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.logging.loggers import PrefectLogAdapter

    from prefect_canfar.exit_codes import Report

log = logging.getLogger(__name__)

EVENT_PREFIX = "prefect-canfar.session"
ENDED_EVENT = f"{EVENT_PREFIX}.ended"
PLUGIN_LOGGER = "prefect_canfar"
# Outcomes of sessions whose engine never started: nothing else will explain the run's
# end in its state, so the worker's explanation becomes the Crashed state's message.
NEVER_STARTED = (OutcomeKind.IMAGE_PULL_FAILED, OutcomeKind.PENDING_TIMEOUT)
MAX_STATE_MESSAGE = 4000
# How long a state proposal may take before the hook gives up on it (Prefect's own
# propose_state waits on WAIT answers; a busy API must not hold a run's report back).
PROPOSE_SECONDS = 10.0
_LEVELS = {
    DiagnosisLevel.ERROR: logging.ERROR,
    DiagnosisLevel.WARNING: logging.WARNING,
    DiagnosisLevel.INFO: logging.INFO,
}


def phase_event(phase: Phase) -> str:
    """The event name for a phase: `prefect-canfar.session.pending`, ..."""
    return f"{EVENT_PREFIX}.{phase.value.lower()}"


class LogRouter(logging.Handler):
    """Copies the plugin's and canfar-core's records into the logs of followed flow runs.

    `canfar_core.engine_logs.forward_logs` (what Snakemake uses) hands every record to one
    engine log and stops propagation; a worker follows many flow runs at once and prints
    on its own console too, so this handler leaves the records propagating (the console
    shows each once) and sends a copy to the Prefect API for each flow run it concerns:
    the run whose session id the message names, or, for a record that names none (a
    retry of the session list, an outage), every run the worker is following.
    """

    def __init__(self, names: Iterable[str] = (CORE_LOGGER, PLUGIN_LOGGER)) -> None:
        super().__init__(logging.INFO)
        self.names = tuple(dict.fromkeys(names))
        self._lock = threading.Lock()
        self._runs: dict[UUID, str | None] = {}
        self._levels: dict[str, int] = {}
        self._api = APILogHandler()

    def follow(self, flow_run_id: UUID, session_id: str | None = None) -> None:
        """Start copying records into this flow run's log (the first run attaches)."""
        with self._lock:
            first = not self._runs
            self._runs[flow_run_id] = session_id
        if first:
            for name in self.names:
                logger = logging.getLogger(name)
                self._levels[name] = logger.level
                if logger.level == logging.NOTSET or logger.level > logging.INFO:
                    # Their INFO lines (a refreshed login, an adopted create) matter too.
                    logger.setLevel(logging.INFO)
                logger.addHandler(self)

    def name_session(self, flow_run_id: UUID, session_id: str) -> None:
        """The run's session is known: records naming it go to this run only."""
        with self._lock:
            if flow_run_id in self._runs:
                self._runs[flow_run_id] = session_id

    def unfollow(self, flow_run_id: UUID) -> None:
        """Stop copying into this run's log (the last run detaches)."""
        with self._lock:
            if self._runs.pop(flow_run_id, 0) == 0 or self._runs:
                return
        for name in self.names:
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(self._levels.pop(name, logging.NOTSET))

    def targets(self, message: str) -> list[UUID]:
        """The flow runs a message concerns."""
        with self._lock:
            runs = dict(self._runs)
        named = [run for run, session in runs.items() if session and session in message]
        return named or list(runs)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(__name__):
            return  # this module's own troubles stay on the console
        try:
            message = record.getMessage()
            for flow_run_id in self.targets(message):
                copy = logging.makeLogRecord(record.__dict__)
                copy.msg, copy.args = message, None
                copy.flow_run_id = flow_run_id
                self._api.handle(copy)
        except Exception:  # a log line must never break a run
            self.handleError(record)


ROUTER = LogRouter()


class SessionObserver:
    """Tells one flow run what its CANFAR session does (see the module docstring).

    Created before the session, so that records about its creation reach the run's
    log too; `watching()` names the session, `on_progress` is the tracker hook of its
    watch, `concluded()` reports the end, `aclose()` stops everything.
    """

    def __init__(
        self,
        *,
        flow_run_id: UUID,
        logger: PrefectLogAdapter,
        client: PrefectClient | None,
        related: list[RelatedResource],
        heartbeat_seconds: float = 0.0,
        router: LogRouter = ROUTER,
    ) -> None:
        self.flow_run_id = flow_run_id
        self.logger = logger
        self.client = client
        self.related = related
        self.heartbeat_seconds = heartbeat_seconds
        self.router = router
        self.session_id: str | None = None
        self.name: str | None = None
        self.phase: Phase | None = None
        self._phase_since = time.monotonic()
        self._diagnosis: Diagnosis | None = None
        self._last_event: Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._states = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        router.follow(flow_run_id)

    # -- the watch -----------------------------------------------------------------------

    def watching(self, session_id: str, name: str | None) -> None:
        """The session exists and is watched: route its records, start the heartbeat."""
        self.session_id, self.name = session_id, name
        self.router.name_session(self.flow_run_id, session_id)
        if self.heartbeat_seconds > 0:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def on_progress(self, record: Progress) -> None:
        """The tracker's hook for this run's session (on the worker's loop; returns fast)."""
        if record.kind is ProgressKind.PHASE:
            self.phase = record.phase
            self._phase_since = time.monotonic()
            if record.phase is Phase.RUNNING:
                self.logger.info(record.describe())
            self._emit(phase_event(record.phase), record, record.diagnosis)
        elif record.kind is ProgressKind.REASON and record.diagnosis is not None:
            # The tracker sends a reason once, and again only when it changes.
            diagnosis = record.diagnosis
            self._diagnosis = diagnosis
            self.logger.log(_LEVELS.get(diagnosis.level, logging.INFO), record.describe())
            self._emit(phase_event(Phase.PENDING), record, diagnosis)
            self._spawn(self._pending(record.describe()))

    async def concluded(self, outcome: Outcome, result: Report) -> None:
        """The session ended: one `ended` event; a Crashed state for a never-started one."""
        diagnosis = diagnose_outcome(outcome)
        labels = {
            "prefect-canfar.outcome": outcome.kind.value,
            "prefect-canfar.status-code": str(result.status_code),
        }
        self._emit(ENDED_EVENT, None, diagnosis, labels=labels, phase=outcome.phase)
        if outcome.kind in NEVER_STARTED:
            await self.crash("\n".join(result.lines))

    async def crash(self, message: str) -> None:
        """Propose Crashed with `message` (Prefect's own Crashed after it is then refused:
        a run in a final state stays there, so this explanation is the one shown)."""
        await self._settle()
        if len(message) > MAX_STATE_MESSAGE:
            message = message[: MAX_STATE_MESSAGE - 15] + "... [truncated]"
        async with self._states:
            await self._propose(Crashed(message=message))

    async def aclose(self) -> None:
        """Stop the heartbeat, let pending proposals finish, stop routing records."""
        try:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._heartbeat
            await self._settle()
        finally:
            self.router.unfollow(self.flow_run_id)

    # -- states --------------------------------------------------------------------------

    async def _pending(self, message: str) -> None:
        """Show `InfrastructurePending` with why the session waits.

        Prefect refuses Pending -> Pending under the same state name (it guards against
        a second submission), so the first reason is proposed and a changed one replaces
        the run's InfrastructurePending state with `force`; a run already Running, final,
        paused or cancelling is left alone (the session is Pending, so its engine has
        not started; a run moved on means someone else decided). A forced state skips
        orchestration, so if another state (a cancellation) arrived between the read and
        the write, it is put back on top.
        """
        if self.client is None:
            return
        try:
            current = await self.client.read_flow_run(self.flow_run_id)
        except ObjectNotFound:
            return
        state = current.state
        if state is None or state.type is not StateType.PENDING:
            return
        proposed = InfrastructurePending(message=message)
        if state.name != "InfrastructurePending":
            await self._propose(proposed)
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(PROPOSE_SECONDS):
                await self._replace(state.id, proposed)

    async def _replace(self, previous_id: UUID, proposed: Any) -> None:
        """Force `proposed` over the state `previous_id`, undoing it if one came between."""
        assert self.client is not None
        result = await self.client.set_flow_run_state(self.flow_run_id, proposed, force=True)
        ours = result.state
        history = await self.client.read_flow_run_states(self.flow_run_id)
        index = next((i for i, s in enumerate(history) if ours and s.id == ours.id), None)
        if index is None or index == 0:
            return
        between = history[index - 1]
        if between.id != previous_id and between.type is not StateType.PENDING:
            await self.client.set_flow_run_state(self.flow_run_id, between.fresh_copy(), force=True)

    async def _propose(self, state: Any) -> None:
        if self.client is None:
            return
        try:
            async with asyncio.timeout(PROPOSE_SECONDS):
                await propose_state(self.client, state, flow_run_id=self.flow_run_id)
        except (Abort, ObjectNotFound, TimeoutError):
            pass  # the run moved on (final, deleted) or the API is slow: not ours
        except Exception as exc:
            log.debug("Could not set the state of flow run %s: %s", self.flow_run_id, exc)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._serialised(coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serialised(self, coroutine: Any) -> None:
        """One state change at a time, in the order the hooks asked for them."""
        try:
            async with self._states:
                await coroutine
        except Exception as exc:  # a state the API would not take must not stop the run
            log.debug("State update of flow run %s failed: %s", self.flow_run_id, exc)

    async def _settle(self) -> None:
        """Wait for the proposals already scheduled (in order: the lock serialises them)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- heartbeat -----------------------------------------------------------------------

    async def _beat(self) -> None:
        """A line every `heartbeat_seconds` while the session is not done."""
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            phase = self.phase or Phase.PENDING
            waited = time.monotonic() - self._phase_since
            line = f"CANFAR session {self.session_id} is still {phase.value} after {waited:.0f} s"
            if phase is Phase.PENDING and self._diagnosis is not None:
                line += f" ({self._diagnosis.summary})"
            self.logger.info(line + ".")

    # -- events --------------------------------------------------------------------------

    def _emit(
        self,
        name: str,
        record: Progress | None,
        diagnosis: Diagnosis | None,
        *,
        labels: dict[str, str] | None = None,
        phase: Phase | None = None,
    ) -> None:
        session_id = self.session_id or (record.session_id if record else None)
        if session_id is None:
            return
        phase = phase or (record.phase if record else None)
        resource = {
            "prefect.resource.id": f"{EVENT_PREFIX}.{session_id}",
            "prefect.resource.name": self.name or (record.name if record else None) or session_id,
            "prefect-canfar.session-id": session_id,
        }
        if phase is not None:
            resource["prefect-canfar.phase"] = phase.value
        if diagnosis is not None:
            resource["prefect-canfar.diagnosis"] = diagnosis.category.value
        resource.update(labels or {})
        payload: dict[str, Any] = {}
        if record is not None and record.previous_phase is not None:
            payload["previous_phase"] = record.previous_phase.value
            payload["seconds_in_previous_phase"] = round(record.seconds_in_previous_phase or 0, 1)
        if diagnosis is not None:
            payload["diagnosis"] = {
                "category": diagnosis.category.value,
                "level": diagnosis.level.value,
                "summary": diagnosis.summary,
                "detail": diagnosis.detail,
                "resolution": diagnosis.resolution,
            }
        # The same session, name and cause make the same id, so a worker that adopts a
        # session after a restart does not repeat its events (Prefect drops duplicates).
        key = diagnosis.dedupe_key() if diagnosis is not None else ("", "")
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{session_id}/{key[0]}/{key[1]}")
        try:
            event = contextvars.copy_context().run(
                _emit_outside_runs,
                name,
                resource=resource,
                related=self.related,
                payload=payload or None,
                id=event_id,
                follows=self._last_event,
            )
        except Exception as exc:  # an event too large or a client in trouble
            log.debug("Could not emit %s for session %s: %s", name, session_id, exc)
            return
        if event is not None:
            self._last_event = event


def _emit_outside_runs(name: str, **kwargs: Any) -> Event | None:
    """`emit_event` with no flow or task run in the context it runs in (a copy).

    Prefect's events worker adds the emitter's run context to an event's related
    resources. A session event's flow run is named explicitly (`related`); whatever run
    the worker process itself happens to be inside (a worker started from a flow, a run
    context that code before it left set) must not be added as a second `flow-run`.
    """
    for model in (FlowRunContext, TaskRunContext):
        model.__var__.set(None)
    return emit_event(name, **kwargs)
