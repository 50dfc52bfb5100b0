"""What became of each replica, and the exit code of `canfar-run` itself.

The verdict is the one place a success is declared, so it is strict: a replica
succeeded only when its command recorded exit code 0 (the envelope's exit file or
final marker line, checked here again rather than taken on trust) and the session did
not end `Failed`. Everything else is a failure with a non-zero code: the command's own
when it recorded one (137 and 124 as they are), 124 when the runtime limit stopped it
without one, 125 when there is none to give (never started, vanished, the platform
failed it), 130/143 when the user interrupted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from canfar_core.launch import parse_exit_marker, read_exit_file
from canfar_core.outcome import TIMEOUT_EXIT_CODE, Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.run.stream import command_output

NO_EXIT_CODE = 125
LOG_TAIL_LINES = 20


@dataclass
class Attempt:
    """One session run for one replica."""

    number: int
    name: str
    session_id: str | None = None
    outcome: Outcome | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.monotonic)
    running_since: float | None = None
    finished_at: float | None = None
    finished_wall: datetime | None = None

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome and when it was known."""
        self.outcome = outcome
        self.finished_at = time.monotonic()
        self.finished_wall = datetime.now(UTC)

    def runtime(self) -> float | None:
        """Seconds the command ran: from Running (as seen here) to its end, else from
        the server's start time; None when it never started."""
        if self.outcome is None or self.finished_at is None:
            return None
        if self.running_since is not None:
            return max(0.0, self.finished_at - self.running_since)
        start = self.outcome.start_time
        if start is None or self.finished_wall is None:
            return None
        begun = start if start.tzinfo else start.replace(tzinfo=UTC)
        return max(0.0, (self.finished_wall - begun).total_seconds())


@dataclass
class ReplicaResult:
    """Every attempt of one replica, in order."""

    replica: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def last(self) -> Attempt | None:
        """The attempt that decides the replica's verdict."""
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class Verdict:
    """How one attempt ended, for the table, the JSON and the exit code."""

    success: bool
    exit_code: int
    recorded: int | None
    status: str
    reason: str | None


def recorded_exit(outcome: Outcome, state_dir: str | None) -> int | None:
    """The exit code the envelope recorded: its exit file, else its final log line."""
    code = read_exit_file(state_dir, outcome.session_id)
    return code if code is not None else parse_exit_marker(outcome.logs)


@dataclass(frozen=True)
class Judge:
    """Verdicts for one run: where exit files are, whether (and by which signal) it was
    interrupted, and the `--timeout` it ran with, for the reason of an exit code 124."""

    state_dir: str | None = None
    interrupted: int | None = None
    timeout: float | None = None

    def __call__(self, attempt: Attempt | None) -> Verdict:
        """The verdict of one attempt (see the module docstring)."""
        if attempt is None or (attempt.outcome is None and attempt.error is None):
            code = self.interrupted or NO_EXIT_CODE
            return Verdict(False, code, None, "not-run", "not run: interrupted first")
        if attempt.outcome is None:
            return Verdict(False, NO_EXIT_CODE, None, "error", attempt.error)
        outcome = attempt.outcome
        if outcome.kind is OutcomeKind.DELETED:
            code = self.interrupted or NO_EXIT_CODE
            return Verdict(False, code, None, outcome.kind.value, "deleted when interrupted")
        code = outcome.exit_code
        if code == TIMEOUT_EXIT_CODE and self.timeout is not None:
            reason = f"stopped after exceeding --timeout={self.timeout:g} s (exit code 124)"
            return Verdict(False, code, code, OutcomeKind.RUNTIME_EXCEEDED.value, reason)
        if code is not None and code != 0:
            return Verdict(False, code, code, outcome.kind.value, outcome.reason)
        if code == 0:
            if (
                outcome.success
                and outcome.phase is not Phase.FAILED
                and recorded_exit(outcome, self.state_dir) == 0
            ):
                return Verdict(True, 0, 0, outcome.kind.value, None)
            reason = (
                "the session ended Failed although its command recorded exit code 0"
                if outcome.phase is Phase.FAILED
                else "the session finished but no exit code of its command could be read "
                "(its log was unreadable), so it is not taken for a success"
            )
            return Verdict(False, NO_EXIT_CODE, None, OutcomeKind.FAILED.value, reason)
        fallback = (
            TIMEOUT_EXIT_CODE if outcome.kind is OutcomeKind.RUNTIME_EXCEEDED else NO_EXIT_CODE
        )
        reason = outcome.reason or "no exit code was recorded"
        return Verdict(False, fallback, None, outcome.kind.value, reason)

    def exit_status(self, results: list[ReplicaResult]) -> int:
        """`canfar-run`'s exit code: 0 only when every replica succeeded.

        Like srun, the highest code among the replicas; after an interrupt, 128 + signal.
        """
        if self.interrupted:
            return self.interrupted
        verdicts = [self(r.last) for r in results]
        if verdicts and all(v.success for v in verdicts):
            return 0
        return max((v.exit_code for v in verdicts if not v.success), default=NO_EXIT_CODE)


