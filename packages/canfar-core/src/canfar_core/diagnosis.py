"""What went wrong with a session (or why it waits), in one stable category.

`diagnose(evidence)` is a pure function from what the tracker knows (phase, outcome
kind, exit code, events, the log's first and last lines, time in phase) to a
`Diagnosis`: a level, a category that automations can match, a one-line summary, the
detail and what a user should try. Both plugins word their messages from it, so the
rules live once: an out-of-memory kill is recognised here (exit code 137, an OOM event,
a child that died of SIGKILL), and so is an image that cannot be pulled.

As in prefect-kubernetes' diagnostics, the category values are a stable contract:
engines put them in events and logs, and automations match them. Never rename one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from canfar_core.launch import BOOT_FAILURE
from canfar_core.models import parse_events
from canfar_core.outcome import OOM_EXIT_CODE, Outcome, OutcomeKind
from canfar_core.phase import Phase


class DiagnosisLevel(StrEnum):
    """How bad it is: the run fails (error), may be slow (warning), or is fine (info)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class DiagnosisCategory(StrEnum):
    """The stable, machine-matchable category of a diagnosis. Never rename a value."""

    IMAGE_PULL = "ImagePull"
    QUEUED = "Queued"
    PENDING_TIMEOUT = "PendingTimeout"
    OUT_OF_MEMORY = "OutOfMemory"
    RUNTIME_LIMIT = "RuntimeLimit"
    KILLED = "Killed"
    VANISHED = "Vanished"
    ENVELOPE_NEVER_RAN = "EnvelopeNeverRan"
    STUCK = "Stuck"
    CREDENTIALS_REFUSED = "CredentialsRefused"
    LOST = "Lost"
    DELETED = "Deleted"
    COMMAND_FAILED = "CommandFailed"


_COUNTS = re.compile(r"\d+")
IMAGE_PULL_EVENTS = re.compile(
    r"ErrImagePull|ImagePullBackOff|InvalidImageName|Failed to pull", re.IGNORECASE
)


@dataclass(frozen=True)
class Diagnosis:
    """One diagnosis: `summary` is a line for a user, `resolution` what to try."""

    level: DiagnosisLevel
    category: DiagnosisCategory
    summary: str
    detail: str
    resolution: str

    def dedupe_key(self) -> tuple[str, str]:
        """Identifies the cause, ignoring counts (`0/3 nodes` vs `0/4 nodes`) that drift."""
        return self.category.value, _COUNTS.sub("#", f"{self.summary}\n{self.detail}")

    def describe(self) -> str:
        """`summary: detail; resolution` on as few lines as the detail needs."""
        text = self.summary
        if self.detail:
            text += f": {self.detail}"
        return f"{text}. {self.resolution}" if self.resolution else text


@dataclass(frozen=True)
class Evidence:
    """What a diagnosis is made from (all optional: a pending session has no kind).

    `kind` is None while the session has not ended. `events` is the kubectl table, and
    `no_pod` says the events view answered 404 (nothing scheduled yet). `log_text` is
    whatever of the output is at hand (its first and last lines). `never_ran`: the
    tracker saw that the launch envelope never ran its script.
    """

    phase: Phase | None = None
    kind: OutcomeKind | None = None
    exit_code: int | None = None
    reason: str | None = None
    events: str | None = None
    no_pod: bool = False
    log_text: str = ""
    seconds_in_phase: float | None = None
    never_ran: bool = False


# A child killed by SIGKILL, as Python reports it (`subprocess`, Snakemake in a session).
_CHILD_EXIT = re.compile(r"returned non-zero exit status (-?\d+)")
_CHILD_SIGKILL = "died with <Signals.SIGKILL"
_OOM_EVENTS = re.compile(r"OOMKill|out of memory|OutOfMemory", re.IGNORECASE)
_SCHEDULING = re.compile(r"FailedScheduling|Insufficient|Unschedulable", re.IGNORECASE)


def child_exit_code(log_text: str) -> int | None:
    """The exit status of the last child a Python program reported as failed, if any."""
    found = _CHILD_EXIT.findall(log_text)
    return int(found[-1]) if found else None


def out_of_memory(evidence: Evidence) -> bool:
    """True when the session, or a process inside it, was killed for its memory."""
    if evidence.kind is OutcomeKind.OUT_OF_MEMORY or evidence.exit_code == OOM_EXIT_CODE:
        return True
    if child_exit_code(evidence.log_text) in (OOM_EXIT_CODE, -9):
        return True
    if _CHILD_SIGKILL in evidence.log_text:
        return True
    return bool(evidence.events and _OOM_EVENTS.search(evidence.events))


def image_pull_failed(events: str | None) -> bool:
    """True when the events show the image cannot be pulled."""
    return bool(events and IMAGE_PULL_EVENTS.search(events))


def _event_lines(events: str | None, pattern: re.Pattern[str]) -> str:
    rows = [e for e in parse_events(events or "") if pattern.search(f"{e.reason} {e.message}")]
    return "; ".join(f"{e.reason}: {e.message}" for e in rows[-3:])


def _image_pull(evidence: Evidence) -> Diagnosis:
    return Diagnosis(
        DiagnosisLevel.ERROR,
        DiagnosisCategory.IMAGE_PULL,
        "the image cannot be pulled",
        _event_lines(evidence.events, IMAGE_PULL_EVENTS) or (evidence.reason or ""),
        "Check the image's name and tag (`canfar image list`, images.canfar.net), and the "
        "registry credentials for a private image.",
    )


