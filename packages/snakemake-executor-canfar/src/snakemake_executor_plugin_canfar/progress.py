"""What the run says while sessions wait and run, through Snakemake's logger.

The tracker tells once what happened (canfar_core.progress); this module words it for
a Snakemake log and keeps it to lines worth reading: why a session is queued (once,
and again only when the reason changes: the tracker de-duplicates), when it started
after waiting, and at a low rate a one-line summary of what is still running, so a
long night shows signs of life without a line per job per minute.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from canfar_core import Phase, Progress, ProgressKind

HEARTBEAT_SECONDS = 900.0
# A start worth a line: one that waited in the queue (a quick start is routine).
QUEUED_WORTH_SAYING_SECONDS = 30.0


def progress_line(record: Progress) -> str | None:
    """The log line for one tracker record, or None when it is routine."""
    if record.kind is ProgressKind.REASON and record.diagnosis is not None:
        return f"{record.describe()}"
    if (
        record.kind is ProgressKind.PHASE
        and record.phase is Phase.RUNNING
        and record.previous_phase is Phase.PENDING
        and (record.seconds_in_previous_phase or 0.0) >= QUEUED_WORTH_SAYING_SECONDS
    ):
        return record.describe()
    return None


class Heartbeat:
    """A summary line at most every `interval` seconds while sessions are active."""

    def __init__(
        self, interval: float = HEARTBEAT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._last = clock()

    def line(self, phases: Iterable[Phase | None]) -> str | None:
        """The summary of these sessions' phases when one is due, else None."""
        now = self.clock()
        if now - self._last < self.interval:
            return None
        counts = Counter(p.value if p is not None else "Pending" for p in phases)
        if not counts:
            return None
        self._last = now
        shown = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))
        return f"CANFAR sessions of this run still active: {shown}."
