"""20 flow runs through a `canfar` work pool versus a `process` work pool.

One Prefect server (`prefect server start` on SQLite, a free loopback port, a private
`PREFECT_HOME`, as `tests/prefect/conftest.py` starts it) and, for each pool type in
turn, `prefect work-pool create --type <type>` and `prefect worker start --type <type>`.
A trivial flow is deployed to each pool with `flow.from_source(<local dir>)`, 20 runs
are created at once, and the time from the earliest scheduled start to the last run's
end (both as the Prefect server recorded them) is compared. The canfar worker runs each
flow run as a session of the embedded platform (`canfar-local serve`, own process).

Both workers poll Prefect every second (`PREFECT_WORKER_QUERY_SECONDS=1`, the e2e
tests' value; the default 10 s would add the same pickup delay to both). The canfar
worker's own settings are its defaults. The CPU of each worker and of everything it ran
(flow-run processes, or whole sessions) is counted too: on a shared two-core machine it
is the figure that other load does not move.

The canfar worker's sessions run `python -m prefect.engine`, the command the process
worker runs (issue 17). `--also-cli-command` runs the canfar pool a second time with the
job variable `command="prefect flow-run execute"`, Prefect's default for workers (the
CLI, then the engine in a second interpreter), the worker's default before.

    uv run python bench/prefect_worker.py [--runs 20] [--also-cli-command]

Target: canfar / process <= 1.0.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
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
    stop_process,
    verdict,
    wait_until,
)

FLOW_SOURCE = textwrap.dedent(
    '''
    """The trivial flow the worker benchmark deploys."""

    from prefect import flow


    @flow
    def trivial(x: int = 1) -> int:
        return x + 1
    '''
)
RUNS_TIMEOUT_SECONDS = 600
CLI_COMMAND = "prefect flow-run execute"
WORKER_START_SECONDS = 120


@dataclass
class PoolRun:
    """What one pool did with the runs."""

    pool_type: str
    span: float  # earliest scheduled start -> last end, server clock
    wall: float  # first create -> all final, observed here
    pickup: list[float]  # scheduled start -> start, per run
    duration: list[float]  # start -> end, per run
    completed: int
    requests: dict[str, int]
    cpu: float  # worker + flow-run processes or sessions


def children_cpu() -> float:
    """CPU of this process's reaped children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def prefect_cli(server: PrefectServer, *args: str, **env: str) -> None:
    """Run a `prefect` CLI command against the server (bounded)."""
    subprocess.run(
        [PYTHON, "-m", "prefect", *args],
        env=server.env(**env),
        check=True,
        capture_output=True,
        timeout=180,
    )


def start_worker(
    server: PrefectServer, pool: str, pool_type: str, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`prefect worker start` in its own session; returns once it says it started."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *(PYTHON, "-m", "prefect", "worker", "start"),
                *("--pool", pool, "--type", pool_type, "--name", f"bench-{pool_type}"),
            ],
            env=server.env(PREFECT_WORKER_QUERY_SECONDS="1", **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: process.poll() is not None or "started!" in log.read_text(errors="replace"),
            timeout=WORKER_START_SECONDS,
            what=f"the {pool_type} worker to start",
        )
    except BaseException:
        stop_process(process)
        raise
    if process.poll() is not None:
        raise RuntimeError(f"the {pool_type} worker exited:\n{log.read_text()[-3000:]}")
    return process


def deploy(flows: Path, pool: str, pool_type: str, command: str | None) -> Any:
    """Deploy the trivial flow to `pool` from the local directory."""
    from prefect import flow

    source: Any = flow.from_source(source=str(flows), entrypoint="bench_flows.py:trivial")
    extra: dict[str, Any] = {"image": PREFECT_IMAGE} if pool_type == "canfar" else {}
    if command:
        extra["job_variables"] = {"command": command}
    return source.deploy(
        name=f"trivial-{pool_type}",
        work_pool_name=pool,
        build=False,
        push=False,
        print_next_steps=False,
        **extra,
    )