def _queued(evidence: Evidence) -> Diagnosis | None:
    scheduler = _event_lines(evidence.events, _SCHEDULING)
    waited = evidence.seconds_in_phase
    since = f" for {waited:.0f} s" if waited is not None else ""
    if scheduler:
        return Diagnosis(
            DiagnosisLevel.WARNING,
            DiagnosisCategory.QUEUED,
            f"queued for resources{since}",
            scheduler,
            "It starts when the platform has room; a smaller cores/ram request fits sooner.",
        )
    if evidence.no_pod:
        return Diagnosis(
            DiagnosisLevel.INFO,
            DiagnosisCategory.QUEUED,
            f"queued{since}",
            "the platform's admission queue has not admitted it yet (no pod exists)",
            "It starts when the platform has room; a smaller cores/ram request fits sooner.",
        )
    return None


def diagnose(evidence: Evidence) -> Diagnosis | None:
    """The diagnosis for `evidence`, or None when nothing needs saying (a success)."""
    kind = evidence.kind
    reason = evidence.reason or ""
    if kind is OutcomeKind.SUCCEEDED:
        return None
    if kind is None:
        if evidence.phase is Phase.PENDING:
            if image_pull_failed(evidence.events):
                return _image_pull(evidence)
            return _queued(evidence)
        return None
    if kind is OutcomeKind.CREDENTIALS_REFUSED:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.CREDENTIALS_REFUSED,
            "CANFAR refused the credentials while the run was going on",
            reason,
            "Renew the credentials and run again; sessions that may still be running are "
            "named above.",
        )
    if kind is OutcomeKind.LOST:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.LOST,
            "the session list could not be read for too long",
            reason,
            "Check CANFAR's status; the session may still be running.",
        )
    if kind is OutcomeKind.DELETED:
        return Diagnosis(
            DiagnosisLevel.INFO,
            DiagnosisCategory.DELETED,
            "deleted on request",
            reason,
            "",
        )
    if kind is OutcomeKind.IMAGE_PULL_FAILED or (
        kind is OutcomeKind.PENDING_TIMEOUT and image_pull_failed(evidence.events)
    ):
        return _image_pull(evidence)
    if kind is OutcomeKind.PENDING_TIMEOUT:
        queued = _queued(evidence)
        detail = queued.detail if queued else "it was never scheduled"
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.PENDING_TIMEOUT,
            "still Pending at the pending timeout, so it was deleted",
            detail,
            "The platform is busy or the request does not fit: ask for fewer cores or "
            "less ram, or allow a longer pending timeout.",
        )
    if kind is OutcomeKind.STUCK:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.STUCK,
            f"stuck in phase {evidence.phase.value if evidence.phase else 'Unknown'}",
            reason,
            "CANFAR lost track of the session's pod; run the job again, and tell CANFAR "
            "support if it keeps happening.",
        )
    if kind is OutcomeKind.RUNTIME_EXCEEDED:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.RUNTIME_LIMIT,
            "stopped at its runtime limit",
            reason,
            "Raise the runtime limit, or split the work.",
        )
    if out_of_memory(evidence):
        code = "unknown" if evidence.exit_code is None else str(evidence.exit_code)
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.OUT_OF_MEMORY,
            "killed, most likely for using more memory than its ram allows",
            f"exit code {code}",
            "Request more memory (ram).",
        )
    if kind is OutcomeKind.VANISHED:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.VANISHED,
            "the session disappeared without recording an exit code",
            reason,
            "Something deleted it, or it ended more than an hour before it was looked at; "
            "run the job again.",
        )
    if evidence.never_ran:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.ENVELOPE_NEVER_RAN,
            "the launch envelope never ran the command",
            reason,
            "Use an image with /bin/sh and base64, and make sure the session can see the "
            "state directory.",
        )
    if evidence.exit_code is None:
        return Diagnosis(
            DiagnosisLevel.ERROR,
            DiagnosisCategory.KILLED,
            "killed without recording an exit code",
            reason,
            "Most often this is memory: request more ram; otherwise the platform's "
            "deadline or a deletion stopped it.",
        )
    return Diagnosis(
        DiagnosisLevel.ERROR,
        DiagnosisCategory.COMMAND_FAILED,
        f"the command exited with code {evidence.exit_code}",
        reason,
        _command_hint(evidence.exit_code),
    )


def _command_hint(code: int) -> str:
    if code == 127:
        return "A program was not found in the image; check that the image provides it."
    if code == 126:
        return "A program could not be run, or the working directory is not visible."
    return "See the session's output."


def evidence_of(outcome: Outcome, *, never_ran: bool | None = None) -> Evidence:
    """The evidence an outcome carries (its log's first lines and tail included)."""
    logs = f"{outcome.log_head}\n{outcome.logs}" if outcome.log_head else outcome.logs
    if never_ran is None:
        never_ran = (
            outcome.kind is OutcomeKind.FAILED
            and outcome.exit_code is None
            and (BOOT_FAILURE in logs or outcome.phase is Phase.COMPLETED)
        )
    return Evidence(
        phase=outcome.phase,
        kind=outcome.kind,
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        events=outcome.events_table,
        log_text=logs,
        never_ran=never_ran,
    )


def diagnose_outcome(outcome: Outcome) -> Diagnosis | None:
    """The outcome's diagnosis: the tracker's, or one made from the outcome itself."""
    if outcome.diagnosis is not None:
        return outcome.diagnosis
    return diagnose(evidence_of(outcome))
