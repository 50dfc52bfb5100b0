"""Create, watch, stream, retry, and delete on interrupt: the replicas of one run.

Every session this run creates is recorded the moment the server answers (a create
in flight when Ctrl-C arrives is allowed to finish, so its id is known), is watched
by one `SessionTracker`, and is deleted on interrupt. A final sweep by name catches a
session whose create answer never arrived: every attempt has a unique name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from canfar_core.client import AsyncCanfarClient
from canfar_core.errors import CanfarError, TrackerOutageError
from canfar_core.launch import read_exit_file
from canfar_core.outcome import Outcome
from canfar_core.refusals import is_refusal, refusal_sentence
from canfar_core.run.options import PROG, UsageError
from canfar_core.run.plan import Plan
from canfar_core.run.progress import QueueProgress
from canfar_core.run.report import Attempt, Judge, ReplicaResult
from canfar_core.run.stream import LogStreamer
from canfar_core.runtime_limit import runtime_backstop
from canfar_core.tracker import SessionTracker


@dataclass(frozen=True)
class Where:
    """The server and the credentials' origin, for refusal sentences."""

    where: str
    source: str


class Runner:
    """Run (or attach to) the replicas of one `canfar-run` invocation."""

    def __init__(
        self,
        client: AsyncCanfarClient,
        tracker: SessionTracker,
        streamer: LogStreamer,
        progress: QueueProgress,
        *,
        say: Callable[[str], None],
        where: Where,
        state_dir: str | None,
        pending_timeout: float | None = None,
        timeout: float | None = None,
        retries: int = 0,
        max_running: int | None = None,
    ) -> None:
        self.client = client
        self.tracker = tracker
        self.streamer = streamer
        self.progress = progress
        self.say = say
        self.where = where
        self.state_dir = state_dir
        self.pending_timeout = pending_timeout
        self.timeout = timeout
        # The tracker's limit is a backstop behind the envelope's own `timeout`.
        self.runtime_limit = runtime_backstop(timeout)
        self.retries = retries
        self.max_running = max_running
        self.results: list[ReplicaResult] = []
        self.created: dict[str, Attempt] = {}
        self.names: set[str] = set()
        self.interrupted: int | None = None
        self.abort: str | None = None
        self._creates: set[asyncio.Future[str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._count = 1

    # -- entry points ----------------------------------------------------------------------

    async def run(self, plan: Plan, *, detach: bool = False) -> list[ReplicaResult]:
        """Run every replica of `plan` (only create them, with `detach`)."""
        self._count = plan.replicas
        slots = asyncio.Semaphore(self.max_running or plan.replicas)
        self.results = [ReplicaResult(i) for i in range(1, plan.replicas + 1)]
        if plan.replicas > 1 and not detach:
            at_once = (
                f", at most {self.max_running} at a time"
                if self.max_running and self.max_running < plan.replicas
                else ""
            )
            self.say(f"{PROG}: running {plan.replicas} replicas of {plan.stem}{at_once}.")
        jobs = [self._replica(plan, result, slots, detach) for result in self.results]
        await self._run_all(jobs)
        return self.results

    async def attach(self, session_ids: tuple[str, ...]) -> list[ReplicaResult]:
        """Wait for sessions created earlier (by `--detach`), in the order given."""
        listed = {s.id: s for s in await self.client.list_sessions()}
        for session_id in session_ids:
            if session_id not in listed and read_exit_file(self.state_dir, session_id) is None:
                raise UsageError(
                    f"--attach={session_id!r} is not allowed: no such session is listed "
                    "(it never existed, was deleted, or finished over an hour ago)."
                )
        self._count = len(session_ids)
        self.results = []
        jobs = []
        for label, session_id in enumerate(session_ids, start=1):
            session = listed.get(session_id)
            attempt = Attempt(1, (session.name if session else None) or session_id)
            attempt.session_id = session_id
            self.created[session_id] = attempt
            result = ReplicaResult(label, [attempt])
            self.results.append(result)
            jobs.append(self._watch(attempt, label))
        await self._run_all(jobs)
        return self.results

    def interrupt(self, code: int) -> None:
        """Stop everything (Ctrl-C, SIGTERM); `cleanup` then deletes the sessions."""
        if self.interrupted is None:
            self.interrupted = code
            for task in self._tasks:
                task.cancel()

    # -- the work --------------------------------------------------------------------------

    async def _run_all(self, jobs: list) -> None:
        helpers = [
            asyncio.ensure_future(self.streamer.run()),
        ]
        self._tasks = [asyncio.ensure_future(job) for job in jobs]
        if self.stopping:  # interrupted before the tasks existed to be cancelled
            for task in self._tasks:
                task.cancel()
        try:
            if self._tasks:
                await asyncio.wait(self._tasks)
            for task in self._tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    async def _replica(
        self, plan: Plan, result: ReplicaResult, slots: asyncio.Semaphore, detach: bool
    ) -> None:
        for number in range(1, self.retries + 2):
            async with slots:
                if self.stopping:
                    return
                attempt = await self._attempt(plan, result, number)
                if attempt.session_id is not None and not detach:
                    await self._watch(attempt, result.replica)
            if detach or self.stopping:
                return
            verdict = Judge(self.state_dir, None, self.timeout)(attempt)
            if verdict.success or number > self.retries:
                return
            who = self._who(result.replica, attempt.session_id)
            reason = (verdict.reason or "failed").splitlines()[0]
            self.say(
                f"{PROG}: {who} failed ({reason}); retrying, attempt {number + 1} of "
                f"{self.retries + 1}."
            )

    async def _attempt(self, plan: Plan, result: ReplicaResult, number: int) -> Attempt:
        # Replicas share one name, `<name>-<i>`, as the official client names them; a
        # retry gets a fresh one, so that no two attempts ever share a name.
        base = plan.spec.name if number == 1 else plan.new_name()
        name = f"{base}-{result.replica}" if plan.replicas > 1 else base
        attempt = Attempt(number, name)
        result.attempts.append(attempt)
        self.names.add(name)
        spec = plan.spec_for(base)
        if plan.replicas > 1:
            create = self.client.create_replica(spec, result.replica, plan.replicas)
        else:
            # The official client sends REPLICA_ID=1, REPLICA_COUNT=1 for one session too.
            single = spec.with_env({"REPLICA_ID": "1", "REPLICA_COUNT": "1"})
            create = self.client.create(single, validate=False)
        task: asyncio.Future[str] = asyncio.ensure_future(create)
        self._creates.add(task)
        task.add_done_callback(partial(self._created, attempt))
        try:
            # An interrupt must not orphan a create in flight: it runs on, and its
            # answer is recorded by `_created` for the cleanup to delete.
            session_id = await asyncio.shield(task)
        except CanfarError as exc:
            if is_refusal(exc):
                self._stop(refusal_sentence(exc, where=self.where.where, source=self.where.source))
            attempt.error = f"the session could not be created: {exc}"
            return attempt
        attempt.session_id = session_id
        self.created[session_id] = attempt
        return attempt

    def _created(self, attempt: Attempt, task: asyncio.Future[str]) -> None:
        self._creates.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        known = attempt.session_id is not None
        attempt.session_id = task.result()
        self.created[attempt.session_id] = attempt
        if self._count == 1 and not known:
            self.say(f"{PROG}: session {attempt.session_id} ({attempt.name}) created.")

    async def _watch(self, attempt: Attempt, label: int) -> None:
        session_id = attempt.session_id
        assert session_id is not None
        self.tracker.watch(
            session_id,
            name=attempt.name,
            state_dir=self.state_dir,
            pending_timeout=self.pending_timeout,
            runtime_limit=self.runtime_limit,
            on_progress=self.progress.on_progress,
        )
        self.progress.track(session_id, self._who(label, session_id))
        follow = self.streamer.follow(label, session_id)
        outcome: Outcome | None = None
        try:
            outcome = await self.tracker.wait(session_id)
        except TrackerOutageError as exc:
            attempt.error = (
                f"{exc}; the session may still be running (`{PROG} --attach {session_id}` "
                "waits for it again)"
            )
        finally:
            self.progress.untrack(session_id)
            attempt.running_since = self.progress.running_since.get(session_id)
        await self.streamer.finish(follow, outcome)
        if outcome is not None:
            attempt.finish(outcome)

    def _who(self, label: int, session_id: str | None) -> str:
        session = f"session {session_id}" if session_id else "a session being created"
        return session if self._count == 1 else f"replica {label} ({session})"

    def _stop(self, message: str) -> None:
        if self.abort is None:
            self.abort = message
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    @property
    def stopping(self) -> bool:
        """True once interrupted or aborted: nothing new is started."""
        return self.interrupted is not None or self.abort is not None

    # -- cleanup ---------------------------------------------------------------------------

    async def cleanup(self) -> tuple[list[str], list[str]]:
        """Delete every session of this run; return (deleted, could not delete)."""
        if self._creates:
            await asyncio.wait(set(self._creates))  # their answers register their ids
        ids = list(self.created)
        outcomes = await asyncio.gather(
            *(self.tracker.cancel(i) for i in ids), return_exceptions=True
        )
        for session_id, outcome in zip(ids, outcomes, strict=True):
            attempt = self.created[session_id]
            if isinstance(outcome, Outcome) and attempt.outcome is None:
                attempt.finish(outcome)
        # The tracker logs a failed delete and goes on; the list says what is left, and
        # also shows a session whose create answer was lost (found by its unique name).
        failed: dict[str, str] = {}
        try:
            left = [
                s
                for s in await self.client.list_sessions(type="headless")
                if s.name in self.names or s.id in self.created
            ]
        except CanfarError as exc:
            left = []
            failed = {i: str(exc) for i in ids}
        for session in left:
            try:
                await self.client.delete(session.id)
            except CanfarError as exc:
                failed[session.id] = str(exc)
        deleted = [i for i in [*ids, *(s.id for s in left)] if i not in failed]
        return list(dict.fromkeys(deleted)), list(failed)
