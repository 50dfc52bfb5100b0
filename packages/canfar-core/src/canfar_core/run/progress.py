"""What `canfar-run` says on stderr while sessions wait to start.

A headless session can sit in `Pending` for many minutes (the Kueue queue, an image
pull), and a silent terminal looks like a hang. While a session is Pending its events
are read (at a bounded rate) and the reason is said once; when it starts after having
been reported, that is said too. The wording lives in `waiting_sentence` and
`pending_reason` alone, so it can move to a shared diagnosis module without touching
the rest of the command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from canfar_core.client import AsyncCanfarClient
from canfar_core.errors import CanfarError, SessionNotFoundError
from canfar_core.models import Event
from canfar_core.phase import Phase
from canfar_core.run.options import PROG

QUEUED = "queued: the platform has not placed it yet (waiting for free cores and RAM)"
TICK_SECONDS = 0.5
# Quiet for this long: a session that starts at once needs no explanation.
REPORT_AFTER_SECONDS = 3.0
EVENTS_EVERY_SECONDS = 10.0
EVENTS_PER_TICK = 2
MAX_REASON_CHARS = 200


def pending_reason(events: list[Event] | None) -> str:
    """Why a Pending session has not started, from its events (None: no pod yet).

    The latest warning says it best, except kubelet's terse `Error: ImagePullBackOff`
    repeats, for which the warning before it (`Failed to pull image ...: manifest
    unknown`) is the one that names the cause.
    """
    if not events:
        return QUEUED
    warnings = [e for e in events if e.type.lower() == "warning"]
    telling = [e for e in warnings if not e.message.startswith("Error: ")]
    latest = (telling or warnings or events)[-1]
    message = latest.message.strip()
    text = (
        message
        if message.lower().startswith(latest.reason.lower())
        else (f"{latest.reason}: {message}")
    )
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text if warnings else f"starting ({text})"


def waiting_sentence(who: str, phase: Phase, seconds: float, reason: str | None = None) -> str:
    """The progress line for `who` (e.g. `session abc` or `replica 3 (session abc)`)."""
    if phase is Phase.PENDING:
        return f"{PROG}: {who} is Pending after {seconds:.0f} s: {reason or QUEUED}"
    return f"{PROG}: {who} is {phase.value} after {seconds:.0f} s Pending"


@dataclass
class _Waiting:
    who: str
    session_id: str
    since: float
    reported: bool = False
    events_at: float = 0.0


class QueueProgress:
    """Say, once per distinct reason, why sessions are still Pending.

    `phase_of` is the tracker's last known phase of a session; the monitor sends no
    request of its own except the events of a session that has waited a while, at most
    EVENTS_PER_TICK per tick and once per EVENTS_EVERY_SECONDS per session.
    """

    def __init__(
        self,
        client: AsyncCanfarClient,
        phase_of: Callable[[str], Phase | None],
        say: Callable[[str], None],
    ) -> None:
        self.client = client
        self.phase_of = phase_of
        self.say = say
        self._waiting: dict[str, _Waiting] = {}
        self._said: set[str] = set()
        self.running_since: dict[str, float] = {}

    def track(self, session_id: str, who: str) -> None:
        """Start watching one session's wait."""
        self._waiting[session_id] = _Waiting(who, session_id, time.monotonic())

    def untrack(self, session_id: str) -> None:
        """Stop watching (the session ended)."""
        self._waiting.pop(session_id, None)

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            await self.tick()
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self) -> None:
        """Look at every waiting session once."""
        now = time.monotonic()
        asked = 0
        for waiting in list(self._waiting.values()):
            phase = self.phase_of(waiting.session_id)
            if phase is not None and phase is not Phase.PENDING:
                if phase is Phase.RUNNING:
                    self.running_since.setdefault(waiting.session_id, now)
                if waiting.reported:
                    self.say(waiting_sentence(waiting.who, phase, now - waiting.since))
                self.untrack(waiting.session_id)
                continue
            due = now - waiting.since >= REPORT_AFTER_SECONDS
            if not due or now - waiting.events_at < EVENTS_EVERY_SECONDS:
                continue
            if asked >= EVENTS_PER_TICK:
                continue
            asked += 1
            waiting.events_at = now
            try:
                events = await self._events(waiting.session_id)
            except CanfarError:
                continue  # unreadable now; asked again in EVENTS_EVERY_SECONDS
            if waiting.session_id not in self._waiting:
                continue  # ended while the events were read
            reason = pending_reason(events)
            if reason not in self._said:
                self._said.add(reason)
                waiting.reported = True
                self.say(waiting_sentence(waiting.who, Phase.PENDING, now - waiting.since, reason))

    async def _events(self, session_id: str) -> list[Event] | None:
        try:
            return await self.client.events(session_id)
        except SessionNotFoundError:
            return None  # no pod yet: Kueue holds the Job (reference §3.5)
