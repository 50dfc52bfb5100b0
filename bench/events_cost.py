"""What reading events early costs: requests per queued job, at the tracker's defaults.

While a session is Pending the tracker reads its events after `events_delay` (10 s) and
then every `events_interval` (30 s), never per tick, so that an image that cannot be
pulled fails in minutes and a queued session's reason is known. This script queues
`--sessions` sessions behind one that holds the platform's whole capacity, watches them
with one `SessionTracker` at its defaults for `--seconds`, and counts the requests at
the platform (`canfar-local serve`, its own process). The comparison is what reading
events on every tick would have cost (one request per session per list tick).

    uv run python bench/events_cost.py [--sessions 20] [--seconds 100]

Target: at most 3 events requests per queued job per minute (the defaults give 2).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

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

TARGET_PER_MINUTE = 3.0


async def measure(platform: ServedPlatform, sessions: int, seconds: float) -> dict[str, float]:
    from canfar_core import AsyncCanfarClient, SessionSpec, SessionTracker, envelope

    async with AsyncCanfarClient(url=platform.url, token=platform.token) as client:
        hog = await client.create(
            SessionSpec(name="hog", image=IMAGE, cores=2, ram=1, cmd="sleep", args="3600")
        )
        queued = await client.create(
            envelope(["true"]).spec(name="queued", image=IMAGE, cores=2, ram=1),
            replicas=sessions,
        )
        platform.reset_counters()
        tracker = SessionTracker(client)  # the defaults: what a workflow gets
        for session_id in queued:
            tracker.watch(session_id)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        counters = platform.counters()
        reads, ticks = tracker.events_reads, tracker.ticks
        await tracker.aclose()
        for session_id in [hog, *queued]:
            await client.delete(session_id)
    print(f"requests at the platform: {request_breakdown(counters)}")
    return {
        "elapsed": elapsed,
        "events_reads": reads,
        "ticks": ticks,
        "per_id_gets": counters.get("GET /v1/session/{id}", 0),
        "list_gets": counters.get("GET /v1/session", 0),
    }


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="queued sessions watched")
    parser.add_argument("--seconds", type=float, default=100.0, help="how long they queue")
    args = parser.parse_args()
    print_header(
        "Events requests per queued job",
        [
            f"{args.sessions} sessions queued behind one that holds the capacity, watched "
            f"for {args.seconds:g} s by one SessionTracker at its defaults "
            "(events_delay 10 s, events_interval 30 s)",
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        with ServedPlatform.start(directory / "platform", cores=2, ram_gib=8) as platform:
            found = asyncio.run(measure(platform, args.sessions, args.seconds))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    minutes = found["elapsed"] / 60
    per_job = ratio(found["events_reads"], args.sessions)
    per_job_minute = ratio(per_job, minutes)
    per_tick = found["ticks"] * args.sessions  # what a read on every tick would cost
    print_table(
        ["", "requests", "per job", "per job per minute"],
        [
            ["events reads (tracker)", int(found["events_reads"]), per_job, per_job_minute],
            ["GET /session/{id} (platform)", int(found["per_id_gets"]), "", ""],
            ["list ticks (all jobs share)", int(found["list_gets"]), "", ""],
            [
                "baseline: events on every tick",
                int(per_tick),
                ratio(per_tick, args.sessions),
                ratio(ratio(per_tick, args.sessions), minutes),
            ],
        ],
    )
    met = per_job_minute <= TARGET_PER_MINUTE
    print(
        f"{per_job_minute:.2f} events requests per queued job per minute "
        f"(target <= {TARGET_PER_MINUTE:g}): {verdict(met)}; "
        f"{ratio(per_tick, found['events_reads']):.1f}x fewer than reading them every tick"
    )
    print_metrics(
        {
            "sessions": args.sessions,
            "seconds": found["elapsed"],
            "events_requests_per_job": per_job,
            "events_requests_per_job_per_minute": per_job_minute,
            "list_ticks": int(found["list_gets"]),
            "every_tick_baseline_per_job_per_minute": ratio(
                ratio(per_tick, args.sessions), minutes
            ),
            "within_target": met,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
