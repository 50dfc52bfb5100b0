"""500 sessions through canfar-core versus the official `canfar` client, on one platform.

Each client creates 500 headless sessions running `true`, waits until every one has
ended, fetches every log and deletes them all, against the same embedded platform
(`canfar-local serve`, in its own process, with capacity for all 500 at once):

- official: `canfar.sessions.AsyncSession(url=..., token=...)` as its documentation
  shows: `create(..., replicas=...)` (in calls of at most 256, its limit), then
  `info(ids)` polled every `--poll` seconds (1 s) until all are Completed, then
  `logs(ids)` and `destroy(ids)`. A temporary
  `HOME` keeps any real `~/.canfar/config.yaml` out of it.
- canfar-core: `AsyncCanfarClient.create(spec, replicas=500)`, one `SessionTracker`
  for the wait (one list request per tick for all 500; it fetches each log as its
  session ends), then concurrent deletes.

Wall time, the requests the platform counted and the client's own CPU are compared. A
short warm-up (not counted) runs first so that neither side pays for cold caches.

Scenario 1 is the target's: sessions running `true`, which end before the official
client's first poll. Scenario 2 (`--hold 20`) runs `sleep 20` instead, as long as a
session takes to start on CANFAR, where polling is what costs requests. `--with-fixes`
repeats scenario 1 with the two fixes proposed for canfar-core's client CPU applied from
outside (requests in flight bounded to the pool size; httpx2 as the transport).

    uv run python bench/client_fanout.py [--sessions 500] [--poll 1.0] [--hold 20]
        [--with-fixes]

Target: canfar-core at least 2x faster, with at least 5x fewer requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    IMAGE,
    ServedPlatform,
    exit_on_sigterm,
    print_header,
    print_metrics,
    print_table,
    ratio,
    request_breakdown,
    verdict,
)

TERMINAL = ("Completed", "Succeeded", "Failed", "Error")


def official_replica_limit() -> int:
    """The `le` bound the official client puts on `replicas` (256 in canfar 1.5)."""
    from canfar.models.session import CreateRequest

    bounds = [m.le for m in CreateRequest.model_fields["replicas"].metadata if hasattr(m, "le")]
    return int(bounds[0]) if bounds else 10**6


OFFICIAL_MAX_REPLICAS = official_replica_limit()
WAIT_TIMEOUT_SECONDS = 600


@dataclass
class Result:
    """One client's run: phase times, requests and what it got back."""

    label: str
    phases: dict[str, float] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    sessions: int = 0
    logs: int = 0
    polls: int = 0
    client_cpu: float = 0.0

    @property
    def wall(self) -> float:
        return sum(self.phases.values())

    @property
    def total_requests(self) -> int:
        return self.requests.get("total", 0)


