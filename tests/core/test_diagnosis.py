"""One diagnosis for both plugins: each category from the evidence that names it."""

from __future__ import annotations

import pytest
from canfar_core.diagnosis import (
    DiagnosisCategory,
    DiagnosisLevel,
    Evidence,
    diagnose,
    diagnose_outcome,
)
from canfar_core.launch import BOOT_FAILURE
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase

PULL = (
    "TYPE      REASON    MESSAGE                                          FIRST   LAST\n"
    'Warning   Failed    Failed to pull image "x:nope": manifest unknown   a   b\n'
    "Warning   Failed    Error: ImagePullBackOff                          a   b"
)
SCHEDULING = (
    "TYPE      REASON             MESSAGE                                        FIRST   LAST\n"
    "Warning   FailedScheduling   0/{n} nodes are available: {n} Insufficient cpu   a   b"
)
OOM_EVENT = (
    "TYPE      REASON       MESSAGE                       FIRST   LAST\n"
    "Warning   OOMKilling   Memory cgroup out of memory   a       b"
)


def category(**evidence: object) -> DiagnosisCategory | None:
    found = diagnose(Evidence(**evidence))  # type: ignore[arg-type]
    return found.category if found else None


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ({"kind": OutcomeKind.SUCCEEDED, "exit_code": 0}, None),
        ({"kind": OutcomeKind.IMAGE_PULL_FAILED, "events": PULL}, DiagnosisCategory.IMAGE_PULL),
        ({"kind": OutcomeKind.PENDING_TIMEOUT, "events": PULL}, DiagnosisCategory.IMAGE_PULL),
        ({"kind": OutcomeKind.PENDING_TIMEOUT, "no_pod": True}, DiagnosisCategory.PENDING_TIMEOUT),
        ({"phase": Phase.PENDING, "events": PULL}, DiagnosisCategory.IMAGE_PULL),
        ({"phase": Phase.PENDING, "no_pod": True}, DiagnosisCategory.QUEUED),
        (
            {"phase": Phase.PENDING, "events": SCHEDULING.format(n=3)},
            DiagnosisCategory.QUEUED,
        ),
        ({"phase": Phase.RUNNING}, None),
        ({"kind": OutcomeKind.OUT_OF_MEMORY, "exit_code": 137}, DiagnosisCategory.OUT_OF_MEMORY),
        ({"kind": OutcomeKind.FAILED, "events": OOM_EVENT}, DiagnosisCategory.OUT_OF_MEMORY),
        (
            {
                "kind": OutcomeKind.FAILED,
                "exit_code": 1,
                "log_text": "returned non-zero exit status -9.",
            },
            DiagnosisCategory.OUT_OF_MEMORY,
        ),
        (
            {
                "kind": OutcomeKind.FAILED,
                "exit_code": 1,
                "log_text": "died with <Signals.SIGKILL: 9>",
            },
            DiagnosisCategory.OUT_OF_MEMORY,
        ),
        ({"kind": OutcomeKind.RUNTIME_EXCEEDED, "exit_code": 124}, DiagnosisCategory.RUNTIME_LIMIT),
        ({"kind": OutcomeKind.FAILED}, DiagnosisCategory.KILLED),
        ({"kind": OutcomeKind.VANISHED}, DiagnosisCategory.VANISHED),
        ({"kind": OutcomeKind.FAILED, "never_ran": True}, DiagnosisCategory.ENVELOPE_NEVER_RAN),
        ({"kind": OutcomeKind.STUCK, "phase": Phase.TERMINATING}, DiagnosisCategory.STUCK),
        ({"kind": OutcomeKind.CREDENTIALS_REFUSED}, DiagnosisCategory.CREDENTIALS_REFUSED),
        ({"kind": OutcomeKind.LOST}, DiagnosisCategory.LOST),
        ({"kind": OutcomeKind.DELETED}, DiagnosisCategory.DELETED),
        ({"kind": OutcomeKind.FAILED, "exit_code": 3}, DiagnosisCategory.COMMAND_FAILED),
    ],
)
def test_each_category_from_its_evidence(
    evidence: dict[str, object], expected: DiagnosisCategory | None
) -> None:
    assert category(**evidence) is expected


def test_categories_are_a_stable_contract() -> None:
    # Automations match these strings: a rename is a breaking change.
    assert {c.value for c in DiagnosisCategory} == {
        "ImagePull",
        "Queued",
        "PendingTimeout",
        "OutOfMemory",
        "RuntimeLimit",
        "Killed",
        "Vanished",
        "EnvelopeNeverRan",
        "Stuck",
        "CredentialsRefused",
        "Lost",
        "Deleted",
        "CommandFailed",
    }


def test_a_queued_reason_keeps_its_key_while_only_counts_change() -> None:
    three = diagnose(
        Evidence(phase=Phase.PENDING, events=SCHEDULING.format(n=3), seconds_in_phase=5)
    )
    four = diagnose(
        Evidence(phase=Phase.PENDING, events=SCHEDULING.format(n=4), seconds_in_phase=50)
    )
    assert three is not None and four is not None
    assert three.level is DiagnosisLevel.WARNING
    assert "Insufficient cpu" in three.detail
    assert three.dedupe_key() == four.dedupe_key()
    pull = diagnose(Evidence(phase=Phase.PENDING, events=PULL))
    assert pull is not None and pull.dedupe_key() != three.dedupe_key()


def test_an_outcome_built_elsewhere_is_diagnosed_from_itself() -> None:
    outcome = Outcome(
        "abc",
        "job",
        OutcomeKind.FAILED,
        Phase.FAILED,
        None,
        "no record",
        logs=f"sh: base64: not found\n{BOOT_FAILURE}\n",
    )
    found = diagnose_outcome(outcome)
    assert found is not None and found.category is DiagnosisCategory.ENVELOPE_NEVER_RAN
    pulled = Outcome(
        "abc", None, OutcomeKind.PENDING_TIMEOUT, Phase.PENDING, None, "x", events_table=PULL
    )
    found = diagnose_outcome(pulled)
    assert found is not None and "manifest unknown" in found.detail
    assert "name and tag" in found.resolution
