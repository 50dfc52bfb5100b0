"""The `canfar` worker: each flow run becomes one CANFAR headless session.

`run()` follows the Cloud Run v2 worker's shape (create, report started, wait, return
the exit code) because Skaha is a REST API with nothing to subscribe to. Three rules
shape it:

- errors before `task_status.started()` raise, with the server's own sentence, so
  Prefect marks the run Crashed with "Failed to submit flow run to infrastructure";
- nothing raises after `started()`: Prefect would only log "lost connection" and leave
  the run Pending forever (prefect#22727), so every late failure becomes a non-zero
  status code with a log line saying why;
- waiting costs the CANFAR API nothing per run: all runs of the worker are watched by
  one tracker per server and identity, one session-list request per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio.abc
from canfar_core import (
    TIMEOUT_EXIT_CODE,
    AsyncCanfarClient,
    AuthenticationError,
    CanfarConfig,
    CanfarError,
    ConfigurationError,
    CredentialsRefusedError,
    Outcome,
    PermissionDeniedError,
    SessionNotFoundError,
    SessionTracker,
    TrackerOutageError,
    refusal_sentence,
    remove_secrets_file,
    where_of,
    write_secrets_file,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import InfrastructureNotAvailable, InfrastructureNotFound
from prefect.logging.loggers import PrefectLogAdapter
from prefect.settings import PREFECT_API_URL
from prefect.workers.base import BaseWorker, BaseWorkerResult

from prefect_canfar.adoption import Adopter
from prefect_canfar.configuration import CanfarWorkerJobConfiguration, SessionRequest
from prefect_canfar.connections import Backend, Backends, resolve_connection
from prefect_canfar.credentials import DOCS_URL
from prefect_canfar.exit_codes import VANISHED, report
from prefect_canfar.leases import LEASE_LABEL
from prefect_canfar.observer import SessionObserver
from prefect_canfar.reachability import unreachable_api_warning
from prefect_canfar.settings import CanfarWorkerSettings
from prefect_canfar.slots import Slots
from prefect_canfar.streaming import OutputStreamer
from prefect_canfar.transient import retry_transient
from prefect_canfar.variables import CanfarWorkerVariables

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun


class CanfarWorkerResult(BaseWorkerResult):
    """The session id and the status code its run ended with."""


# What the user got wrong (a job variable, credentials, an image): a sentence is the whole
# story, and a traceback through Prefect's and this package's internals only hides it.
USER_ERRORS = (CanfarError, ValueError)


class RefusalAwareLogger(PrefectLogAdapter):
    """A flow-run logger whose `exception()` drops the traceback of a user error.

    Prefect's BaseWorker logs every submission failure with `logger.exception`; for a
    refused job variable or rejected credentials that printed a traceback after the
    sentence, in the flow run's logs and on `prefect worker start`'s console. The
    sentence is appended to the message instead; unexpected errors keep their traceback.
    """

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        current = sys.exc_info()[1]
        if exc_info is True and isinstance(current, USER_ERRORS):
            self.error(f"{msg} {type(current).__name__}: {current}", *args, **kwargs)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


class CanfarWorker(
    BaseWorker[CanfarWorkerJobConfiguration, CanfarWorkerVariables, CanfarWorkerResult]
):
    """Runs each flow run as a CANFAR (Skaha) headless session."""

    type = "canfar"
    job_configuration = CanfarWorkerJobConfiguration
    job_configuration_variables = CanfarWorkerVariables
    _display_name = "CANFAR"
    _description = (
        "Run each flow run as a headless session on the CANFAR Science Platform "
        "(a container image and command launched through the Skaha API)."
    )
    _documentation_url = DOCS_URL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = CanfarWorkerSettings()
        self._backends = Backends(self.settings)
        # Sessions this worker deleted on request: their end is a cancellation.
        self._killed: set[str] = set()
        # Flow runs whose session this worker is still watching.
        self._watched_runs: set[UUID] = set()
        # Sessions alive per pool and queue (concurrency limits), and adoption.
        self._slots = Slots()
        self._adoption = Adopter(self)
        # What each flow run's state, log and events show of its session (observer.py).
        self._observers: dict[UUID, SessionObserver] = {}

    def get_flow_run_logger(self, flow_run: FlowRun) -> PrefectLogAdapter:
        """Prefect's flow-run logger, logging user errors without a traceback."""
        adapter = super().get_flow_run_logger(flow_run)
        return RefusalAwareLogger(adapter.logger, adapter.extra)

    async def teardown(self, *exc_info: Any) -> None:
        """Prefect's teardown (which waits for runs), then close trackers and clients."""
        try:
            await self._adoption.aclose()
            await super().teardown(*exc_info)
        finally:
            await self._backends.aclose()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Adopt orphaned sessions first (once, then on a timer), then Prefect's poll."""
        await self._adoption.start()
        return await super().get_and_submit_flow_runs()

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """Prefect's worker labels plus this worker's lease, retried while the Prefect
        API fails transiently: before the session exists, a failure here would turn the
        run Crashed although nothing went wrong with it."""
        if not self._client:
            return
        labels: dict[str, str] = {
            "prefect.worker.name": self.name,
            "prefect.worker.type": self.type,
            LEASE_LABEL: self._adoption.me.label(),
        }
        if self._work_pool:
            labels["prefect.work-pool.name"] = self._work_pool.name
            labels["prefect.work-pool.id"] = str(self._work_pool.id)
        client = self._client
        await retry_transient(
            lambda: client.update_flow_run_labels(flow_run_id, labels),  # type: ignore[arg-type]
            f"label flow run {flow_run_id}",
            logger=self._logger,
        )

    # -- run -----------------------------------------------------------------------------

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Prefect's submission, then keep a run that is still going under observation.

        Prefect stops watching a run for cancellation once `run()` reports it started,
        expecting the engine inside the infrastructure to take over. A CANFAR session
        may stay Pending (queued) for a long time with no engine in it, so the run is
        handed back to the cancellation observer until its session ends; Prefect's
        `_cancel_run` still only acts on runs whose engine has not started.
        """
        await super()._submit_run(flow_run)
        observer = getattr(self, "_cancelling_observer", None)
        if observer is not None and flow_run.id in self._watched_runs:
            observer.add_in_flight_flow_run_id(flow_run.id)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: CanfarWorkerJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None = None,
    ) -> CanfarWorkerResult:
        """Create the session, report its id as started, wait, return its status code."""
        logger = self.get_flow_run_logger(flow_run)
        config = resolve_connection(configuration)
        self._observers[flow_run.id] = SessionObserver(
            flow_run_id=flow_run.id,
            logger=logger,
            client=self._client,
            related=self._event_related_resources(configuration=configuration, include_self=True),
            heartbeat_seconds=self.settings.heartbeat_seconds,
        )
        try:
            return await self._run(logger, config, flow_run, configuration, task_status)
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise ConfigurationError(
                refusal_sentence(
                    exc,
                    where=where_of(config),
                    source=config.source,
                    also="update the CANFAR credentials block",
                )
            ) from None
        finally:
            await self._observers.pop(flow_run.id).aclose()

    async def _run(
        self,
        logger: PrefectLogAdapter,
        config: CanfarConfig,
        flow_run: FlowRun,
        configuration: CanfarWorkerJobConfiguration,
        task_status: anyio.abc.TaskStatus[str] | None,
    ) -> CanfarWorkerResult:
        """`run()` once the connection is resolved (credential refusals become sentences)."""
        registry = (
            configuration.registry_credentials.as_tuple()
            if configuration.registry_credentials is not None
            else None
        )
        backend = await self._backends.backend(config)
        creator = await self._backends.creator(config, registry)
        api_url = configuration.env.get("PREFECT_API_URL") or PREFECT_API_URL.value()
        warning = unreachable_api_warning(api_url, config.url)
        if warning:
            logger.warning(warning)
        request = configuration.session_request(await creator.context())
        for adjustment in request.adjustments:
            logger.info("Job variable %s.", adjustment)
        if request.secrets_in_env:
            logger.info(
                "%s travel(s) in the session's environment, which CANFAR stores with the "
                "session; set the job variable state_dir to a directory on /arc that this "
                "worker can write to pass them in a 0600 file instead.",
                ", ".join(request.secrets_in_env),
            )
        await self._wait_for_slot(logger, flow_run)
        if request.secrets_file is not None:
            write_secrets_file(request.secrets_file, request.secrets)
        # No await since the wait: the place is taken before another run can see it.
        self._slots.hold(flow_run.id, flow_run.work_queue_name)
        try:
            session_id = await creator.create(request.spec)
        except BaseException:
            self._slots.release(flow_run.id)
            remove_secrets_file(request.secrets_file)
            raise
        try:
            observer = self._observers[flow_run.id]
            observer.watching(session_id, request.spec.name)
            backend.tracker.watch(
                session_id,
                name=request.spec.name,
                state_dir=request.envelope.state_dir,
                pending_timeout=request.pending_timeout,
                runtime_limit=request.runtime_limit,
                on_progress=observer.on_progress,
            )
            logger.info(
                "Created CANFAR session %s (%s): image %s, %g core(s), %g GiB RAM%s.",
                session_id,
                request.spec.name,
                request.spec.image,
                request.spec.cores,
                request.spec.ram,
                f", {request.spec.gpus} GPU(s)" if request.spec.gpus else "",
            )
            self._watched_runs.add(flow_run.id)
            self._adoption.register(flow_run.id, session_id, configuration)
            if task_status is not None:
                task_status.started(session_id)
        except BaseException:
            self._watched_runs.discard(flow_run.id)
            self._adoption.unregister(flow_run.id)
            self._slots.release(flow_run.id)
            remove_secrets_file(request.secrets_file)
            # Never leave a session that nobody watches.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await backend.client.delete(session_id)
            raise
        try:
            status = await self._follow(logger, configuration, backend, request, session_id)
            if session_id not in self._killed and await self._was_cancelled(flow_run.id):
                # The engine in the session saw the cancellation first and ended on its
                # own; the session would stay listed for an hour. Cancelling means
                # "stop and clean up", as deleting a Kubernetes job does.
                await self._delete_quietly(backend.client, session_id, logger)
                logger.info("Flow run cancelled: deleted CANFAR session %s.", session_id)
            if status != 0 and flow_run.id in self._adoption.superseded:
                status = 0  # the worker that took the lease reports the end
        finally:
            self._slots.release(flow_run.id)
            self._adoption.unregister(flow_run.id)
            # Consumed by the session unless it never started (pending, deleted).
            remove_secrets_file(request.secrets_file)
            self._killed.discard(session_id)
            self._watched_runs.discard(flow_run.id)
            observer = getattr(self, "_cancelling_observer", None)
            if observer is not None:
                observer.remove_in_flight_flow_run_id(flow_run.id)
        return CanfarWorkerResult(identifier=session_id, status_code=status)

    async def _wait_for_slot(self, logger: PrefectLogAdapter, flow_run: FlowRun) -> None:
        """Wait until one more session fits the pool's and the queue's concurrency
        limits, counting the sessions this worker still watches (see `slots`)."""
        pool = self._work_pool
        pool_limit = pool.concurrency_limit if pool is not None else None
        queue_limit = await self._queue_limit(flow_run.work_queue_name)
        if pool_limit is None and queue_limit is None:
            return
        await self._slots.wait(
            flow_run.work_queue_name,
            pool_limit,
            queue_limit,
            on_wait=lambda alive: logger.info(
                "Waiting for one of the %d CANFAR sessions of this worker to end: the "
                "concurrency limit (pool %s, queue %s) counts sessions until they end.",
                alive,
                pool_limit,
                queue_limit,
            ),
        )

    async def _queue_limit(self, queue: str | None) -> int | None:
        """The concurrency limit of a work queue of this pool (None if none or unknown)."""
        if not queue:
            return None
        try:
            found = await self.client.read_work_queue_by_name(
                queue, work_pool_name=self._work_pool_name
            )
        except Exception:
            return None
        return found.concurrency_limit

    async def _follow(
        self,
        logger: PrefectLogAdapter,
        configuration: CanfarWorkerJobConfiguration,
        backend: Backend,
        request: SessionRequest,
        session_id: str,
    ) -> int:
        """Wait for the session's outcome and turn it into a status code; never raises."""
        streamer: OutputStreamer | None = None
        if configuration.stream_output:
            streamer = OutputStreamer(
                backend.client,
                session_id,
                state_dir=configuration.state_dir,
                interval=self.settings.stream_interval_seconds,
            )
            streamer.start()
        outcome: Outcome | None = None
        try:
            outcome = await backend.tracker.wait(session_id)
            return await self._conclude(logger, configuration, backend, outcome)
        except CredentialsRefusedError as exc:
            # Not an outage: the credentials will not start working by waiting.
            config = backend.client.config
            sentence = refusal_sentence(
                exc.cause,
                where=where_of(config),
                source=config.source,
                also="update the CANFAR credentials block",
            )
            logger.error(
                "%s CANFAR session %s may still be running; the flow run's final state is "
                "whatever the engine in the session reports.",
                sentence,
                session_id,
            )
            if (observer := self._observer_of(session_id)) is not None:
                await observer.crash(sentence)
            return VANISHED
        except TrackerOutageError as exc:
            logger.error(
                "Lost track of CANFAR session %s: %s. Its flow run's final state is whatever "
                "the engine in the session reported.",
                session_id,
                exc,
            )
            return VANISHED
        except Exception as exc:
            logger.error(
                "Could not follow CANFAR session %s (%s: %s); reporting status %s.",
                session_id,
                exc.__class__.__name__,
                exc,
                VANISHED,
                exc_info=True,
            )
            return VANISHED
        finally:
            if streamer is not None:
                with contextlib.suppress(Exception):
                    # The outcome's logs are the tail: whole only when not truncated.
                    whole = outcome is not None and not outcome.log_truncated
                    await streamer.stop(outcome.logs if whole else None)
            backend.tracker.forget(session_id)

    async def _conclude(
        self,
        logger: PrefectLogAdapter,
        configuration: CanfarWorkerJobConfiguration,
        backend: Backend,
        outcome: Outcome,
    ) -> int:
        """Log what happened, forward the output of a crash, clean up; the status code."""
        result = report(
            outcome,
            cancelled=outcome.session_id in self._killed,
            pending_timeout=configuration.pending_timeout_seconds,
            job_timeout=configuration.job_timeout_seconds,
        )
        for line in result.lines:
            logger.log(result.level, line)
        if (observer := self._observer_of(outcome.session_id)) is not None:
            await observer.concluded(outcome, result)
        tail_lines = self.settings.log_tail_lines
        if result.forward_output and tail_lines > 0:
            tail = outcome.log_tail(tail_lines)
            if tail.strip():
                logger.error(
                    "Last %s lines of the output of CANFAR session %s:\n%s",
                    len(tail.splitlines()),
                    outcome.session_id,
                    tail,
                )
            else:
                logger.error("CANFAR session %s printed no output.", outcome.session_id)
        if result.status_code == TIMEOUT_EXIT_CODE or configuration.delete_session_on_completion:
            await self._delete_quietly(backend.client, outcome.session_id, logger)
        return result.status_code

    def _observer_of(self, session_id: str) -> SessionObserver | None:
        """The observer of the flow run this session belongs to."""
        return next((o for o in self._observers.values() if o.session_id == session_id), None)

    async def _was_cancelled(self, flow_run_id: UUID) -> bool:
        """Whether Prefect has the flow run as Cancelling or Cancelled (False if unknown)."""
        try:
            current = await self.client.read_flow_run(flow_run_id)
        except Exception:  # the Prefect API being down must not fail the run's report
            return False
        state = current.state
        return state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)

    async def _delete_quietly(
        self, client: AsyncCanfarClient, session_id: str, logger: PrefectLogAdapter
    ) -> None:
        try:
            await client.delete(session_id)
        except CanfarError as exc:
            logger.warning("Could not delete CANFAR session %s: %s", session_id, exc)

    # -- cancellation --------------------------------------------------------------------

    async def kill_infrastructure(
        self,
        infrastructure_pid: str,
        configuration: CanfarWorkerJobConfiguration,
        grace_seconds: int = 30,
    ) -> None:
        """Delete the flow run's session.

        DELETE answers 200 even for sessions that do not exist, so the session is looked
        up first: a missing one raises InfrastructureNotFound, as Prefect expects.
        `grace_seconds` is not adjustable through the API (the platform's own applies).
        """
        session_id = infrastructure_pid.strip()
        config = resolve_connection(configuration)
        backend = self._backends.find(config)
        try:
            running_loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a coroutine
            running_loop = None
        if backend is not None and backend.loop is running_loop:
            await self._delete_session(backend.client, backend.tracker, session_id)
            return
        async with AsyncCanfarClient(config) as client:
            await self._delete_session(client, None, session_id)

    async def _delete_session(
        self, client: AsyncCanfarClient, tracker: SessionTracker | None, session_id: str
    ) -> None:
        try:
            await client.get(session_id)
        except SessionNotFoundError:
            raise InfrastructureNotFound(
                f"CANFAR session {session_id} does not exist (it was deleted, or it ended "
                "more than an hour ago and CANFAR removed it)."
            ) from None
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise InfrastructureNotAvailable(
                f"CANFAR refused access to session {session_id}: {exc.reason}"
            ) from None
        self._killed.add(session_id)
        if tracker is not None and session_id in tracker.watching:
            await tracker.cancel(session_id)
        else:
            await client.delete(session_id)
        self._logger.info("Flow run cancelled: deleted CANFAR session %s.", session_id)
