"""What a Snakemake run decides once, at start-up, before its first job.

`open_run` validates the settings, resolves the server and credentials, checks the
working directory and deployment method, reaches the server once (its `/context`
options and allowed registries), and returns a frozen `RunContext` with the blocking
client it opened. Everything after that reads the context; nothing re-decides it.
Each refusal is one sentence (a WorkflowError) and leaves nothing open behind it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canfar_core import (
    CanfarClient,
    CanfarConfig,
    CanfarError,
    ConfigurationError,
    Context,
    default_image,
    events_timing,
    is_refusal,
    on_shared_filesystem,
    refusal_sentence,
    resolve_config,
    runs_on_this_machine,
    session_python,
    where_of,
)
from pydantic import SecretStr
from snakemake_interface_common.exceptions import WorkflowError

from snakemake_executor_plugin_canfar.naming import new_run_id
from snakemake_executor_plugin_canfar.resources import Defaults
from snakemake_executor_plugin_canfar.settings import ExecutorSettings
from snakemake_executor_plugin_canfar.validation import (
    LONGEST_LIST_INTERVAL,
    check_deployment,
    check_workdir,
    check_writable,
    server_problems,
    settings_problems,
    status_problems,
)


@dataclass(frozen=True)
class RunContext:
    """The decisions of one run: where, as whom, with what defaults, watched how."""

    settings: ExecutorSettings
    run_id: str
    workdir: Path
    config: CanfarConfig
    where: str
    same_machine: bool
    state_dir: Path
    logdir: Path
    server: Context
    defaults: Defaults
    python: str
    min_interval: float
    max_interval: float
    events_delay: float = 10.0
    events_interval: float = 30.0
    exit_scan_interval: float | None = None

    @property
    def is_local(self) -> bool:
        """True when the run started the embedded platform in-process."""
        return self.config.is_local

    @property
    def sessions_dir(self) -> Path:
        """Where sessions tee their logs and write their exit codes."""
        return self.state_dir / "sessions"

    @property
    def secrets_dir(self) -> Path:
        """Where each job's `envvars` wait, 0600, for its session to read them."""
        return self.state_dir / "secrets"

    @property
    def pending_timeout(self) -> float | None:
        """Seconds a session may stay Pending (None: forever)."""
        return self.settings.pending_timeout or None


def status_intervals(
    seconds_between_checks: float, *, same_machine: bool, checks_per_second: float = 10.0
) -> tuple[float, float]:
    """Tracker (min, max) list interval from `--seconds-between-status-checks`.

    The tracker lists fast while sessions change state and backs off to the user's
    interval while nothing happens. Sessions on this machine start in a second, so
    the fast end is faster there; on CANFAR they take tens of seconds to start. One
    list is one status check of every job, so `--max-status-checks-per-second`
    (`checks_per_second`, Snakemake's 10 by default) is a floor under both ends: 0.1
    means at most one list every 10 s, whatever changes.
    """
    maximum = min(max(float(seconds_between_checks), 0.5), LONGEST_LIST_INTERVAL)
    minimum = 0.5 if same_machine else min(max(maximum / 5, 0.5), maximum)
    floor = 1.0 / checks_per_second
    return max(minimum, floor), max(maximum, floor)


def open_run(workflow: Any) -> tuple[RunContext, CanfarClient]:
    """Decide everything about this run, or raise one sentence as a WorkflowError."""
    settings: ExecutorSettings = workflow.executor_settings or ExecutorSettings()
    rate = float(workflow.remote_execution_settings.max_status_checks_per_second)
    problems = settings_problems(settings) + status_problems(rate)
    if problems:
        raise WorkflowError(" ".join(problems))
    workdir = Path(workflow.workdir_init).resolve()
    config = _resolve_config(settings)
    same_machine = runs_on_this_machine(config)
    check_workdir(workdir, same_machine=same_machine, skip=settings.skip_workdir_check)
    check_deployment(workflow.deployment_settings.deployment_method, same_machine=same_machine)
    state_dir = (settings.state_dir or workdir / ".snakemake" / "canfar").resolve()
    logdir = (settings.logdir or state_dir / "logs").resolve()
    check_writable(state_dir / "sessions", "--canfar-state-dir", settings.state_dir)
    if settings.logdir is not None:
        check_writable(logdir, "--canfar-logdir", settings.logdir)

    client = CanfarClient(config)
    where = where_of(config)
    try:
        server = client.context()
        registries = client.repositories()
        image = settings.image or default_image(same_machine)
        problems = server_problems(settings, image, registries, server)
        if problems:
            raise WorkflowError(" ".join(problems))
    except WorkflowError:
        client.close()
        raise
    except CanfarError as exc:
        client.close()
        if is_refusal(exc):
            raise WorkflowError(refusal_sentence(exc, where=where, source=config.source)) from None
        if isinstance(exc, ConfigurationError):
            raise WorkflowError(str(exc)) from None
        raise WorkflowError(f"Cannot reach CANFAR at {where}: {exc}") from None

    seconds = workflow.remote_execution_settings.seconds_between_status_checks
    min_interval, max_interval = status_intervals(
        seconds, same_machine=same_machine, checks_per_second=rate
    )
    events_delay, events_interval = events_timing(same_machine=same_machine)
    exit_scan = settings.exit_scan_interval or None
    if exit_scan is not None and exit_scan > max_interval:
        client.close()
        raise WorkflowError(
            f"--canfar-exit-scan-interval={settings.exit_scan_interval:g} is not allowed with "
            f"--seconds-between-status-checks {seconds:g}: the state directory is read for "
            "exit files at most as slowly as the session list, or use 0 to turn it off."
        )
    context = RunContext(
        settings=settings,
        run_id=new_run_id(),
        workdir=workdir,
        config=config,
        where=where,
        same_machine=same_machine,
        state_dir=state_dir,
        logdir=logdir,
        server=server,
        defaults=Defaults(image=image, cores=settings.cores, ram=settings.ram, gpus=settings.gpus),
        python=_python(settings, same_machine),
        min_interval=min_interval,
        max_interval=max_interval,
        events_delay=events_delay,
        events_interval=events_interval,
        exit_scan_interval=exit_scan,
    )
    return context, client


def _resolve_config(settings: ExecutorSettings) -> CanfarConfig:
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


def _python(settings: ExecutorSettings, same_machine: bool) -> str:
    """The interpreter that runs `-m snakemake` inside the session."""
    if settings.python:
        return settings.python
    # An interpreter on /arc is seen by the sessions too, as this machine's is locally.
    return session_python(same_machine or on_shared_filesystem(sys.executable))
