"""What became of a session: the outcome both plugins report from.

The API never reports an exit code (reference §5.3), so the exit code comes from the
launch envelope's exit file or exit line (the rules are in `canfar_core.verdict`). A
session that ended without recording one is a failure with that reason, never assumed
a success.

`logs` is the *tail* of the session's output (at most the tracker's `log_tail_bytes`),
which is what failure messages need and what keeps a driver's memory flat however
much its jobs print; `log_path` is where the whole output is (the state directory's
log file, or the file the watch asked the tracker to stream it to), if anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from canfar_core.phase import Phase

if TYPE_CHECKING:
    from canfar_core.diagnosis import Diagnosis

OOM_EXIT_CODE = 137
TIMEOUT_EXIT_CODE = 124


class OutcomeKind(StrEnum):
    """Why a session ended (the values are stable: engines and automations match them)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    OUT_OF_MEMORY = "out-of-memory"
    PENDING_TIMEOUT = "pending-timeout"
    RUNTIME_EXCEEDED = "runtime-exceeded"
    DELETED = "deleted"
    VANISHED = "vanished"
    LOST = "lost"
    IMAGE_PULL_FAILED = "image-pull-failed"
    STUCK = "stuck"
    CREDENTIALS_REFUSED = "credentials-refused"


@dataclass(frozen=True)
class Outcome:
    """The final state of a watched session.

    `logs` is the tail of the output and `log_head` its first lines; `log_truncated`
    says the output was longer than the tail; `log_path` holds all of it, when saved.
    `diagnosis` is the tracker's `canfar_core.diagnosis.Diagnosis` (None for a success;
    `diagnose_outcome` computes one for an outcome built elsewhere).
    """

    session_id: str
    name: str | None
    kind: OutcomeKind
    phase: Phase
    exit_code: int | None
    reason: str | None
    logs: str = ""
    events_table: str | None = None
    start_time: datetime | None = None
    image: str | None = None
    log_path: Path | None = None
    log_head: str = ""
    log_truncated: bool = False
    diagnosis: Diagnosis | None = None

    @property
    def success(self) -> bool:
        """True only for a recorded exit code of 0."""
        return self.kind is OutcomeKind.SUCCEEDED

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the session's output."""
        return "\n".join(self.logs.rstrip("\n").splitlines()[-lines:])

    def describe(self) -> str:
        """One line for a user: session, exit code and reason."""
        code = "unknown" if self.exit_code is None else str(self.exit_code)
        text = f"session {self.session_id} ({self.kind.value}, exit code {code})"
        return f"{text}: {self.reason}" if self.reason else text


def classify_exit(
    exit_code: int | None, phase: Phase, *, runtime_limit: float | None = None
) -> tuple[OutcomeKind, str | None]:
    """The outcome kind and reason for a finished session's exit code and phase."""
    if exit_code == 0:
        return OutcomeKind.SUCCEEDED, None
    if exit_code == OOM_EXIT_CODE:
        return (
            OutcomeKind.OUT_OF_MEMORY,
            "killed with SIGKILL (exit code 137), most likely for exceeding its memory "
            "(ram) limit; request more memory",
        )
    if exit_code == TIMEOUT_EXIT_CODE and runtime_limit is not None:
        return (
            OutcomeKind.RUNTIME_EXCEEDED,
            f"stopped after exceeding its runtime limit of {runtime_limit:g} s",
        )
    if exit_code is not None:
        return OutcomeKind.FAILED, f"the command exited with code {exit_code}"
    if phase is Phase.COMPLETED:
        return OutcomeKind.SUCCEEDED, None
    return (
        OutcomeKind.FAILED,
        "the session failed without recording an exit code (killed, out of memory, "
        "its deadline passed, or the command could not start)",
    )
