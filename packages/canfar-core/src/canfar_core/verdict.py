"""The tracker's one rule: what a watched session's state means, as a pure function.

`decide(session, watch, records, now, policy)` takes what the tracker knows about one
session (its listing, or None when it is gone; the watch's timings; the records read so
far: exit file, the log's final line, events) and a clock reading, and returns a
`Verdict`: wait, read a record first (`need`), or resolve (and maybe delete) with a kind,
an exit code and a reason. Nothing here does I/O or reads a clock, so every rule has a
unit test that states it (tests/core/test_verdict.py), and the tracker is only the loop
that lists, reads what a verdict asks for, and acts on it.

The rules, in order:

- An exit code is believed only from the envelope: the exit file, or the exit line
  naming this session as the log's final line (`canfar_core.launch`). A recorded 0
  with phase `Failed` is a failure (something killed the session after, or the command
  printed the line itself), and is reported with no exit code so no engine reads 0.
- A session launched through the envelope with no record is a failure, never a
  success; when the boot line's sentence is in its log, or it ended `Completed`, or its
  state-dir log was never created, the reason says the envelope never ran and shows
  the log's first lines. Only a session watched with `enveloped=False` may succeed on
  phase `Completed` alone.
- Ended before the list knows (the exit-file fast path): while the last listing still
  shows `Pending` or `Running`, an exit file found in the state dir resolves the session
  only when the log file beside it ends with this session's exit line carrying the same
  code. The envelope writes that line, then the exit file, so both agree for every
  command that ended normally; when they do not, the list decides. Once the list shows
  a terminal phase, the rules for it apply (a recorded 0 with `Failed` is a failure),
  so a verdict never rests on the exit file alone when the list says otherwise.
- Gone from the list: resolved from the exit file (or the saved log's exit line),
  else `VANISHED`; a session missing within `vanish_grace` of its watch is waited on.
- `Pending` past `pending_timeout`: deleted, with its events. While `Pending`, events
  are read after `events_delay` and then every `events_interval`; an image pull that
  keeps failing (`ErrImagePull`/`ImagePullBackOff` in every read over
  `image_pull_window`) is deleted as `IMAGE_PULL_FAILED` long before the pending timeout.
- `Running` past `runtime_limit`: deleted as `RUNTIME_EXCEEDED`.
- `Terminating` or `Unknown` (a pod that never finishes terminating, a lost node): after
  `stuck_grace` the record decides; with none, after `stuck_timeout` the session is
  deleted as `STUCK` with its events. No watch waits forever without saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from canfar_core.diagnosis import image_pull_failed
from canfar_core.launch import BOOT_FAILURE
from canfar_core.models import Session
from canfar_core.outcome import OutcomeKind, classify_exit
from canfar_core.phase import Phase

LOG_HEAD_LINES = 12
# What a shell prints when the image has no base64 (dash, bash, busybox wordings).
_NO_BASE64 = re.compile(r"base64: (?:command )?not found|base64: No such file", re.IGNORECASE)
_STUCK_PHASES = (Phase.TERMINATING, Phase.UNKNOWN)


@dataclass(frozen=True)
class Policy:
    """The tracker's timings (seconds); see the module docstring for each rule."""

    vanish_grace: float = 5.0
    stuck_grace: float = 60.0
    stuck_timeout: float = 600.0
    events_delay: float = 10.0
    events_interval: float = 30.0
    image_pull_window: float = 180.0
    log_read_attempts: int = 5
    # Events read this recently count as current for a verdict that shows them.
    events_fresh: float = 2.0

    def __post_init__(self) -> None:
        for name in (
            "vanish_grace",
            "stuck_grace",
            "stuck_timeout",
            "events_delay",
            "events_interval",
            "image_pull_window",
            "events_fresh",
        ):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name}={value!r} is not allowed: a number of seconds >= 0.")
        if self.stuck_timeout < self.stuck_grace:
            raise ValueError(
                f"stuck_timeout={self.stuck_timeout!r} is not allowed: at least stuck_grace "
                f"({self.stuck_grace!r})."
            )
        if self.events_interval <= 0:
            raise ValueError(
                f"events_interval={self.events_interval!r} is not allowed: a positive "
                "number of seconds."
            )
        if self.log_read_attempts < 1:
            raise ValueError(
                f"log_read_attempts={self.log_read_attempts!r} is not allowed: at least 1."
            )


