"""`snakemake --executor canfar`: each job (or group job) becomes a CANFAR headless session.

The flow per job: plan the request (resources → allowed cores/RAM/GPUs, image,
runtime) and refuse what the platform cannot satisfy as a job error; adopt a session a
previous, killed Snakemake left running for the same outputs; otherwise create the
session through the launch envelope; watch it with the run's single tracker; when it
ends, save its log beside the workflow, delete it, and report success or a failure
message with the session id, image, exit code and reason.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from canfar_core.config import CanfarConfig, resolve_config
from canfar_core.errors import (
    AuthenticationError,
    CanfarError,
    ConfigurationError,
    PermissionDeniedError,
    SpecError,
)
from canfar_core.launch import remove_secrets_file
from canfar_core.models import Session, SessionSpec
from canfar_core.outcome import Outcome
from canfar_core.phase import Phase
from canfar_core.refusals import refusal_sentence
from canfar_core.sync import CanfarClient
from pydantic import SecretStr
from snakemake_interface_common.exceptions import ApiError, WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from snakemake_executor_plugin_canfar.diagnostics import failure_message
from snakemake_executor_plugin_canfar.ledger import RunLedger, job_key
from snakemake_executor_plugin_canfar.logs import save_job_log
from snakemake_executor_plugin_canfar.naming import (
    job_log_path,
    new_run_id,
    run_prefix,
    session_name,
)
from snakemake_executor_plugin_canfar.resources import Defaults, RequestError, plan_request
from snakemake_executor_plugin_canfar.settings import ExecutorSettings, settings_problems
from snakemake_executor_plugin_canfar.status import SessionWatcher
from snakemake_executor_plugin_canfar.submission import (
    Plan,
    build_spec,
    create_all,
    write_secrets,
)

log = logging.getLogger(__name__)

LOCAL_DEFAULT_IMAGE = "images.canfar.net/skaha/base:latest"
# `python` is missing from many Debian-based images; `python3` exists wherever Python 3 does.
DEFAULT_IMAGE_PYTHON = "python3"
SHARED_ROOTS = ("/arc/", "/cavern/")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
INFLIGHT_WAIT_SECONDS = 15.0
ADOPTABLE = (Phase.PENDING, Phase.RUNNING)


def runs_on_this_machine(config: CanfarConfig) -> bool:
    """True for the embedded platform, in-process or on a loopback URL.

    Such a server runs sessions on this machine, so they see this filesystem and this
    Python: no /arc check, the current interpreter, and a default image.
    """
    if config.is_local:
        return True
    return (urlparse(config.url).hostname or "") in LOOPBACK_HOSTS


def status_intervals(seconds_between_checks: float, *, same_machine: bool) -> tuple[float, float]:
    """Tracker (min, max) poll interval derived from `--seconds-between-status-checks`.

    The tracker polls fast while sessions change state and backs off to the user's
    interval while nothing happens. Sessions on this machine start in a second, so
    the fast end is faster there; on CANFAR they take tens of seconds to start.
    """
    maximum = min(max(float(seconds_between_checks), 0.5), 120.0)
    minimum = 0.5 if same_machine else min(max(maximum / 5, 0.5), maximum)
    return minimum, maximum


class Executor(RemoteExecutor):
    """The CANFAR executor (see the module docstring)."""

    # -- setup -----------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self._ready = False
        try:
            self._setup()
        except BaseException as exc:
            # The base class started the status thread already; stop it with us.
            with self.lock:
                self.wait = False
            if isinstance(exc, WorkflowError):
                # A configuration mistake: Snakemake prints an ApiError as one line,
                # a WorkflowError with the plugin's source lines under it.
                raise ApiError(str(exc)) from None
            raise

    def _setup(self) -> None:
        settings = self.workflow.executor_settings or ExecutorSettings()
        self.settings: ExecutorSettings = settings
        problems = settings_problems(settings)
        if problems:
            raise WorkflowError(" ".join(problems))

        self.run_id = new_run_id()
        self.workdir = Path(self.workflow.workdir_init).resolve()
        config = self._resolve_config()
        self.same_machine = runs_on_this_machine(config)
        self.is_local = config.is_local
        self._check_workdir()
        self._check_deployment()

        self.state_dir = (settings.state_dir or self.workdir / ".snakemake" / "canfar").resolve()
        self.sessions_dir = self.state_dir / "sessions"
        self.secrets_dir = self.state_dir / "secrets"
        self.logdir = (settings.logdir or self.state_dir / "logs").resolve()
        _check_writable(self.sessions_dir, "--canfar-state-dir", settings.state_dir)
        if settings.logdir is not None:
            _check_writable(self.logdir, "--canfar-logdir", settings.logdir)

        self.client = CanfarClient(config)
        where = "the embedded platform" if config.is_local else config.url
        try:
            self.context = self.client.context()
            registries = self.client.repositories()
        except (AuthenticationError, PermissionDeniedError) as exc:
            self.client.close()
            raise WorkflowError(refusal_sentence(exc, where=where, source=config.source)) from None
        except ConfigurationError as exc:
            self.client.close()
            raise WorkflowError(str(exc)) from None
        except CanfarError as exc:
            self.client.close()
            raise WorkflowError(f"Cannot reach CANFAR at {where}: {exc}") from None

        image = settings.image or (LOCAL_DEFAULT_IMAGE if self.same_machine else None)
        problems = []
        if image and registries and not any(image.startswith(r) for r in registries):
            problems.append(
                f"--canfar-image={image!r} is not allowed: images must come from "
                f"{', '.join(registries)}."
            )
        problems += self._size_problems()
        if problems:
            self.client.close()
            raise WorkflowError(" ".join(problems))
        self.defaults = Defaults(
            image=image, cores=settings.cores, ram=settings.ram, gpus=settings.gpus
        )

        interval = self.workflow.remote_execution_settings.seconds_between_status_checks
        min_interval, max_interval = status_intervals(interval, same_machine=self.same_machine)
        self.watcher = SessionWatcher(
            self.client, min_interval=min_interval, max_interval=max_interval
        )
        self.next_seconds_between_status_checks = min(1.0, min_interval)

        self._live: dict[str, Session] | None = None
        self.ledger = RunLedger(self.state_dir)
        if self.ledger.open_count:
            # A previous run did not see all its sessions end: keep those still active,
            # the candidates for adoption.
            live = self._live_sessions()
            if self._live is not None:  # never prune on a failed list
                self.ledger.compact(alive={k for k, v in live.items() if v.phase in ADOPTABLE})
        else:
            self.ledger.compact()
        self._created: set[str] = set()
        self._adopted: set[str] = set()
        self._inflight = 0
        self._cancelling = False
        self._state_lock = threading.Lock()
        self._ready = True
        self.logger.info(
            f"CANFAR executor: run {self.run_id} on {where}; sessions are named "
            f"{run_prefix(self.run_id)}*; logs in {self.logdir}."
        )

    def _size_problems(self) -> list[str]:
        """The --canfar-cores/ram/gpus defaults the server cannot grant, one sentence each.

        Checked once here rather than per job: a default above the server's largest
        option would otherwise fail every job with a message naming the job's
        threads or memory instead of the flag that was wrong.
        """
        problems = []
        for name in ("cores", "ram", "gpus"):
            value = getattr(self.settings, name)
            if not value:
                continue
            try:
                self.context.smallest_allowed(name, value, field=f"--canfar-{name}")
            except SpecError as exc:
                problems.append(str(exc))
        return problems

    def _resolve_config(self) -> CanfarConfig:
        settings = self.settings
        # Name the setting the credentials came from, not "arguments": the user set a
        # flag or SNAKEMAKE_CANFAR_TOKEN, and that is what a refusal must point at.
        source = "--canfar-token" if settings.token else "--canfar-certificate"
        try:
            config = resolve_config(
                url=settings.url,
                token=settings.token,
                certificate=settings.certificate,
                source=source,
            )
        except ConfigurationError as exc:
            raise WorkflowError(str(exc)) from None
        if settings.registry_username and settings.registry_secret:
            config = config.model_copy(
                update={
                    "registry_username": settings.registry_username,
                    "registry_secret": SecretStr(settings.registry_secret),
                }
            )
        return config

    def _check_workdir(self) -> None:
        if self.same_machine or self.settings.skip_workdir_check:
            return
        if not str(self.workdir).startswith(SHARED_ROOTS):
            raise WorkflowError(
                f"The working directory {self.workdir} is not on CANFAR's shared filesystem "
                "(/arc), so sessions cannot see it: run Snakemake from a directory under /arc "
                "(e.g. /arc/projects/<project>), or pass --canfar-skip-workdir-check if this "
                "server mounts it elsewhere."
            )

    def _check_deployment(self) -> None:
        methods = self.workflow.deployment_settings.deployment_method
        if DeploymentMethod.APPTAINER in methods and not self.same_machine:
            raise WorkflowError(
                "--software-deployment-method apptainer is not allowed with the canfar "
                "executor: CANFAR sessions are unprivileged containers that cannot start "
                "apptainer; give each rule an image with the canfar_image resource instead."
            )

    def get_python_executable(self) -> str:
        """The interpreter that runs `-m snakemake` inside the session."""
        if self.settings.python:
            return self.settings.python
        if self.same_machine or sys.executable.startswith(SHARED_ROOTS):
            return sys.executable
        return DEFAULT_IMAGE_PYTHON

    @property
    def cores(self) -> int | str:
        """`--cores` for the job being formatted: the cores its session was granted.

        The default, `all`, makes Snakemake inside the container count the node's CPUs
        (Kubernetes does not hide them), not the session's allocation.
        """
        granted = getattr(self, "_formatting_cores", None)
        return granted if granted is not None else super().cores

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
        keys = {p.spec.name: p.key for p in plans}
        with self._state_lock:
            self._inflight += len(plans)
        results = self.client.run(
            create_all(
                self.client.aio,
                [p.spec for p in plans],
                concurrency=self.settings.submit_concurrency,
                on_created=lambda spec, sid: self._on_created(keys[spec.name], spec, sid),
                on_settled=self._on_settled,
            )
        )
        fatal: BaseException | None = None
        for plan, result in zip(plans, results, strict=True):
            if not isinstance(result, str):
                remove_secrets_file(plan.secrets_file)
            if isinstance(result, str):
                self._start(plan, result)
            elif isinstance(
                result, AuthenticationError | PermissionDeniedError | ConfigurationError
            ):
                fatal = fatal or result
            elif isinstance(result, SpecError):
                # Refused before sending (e.g. an image outside the allowed registries).
                self.report_job_error(SubmittedJobInfo(plan.job), msg=f"{plan.label}: {result} ")
            elif isinstance(result, CanfarError):
                self.report_job_error(
                    SubmittedJobInfo(plan.job),
                    msg=f"{plan.label}: CANFAR did not create the session: {result}. ",
                )
            else:
                raise result
        if fatal is not None:
            reason = getattr(fatal, "reason", None) or str(fatal)
            raise WorkflowError(
                f"CANFAR refused to create sessions ({reason}); check or renew the "
                "credentials with `canfar login`."
            )

    def _plan(self, job: JobExecutorInterface) -> Plan:
        is_group = job.is_group()
        # A group job's name lists its rules; its group id is what the user wrote.
        title = str(getattr(job, "groupid", job.name)) if is_group else job.name
        label = f"group {title}" if is_group else f"rule {title}"
        resources = _resource_dict(job)
        request = plan_request(
            label=label,
            threads=job.threads,
            resources=resources,
            defaults=self.defaults,
            context=self.context,
        )
        name = session_name(self.run_id, title, job.jobid, job.attempt)
        self._formatting_cores = request.cores
        try:
            command = self.format_job_exec(job)
        finally:
            self._formatting_cores = None
        secrets_file = self.secrets_dir / f"{name}.sh" if self.envvars() else None
        spec = build_spec(
            label=label,
            command=command,
            workdir=self.workdir,
            state_dir=self.sessions_dir,
            name=name,
            request=request,
            secrets_file=secrets_file,
        )
        wildcards = None if is_group else getattr(job, "wildcards_dict", None)
        return Plan(
            job=job,
            label=label,
            log_rule=f"group_{title}" if is_group else title,
            wildcards=wildcards,
            name=name,
            key=job_key(job.output),
            request=request,
            spec=spec,
            secrets_file=secrets_file,
        )

    def _on_created(self, key: str, spec: SessionSpec, session_id: str) -> None:
        """Runs on the client's loop as soon as a session exists."""
        with self._state_lock:
            self._created.add(session_id)
            cancelling = self._cancelling
        self.ledger.record_submit(key, session_id, spec.name, self.run_id)
        if cancelling:
            self.watcher.delete_later(session_id)

    def _on_settled(self) -> None:
        """Runs on the client's loop when one creation has succeeded or failed."""
        with self._state_lock:
            self._inflight -= 1

    def _start(self, plan: Plan, session_id: str, *, adopted: bool = False) -> None:
        self.watcher.watch(
            session_id,
            name=plan.name,
            state_dir=str(self.sessions_dir),
            pending_timeout=self.settings.pending_timeout or None,
            runtime_limit=plan.runtime_limit,
        )
        self.report_job_submission(
            SubmittedJobInfo(
                plan.job, external_jobid=session_id, aux={"plan": plan, "adopted": adopted}
            )
        )

    # -- restart adoption -------------------------------------------------------------------

    def _try_adopt(self, plan: Plan) -> bool:
        """Adopt a session an earlier, killed Snakemake left running for this job."""
        candidates: list[str] = []
        try:
            registered = self.dag.incomplete_external_jobid(plan.job)
        except WorkflowError:
            registered = None
        if registered:
            candidates.append(registered)
        candidates += self.ledger.open_sessions(plan.key, exclude_run=self.run_id)
        with self._state_lock:
            mine = self._created | self._adopted
        candidates = [c for c in dict.fromkeys(candidates) if c not in mine]
        if not candidates:
            return False
        live = self._live_sessions()
        for session_id in candidates:
            session = live.get(session_id)
            if session is None or session.phase not in ADOPTABLE:
                self.ledger.record_done(session_id)
                continue
            with self._state_lock:
                self._adopted.add(session_id)
            if session_id not in self.ledger.open_sessions(plan.key):
                self.ledger.record_submit(plan.key, session_id, session.name or "", self.run_id)
            self.logger.info(
                f"Adopting CANFAR session {session_id} ({session.name}, {session.phase}) "
                f"started for {plan.label} by an earlier Snakemake run, instead of "
                "submitting a duplicate."
            )
            self._start(plan, session_id, adopted=True)
            return True
        return False

    def _live_sessions(self) -> dict[str, Session]:
        """The platform's sessions, listed once per run (adoption happens at restart)."""
        if self._live is None:
            try:
                listed = self.client.list_sessions(type="headless")
            except CanfarError as exc:
                self.logger.info(f"Cannot list sessions to look for ones to adopt: {exc}")
                return {}
            self._live = {s.id: s for s in listed}
        return self._live

    # -- status ------------------------------------------------------------------------------

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        """Report finished jobs from the tracker's outcomes; yield the rest."""
        ready = getattr(self, "_ready", False)
        for job_info in active_jobs:
            outcome: Outcome | None = None
            if ready and job_info.external_jobid:
                try:
                    outcome = self.watcher.outcome(job_info.external_jobid)
                except Exception as exc:  # never let a status check end the run
                    log.warning("Status of %s unavailable: %s", job_info.external_jobid, exc)
            if outcome is None:
                yield job_info
                continue
            try:
                message, aux_logs = self._conclude(job_info, outcome)
            except Exception as exc:  # never let a status check end the run
                log.exception("Concluding session %s failed", outcome.session_id)
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
        plan: Plan = (job_info.aux or {})["plan"]
        session_id = outcome.session_id
        dest = job_log_path(self.logdir, plan.log_rule, plan.wildcards, plan.job.jobid, session_id)
        saved = save_job_log(outcome, state_dir=self.sessions_dir, dest=dest)
        remove_secrets_file(plan.secrets_file)  # if the session never started to read it
        self.ledger.record_done(session_id)
        if not self.settings.keep_sessions:
            self.watcher.delete_later(session_id)
        self.watcher.forget(session_id)
        if outcome.success:
            return None, []
        message = failure_message(
            outcome,
            label=plan.label,
            request=plan.request,
            pending_timeout=self.settings.pending_timeout or None,
        )
        return message, [str(saved)] if saved else []

    # -- cancellation and shutdown -------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Delete every session of this run (and adopted ones) and verify by listing."""
        if not getattr(self, "_ready", False):
            return
        with self._state_lock:
            self._cancelling = True
        deadline = time.monotonic() + INFLIGHT_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self._state_lock:
                if self._inflight <= 0:
                    break
            time.sleep(0.1)
        with self._state_lock:
            ids = set(self._created) | set(self._adopted)
        ids |= {j.external_jobid for j in active_jobs if j.external_jobid}
        try:
            left = self.watcher.cancel_all(
                ids,
                name_prefix=run_prefix(self.run_id),
                include_finished=not self.settings.keep_sessions,
            )
        except Exception as exc:  # cancellation must never raise
            self.logger.error(f"Cancelling CANFAR sessions failed: {exc}")
            return
        for session_id in ids - set(left):
            self.ledger.record_done(session_id)
        for unread in self.secrets_dir.glob(f"{run_prefix(self.run_id)}*.sh"):
            remove_secrets_file(unread)
        if left:
            self.logger.error(
                f"Could not delete CANFAR sessions {', '.join(left)}; delete them with "
                "`canfar delete <id>`."
            )
        else:
            self.logger.info(f"Deleted {len(ids)} CANFAR session(s) of run {self.run_id}.")

    def shutdown(self) -> None:
        """Stop status checks, finish background deletes, close the client."""
        super().shutdown()
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.close()
            if self.is_local:
                _stop_embedded_platform()


