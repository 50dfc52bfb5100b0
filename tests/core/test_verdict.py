"""Each rule of the tracker's one decision, stated as a unit test (no I/O, a fake clock).

The end-to-end tests beside these (test_verdicts_e2e.py, test_tracker.py) show the same
rules against the embedded platform and the chaos proxy.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from canfar_core.launch import BOOT_FAILURE, marker_line, parse_exit_marker
from canfar_core.models import Session
from canfar_core.outcome import OutcomeKind
from canfar_core.phase import Phase
from canfar_core.verdict import (
    NEED_EVENTS,
    NEED_LOGS,
    WAIT,
    Policy,
    Records,
    WatchFacts,
    decide,
    events_due,
    wake_at,
    with_events,
    with_exit_file,
    with_log_failure,
    with_logs,
)

POLICY = Policy(
    vanish_grace=5,
    stuck_grace=60,
    stuck_timeout=600,
    events_delay=10,
    events_interval=30,
    image_pull_window=120,
)
PULL_EVENTS = (
    "TYPE      REASON    MESSAGE                      FIRST-TIME   LAST-TIME\n"
    "Warning   Failed    Error: ErrImagePull          2026-07-01   2026-07-01\n"
    "Warning   Failed    Error: ImagePullBackOff      2026-07-01   2026-07-01"
)
QUEUED_EVENTS = (
    "TYPE      REASON             MESSAGE                                    FIRST-TIME   LAST\n"
    "Warning   FailedScheduling   0/3 nodes are available: 3 Insufficient cpu   <none>   <none>"
)


def session(status: str, sid: str = "abc") -> Session:
    return Session(id=sid, status=status, name="job")


def facts(phase: Phase | None, since: float = 0.0, **kw: object) -> WatchFacts:
    return WatchFacts(session_id="abc", phase=phase, phase_since=since, **kw)  # type: ignore[arg-type]


def read(records: Records, log: str = "", at: float = 1.0, exists: bool | None = None) -> Records:
    marker = parse_exit_marker(log, "abc")
    return with_logs(records, head=log, marker=marker, now=at, file_exists=exists)


# -- 1. an exit code is believed only from the envelope ------------------------------------


def test_the_exit_line_counts_only_as_the_final_line_of_this_session() -> None:
    assert parse_exit_marker(f"work\n{marker_line(3, 'abc')}\n", "abc") == 3
    assert parse_exit_marker(f"{marker_line(0, 'abc')}\nprinted after\n", "abc") is None
    assert parse_exit_marker(f"work\n{marker_line(0, 'other')}\n", "abc") is None
    assert parse_exit_marker("canfar-launch: exit code 0\n", "abc") is None  # the old form
    assert parse_exit_marker(f"no newline{marker_line(2, 'abc')}", "abc") == 2
    assert parse_exit_marker(f"x\n{marker_line(4, 'other')}", None) == 4  # a saved log


def test_a_forged_exit_line_of_another_session_is_no_record() -> None:
    records = read(Records(), f"cat old.log\n{marker_line(0, 'other')}")
    records = with_events(records, None, False, 2.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 2.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None
    verdict = decide(session("Completed"), facts(Phase.COMPLETED), records, 2.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED, "a Completed envelope session needs its record"


def test_exit_zero_with_phase_failed_is_a_failure_without_an_exit_code() -> None:
    records = read(Records(), marker_line(0, "abc"))
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 2.0, POLICY)
    assert verdict == NEED_EVENTS  # a failure shows its events
    records = with_events(records, "table", False, 2.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 2.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None
    assert "exit record says 0" in (verdict.reason or "") and verdict.events
    exit_file = replace(Records(), exit_file=0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), exit_file, 2.0, POLICY)
    assert verdict == NEED_EVENTS


def test_a_terminal_session_reads_its_log_first_unless_the_exit_file_decides() -> None:
    assert decide(session("Completed"), facts(Phase.COMPLETED), Records(), 1.0, POLICY) == (
        NEED_LOGS
    )
    exit_file = replace(Records(), exit_file=0)
    verdict = decide(session("Completed"), facts(Phase.COMPLETED), exit_file, 1.0, POLICY)
    assert verdict.kind is OutcomeKind.SUCCEEDED and verdict.exit_code == 0
    records = read(Records(), marker_line(7, "abc"))
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 2.0, POLICY)
    assert verdict == NEED_EVENTS
    fresh = with_events(records, None, False, 2.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), fresh, 2.0, POLICY)
    assert (verdict.kind, verdict.exit_code) == (OutcomeKind.FAILED, 7)


def test_a_log_that_cannot_be_read_is_retried_then_given_up() -> None:
    records = Records()
    for _ in range(POLICY.log_read_attempts - 1):
        records = with_log_failure(records)
        assert decide(session("Failed"), facts(Phase.FAILED), records, 1, POLICY) == NEED_LOGS
    records = with_events(with_log_failure(records), None, False, 1.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 1, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None


# -- 2. no exit record is never a success when an envelope was used -----------------------


def test_completed_without_a_record_is_the_envelope_never_running() -> None:
    records = with_events(read(Records(), "hello\n"), None, False, 1.0)
    verdict = decide(session("Completed"), facts(Phase.COMPLETED), records, 1.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None
    assert "envelope never ran its script" in (verdict.reason or "")
    assert "log begins:\nhello" in (verdict.reason or "")


def test_the_boot_lines_sentence_says_why_the_envelope_never_ran() -> None:
    log = f"/bin/sh: 1: base64: not found\n{BOOT_FAILURE}\n"
    records = with_events(read(Records(), log), None, False, 1.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 1.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED
    assert "the launch envelope never ran" in (verdict.reason or "")
    assert "base64: not found" in (verdict.reason or "")


def test_a_state_dir_log_never_created_means_the_envelope_never_started() -> None:
    records = with_events(read(Records(), "", exists=False), None, False, 1.0)
    watch = facts(Phase.FAILED, has_state_dir=True)
    verdict = decide(session("Failed"), watch, records, 1.0, POLICY)
    assert "never started" in (verdict.reason or "")


def test_failed_without_a_record_is_a_kill_not_a_never_ran() -> None:
    records = with_events(read(Records(), "working\n", exists=True), None, False, 1.0)
    verdict = decide(session("Failed"), facts(Phase.FAILED), records, 1.0, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None
    assert "failed without recording an exit code" in (verdict.reason or "")


def test_only_a_raw_session_may_succeed_on_its_phase() -> None:
    records = read(Records(), "")
    raw = facts(Phase.COMPLETED, enveloped=False)
    verdict = decide(session("Completed"), raw, records, 1.0, POLICY)
    assert (verdict.kind, verdict.exit_code) == (OutcomeKind.SUCCEEDED, 0)


# -- gone from the list ---------------------------------------------------------------------


def test_a_missing_session_gets_a_grace_then_vanishes_unless_it_left_a_record() -> None:
    watch = facts(None, watched_at=0.0)
    assert decide(None, watch, Records(), 4.0, POLICY) == WAIT
    verdict = decide(None, watch, Records(), 5.0, POLICY)
    assert verdict.kind is OutcomeKind.VANISHED
    exit_file = replace(Records(), exit_file=0)
    assert decide(None, watch, exit_file, 0.1, POLICY).kind is OutcomeKind.SUCCEEDED


def test_a_vanished_state_dir_session_is_resolved_from_its_saved_log() -> None:
    watch = facts(Phase.RUNNING, has_state_dir=True)
    assert decide(None, watch, Records(), 10.0, POLICY) == NEED_LOGS
    records = with_events(read(Records(), marker_line(2, "abc"), at=10.0), None, True, 10.0)
    verdict = decide(None, watch, records, 10.0, POLICY)
    assert (verdict.kind, verdict.exit_code) == (OutcomeKind.FAILED, 2)


# -- 4. stuck phases resolve -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["Terminating", "Unknown", "Something new"])
def test_a_stuck_session_with_a_record_resolves_after_the_grace(status: str) -> None:
    stuck = session(status)
    watch = facts(stuck.phase, since=100.0)
    assert decide(stuck, watch, Records(), 159.0, POLICY) == WAIT
    assert decide(stuck, watch, Records(), 160.0, POLICY) == NEED_LOGS
    records = read(Records(), f"done\n{marker_line(0, 'abc')}", at=160.0)
    verdict = decide(stuck, watch, records, 160.0, POLICY)
    assert (verdict.kind, verdict.exit_code) == (OutcomeKind.SUCCEEDED, 0)
    exit_file = replace(Records(), exit_file=3)
    verdict = decide(stuck, watch, exit_file, 160.0, POLICY)
    assert verdict == NEED_EVENTS


def test_a_stuck_session_without_a_record_is_deleted_with_its_events() -> None:
    stuck = session("Terminating")
    watch = facts(Phase.TERMINATING, since=100.0)
    records = read(Records(), "still going\n", at=160.0)
    assert decide(stuck, watch, records, 500.0, POLICY) == WAIT
    assert decide(stuck, watch, records, 700.0, POLICY) == NEED_LOGS  # one last look
    records = read(records, "still going\n", at=700.0)
    assert decide(stuck, watch, records, 700.0, POLICY) == NEED_EVENTS
    records = with_events(records, "TYPE  REASON\nNormal  Killing", False, 700.0)
    verdict = decide(stuck, watch, records, 700.0, POLICY)
    assert verdict.kind is OutcomeKind.STUCK and verdict.stop and verdict.events
    assert "stayed Terminating for 600 s" in (verdict.reason or "")


# -- Pending: timeout, events at a bounded rate, image pulls --------------------------------


def test_pending_timeout_deletes_with_the_events() -> None:
    watch = facts(Phase.PENDING, pending_timeout=30.0)
    pending = session("Pending")
    assert decide(pending, watch, Records(), 30.0, POLICY) == NEED_EVENTS
    records = with_events(Records(), None, True, 30.0)
    verdict = decide(pending, watch, records, 30.0, POLICY)
    assert verdict.kind is OutcomeKind.PENDING_TIMEOUT and verdict.stop
    assert "still queued" in (verdict.reason or "")


def test_events_are_read_after_a_delay_then_at_a_bounded_rate() -> None:
    watch = facts(Phase.PENDING)
    assert not events_due(watch, Records(), 9.9, POLICY)
    assert events_due(watch, Records(), 10.0, POLICY)
    records = with_events(Records(), None, True, 10.0)
    assert not events_due(watch, records, 39.9, POLICY)
    assert events_due(watch, records, 40.0, POLICY)
    assert wake_at(watch, records, POLICY) == 40.0
    # A queued session keeps waiting, whatever its reason.
    queued = with_events(Records(), QUEUED_EVENTS, False, 10.0)
    assert decide(session("Pending"), watch, queued, 11.0, POLICY) == WAIT


def test_an_image_that_keeps_failing_to_pull_fails_after_the_window() -> None:
    watch = facts(Phase.PENDING, pending_timeout=3600.0)
    pending = session("Pending")
    records = with_events(Records(), PULL_EVENTS, False, 10.0)
    assert decide(pending, watch, records, 11.0, POLICY) == WAIT
    records = with_events(records, PULL_EVENTS, False, 100.0)
    assert decide(pending, watch, records, 101.0, POLICY) == WAIT
    records = with_events(records, PULL_EVENTS, False, 130.0)
    verdict = decide(pending, watch, records, 130.0, POLICY)
    assert verdict.kind is OutcomeKind.IMAGE_PULL_FAILED and verdict.stop
    assert "ErrImagePull" in (verdict.reason or "") and "for 120 s" in (verdict.reason or "")
    assert records.events == PULL_EVENTS and verdict.events, "the table goes with it"


def test_a_pull_that_recovers_restarts_the_window() -> None:
    records = with_events(Records(), PULL_EVENTS, False, 10.0)
    records = with_events(records, "TYPE REASON\nNormal Pulled", False, 40.0)
    assert records.pull_failing_since is None
    records = with_events(records, PULL_EVENTS, False, 150.0)
    assert records.pull_failing_since == 150.0


# -- Running ------------------------------------------------------------------------------


def test_running_past_the_runtime_limit_is_stopped() -> None:
    watch = facts(Phase.RUNNING, since=5.0, runtime_limit=10.0)
    assert decide(session("Running"), watch, Records(), 14.9, POLICY) == WAIT
    verdict = decide(session("Running"), watch, Records(), 15.0, POLICY)
    assert verdict.kind is OutcomeKind.RUNTIME_EXCEEDED and verdict.stop
    assert wake_at(watch, Records(), POLICY) == 15.0


def test_policy_refuses_impossible_timings() -> None:
    with pytest.raises(ValueError, match="stuck_timeout=1"):
        Policy(stuck_grace=5, stuck_timeout=1)
    with pytest.raises(ValueError, match="events_interval=0"):
        Policy(events_interval=0)


# -- issue 18: the exit-file fast path -------------------------------------------------------


def test_an_exit_file_the_list_does_not_know_of_resolves_once_its_log_agrees() -> None:
    found = with_exit_file(Records(), 0, 5.0)
    running = facts(Phase.RUNNING)
    assert decide(session("Running"), running, found, 5.0, POLICY) == NEED_LOGS
    agreed = read(found, f"done\n{marker_line(0, 'abc')}\n", at=5.1, exists=True)
    verdict = decide(session("Running"), running, agreed, 5.1, POLICY)
    assert verdict.kind is OutcomeKind.SUCCEEDED and verdict.exit_code == 0
    failed = read(with_exit_file(Records(), 3, 5.0), marker_line(3, "abc"), at=5.1)
    verdict = decide(session("Pending"), facts(Phase.PENDING), failed, 5.1, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code == 3


def test_an_exit_file_alone_waits_for_the_list_and_the_list_overrides_it() -> None:
    # The log beside it does not end with the same exit line: the list decides.
    lone = read(with_exit_file(Records(), 0, 5.0), "no exit line here\n", at=5.1)
    assert decide(session("Running"), facts(Phase.RUNNING), lone, 5.1, POLICY) == WAIT
    # Read before the file was found: the log must be read again.
    stale = with_exit_file(read(Records(), marker_line(0, "abc"), at=1.0), 0, 5.0)
    assert decide(session("Running"), facts(Phase.RUNNING), stale, 5.0, POLICY) == NEED_LOGS
    # The list says Failed: a recorded 0 is a failure, whatever the fast path found.
    agreed = read(with_exit_file(Records(), 0, 5.0), marker_line(0, "abc"), at=5.1)
    agreed = with_events(agreed, "table", False, 5.1)
    verdict = decide(session("Failed"), facts(Phase.FAILED), agreed, 5.1, POLICY)
    assert verdict.kind is OutcomeKind.FAILED and verdict.exit_code is None


def test_an_exit_file_of_a_session_never_listed_needs_its_log_to_agree() -> None:
    # The fast path may find the file before the first listing shows the session.
    unlisted = facts(None)
    found = with_exit_file(Records(), 0, 5.0)
    assert decide(None, unlisted, found, 5.0, POLICY) == NEED_LOGS
    lone = read(found, "no exit line here\n", at=5.1)
    assert decide(None, unlisted, lone, 5.1, POLICY) == WAIT
    agreed = read(found, marker_line(0, "abc"), at=5.1)
    assert decide(None, unlisted, agreed, 5.1, POLICY).kind is OutcomeKind.SUCCEEDED
