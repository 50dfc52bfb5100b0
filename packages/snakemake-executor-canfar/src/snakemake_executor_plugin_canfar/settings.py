"""The plugin's settings (`--canfar-*` flags, `SNAKEMAKE_CANFAR_*` env vars, profile keys).

Snakemake's settings parser reads the dataclass field *types* at runtime and only
understands `typing.Optional[X]`, so this module must not use postponed annotations or
the `X | None` spelling. Booleans default to False: a True default turns into an
unprefixed `--no-...` flag that Snakemake's parser then fails to read back.
"""

# ruff: noqa: UP045

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

DEFAULT_PENDING_TIMEOUT = 3600
DEFAULT_SUBMIT_CONCURRENCY = 8
DEFAULT_IMAGE_PULL_TIMEOUT = 180
# Half a second: a chain of short jobs then loses well under a second per step.
DEFAULT_EXIT_SCAN_INTERVAL = 0.5

# A shared-filesystem remote executor: every session sees the workflow directory (on
# CANFAR, `/arc`), so sources and outputs need no staging. Environment variables are
# shipped inside the launch envelope, never in the command string (which would leak
# secrets into logs and process tables).
common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    # Status checks read the tracker's in-memory outcomes; nothing to wait for.
    init_seconds_before_status_checks=0,
)


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Settings of `snakemake --executor canfar`."""

    url: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "URL",
            "help": "Skaha API URL, e.g. https://ws-uv.canfar.net/skaha/v1, or 'local' for "
            "the embedded platform (runs sessions on this machine, no account needed). "
            "Default: CANFAR_URL, else the active server of `canfar login`, else (inside a "
            "CANFAR session) https://$skaha_hostname/skaha/v1, else canfar.net.",
            "env_var": True,
        },
    )
    token: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "TOKEN",
            "help": "CANFAR access token (prefer the environment variable; it is never "
            "logged). Default: CANFAR_TOKEN, else the credentials of `canfar login`, else "
            "~/.ssl/cadcproxy.pem (inside a CANFAR session, the proxy the server puts there).",
            "env_var": True,
        },
    )
    certificate: Optional[Path] = field(
        default=None,
        metadata={
            "metavar": "PEM",
            "help": "Proxy certificate (PEM) to authenticate with instead of a token. "
            "Default: CANFAR_CERTIFICATE, else `canfar login`, else ~/.ssl/cadcproxy.pem.",
            "env_var": True,
        },
    )
    image: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "IMAGE",
            "help": "Container image for every job, e.g. images.canfar.net/<project>/"
            "<image>:<tag>; it must contain Snakemake of the same minor version as this "
            "one (or see --canfar-python). A rule can override it with the canfar_image "
            "resource. Default in local mode: images.canfar.net/skaha/astroml:latest.",
        },
    )
    python: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "PATH",
            "help": "Python interpreter inside the session that runs `-m snakemake`, e.g. "
            "/arc/home/<user>/envs/smk/bin/python. Default: this interpreter when it lives "
            "on the shared filesystem (or in local mode), else 'python3' from the image.",
        },
    )
    cores: Optional[int] = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "Minimum cores per session (default 1). A job's threads raise it to the "
            "smallest value the server allows; the canfar_cores resource overrides both.",
        },
    )
    ram: Optional[int] = field(
        default=None,
        metadata={
            "metavar": "GIB",
            "help": "RAM in GiB for jobs that declare no mem_mb/mem_mib (default: the "
            "server's default request, 4 GiB on canfar.net). The canfar_ram resource "
            "overrides it per rule.",
        },
    )
    gpus: Optional[int] = field(
        default=None,
        metadata={
            "metavar": "N",
            "help": "GPUs for jobs that declare no gpu resource (default: none). The "
            "canfar_gpus resource overrides it per rule.",
        },
    )
    pending_timeout: int = field(
        default=DEFAULT_PENDING_TIMEOUT,
        metadata={
            "metavar": "SECONDS",
            "help": "Seconds a session may stay Pending (queued, pulling its image, or "
            "unschedulable) before it is deleted and the job fails with the session's "
            "events. 0 waits forever.",
        },
    )
    image_pull_timeout: int = field(
        default=DEFAULT_IMAGE_PULL_TIMEOUT,
        metadata={
            "help": "Seconds a session's image may keep failing to pull (ErrImagePull, "
            "ImagePullBackOff: a mistyped tag) before the job fails with the session's "
            "events, long before --canfar-pending-timeout.",
            "metavar": "SECONDS",
        },
    )
    exit_scan_interval: float = field(
        default=DEFAULT_EXIT_SCAN_INTERVAL,
        metadata={
            "help": "Seconds between reads of the state directory for the exit files "
            "sessions write as they end: a job's end is known within this, with no API "
            "request, while the session list is read only every "
            "--seconds-between-status-checks. 0 turns this fast path off.",
            "metavar": "SECONDS",
        },
    )
    keep_sessions: bool = field(
        default=False,
        metadata={
            "help": "Keep finished sessions on the platform (it removes them an hour after "
            "they end) instead of deleting them once their logs are saved.",
        },
    )
    state_dir: Optional[Path] = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "Directory on the shared filesystem for session logs, exit codes and "
            "the run ledger that lets a restarted Snakemake adopt running sessions. "
            "Default: .snakemake/canfar in the working directory.",
        },
    )
    logdir: Optional[Path] = field(
        default=None,
        metadata={
            "metavar": "DIR",
            "help": "Where each job's log is saved, as <logdir>/<rule>/<wildcards>/"
            "<jobid>-<session id>.log. Default: <state dir>/logs.",
        },
    )
    submit_concurrency: int = field(
        default=DEFAULT_SUBMIT_CONCURRENCY,
        metadata={
            "metavar": "N",
            "help": "How many session creations may be in flight at once (each takes "
            "seconds on CANFAR).",
        },
    )
    registry_username: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "NAME",
            "help": "Harbor username for private images (sent as x-skaha-registry-auth). "
            "Default: the registry credentials of `canfar login`.",
            "env_var": True,
        },
    )
    registry_secret: Optional[str] = field(
        default=None,
        metadata={
            "metavar": "SECRET",
            "help": "Harbor CLI secret for private images (prefer the environment "
            "variable; it is never logged).",
            "env_var": True,
        },
    )
    skip_workdir_check: bool = field(
        default=False,
        metadata={
            "help": "Do not require the working directory to be on the platform's shared "
            "filesystem (/arc or /cavern); for servers that mount it elsewhere.",
        },
    )

    def __repr__(self) -> str:
        # Keep secrets out of any debug output that prints the settings object.
        shown = {k: v for k, v in vars(self).items() if k not in ("token", "registry_secret")}
        return f"ExecutorSettings({shown})"
