"""From a session's `Outcome` to the status code Prefect reports, and what to log.

Prefect turns a non-zero status into `Crashed` with its own explanation of the code
(137: out of memory, 125: the image could not run, ...), and never overwrites a final
state the engine in the session already reported; so the code only decides the fate of
runs whose engine did not finish, and it must be the most truthful one available.

| Outcome                                  | Status                                    |
|------------------------------------------|-------------------------------------------|
| exit code recorded (Completed or Failed) | that code (0 on success)                  |
| killed with SIGKILL / over its `ram`     | 137                                       |
| Failed without a recorded exit code      | 1, the reason logged                      |
| Pending past `pending_timeout_seconds`   | 125 if the image cannot be pulled, else 1 |
| an image pull failing over its window    | 125 (the session is deleted)              |
| past `job_timeout_seconds`               | 124 (the session is deleted)              |
| deleted by this worker (cancellation)    | 143                                       |
| vanished without an exit code            | -1, the reason logged                     |
| lost (the session list stayed unreadable)| -1, the reason logged                     |
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from canfar_core import (
    OOM_EXIT_CODE,
    TIMEOUT_EXIT_CODE,
    DiagnosisCategory,
    Outcome,
    OutcomeKind,
    diagnose_outcome,
)

UNKNOWN_FAILURE = 1
IMAGE_FAILURE = 125
CANCELLED = 143
VANISHED = -1


@dataclass(frozen=True)
class Report:
    """The status code of a finished run and the lines to put in its log."""

    status_code: int
    level: int
    lines: list[str] = field(default_factory=list)
    forward_output: bool = False


def report(
    outcome: Outcome,
    *,
    cancelled: bool = False,
    pending_timeout: float | None = None,
    job_timeout: float | None = None,
) -> Report:
    """Map an outcome to a status code and the explanation a user needs."""
    session = f"CANFAR session {outcome.session_id}"
    if outcome.name:
        session += f" ({outcome.name})"
    kind = outcome.kind
    code = outcome.exit_code
    if kind is OutcomeKind.SUCCEEDED:
        return Report(0, logging.INFO, [f"{session} completed with exit code 0."])
    if cancelled or kind is OutcomeKind.DELETED:
        return Report(
            CANCELLED, logging.INFO, [f"{session} was deleted because the flow run was cancelled."]
        )
    if kind is OutcomeKind.OUT_OF_MEMORY:
        return Report(
            OOM_EXIT_CODE,
            logging.ERROR,
            [
                f"{session} was killed with SIGKILL (exit code 137), most likely for using "
                "more memory than its `ram` job variable allows; request more `ram`."
            ],
            forward_output=True,
        )
    if kind is OutcomeKind.RUNTIME_EXCEEDED:
        limit = f"{job_timeout:g} s" if job_timeout is not None else "its runtime limit"
        return Report(
            TIMEOUT_EXIT_CODE,
            logging.ERROR,
            [
                f"{session} ran longer than job_timeout_seconds ({limit}); it was stopped "
                "and deleted."
            ],
            forward_output=True,
        )
    if kind is OutcomeKind.IMAGE_PULL_FAILED:
        shown = outcome.events_table or "(no events)"
        return Report(
            IMAGE_FAILURE,
            logging.ERROR,
            [
                f"{session} could not pull its image and was deleted ({outcome.reason}); check "
                "its name and tag, and registry_credentials for a private image.",
                f"Events of {session}:\n{shown}",
            ],
            forward_output=False,
        )
    if kind is OutcomeKind.PENDING_TIMEOUT:
        events = outcome.events_table
        diagnosis = diagnose_outcome(outcome)
        pull = diagnosis is not None and diagnosis.category is DiagnosisCategory.IMAGE_PULL
        status = IMAGE_FAILURE if pull else UNKNOWN_FAILURE
        limit = f"{pending_timeout:g} s" if pending_timeout is not None else "its limit"
        advice = (
            "the image could not be pulled: check its name and tag, and registry_credentials "
            "for a private image."
            if status == IMAGE_FAILURE
            else "the platform did not start it: it may be busy (raise "
            "pending_timeout_seconds) or the requested cores/ram/gpus may not fit."
        )
        shown = events or "(no events: the session was never scheduled; it was still queued)"
        return Report(
            status,
            logging.ERROR,
            [
                f"{session} was still Pending after pending_timeout_seconds ({limit}) and "
                f"was deleted; {advice}",
                f"Events of {session}:\n{shown}",
            ],
            forward_output=False,
        )
    if kind is OutcomeKind.LOST:
        return Report(
            VANISHED,
            logging.ERROR,
            [f"Lost track of {session}: {outcome.reason}."],
            forward_output=False,
        )
    if kind is OutcomeKind.VANISHED and code is None:
        return Report(
            VANISHED,
            logging.ERROR,
            [f"{session} ended without recording an exit code: {outcome.reason}."],
            forward_output=True,
        )
    if code is not None:
        lines = [f"{session} failed: the command exited with code {code}."]
        return Report(code, logging.ERROR, lines, forward_output=True)
    lines = [f"{session} failed without recording an exit code: {outcome.reason}."]
    if outcome.events_table:
        lines.append(f"Events of {session}:\n{outcome.events_table}")
    return Report(UNKNOWN_FAILURE, logging.ERROR, lines, forward_output=True)
