"""Watch any number of sessions with one list request per tick.

Polling `GET /session/{id}` per job (what users script today) costs N requests per
tick; the tracker asks `GET /session?type=headless` once and resolves every watched
session from it. The interval adapts: short while phases change, backing off while
idle, capped far below the one-hour retention of finished sessions. Logs are read the
moment a terminal phase is seen, before anything can delete the session.

What a session's state *means* is one pure function, `canfar_core.verdict.decide`;
this module is the loop around it: list, keep each watch's records (exit file, the
ends of its log, events), read what a verdict asks for, act on the verdict. Beyond
the rules there:

- A reply that cannot be read (a proxy's HTML page with 200, a cut or empty body) is an
  outage like an unreachable server: one warning, a reminder each minute, and the last
  known state is kept until `outage_seconds`. One odd item in the list is skipped (or
  its odd fields ignored) with one warning; every other session still resolves.
- A 401 or 403 is not an outage: credentials do not heal by waiting, so every watch
  fails at once with `CredentialsRefusedError`, worded by `canfar_core.refusals` and
  naming the sessions that may still be running.
- Memory stays flat: only a bounded tail (and the first lines) of each log is kept.
  With a state dir the envelope tees the whole log to a file there and only its ends
  are read; without one the log is streamed from the API to `log_path`, if the watch
  names one, keeping the tail.
- The exit-file fast path (`exit_scan_interval`): sessions launched with a state dir
  write `<id>.exit` there as the envelope's last act, so every `exit_scan_interval`
  seconds the tracker reads each state directory once (one `scandir`, not a stat per
  session, so thousands of sessions on a network filesystem cost one read) and resolves
  the watches whose exit file appeared, from that file and the log file beside it,
  without an API request (`decide`'s fast-path rule: both records must agree). The
  list stays the authority for everything else (phases, vanished sessions, sessions
  without a state dir); while every watch has a state dir it is read at
  `max_interval` (the user's status interval) and at no other time, so the deadlines
  of the verdict rules are checked at those list ticks, at most one interval late.
  A list tick runs as a task of its own and scans go on while it reads events or logs
  (a watch one of them is advancing is left to it); they wait only while the list
  request itself is in flight, so a phase the list already shows comes first. One
  exception: a tick waiting on the events of a session whose exit file appears stops
  waiting (the read is cancelled, the events are moot once the command has ended), and
  resolves it from the file at once rather than after a busy service answers.
- While a session is Pending its events are read at a bounded rate, never per tick;
  a hook (`on_progress`) hears of phase changes and of a waiting session's reason, once
  and again only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from canfar_core.client import AsyncCanfarClient
from canfar_core.diagnosis import Evidence, diagnose
from canfar_core.errors import (
    CanfarError,
    CredentialsRefusedError,
    SessionNotFoundError,
    TrackerOutageError,
)
from canfar_core.launch import parse_exit_marker, read_exit_file
from canfar_core.logtail import DEFAULT_TAIL_BYTES, LogCapture, TailBuffer, read_file
from canfar_core.models import Session
from canfar_core.outcome import Outcome, OutcomeKind
from canfar_core.phase import Phase
from canfar_core.progress import Progress, ProgressHook, ProgressKind
from canfar_core.refusals import is_refusal, refusal_sentence, where_of
from canfar_core.verdict import (
    Need,
    Policy,
    Records,
    Verdict,
    WatchFacts,
    decide,
    envelope_never_ran,
    wake_at,
    with_events,
    with_exit_file,
    with_log_failure,
    with_logs,
)

log = logging.getLogger(__name__)

RETENTION_SECONDS = 3600
MAX_INTERVAL_CAP = RETENTION_SECONDS / 6
LOG_READ_TICKS = 5
OUTAGE_REMINDER_SECONDS = 60.0
# Reads a verdict may ask for in one tick (logs, then events), before it must settle.
_READS_PER_TICK = 3


@dataclass
class _Watch:
    session_id: str
    name: str | None
    state_dir: str | None
    pending_timeout: float | None
    runtime_limit: float | None
    enveloped: bool
    log_path: Path | None
    on_progress: ProgressHook | None
    future: asyncio.Future[Outcome]
    watched_at: float
    phase: Phase | None = None
    phase_since: float = 0.0
    session: Session | None = None
    records: Records = field(default_factory=Records)
    capture: LogCapture | None = None
    reason_key: tuple[str, str] | None = None
    deleting: OutcomeKind | None = None
    resolving: bool = False
    # Being advanced by a list tick or an exit scan (they run side by side): the other
    # leaves the watch alone until that is done, except to abandon `events_read`.
    busy: bool = False
    # The events request a tick is waiting on (a Pending session's, or for a failure's
    # table): an exit file found meanwhile makes it moot, so the scan cancels it rather
    # than wait for a busy service.
    events_read: asyncio.Task[str] | None = None

    def facts(self) -> WatchFacts:
        return WatchFacts(
            session_id=self.session_id,
            enveloped=self.enveloped,
            has_state_dir=self.state_dir is not None,
            pending_timeout=self.pending_timeout,
            runtime_limit=self.runtime_limit,
            watched_at=self.watched_at,
            phase=self.phase,
            phase_since=self.phase_since,
        )


def exit_file_names(state_dir: str) -> frozenset[str]:
    """The names of the exit files in `state_dir`: one directory read, no stat per file."""
    try:
        with os.scandir(state_dir) as entries:
            return frozenset(e.name for e in entries if e.name.endswith(".exit"))
    except OSError:
        return frozenset()


def _cancelled_from_outside() -> bool:
    """Whether the running task itself is being cancelled (not only what it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Refused(Exception):
    """Carries a 401/403 met while reading a record up to the tick, which stops all."""

    def __init__(self, error: CanfarError) -> None:
        super().__init__(str(error))
        self.error = error


class SessionTracker:
    """Resolve watched sessions to `Outcome`s from one list request per tick.

    `outage_seconds`: how long the list may fail before every watch fails with
    TrackerOutageError (until then the last known state is kept); `outcome()` then
    reports OutcomeKind.LOST. `vanish_grace`: how long after `watch()` a session may be
    missing from the list (without an exit file) before it counts as vanished, in case a
    listing lags behind a create. `stuck_grace`/`stuck_timeout`: how long a session may
    stay `Terminating`/`Unknown` before its exit record decides, and before one without
    a record is deleted as STUCK. `events_delay`/`events_interval`: when a Pending
    session's events are first read, and how often after; `image_pull_window`: how long
    an image pull may keep failing before the session is deleted as IMAGE_PULL_FAILED.
    `exit_scan_interval`: seconds between reads of the state directories for exit
    files (None: off; see the module docstring). `log_tail_bytes`: how much of each
    log's end is kept in memory. `on_progress`: a
    hook for every watch (see `canfar_core.progress`). `clock`: seconds, monotonic
    (tests inject one).
    """

    def __init__(
        self,
        client: AsyncCanfarClient,
        *,
        min_interval: float = 0.5,
        max_interval: float = 15.0,
        backoff: float = 1.5,
        outage_seconds: float = 600.0,
        vanish_grace: float = 5.0,
        stuck_grace: float = 60.0,
        stuck_timeout: float = 600.0,
        events_delay: float = 10.0,
        events_interval: float = 30.0,
        image_pull_window: float = 180.0,
        log_tail_bytes: int = DEFAULT_TAIL_BYTES,
        exit_scan_interval: float | None = None,
        on_progress: ProgressHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if exit_scan_interval is not None and not 0 < exit_scan_interval <= max_interval:
            raise ValueError(
                f"exit_scan_interval={exit_scan_interval!r} is not allowed: more than 0 and "
                f"at most max_interval ({max_interval:g} s), or None to turn the fast path off."
            )
        if not 0 < min_interval <= max_interval <= MAX_INTERVAL_CAP:
            raise ValueError(
                f"min_interval={min_interval}, max_interval={max_interval} are not allowed: "
                f"0 < min_interval <= max_interval <= {MAX_INTERVAL_CAP:g} s."
            )
        if log_tail_bytes < 1024:
            raise ValueError(
                f"log_tail_bytes={log_tail_bytes!r} is not allowed: at least 1024 bytes."
            )
        self.client = client
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.backoff = backoff
        self.outage_seconds = outage_seconds
        self.policy = Policy(
            vanish_grace=vanish_grace,
            stuck_grace=stuck_grace,
            stuck_timeout=stuck_timeout,
            events_delay=events_delay,
            events_interval=events_interval,
            image_pull_window=image_pull_window,
            log_read_attempts=LOG_READ_TICKS,
        )
        self.log_tail_bytes = log_tail_bytes
        self.exit_scan_interval = exit_scan_interval
        self.scans = 0
        self._listed_at: float | None = None
        self.on_progress = on_progress
        self.clock = clock
        self.ticks = 0
        self.events_reads = 0
        self.interval = min_interval
        self.refusal: CredentialsRefusedError | None = None
        self._watches: dict[str, _Watch] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._listing: asyncio.Task[None] | None = None
        self._closing = False
        # A list has been started and its answer not yet applied: scans wait for it.
        self._awaiting_list = False
        self._outage_since: float | None = None
        self._outage_warned = 0.0
        self._tick_failed = False

    @property
    def vanish_grace(self) -> float:
        """Seconds a just-watched session may be missing from the list."""
        return self.policy.vanish_grace

    @vanish_grace.setter
    def vanish_grace(self, value: float) -> None:
        self.policy = replace(self.policy, vanish_grace=value)

    # -- public API ----------------------------------------------------------------------

    def watch(
        self,
        session_id: str,
        *,
        name: str | None = None,
        state_dir: str | None = None,
        pending_timeout: float | None = None,
        runtime_limit: float | None = None,
        enveloped: bool = True,
        log_path: str | Path | None = None,
        on_progress: ProgressHook | None = None,
    ) -> asyncio.Future[Outcome]:
        """Start watching a session; the future resolves to its Outcome.

        `enveloped`: the session runs through `canfar_core.launch.envelope` (the default,
        and what both plugins do), so only its exit record is believed; a session that
        ends without one is a failure. Pass False for a raw `cmd` session, whose
        `Completed` phase then counts as success. `log_path`: without a `state_dir`, where
        to stream the whole log when the session ends (only its tail is kept otherwise).
        `on_progress`: a hook for this watch only (called after the tracker's own).
        """
        existing = self._watches.get(session_id)
        if existing is not None:
            return existing.future
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if session_id in self._outcomes:
            future.set_result(self._outcomes[session_id])
            return future
        now = self.clock()
        self._watches[session_id] = _Watch(
            session_id,
            name,
            state_dir,
            pending_timeout,
            runtime_limit,
            enveloped,
            Path(log_path) if log_path is not None else None,
            on_progress,
            future,
            watched_at=now,
            phase_since=now,
        )
        self._ensure_running()
        self._poke()
        return future

    async def wait(self, session_id: str) -> Outcome:
        """Wait for a watched session's outcome."""
        if session_id in self._outcomes:
            return self._outcomes[session_id]
        watch = self._watches.get(session_id)
        if watch is None:
            raise KeyError(f"session {session_id} is not watched")
        return await asyncio.shield(watch.future)

    def outcome(self, session_id: str) -> Outcome | None:
        """The outcome if the session has finished, else None (never blocks)."""
        return self._outcomes.get(session_id)

    def phase(self, session_id: str) -> Phase | None:
        """The last phase seen for a watched session."""
        watch = self._watches.get(session_id)
        if watch is not None:
            return watch.phase or Phase.PENDING
        done = self._outcomes.get(session_id)
        return done.phase if done else None

    @property
    def watching(self) -> list[str]:
        """Ids still being watched (not yet resolved)."""
        return list(self._watches)

    async def cancel(self, session_id: str) -> Outcome:
        """Delete a watched session and resolve it as DELETED."""
        watch = self._watches.get(session_id)
        if watch is None:
            await self.client.delete(session_id)
            return self._outcomes.get(session_id) or Outcome(
                session_id, None, OutcomeKind.DELETED, Phase.UNKNOWN, None, "deleted"
            )
        return await self._stop(watch, OutcomeKind.DELETED, "deleted on request", None)

    def forget(self, session_id: str) -> None:
        """Drop a resolved outcome (keeps memory flat in long runs)."""
        self._outcomes.pop(session_id, None)

    async def aclose(self) -> None:
        """Stop the polling loop (watched sessions are left as they are)."""
        if self._task is not None:
            self._closing = True
            self._task.cancel()
            if self._wake is not None:
                self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._closing = False

    # -- loop ----------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="canfar-tracker")

    def _poke(self) -> None:
        self.interval = self.min_interval
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        """List when due (in a task of its own) and scan the state dirs meanwhile.

        A list tick can take long: it reads the events of every Pending session that
        is due, and on a busy service each read takes a while. The exit scan must not
        wait for it, or every end found in the state dir waits for the slowest events
        read of the tick (tens of seconds with a fan-out queued).
        """
        assert self._wake is not None
        try:
            # Not `while True`: Python 3.11's wait_for can swallow a cancellation that
            # races with the wake (the list task sets it as it ends), so `aclose` also
            # says so here.
            while not self._closing:
                if not self._watches and self._listing is None:
                    self._wake.clear()
                    await self._wake.wait()
                self._wake.clear()
                if self._listing is None and self._list_due():
                    self._listed_at = self.clock()
                    self._awaiting_list = True
                    self._listing = asyncio.get_running_loop().create_task(
                        self._list_step(), name="canfar-tracker-list"
                    )
                if self._scanning():
                    await self._guarded_step(self.scan_exit_files)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._next_sleep())
        finally:
            listing, self._listing = self._listing, None
            if listing is not None:
                listing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listing

    async def _list_step(self) -> None:
        """One list tick, then the next interval; wakes the loop to plan what follows."""
        try:
            changed = await self._guarded_step(self.tick)
            self.interval = (
                self.min_interval
                if changed
                else min(self.max_interval, self.interval * self.backoff)
            )
        finally:
            self._listing = None
            self._awaiting_list = False
            if self._wake is not None:
                self._wake.set()

    async def _guarded_step(self, step: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
        """Run a tick or a scan; a bug in one must not silently kill every watch."""
        try:
            changed = await step()
            self._tick_failed = False
            return changed
        except Exception as exc:
            if self._tick_failed:
                log.warning("Session tracker tick failed again (%s); continuing.", exc)
            else:
                log.exception("Session tracker tick failed; continuing.")
            self._tick_failed = True
            return False

    def _scanning(self) -> bool:
        """Whether the fast path is on and some watch has a state dir to scan."""
        return self.exit_scan_interval is not None and any(
            w.state_dir is not None for w in self._watches.values()
        )

    def _fast_path_covers_all(self) -> bool:
        """Whether every watch's end will be seen by the scan (then the list may be slow)."""
        return self.exit_scan_interval is not None and all(
            w.state_dir is not None for w in self._watches.values()
        )

    def _list_hold(self, now: float) -> float:
        """Seconds until a list may be made: never sooner than `min_interval` after the last.

        A burst of new watches (a hundred jobs submitted at once) or a deadline would
        otherwise list back to back; `min_interval` is also how an engine caps the list
        rate its user asked for (Snakemake's `--max-status-checks-per-second`).
        """
        if self._listed_at is None:
            return 0.0
        return max(0.0, self._listed_at + self.min_interval - now)

    def _list_due(self) -> bool:
        """Whether this wake lists: once `min_interval` has passed since the last list.

        While the fast path covers every watch, the list is read every `max_interval`
        (the user's interval) and at no other time: not after each change or new watch,
        and not when a deadline of some watch falls due (pending and runtime limits, a
        Pending session's events), which is checked at the next list tick instead, at
        most one interval late. Every end the list would bring sooner the state
        directory brings sooner still.
        """
        if self._listed_at is None:
            return True
        now = self.clock()
        if self._list_hold(now) > 0.01:
            return False
        if not self._fast_path_covers_all():
            return True
        return now - self._listed_at >= self.max_interval - 0.05

    def _next_sleep(self) -> float:
        """The interval, shortened so that a deadline of some watch is checked on time.

        Never shorter than the hold before the next list may be made, unless an exit
        scan is due first. While the fast path covers every watch, the next list is due
        `max_interval` after the last one and the next scan `exit_scan_interval` after
        this one.
        """
        now = self.clock()
        if self._listing is not None:
            # The list under way wakes the loop when it is done; only scans are due.
            scan = self.exit_scan_interval
            return scan if scan is not None and self._scanning() else self.max_interval
        if self._fast_path_covers_all() and self._listed_at is not None:
            assert self.exit_scan_interval is not None
            next_list = max(0.05, self._listed_at + self.max_interval - now)
            return min(next_list, self.exit_scan_interval)
        sleep = self.interval
        for watch in self._watches.values():
            due = wake_at(watch.facts(), watch.records, self.policy)
            if due is not None and due > (self._listed_at or 0.0) - 0.05:
                sleep = min(sleep, max(0.05, due - now + 0.05))
        sleep = max(sleep, self._list_hold(now))
        if self._scanning():
            assert self.exit_scan_interval is not None
            sleep = min(sleep, self.exit_scan_interval)
        return sleep

    async def scan_exit_files(self) -> bool:
        """The fast path: one directory read per state dir; resolve the watches that ended.

        Returns True when any watch resolved. Costs no API request (the log file beside
        the exit file is read from the same directory). While a list request is under
        way nothing is scanned: its answer comes first, so that a phase the list already
        shows (a pod that failed after its command) is not overtaken by the file; only
        the per-session reads that follow the answer (events, logs) run beside scans.
        """
        if self._awaiting_list:
            return False
        waiting: dict[str, list[_Watch]] = {}
        for watch in self._watches.values():
            if watch.state_dir is not None and self._scannable(watch):
                waiting.setdefault(watch.state_dir, []).append(watch)
        if not waiting:
            return False
        self.scans += 1
        found: list[_Watch] = []
        for state_dir, watches in waiting.items():
            names = await asyncio.to_thread(exit_file_names, state_dir)
            found += [w for w in watches if f"{w.session_id}.exit" in names]
        jobs = []
        now = self.clock()
        for watch in found:
            if watch.session_id not in self._watches or not self._scannable(watch):
                continue  # changed hands while the directory was read: the next scan
            code = read_exit_file(watch.state_dir, watch.session_id)
            if code is None:
                continue  # named but unreadable: the list decides later
            watch.records = with_exit_file(watch.records, code, now)
            if watch.busy:
                # A tick is waiting on this watch's events: the command has ended, so
                # they are moot. Its advance goes on from the exit file at once.
                assert watch.events_read is not None
                watch.events_read.cancel()
                continue
            watch.busy = True
            jobs.append(self._guarded(watch, self._advance(watch, watch.session)))
        if not jobs:
            return False
        try:
            results = await asyncio.gather(*jobs)
        except _Refused as refused:  # not from the state dir; kept for symmetry with tick
            self._refused(refused.error)
            return True
        return any(results)

    @staticmethod
    def _scannable(watch: _Watch) -> bool:
        """Whether a scan may take this watch's exit file now.

        Not once it has one or is being resolved; not while a tick advances it, unless
        all the tick is doing is waiting on its events (which the file makes moot).
        """
        if watch.records.exit_file is not None or watch.resolving:
            return False
        return not watch.busy or watch.events_read is not None

    async def tick(self) -> bool:
        """One poll: list once, update every watch. Returns True when anything changed."""
        if not self._watches:
            return False
        self.ticks += 1
        now = self.clock()
        try:
            listed = await self.client.list_sessions(type="headless")
        except CanfarError as exc:
            if is_refusal(exc):
                self._refused(exc)
                return True
            self._note_outage(exc, now)
            return False
        self._note_recovery(now)
        by_id = {s.id: s for s in listed}
        changed = False
        jobs = []
        for watch in list(self._watches.values()):
            if watch.resolving or watch.busy:
                continue  # being resolved, or advanced by a scan (the next tick sees it)
            session = by_id.get(watch.session_id)
            changed |= self._observe(watch, session, now)
            if self._quiet(watch, session, now):
                continue  # the verdict is WAIT with no I/O: skip the coroutine
            watch.busy = True
            jobs.append(self._guarded(watch, self._advance(watch, session)))
        self._awaiting_list = False  # every watch has this answer: scans may go on
        if jobs:
            try:
                results = await asyncio.gather(*jobs)
            except _Refused as refused:
                self._refused(refused.error)
                return True
            changed |= any(results)
        return changed

    def _observe(self, watch: _Watch, session: Session | None, now: float) -> bool:
        """Track the phase (and tell the hooks); True when it changed."""
        if session is None:
            return False
        watch.session = session
        phase = session.phase
        if phase is watch.phase:
            return False
        previous, since = watch.phase, watch.phase_since
        first_pending = previous is None and phase is Phase.PENDING
        watch.phase = phase
        watch.phase_since = watch.watched_at if first_pending else now
        self._emit(
            watch,
            Progress(
                kind=ProgressKind.PHASE,
                session_id=watch.session_id,
                name=watch.name or session.name,
                phase=phase,
                previous_phase=previous,
                seconds_in_phase=now - watch.phase_since,
                seconds_in_previous_phase=None if previous is None else now - since,
            ),
        )
        return True

    def _quiet(self, watch: _Watch, session: Session | None, now: float) -> bool:
        """True when nothing needs reading or doing for this watch on this tick."""
        if session is None or session.phase.is_terminal:
            return False
        if session.phase not in (Phase.PENDING, Phase.RUNNING):
            return False  # Terminating/Unknown: the exit file is worth a look
        verdict = decide(session, watch.facts(), watch.records, now, self.policy)
        return verdict.need is None and not verdict.resolved

    async def _advance(self, watch: _Watch, session: Session | None) -> bool:
        """Decide, reading the records a verdict asks for; act when it resolves."""
        verdict = Verdict()
        for _ in range(_READS_PER_TICK + 1):
            now = self.clock()
            self._read_exit_file(watch, session)
            verdict = decide(session, watch.facts(), watch.records, now, self.policy)
            if verdict.need is Need.LOGS:
                if not await self._read_logs(watch):
                    return False  # try again on a later tick
                continue
            if verdict.need is Need.EVENTS:
                await self._read_events(watch, session)
                continue
            break
        if not verdict.resolved or verdict.need is not None:
            return False
        await self._conclude(watch, session, verdict)
        return True

    async def _guarded(self, watch: _Watch, job: Coroutine[Any, Any, bool]) -> bool:
        """Run one watch's work; if it fails, the watch is tried again on the next tick.

        Without this, one unexpected error would leave the watch marked as resolving
        and its waiter blocked forever. A refusal (401/403) goes up to the tick. The
        caller marks the watch busy when it schedules `job`; this clears it.
        """
        try:
            return await job
        except _Refused:
            raise
        except Exception as exc:
            log.warning("Resolving session %s failed (%s); retrying.", watch.session_id, exc)
            if watch.session_id in self._watches:
                watch.resolving = False
                watch.deleting = None
            return False
        finally:
            watch.busy = False

    # -- records -------------------------------------------------------------------------

    def _read_exit_file(self, watch: _Watch, session: Session | None) -> None:
        if watch.state_dir is None or watch.records.exit_file is not None:
            return
        if session is not None and session.phase in (Phase.PENDING, Phase.RUNNING):
            return
        code = read_exit_file(watch.state_dir, watch.session_id)
        if code is not None:
            watch.records = replace(watch.records, exit_file=code)

    async def _read_logs(self, watch: _Watch) -> bool:
        """Read the ends of the log into the watch's records; False when that failed."""
        try:
            capture, file_exists = await self._capture_logs(watch)
        except (CanfarError, OSError) as exc:  # OSError: the log_path cannot be written
            if isinstance(exc, CanfarError) and is_refusal(exc):
                raise _Refused(exc) from None
            watch.records = with_log_failure(watch.records)
            log.warning(
                "Could not read the logs of session %s (attempt %d of %d): %s",
                watch.session_id,
                watch.records.log_failures,
                self.policy.log_read_attempts,
                exc,
            )
            return False
        watch.capture = capture
        watch.records = with_logs(
            watch.records,
            head=capture.head,
            marker=parse_exit_marker(capture.tail, watch.session_id),
            now=self.clock(),
            file_exists=file_exists,
        )
        return True

    async def _capture_logs(self, watch: _Watch) -> tuple[LogCapture, bool | None]:
        """The log's ends: from the state dir's file when there is one, else the API."""
        file_exists: bool | None = None
        if watch.state_dir is not None:
            path = Path(watch.state_dir) / f"{watch.session_id}.log"
            found = await asyncio.to_thread(read_file, path, self.log_tail_bytes)
            if found is not None:
                return found, True
            file_exists = False
        try:
            sink = TailBuffer(self.log_tail_bytes, path=watch.log_path)
        except OSError as exc:
            log.warning(
                "Cannot save the log of session %s to %s (%s); keeping only its tail.",
                watch.session_id,
                watch.log_path,
                exc,
            )
            sink = TailBuffer(self.log_tail_bytes)
        try:
            await self.client.stream_logs(watch.session_id, sink.write)
        finally:
            sink.close()
        return sink.capture(), file_exists

    async def _read_events(self, watch: _Watch, session: Session | None) -> None:
        """Read the events into the records; nothing is recorded if a scan abandons it."""
        now = self.clock()
        no_pod = False
        table: str | None = None
        self.events_reads += 1
        read = asyncio.ensure_future(self.client.events_table(watch.session_id))
        watch.events_read = read
        try:
            text = await read
            table = None if text.strip() in ("", "<none>") else text.rstrip("\n")
        except asyncio.CancelledError:
            if _cancelled_from_outside():
                raise
            return  # abandoned by a scan that found the exit file (`scan_exit_files`)
        except SessionNotFoundError:
            no_pod = True
        except CanfarError as exc:
            if is_refusal(exc):
                raise _Refused(exc) from None
            log.warning("Could not read events of session %s: %s", watch.session_id, exc)
        finally:
            watch.events_read = None
        watch.records = with_events(watch.records, table, no_pod, now)
        if session is not None and session.phase is Phase.PENDING:
            self._report_reason(watch, session, now)

    def _report_reason(self, watch: _Watch, session: Session, now: float) -> None:
        """Tell the hooks why a Pending session waits, once and when the reason changes."""
        diagnosis = diagnose(
            Evidence(
                phase=Phase.PENDING,
                events=watch.records.events,
                no_pod=watch.records.no_pod,
                seconds_in_phase=now - watch.phase_since,
            )
        )
        if diagnosis is None:
            return
        key = diagnosis.dedupe_key()
        if key == watch.reason_key:
            return
        watch.reason_key = key
        self._emit(
            watch,
            Progress(
                kind=ProgressKind.REASON,
                session_id=watch.session_id,
                name=watch.name or session.name,
                phase=Phase.PENDING,
                previous_phase=None,
                seconds_in_phase=now - watch.phase_since,
                diagnosis=diagnosis,
            ),
        )

    def _emit(self, watch: _Watch, progress: Progress) -> None:
        for hook in (self.on_progress, watch.on_progress):
            if hook is None:
                continue
            try:
                hook(progress)
            except Exception as exc:  # an engine's hook must not stop the tracker
                log.warning("A progress hook failed (%s: %s); ignored.", type(exc).__name__, exc)

    # -- outages and refusals ------------------------------------------------------------

    def _note_outage(self, exc: CanfarError, now: float) -> None:
        if self._outage_since is None:
            self._outage_since = self._outage_warned = now
            log.warning(
                "Cannot list sessions (%s); keeping the last known state for up to %g s.",
                exc,
                self.outage_seconds,
            )
        down = now - self._outage_since
        if now - self._outage_warned >= OUTAGE_REMINDER_SECONDS:
            self._outage_warned = now
            log.warning("Still cannot list sessions after %.0f s (%s).", down, exc)
        if down >= self.outage_seconds:
            error = TrackerOutageError(
                f"The session list has been unreadable for {down:.0f} s (limit "
                f"{self.outage_seconds:g} s); last error: {exc}"
            )
            for watch in list(self._watches.values()):
                self._finish_lost(watch, OutcomeKind.LOST, error)

    def _note_recovery(self, now: float) -> None:
        if self._outage_since is not None:
            log.warning(
                "The session list is readable again after %.0f s.", now - self._outage_since
            )
        self._outage_since = None
        self.refusal = None

    def _refused(self, exc: CanfarError) -> None:
        """Credentials refused mid-run: fail every watch now, naming what may still run."""
        config = self.client.config
        sentence = refusal_sentence(exc, where=where_of(config), source=config.source)
        running = sorted(
            w.session_id
            for w in self._watches.values()
            if not (w.phase is not None and w.phase.is_terminal)
        )
        still = ", ".join(running) if running else "none"
        message = (
            f"{sentence} Watching stopped; sessions that may still be running on CANFAR: {still}."
        )
        error = CredentialsRefusedError(message, sessions=running, cause=exc)
        self.refusal = error
        # Engines say this sentence themselves as they stop (it is every outcome's
        # reason and `tracker.refusal`); logging it here too would print it twice.
        log.debug("%s", message)
        for watch in list(self._watches.values()):
            self._finish_lost(watch, OutcomeKind.CREDENTIALS_REFUSED, error)

    def _finish_lost(self, watch: _Watch, kind: OutcomeKind, error: CanfarError) -> None:
        """Resolve a watch whose state is no longer known; its waiter gets `error`."""
        self._finish(watch, kind, str(error), None, None)
        if not watch.future.done():
            watch.future.set_exception(error)

    # -- resolution ----------------------------------------------------------------------

    async def _conclude(self, watch: _Watch, session: Session | None, verdict: Verdict) -> None:
        """Act on a verdict that resolves: keep the logs, delete if asked, resolve."""
        assert verdict.kind is not None
        if watch.deleting is not None or watch.session_id not in self._watches:
            return  # cancelled meanwhile: that resolution stands
        watch.resolving = True
        if verdict.stop:
            await self._stop(watch, verdict.kind, verdict.reason or "", verdict, verdict.events)
            return
        if (session is not None or watch.state_dir is not None) and not self._logs_current(watch):
            with contextlib.suppress(_Refused):
                await self._read_logs(watch)
        events = watch.records.events if verdict.events else None
        self._finish(watch, verdict.kind, verdict.reason, verdict.exit_code, events)

    def _logs_current(self, watch: _Watch) -> bool:
        read = watch.records.logs_read_at
        return read is not None and read >= watch.phase_since

    async def _stop(
        self,
        watch: _Watch,
        kind: OutcomeKind,
        reason: str,
        verdict: Verdict | None,
        with_events: bool = False,
    ) -> Outcome:
        """Save the logs, delete the session, resolve it with `kind`."""
        watch.resolving = True
        watch.deleting = kind
        if not self._logs_current(watch):
            with contextlib.suppress(_Refused):
                await self._read_logs(watch)
        try:
            await self.client.delete(watch.session_id)
        except CanfarError as exc:
            log.warning("Could not delete session %s: %s", watch.session_id, exc)
        code = read_exit_file(watch.state_dir, watch.session_id)
        if verdict is not None and verdict.exit_code is not None:
            code = verdict.exit_code
        events = watch.records.events if with_events else None
        return self._finish(watch, kind, reason, code, events)

    def _finish(
        self,
        watch: _Watch,
        kind: OutcomeKind,
        reason: str | None,
        code: int | None,
        events: str | None,
    ) -> Outcome:
        if watch.session_id not in self._watches and watch.session_id in self._outcomes:
            return self._outcomes[watch.session_id]  # resolved once already
        session = watch.session
        capture = watch.capture or LogCapture()
        phase = watch.phase or Phase.UNKNOWN
        records = watch.records
        never_ran = (
            watch.enveloped
            and kind is OutcomeKind.FAILED
            and code is None
            and records.exit_code is None
            and envelope_never_ran(records, phase) is not None
        )
        logs = capture.tail
        evidence = Evidence(
            phase=phase,
            kind=kind,
            exit_code=code,
            reason=reason,
            events=events,
            no_pod=records.no_pod,
            log_text=f"{capture.head}\n{logs}" if capture.truncated else logs,
            seconds_in_phase=self.clock() - watch.phase_since,
            never_ran=never_ran,
        )
        outcome = Outcome(
            session_id=watch.session_id,
            name=watch.name or (session.name if session else None),
            kind=kind,
            phase=phase,
            exit_code=code,
            reason=reason,
            logs=logs,
            events_table=events,
            start_time=session.start_time if session else None,
            image=session.image if session else None,
            log_path=capture.path,
            log_head=capture.head,
            log_truncated=capture.truncated,
            diagnosis=diagnose(evidence),
        )
        self._outcomes[watch.session_id] = outcome
        self._watches.pop(watch.session_id, None)
        lost = kind in (OutcomeKind.LOST, OutcomeKind.CREDENTIALS_REFUSED)
        if not watch.future.done() and not lost:
            watch.future.set_result(outcome)
        log.debug("Session %s resolved: %s", watch.session_id, outcome.describe())
        return outcome
