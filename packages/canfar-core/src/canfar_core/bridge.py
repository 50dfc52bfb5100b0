"""One session tracker, bridged to an engine's threads.

Engines call from threads of their own (Snakemake's status checks run on its own event
loop in its own thread; Prefect's task runner waits in one thread per task), while the
CANFAR client and its tracker live on the blocking client's private loop. The bridge
owns the tracker there and offers thread-safe calls: `watch` returns once the tracker
knows a session, `outcome` only reads resolved outcomes from memory (a status check
never makes a request and never raises for a transient API failure, the tracker keeps
the last known state through outages), `wait` blocks one thread until a session ends.
`on_end` is told the moment a watched session is resolved, so that an engine which
polls `outcome` can wake its poll instead of waiting for its next period.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from canfar_core.errors import CanfarError
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.sync import CanfarClient
from canfar_core.tracker import SessionTracker

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_SECONDS = 60.0
CLOSE_TIMEOUT_SECONDS = 30.0


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _new_tracker(client: CanfarClient, options: dict[str, Any]) -> SessionTracker:
    # Built on the client's loop: the tracker's loop-bound state belongs there.
    return SessionTracker(client.aio, **options)


class TrackerBridge:
    """Owns a tracker on the client's loop; every method is safe from any thread.

    `tracker_options` are SessionTracker's (intervals, outage tolerance, ...). `on_end`
    runs on the client's loop with the id of each watched session as it is resolved
    (ended, failed, lost); it must return quickly and must not block on the loop.
    """

    def __init__(
        self,
        client: CanfarClient,
        *,
        on_end: Callable[[str], object] | None = None,
        **tracker_options: Any,
    ) -> None:
        self.client = client
        self._on_end = on_end
        self._loop = client.run(_running_loop())
        self.tracker: SessionTracker = client.run(_new_tracker(client, tracker_options))
        self._failures: dict[str, BaseException] = {}
        self._background: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    # -- watching -------------------------------------------------------------------------

    def watch(self, session_id: str, **options: Any) -> None:
        """Start watching a session (returns once the tracker knows it).

        `options` are SessionTracker.watch's (name, state_dir, timeouts, ...). Safe on
        the client's loop too (a creation callback), where it starts the watch at once
        instead of waiting on the loop it is running on.
        """
        if self._on_loop():
            self._start_watch(session_id, options)
            return

        async def start() -> None:
            self._start_watch(session_id, options)

        self.client.run(start())

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _start_watch(self, session_id: str, options: dict[str, Any]) -> None:
        future = self.tracker.watch(session_id, **options)
        future.add_done_callback(lambda f: self._ended(session_id, f))

    def _ended(self, session_id: str, future: asyncio.Future[Outcome]) -> None:
        self._note_failure(session_id, future)
        if self._on_end is not None:
            try:
                self._on_end(session_id)
            except Exception as exc:  # an engine's hook must not stop the tracker
                log.warning("An end hook failed (%s: %s); ignored.", type(exc).__name__, exc)

    def wait(self, session_id: str, timeout: float | None = None) -> Outcome:
        """Block this thread until a watched session ends; its Outcome.

        Raises what the tracker raised for it (TrackerOutageError after a long outage),
        or TimeoutError after `timeout` seconds.
        """
        future = asyncio.run_coroutine_threadsafe(self.tracker.wait(session_id), self._loop)
        return future.result(timeout)

    def _note_failure(self, session_id: str, future: asyncio.Future[Outcome]) -> None:
        if future.cancelled():
            self._failures[session_id] = RuntimeError("the watch was cancelled")
        elif future.exception() is not None:
            self._failures[session_id] = future.exception()  # type: ignore[assignment]

    def outcome(self, session_id: str) -> Outcome | None:
        """The session's outcome once it has ended, else None; never blocks or raises.

        A watch the tracker gave up on (the session list unreadable for too long)
        becomes a failed outcome, so the job is reported instead of waited on forever.
        """
        done = self.tracker.outcome(session_id)
        if done is not None:
            return done
        error = self._failures.get(session_id)
        if error is None:
            return None
        return Outcome(
            session_id=session_id,
            name=None,
            kind=OutcomeKind.FAILED,
            phase=Phase.UNKNOWN,
            exit_code=None,
            reason=f"its state could not be read from CANFAR: {error}",
        )

    def failure(self, session_id: str) -> BaseException | None:
        """What the tracker raised for a watch it gave up on, if it did."""
        return self._failures.get(session_id)

    def forget(self, session_id: str) -> None:
        """Drop a reported outcome (keeps memory flat in long runs)."""
        self._failures.pop(session_id, None)
        self._loop.call_soon_threadsafe(self.tracker.forget, session_id)

    @property
    def ticks(self) -> int:
        """How many list requests the tracker has made."""
        return self.tracker.ticks

    # -- background work ------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a coroutine on the client's loop without waiting; `close` waits for it."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        with self._lock:
            self._background.add(future)
        future.add_done_callback(self._background_done)
        return future

    def _background_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._background.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("CANFAR background request failed: %s", future.exception())

    def delete_later(self, session_id: str) -> None:
        """Delete a finished session in the background."""
        self.spawn(self._delete_quietly(session_id))

    async def _delete_quietly(self, session_id: str) -> None:
        try:
            await self.client.aio.delete(session_id)
        except CanfarError as exc:
            log.warning("Could not delete CANFAR session %s: %s", session_id, exc)

    # -- cancellation ---------------------------------------------------------------------

    def cancel_all(
        self,
        session_ids: Iterable[str],
        *,
        name_prefix: str,
        include_finished: bool,
        timeout: float = CANCEL_TIMEOUT_SECONDS,
    ) -> list[str]:
        """Delete the run's sessions and verify by listing; returns those left over."""
        return self.client.run(
            self._cancel_all(set(session_ids), name_prefix, include_finished, timeout)
        )

    async def _cancel_all(
        self, ids: set[str], prefix: str, include_finished: bool, timeout: float
    ) -> list[str]:
        deadline = time.monotonic() + timeout
        targets = set(ids)
        pause = 0.2
        while True:
            if targets:
                await asyncio.gather(
                    *(self._cancel_one(sid) for sid in targets), return_exceptions=True
                )
            try:
                listed = await self.client.aio.list_sessions(type="headless")
            except CanfarError as exc:
                log.warning("Cannot list sessions to verify the cancellation: %s", exc)
                listed = None
            if listed is not None:
                targets = {
                    s.id
                    for s in listed
                    if (s.id in ids or (s.name or "").startswith(prefix))
                    and (include_finished or not s.phase.is_terminal)
                }
                if not targets:
                    return []
            if time.monotonic() >= deadline:
                return sorted(targets)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _cancel_one(self, session_id: str) -> None:
        if session_id in self.tracker.watching:
            await self.tracker.cancel(session_id)
        else:
            await self.client.aio.delete(session_id)

    # -- shutdown -------------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Finish background deletes, stop the tracker, close the client."""
        # Background work may start more (a creation deletes its session late): wait
        # until none is left, or the time is up.
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._background)
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            concurrent.futures.wait(pending, timeout=left)
        with contextlib.suppress(Exception):
            self.client.run(self.tracker.aclose())
        with contextlib.suppress(Exception):
            self.client.close()
