"""Trustworthy verdicts end to end (issues 14 and 16), against the embedded platform.

Where a condition is a distortion of what a server answers (an HTML page with 200, a cut
body, foreign list items, a phase a proxy holds), it comes from the chaos proxy and the
test says so; everything else is produced by the platform for real (an image without
`base64`, a cgroup-v2 OOM kill, a revoked token, a lost node, an unpullable image).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from canfar_core import (
    AsyncCanfarClient,
    CredentialsRefusedError,
    OutcomeKind,
    RetryPolicy,
    SessionSpec,
    SessionTracker,
    SpecError,
    envelope,
)
from canfar_core.diagnosis import DiagnosisCategory
from canfar_core.launch import marker_line
from canfar_core.phase import Phase
from canfar_core.progress import ProgressKind
from canfar_core.refusals import refusal_sentence
from canfar_local.chaos import ChaosProxy
from canfar_local.testing import async_wait_for, image_path

IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
SLIM = "images.canfar.net/skaha/slim:1.0"  # an image whose PATH has no base64
QUICK = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1, total_seconds=5)
HOG = f"{shlex.quote(sys.executable)} -c 'b = bytearray(2 * 1024**3); import time; time.sleep(30)'"
DUMP = (
    "import json, os, sys\n"
    "json.dump({'env': dict(os.environ)}, open(os.environ['DUMP_TO'], 'w'))\n"
    "sys.exit(3)\n"
)


async def until(predicate: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    """Wait (without blocking the loop) until a plain predicate holds, with a deadline."""

    async def check() -> object:
        return predicate()

    await async_wait_for(check, timeout=timeout, what=what)


def answered_paths(root: Path) -> list[str]:
    """The paths (with query) of the requests the platform has answered so far."""
    log = (root / "requests.log").read_text().splitlines()
    return [json.loads(line)["path"] for line in log]


def client_for(url: str, token: str, **kwargs: object) -> AsyncCanfarClient:
    return AsyncCanfarClient(url=url, token=token, **kwargs)  # type: ignore[arg-type]


# -- issue 14, item 1: an exit code is believed only from the envelope ----------------------


async def test_a_forged_exit_line_before_an_oom_kill_is_never_a_success(platform_factory) -> None:
    """A job prints an earlier session's log (its exit line included), or forges its own,
    and is then OOM-killed with its whole container (cgroup v2): both are failures."""
    platform = platform_factory(oom_policy="group")
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(client, min_interval=0.1)
        first = await client.create(envelope(["true"]).spec(name="earlier", image=IMAGE))
        earlier = await tracker.watch(first)
        old_log = await client.logs(first)
        cats = envelope(f'printf "%s" "$OLD"; {HOG}', env={"OLD": old_log})
        second = await client.create(cats.spec(name="cats", image=IMAGE, ram=1))
        own = envelope(f'echo "canfar-launch: exit code 0 session $skaha_sessionid"; {HOG}')
        third = await client.create(own.spec(name="forges", image=IMAGE, ram=1))
        catted, forged = await asyncio.gather(tracker.watch(second), tracker.watch(third))
        await tracker.aclose()
    assert earlier.success and old_log.rstrip().endswith(marker_line(0, first))
    assert catted.log_tail(1) == marker_line(0, first), "the other session's line is last"
    for outcome in (catted, forged):
        assert outcome.phase is Phase.FAILED
        assert not outcome.success and outcome.kind is OutcomeKind.FAILED, outcome.describe()
        assert outcome.exit_code is None
    assert forged.log_tail(1) == marker_line(0, third)
    assert "exit record says 0" in (forged.reason or "")
    print(f"\n{catted.describe()}\n{forged.describe()}")


async def test_what_a_command_leaves_behind_ends_with_it(platform, tmp_path: Path) -> None:
    """A background process cannot print after the exit line, nor hold the log open."""
    leftover = "(sleep 2; echo late-output) & echo done"
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(client, min_interval=0.1)
        plain = await client.create(envelope(leftover).spec(name="plain", image=IMAGE))
        filed = await client.create(
            envelope(leftover, state_dir=tmp_path).spec(name="filed", image=IMAGE)
        )
        outcomes = await asyncio.gather(
            tracker.watch(plain), tracker.watch(filed, state_dir=str(tmp_path))
        )
        await tracker.aclose()
    for outcome in outcomes:
        assert outcome.success and outcome.exit_code == 0, outcome.describe()
        assert "late-output" not in outcome.logs
        assert outcome.log_tail(2).splitlines() == ["done", marker_line(0, outcome.session_id)]


# -- item 2: no exit record is never a success when an envelope was used -------------------


async def test_an_image_without_base64_fails_loudly_and_says_why(
    platform_factory, tmp_path
) -> None:
    slim = image_path(tmp_path / "slim-bin", ["sh", "cat", "mkdir", "tee", "mv", "rm", "sleep"])
    platform = platform_factory(image_paths={SLIM: slim})
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(client, min_interval=0.1)
        in_slim = await client.create(envelope(["echo", "hello"]).spec(name="slim", image=SLIM))
        # The envelope's boot line replaced by one that exits 0 without running the script,
        # as the boot line before this change did in an image without base64.
        replaced = envelope(["echo", "hello"]).spec(
            name="noboot", image=IMAGE, env={"CANFAR_BOOT": "true"}
        )
        no_boot = await client.create(replaced)
        slim_outcome, no_boot_outcome = await asyncio.gather(
            tracker.watch(in_slim), tracker.watch(no_boot)
        )
        await tracker.aclose()
    assert platform.session_state(in_slim)["exit_code"] == 125, "the boot line fails loudly"
    assert slim_outcome.kind is OutcomeKind.FAILED and not slim_outcome.success
    assert "the launch envelope never ran" in (slim_outcome.reason or "")
    assert "base64: not found" in (slim_outcome.reason or "")
    assert slim_outcome.diagnosis is not None
    assert slim_outcome.diagnosis.category is DiagnosisCategory.ENVELOPE_NEVER_RAN
    assert platform.session_state(no_boot)["exit_code"] == 0, "the session itself Completed"
    assert no_boot_outcome.kind is OutcomeKind.FAILED and not no_boot_outcome.success
    assert "envelope never ran its script" in (no_boot_outcome.reason or "")
    print(f"\n{slim_outcome.describe()}\n{no_boot_outcome.describe()}")


# -- item 3: odd answers are an outage, not a crash loop -------------------------------------


async def test_unreadable_lists_are_an_outage_and_odd_items_are_skipped(platform, caplog) -> None:
    """Through the chaos proxy: an HTML page with 200, cut and empty bodies, then lists
    with foreign items and a timestamp in another format. One warning for the outage,
    none per tick, no traceback, and every session resolves."""
    caplog.set_level(logging.WARNING)
    with ChaosProxy.start(platform.url) as proxy:
        async with client_for(proxy.url, platform.token, retry=QUICK) as client:
            ids = [
                await client.create(envelope(["sleep", "1"]).spec(name=f"odd-{i}", image=IMAGE))
                for i in range(3)
            ]
            tracker = SessionTracker(client, min_interval=0.1, max_interval=0.1)
            proxy.corrupt_list("html", count=None)
            futures = [tracker.watch(i) for i in ids]
            steps = (("html", "truncated"), ("truncated", "empty"), ("empty", "odd-items"))
            for current, following in steps:
                await until(
                    lambda c=current: proxy.counts().get(f"corrupt {c}", 0) >= 3, timeout=30
                )
                proxy.corrupt_list(following, count=None)
            outcomes = await asyncio.wait_for(asyncio.gather(*futures), 30)
            ticks = tracker.ticks
            await tracker.aclose()
    counts = proxy.counts()
    assert all(o.success for o in outcomes), [o.describe() for o in outcomes]
    assert counts["corrupt html"] >= 3 and counts["corrupt truncated"] >= 3
    assert counts["corrupt empty"] >= 3 and counts["corrupt odd-items"] >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    outage = [w for w in warnings if w.startswith("Cannot list sessions")]
    assert len(outage) == 1, warnings
    assert "cannot be read" in outage[0]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    odd = [w for w in warnings if w.startswith("The session list has an odd item")]
    assert 1 <= len(odd) <= 4 < ticks, odd  # each odd item once, not once per tick
    assert any("has no session id" in w for w in odd)
    assert any("startTime=1767225600 not understood" in w for w in odd)
    print(f"\n{ticks} ticks; warnings: {outage + odd}")


# -- item 4: stuck phases resolve ----------------------------------------------------------


async def test_stuck_phases_resolve_from_the_record_or_are_deleted(platform, tmp_path) -> None:
    """A session whose exit line is written but which stays Terminating (the chaos proxy
    holds the phase) resolves from its record; one whose node is lost mid-run (the
    platform kills it and holds `Unknown`) is reported stuck with its events, and deleted."""
    with ChaosProxy.start(platform.url) as proxy:
        async with client_for(proxy.url, platform.token) as client:
            tracker = SessionTracker(
                client, min_interval=0.1, max_interval=0.2, stuck_grace=0.5, stuck_timeout=2.0
            )
            ended = await client.create(envelope("echo ok").spec(name="ended", image=IMAGE))
            proxy.hold_phase(ended, "Terminating")
            lost = await client.create(
                envelope(["sleep", "60"], state_dir=tmp_path).spec(name="lost", image=IMAGE)
            )
            lost_future = tracker.watch(lost, state_dir=str(tmp_path))
            await until(lambda: tracker.phase(lost) is Phase.RUNNING, timeout=20)
            platform.hold_phase(lost, "Unknown", kill=True)
            held, gone = await asyncio.wait_for(
                asyncio.gather(tracker.watch(ended), lost_future), 30
            )
            await tracker.aclose()
            remaining = {s.id for s in await client.list_sessions()}
    assert held.phase is Phase.TERMINATING
    assert held.success and held.exit_code == 0, held.describe()
    assert gone.kind is OutcomeKind.STUCK and not gone.success
    assert "stayed Unknown for" in (gone.reason or "")
    assert gone.events_table is not None and "Started" in gone.events_table
    assert gone.diagnosis is not None and gone.diagnosis.category is DiagnosisCategory.STUCK
    assert lost not in remaining, "a stuck session is deleted"
    print(f"\n{held.describe()}\n{gone.describe()}")


# -- item 5: credentials refused mid-run stop the run at once -------------------------------


async def test_a_token_revoked_mid_run_stops_every_watch_at_once(platform) -> None:
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(client, min_interval=0.1, outage_seconds=600)
        ids = [
            await client.create(envelope(["sleep", "60"]).spec(name=f"long-{i}", image=IMAGE))
            for i in range(2)
        ]
        futures = [tracker.watch(i) for i in ids]
        await until(lambda: all(tracker.phase(i) is Phase.RUNNING for i in ids), timeout=20)
        assert platform.revoke_token(platform.token)
        with pytest.raises(CredentialsRefusedError) as caught:
            await asyncio.wait_for(futures[0], 10)  # far inside the 600 s outage limit
        with pytest.raises(CredentialsRefusedError):
            await futures[1]
        second = tracker.outcome(ids[1])
        await tracker.aclose()
    error = caught.value
    expected = refusal_sentence(error.cause, where=platform.url, source="arguments")
    assert str(error).startswith(expected)
    assert "refused the credentials from arguments" in expected
    assert sorted(error.sessions) == sorted(ids)
    assert all(i in str(error) for i in ids), "names the sessions that may still run"
    assert second is not None and second.kind is OutcomeKind.CREDENTIALS_REFUSED
    fresh = platform.add_user(platform.user)
    async with client_for(platform.url, fresh) as cleanup:
        for session_id in ids:
            await cleanup.delete(session_id)
    print(f"\n{error}")


# -- item 6: bounded driver memory -----------------------------------------------------------


async def test_only_a_bounded_tail_of_a_big_log_is_kept(platform, tmp_path: Path) -> None:
    chatty = "yes 0123456789abcdef | head -c 20000000; echo; echo end-of-output"
    state = tmp_path / "state"
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(client, min_interval=0.1, log_tail_bytes=64 * 1024)
        streamed = await client.create(envelope(chatty).spec(name="streamed", image=IMAGE))
        filed = await client.create(
            envelope(chatty, state_dir=state).spec(name="filed", image=IMAGE)
        )
        outcomes = await asyncio.gather(
            tracker.watch(streamed, log_path=tmp_path / "streamed.log"),
            tracker.watch(filed, state_dir=str(state)),
        )
        await tracker.aclose()
    for outcome in outcomes:
        assert outcome.success and outcome.exit_code == 0, outcome.describe()
        assert len(outcome.logs.encode()) <= 64 * 1024 and outcome.log_truncated
        assert outcome.log_tail(2).splitlines()[0] == "end-of-output"
        assert outcome.log_head.startswith("0123456789abcdef\n")
        assert outcome.log_path is not None and outcome.log_path.stat().st_size > 20_000_000
    assert outcomes[0].log_path == tmp_path / "streamed.log"
    assert outcomes[1].log_path == state / f"{filed}.log"
    print(f"\nkept {len(outcomes[0].logs)} of {outcomes[0].log_path.stat().st_size} bytes")


# -- item 9: size limits are checked, not discovered -----------------------------------------


async def test_size_limits_are_checked_before_anything_is_sent(platform, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^env\[BIG\]=131,077 bytes is not allowed: Linux "):
        envelope(["true"], env={"BIG": "x" * 131_072})
    many = {f"V{i}": chr(65 + i) * 120_000 for i in range(14)}  # 1.7 MB of environment
    with pytest.raises(SpecError, match="without a state_dir the launch script travels in"):
        envelope(["true"], env=many)
    with pytest.raises(SpecError, match=r"^env=.* bytes is not allowed: CANFAR holds"):
        SessionSpec(
            name="raw", image=IMAGE, cmd="true", env={f"V{i}": "x" * 120_000 for i in range(14)}
        )
    state = tmp_path / "state"
    dump = tmp_path / "dump.json"
    wrapped = envelope(
        [sys.executable, "-c", DUMP], env={**many, "DUMP_TO": str(dump)}, state_dir=state
    )
    assert wrapped.script_file is not None and wrapped.script_file.parent == state / "launch"
    spec = wrapped.spec(name="large", image=IMAGE)
    assert sum(len(v) for v in spec.env.values()) < 4096, "only a stub travels"
    async with client_for(platform.url, platform.token) as client:
        session_id = await client.create(spec)
        tracker = SessionTracker(client, min_interval=0.1)
        outcome = await tracker.watch(session_id, state_dir=str(state))
        await tracker.aclose()
    seen = json.loads(dump.read_text())["env"]
    assert outcome.exit_code == 3, outcome.describe()
    assert {k: seen[k] for k in many} == many
    assert not [k for k in seen if k.startswith(("CANFAR_LAUNCH_", "CANFAR_BOOT"))]
    assert not wrapped.script_file.exists(), "the session removes its script file"


# -- issue 16: read events early, say why a session waits -----------------------------------


async def test_an_unpullable_image_fails_fast_with_its_events(platform_factory) -> None:
    missing = "images.canfar.net/skaha/terminal:no-such-tag"
    platform = platform_factory(unpullable_images=(missing,))
    seen = []
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(
            client,
            min_interval=0.1,
            events_delay=0.2,
            events_interval=0.3,
            image_pull_window=1.0,
            on_progress=seen.append,
        )
        session_id = await client.create(envelope(["true"]).spec(name="typo", image=missing))
        # The pending timeout is an hour: only the pull window can end this in time.
        outcome = await asyncio.wait_for(tracker.watch(session_id, pending_timeout=3600), 30)
        await tracker.aclose()
        remaining = {s.id for s in await client.list_sessions()}
    assert outcome.kind is OutcomeKind.IMAGE_PULL_FAILED and not outcome.success
    assert outcome.events_table is not None and "ErrImagePull" in outcome.events_table
    assert "ImagePullBackOff" in (outcome.reason or "")
    assert outcome.diagnosis is not None
    assert outcome.diagnosis.category is DiagnosisCategory.IMAGE_PULL
    assert session_id not in remaining
    reasons = [p for p in seen if p.kind is ProgressKind.REASON]
    assert len(reasons) == 1 and reasons[0].diagnosis is not None
    assert reasons[0].diagnosis.category is DiagnosisCategory.IMAGE_PULL
    print(f"\n{outcome.describe()}\n{reasons[0].describe()}")


async def test_a_queued_session_is_told_why_once_and_events_are_read_at_a_bounded_rate(
    platform_factory,
) -> None:
    platform = platform_factory(cores=2, ram_gib=8)
    seen = []
    async with client_for(platform.url, platform.token) as client:
        tracker = SessionTracker(
            client,
            min_interval=0.1,
            max_interval=0.1,
            events_delay=0.1,
            events_interval=1.0,
            on_progress=seen.append,
        )
        hog = await client.create(
            SessionSpec(name="hog", image=IMAGE, cores=2, ram=1, cmd="sleep", args="60")
        )
        queued = await client.create(
            envelope(["true"]).spec(name="queued", image=IMAGE, cores=2, ram=1)
        )
        future = tracker.watch(queued, name="queued")
        await until(lambda: tracker.events_reads >= 3, timeout=30)
        reads, ticks = tracker.events_reads, tracker.ticks
        await client.delete(hog)
        outcome = await asyncio.wait_for(future, 30)
        await tracker.aclose()
    assert outcome.success
    reasons = [p for p in seen if p.kind is ProgressKind.REASON]
    assert len(reasons) == 1, [p.describe() for p in reasons]
    assert reasons[0].diagnosis is not None
    assert reasons[0].diagnosis.category is DiagnosisCategory.QUEUED
    assert "admission queue" in reasons[0].diagnosis.detail
    phases = [(p.previous_phase, p.phase) for p in seen if p.kind is ProgressKind.PHASE]
    assert phases[0] == (None, Phase.PENDING) and phases[-1][1] is Phase.COMPLETED
    assert reads < ticks, f"events are not read every tick ({reads} reads, {ticks} ticks)"
    print(f"\n{reads} events reads in {ticks} ticks; {reasons[0].describe()}")


# -- issue 18: the exit-file fast path -------------------------------------------------------


async def test_an_exit_file_reports_the_end_without_a_list_request(platform, tmp_path) -> None:
    """Counted at the platform: after the first listing, the ends of both sessions come
    from the state dir's exit files and logs; no list, events or log request is made."""
    async with client_for(platform.url, platform.token) as client:
        state = tmp_path / "state"
        tracker = SessionTracker(client, min_interval=0.2, max_interval=60, exit_scan_interval=0.2)
        specs = {
            "ok": envelope("sleep 2; echo fine", state_dir=state).spec(name="ok", image=IMAGE),
            "bad": envelope("sleep 2; exit 3", state_dir=state).spec(name="bad", image=IMAGE),
        }
        ids = {key: await client.create(spec) for key, spec in specs.items()}
        before = platform.counters()
        futures = [tracker.watch(sid, state_dir=str(state)) for sid in ids.values()]
        ok, bad = await asyncio.wait_for(asyncio.gather(*futures), 30)
        after = platform.counters()
        await tracker.aclose()
    requests = {k: after[k] - before.get(k, 0) for k in after if k != "total"}
    assert requests.get("GET /v1/session", 0) == 1, requests  # the first listing only
    assert sum(requests.values()) == 1, requests
    assert ok.success and ok.exit_code == 0 and "fine" in ok.logs
    assert bad.kind is OutcomeKind.FAILED and bad.exit_code == 3
    assert tracker.scans >= 1
    print(f"\nrequests while two sessions ended: {requests}; {tracker.scans} scans")


