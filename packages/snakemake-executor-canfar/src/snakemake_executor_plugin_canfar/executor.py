"""`snakemake --executor canfar`: each job (or group job) becomes a CANFAR headless session.

The flow per job: plan the request (resources → allowed cores/RAM/GPUs, image,
runtime) and refuse what the platform cannot satisfy as a job error; adopt a session a
previous, killed Snakemake left running for the same job (same code and request);
otherwise create the session through the launch envelope; watch it with the run's
single tracker; when it ends, save its log beside the workflow, delete it, and report
success or a failure message with the session id, image, exit code and reason.

Everything decided once per run lives in a frozen `RunContext` (`run_context.py`);
what the executor refuses before the first job is in `validation.py`; every message
goes through Snakemake's logger (`self.logger`), canfar-core's included.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from canfar_core import (
    CORE_LOGGER,
    CanfarError,
    ConfigurationError,
    Outcome,
    Phase,
    Progress,
    Session,
    SpecError,
    TrackerBridge,
    forward_logs,
    is_refusal,
    refusal_sentence,
    remove_secrets_file,
)
from snakemake_interface_common.exceptions import ApiError, WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.utils import format_cli_arg, join_cli_args

from snakemake_executor_plugin_canfar.diagnostics import failure_message
from snakemake_executor_plugin_canfar.fingerprint import job_fingerprint
from snakemake_executor_plugin_canfar.ledger import RunLedger, job_key
from snakemake_executor_plugin_canfar.logs import save_job_log
from snakemake_executor_plugin_canfar.naming import job_log_path, run_prefix, session_name
from snakemake_executor_plugin_canfar.progress import Heartbeat, progress_line
from snakemake_executor_plugin_canfar.resources import (
    RequestError,
    SessionRequest,
    generated_defaults,
    plan_request,
)
from snakemake_executor_plugin_canfar.run_context import RunContext, open_run
from snakemake_executor_plugin_canfar.submission import (
    Plan,
    build_spec,
    create_all,
    write_secrets,
)
from snakemake_executor_plugin_canfar.wakeup import Wakeup

PLUGIN_LOGGER = "snakemake_executor_plugin_canfar"
INFLIGHT_WAIT_SECONDS = 15.0
ADOPTABLE = (Phase.PENDING, Phase.RUNNING)


class SessionBook:
    """The sessions this run created or adopted, and creations still in flight.

    Shared by Snakemake's main thread (submission, cancellation) and the client's loop
    (the moment a create returns), hence the lock.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: set[str] = set()
        self.adopted: set[str] = set()
        self.inflight = 0
        self.cancelling = False
        # Why the run must stop (credentials refused at creation), said by the status thread.
        self.stop: str | None = None

    def mine(self) -> set[str]:
        """Every session id this run is responsible for."""
        with self.lock:
            return self.created | self.adopted


