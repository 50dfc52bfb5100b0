"""Cutting short the status thread's sleep when the tracker resolves a session.

Snakemake's status thread sleeps `next_seconds_between_status_checks` between checks,
and a job whose end the tracker already knows would wait out the rest of that sleep
(on average half of it, every step of a chain). The tracker runs on the client's loop
and the status thread on a loop of its own, so the tracker's end hook sets this from
one thread and the status thread's sleep waits on it in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Wakeup:
    """A sleep that another thread can end early; a wake between sleeps is kept.

    Only a sleep under way is woken through the loop; a wake with none under way is a
    flag the next sleep finds, so it is not also left queued on the loop to end the
    sleep after that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._pending = False
        self._sleeping = False

    def set(self) -> None:
        """End the current sleep, or the next one if none is under way (any thread)."""
        with self._lock:
            self._pending = True
            loop, event = self._loop, self._event
            sleeping = self._sleeping
        if sleeping and loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the status loop has closed
                loop.call_soon_threadsafe(event.set)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if woken early (or a wake was already pending)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop:
                self._loop, self._event = loop, asyncio.Event()
            event = self._event
            assert event is not None
            if self._pending:
                self._pending = False
                return True
            event.clear()
            self._sleeping = True
        try:
            await asyncio.wait_for(event.wait(), seconds)
            woken = True
        except TimeoutError:
            woken = False
        with self._lock:
            self._pending = False
            self._sleeping = False
        return woken