async def test_a_deadline_waits_for_the_next_list_on_the_fast_path(
    platform_factory, tmp_path
) -> None:
    """Counted at the platform: a Pending session's events fall due after 0.3 s, but
    while the fast path covers every watch that deadline is checked at the next list,
    not with a list of its own; the session (held Pending 3 s by the platform's start
    delay) ends first and is resolved from its exit file, after one listing only."""
    platform = platform_factory(start_delay_seconds=3)
    async with client_for(platform.url, platform.token) as client:
        state = tmp_path / "state"
        tracker = SessionTracker(
            client,
            min_interval=0.2,
            max_interval=60,
            exit_scan_interval=0.2,
            events_delay=0.3,
            events_interval=0.5,
        )
        sid = await client.create(
            envelope("sleep 1; echo done", state_dir=state).spec(name="slow", image=IMAGE)
        )
        before = platform.counters()
        outcome = await asyncio.wait_for(tracker.watch(sid, state_dir=str(state)), 30)
        after = platform.counters()
        await tracker.aclose()
    requests = {k: n for k in after if k != "total" and (n := after[k] - before.get(k, 0))}
    assert outcome.success and "done" in outcome.logs
    assert tracker.phase(sid) is Phase.PENDING  # the one listing showed it Pending
    assert requests == {"GET /v1/session": 1}, requests
    print(f"\nrequests while a Pending session's events fell due and it ended: {requests}")


