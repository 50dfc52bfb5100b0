"""The sessions of one cluster: created, watched by one tracker, always deleted.

Everything here runs on the cluster's event loop (Dask's loop thread, or the caller's
loop for an asynchronous cluster), where Dask calls the workers' `start` and `close`; the
client and the tracker are made on first use, on that loop. One `SessionTracker` watches
every session of the cluster, so N workers cost one list request per tick, and the
launch envelope's exit and log files in the cluster's state directory tell it how each
session ended without a request per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig
from canfar_core.dask.options import WorkerPlan
from canfar_core.errors import CanfarError
from canfar_core.launch import envelope, remove_secrets_file
from canfar_core.outcome import Outcome
from canfar_core.tracker import SessionTracker

log = logging.getLogger("canfar_core.dask")


class ClusterSessions:
    """Create, watch and delete the sessions of one cluster (scheduler and workers)."""

    def __init__(self, config: CanfarConfig, plan: WorkerPlan, directory: Path) -> None:
        self.config = config
        self.plan = plan
        self.directory = directory
        self.state_dir = directory / "sessions"
        self.secrets_dir = directory / "secrets"
        self._client: AsyncCanfarClient | None = None
        self._tracker: SessionTracker | None = None
        self._live: dict[str, str] = {}  # session id -> name: created, not yet deleted
        self.created: list[str] = []  # every session id this cluster made, in order

    # -- the client and tracker, on the running loop -------------------------------------

    @property
    def client(self) -> AsyncCanfarClient:
        if self._client is None:
            self._client = AsyncCanfarClient(self.config)
        return self._client

    @property
    def tracker(self) -> SessionTracker:
        if self._tracker is None:
            self._tracker = SessionTracker(self.client, min_interval=0.5, max_interval=10.0)
        return self._tracker

    @property
    def live(self) -> dict[str, str]:
        """Sessions created and not yet deleted (id -> name)."""
        return dict(self._live)

    def secrets_file(self, name: str) -> Path:
        """Where the session `name` finds its credentials (0600, consumed at start)."""
        return self.secrets_dir / f"{name}.env"

    # -- one session ---------------------------------------------------------------------

    async def start(self, name: str, command: Sequence[str], secrets_file: Path) -> str:
        """Create the session `name` running `command`; it is watched from here on.

        `secrets_file` must already hold the session's credentials; it is removed here
        if the session could not be created.
        """
        plan = self.plan
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        wrapped = envelope(
            list(command),
            env=plan.env,
            workdir=plan.workdir,
            state_dir=self.state_dir,
            secrets_file=secrets_file,
        )
        spec = wrapped.spec(name=name, image=plan.image, cores=plan.cores, ram=plan.ram)
        try:
            session_id = await self.client.create(spec)
        except BaseException:
            remove_secrets_file(secrets_file)
            raise
        self._live[session_id] = name
        self.created.append(session_id)
        self.tracker.watch(
            session_id,
            name=name,
            state_dir=str(self.state_dir),
            pending_timeout=plan.pending_timeout,
        )
        return session_id

    async def outcome(self, session_id: str) -> Outcome:
        """Wait until the session ends (a TrackerOutageError if the list stays unreadable)."""
        return await self.tracker.wait(session_id)

    def phase_of(self, session_id: str) -> str:
        """The last phase seen, for a sentence ("Pending", "Running", ...)."""
        phase = self.tracker.phase(session_id) if self._tracker is not None else None
        return phase.value if phase is not None else "unknown"

    async def delete(self, session_id: str) -> None:
        """Delete a session this cluster made (finished ones too: they stay listed 1 h)."""
        if session_id not in self._live:
            return
        try:
            # The client's own delete, which raises when it fails, so that a session
            # still there is reported at close; the tracker's cancel then resolves the
            # watch at once (its repeated DELETE is answered 200 by the server).
            await self.client.delete(session_id)
            if session_id in self.tracker.watching:
                await self.tracker.cancel(session_id)
        except CanfarError as exc:
            log.warning("Could not delete session %s: %s", session_id, exc)
            return
        self._live.pop(session_id, None)

    # -- the whole cluster ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Delete every session still there, then stop the tracker and the client."""
        if self._live:
            await asyncio.gather(*(self.delete(sid) for sid in list(self._live)))
        if self._live:
            log.error(
                "These CANFAR sessions of the cluster could not be deleted; delete them "
                "with `canfar delete %s`.",
                " ".join(self._live),
            )
        if self._tracker is not None:
            await self._tracker.aclose()
        if self._client is not None:
            with contextlib.suppress(CanfarError):
                await self._client.aclose()
