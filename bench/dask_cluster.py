"""Many small tasks: DaskTaskRunner on a CanfarCluster vs the process pool and CanfarTaskRunner.

Two comparisons, one Prefect server (SQLite, as `tests/prefect/conftest.py` starts it)
and the embedded platform served in its own process (`canfar-local serve`):

(a) 50 mapped trivial tasks: `DaskTaskRunner(cluster_class=CanfarCluster,
    cluster_kwargs={"n_workers": 2, ...})` against `ProcessPoolTaskRunner()` (its
    default: one process per CPU). Each time is the flow call, from start to result, so
    the Dask side includes making the cluster and starting its two worker sessions.
    Target: Dask / process pool <= 2.0.
(b) 200 one-second tasks with every session's start delayed by 20 s (the platform's
    `--start-delay`, standing in for CANFAR's scheduling and image start):
    `CanfarTaskRunner(max_sessions=8, cores=1)`, one session per task, against
    `DaskTaskRunner` on `CanfarCluster(n_workers=4, cores=2)`: 8 task slots and 8 cores
    on each side. Target: the Dask side >= 3x faster.

    uv run python bench/dask_cluster.py [--tasks 50] [--slow-tasks 200] [--start-delay 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    PREFECT_IMAGE,
    PYTHON,
    PrefectServer,
    ServedPlatform,
    exit_on_sigterm,
    print_header,
    print_metrics,
    print_table,
    ratio,
    request_breakdown,
    timed_map,
    verdict,
)


def dask_runner(shared: Path, *, workers: int, cores: int) -> Any:
    """DaskTaskRunner on a CanfarCluster of `workers` sessions of `cores` cores."""
    from canfar_core.dask import CanfarCluster
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(
        cluster_class=CanfarCluster,
        cluster_kwargs={
            "image": PREFECT_IMAGE,
            "python": PYTHON,
            "shared_dir": str(shared),
            "n_workers": workers,
            "cores": cores,
            "ram": 2,
        },
    )


def canfar_runner(shared: Path, *, sessions: int) -> Any:
    from prefect_canfar import CanfarTaskRunner

    return CanfarTaskRunner(
        image=PREFECT_IMAGE,
        python=PYTHON,
        shared_dir=shared,
        max_sessions=sessions,
        cores=1,
        ram=1,
    )


def checked(label: str, out: list[int], count: int) -> None:
    if out != [x * x for x in range(count)]:
        raise RuntimeError(f"{label}: wrong results {out[:5]}...")


def point_at(platform: ServedPlatform) -> None:
    os.environ["CANFAR_URL"] = platform.url
    os.environ["CANFAR_TOKEN"] = platform.token


def part_a(directory: Path, count: int) -> dict[str, Any]:
    """(a) trivial tasks: DaskTaskRunner+CanfarCluster(2 workers) vs ProcessPoolTaskRunner."""
    from prefect.task_runners import ProcessPoolTaskRunner

    with ServedPlatform.start(directory / "platform-a", cores=64, ram_gib=256) as platform:
        point_at(platform)
        shared = directory / "shared-a"
        processes = ProcessPoolTaskRunner()._max_workers
        print("warm-up: 2 tasks under each runner (not counted)", flush=True)
        timed_map(ProcessPoolTaskRunner(), 2)
        timed_map(dask_runner(shared, workers=2, cores=1), 2)

        print(f"(a) ProcessPoolTaskRunner ({processes} processes): {count} tasks ...", flush=True)
        process_s, out = timed_map(ProcessPoolTaskRunner(), count)
        checked("process pool", out, count)
        print(f"  {process_s:.1f} s", flush=True)

        print(f"(a) DaskTaskRunner on CanfarCluster(n_workers=2): {count} tasks ...", flush=True)
        platform.reset_counters()
        dask_s, out = timed_map(dask_runner(shared, workers=2, cores=1), count)
        checked("dask", out, count)
        counters = platform.counters()
        print(f"  {dask_s:.1f} s", flush=True)
        leftover = platform.sessions()
    return {
        "processes": processes,
        "process_s": process_s,
        "dask_s": dask_s,
        "counters": counters,
        "leftover": leftover,
    }


def part_b(directory: Path, count: int, delay: float, slots: int) -> dict[str, Any]:
    """(b) one-second tasks, 20 s session start: CanfarTaskRunner vs Dask on CanfarCluster."""
    root = directory / "platform-b"
    with ServedPlatform.start(root, cores=64, ram_gib=256, start_delay=delay) as platform:
        point_at(platform)
        workers = max(1, slots // 2)
        print(
            f"(b) DaskTaskRunner on CanfarCluster(n_workers={workers}, cores=2): {count} x 1 s "
            f"tasks, sessions start {delay:g} s after admission ...",
            flush=True,
        )
        platform.reset_counters()
        dask_s, out = timed_map(
            dask_runner(directory / "shared-b", workers=workers, cores=2), count, 1.0
        )
        checked("dask", out, count)
        dask_counters = platform.counters()
        print(f"  {dask_s:.1f} s", flush=True)

        print(f"(b) CanfarTaskRunner(max_sessions={slots}): {count} x 1 s tasks ...", flush=True)
        platform.reset_counters()
        canfar_s, out = timed_map(canfar_runner(directory / "shared-c", sessions=slots), count, 1.0)
        checked("canfar", out, count)
        canfar_counters = platform.counters()
        print(f"  {canfar_s:.1f} s", flush=True)
        leftover = platform.sessions()
    return {
        "workers": workers,
        "dask_s": dask_s,
        "canfar_s": canfar_s,
        "dask_counters": dask_counters,
        "canfar_counters": canfar_counters,
        "leftover": leftover,
    }


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50, help="(a) trivial tasks (50)")
    parser.add_argument("--slow-tasks", type=int, default=200, help="(b) 1 s tasks (200)")
    parser.add_argument("--start-delay", type=float, default=20.0, help="(b) session start (20 s)")
    parser.add_argument("--slots", type=int, default=8, help="(b) task slots per side (8)")
    parser.add_argument("--only", choices=("a", "b"), help="run one comparison")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="bench-dask-cluster-"))
    a: dict[str, Any] | None = None
    b: dict[str, Any] | None = None
    try:
        server = PrefectServer.start(directory / "prefect-home")
        try:
            server.use_in_this_process()
            print_header(
                "Many small tasks: DaskTaskRunner on CanfarCluster",
                [
                    "one Prefect server (SQLite), the platform as `canfar-local serve`",
                    "(a) DaskTaskRunner+CanfarCluster(n_workers=2, cores=1) vs "
                    "ProcessPoolTaskRunner(), trivial tasks, workers' start included",
                    f"(b) CanfarTaskRunner(max_sessions={args.slots}, cores=1) vs "
                    f"DaskTaskRunner+CanfarCluster(n_workers={max(1, args.slots // 2)}, cores=2), "
                    f"1 s tasks, --start-delay {args.start_delay:g}",
                    "time = the flow call, from start to its result",
                ],
            )
            if args.only in (None, "a"):
                a = part_a(directory, args.tasks)
            if args.only in (None, "b"):
                b = part_b(directory, args.slow_tasks, args.start_delay, args.slots)
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    metrics: dict[str, Any] = {}
    print()
    if a is not None:
        ratio_a = ratio(a["dask_s"], a["process_s"])
        print_table(
            ["(a) runner", "wall s", "per task s", "/ process pool"],
            [
                ["ProcessPoolTaskRunner", a["process_s"], a["process_s"] / args.tasks, 1.0],
                ["DaskTaskRunner+CanfarCluster", a["dask_s"], a["dask_s"] / args.tasks, ratio_a],
            ],
        )
        print(f"platform requests (Dask side): {request_breakdown(a['counters'])}")
        print(f"sessions left at the platform: {len(a['leftover'])}")
        met_a = ratio_a <= 2.0
        print(f"Dask on CanfarCluster / ProcessPool = {ratio_a:.2f}; target <= 2: {verdict(met_a)}")
        metrics.update(
            {
                "dask_a_tasks": args.tasks,
                "dask_a_wall_s_process_pool": a["process_s"],
                "dask_a_wall_s_dask_canfar_cluster": a["dask_s"],
                "dask_a_ratio_dask_vs_process_pool": ratio_a,
                "dask_a_platform_requests": a["counters"].get("total", 0),
                "dask_a_target_met": met_a,
            }
        )
    if b is not None:
        speedup = ratio(b["canfar_s"], b["dask_s"])
        print_table(
            ["(b) runner", "wall s", "sessions", "platform requests", "speed-up"],
            [
                [
                    "CanfarTaskRunner",
                    b["canfar_s"],
                    b["canfar_counters"].get("POST /v1/session", 0),
                    b["canfar_counters"].get("total", 0),
                    1.0,
                ],
                [
                    "DaskTaskRunner+CanfarCluster",
                    b["dask_s"],
                    b["dask_counters"].get("POST /v1/session", 0),
                    b["dask_counters"].get("total", 0),
                    speedup,
                ],
            ],
        )
        print(f"sessions left at the platform: {len(b['leftover'])}")
        met_b = speedup >= 3.0
        print(
            f"CanfarTaskRunner / Dask on CanfarCluster = {speedup:.2f}x; target >= 3x: "
            f"{verdict(met_b)}"
        )
        metrics.update(
            {
                "dask_b_tasks": args.slow_tasks,
                "dask_b_start_delay_s": args.start_delay,
                "dask_b_slots": args.slots,
                "dask_b_wall_s_canfar_task_runner": b["canfar_s"],
                "dask_b_wall_s_dask_canfar_cluster": b["dask_s"],
                "dask_b_speedup_dask_vs_canfar_task_runner": speedup,
                "dask_b_target_met": met_b,
            }
        )
    print_metrics(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