async def test_an_exit_file_is_resolved_while_a_tick_waits_on_events(platform, tmp_path) -> None:
    """A tick reading a Pending session's events can take long on a busy service (the
    platform holds that read 10 s, injected); the state dir is scanned meanwhile, so
    another session's end is known from its exit file before that read is answered."""
    async with client_for(platform.url, platform.token) as client:
        state = tmp_path / "state"
        tracker = SessionTracker(
            client, min_interval=0.2, max_interval=5, exit_scan_interval=0.2, events_delay=0.1
        )
        queued = await client.create(
            SessionSpec(name="queued", image=IMAGE, cmd="sleep", args="120")
        )
        platform.hold_phase(queued, "Pending")
        platform.inject_fault(method="GET", route="/v1/session/{id}", delay=10.0, count=1)
        try:
            tracker.watch(queued)  # no state dir: only the list and its events tell
            sid = await client.create(
                envelope("sleep 1; echo ended", state_dir=state).spec(name="quick", image=IMAGE)
            )
            outcome = await asyncio.wait_for(tracker.watch(sid, state_dir=str(state)), 9)
            answered = answered_paths(platform.root)
            await tracker.aclose()
        finally:
            platform.clear_faults()
        await client.delete(queued)
    assert tracker.events_reads >= 1  # the tick was reading the queued session's events
    assert f"/skaha/v1/session/{queued}?view=events" not in answered  # ...and still is
    assert outcome.success and "ended" in outcome.logs


