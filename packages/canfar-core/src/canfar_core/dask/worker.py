"""One Dask worker as one CANFAR headless session (a `ProcessInterface` for SpecCluster).

Like dask-jobqueue's `Job`, `start()` returns once the session exists: on CANFAR a
session may queue and then pull its image for minutes, and Dask's own bookkeeping
(`scheduler_info`, `wait_for_workers`) is where a connected worker shows up. What a job
queue cannot give dask-jobqueue, the tracker gives here: when the session ends without
having been asked to (killed, out of memory, preempted, its command failed), the worker
says why in the cluster's log, with the last lines of the session's output, and the
cluster replaces it; the scheduler has already noticed the lost connection and reruns
the worker's unfinished tasks elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from canfar_core.dask.credentials import write_role_file
from canfar_core.dask.sessions import ClusterSessions
from canfar_core.diagnosis import diagnose_outcome
from canfar_core.errors import CanfarError
from canfar_core.launch import read_exit_file, remove_secrets_file
from canfar_core.outcome import Outcome

log = logging.getLogger("canfar_core.dask")

LOG_TAIL_LINES = 20
# How long a worker being scaled down gets to hand its results to the others and exit
# on its own before its session is deleted.
RETIRE_GRACE_SECONDS = 10.0

EndCallback = Callable[["CanfarWorker", Outcome], None]


def describe_end(name: str, outcome: Outcome) -> str:
    """The sentence for a worker session that ended without being asked to.

    What went wrong comes from canfar-core's diagnosis (the words both plugins use),
    with its category, so a user can search the cluster's log for `OutOfMemory`.
    """
    found = diagnose_outcome(outcome)
    what = (
        f"{found.category.value}: {found.summary}. {found.resolution}".rstrip()
        if found is not None
        else outcome.describe()
    )
    return (
        f"Dask worker {name} ended unexpectedly (CANFAR {outcome.describe()}); {what} "
        "Dask reruns its unfinished tasks on the other workers."
    )


class CanfarWorker(ProcessInterface):
    """A headless session running `dask worker` against the cluster's scheduler.

    Made by `CanfarCluster` (SpecCluster calls it with the scheduler's address and the
    worker's name); its threads and memory limit are the session's granted cores and RAM.
    """

    def __init__(
        self,
        scheduler: str,
        name: str,
        *,
        sessions: ClusterSessions,
        security: Security,
        on_end: EndCallback | None = None,
        **_: Any,
    ) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler = scheduler
        self.name = str(name)
        self.sessions = sessions
        self.security = security
        self.session_id: str | None = None
        self.outcome: Outcome | None = None
        self.created_at: float | None = None
        self._on_end: weakref.WeakMethod[EndCallback] | EndCallback | None = (
            weakref.WeakMethod(on_end) if hasattr(on_end, "__self__") else on_end  # type: ignore[arg-type]
        )
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None

    def command(self) -> list[str]:
        """The `dask worker` command line (no secret on it: those come from the file)."""
        plan = self.sessions.plan
        return [
            plan.python,
            "-m",
            "distributed.cli.dask_worker",
            self.scheduler,
            "--name",
            self.name,
            "--nthreads",
            str(plan.threads),
            "--memory-limit",
            str(plan.memory_limit),
            "--death-timeout",
            f"{plan.death_timeout:g}",
            "--nanny" if plan.nanny else "--no-nanny",
            # The worker's HTTP endpoints (metrics, health) carry no authentication, so
            # they listen on the session's loopback only.
            "--dashboard-address",
            "127.0.0.1:0",
        ]

    async def start(self) -> None:
        """Create the session (credentials first, in their 0600 file) and watch it."""
        secrets = self.sessions.secrets_file(self.name)
        write_role_file(secrets, self.security, "worker")
        self.session_id = await self.sessions.start(self.name, self.command(), secrets)
        self.created_at = time.monotonic()
        plan = self.sessions.plan
        log.info(
            "Dask worker %s: CANFAR session %s created (%d cores, %d GiB, image %s).",
            self.name,
            self.session_id,
            plan.cores,
            plan.ram,
            plan.image,
        )
        self._watcher = asyncio.ensure_future(self._watch())
        await super().start()

    async def _watch(self) -> None:
        assert self.session_id is not None
        try:
            outcome = await self.sessions.outcome(self.session_id)
        except CanfarError as exc:
            if not self._closing:
                log.error(
                    "Cannot tell whether the session %s of Dask worker %s is still alive: %s",
                    self.session_id,
                    self.name,
                    exc,
                )
            return
        self.outcome = outcome
        if self._closing:
            return
        tail = outcome.log_tail(LOG_TAIL_LINES)
        log.warning(
            "%s\nLast lines of its output:\n%s", describe_end(self.name, outcome), tail or "(none)"
        )
        await self.sessions.delete(self.session_id)
        remove_secrets_file(self.sessions.secrets_file(self.name))
        self.status = Status.closed
        self._event_finished.set()
        callback = self._on_end() if isinstance(self._on_end, weakref.WeakMethod) else self._on_end
        if callback is not None:
            callback(self, outcome)

    async def close(self) -> None:
        """Delete the session; while the cluster runs, let the worker retire first."""
        self._closing = True
        if self.session_id is not None and self.outcome is None:
            await self._retire()
            await self.sessions.delete(self.session_id)
        remove_secrets_file(self.sessions.secrets_file(self.name))
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await super().close()

    async def _retire(self) -> None:
        """On a scale-down, hand results to other workers and exit before the delete.

        Not when the whole cluster closes (nothing to hand over to), nor for a worker
        that never connected.
        """
        ref = getattr(self, "_cluster", None)
        cluster = ref() if ref is not None else None
        if cluster is None or cluster.status != Status.running or self.session_id is None:
            return
        names = {str(w.get("name")) for w in cluster.scheduler_info.get("workers", {}).values()}
        if self.name not in names:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                cluster.scheduler_comm.retire_workers(names=[self.name], close_workers=True),
                RETIRE_GRACE_SECONDS,
            )
        await self.exited(RETIRE_GRACE_SECONDS)

    async def exited(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the session's command to end on its own.

        A worker that exits by itself (closed by the scheduler) flushes what it buffers,
        such as Prefect's task logs, which a delete (SIGTERM, then SIGKILL) may cut off.
        The envelope's exit file says so at once, without waiting for a list tick.
        """
        if self.session_id is None:
            return True
        deadline = time.monotonic() + timeout
        while self.outcome is None:
            if read_exit_file(self.sessions.state_dir, self.session_id) is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)
        return True