class Phases:
    """Times consecutive phases of one run."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.result.phases[name] = now - self.last
        self.last = now


async def run_ours(url: str, token: str, count: int, name: str, hold: int = 0) -> Result:
    """canfar-core: replicas, one tracker, concurrent deletes."""
    from canfar_core import AsyncCanfarClient, SessionSpec, SessionTracker

    result = Result("canfar-core")
    clock = Phases(result)
    async with AsyncCanfarClient(url=url, token=token) as client:
        spec = SessionSpec(name=name, image=IMAGE, **command(hold))
        ids = await client.create(spec, replicas=count)
        clock.done("create")
        tracker = SessionTracker(client)
        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(tracker.watch(i, enveloped=False) for i in ids)),
                WAIT_TIMEOUT_SECONDS,
            )
        finally:
            await tracker.aclose()
        result.polls = tracker.ticks
        clock.done("wait + logs")
        await asyncio.gather(*(client.delete(i) for i in ids))
        clock.done("delete")
    failed = [o for o in outcomes if not o.success]
    if failed:
        raise RuntimeError(f"{len(failed)} sessions did not succeed, e.g. {failed[0].describe()}")
    result.sessions = len(ids)
    result.logs = len(outcomes)  # each outcome carries the log fetched when it ended
    return result


async def run_official(
    url: str, token: str, count: int, name: str, poll: float, hold: int = 0
) -> Result:
    """The official client, as documented: replicas, `info` polling, `logs`, `destroy`."""
    from canfar.sessions import AsyncSession

    result = Result("official canfar")
    clock = Phases(result)
    async with AsyncSession(url=url, token=token) as session:
        # The client caps `replicas` (256 in canfar 1.5): larger fan-outs are several
        # create calls, issued together.
        batches = [
            (f"{name}-{n}", min(OFFICIAL_MAX_REPLICAS, count - start))
            for n, start in enumerate(range(0, count, OFFICIAL_MAX_REPLICAS))
        ]
        created = await asyncio.gather(
            *(
                session.create(name=batch, image=IMAGE, replicas=size, **command(hold))
                for batch, size in batches
            )
        )
        ids = [i for chunk in created for i in chunk]
        clock.done("create")
        deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
        while True:
            info = await session.info(ids)
            result.polls += 1
            if len(info) == len(ids) and all(s.get("status") in TERMINAL for s in info):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"official client: not all {count} sessions ended")
            await asyncio.sleep(poll)
        clock.done("wait")
        logs = await session.logs(ids)
        clock.done("logs")
        await session.destroy(ids)
        clock.done("delete")
    bad = [s for s in info if s.get("status") != "Completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} sessions did not complete, e.g. {bad[0]}")
    result.sessions = len(ids)
    result.logs = len(logs or {})
    return result


def command(hold: int) -> dict[str, str]:
    """`true`, or `sleep <hold>` for sessions that live as long as a real start takes."""
    return {"cmd": "sleep", "args": str(hold)} if hold else {"cmd": "true"}


def client_cpu() -> float:
    """CPU seconds of this process: the client (the platform runs in its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(platform: ServedPlatform, run: object) -> Result:
    """Run one client's coroutine with the platform's counters reset around it."""
    platform.reset_counters()
    cpu = client_cpu()
    result: Result = asyncio.run(run)  # type: ignore[arg-type]
    result.client_cpu = client_cpu() - cpu
    result.requests = platform.counters()
    wait_drained(platform)
    return result


def wait_drained(platform: ServedPlatform, timeout: float = 120) -> None:
    """Let the platform forget the deleted sessions before the next client starts."""
    deadline = time.monotonic() + timeout
    while platform.sessions() and time.monotonic() < deadline:
        time.sleep(0.5)


class _GatedHttp:
    """An httpx.AsyncClient that lets at most `limit` requests into its pool at once."""

    def __init__(self, http: Any, limit: int) -> None:
        self._http = http
        self._gate = asyncio.Semaphore(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._http, name)

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            return await self._http.request(*args, **kwargs)

    async def post(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            return await self._http.post(*args, **kwargs)


@contextlib.contextmanager
def gated_requests() -> Iterator[None]:
    """The fix proposed for canfar-core, applied from outside for a measurement.

    httpcore 1.x rescans every queued request and every pooled connection (a `poll()` per
    idle socket) each time a request is queued or finishes, so 500 requests queued on 32
    connections cost seconds of client CPU. Bounding the requests in flight to the pool
    size keeps its queue empty. (A measurement aid only; the client is not changed.)
    """
    from canfar_core import client as module

    original = module.AsyncCanfarClient._open

    async def gated_open(self: Any) -> Any:
        return _GatedHttp(await original(self), self._max_connections)

    module.AsyncCanfarClient._open = gated_open  # type: ignore[method-assign]
    try:
        yield
    finally:
        module.AsyncCanfarClient._open = original  # type: ignore[method-assign]


@contextlib.contextmanager
def httpx2_transport() -> Iterator[None]:
    """The other fix proposed for canfar-core: httpx2 (the fork the official client uses).

    httpx2 keeps the same API and has pydantic/httpx2#974 and #1075, which made the pool's
    bookkeeping linear. canfar-core's modules are pointed at it for one measurement.
    """
    import httpx2
    from canfar_core import client, retry

    saved = client.httpx, retry.httpx
    client.httpx = retry.httpx = httpx2  # type: ignore[assignment]
    try:
        yield
    finally:
        client.httpx, retry.httpx = saved


def compare(platform: ServedPlatform, count: int, poll: float, hold: int) -> tuple[Result, Result]:
    """The official client, then canfar-core, on the same (drained) platform."""
    what = f"sleep {hold}" if hold else "true"
    print(f"{count} sessions running `{what}`: official canfar ...", flush=True)
    official = measured(
        platform, run_official(platform.url, platform.token, count, "fan-official", poll, hold)
    )
    print(f"  {official.wall:.1f} s; canfar-core ...", flush=True)
    ours = measured(platform, run_ours(platform.url, platform.token, count, "fan", hold))
    print(f"  {ours.wall:.1f} s", flush=True)
    return official, ours


def report(official: Result, ours: Result, title: str) -> tuple[float, float]:
    """Print one scenario's table; return (speed-up, request ratio)."""
    print(f"\n{title}")
    rows = []
    for r in (official, ours):
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items())
        rows.append(
            [
                r.label,
                r.wall,
                r.total_requests,
                ratio(r.total_requests, r.sessions),
                r.polls,
                r.logs,
                r.client_cpu,
                phases,
            ]
        )
    print_table(
        [
            "client",
            "wall s",
            "requests",
            "per session",
            "polls",
            "logs",
            "client CPU s",
            "phases (s)",
        ],
        rows,
    )
    for r in (official, ours):
        print(f"{r.label}: {request_breakdown(r.requests)}")
    speedup = ratio(official.wall, ours.wall)
    fewer = ratio(official.total_requests, ours.total_requests)
    print(f"canfar-core is {speedup:.2f}x faster with {fewer:.2f}x fewer requests")
    return speedup, fewer


def scenario_metrics(prefix: str, official: Result, ours: Result) -> dict[str, float | int]:
    """The `name: value` figures of one scenario."""
    return {
        f"{prefix}_wall_s_official": official.wall,
        f"{prefix}_wall_s_canfar_core": ours.wall,
        f"{prefix}_requests_official": official.total_requests,
        f"{prefix}_requests_canfar_core": ours.total_requests,
        f"{prefix}_requests_per_session_official": ratio(official.total_requests, ours.sessions),
        f"{prefix}_requests_per_session_canfar_core": ratio(ours.total_requests, ours.sessions),
        f"{prefix}_polls_official": official.polls,
        f"{prefix}_list_ticks_canfar_core": ours.polls,
        f"{prefix}_client_cpu_s_official": official.client_cpu,
        f"{prefix}_client_cpu_s_canfar_core": ours.client_cpu,
        f"{prefix}_speedup_canfar_core_vs_official": ratio(official.wall, ours.wall),
        f"{prefix}_request_ratio_official_vs_canfar_core": ratio(
            official.total_requests, ours.total_requests
        ),
    }


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--poll", type=float, default=1.0, help="official client's info interval")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--hold",
        type=int,
        default=20,
        help="second scenario: sessions run `sleep HOLD` (0: skip it)",
    )
    parser.add_argument(
        "--with-fixes",
        action="store_true",
        help="scenario 1 again with each fix proposed for canfar-core's client CPU",
    )
    args = parser.parse_args()
    count = args.sessions

    print_header(
        f"Client fan-out: {count} sessions, canfar-core vs the official canfar client",
        [
            "create all, wait until all ended, fetch every log, delete all; same platform "
            "(`canfar-local serve`, own process, room for all sessions at once)",
            f"official: AsyncSession(url, token) defaults (concurrency 32), "
            f"create(replicas=...) in calls of at most {OFFICIAL_MAX_REPLICAS} (its limit), "
            f"info(ids) every {args.poll:g} s, logs(ids), destroy(ids)",
            f"canfar-core: AsyncCanfarClient defaults, create(spec, replicas={count}), "
            "SessionTracker defaults (0.5 s..15 s), concurrent deletes",
            "scenario 1 (the target's): `true`"
            + (
                f"; scenario 2: `sleep {args.hold}`, sessions that live as long as a CANFAR "
                "session takes to start"
                if args.hold
                else ""
            ),
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    home = directory / "home"
    home.mkdir()
    saved_home = os.environ.get("HOME")
    # The official client reads ~/.canfar/config.yaml and CANFAR_* variables.
    for key in [k for k in os.environ if k.startswith("CANFAR_")]:
        del os.environ[key]
    os.environ["HOME"] = str(home)
    held: tuple[Result, Result] | None = None
    fixes: list[Result] = []
    try:
        # Flexible sessions count 1 core / 4 GiB: room for every session at once.
        with ServedPlatform.start(
            directory / "platform", cores=2 * count + 64, ram_gib=8 * count + 256
        ) as platform:
            print(f"warm-up: {args.warmup} sessions through each client (not counted)")
            asyncio.run(run_ours(platform.url, platform.token, args.warmup, "warm"))
            wait_drained(platform)
            asyncio.run(run_official(platform.url, platform.token, args.warmup, "warm", args.poll))
            wait_drained(platform)
            official, ours = compare(platform, count, args.poll, 0)
            if args.with_fixes:
                for label, fix in (
                    ("requests in flight bounded", gated_requests),
                    ("on httpx2", httpx2_transport),
                ):
                    print(f"canfar-core, {label} (a proposed fix) ...", flush=True)
                    with fix():
                        result = measured(
                            platform, run_ours(platform.url, platform.token, count, "fan-fix")
                        )
                    result.label = f"canfar-core, {label}"
                    print(f"  {result.wall:.1f} s", flush=True)
                    fixes.append(result)
            if args.hold:
                held = compare(platform, count, args.poll, args.hold)
            server_rss = platform.rss_mib()
    finally:
        if saved_home is not None:
            os.environ["HOME"] = saved_home
        shutil.rmtree(directory, ignore_errors=True)

    speedup, fewer = report(official, ours, f"scenario 1: {count} x `true`")
    for fix in fixes:
        print(
            f"{fix.label}: {fix.wall:.2f} s ({ratio(official.wall, fix.wall):.2f}x the "
            f"official's speed), {fix.total_requests} requests, client CPU "
            f"{fix.client_cpu:.2f} s (phases: "
            + ", ".join(f"{k} {v:.1f}" for k, v in fix.phases.items())
            + ")"
        )
    speed_met, requests_met = speedup >= 2, fewer >= 5
    print(f"target >= 2x faster: {verdict(speed_met)}; target >= 5x fewer: {verdict(requests_met)}")
    metrics: dict[str, float | int | str | bool] = {
        "fanout_sessions": count,
        "fanout_official_poll_s": args.poll,
        **scenario_metrics("fanout", official, ours),
    }
    for fix, key in zip(fixes, ("gated", "httpx2"), strict=False):
        metrics[f"fanout_wall_s_canfar_core_{key}"] = fix.wall
        metrics[f"fanout_client_cpu_s_canfar_core_{key}"] = fix.client_cpu
        metrics[f"fanout_speedup_canfar_core_{key}_vs_official"] = ratio(official.wall, fix.wall)
    if held is not None:
        report(*held, f"scenario 2: {count} x `sleep {args.hold}`")
        metrics.update(scenario_metrics(f"fanout_sleep{args.hold}", *held))
    metrics.update(
        {
            "fanout_server_rss_mib": server_rss,
            "fanout_target_speed_met": speed_met,
            "fanout_target_requests_met": requests_met,
        }
    )
    print_metrics(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