def run_pool(
    server: PrefectServer,
    platform: ServedPlatform,
    flows: Path,
    directory: Path,
    pool_type: str,
    runs: int,
    command: str | None = None,
) -> PoolRun:
    """Create the pool, start its worker, deploy, run `runs` flow runs, measure.

    CPU is counted for the worker and everything it ran: its reaped children (the flow
    run processes of the process worker) once it has exited, plus, for canfar, the
    sessions the platform reaped (supervisor, envelope, the engine).
    """
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment

    pool = f"bench-{pool_type}"
    canfar_env = (
        {"CANFAR_URL": platform.url, "CANFAR_TOKEN": platform.token}
        if pool_type == "canfar"
        else {}
    )
    prefect_cli(server, "work-pool", "create", pool, "--type", pool_type, "--overwrite")
    deployment_id = deploy(flows, pool, pool_type, command)
    cpu_before = children_cpu() + platform.cpu_seconds(sessions=True)
    worker = start_worker(
        server, pool, pool_type, directory / f"worker-{pool_type}.log", **canfar_env
    )
    try:
        platform.reset_counters()
        print(f"{pool_type}: creating {runs} flow runs ...", flush=True)
        started = time.monotonic()
        ids = [run_deployment(deployment_id, timeout=0).id for _ in range(runs)]

        def all_final() -> list[Any] | None:
            with get_client(sync_client=True) as client:
                found = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
            found = [r for r in found if r.id in set(ids)]
            done = [r for r in found if r.state is not None and r.state.is_final()]
            return found if len(done) == len(ids) else None

        final = wait_until(
            all_final,
            timeout=RUNS_TIMEOUT_SECONDS,
            interval=0.2,
            what=f"{runs} flow runs on the {pool_type} pool",
        )
        wall = time.monotonic() - started
        requests = platform.counters()
    finally:
        stop_process(worker)
    time.sleep(1)  # the platform reaps ended supervisors every 0.2 s
    cpu = children_cpu() + platform.cpu_seconds(sessions=True) - cpu_before
    completed = sum(1 for r in final if r.state is not None and r.state.is_completed())
    scheduled = min(r.expected_start_time for r in final)
    end = max(r.end_time for r in final if r.end_time is not None)
    pickup = [(r.start_time - r.expected_start_time).total_seconds() for r in final if r.start_time]
    duration = [
        (r.end_time - r.start_time).total_seconds() for r in final if r.start_time and r.end_time
    ]
    result = PoolRun(
        pool_type,
        (end - scheduled).total_seconds(),
        wall,
        pickup,
        duration,
        completed,
        requests,
        cpu,
    )
    print(
        f"  {result.span:.1f} s scheduled -> all ended ({completed}/{runs} completed)",
        flush=True,
    )
    if completed != runs:
        print(textwrap.indent((directory / f"worker-{pool_type}.log").read_text()[-3000:], "    "))
    return result


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--also-cli-command",
        action="store_true",
        help="also run the canfar pool with job variable command='prefect flow-run execute' "
        "(Prefect's default for workers) instead of its default `python -m prefect.engine`",
    )
    args = parser.parse_args()

    print_header(
        f"Prefect workers: {args.runs} flow runs, `canfar` pool vs `process` pool",
        [
            "one Prefect server (SQLite); the trivial flow deployed with flow.from_source(dir)",
            "workers: PREFECT_WORKER_QUERY_SECONDS=1; canfar worker defaults otherwise; "
            "sessions on `canfar-local serve` (own process)",
            "time = earliest scheduled start -> last end, as the Prefect server recorded them; "
            "CPU = the worker and what it ran (flow-run processes or whole sessions)",
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-prefect-worker-"))
    flows = directory / "flows"
    flows.mkdir()
    (flows / "bench_flows.py").write_text(FLOW_SOURCE)
    results: dict[str, PoolRun] = {}
    try:
        started = time.monotonic()
        server = PrefectServer.start(directory / "prefect-home")
        print(f"Prefect server healthy after {time.monotonic() - started:.1f} s", flush=True)
        try:
            server.use_in_this_process()
            with ServedPlatform.start(directory / "platform", cores=64, ram_gib=256) as platform:
                for pool_type in ("process", "canfar"):
                    results[pool_type] = run_pool(
                        server, platform, flows, directory, pool_type, args.runs
                    )
                if args.also_cli_command:
                    results["canfar_cli"] = run_pool(
                        server,
                        platform,
                        flows,
                        directory,
                        "canfar",
                        args.runs,
                        command=CLI_COMMAND,
                    )
                    results["canfar_cli"].pool_type = f"canfar, {CLI_COMMAND}"
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    process, canfar = results["process"], results["canfar"]
    rows = [
        [
            r.pool_type,
            r.span,
            r.wall,
            statistics.median(r.pickup),
            max(r.pickup),
            statistics.median(r.duration),
            r.cpu / args.runs,
            f"{r.completed}/{args.runs}",
        ]
        for r in results.values()
    ]
    print()
    print_table(
        [
            "pool",
            "scheduled->all ended s",
            "observed s",
            "pickup p50 s",
            "pickup max s",
            "run p50 s",
            "CPU s per run",
            "completed",
        ],
        rows,
    )
    print(f"platform requests during the canfar runs: {request_breakdown(canfar.requests)}")
    span_ratio = ratio(canfar.span, process.span)
    met = span_ratio <= 1.0
    print(f"canfar / process = {span_ratio:.2f}; target <= 1.0: {verdict(met)}")
    extra: dict[str, float] = {}
    if "canfar_cli" in results:
        cli = results["canfar_cli"]
        extra = {
            "prefect_worker_span_s_canfar_cli_command": cli.span,
            "prefect_worker_ratio_canfar_cli_command_vs_process": ratio(cli.span, process.span),
            "prefect_worker_cpu_s_per_run_canfar_cli_command": cli.cpu / args.runs,
        }
    print_metrics(
        {
            "prefect_worker_runs": args.runs,
            "prefect_worker_span_s_canfar": canfar.span,
            "prefect_worker_span_s_process": process.span,
            "prefect_worker_ratio_canfar_vs_process": span_ratio,
            "prefect_worker_pickup_p50_s_canfar": statistics.median(canfar.pickup),
            "prefect_worker_pickup_p50_s_process": statistics.median(process.pickup),
            "prefect_worker_run_p50_s_canfar": statistics.median(canfar.duration),
            "prefect_worker_run_p50_s_process": statistics.median(process.duration),
            "prefect_worker_cpu_s_per_run_canfar": canfar.cpu / args.runs,
            "prefect_worker_cpu_s_per_run_process": process.cpu / args.runs,
            "prefect_worker_platform_requests": canfar.requests.get("total", 0),
            "prefect_worker_platform_requests_per_run": ratio(
                canfar.requests.get("total", 0), args.runs
            ),
            **extra,
            "prefect_worker_all_completed": canfar.completed == process.completed == args.runs,
            "prefect_worker_target_met": met,
        }
    )
    return 0 if canfar.completed == process.completed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