@dataclass(frozen=True)
class WatchFacts:
    """What the tracker knows about a watch itself (all times from the tracker's clock).

    `phase` is the last phase seen in the list (None before the first listing) and
    `phase_since` when it was first seen (the watch's start before any).
    """

    session_id: str
    enveloped: bool = True
    has_state_dir: bool = False
    pending_timeout: float | None = None
    runtime_limit: float | None = None
    watched_at: float = 0.0
    phase: Phase | None = None
    phase_since: float = 0.0


@dataclass(frozen=True)
class Records:
    """The records read for one session so far.

    `exit_file`: the code in `<state_dir>/<id>.exit`; `exit_file_seen_at`: when the
    fast path found it while the list still showed the session alive. `marker`: the
    code on the log's final line, if that line is this session's exit line.
    `logs_read_at`: when the log was last read (None: never); `log_failures`: reads
    that failed since. `log_file_exists`: for a state dir, whether the envelope created
    its log file. `events_read_at`, `events` (the table, None when there is none or no
    pod yet), `no_pod` (the events view said 404: nothing scheduled yet).
    `pull_failing_since`/`pull_seen_at`: the first and the latest read in an unbroken
    run of reads that showed an image pull failing.
    """

    exit_file: int | None = None
    exit_file_seen_at: float | None = None
    marker: int | None = None
    logs_read_at: float | None = None
    log_failures: int = 0
    log_head: str = ""
    log_file_exists: bool | None = None
    events_read_at: float | None = None
    events: str | None = None
    no_pod: bool = False
    pull_failing_since: float | None = None
    pull_seen_at: float | None = None

    @property
    def exit_code(self) -> int | None:
        """The recorded exit code (the exit file first, then the final exit line)."""
        return self.exit_file if self.exit_file is not None else self.marker


class Need(StrEnum):
    """A record a verdict needs read before it can be given."""

    LOGS = "logs"
    EVENTS = "events"


@dataclass(frozen=True)
class Verdict:
    """Wait (nothing set), read a record (`need`), or resolve with `kind`.

    `stop`: delete the session before resolving. `events`: attach the events table.
    """

    kind: OutcomeKind | None = None
    exit_code: int | None = None
    reason: str | None = None
    stop: bool = False
    need: Need | None = None
    events: bool = False

    @property
    def resolved(self) -> bool:
        """True when the verdict resolves the watch."""
        return self.kind is not None


WAIT = Verdict()
NEED_LOGS = Verdict(need=Need.LOGS)
NEED_EVENTS = Verdict(need=Need.EVENTS)


def decide(
    session: Session | None,
    watch: WatchFacts,
    records: Records,
    now: float,
    policy: Policy,
) -> Verdict:
    """The verdict for one watched session at `now` (see the module docstring)."""
    if session is None and watch.phase is None and records.exit_file_seen_at is not None:
        # Found by the fast path before any listing showed the session: as alive as a
        # Pending one, so the same two-record rule decides, never the file alone.
        verdict = _ended_unlisted(Phase.PENDING, watch, records, now, policy)
    elif session is None:
        verdict = _gone(watch, records, now, policy)
    else:
        phase = session.phase
        if phase.is_terminal:
            verdict = _finished(session, watch, records, now, policy)
        elif records.exit_file_seen_at is not None and phase in (Phase.PENDING, Phase.RUNNING):
            verdict = _ended_unlisted(phase, watch, records, now, policy)
        elif phase is Phase.PENDING:
            verdict = _pending(watch, records, now, policy)
        elif phase is Phase.RUNNING:
            verdict = _running(watch, now)
        else:
            verdict = _stuck(phase, watch, records, now, policy)
    if verdict.events and not _events_current(records, now, policy):
        return NEED_EVENTS
    return verdict


def _events_current(records: Records, now: float, policy: Policy) -> bool:
    read = records.events_read_at
    return read is not None and now - read <= policy.events_fresh


def _logs_read_since(records: Records, since: float, policy: Policy) -> bool:
    """Whether the log was read at or after `since` (or reading it keeps failing)."""
    if records.logs_read_at is not None and records.logs_read_at >= since:
        return True
    return records.log_failures >= policy.log_read_attempts


def _gone(watch: WatchFacts, records: Records, now: float, policy: Policy) -> Verdict:
    if records.exit_file is None and now - watch.watched_at < policy.vanish_grace:
        return WAIT  # a listing may lag behind a create
    if (
        records.exit_file is None
        and watch.has_state_dir
        and not _logs_read_since(records, watch.phase_since, policy)
    ):
        return NEED_LOGS  # the saved log may end with the exit line
    code = records.exit_code
    last = watch.phase or Phase.UNKNOWN
    if code is not None:
        return _from_record(code, last, watch)
    return Verdict(
        OutcomeKind.VANISHED,
        None,
        "the session disappeared (deleted, or removed after its retention) without "
        "recording an exit code",
    )