def _check_writable(directory: Path, flag: str, given: Path | None) -> None:
    """Create `directory` and write a file in it, or raise a one-sentence WorkflowError.

    Sessions write their logs and exit codes there; finding out after the first job
    ran would cost a session and report a confusing failure instead of this.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".canfar-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if given is None:
            raise WorkflowError(
                f"The state directory {directory} cannot be created or written ({reason}): "
                f"run Snakemake in a directory you can write, or set {flag}."
            ) from None
        raise WorkflowError(
            f"{flag}={str(given)!r} is not allowed: {directory} cannot be created or "
            f"written ({reason}); use a directory on the shared filesystem that you can write."
        ) from None


def _resource_dict(job: JobExecutorInterface) -> dict[str, Any]:
    resources = job.resources
    try:
        return dict(resources.items())
    except AttributeError:
        return dict(resources)


def _stop_embedded_platform() -> None:
    """Stop the in-process platform that `--canfar-url local` started for this run.

    Its sessions all ended (or were cancelled) by now; left running, its background
    tasks die with a traceback when the interpreter exits. Sessions a killed run leaves
    behind survive in its state directory, and the next run's platform re-adopts them.
    """
    from canfar_core.local import shared_platform, use_platform

    try:
        shared_platform().stop()
    except Exception as exc:  # shutting down must not fail the run
        log.warning("Could not stop the embedded platform: %s", exc)
    use_platform(None)
