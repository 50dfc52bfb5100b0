"""Watch any number of sessions with one list request per tick.

Polling `GET /session/{id}` per job (what users script today) costs N requests per
tick; the tracker asks `GET /session?type=headless` once and resolves every watched
session from it. The interval adapts: short while phases change, backing off while
idle, capped far below the one-hour retention of finished sessions. Logs are fetched
the moment a terminal phase is seen, before anything can delete the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from canfar_core.client import AsyncCanfarClient
from canfar_core.errors import CanfarError, SessionNotFoundError, TrackerOutageError
from canfar_core.launch import parse_exit_marker, read_exit_file
from canfar_core.models import Session
from canfar_core.outcome import Outcome, OutcomeKind, classify_exit
from canfar_core.phase import Phase

log = logging.getLogger(__name__)

RETENTION_SECONDS = 3600
MAX_INTERVAL_CAP = RETENTION_SECONDS / 6
LOG_READ_TICKS = 5


@dataclass
class _Watch:
    session_id: str
    name: str | None
    state_dir: str | None
    pending_timeout: float | None
    runtime_limit: float | None
    future: asyncio.Future[Outcome]
    phase: Phase = Phase.PENDING
    phase_since: float = field(default_factory=time.monotonic)
    session: Session | None = None
    deleting: OutcomeKind | None = None
    resolving: bool = False
    watched_at: float = field(default_factory=time.monotonic)
    log_failures: int = 0


class SessionTracker:
    """Resolve watched sessions to `Outcome`s from one list request per tick.

    `outage_seconds`: how long the list may fail before every watch fails with
    TrackerOutageError (until then the last known state is kept and a warning logged);
    `outcome()` then reports OutcomeKind.LOST. `vanish_grace`: how long after `watch()`
    a session may be missing from the list (without an exit file) before it counts as
    vanished, in case a listing lags behind a create.
    """

    def __init__(
        self,
        client: AsyncCanfarClient,
        *,
        min_interval: float = 0.5,
        max_interval: float = 15.0,
        backoff: float = 1.5,
        outage_seconds: float = 600.0,
        vanish_grace: float = 5.0,
    ) -> None:
        if not 0 < min_interval <= max_interval <= MAX_INTERVAL_CAP:
            raise ValueError(
                f"min_interval={min_interval}, max_interval={max_interval} are not allowed: "
                f"0 < min_interval <= max_interval <= {MAX_INTERVAL_CAP:g} s."
            )
        self.client = client
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.backoff = backoff
        self.outage_seconds = outage_seconds
        self.vanish_grace = vanish_grace
        self.ticks = 0
        self.interval = min_interval
        self._watches: dict[str, _Watch] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage_since: float | None = None

    # -- public API ----------------------------------------------------------------------

    def watch(
        self,
        session_id: str,
        *,
        name: str | None = None,
        state_dir: str | None = None,
        pending_timeout: float | None = None,
        runtime_limit: float | None = None,
    ) -> asyncio.Future[Outcome]:
        """Start watching a session; the future resolves to its Outcome."""
        existing = self._watches.get(session_id)
        if existing is not None:
            return existing.future
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if session_id in self._outcomes:
            future.set_result(self._outcomes[session_id])
            return future
        self._watches[session_id] = _Watch(
            session_id, name, state_dir, pending_timeout, runtime_limit, future
        )
        self._ensure_running()
        self._poke()
        return future

    async def wait(self, session_id: str) -> Outcome:
        """Wait for a watched session's outcome."""
        if session_id in self._outcomes:
            return self._outcomes[session_id]
        watch = self._watches.get(session_id)
        if watch is None:
            raise KeyError(f"session {session_id} is not watched")
        return await asyncio.shield(watch.future)

    def outcome(self, session_id: str) -> Outcome | None:
        """The outcome if the session has finished, else None (never blocks)."""
        return self._outcomes.get(session_id)

    def phase(self, session_id: str) -> Phase | None:
        """The last phase seen for a watched session."""
        watch = self._watches.get(session_id)
        if watch is not None:
            return watch.phase
        done = self._outcomes.get(session_id)
        return done.phase if done else None

    @property
    def watching(self) -> list[str]:
        """Ids still being watched (not yet resolved)."""
        return list(self._watches)

    async def cancel(self, session_id: str) -> Outcome:
        """Delete a watched session and resolve it as DELETED."""
        watch = self._watches.get(session_id)
        if watch is None:
            await self.client.delete(session_id)
            return self._outcomes.get(session_id) or Outcome(
                session_id, None, OutcomeKind.DELETED, Phase.UNKNOWN, None, "deleted"
            )
        return await self._stop(watch, OutcomeKind.DELETED, "deleted on request", None)

    def forget(self, session_id: str) -> None:
        """Drop a resolved outcome (keeps memory flat in long runs)."""
        self._outcomes.pop(session_id, None)

    async def aclose(self) -> None:
        """Stop the polling loop (watched sessions are left as they are)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- loop ----------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="canfar-tracker")

    def _poke(self) -> None:
        self.interval = self.min_interval
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._watches:
                self._wake.clear()
                await self._wake.wait()
            self._wake.clear()
            try:
                changed = await self.tick()
            except Exception:  # a bug here must not silently kill every watch
                log.exception("Session tracker tick failed; continuing.")
                changed = False
            self.interval = (
                self.min_interval
                if changed
                else min(self.max_interval, self.interval * self.backoff)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_sleep())

    def _next_sleep(self) -> float:
        """The interval, shortened so a pending or runtime deadline is checked on time."""
        now = time.monotonic()
        sleep = self.interval
        for watch in self._watches.values():
            limit = (
                watch.pending_timeout
                if watch.phase is Phase.PENDING
                else watch.runtime_limit
                if watch.phase is Phase.RUNNING
                else None
            )
            if limit is not None:
                sleep = min(sleep, max(0.05, watch.phase_since + limit - now + 0.05))
        return sleep

    async def tick(self) -> bool:
        """One poll: list once, update every watch. Returns True when anything changed."""
        if not self._watches:
            return False
        self.ticks += 1
        try:
            listed = await self.client.list_sessions(type="headless")
        except CanfarError as exc:
            self._note_outage(exc)
            return False
        if self._outage_since is not None:
            log.warning("Session list is readable again.")
        self._outage_since = None
        by_id = {s.id: s for s in listed}
        changed = False
        jobs = []
        now = time.monotonic()
        for watch in list(self._watches.values()):
            if watch.resolving:
                continue
            session = by_id.get(watch.session_id)
            if session is None:
                recent = now - watch.watched_at < self.vanish_grace
                if recent and read_exit_file(watch.state_dir, watch.session_id) is None:
                    continue
                changed = True
                jobs.append(self._guarded(watch, self._resolve_vanished(watch)))
                continue
            watch.session = session
            phase = session.phase
            if phase is not watch.phase:
                changed = True
                watch.phase, watch.phase_since = phase, now
            if phase.is_terminal:
                jobs.append(self._guarded(watch, self._resolve_finished(watch, session)))
            elif (
                phase is Phase.PENDING
                and watch.pending_timeout is not None
                and now - watch.phase_since >= watch.pending_timeout
            ):
                changed = True
                jobs.append(self._guarded(watch, self._pending_too_long(watch)))
            elif (
                phase is Phase.RUNNING
                and watch.runtime_limit is not None
                and now - watch.phase_since >= watch.runtime_limit
            ):
                changed = True
                jobs.append(
                    self._guarded(
                        watch,
                        self._stop(
                            watch,
                            OutcomeKind.RUNTIME_EXCEEDED,
                            f"stopped after exceeding its runtime limit of "
                            f"{watch.runtime_limit:g} s",
                            None,
                        ),
                    )
                )
        if jobs:
            await asyncio.gather(*jobs)
        return changed

    async def _guarded(self, watch: _Watch, job: Coroutine[Any, Any, object]) -> None:
        """Run one resolution; if it fails, the watch is tried again on the next tick.

        Without this, one unexpected error would leave the watch marked as resolving
        and its waiter blocked forever.
        """
        try:
            await job
        except Exception as exc:
            log.warning("Resolving session %s failed (%s); retrying.", watch.session_id, exc)
            if watch.session_id in self._watches:
                watch.resolving = False
                watch.deleting = None

    def _note_outage(self, exc: CanfarError) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        down = now - self._outage_since
        log.warning("Cannot list sessions (%s); keeping the last known state (%.0f s).", exc, down)
        if down >= self.outage_seconds:
            error = TrackerOutageError(
                f"The session list has been unreadable for {down:.0f} s (limit "
                f"{self.outage_seconds:g} s); last error: {exc}"
            )
            for watch in list(self._watches.values()):
                self._finish(watch, OutcomeKind.LOST, str(error), None, "", None)
                if not watch.future.done():
                    watch.future.set_exception(error)

    # -- resolution ----------------------------------------------------------------------

    async def _fetch_logs(self, watch: _Watch) -> str:
        if watch.state_dir is not None:
            path = f"{watch.state_dir}/{watch.session_id}.log"
            with (
                contextlib.suppress(OSError),
                open(path, encoding="utf-8", errors="replace") as handle,
            ):
                return handle.read()
        try:
            return await self.client.logs(watch.session_id)
        except CanfarError as exc:
            log.warning("Could not read logs of session %s: %s", watch.session_id, exc)
            return ""

    async def _fetch_final_logs(self, watch: _Watch) -> str:
        """The logs of a finished session, which carry its exit code.

        A finished session stays listed for an hour, so when the logs cannot be read
        (after the client's own retries) resolution waits for a later tick rather
        than lose the exit code; after LOG_READ_TICKS failed ticks it goes on without.
        """
        if watch.state_dir is None:
            try:
                return await self.client.logs(watch.session_id)
            except CanfarError as exc:
                watch.log_failures += 1
                if watch.log_failures < LOG_READ_TICKS:
                    raise
                log.warning("Could not read logs of session %s: %s", watch.session_id, exc)
                return ""
        return await self._fetch_logs(watch)

    async def _resolve_finished(self, watch: _Watch, session: Session) -> None:
        watch.resolving = True
        logs = await self._fetch_final_logs(watch)
        code = read_exit_file(watch.state_dir, watch.session_id)
        if code is None:
            code = parse_exit_marker(logs)
        kind, reason = classify_exit(code, session.phase, runtime_limit=watch.runtime_limit)
        if kind is not OutcomeKind.SUCCEEDED and code is None and session.status_reason:
            reason = f"{reason} (server status: {session.status})"
        if code is None and session.phase is Phase.COMPLETED:
            code = 0
        events = await self._events(watch) if kind is not OutcomeKind.SUCCEEDED else None
        self._finish(watch, kind, reason, code, logs, events)

    async def _resolve_vanished(self, watch: _Watch) -> None:
        watch.resolving = True
        code = read_exit_file(watch.state_dir, watch.session_id)
        logs = await self._fetch_logs(watch) if watch.state_dir else ""
        if watch.deleting is not None:
            return
        if code is not None:
            kind, reason = classify_exit(code, watch.phase, runtime_limit=watch.runtime_limit)
            self._finish(watch, kind, reason, code, logs, None)
            return
        self._finish(
            watch,
            OutcomeKind.VANISHED,
            "the session disappeared (deleted, or removed after its retention) without "
            "recording an exit code",
            None,
            logs,
            None,
        )

    async def _pending_too_long(self, watch: _Watch) -> None:
        events = await self._events(watch)
        shown = events or "(no events: the session was never scheduled; it is still queued)"
        await self._stop(
            watch,
            OutcomeKind.PENDING_TIMEOUT,
            f"still Pending after {watch.pending_timeout:g} s; events:\n{shown}",
            events,
        )

    async def _events(self, watch: _Watch) -> str | None:
        try:
            table = await self.client.events_table(watch.session_id)
        except SessionNotFoundError:
            return None
        except CanfarError as exc:
            log.warning("Could not read events of session %s: %s", watch.session_id, exc)
            return None
        return None if table.strip() == "<none>" else table.rstrip("\n")

    async def _stop(
        self, watch: _Watch, kind: OutcomeKind, reason: str, events: str | None
    ) -> Outcome:
        """Save the logs, delete the session, resolve it with `kind`."""
        watch.resolving = True
        watch.deleting = kind
        logs = await self._fetch_logs(watch)
        try:
            await self.client.delete(watch.session_id)
        except CanfarError as exc:
            log.warning("Could not delete session %s: %s", watch.session_id, exc)
        code = read_exit_file(watch.state_dir, watch.session_id)
        return self._finish(watch, kind, reason, code, logs, events)

    def _finish(
        self,
        watch: _Watch,
        kind: OutcomeKind,
        reason: str | None,
        code: int | None,
        logs: str,
        events: str | None,
    ) -> Outcome:
        session = watch.session
        outcome = Outcome(
            session_id=watch.session_id,
            name=watch.name or (session.name if session else None),
            kind=kind,
            phase=watch.phase,
            exit_code=code,
            reason=reason,
            logs=logs,
            events_table=events,
            start_time=session.start_time if session else None,
            image=session.image if session else None,
        )
        self._outcomes[watch.session_id] = outcome
        self._watches.pop(watch.session_id, None)
        if not watch.future.done() and kind is not OutcomeKind.LOST:
            watch.future.set_result(outcome)
        log.debug("Session %s resolved: %s", watch.session_id, outcome.describe())
        return outcome
