"""What `snakemake --executor canfar` costs over the simplest remote executor and over local.

A 200-job workflow (199 short `part` jobs fanned out, then one `merge`) runs three ways
with the same `--jobs`:

(a) `--executor canfar` against the embedded platform, which this script serves with
    `canfar-local serve` so that its request counters can be read (`--canfar-url local`
    would start the platform inside Snakemake, where nobody can read them); the token
    travels in `SNAKEMAKE_CANFAR_TOKEN`, never on the command line;
(b) `--executor cluster-generic`, whose submit command runs the job script in the
    background and whose status comes from its marker files: the cheapest remote
    executor there is, so (a)/(b) is the price of sessions, the API and the envelope;
(c) plain local `--cores`, where no job pays for a Snakemake start of its own.

Both remote runs use `--seconds-between-status-checks 1` (the tests' value; Snakemake's
default of 10 s would make cluster-generic look slow for a reason unrelated to it).
With `--with-local-url`, (a) is also timed once with a true `--canfar-url local`.

    uv run python bench/snakemake_overhead.py [--jobs 8] [--with-local-url]

Targets: (a)/(b) <= 1.1; at most 3 requests per job besides the list ticks all jobs share.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    PYTHON,
    ServedPlatform,
    base_env,
    exit_on_sigterm,
    print_header,
    print_metrics,
    print_table,
    ratio,
    request_breakdown,
    stop_process,
    verdict,
)

PARTS = 199  # + 1 merge = 200 jobs
RUN_TIMEOUT_SECONDS = 900


def snakefile(parts: int) -> str:
    """The fan-out of `parts` short jobs and the merge."""
    return textwrap.dedent(
        f"""
        rule merge:
            input: expand("parts/{{i}}.txt", i=range({parts}))
            output: "merged.txt"
            shell: "cat {{input}} > {{output}}"

        rule part:
            output: "parts/{{i}}.txt"
            shell: "echo {{wildcards.i}} > {{output}}"
        """
    )


# Run the job script in the background with its output beside it, print a job id.
SUBMIT = """sh -c 'sh "$0" >"$0.out" 2>&1 </dev/null & echo $!'"""


@dataclass
class Run:
    """One Snakemake run: what was run, how long it took, whether it produced the result."""

    label: str
    argv: list[str]
    seconds: float
    returncode: int
    ok: bool
    log: Path
    cpu: float  # the Snakemake process and the children it reaped


def snakemake(
    label: str, workdir: Path, args: list[str], env: dict[str, str], show: str, parts: int
) -> Run:
    """Run Snakemake in a fresh copy of the workflow and time it from start to exit.

    `os.wait4` gives the CPU of the Snakemake process and of the children it reaped: for
    a local run that includes the jobs, for cluster-generic the submit shells (its jobs
    are orphaned by design), for canfar nothing else (sessions belong to the platform).
    """
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(snakefile(parts))
    argv = [PYTHON, "-m", "snakemake", "--nocolor", *args]
    log = workdir.parent / f"{workdir.name}.log"
    print(f"running ({label}): snakemake {show}", flush=True)
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    watchdog = threading.Timer(RUN_TIMEOUT_SECONDS, stop_process, args=(process,))
    watchdog.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # interrupted (SIGTERM from run_all): stop Snakemake too
        stop_process(process)
        raise
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    merged = workdir / "merged.txt"
    code = process.returncode
    ok = code == 0 and merged.exists() and len(merged.read_text().split()) == parts
    if not ok:
        print(f"  FAILED (exit {code}); last lines of {log}:")
        print(textwrap.indent("\n".join(log.read_text().splitlines()[-30:]), "    "))
    else:
        print(f"  {seconds:.1f} s", flush=True)
    return Run(label, argv, seconds, code, ok, log, usage.ru_utime + usage.ru_stime)


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="--jobs / --cores for every run")
    parser.add_argument(
        "--with-local-url",
        action="store_true",
        help="also time --canfar-url local (platform inside Snakemake; no counters)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--parts", type=int, default=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    jobs = str(args.jobs)
    remote = ["--jobs", jobs, "--seconds-between-status-checks", "1"]

    print_header(
        "Snakemake: canfar executor vs cluster-generic vs local",
        [
            f"workflow: {args.parts} `part` jobs (echo > file) and 1 `merge`: "
            f"{args.parts + 1} jobs",
            f"--jobs {jobs} for every run; remote runs: --seconds-between-status-checks 1",
            "(a) canfar runs against `canfar-local serve` started by this script "
            "(--canfar-url <its url>, token in SNAKEMAKE_CANFAR_TOKEN) so its counters "
            "can be read",
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-snakemake-"))
    runs: dict[str, Run] = {}
    counters: dict[str, int] = {}
    try:
        platform = ServedPlatform.start(
            directory / "platform", cores=max(64, 2 * args.jobs), ram_gib=max(256, 8 * args.jobs)
        )
        with platform:
            runs["local"] = snakemake(
                "c: local",
                directory / "local",
                ["--cores", jobs],
                base_env(),
                f"--cores {jobs}",
                args.parts,
            )
            runs["cluster_generic"] = snakemake(
                "b: cluster-generic",
                directory / "cluster-generic",
                ["--executor", "cluster-generic", "--cluster-generic-submit-cmd", SUBMIT, *remote],
                base_env(),
                f"--executor cluster-generic --cluster-generic-submit-cmd {SUBMIT!r} "
                + " ".join(remote),
                args.parts,
            )
            platform.reset_counters()
            server_cpu = platform.cpu_seconds()
            platform_cpu = platform.cpu_seconds(sessions=True)
            runs["canfar"] = snakemake(
                "a: canfar",
                directory / "canfar",
                ["--executor", "canfar", "--canfar-url", platform.url, *remote],
                base_env(SNAKEMAKE_CANFAR_TOKEN=platform.token),
                f"--executor canfar --canfar-url {platform.url} " + " ".join(remote),
                args.parts,
            )
            counters = platform.counters()
            server_cpu = platform.cpu_seconds() - server_cpu
            platform_cpu = platform.cpu_seconds(sessions=True) - platform_cpu
        if args.with_local_url:
            runs["canfar_local_url"] = snakemake(
                "a': canfar, --canfar-url local",
                directory / "canfar-local-url",
                ["--executor", "canfar", "--canfar-url", "local", *remote],
                base_env(CANFAR_LOCAL_ROOT=str(directory / "local-root")),
                "--executor canfar --canfar-url local " + " ".join(remote),
                args.parts,
            )
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"work directories kept in {directory}")

    total_jobs = args.parts + 1
    canfar, generic, local = runs["canfar"].seconds, runs["cluster_generic"].seconds, 0.0
    local = runs["local"].seconds
    lists = counters.get("GET /v1/session", 0)
    total = counters.get("total", 0)
    per_job = ratio(total, total_jobs)
    per_job_besides_lists = ratio(total - lists, total_jobs)
    rows = [
        [
            run.label,
            run.seconds,
            ratio(run.seconds, generic),
            ratio(run.seconds, local),
            run.cpu,
            run.ok,
        ]
        for run in runs.values()
    ]
    print()
    print_table(
        ["run", "wall s", "/ cluster-generic", "/ local", "Snakemake process CPU s", "ok"], rows
    )
    print(f"platform requests during (a): {total} ({request_breakdown(counters)})")
    print(
        f"per job: {per_job:.2f} in all, {per_job_besides_lists:.2f} besides the {lists} "
        f"list ticks shared by all {total_jobs} jobs"
    )
    print(
        f"platform during (a): server CPU {server_cpu:.1f} s; server + sessions (supervisors, "
        f"envelopes, the jobs' own Snakemake) {platform_cpu:.1f} s = "
        f"{ratio(platform_cpu, total_jobs):.2f} s per job"
    )
    ratio_met = ratio(canfar, generic) <= 1.1
    requests_met = per_job_besides_lists <= 3
    print(f"target (a)/(b) <= 1.1: {verdict(ratio_met)}")
    print(f"target <= 3 requests per job besides list ticks: {verdict(requests_met)}")

    metrics: dict[str, float | int | str | bool] = {
        "snakemake_jobs": total_jobs,
        "snakemake_parallel_jobs": args.jobs,
        "snakemake_wall_s_canfar": canfar,
        "snakemake_wall_s_cluster_generic": generic,
        "snakemake_wall_s_local": local,
    }
    if "canfar_local_url" in runs:
        metrics["snakemake_wall_s_canfar_url_local"] = runs["canfar_local_url"].seconds
    metrics.update(
        {
            "snakemake_ratio_canfar_vs_cluster_generic": ratio(canfar, generic),
            "snakemake_ratio_canfar_vs_local": ratio(canfar, local),
            "snakemake_platform_requests_total": total,
            "snakemake_platform_list_ticks": lists,
            "snakemake_requests_per_job": per_job,
            "snakemake_requests_per_job_besides_list_ticks": per_job_besides_lists,
            "snakemake_cpu_s_snakemake_process_canfar": runs["canfar"].cpu,
            "snakemake_cpu_s_snakemake_process_cluster_generic": runs["cluster_generic"].cpu,
            "snakemake_platform_server_cpu_s": server_cpu,
            "snakemake_platform_and_sessions_cpu_s": platform_cpu,
            "snakemake_all_runs_ok": all(r.ok for r in runs.values()),
            "snakemake_target_ratio_met": ratio_met,
            "snakemake_target_requests_met": requests_met,
        }
    )
    print_metrics(metrics)
    return 0 if all(r.ok for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