class Executor(RemoteExecutor):
    """The CANFAR executor (see the module docstring)."""

    # Set by __post_init__; the base class starts its status-check thread before that,
    # and a status check must find "not ready yet" here, not an AttributeError.
    run: RunContext | None = None
    wakeup: Wakeup | None = None

    # -- setup -----------------------------------------------------------------------------

    def __post_init__(self) -> None:
        # From here on, canfar-core's and this plugin's records land in Snakemake's log.
        self._stop_forwarding = forward_logs(self.logger.log, (CORE_LOGGER, PLUGIN_LOGGER))
        wakeup = Wakeup()
        try:
            run, client = open_run(self.workflow)
        except BaseException as exc:
            # The base class started the status thread already; stop it with us.
            with self.lock:
                self.wait = False
            self._stop_forwarding()
            if isinstance(exc, WorkflowError):
                # A configuration mistake: Snakemake prints an ApiError as one line,
                # a WorkflowError with the plugin's source lines under it.
                raise ApiError(str(exc)) from None
            raise
        self.bridge = TrackerBridge(
            client,
            on_end=lambda _session_id: wakeup.set(),
            min_interval=run.min_interval,
            max_interval=run.max_interval,
            image_pull_window=float(run.settings.image_pull_timeout),
            events_delay=run.events_delay,
            events_interval=run.events_interval,
            exit_scan_interval=run.exit_scan_interval,
            on_progress=self._progress,
        )
        self.wakeup = wakeup
        self.heartbeat = Heartbeat()
        # Reading the tracker's outcomes costs nothing, and the tracker's end hook wakes
        # the status thread the moment a session is resolved (`sleep` below); the period
        # is only the fallback.
        self.next_seconds_between_status_checks = min(
            1.0, run.min_interval, run.exit_scan_interval or 1.0
        )
        self.book = SessionBook()
        self._said: set[str] = set()
        self._live: dict[str, Session] | None = None
        self.ledger = RunLedger(run.state_dir)
        self.run = run
        if self.ledger.open_count:
            # A previous run did not see all its sessions end: keep those still active,
            # the candidates for adoption.
            live = self._live_sessions()
            if self._live is not None:  # never prune on a failed list
                self.ledger.compact(alive={k for k, v in live.items() if v.phase in ADOPTABLE})
        else:
            self.ledger.compact()
        self.logger.info(
            f"CANFAR executor: run {run.run_id} on {run.where}; sessions are named "
            f"{run_prefix(run.run_id)}*; logs in {run.logdir}."
        )

    def _progress(self, record: Progress) -> None:
        """Runs on the client's loop for each tracker record; words it for the log."""
        line = progress_line(record)
        if line is not None:
            self.logger.info(line)

    def get_python_executable(self) -> str:
        """The interpreter that runs `-m snakemake` inside the session."""
        assert self.run is not None
        return self.run.python

    def get_job_args(self, job: JobExecutorInterface, **kwargs: Any) -> str:
        """Snakemake's job arguments, with `--cores` set to the cores the session gets.

        The default, `all`, makes Snakemake inside the container count the node's CPUs
        (Kubernetes does not hide them), not the session's allocation. RemoteExecutor's
        own `get_job_args` does not pass `cores=` on, so the granted count is appended:
        Snakemake's parser keeps the last `--cores`.
        """
        cores = kwargs.pop("cores", None) or self._request(job).cores
        return join_cli_args([super().get_job_args(job), format_cli_arg("--cores", cores)])

    # -- submission ------------------------------------------------------------------------

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        """Submit a batch of ready jobs with concurrent session creation."""
        for job in jobs:
            self.run_job_pre(job)
        self._submit(jobs)

    def run_job(self, job: JobExecutorInterface) -> None:
        """Submit one job."""
        self._submit([job])

    def _submit(self, jobs: list[JobExecutorInterface]) -> None:
        """Plan the jobs here; create their sessions on the client's loop, not waiting.

        Planning refusals are reported at once. Creation runs in the background so that
        this thread (Snakemake's scheduler, which alone prints "Finished" and schedules
        dependants) is back before a large batch is created: each session is watched
        and reported submitted the moment it exists, each failed creation is a job
        error, and credentials refused at creation stop the run at the next status check.
        """
        plans: list[Plan] = []
        for job in jobs:
            try:
                plan = self._plan(job)
            except RequestError as exc:
                self.report_job_error(SubmittedJobInfo(job), msg=f"{exc} ")
                continue
            if self._try_adopt(plan):
                continue
            try:
                write_secrets(plan, self.envvars())
            except (RequestError, OSError) as exc:
                self.report_job_error(SubmittedJobInfo(job), msg=f"{exc} ")
                continue
            plans.append(plan)
        if not plans:
            return
        by_name = {p.spec.name: p for p in plans}
        with self.book.lock:
            self.book.inflight += len(plans)
        self.bridge.spawn(
            create_all(
                self.bridge.client.aio,
                [p.spec for p in plans],
                concurrency=self.settings.submit_concurrency,
                on_created=lambda spec, sid: self._on_created(by_name[spec.name], sid),
                on_failed=lambda spec, exc: self._on_create_failed(by_name[spec.name], exc),
                on_settled=self._on_settled,
            )
        )

    @property
    def settings(self) -> Any:
        """This run's executor settings."""
        assert self.run is not None
        return self.run.settings

    def _request(self, job: JobExecutorInterface) -> SessionRequest:
        assert self.run is not None
        members = list(getattr(job, "jobs", None) or []) if job.is_group() else [job]
        return plan_request(
            label=_label(job),
            threads=job.threads,
            resources=_resource_dict(job),
            defaults=self.run.defaults,
            context=self.run.server,
            generated=generated_defaults(
                [member.rule for member in members], _default_resources(self.workflow)
            ),
        )

    def _plan(self, job: JobExecutorInterface) -> Plan:
        run = self.run
        assert run is not None
        is_group = job.is_group()
        title = _title(job)
        request = self._request(job)
        for note in request.notes:
            self._say_once(note + ".")
        name = session_name(run.run_id, title, job.jobid, job.attempt)
        secrets_file = run.secrets_dir / f"{name}.sh" if self.envvars() else None
        spec = build_spec(
            label=_label(job),
            command=self.format_job_exec(job),
            workdir=run.workdir,
            state_dir=run.sessions_dir,
            name=name,
            request=request,
            secrets_file=secrets_file,
        )
        wildcards = None if is_group else getattr(job, "wildcards_dict", None)
        return Plan(
            job=job,
            label=_label(job),
            log_rule=f"group_{title}" if is_group else title,
            wildcards=wildcards,
            name=name,
            key=job_key(job.output),
            request=request,
            spec=spec,
            secrets_file=secrets_file,
            fingerprint=job_fingerprint(job, request),
        )

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self.logger.info(message)

    def _on_created(self, plan: Plan, session_id: str) -> None:
        """Runs on the client's loop as soon as a session exists: record it, watch it."""
        assert self.run is not None
        with self.book.lock:
            self.book.created.add(session_id)
            cancelling = self.book.cancelling
        self.ledger.record_submit(
            plan.key, session_id, plan.spec.name, self.run.run_id, plan.fingerprint
        )
        if cancelling:
            self.bridge.delete_later(session_id)
            return
        self._start(plan, session_id)

    def _on_create_failed(self, plan: Plan, error: BaseException) -> None:
        """Runs on the client's loop for a session CANFAR did not create: a job error.

        Credentials refused (or a login that cannot be used) will refuse every later
        request too, so they also stop the run: the status thread raises the sentence.
        """
        remove_secrets_file(plan.secrets_file)
        job_info = SubmittedJobInfo(plan.job)
        if is_refusal(error) or isinstance(error, ConfigurationError):
            sentence = self._refusal(error)  # type: ignore[arg-type]
            with self.book.lock:
                self.book.stop = self.book.stop or sentence
            self.report_job_error(job_info, msg=f"{plan.label}: {sentence} ")
        elif isinstance(error, SpecError):
            # Refused before sending (e.g. an image outside the allowed registries).
            self.report_job_error(job_info, msg=f"{plan.label}: {error} ")
        elif isinstance(error, CanfarError):
            self.report_job_error(
                job_info, msg=f"{plan.label}: CANFAR did not create the session: {error}. "
            )
        else:
            self.report_job_error(
                job_info,
                msg=f"{plan.label}: creating its session failed ({type(error).__name__}: "
                f"{error}). ",
            )

    def _on_settled(self) -> None:
        """Runs on the client's loop when one creation has succeeded or failed."""
        with self.book.lock:
            self.book.inflight -= 1

    def _start(self, plan: Plan, session_id: str, *, adopted: bool = False) -> None:
        assert self.run is not None
        self.bridge.watch(
            session_id,
            name=plan.name,
            state_dir=str(self.run.sessions_dir),
            pending_timeout=self.run.pending_timeout,
            runtime_limit=plan.runtime_limit,
        )
        self.report_job_submission(
            SubmittedJobInfo(
                plan.job, external_jobid=session_id, aux={"plan": plan, "adopted": adopted}
            )
        )

    # -- restart adoption -------------------------------------------------------------------

    def _try_adopt(self, plan: Plan) -> bool:
        """Adopt a session an earlier, killed Snakemake left running for this same job.

        "Same" means the fingerprint recorded with the session matches this plan's: a
        session running older code, inputs or resources is deleted instead (one line
        says so) and the job gets a new session.
        """
        assert self.run is not None
        candidates: list[str] = []
        try:
            registered = self.dag.incomplete_external_jobid(plan.job)
        except WorkflowError:
            registered = None
        if registered:
            candidates.append(registered)
        candidates += self.ledger.open_sessions(plan.key, exclude_run=self.run.run_id)
        mine = self.book.mine()
        candidates = [c for c in dict.fromkeys(candidates) if c not in mine]
        if not candidates:
            return False
        live = self._live_sessions()
        for session_id in candidates:
            session = live.get(session_id)
            if session is None or session.phase not in ADOPTABLE:
                self.ledger.record_done(session_id)
                continue
            if self.ledger.fingerprint(session_id) != plan.fingerprint:
                self._replace_stale(plan, session_id, session)
                continue
            with self.book.lock:
                self.book.adopted.add(session_id)
            self.logger.info(
                f"Adopting CANFAR session {session_id} ({session.name}, {session.phase}) "
                f"started for {plan.label} by an earlier Snakemake run, instead of "
                "submitting a duplicate."
            )
            self._start(plan, session_id, adopted=True)
            return True
        return False

    def _replace_stale(self, plan: Plan, session_id: str, session: Session) -> None:
        """Delete a session an earlier run started for this job with other code or resources."""
        try:
            self.bridge.client.delete(session_id)
        except CanfarError as exc:
            self.logger.warning(f"Could not delete CANFAR session {session_id}: {exc}")
            return
        self.ledger.record_done(session_id)
        self.logger.info(
            f"Deleted CANFAR session {session_id} ({session.name}), started for {plan.label} "
            "by an earlier Snakemake run: the job's code, inputs or resources have changed "
            "since, so it runs again in a new session."
        )

    def _live_sessions(self) -> dict[str, Session]:
        """The platform's sessions, listed once per run (adoption happens at restart)."""
        if self._live is None:
            try:
                listed = self.bridge.client.list_sessions(type="headless")
            except CanfarError as exc:
                self.logger.info(f"Cannot list sessions to look for ones to adopt: {exc}")
                return {}
            self._live = {s.id: s for s in listed}
        return self._live

    # -- status ------------------------------------------------------------------------------

    async def sleep(self) -> None:
        """Wait for the next status check, or less: until the tracker resolves a session."""
        if self.wakeup is None:
            await super().sleep()
            return
        await self.wakeup.sleep(self.next_seconds_between_status_checks)

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Report finished jobs from the tracker's outcomes; yield the rest.

        Credentials refused mid-run stop the run at once, with the one renew sentence:
        waiting would only make every job fail later as an outage.
        """
        if self.run is None:
            # The status thread's first check can come before the run's setup: without
            # this its first sleep would be a whole --seconds-between-status-checks, the
            # time by which the run's first job end would reach Snakemake late.
            self.next_seconds_between_status_checks = 0.5
        refusal = self.bridge.tracker.refusal if self.run is not None else None
        if refusal is not None:
            # Snakemake prints an ApiError as its one line (a WorkflowError would add
            # this plugin's source line under it).
            raise ApiError(str(refusal))
        stop = self.book.stop if self.run is not None else None
        if stop is not None:
            raise ApiError(stop)
        if self.run is not None and active_jobs:
            line = self.heartbeat.line(
                self.bridge.tracker.phase(j.external_jobid) for j in active_jobs if j.external_jobid
            )
            if line is not None:
                self.logger.info(line)
        for job_info in active_jobs:
            outcome: Outcome | None = None
            if self.run is not None and job_info.external_jobid:
                try:
                    outcome = self.bridge.outcome(job_info.external_jobid)
                except Exception as exc:  # never let a status check end the run
                    self.logger.warning(f"Status of {job_info.external_jobid} unavailable: {exc}")
            if outcome is None:
                yield job_info
                continue
            try:
                message, aux_logs = self._conclude(job_info, outcome)
            except Exception as exc:  # never let a status check end the run
                self.logger.error(f"Reporting CANFAR session {outcome.session_id} failed: {exc}")
                message = f"Reporting CANFAR session {outcome.session_id} failed: {exc}. "
                aux_logs = []
            if message is None:
                self.report_job_success(job_info)
            else:
                self.report_job_error(job_info, msg=message, aux_logs=aux_logs)

    def _conclude(
        self, job_info: SubmittedJobInfo, outcome: Outcome
    ) -> tuple[str | None, list[str]]:
        """Save the log, close the books; the failure message (None on success) and logs."""
        run = self.run
        assert run is not None
        plan: Plan = (job_info.aux or {})["plan"]
        session_id = outcome.session_id
        dest = job_log_path(run.logdir, plan.log_rule, plan.wildcards, plan.job.jobid, session_id)
        saved = save_job_log(outcome, state_dir=run.sessions_dir, dest=dest)
        remove_secrets_file(plan.secrets_file)  # if the session never started to read it
        self.ledger.record_done(session_id)
        if not self.settings.keep_sessions:
            self.bridge.delete_later(session_id)
        self.bridge.forget(session_id)
        if outcome.success:
            return None, []
        message = failure_message(
            outcome, label=plan.label, request=plan.request, pending_timeout=run.pending_timeout
        )
        return message, [str(saved)] if saved else []

    def _refusal(self, error: CanfarError) -> str:
        assert self.run is not None
        if is_refusal(error):
            return refusal_sentence(error, where=self.run.where, source=self.run.config.source)
        return str(error)

    # -- cancellation and shutdown -------------------------------------------------------------

    def cancel(self) -> None:
        """Delete every session (Ctrl-C), shielded from a second Ctrl-C.

        A second Ctrl-C while sessions are being deleted would otherwise interrupt the
        deletion with a traceback and leave sessions running; it is answered with one
        line instead, and the deletion finishes.
        """
        with _second_interrupt_ignored(self.logger):
            super().cancel()

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Delete every session of this run (and adopted ones) and verify by listing."""
        run = self.run
        if run is None:
            return
        with self.book.lock:
            self.book.cancelling = True
        deadline = time.monotonic() + INFLIGHT_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self.book.lock:
                if self.book.inflight <= 0:
                    break
            time.sleep(0.1)
        ids = self.book.mine() | {j.external_jobid for j in active_jobs if j.external_jobid}
        try:
            left = self.bridge.cancel_all(
                ids,
                name_prefix=run_prefix(run.run_id),
                include_finished=not self.settings.keep_sessions,
            )
        except Exception as exc:  # cancellation must never raise
            self.logger.error(f"Cancelling CANFAR sessions failed: {exc}")
            return
        for session_id in ids - set(left):
            self.ledger.record_done(session_id)
        for unread in run.secrets_dir.glob(f"{run_prefix(run.run_id)}*.sh"):
            remove_secrets_file(unread)
        if left:
            self.logger.error(
                f"Could not delete CANFAR sessions {', '.join(left)}; delete them with "
                "`canfar delete <id>`."
            )
        else:
            self.logger.info(f"Deleted {len(ids)} CANFAR session(s) of run {run.run_id}.")

    def shutdown(self) -> None:
        """Stop status checks, finish background work, close the client.

        Creations still in flight here (the run is stopping on an error) would make
        sessions nobody watches: they are deleted as they are created.
        """
        if self.run is not None:
            with self.book.lock:
                if self.book.inflight > 0:
                    self.book.cancelling = True
        super().shutdown()
        if self.run is not None:
            self.bridge.close()
            if self.run.is_local:
                self._stop_embedded_platform()
        self._stop_forwarding()

    def _stop_embedded_platform(self) -> None:
        """Stop the in-process platform that `--canfar-url local` started for this run.

        Its sessions all ended (or were cancelled) by now; left running, its background
        tasks die with a traceback when the interpreter exits. Sessions a killed run
        leaves behind survive in its state directory, and the next run's platform
        re-adopts them.
        """
        from canfar_core import shared_platform, use_platform

        try:
            shared_platform().stop()
        except Exception as exc:  # shutting down must not fail the run
            self.logger.warning(f"Could not stop the embedded platform: {exc}")
        use_platform(None)


@contextlib.contextmanager
def _second_interrupt_ignored(logger: Any) -> Iterator[None]:
    """While the block runs, a SIGINT prints one line instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def answer(signum: int, frame: object) -> None:
        logger.warning("Still deleting this run's CANFAR sessions; please wait.")

    previous = signal.signal(signal.SIGINT, answer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _title(job: JobExecutorInterface) -> str:
    # A group job's name lists its rules; its group id is what the user wrote.
    return str(getattr(job, "groupid", job.name)) if job.is_group() else job.name


def _label(job: JobExecutorInterface) -> str:
    return f"group {_title(job)}" if job.is_group() else f"rule {_title(job)}"


def _default_resources(workflow: Any) -> Any:
    """The run's default resources as Snakemake parsed them (`--default-resources`)."""
    settings = workflow.resource_settings
    parsed = getattr(settings, "_parsed_default_resources", None)
    return parsed if parsed is not None else (settings.default_resources or {})


def _resource_dict(job: JobExecutorInterface) -> dict[str, Any]:
    resources = job.resources
    try:
        return dict(resources.items())
    except AttributeError:
        return dict(resources)