def _from_record(code: int, phase: Phase, watch: WatchFacts) -> Verdict:
    if code == 0 and phase is Phase.FAILED:
        return Verdict(
            OutcomeKind.FAILED,
            None,
            "the session ended Failed although its exit record says 0: it was killed "
            "after its command finished, or the command printed the exit line itself; "
            "not counted as a success",
            events=True,
        )
    kind, reason = classify_exit(code, phase, runtime_limit=watch.runtime_limit)
    return Verdict(kind, code, reason, events=kind is not OutcomeKind.SUCCEEDED)


def _finished(
    session: Session, watch: WatchFacts, records: Records, now: float, policy: Policy
) -> Verdict:
    phase = session.phase
    if records.exit_file is None and not _logs_read_since(records, watch.phase_since, policy):
        return NEED_LOGS
    code = records.exit_code
    if code is not None:
        return _from_record(code, phase, watch)
    if not watch.enveloped:
        if phase is Phase.COMPLETED:
            return Verdict(OutcomeKind.SUCCEEDED, 0, None)
        return Verdict(OutcomeKind.FAILED, None, _killed_reason(session), events=True)
    never_ran = envelope_never_ran(records, phase)
    if never_ran is not None:
        return Verdict(OutcomeKind.FAILED, None, never_ran, events=True)
    return Verdict(OutcomeKind.FAILED, None, _killed_reason(session), events=True)


def _killed_reason(session: Session) -> str:
    reason = (
        "the session failed without recording an exit code (killed, out of memory, its "
        "deadline passed, or the command could not start)"
    )
    if session.status_reason:
        reason += f" (server status: {session.status})"
    return reason


def envelope_never_ran(records: Records, phase: Phase) -> str | None:
    """Why an envelope session without an exit record never ran its script, if it did not.

    The evidence: the boot line's sentence (or a shell's `base64: not found`) in the
    log's first lines; phase `Completed`, which the envelope can only reach through its
    exit line; or, with a state dir, a log file the script never created.
    """
    head = records.log_head.strip()
    shown = head or "(nothing)"
    if BOOT_FAILURE in head or _NO_BASE64.search(head):
        return (
            "the launch envelope never ran: the image could not decode or run its launch "
            "script (the envelope needs /bin/sh and base64 in the image); the session's "
            f"log begins:\n{shown}"
        )
    if phase is Phase.COMPLETED:
        return (
            "the session ended Completed without the launch envelope's exit record, so the "
            "envelope never ran its script (its boot line was replaced, or the image's "
            "/bin/sh did not run it); not counted as a success. The session's log "
            f"begins:\n{shown}"
        )
    if records.log_file_exists is False:
        return (
            "the launch envelope never started: its log file in the state directory was "
            "never created (the session cannot see or write the state directory, or its "
            f"boot line failed); the session's log begins:\n{shown}"
        )
    return None


def _pending(watch: WatchFacts, records: Records, now: float, policy: Policy) -> Verdict:
    waited = now - watch.phase_since
    if watch.pending_timeout is not None and waited >= watch.pending_timeout:
        shown = records.events or (
            "(no events: the session was never scheduled; it is still queued)"
        )
        return Verdict(
            OutcomeKind.PENDING_TIMEOUT,
            None,
            f"still Pending after {watch.pending_timeout:g} s; events:\n{shown}",
            stop=True,
            events=True,
        )
    if image_pull_failing(records, policy):
        span = (records.pull_seen_at or now) - (records.pull_failing_since or now)
        return Verdict(
            OutcomeKind.IMAGE_PULL_FAILED,
            None,
            f"its image cannot be pulled: ErrImagePull/ImagePullBackOff in every events "
            f"read for {span:.0f} s (image_pull_window {policy.image_pull_window:g} s)",
            stop=True,
            events=True,
        )
    if events_due(watch, records, now, policy):
        return NEED_EVENTS
    return WAIT


def image_pull_failing(records: Records, policy: Policy) -> bool:
    """True when every events read over the window showed the image pull failing."""
    first, last = records.pull_failing_since, records.pull_seen_at
    return first is not None and last is not None and last - first >= policy.image_pull_window


def events_due(watch: WatchFacts, records: Records, now: float, policy: Policy) -> bool:
    """Whether a Pending session's events should be read now (a bounded rate)."""
    if now - watch.phase_since < policy.events_delay:
        return False
    read = records.events_read_at
    return read is None or read < watch.phase_since or now - read >= policy.events_interval