async def test_an_exit_file_abandons_the_events_read_of_its_own_session(platform, tmp_path) -> None:
    """A session the list still shows Pending (held there, injected) has its events read
    by a tick, and the platform holds that read 30 s (injected) as a busy service may.
    Its command ends meanwhile: the exit file makes the events moot, so the read is
    abandoned and the session resolved from the file, long before the read would end."""
    async with client_for(platform.url, platform.token) as client:
        state = tmp_path / "state"
        tracker = SessionTracker(
            client, min_interval=0.2, max_interval=1, exit_scan_interval=0.2, events_delay=0.1
        )
        sid = await client.create(
            envelope("sleep 3; echo ended", state_dir=state).spec(name="held", image=IMAGE)
        )
        platform.hold_phase(sid, "Pending")
        platform.inject_fault(method="GET", route="/v1/session/{id}", delay=30.0, count=1)
        try:
            future = tracker.watch(sid, state_dir=str(state))
            await until(lambda: tracker.events_reads >= 1, timeout=10, what="an events read")
            assert not (state / f"{sid}.exit").exists()  # the read began before the end
            outcome = await asyncio.wait_for(future, 15)
            answered = answered_paths(platform.root)
            await tracker.aclose()
        finally:
            platform.clear_faults()
        await client.delete(sid)
    assert f"/skaha/v1/session/{sid}?view=events" not in answered  # never waited for
    assert outcome.success and outcome.exit_code == 0 and "ended" in outcome.logs


async def test_the_list_overrides_a_contradicting_exit_file(platform, tmp_path) -> None:
    """The platform shows the session Failed (as a pod killed after its command) while
    its command records 0 in the exit file. The list says Failed, so the recorded 0 is a
    failure, as without the fast path: a verdict never rests on the file alone."""
    async with client_for(platform.url, platform.token) as client:
        state = tmp_path / "state"
        tracker = SessionTracker(client, min_interval=0.1, max_interval=5, exit_scan_interval=0.1)
        sid = await client.create(
            envelope("sleep 1", state_dir=state).spec(name="held", image=IMAGE)
        )
        platform.hold_phase(sid, "Failed")
        await until((state / f"{sid}.exit").exists, timeout=30, what="the exit file")
        outcome = await asyncio.wait_for(tracker.watch(sid, state_dir=str(state)), 30)
        await tracker.aclose()
    assert (state / f"{sid}.exit").read_text().strip() == "0"
    assert outcome.kind is OutcomeKind.FAILED and not outcome.success
    assert outcome.exit_code is None
    assert "exit record says 0" in (outcome.reason or "")
    print(f"\n{outcome.describe()}")
