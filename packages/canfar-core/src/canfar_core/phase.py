"""Session phases, normalised across every status string any Skaha version has emitted.

Current servers emit `Pending`, `Running`, `Completed`, `Failed` and `Terminating`;
servers before 2025.1 said `Succeeded` (and `Error`, `Unknown`), and 1.0.0-1.0.3 said
`Failed (BackoffLimitExceeded)`. A tracker that compared against one spelling broke
when the server renamed it, so every comparison goes through `Phase.parse`.
"""

from __future__ import annotations

import re
from enum import StrEnum

_WITH_REASON = re.compile(r"^\s*(?P<head>[A-Za-z]+)\s*\((?P<reason>[^)]*)\)\s*$")


class Phase(StrEnum):
    """The normalised phase of a session."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, status: str | None) -> Phase:
        """Map a raw `status` string to a phase; unrecognised text becomes UNKNOWN."""
        head, _ = split_status(status)
        key = head.lower()
        if key in ("completed", "succeeded"):
            return cls.COMPLETED
        if key in ("failed", "error"):
            return cls.FAILED
        for phase in (cls.PENDING, cls.RUNNING, cls.TERMINATING):
            if key == phase.value.lower():
                return phase
        return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        """True for phases a session never leaves (Completed, Failed)."""
        return self in (Phase.COMPLETED, Phase.FAILED)


def split_status(status: str | None) -> tuple[str, str | None]:
    """Split `Failed (BackoffLimitExceeded)` into (`Failed`, `BackoffLimitExceeded`)."""
    text = (status or "").strip()
    match = _WITH_REASON.match(text)
    if match:
        return match.group("head"), match.group("reason").strip() or None
    return text, None