def format_runtime(seconds: float | None) -> str:
    """`0.8s`, `42s`, `12m04s`, `3h05m`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def table(results: list[ReplicaResult], judge: Judge) -> str:
    """The summary table: replica, session, exit code, runtime, reason."""
    show_attempts = any(len(r.attempts) > 1 for r in results)
    head = ["replica", "session", "exit", "runtime"] + (["attempts"] if show_attempts else [])
    rows = []
    for result in results:
        last = result.last
        verdict = judge(last)
        row = [
            str(result.replica),
            (last.session_id if last else None) or "-",
            str(verdict.recorded) if verdict.recorded is not None else "-",
            format_runtime(last.runtime() if last else None),
        ]
        if show_attempts:
            row.append(str(len(result.attempts)))
        rows.append([*row, _first_line(verdict.reason)])
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + "  reason"]
    for row in rows:
        pairs = zip(row[:-1], widths, strict=True)
        cells = [c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(pairs)]
        lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
    return "\n".join(line.rstrip() for line in lines)


def headline(results: list[ReplicaResult], judge: Judge) -> str:
    """`19 of 20 replicas succeeded; failed: 7` (the line above the table)."""
    verdicts = [judge(r.last) for r in results]
    failed = [str(r.replica) for r, v in zip(results, verdicts, strict=True) if not v.success]
    text = f"{len(results) - len(failed)} of {len(results)} replicas succeeded"
    return f"{text}; failed: {', '.join(failed)}" if failed else text


def as_json(results: list[ReplicaResult], judge: Judge) -> str:
    """The final report for scripts (one JSON document)."""
    replicas = []
    verdicts = []
    for result in results:
        last = result.last
        verdict = judge(last)
        verdicts.append(verdict)
        replicas.append(
            {
                "replica": result.replica,
                "session": last.session_id if last else None,
                "name": last.name if last else None,
                "success": verdict.success,
                "status": verdict.status,
                "exit_code": verdict.recorded,
                "runtime_seconds": _rounded(last.runtime() if last else None),
                "reason": verdict.reason,
                "log_tail": _tail(last.outcome) if last and last.outcome else "",
                "attempts": [_attempt_json(a, judge) for a in result.attempts],
            }
        )
    report = {
        "exit_code": judge.exit_status(results),
        "interrupted": bool(judge.interrupted),
        "succeeded": sum(v.success for v in verdicts),
        "failed": sum(not v.success for v in verdicts),
        "replicas": replicas,
    }
    return json.dumps(report, indent=2)


def detached_json(results: list[ReplicaResult]) -> str:
    """What `--detach --json` prints: each replica's session, or why it has none."""
    replicas = [
        {
            "replica": r.replica,
            "session": r.last.session_id if r.last else None,
            "name": r.last.name if r.last else None,
            "error": r.last.error if r.last else "not created",
        }
        for r in results
    ]
    return json.dumps({"replicas": replicas}, indent=2)


def _attempt_json(attempt: Attempt, judge: Judge) -> dict[str, object]:
    verdict = judge(attempt)
    return {
        "session": attempt.session_id,
        "name": attempt.name,
        "success": verdict.success,
        "status": verdict.status,
        "exit_code": verdict.recorded,
        "runtime_seconds": _rounded(attempt.runtime()),
        "reason": verdict.reason,
    }


def _tail(outcome: Outcome) -> str:
    lines = command_output(outcome.logs).rstrip("\n").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
