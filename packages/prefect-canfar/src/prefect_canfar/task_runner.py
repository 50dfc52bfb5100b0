"""`CanfarTaskRunner`: each submitted task runs in its own CANFAR headless session.

Modelled on Prefect's `ProcessPoolTaskRunner` (and `prefect-submitit` for batch
systems): a background thread waits for upstream futures, resolves the parameters,
pickles the call with the serialized Prefect context into a directory both sides can
read (0600 files, removed after use), creates a session that runs Prefect's task
engine there (`python -m prefect_canfar.remote`), and returns the State the session
writes back. A session that dies without writing one (killed, out of memory, vanished)
becomes `Crashed` with the reason and the session's log tail.

The runner holds only configuration in its attributes, so it pickles and is cheap to
enter on the remote side (`hydrated_context` duplicates and enters it there); the
client, the tracker (one per runner: one list request per tick for all its tasks) and
the session slots are created on the first submit.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from canfar_core import (
    CanfarClient,
    CanfarConfig,
    CanfarError,
    ConfigurationError,
    Context,
    Outcome,
    SpecError,
    TrackerBridge,
    check_registry,
    default_image,
    envelope,
    events_timing,
    fit,
    is_refusal,
    refusal_sentence,
    resolve_config,
    runs_on_this_machine,
    runtime_backstop,
    session_python,
    unique_name,
    where_of,
)
from prefect.futures import PrefectConcurrentFuture, PrefectFuture, wait
from prefect.task_runners import TaskRunner

from prefect_canfar.credentials import CanfarCredentials
from prefect_canfar.handoff import CALL_FILE, STATE_FILE
from prefect_canfar.local_modules import pickled_by_value
from prefect_canfar.options import (
    SessionOptions,
    checked_options,
    current_options,
    options_from_tags,
)

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class TaskArgumentError(SpecError, TypeError):
    """A task's argument cannot be sent to its session (it cannot be pickled).

    A SpecError like every other refusal before submission, and a TypeError like the
    pickling error it replaces; the message is one sentence naming the task, the
    argument and its type, instead of pickle's "cannot pickle '_thread.lock' object".
    """

    def __init__(self, task_name: str, argument: str | None, value: object, cause: str) -> None:
        kind = type(value).__name__
        if argument is None:
            field = f"task {task_name!r}"
            allowed = (
                f"the task, its arguments and the flow's context must be picklable to run "
                f"in a CANFAR session ({cause})"
            )
            message = f"Task {task_name!r} is not allowed: {allowed}."
        else:
            field = f"argument {argument!r} of task {task_name!r}"
            allowed = (
                f"a {kind} cannot be pickled to send it to the CANFAR session ({cause}); "
                f"pass plain data or a file path, and create the {kind} inside the task"
            )
            message = f"Argument {argument!r} of task {task_name!r} is not allowed: {allowed}."
        self.field, self.value, self.allowed = field, kind, allowed
        Exception.__init__(self, message)


class CanfarTaskRunner(TaskRunner[PrefectConcurrentFuture[Any]]):
    """Run each submitted task as a CANFAR headless session.

    Args:
        image: default session image (needs the same Python minor version, `prefect` and
            `prefect-canfar` as the flow). Optional in local mode.
        cores, ram, gpus: default session resources (RAM in GiB); per task through
            `canfar_options(...)` or `canfar:cores=8`-style tags.
        shared_dir: a directory both the flow and the sessions can read (on CANFAR, under
            `/arc`); defaults to `~/.cache/prefect-canfar/tasks`, which is on `/arc` when
            the flow itself runs in a CANFAR session.
        url, credentials: the server (`local` for the embedded platform); by default the
            usual resolution (CANFAR_URL, ~/.canfar/config.yaml, ~/.ssl/cadcproxy.pem).
        max_sessions: how many task sessions may exist at once; the rest wait, unpolled.
        python: the interpreter inside the session (default `python3`; in local mode the
            current interpreter).
        workdir: the sessions' working directory (default: the flow's current directory).
        pending_timeout: seconds a session may stay Pending before it is deleted and the
            task crashes; task_timeout: seconds a task session may run.
    """

    def __init__(
        self,
        *,
        image: str | None = None,
        cores: float | None = None,
        ram: float | None = None,
        gpus: int | None = None,
        shared_dir: str | Path | None = None,
        url: str | None = None,
        credentials: CanfarCredentials | None = None,
        max_sessions: int = 8,
        python: str | None = None,
        workdir: str | Path | None = None,
        pending_timeout: float | None = None,
        task_timeout: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise SpecError("max_sessions", max_sessions, "a whole number of at least 1")
        for name, value in (("pending_timeout", pending_timeout), ("task_timeout", task_timeout)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise SpecError(name, value, "a number of seconds greater than 0, or None")
        self.image = image
        # Refuse a wrong type or sign here, where it was written, not at the first submit.
        self.defaults = checked_options(cores=cores, ram=ram, gpus=gpus, image=image)
        self.shared_dir = str(shared_dir) if shared_dir is not None else None
        self.url = url
        self.credentials = credentials
        self.max_sessions = max_sessions
        self.python = python
        self.workdir = str(workdir) if workdir is not None else None
        self.pending_timeout = pending_timeout
        self.task_timeout = task_timeout
        self._service: _SessionService | None = None
        self._service_lock = threading.Lock()
        self._task_root: Path | None = None
        self._cached_context: dict[str, Any] | None = None
        self._cached_env: dict[str, str] | None = None
        self._said: set[str] = set()

    # -- Prefect's TaskRunner contract ------------------------------------------------

    def duplicate(self) -> CanfarTaskRunner:
        """A new runner with the same configuration (Prefect calls this remotely too)."""
        return type(self)(**self._arguments())

    def _arguments(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "cores": self.defaults.cores,
            "ram": self.defaults.ram,
            "gpus": self.defaults.gpus,
            "shared_dir": self.shared_dir,
            "url": self.url,
            "credentials": self.credentials,
            "max_sessions": self.max_sessions,
            "python": self.python,
            "workdir": self.workdir,
            "pending_timeout": self.pending_timeout,
            "task_timeout": self.task_timeout,
        }

    def __getstate__(self) -> dict[str, Any]:
        return {"arguments": self._arguments()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["arguments"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CanfarTaskRunner) and self._arguments() == other._arguments()

    def __hash__(self) -> int:
        return hash((type(self), self.url, self.image, self.max_sessions))

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        service, self._service = self._service, None
        if service is not None:
            service.close()
        self._cached_context = self._cached_env = None
        super().__exit__(exc_type, exc_value, traceback)

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectConcurrentFuture[Any]:
        """Run `task` in its own session; returns at once with a future of its State."""
        if not self._started:
            raise RuntimeError("The task runner must be started (use it as a context manager).")
        from prefect._internal.uuid7 import uuid7
        from prefect.context import FlowRunContext, serialize_context
        from prefect.logging import get_run_logger
        from prefect.settings import get_current_settings

        # Everything that can be refused is checked here, before a thread starts or a
        # session is created, so the mistake surfaces at the `.submit()` that made it.
        service = self._ensure_service()
        flow_ctx = FlowRunContext.get()
        run_logger = get_run_logger(flow_ctx) if flow_ctx else log
        options = current_options().over(options_from_tags(task.tags or ())).over(self.defaults)
        options = self._validated(service, options, task.name, run_logger)
        self.task_root()
        if self._cached_context is None:
            self._cached_context = serialize_context()
            self._cached_env = get_current_settings().to_environment_variables(exclude_unset=True)
        task_run_id = uuid7()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        job = _TaskJob(
            runner=self,
            service=service,
            task=task,
            task_run_id=task_run_id,
            parameters=parameters,
            wait_for=list(wait_for or []),
            dependencies=dependencies,
            context=self._cached_context,
            env=dict(self._cached_env or {}),
            options=options,
            logger=run_logger,
            flow_run_id=flow_ctx.flow_run.id if flow_ctx and flow_ctx.flow_run else None,
        )
        # The thread runs in a copy of this context: Prefect settings and the flow run
        # context live in context variables, which a bare thread would not see.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run,
            args=(job.run, future),
            name=f"canfar-task-{task.name}",
            daemon=True,
        ).start()
        return PrefectConcurrentFuture(task_run_id=task_run_id, wrapped_future=future)

    # -- internals ----------------------------------------------------------------------

    def _config(self) -> CanfarConfig:
        if self.credentials is not None:
            return self.credentials.resolve(self.url)
        return resolve_config(self.url)

    def _ensure_service(self) -> _SessionService:
        with self._service_lock:
            if self._service is None:
                self._service = _SessionService(self._config(), self.max_sessions)
            return self._service

    def _validated(
        self, service: _SessionService, options: SessionOptions, task_name: str, logger: Any
    ) -> SessionOptions:
        """Check the image and fit the resources to the server before anything is submitted.

        Resources are rounded up to the smallest value the server allows, as every engine
        does (`canfar_core.allowed.fit`), and each distinct raise is logged once per
        runner. `gpus=0` (a block's way to override a runner default of some) becomes
        "none".
        """
        if options.gpus == 0:
            options = replace(options, gpus=None)
        if options.image is None:
            if not service.local:
                raise SpecError(
                    "image", None, "CanfarTaskRunner needs an image (e.g. images.canfar.net/...)"
                )
            options = SessionOptions(image=default_image(True)).over(options)
        try:
            registries, context = service.repositories(), service.context()
        except CanfarError as exc:
            if not is_refusal(exc):
                raise
            raise ConfigurationError(self._refusal(exc, service.client.aio.config)) from None
        check_registry(options.image or "", registries)
        sizes = {}
        for resource in ("cores", "ram", "gpus"):
            wanted = getattr(options, resource)
            if wanted is None:
                continue
            fitted = fit(context, resource, wanted)
            note = f"Task {task_name!r}: {fitted.note}." if fitted.note else None
            if note is not None and note not in self._said:
                self._said.add(note)
                logger.info(note)
            sizes[resource] = fitted.value
        return replace(options, **sizes)

    def _refusal(self, error: CanfarError, config: CanfarConfig) -> str:
        """The refusal sentence every engine prints, naming the block when one was given."""
        also = "update the CANFAR credentials block" if self.credentials is not None else None
        return refusal_sentence(error, where=where_of(config), source=config.source, also=also)

    def python_executable(self, local: bool) -> str:
        """The interpreter the session runs the task engine with."""
        return self.python or session_python(local)

    def task_root(self) -> Path:
        """Where pickled calls and States are exchanged (checked writable on first use).

        A directory that cannot be written would otherwise fail inside the task's
        thread with a bare OSError, after the task was accepted.
        """
        if self._task_root is not None:
            return self._task_root
        root = Path(self.shared_dir or Path.home() / ".cache" / "prefect-canfar" / "tasks")
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".canfar-probe-"):
                pass
        except OSError as exc:
            raise SpecError(
                "shared_dir",
                str(root),
                "a directory both the flow and the sessions can write (on CANFAR, under "
                f"/arc); this one cannot be created or written ({exc.strerror or exc})",
            ) from None
        self._task_root = root
        return root


class _SessionService:
    """The client, the tracker (bridged to the task threads) and the session slots of one runner."""

    def __init__(self, config: CanfarConfig, max_sessions: int) -> None:
        # The embedded platform in-process or on a loopback URL: sessions see this machine.
        self.local = runs_on_this_machine(config)
        self.client = CanfarClient(config)
        events_delay, events_interval = events_timing(same_machine=self.local)
        self.bridge = TrackerBridge(
            self.client,
            min_interval=0.3,
            max_interval=10.0,
            events_delay=events_delay,
            events_interval=events_interval,
        )
        self.slots = threading.BoundedSemaphore(max_sessions)
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._context: Context | None = None

    def context(self) -> Context:
        """The server's resource options (fetched once)."""
        if self._context is None:
            self._context = self.client.context()
        return self._context

    def repositories(self) -> list[str]:
        """The registries images must come from (cached by the client)."""
        return self.client.repositories()

    def run(
        self,
        spec: Any,
        state_dir: str,
        *,
        pending_timeout: float | None,
        runtime_limit: float | None,
    ) -> tuple[str, Outcome]:
        """Create a session when a slot is free, wait for its outcome, delete it."""
        with self.slots:
            session_id = self.client.create(spec)
            with self._lock:
                self._live.add(session_id)
            try:
                self.bridge.watch(
                    session_id,
                    state_dir=state_dir,
                    pending_timeout=pending_timeout,
                    runtime_limit=runtime_limit,
                )
                outcome = self.bridge.wait(session_id)
                self.bridge.forget(session_id)
            finally:
                with self._lock:
                    self._live.discard(session_id)
                try:
                    self.client.delete(session_id)
                except Exception as exc:  # the outcome matters more than the cleanup
                    log.warning("Could not delete session %s: %s", session_id, exc)
        return session_id, outcome

    def close(self) -> None:
        """Delete sessions still alive (nothing is left running unwatched), stop."""
        with self._lock:
            leftover = list(self._live)
        for session_id in leftover:
            try:
                self.client.delete(session_id)
            except Exception as exc:
                log.warning("Could not delete session %s: %s", session_id, exc)
        self.bridge.close()


class _TaskJob:
    """One submitted task: resolve, pickle, run in a session, read back the State."""

    def __init__(
        self,
        *,
        runner: CanfarTaskRunner,
        service: _SessionService,
        task: Any,
        task_run_id: uuid.UUID,
        parameters: dict[str, Any],
        wait_for: list[PrefectFuture[Any]],
        dependencies: dict[str, Any] | None,
        context: dict[str, Any],
        env: dict[str, str],
        options: SessionOptions,
        logger: Any,
        flow_run_id: uuid.UUID | None = None,
    ) -> None:
        self.runner = runner
        self.service = service
        self.task = task
        self.task_run_id = task_run_id
        self.parameters = parameters
        self.wait_for = wait_for
        self.dependencies = dependencies
        self.context = context
        self.env = env
        self.options = options
        self.logger = logger
        self.flow_run_id = flow_run_id

    def run(self, future: concurrent.futures.Future[Any]) -> None:
        """Thread body: never raises; the future gets a State or the exception."""
        try:
            future.set_result(self._run())
        except TaskArgumentError as exc:
            future.set_result(self._refused(exc))
        except BaseException as exc:
            future.set_exception(exc)

    def _refused(self, exc: TaskArgumentError) -> Any:
        """A Failed state for a task that could not be sent; recorded in the API.

        Its arguments are only known once upstream futures resolve, so this is found in
        the thread; no session was created. The run is created in the API already
        Failed, so the UI shows the sentence where the task would have been.
        """
        from prefect.states import Failed

        self.logger.error("%s", exc)
        state = Failed(message=str(exc), data=exc)
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                client.create_task_run(
                    task=self.task,
                    flow_run_id=self.flow_run_id,
                    dynamic_key=str(self.task_run_id),
                    id=self.task_run_id,
                    state=state,
                )
        except Exception:  # the API is a mirror here; the flow still gets the state
            log.debug("Task run %s not recorded in the API.", self.task_run_id, exc_info=True)
        return state

    def _run(self) -> Any:
        from prefect.utilities.engine import resolve_inputs_sync

        wait_for_states = None
        if self.wait_for:
            wait(self.wait_for)
            wait_for_states = [f.state for f in self.wait_for]
        parameters = resolve_inputs_sync(self.parameters, return_data=True, max_depth=-1)
        task_dir = self.runner.task_root() / str(self.task_run_id)
        task_dir.mkdir(mode=0o700)
        try:
            self._write_call(task_dir, parameters, wait_for_states)
            return self._run_session(task_dir)
        finally:
            shutil.rmtree(task_dir, ignore_errors=True)

    def _write_call(self, task_dir: Path, parameters: dict[str, Any], wait_for: Any) -> None:
        import cloudpickle
        from prefect.utilities.callables import cloudpickle_wrapped_call

        from prefect_canfar.remote import run_task_in_session

        with pickled_by_value(self.task.fn):
            try:  # `cloudpickle_wrapped_call` pickles its arguments already
                call = cloudpickle_wrapped_call(
                    run_task_in_session,
                    env=self.env,
                    task=self.task,
                    task_run_id=self.task_run_id,
                    parameters=parameters,
                    wait_for=wait_for,
                    return_type="state",
                    dependencies=self.dependencies,
                    context=self.context,
                )
                payload = cloudpickle.dumps(call)
            except Exception as exc:
                raise self._unpicklable(parameters, exc) from None
        fd = os.open(task_dir / CALL_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)

    def _unpicklable(self, parameters: dict[str, Any], exc: Exception) -> TaskArgumentError:
        """Name the argument that cannot be pickled (or the task, when none is at fault)."""
        import cloudpickle

        cause = f"{exc.__class__.__name__}: {exc}"
        for name, value in parameters.items():
            try:
                cloudpickle.dumps(value)
            except Exception:
                return TaskArgumentError(self.task.name, name, value, cause)
        return TaskArgumentError(self.task.name, None, self.task, cause)

    def _run_session(self, task_dir: Path) -> Any:
        import cloudpickle

        local = self.service.local
        command = [
            self.runner.python_executable(local),
            "-m",
            "prefect_canfar.remote",
            str(task_dir),
        ]
        wrapped = envelope(
            command,
            workdir=self.runner.workdir or os.getcwd(),
            state_dir=task_dir,
            timeout=self.runner.task_timeout,
        )
        spec = wrapped.spec(
            name=unique_name("task", self.task.name),
            image=self.options.image or "",  # set by `_validated` (given or defaulted)
            cores=self.options.cores,
            ram=self.options.ram,
            gpus=self.options.gpus,
        )
        session_id, outcome = self.service.run(
            spec,
            str(task_dir),
            pending_timeout=self.runner.pending_timeout,
            runtime_limit=runtime_backstop(self.runner.task_timeout),
        )
        state_path = task_dir / STATE_FILE
        if state_path.exists():
            return cloudpickle.loads(state_path.read_bytes())
        return self._crashed(session_id, outcome)

    def _crashed(self, session_id: str, outcome: Outcome) -> Any:
        from prefect.states import Crashed

        tail = outcome.log_tail(LOG_TAIL_LINES)
        message = (
            f"Task {self.task.name!r} crashed: CANFAR session {session_id} "
            f"{outcome.reason or 'ended without writing a state'}"
            f" (exit code {outcome.exit_code if outcome.exit_code is not None else 'unknown'})."
        )
        self.logger.error("%s\nSession log tail:\n%s", message, tail or "(empty)")
        state = Crashed(message=f"{message}\nSession log tail:\n{tail}" if tail else message)
        _record_state(self.task_run_id, state)
        return state


def _record_state(task_run_id: uuid.UUID, state: Any) -> None:
    """Tell the API the task run crashed, when the session got as far as creating it."""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.set_task_run_state(task_run_id, state, force=True)
    except Exception:  # the run may not exist: the session died before the engine started
        log.debug("Task run %s not updated in the API.", task_run_id, exc_info=True)
