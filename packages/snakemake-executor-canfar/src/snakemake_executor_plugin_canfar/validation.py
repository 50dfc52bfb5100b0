"""Everything the executor refuses before its first job, one sentence each.

Kept out of the executor (as the SLURM plugin keeps its `validation.py`): each check
is a small function of the settings, the workflow or the server's answers, and each
problem is one sentence naming the flag, the value and what is allowed, so a run that
cannot work stops before anything is submitted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from canfar_core import Context, SpecError, check_registry, on_shared_filesystem, url_problem
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from snakemake_executor_plugin_canfar.settings import ExecutorSettings

# The longest list interval a run may ask for: finished sessions stay listed for an hour.
LONGEST_LIST_INTERVAL = 120.0


def status_problems(checks_per_second: float) -> list[str]:
    """Sentences for status-check settings the tracker cannot honour (empty: fine)."""
    if checks_per_second > 0 and 1.0 / checks_per_second <= LONGEST_LIST_INTERVAL:
        return []
    return [
        f"--max-status-checks-per-second={checks_per_second:g} is not allowed with "
        f"--executor canfar: more than 0 and at least 1/{LONGEST_LIST_INTERVAL:g} "
        "(one list of sessions every 2 minutes), so that no session ends unseen."
    ]


def settings_problems(settings: ExecutorSettings) -> list[str]:
    """One sentence per invalid setting (field, value, what is allowed).

    Only what can be judged without the server; the sizes are checked against its
    `/context` options once it has been reached (`server_problems`).
    """
    problems = []
    if settings.url is not None:
        problem = url_problem(settings.url.strip().rstrip("/"))
        if problem is not None:
            problems.append(f"--canfar-url={settings.url!r} is not allowed: {problem}.")
    if settings.image is not None and not settings.image.strip():
        problems.append(
            f"--canfar-image={settings.image!r} is not allowed: give an image such as "
            "images.canfar.net/<project>/<name>:<tag>."
        )
    for name in ("cores", "ram"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            problems.append(f"--canfar-{name}={value} is not allowed: it must be at least 1.")
    if settings.gpus is not None and settings.gpus < 1:
        # Unset already means no GPUs; 0 or less is most likely a typo for a count.
        problems.append(
            f"--canfar-gpus={settings.gpus} is not allowed: leave it unset for no GPUs, "
            "otherwise at least 1."
        )
    if settings.pending_timeout < 0:
        problems.append(
            f"--canfar-pending-timeout={settings.pending_timeout} is not allowed: "
            "use a number of seconds, or 0 to wait forever."
        )
    if settings.image_pull_timeout < 1:
        problems.append(
            f"--canfar-image-pull-timeout={settings.image_pull_timeout} is not allowed: "
            "use a number of seconds of at least 1."
        )
    if not settings.exit_scan_interval >= 0:
        problems.append(
            f"--canfar-exit-scan-interval={settings.exit_scan_interval} is not allowed: "
            "use a number of seconds, or 0 to turn the exit-file fast path off."
        )
    if settings.submit_concurrency < 1:
        problems.append(
            f"--canfar-submit-concurrency={settings.submit_concurrency} is not allowed: "
            "it must be at least 1."
        )
    if bool(settings.registry_username) != bool(settings.registry_secret):
        problems.append(
            "--canfar-registry-username and --canfar-registry-secret must be given together."
        )
    return problems


def server_problems(
    settings: ExecutorSettings, image: str | None, registries: list[str], context: Context
) -> list[str]:
    """The image and --canfar-cores/ram/gpus defaults the server cannot grant.

    Checked once here rather than per job: a default above the server's largest
    option would otherwise fail every job with a message naming the job's threads or
    memory instead of the flag that was wrong.
    """
    problems = []
    if image:
        try:
            check_registry(image, registries, field="--canfar-image")
        except SpecError as exc:
            problems.append(str(exc))
    for name in ("cores", "ram", "gpus"):
        value = getattr(settings, name)
        if not value:
            continue
        try:
            context.smallest_allowed(name, value, field=f"--canfar-{name}")
        except SpecError as exc:
            problems.append(str(exc))
    return problems


def check_workdir(workdir: Path, *, same_machine: bool, skip: bool) -> None:
    """Refuse a working directory the sessions cannot see (not on /arc)."""
    if same_machine or skip or on_shared_filesystem(workdir):
        return
    raise WorkflowError(
        f"The working directory {workdir} is not on CANFAR's shared filesystem "
        "(/arc), so sessions cannot see it: run Snakemake from a directory under /arc "
        "(e.g. /arc/projects/<project>), or pass --canfar-skip-workdir-check if this "
        "server mounts it elsewhere."
    )


def check_deployment(methods: object, *, same_machine: bool) -> None:
    """Refuse apptainer: CANFAR sessions are unprivileged containers."""
    if DeploymentMethod.APPTAINER in methods and not same_machine:  # type: ignore[operator]
        raise WorkflowError(
            "--software-deployment-method apptainer is not allowed with the canfar "
            "executor: CANFAR sessions are unprivileged containers that cannot start "
            "apptainer; give each rule an image with the canfar_image resource instead."
        )


def check_writable(directory: Path, flag: str, given: Path | None) -> None:
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