def _ended_unlisted(
    phase: Phase, watch: WatchFacts, records: Records, now: float, policy: Policy
) -> Verdict:
    """An exit file found while the last listing still shows the session alive."""
    seen = records.exit_file_seen_at
    assert seen is not None and records.exit_file is not None
    unread = records.logs_read_at is None or records.logs_read_at < seen
    if unread and records.log_failures < policy.log_read_attempts:
        return NEED_LOGS  # the log file beside it, on the same filesystem
    if records.marker == records.exit_file:
        # The command ended and said how; the pod's events would cost a request and,
        # with the pod still up, tell nothing about the command.
        return replace(_from_record(records.exit_file, phase, watch), events=False)
    # The two records of the envelope disagree: wait for the list, the authority.
    return _pending(watch, records, now, policy) if phase is Phase.PENDING else _running(watch, now)


def _running(watch: WatchFacts, now: float) -> Verdict:
    limit = watch.runtime_limit
    if limit is not None and now - watch.phase_since >= limit:
        return Verdict(
            OutcomeKind.RUNTIME_EXCEEDED,
            None,
            f"stopped after exceeding its runtime limit of {limit:g} s",
            stop=True,
        )
    return WAIT


def _stuck(
    phase: Phase, watch: WatchFacts, records: Records, now: float, policy: Policy
) -> Verdict:
    held = now - watch.phase_since
    if held < policy.stuck_grace:
        return WAIT
    if records.exit_file is None:
        # Read the log once the grace has passed, and once more before giving up.
        checkpoint = watch.phase_since + (
            policy.stuck_timeout if held >= policy.stuck_timeout else policy.stuck_grace
        )
        if not _logs_read_since(records, checkpoint, policy):
            return NEED_LOGS
    code = records.exit_code
    if code is not None:
        return _from_record(code, phase, watch)
    if held < policy.stuck_timeout:
        return WAIT
    return Verdict(
        OutcomeKind.STUCK,
        None,
        f"stayed {phase.value} for {held:.0f} s without recording an exit code (a pod "
        f"that does not finish terminating, or a lost node; stuck_timeout is "
        f"{policy.stuck_timeout:g} s); deleted",
        stop=True,
        events=True,
    )


def wake_at(watch: WatchFacts, records: Records, policy: Policy) -> float | None:
    """The earliest time a verdict may change with no new listing (None: no deadline)."""
    phase = watch.phase
    times: list[float] = []
    if phase is Phase.PENDING:
        if watch.pending_timeout is not None:
            times.append(watch.phase_since + watch.pending_timeout)
        due = watch.phase_since + policy.events_delay
        read = records.events_read_at
        if read is not None and read >= watch.phase_since:
            due = max(due, read + policy.events_interval)
        times.append(due)
    elif phase is Phase.RUNNING and watch.runtime_limit is not None:
        times.append(watch.phase_since + watch.runtime_limit)
    elif phase in _STUCK_PHASES:
        times += [watch.phase_since + policy.stuck_grace, watch.phase_since + policy.stuck_timeout]
    return min(times) if times else None


# -- updating records (pure, so the tracker's bookkeeping has unit tests too) ------------


def with_exit_file(records: Records, code: int, now: float) -> Records:
    """The records after the fast path found an exit file the list does not know of yet."""
    return replace(records, exit_file=code, exit_file_seen_at=now)


def with_events(records: Records, table: str | None, no_pod: bool, now: float) -> Records:
    """The records after an events read (`table` None when unreadable or empty)."""
    failing = image_pull_failed(table)
    return replace(
        records,
        events_read_at=now,
        events=table,
        no_pod=no_pod,
        pull_failing_since=(records.pull_failing_since or now) if failing else None,
        pull_seen_at=now if failing else None,
    )


def with_logs(
    records: Records,
    *,
    head: str,
    marker: int | None,
    now: float,
    file_exists: bool | None = None,
) -> Records:
    """The records after a log read: its first lines and the final exit line's code."""
    return replace(
        records,
        logs_read_at=now,
        log_failures=0,
        log_head=log_head(head),
        marker=marker,
        log_file_exists=file_exists if file_exists is not None else records.log_file_exists,
    )


def with_log_failure(records: Records) -> Records:
    """The records after a log read that failed."""
    return replace(records, log_failures=records.log_failures + 1)


def log_head(text: str, lines: int = LOG_HEAD_LINES) -> str:
    """The first `lines` lines of a log (what a never-ran message shows)."""
    return "\n".join(text.splitlines()[:lines])
