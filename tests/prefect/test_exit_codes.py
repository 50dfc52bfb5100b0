"""How each way a session can end becomes the status code Prefect reports."""

from __future__ import annotations

import logging

import pytest
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from prefect._internal.infrastructure_exit_codes import get_infrastructure_exit_info
from prefect_canfar.exit_codes import report


def outcome(kind: OutcomeKind, code: int | None, **extra: object) -> Outcome:
    phase = Phase.COMPLETED if kind is OutcomeKind.SUCCEEDED else Phase.FAILED
    return Outcome(
        "abc12345", "prefect-run-x1", kind, phase, code, extra.pop("reason", None), **extra
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (outcome(OutcomeKind.SUCCEEDED, 0), 0),
        (outcome(OutcomeKind.FAILED, 3), 3),
        (outcome(OutcomeKind.OUT_OF_MEMORY, 137), 137),
        (outcome(OutcomeKind.FAILED, None, reason="no exit code"), 1),
        (outcome(OutcomeKind.RUNTIME_EXCEEDED, 124), 124),
        (outcome(OutcomeKind.RUNTIME_EXCEEDED, None), 124),
        (outcome(OutcomeKind.VANISHED, None, reason="it disappeared"), -1),
        (outcome(OutcomeKind.DELETED, None), 143),
        (outcome(OutcomeKind.LOST, None, reason="list unreadable for 600 s"), -1),
        (outcome(OutcomeKind.PENDING_TIMEOUT, None, events_table=None), 1),
    ],
)
def test_status_codes(result: Outcome, status: int) -> None:
    assert report(result).status_code == status


def test_out_of_memory_gets_prefects_oom_explanation() -> None:
    code = report(outcome(OutcomeKind.OUT_OF_MEMORY, 137)).status_code
    assert "out-of-memory" in get_infrastructure_exit_info(code).explanation


def test_image_that_cannot_be_pulled_is_reported_as_an_image_failure() -> None:
    events = (
        "TYPE      REASON   MESSAGE                                  FIRST-TIME   LAST-TIME\n"
        'Warning   Failed   Failed to pull image "images.canfar.net/x/y:nope"   <none>   <none>\n'
        "Warning   Failed   Error: ImagePullBackOff                  <none>       <none>"
    )
    result = report(
        outcome(OutcomeKind.PENDING_TIMEOUT, None, events_table=events), pending_timeout=60
    )
    assert result.status_code == 125
    assert "Container failed to run" in get_infrastructure_exit_info(125).explanation
    assert "still Pending after pending_timeout_seconds (60 s)" in result.lines[0]
    assert "image could not be pulled" in result.lines[0]
    assert events in result.lines[1]


def test_failures_without_an_exit_code_say_why_and_forward_output() -> None:
    result = report(
        outcome(
            OutcomeKind.FAILED, None, reason="the session failed without recording an exit code"
        )
    )
    assert result.level == logging.ERROR and result.forward_output
    assert "failed without recording an exit code" in result.lines[0]
    vanished = report(outcome(OutcomeKind.VANISHED, None, reason="the session disappeared"))
    assert "the session disappeared" in vanished.lines[0]


def test_a_cancelled_run_is_reported_calmly() -> None:
    result = report(outcome(OutcomeKind.VANISHED, None), cancelled=True)
    assert result.status_code == 143 and result.level == logging.INFO
    assert not result.forward_output
