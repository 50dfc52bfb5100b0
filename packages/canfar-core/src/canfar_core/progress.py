"""What a tracker tells an engine while sessions wait and run: small immutable records.

Engines word their own progress lines from these (Snakemake's logger, a Prefect flow
run's `InfrastructurePending` state, its log, Prefect events), so the tracker says *what*
happened once and each engine says it its own way. A hook is called on the tracker's
event loop and must return quickly; an exception it raises is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from canfar_core.diagnosis import Diagnosis
from canfar_core.phase import Phase


class ProgressKind(StrEnum):
    """Why a record was sent (stable values)."""

    PHASE = "phase"  # the session's phase changed (first listing included); Running = started
    REASON = "reason"  # a waiting session's reason appeared or changed (queued, image pull)


@dataclass(frozen=True)
class Progress:
    """One thing worth telling about a watched session.

    `seconds_in_phase`: how long it has been in `phase` (0 on a phase change);
    `seconds_in_previous_phase`: how long it was in `previous_phase` (None at first
    sight). `diagnosis` is set for REASON records (a category such as `Queued` or
    `ImagePull`, a summary, the scheduler's words in its detail).
    """

    kind: ProgressKind
    session_id: str
    name: str | None
    phase: Phase
    previous_phase: Phase | None
    seconds_in_phase: float
    seconds_in_previous_phase: float | None = None
    diagnosis: Diagnosis | None = None

    def describe(self) -> str:
        """A line an engine may print as is."""
        who = f"CANFAR session {self.session_id}" + (f" ({self.name})" if self.name else "")
        if self.kind is ProgressKind.REASON and self.diagnosis is not None:
            return f"{who} is {self.phase.value}: {self.diagnosis.describe()}"
        if self.previous_phase is None:
            return f"{who} is {self.phase.value}."
        waited = self.seconds_in_previous_phase or 0.0
        return f"{who} is {self.phase.value} (was {self.previous_phase.value} for {waited:.0f} s)."


ProgressHook = Callable[[Progress], object]
