"""What every worker session of a cluster looks like, checked before anything starts.

A cluster's workers are alike (that is what makes Dask's scheduling simple), so the
image, size and command are decided once, when the cluster is made: the values a user
wrote are checked here with one sentence per mistake, and the sizes are then rounded up
to what the server offers (`Context.smallest_allowed`), so that the worker's threads and
memory limit are the session's granted cores and RAM, not the request.
"""

from __future__ import annotations

import logging
import math
import numbers
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from canfar_core.allowed import fit
from canfar_core.context import Context
from canfar_core.errors import SpecError
from canfar_core.local import on_shared_filesystem
from canfar_core.models import ENV_KEY_PATTERN

log = logging.getLogger("canfar_core.dask")

GIB = 1024**3
SCHEDULER_PLACES = ("local", "session")


@dataclass(frozen=True)
class WorkerPlan:
    """The session and `dask worker` command every worker of one cluster gets."""

    image: str
    cores: int
    ram: int
    python: str
    workdir: str | None
    env: Mapping[str, str] = field(default_factory=dict)
    nanny: bool = True
    death_timeout: float = 60.0
    pending_timeout: float | None = None

    @property
    def threads(self) -> int:
        """Worker threads: one per granted core."""
        return self.cores

    @property
    def memory_limit(self) -> int:
        """The worker's memory limit in bytes: the session's granted RAM."""
        return self.ram * GIB


def positive_number(name: str, value: object, what: str) -> float:
    """`value` as a float > 0, or SpecError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(name, value, what)
    if not value > 0:
        raise SpecError(name, value, what)
    return float(value)


def optional_seconds(name: str, value: object) -> float | None:
    """None, or a number of seconds > 0."""
    if value is None:
        return None
    return positive_number(name, value, "a number of seconds greater than 0, or None")


def whole_number(name: str, value: object, what: str, *, minimum: int = 0) -> int:
    """`value` as an int >= `minimum` (a bool is not a number of workers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SpecError(name, value, what)
    return int(value)


def checked_text(name: str, value: object, what: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(name, value, what)
    return value


def checked_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Extra environment for the workers: shell-identifier keys, string values."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise SpecError("env", env, "a mapping of variable names to string values")
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_KEY_PATTERN.match(key):
            raise SpecError("env key", key, "letters, digits and '_', not first a digit")
        if not isinstance(value, str):
            raise SpecError(f"env[{key}]", value, "a string")
    return dict(env)


def checked_scheduler(value: object) -> str:
    """Where the scheduler runs: in this process, or in a session of its own."""
    if value not in SCHEDULER_PLACES:
        raise SpecError(
            "scheduler",
            value,
            "'local' (in this process, the default) or 'session' (a session of its own)",
        )
    return str(value)


def writable_directory(name: str, path: Path) -> Path:
    """Create `path` (0700) and prove it writable, or SpecError naming `name`.

    The workers read their credentials from here, so a directory that cannot be written
    must be refused now, not found out when the first worker session fails to start.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".canfar-probe-"):
            pass
    except OSError as exc:
        raise SpecError(
            name,
            str(path),
            "a directory both this process and the sessions can write (on CANFAR, under "
            f"/arc); this one cannot be created or written ({exc.strerror or exc})",
        ) from None
    return path


def granted(context: Context, resource: str, requested: float) -> int:
    """The server's smallest allowed value at or above `requested` (the shared rule),
    saying so when that is more than rounding to a whole number."""
    fitted = fit(context, resource, requested, field=resource)
    if fitted.note is not None:
        log.warning("Each worker session: %s.", fitted.note)
    return fitted.value


def checked_shared_dir(path: Path, *, local: bool) -> Path:
    """A writable directory the sessions see too (anywhere on this machine's platform)."""
    path = writable_directory("shared_dir", path.expanduser())
    if not local and not on_shared_filesystem(path.resolve()):
        raise SpecError(
            "shared_dir",
            str(path),
            "a directory the sessions see too, under /arc or /cavern (a CANFAR session's "
            "home is there); the workers read their credentials from it",
        )
    return path


def default_workdir(local: bool) -> str | None:
    """The current directory when sessions see it, else None (each session's $HOME)."""
    cwd = Path.cwd()
    return str(cwd) if local or on_shared_filesystem(cwd) else None
