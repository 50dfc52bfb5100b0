"""What `canfar-run` says on stderr while sessions wait to start.

A headless session can sit in `Pending` for many minutes (the Kueue queue, an image
pull), and a silent terminal looks like a hang. The tracker reads a Pending session's
events at a bounded rate and diagnoses why it waits (canfar_core.diagnosis, the same
words the plugins use); this module only says it: each distinct reason once for the
whole run (twenty queued replicas make one line), and that a session started, once its
wait was reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from canfar_core.phase import Phase
from canfar_core.progress import Progress, ProgressKind
from canfar_core.run.options import PROG


def waiting_sentence(who: str, phase: Phase, seconds: float, reason: str | None = None) -> str:
    """The progress line for `who` (e.g. `session abc` or `replica 3 (session abc)`)."""
    if phase is Phase.PENDING:
        return f"{PROG}: {who} is Pending after {seconds:.0f} s: {reason}"
    return f"{PROG}: {who} is {phase.value} after {seconds:.0f} s Pending"


class QueueProgress:
    """Words the tracker's progress records for the terminal (its `on_progress` hook)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self._who: dict[str, str] = {}
        self._since: dict[str, float] = {}
        self._reported: set[str] = set()
        self._said: set[tuple[str, str]] = set()
        self.running_since: dict[str, float] = {}

    def track(self, session_id: str, who: str) -> None:
        """Start telling about one session's wait."""
        self._who[session_id] = who
        self._since[session_id] = time.monotonic()

    def untrack(self, session_id: str) -> None:
        """Stop (the session ended)."""
        self._who.pop(session_id, None)
        self._since.pop(session_id, None)

    def on_progress(self, record: Progress) -> None:
        """The tracker's hook: a queued reason (once per run), or a start after one."""
        who = self._who.get(record.session_id)
        if who is None:
            return
        waited = time.monotonic() - self._since.get(record.session_id, time.monotonic())
        if record.kind is ProgressKind.REASON and record.diagnosis is not None:
            key = record.diagnosis.dedupe_key()
            if key in self._said:
                return
            self._said.add(key)
            self._reported.add(record.session_id)
            self.say(waiting_sentence(who, Phase.PENDING, waited, record.diagnosis.describe()))
        elif record.kind is ProgressKind.PHASE and record.phase is not Phase.PENDING:
            if record.phase is Phase.RUNNING:
                self.running_since.setdefault(record.session_id, time.monotonic())
            if record.session_id in self._reported:
                self._reported.discard(record.session_id)
                self.say(waiting_sentence(who, record.phase, waited))
