"""50 mapped tasks with `CanfarTaskRunner` versus Prefect's `ProcessPoolTaskRunner`.

One Prefect server (started as `tests/prefect/conftest.py` does) and one embedded
platform (`canfar-local serve`, own process). The same trivial task is mapped 50 times
in a flow, once under each runner, each with its defaults (ProcessPoolTaskRunner: one
worker process per CPU; CanfarTaskRunner: at most 8 sessions at once). The runner is
configured against the platform as `tests/prefect/test_task_runner.py` does:
`CANFAR_URL`/`CANFAR_TOKEN` in the environment, `image=`, `python=sys.executable`,
`shared_dir=`. A two-task warm-up flow runs under each runner first (not counted).

To show where the time goes, the script also times one session's floor: a bare
interpreter that imports what `python -m prefect_canfar.remote` imports.

    uv run python bench/task_runner.py [--tasks 50]

Target: CanfarTaskRunner / ProcessPoolTaskRunner <= 2.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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

# What a task session imports before it can run anything (prefect_canfar.remote's path).
REMOTE_IMPORTS = (
    "import cloudpickle, prefect, prefect.context, prefect.engine, prefect.task_engine, "
    "prefect_canfar.remote"
)


def interpreter_floor(repeats: int = 3) -> tuple[float, float]:
    """Median wall and CPU seconds of `python -c '<the remote side's imports>'`."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", REMOTE_IMPORTS], check=True, timeout=120)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    count = args.tasks

    directory = Path(tempfile.mkdtemp(prefix="bench-task-runner-"))
    results: dict[str, float] = {}
    try:
        server = PrefectServer.start(directory / "prefect-home")
        try:
            server.use_in_this_process()
            with ServedPlatform.start(directory / "platform", cores=64, ram_gib=256) as platform:
                os.environ["CANFAR_URL"] = platform.url
                os.environ["CANFAR_TOKEN"] = platform.token
                from prefect.task_runners import ProcessPoolTaskRunner
                from prefect_canfar import CanfarTaskRunner

                def canfar_runner() -> Any:
                    return CanfarTaskRunner(
                        image=PREFECT_IMAGE, python=PYTHON, shared_dir=directory / "shared"
                    )

                process_workers = ProcessPoolTaskRunner()._max_workers
                canfar_sessions = canfar_runner().max_sessions
                print_header(
                    f"Prefect task runners: {count} mapped tasks, CanfarTaskRunner vs "
                    "ProcessPoolTaskRunner",
                    [
                        "one Prefect server (SQLite), one platform (`canfar-local serve`)",
                        f"ProcessPoolTaskRunner() defaults: {process_workers} worker processes",
                        f"CanfarTaskRunner(image=..., python=sys.executable, shared_dir=...) "
                        f"defaults: max_sessions={canfar_sessions}",
                        "time = the flow call, from start to its result",
                    ],
                )
                print("warm-up: 2 tasks under each runner (not counted)", flush=True)
                timed_map(ProcessPoolTaskRunner(), 2)
                timed_map(canfar_runner(), 2)

                print(f"ProcessPoolTaskRunner: {count} tasks ...", flush=True)
                seconds, out = timed_map(ProcessPoolTaskRunner(), count)
                assert out == [x * x for x in range(count)], out
                results["process"] = seconds
                print(f"  {seconds:.1f} s", flush=True)

                print(f"CanfarTaskRunner: {count} tasks ...", flush=True)
                platform.reset_counters()
                server_cpu = platform.cpu_seconds()
                seconds, out = timed_map(canfar_runner(), count)
                assert out == [x * x for x in range(count)], out
                results["canfar"] = seconds
                counters = platform.counters()
                server_cpu = platform.cpu_seconds() - server_cpu
                print(f"  {seconds:.1f} s", flush=True)

                print("one session's floor: an interpreter importing the remote side ...")
                floor_wall, floor_cpu = interpreter_floor()
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    process, canfar = results["process"], results["canfar"]
    print()
    print_table(
        ["runner", "wall s", "per task s", "/ process pool"],
        [
            ["ProcessPoolTaskRunner", process, process / count, 1.0],
            ["CanfarTaskRunner", canfar, canfar / count, ratio(canfar, process)],
        ],
    )
    print(f"platform requests: {request_breakdown(counters)}; server CPU {server_cpu:.1f} s")
    cpus = os.cpu_count() or 1
    floor_total = floor_cpu * count / cpus
    print(
        f"floor: a fresh interpreter importing prefect and prefect_canfar.remote takes "
        f"{floor_wall:.2f} s wall, {floor_cpu:.2f} s CPU; x {count} sessions / {cpus} CPUs "
        f"= {floor_total:.1f} s before any task runs"
    )
    met = ratio(canfar, process) <= 2
    print(
        f"CanfarTaskRunner / ProcessPoolTaskRunner = {ratio(canfar, process):.2f}; "
        f"target <= 2: {verdict(met)}"
    )
    print_metrics(
        {
            "task_runner_tasks": count,
            "task_runner_process_pool_workers": process_workers,
            "task_runner_canfar_max_sessions": canfar_sessions,
            "task_runner_wall_s_canfar": canfar,
            "task_runner_wall_s_process_pool": process,
            "task_runner_ratio_canfar_vs_process_pool": ratio(canfar, process),
            "task_runner_platform_requests": counters.get("total", 0),
            "task_runner_requests_per_task": ratio(counters.get("total", 0), count),
            "task_runner_session_import_floor_cpu_s": floor_cpu,
            "task_runner_import_floor_total_s": floor_total,
            "task_runner_target_met": met,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
