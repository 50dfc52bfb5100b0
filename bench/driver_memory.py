"""The Snakemake driver's memory while its jobs print a lot: bounded, not per byte.

50 concurrent jobs each print 200 MB (10 GB in all) through `--executor canfar` against
`canfar-local serve` (its own process, so the platform's memory is not the driver's).
The envelope tees each session's output to the state directory; the tracker keeps only
the ends of each log (`log_tail_bytes`, 256 KiB) and the plugin moves the file to the
job's log. The figure is the peak resident memory of the Snakemake driver process: its
`VmHWM` read from /proc every 0.2 s until it exits, and `ru_maxrss` from `wait4`.

    uv run python bench/driver_memory.py [--jobs 50] [--megabytes 200]

Target: peak driver RSS < 200 MiB (the ratio to that budget is printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
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
    stop_process,
    verdict,
)

BUDGET_MIB = 200.0
RUN_TIMEOUT_SECONDS = 1800
LINE = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz012345"


def snakefile(jobs: int, size: int) -> str:
    """`jobs` independent jobs, each printing `size` bytes, and one rule collecting them."""
    return textwrap.dedent(
        f"""
        rule all:
            input: expand("done/{{i}}.txt", i=range({jobs}))

        rule chatty:
            output: "done/{{i}}.txt"
            shell: "(yes {LINE} || true) | head -c {size}; echo; echo done > {{output}}"
        """
    )


def peak_rss_mib(pid: int) -> float | None:
    """`VmHWM` (the peak resident set) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="concurrent jobs (and --jobs)")
    parser.add_argument("--megabytes", type=int, default=200, help="output per job, in MB")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    print_header(
        "Snakemake driver memory: jobs that print a lot",
        [
            f"{args.jobs} concurrent jobs x {args.megabytes} MB of output "
            f"({args.jobs * size / 1e9:.1f} GB in all), --jobs {args.jobs}",
            "--executor canfar against `canfar-local serve` (its own process); the figure "
            "is the Snakemake process's peak RSS",
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-driver-memory-"))
    workdir = directory / "workflow"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(snakefile(args.jobs, size))
    samples: list[float] = []
    try:
        with ServedPlatform.start(
            directory / "platform", cores=4 * args.jobs, ram_gib=16 * args.jobs
        ) as platform:
            argv = [
                PYTHON,
                "-m",
                "snakemake",
                "--nocolor",
                "--executor",
                "canfar",
                "--canfar-url",
                platform.url,
                "--jobs",
                str(args.jobs),
                "--seconds-between-status-checks",
                "1",
            ]
            log = directory / "snakemake.log"
            print(f"running: snakemake {' '.join(argv[3:])}", flush=True)
            started = time.monotonic()
            with open(log, "w") as out:
                process = subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=base_env(SNAKEMAKE_CANFAR_TOKEN=platform.token),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    value = peak_rss_mib(process.pid)
                    if value is not None:
                        samples.append(value)
                    stop.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            watchdog = threading.Timer(RUN_TIMEOUT_SECONDS, stop_process, args=(process,))
            watchdog.start()
            try:
                _, status, usage = os.wait4(process.pid, 0)
            except BaseException:
                stop_process(process)
                raise
            finally:
                watchdog.cancel()
                stop.set()
                sampler.join()
            seconds = time.monotonic() - started
            code = os.waitstatus_to_exitcode(status)
        done = len(list((workdir / "done").glob("*.txt"))) if (workdir / "done").exists() else 0
        logs = list((workdir / ".snakemake" / "canfar" / "logs").rglob("*.log"))
        saved = sum(p.stat().st_size for p in logs)
        ok = code == 0 and done == args.jobs
        if not ok:
            print(f"FAILED (exit {code}, {done}/{args.jobs} jobs); last lines of {log}:")
            print(textwrap.indent("\n".join(log.read_text().splitlines()[-30:]), "  "))
        hwm = max(samples) if samples else float("nan")
        maxrss = usage.ru_maxrss / 1024
        print_table(
            ["measure", "MiB", "/ budget"],
            [
                ["driver VmHWM (polled)", hwm, ratio(hwm, BUDGET_MIB)],
                ["driver ru_maxrss (wait4)", maxrss, ratio(maxrss, BUDGET_MIB)],
            ],
        )
        peak = max(hwm, maxrss)
        print(
            f"{done}/{args.jobs} jobs in {seconds:.1f} s; {len(logs)} job logs saved, "
            f"{saved / 1e9:.2f} GB; budget {BUDGET_MIB:g} MiB: {verdict(peak < BUDGET_MIB)}"
        )
        print_metrics(
            {
                "jobs": args.jobs,
                "megabytes_per_job": args.megabytes,
                "completed": ok,
                "wall_seconds": seconds,
                "driver_peak_rss_mib": peak,
                "ratio_to_budget": ratio(peak, BUDGET_MIB),
                "within_budget": peak < BUDGET_MIB,
            }
        )
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"kept {directory}")


if __name__ == "__main__":
    raise SystemExit(main())
