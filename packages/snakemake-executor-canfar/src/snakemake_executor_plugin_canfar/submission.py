"""Turning a planned job into a session: the launch envelope and concurrent creation.

The job command goes through canfar-core's launch envelope: the server splits `args`
on spaces, drops `env` values containing `=` and breaks on quotes, and Snakemake's
command is full of all three. `--envvars`/`envvars:` values (Snakemake's way to hand
secrets to jobs) travel in a 0600 file in the state directory that the session sources
and deletes, so they are in neither the request, the command string nor the logs. The
envelope also changes to the workflow directory (sessions start in `$HOME`), enforces
the runtime and records the exit code.

Creating a session takes seconds on CANFAR, so a batch of ready jobs is created
concurrently (bounded) on the client's loop, each attempt under its own name so that
the client can adopt rather than duplicate a session after an ambiguous failure. The
batch runs in the background: Snakemake's scheduler thread, which alone prints
"Finished" and schedules dependants, must not wait for 200 creations to learn that
the first job ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canfar_core import (
    AsyncCanfarClient,
    SessionSpec,
    SpecError,
    envelope,
    remove_secrets_file,
    runtime_backstop,
    write_secrets_file,
)

from snakemake_executor_plugin_canfar.resources import RequestError, SessionRequest

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything decided about one job before its session is created."""

    job: Any
    label: str
    log_rule: str
    wildcards: Mapping[str, object] | None
    name: str
    key: str
    request: SessionRequest
    spec: SessionSpec = field(repr=False)
    secrets_file: Path | None = None
    fingerprint: str = ""

    @property
    def runtime_limit(self) -> float | None:
        """The tracker's backstop limit on the Running phase."""
        return runtime_backstop(self.request.runtime_seconds)


def build_spec(
    *,
    label: str,
    command: str,
    workdir: Path,
    state_dir: Path,
    name: str,
    request: SessionRequest,
    secrets_file: Path | None = None,
) -> SessionSpec:
    """The session spec that runs `command` through the envelope.

    `secrets_file`: where the job's environment will be written (see `write_secrets`).
    """
    try:
        wrapped = envelope(
            command,
            workdir=workdir,
            state_dir=state_dir,
            timeout=request.runtime_seconds,
            secrets_file=secrets_file,
        )
        return wrapped.spec(
            name=name,
            image=request.image,
            cores=request.cores,
            ram=request.ram,
            gpus=request.gpus,
        )
    except SpecError as exc:
        raise RequestError(f"{label}: {exc}") from None


def write_secrets(plan: Plan, env: Mapping[str, str]) -> None:
    """Write the job's environment to its plan's secrets file, replacing a stale one."""
    if plan.secrets_file is None:
        return
    remove_secrets_file(plan.secrets_file)
    try:
        write_secrets_file(plan.secrets_file, env)
    except SpecError as exc:
        raise RequestError(f"{plan.label}: {exc}") from None


async def create_all(
    client: AsyncCanfarClient,
    specs: Sequence[SessionSpec],
    *,
    concurrency: int,
    on_created: Callable[[SessionSpec, str], None],
    on_failed: Callable[[SessionSpec, BaseException], None],
    on_settled: Callable[[], None],
) -> None:
    """Create every spec (at most `concurrency` at once), telling each result as it comes.

    `on_created` runs on the client's loop the moment each id is known, so that its
    session is watched while the rest of the batch is still being created; `on_failed`
    gets each spec the server did not create, and `on_settled` runs once per spec
    whatever happened, so that a cancellation racing with the batch still learns of
    every session. A callback that raises is logged, never lost with the batch.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(spec: SessionSpec) -> None:
        try:
            try:
                async with gate:
                    session_id = await client.create(spec)
            except Exception as exc:
                _tell(on_failed, spec, exc)
            else:
                _tell(on_created, spec, session_id)
        finally:
            on_settled()

    await asyncio.gather(*(one(s) for s in specs))


def _tell(callback: Callable[[SessionSpec, Any], None], spec: SessionSpec, value: Any) -> None:
    try:
        callback(spec, value)
    except Exception:  # one job's bookkeeping must not take the batch down with it
        log.exception("Handling the creation of session %s failed", spec.name)
