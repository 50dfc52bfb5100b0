"""The scheduler as a session of its own, found through a scheduler file.

The default scheduler runs in the client's process (a notebook or flow that is itself a
CANFAR session). `CanfarCluster(scheduler="session")` runs it in a headless session
instead, so that it survives a notebook kernel restart and uses the session's cores, as
dask-kubernetes' remote deploy mode does. Nothing tells the client a session's address,
so the scheduler writes it (`dask scheduler --scheduler-file`) to the cluster's directory
on the shared filesystem, where the client reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from canfar_core.dask.credentials import write_role_file
from canfar_core.dask.sessions import ClusterSessions
from canfar_core.dask.worker import LOG_TAIL_LINES
from canfar_core.errors import CanfarError
from canfar_core.launch import remove_secrets_file
from canfar_core.outcome import Outcome

log = logging.getLogger("canfar_core.dask")

START_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.2


class SchedulerStartError(CanfarError):
    """The scheduler session ended, or never wrote its address, before it could be used."""


def read_scheduler_file(path: Path) -> str | None:
    """The address a scheduler wrote to its file, once the file is complete."""
    try:
        address = json.loads(path.read_text(encoding="utf-8")).get("address")
    except (OSError, ValueError, AttributeError):
        return None
    return address if isinstance(address, str) and address else None


class SchedulerSession(ProcessInterface):
    """A headless session running `dask scheduler`; `address` once it is listening."""

    def __init__(
        self,
        *,
        sessions: ClusterSessions,
        security: Security,
        name: str,
        loopback: bool = False,
        idle_timeout: float | None = 3600.0,
        start_timeout: float = START_TIMEOUT_SECONDS,
        **_: Any,
    ) -> None:
        super().__init__(name=name)
        self.name = name
        self.sessions = sessions
        self.security = security
        self.loopback = loopback
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.session_id: str | None = None
        self.scheduler_file = sessions.directory / "scheduler.json"

    def command(self) -> list[str]:
        """The `dask scheduler` command line (its credentials come from the file)."""
        argv = [
            self.sessions.plan.python,
            "-m",
            "distributed.cli.dask_scheduler",
            "--scheduler-file",
            str(self.scheduler_file),
            "--protocol",
            "tls",
            "--port",
            "0",
            # The dashboard and HTTP endpoints carry no authentication: loopback only.
            "--dashboard-address",
            "127.0.0.1:0",
        ]
        if self.idle_timeout is not None:
            argv += ["--idle-timeout", f"{self.idle_timeout:g}s"]
        if self.loopback:
            argv += ["--host", "127.0.0.1"]
        return argv

    async def start(self) -> None:
        """Create the session and wait for the address it writes (or for its end)."""
        with contextlib.suppress(FileNotFoundError):
            self.scheduler_file.unlink()
        secrets = self.sessions.secrets_file(self.name)
        write_role_file(secrets, self.security, "scheduler")
        self.session_id = await self.sessions.start(self.name, self.command(), secrets)
        log.info("Dask scheduler: CANFAR session %s created.", self.session_id)
        ended = asyncio.ensure_future(self.sessions.outcome(self.session_id))
        deadline = time.monotonic() + self.start_timeout
        try:
            while (address := read_scheduler_file(self.scheduler_file)) is None:
                if ended.done():
                    raise SchedulerStartError(self._ended_sentence(ended.result()))
                if time.monotonic() >= deadline:
                    raise SchedulerStartError(
                        f"The Dask scheduler session {self.session_id} did not write its "
                        f"address to {self.scheduler_file} within {self.start_timeout:g} s "
                        f"(it is {self.sessions.phase_of(self.session_id)}); it was deleted."
                    )
                await asyncio.sleep(POLL_SECONDS)
        except BaseException:
            ended.cancel()
            await self.close()
            raise
        ended.cancel()
        self.address = address
        log.info("Dask scheduler session %s listens at %s.", self.session_id, address)
        await super().start()

    def _ended_sentence(self, outcome: Outcome) -> str:
        tail = outcome.log_tail(LOG_TAIL_LINES)
        return (
            f"The Dask scheduler session ended before it was listening: CANFAR "
            f"{outcome.describe()}.\nLast lines of its output:\n{tail or '(none)'}"
        )

    async def close(self) -> None:
        """Delete the session and the files it used."""
        if self.session_id is not None:
            await self.sessions.delete(self.session_id)
        remove_secrets_file(self.sessions.secrets_file(self.name))
        with contextlib.suppress(FileNotFoundError):
            self.scheduler_file.unlink()
        self.status = Status.closed
        await super().close()
