"""`canfar-run`: the entry point, signals, and what is printed at the end.

stdout carries the command's output (or, with `--json`, only the final report, the
output then going to stderr); everything `canfar-run` itself says goes to stderr, so
`canfar-run -- cmd > out.txt` captures what `cmd` printed and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig, resolve_config
from canfar_core.errors import CanfarError, ConfigurationError
from canfar_core.local import events_timing, runs_on_this_machine
from canfar_core.refusals import is_refusal, refusal_sentence
from canfar_core.run.options import PROG, RunOptions, UsageError, parse_options
from canfar_core.run.plan import make_plan
from canfar_core.run.progress import QueueProgress
from canfar_core.run.report import (
    NO_EXIT_CODE,
    Judge,
    ReplicaResult,
    as_json,
    detached_json,
    headline,
    table,
)
from canfar_core.run.runner import Runner, Where
from canfar_core.run.stream import LogStreamer, Output
from canfar_core.tracker import SessionTracker

USAGE_EXIT_CODE = 2
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def say(text: str) -> None:
    """One line on stderr, at once."""
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `canfar-run` with `argv` (default: the process's); return the exit code."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        options = parse_options(sys.argv[1:] if argv is None else list(argv))
    except UsageError as exc:
        say(f"{PROG}: {exc}")
        return USAGE_EXIT_CODE
    try:
        return asyncio.run(_main(options))
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted before any session was created.")
        return SIGNAL_EXIT[signal.SIGINT]


async def _main(options: RunOptions) -> int:
    try:
        config = resolve_config(url=options.url)
    except ConfigurationError as exc:
        say(f"{PROG}: {exc}")
        return USAGE_EXIT_CODE
    where = Where(
        "the embedded platform" if config.is_local else config.url,
        config.source,
    )
    signals = _Signals()
    signals.install()
    try:
        async with AsyncCanfarClient(config) as client:
            return await _with_client(client, config, options, where, signals)
    except asyncio.CancelledError:
        if signals.code is None:
            raise
        say(f"{PROG}: interrupted before any session was created.")
        return signals.code
    except UsageError as exc:
        say(f"{PROG}: {exc}")
        return USAGE_EXIT_CODE
    except CanfarError as exc:
        if is_refusal(exc):
            say(f"{PROG}: {refusal_sentence(exc, where=where.where, source=where.source)}")
            return USAGE_EXIT_CODE
        if isinstance(exc, ConfigurationError):
            say(f"{PROG}: {exc}")
            return USAGE_EXIT_CODE
        say(f"{PROG}: cannot use CANFAR at {where.where}: {exc}")
        return NO_EXIT_CODE
    finally:
        signals.remove()


async def _with_client(
    client: AsyncCanfarClient,
    config: CanfarConfig,
    options: RunOptions,
    where: Where,
    signals: _Signals,
) -> int:
    local = runs_on_this_machine(config)
    plan = None
    if not options.attach:
        plan = await make_plan(client, options, config, say, cwd=Path.cwd())
    count = len(options.attach) if options.attach else options.replicas
    events_delay, events_interval = events_timing(same_machine=local)
    tracker = SessionTracker(
        client,
        min_interval=0.3 if local else 1.0,
        max_interval=1.0 if local else 10.0,
        events_delay=events_delay,
        events_interval=events_interval,
    )
    output = Output(
        sys.stderr if options.json else sys.stdout,
        width=len(str(count)) if count > 1 else None,
    )
    state_dir = str(options.state_dir) if options.state_dir else None
    streamer = LogStreamer(
        client,
        output,
        state_dir=state_dir,
        phase_of=tracker.phase,
        interval=0.5 if local else 2.0,
        per_second=20.0 if local else 4.0,
        say=say,
    )
    runner = Runner(
        client,
        tracker,
        streamer,
        QueueProgress(say),
        say=say,
        where=where,
        state_dir=state_dir,
        pending_timeout=options.pending_timeout,
        timeout=options.timeout,
        retries=options.retries,
        max_running=options.max_running,
    )
    signals.runner = runner
    try:
        if plan is not None:
            results = await runner.run(plan, detach=options.detach)
        else:
            results = await runner.attach(options.attach)
    except UsageError:
        raise  # refused before anything was created (an --attach id that is not listed)
    except BaseException:
        # A bug or an unexpected error: the sessions are still deleted, then it surfaces.
        if not runner.stopping:
            runner.interrupt(NO_EXIT_CODE)
        await _clean_up(runner)
        raise
    finally:
        await tracker.aclose()
    if runner.stopping:
        await _clean_up(runner)
        if runner.abort is not None:
            say(f"{PROG}: {runner.abort}")
    if options.detach and not runner.stopping:
        return _print_detached(results, options)
    return _print_report(results, options, runner)


async def _clean_up(runner: Runner) -> tuple[list[str], list[str]]:
    deleted, failed = await runner.cleanup()
    cause = "interrupted" if runner.interrupted is not None else "stopped"
    if deleted:
        say(f"{PROG}: {cause}; deleted {_count(deleted)}: {' '.join(deleted)}.")
    elif not failed:
        say(f"{PROG}: {cause}; no session had been created.")
    for session_id in failed:
        say(
            f"{PROG}: could not delete session {session_id}; it may still be running "
            f"(delete it with `canfar delete {session_id}`)."
        )
    return deleted, failed


def _count(ids: list[str]) -> str:
    return f"{len(ids)} session{'' if len(ids) == 1 else 's'}"


def _print_detached(results: list[ReplicaResult], options: RunOptions) -> int:
    ids = [r.last.session_id for r in results if r.last and r.last.session_id]
    failed = [r for r in results if not (r.last and r.last.session_id)]
    if options.json:
        print(detached_json(results), flush=True)
    else:
        for session_id in ids:
            print(session_id, flush=True)
    for result in failed:
        error = result.last.error if result.last else "not created"
        say(f"{PROG}: replica {result.replica}: {error}")
    if ids:
        state = f" --state-dir {options.state_dir}" if options.state_dir else ""
        say(f"{PROG}: wait for them with: {PROG}{state} --attach {' '.join(ids)}")
    return NO_EXIT_CODE if failed else 0


def _print_report(results: list[ReplicaResult], options: RunOptions, runner: Runner) -> int:
    interrupted = runner.interrupted
    if interrupted is None and runner.abort is not None:
        interrupted = NO_EXIT_CODE
    judge = Judge(runner.state_dir, interrupted, options.timeout)
    code = judge.exit_status(results)
    if len(results) > 1:
        say(f"{PROG}: {headline(results, judge)}")
        say(table(results, judge))
    elif results and runner.interrupted is None:
        verdict = judge(results[0].last)
        if not verdict.success:
            say(_failure_sentence(results[0], verdict.reason, verdict.recorded, code))
    if options.json:
        print(as_json(results, judge), flush=True)
    return code


def _failure_sentence(
    result: ReplicaResult, reason: str | None, recorded: int | None, code: int
) -> str:
    """`canfar-run: session abc failed: the command exited with code 3.` (details, such
    as a Pending session's events table, on the lines after the sentence)."""
    last = result.last
    session = f"session {last.session_id}" if last and last.session_id else "the session"
    first, _, details = (reason or "it failed").partition("\n")
    text = f"{PROG}: {session} failed: {first.rstrip(';: ')}"
    if recorded is not None and f"code {recorded}" not in first:
        text += f" (exit code {recorded})"
    if recorded is None:
        text += f"; no exit code was recorded, so {PROG} exits with {code}"
    text += "" if text.endswith(".") else "."
    return f"{text}\n{details}" if details else text


class _Signals:
    """SIGINT/SIGTERM: the first stops the run and deletes its sessions; a second says
    the deletion is under way; a third leaves at once, naming what may still run."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.runner: Runner | None = None
        self._count = 0
        self._task: asyncio.Task[object] | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for signum in SIGNAL_EXIT:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in SIGNAL_EXIT:
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        self._count += 1
        if self._count == 1:
            self.code = SIGNAL_EXIT[signum]
            if self.runner is not None:
                self.runner.interrupt(self.code)
            elif self._task is not None:
                self._task.cancel()  # nothing was created yet
            return
        running = list(self.runner.created) if self.runner is not None else []
        if self._count == 2:
            say(f"{PROG}: deleting the sessions of this run; interrupt again to leave them.")
            return
        if running:
            say(f"{PROG}: left without deleting; may still run: {' '.join(running)}.")
        os._exit(self.code or 130)
