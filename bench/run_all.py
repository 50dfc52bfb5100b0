"""`make bench`: run every benchmark once, bounded in time, and keep what each printed.

Each script runs in its own interpreter (so one's threads, servers and imports cannot skew
the next) with a time limit; its output is shown live and kept in `bench/out/<name>.txt`.
The machine (CPUs, memory, load before and after, versions) goes to `bench/out/machine.txt`
and every closing `name: value` line to `bench/out/summary.txt`, which is what
`bench/RESULTS.md` is written from. The exit status is non-zero if any script failed or
ran out of time; a missed target is a figure, not a failure.

    uv run python bench/run_all.py [--only snakemake_overhead,client_fanout]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import BENCH_DIR, PYTHON, REPO_ROOT, load_average, stop_process, versions

# (script, arguments, time limit in seconds). About 22 minutes on 2 idle cores, 30 under a
# load average of 8; the limits only stop a script that hangs.
SCRIPTS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("snakemake_overhead", (), 900),
    # --with-fixes measures the fixes proposed for canfar-core (see RESULTS.md).
    ("client_fanout", ("--with-fixes",), 480),
    # The third pass runs the canfar pool with the old `prefect flow-run execute` command
    # (two interpreters per run), beside the engine alone that sessions run now.
    ("prefect_worker", ("--also-cli-command",), 720),
    ("task_runner", (), 420),
    ("platform_scale", (), 300),
    # 50 jobs x 200 MB: writes 10 GB to the temporary directory (deleted afterwards).
    ("driver_memory", (), 1200),
    ("events_cost", (), 300),
    # About 12 minutes, most of it CanfarTaskRunner paying a 20 s start for each of 200 tasks.
    ("dask_cluster", (), 1800),
    # Four runs each of a 30-job chain and a 200-job fan-out (issue 18), about 25 minutes;
    # the jobs at nice 19 so that they do not starve the driver, as on CANFAR's own nodes.
    ("fast_path", ("--session-nice", "19"), 2400),
)
METRIC = re.compile(r"^([a-z][a-z0-9_]*): (\S.*)$")


def command_output(*argv: str) -> str:
    """A command's stdout, or a note that it failed (for the machine description)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({' '.join(argv)} failed: {exc})"


def machine_description() -> str:
    """What RESULTS.md needs to say about the machine and the software."""
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"nproc: {command_output('nproc')}",
        "free -h:",
        *("  " + line for line in command_output("free", "-h").splitlines()),
        f"uname: {command_output('uname', '-srm')}",
        f"commit: {command_output('git', '-C', str(REPO_ROOT), 'rev-parse', 'HEAD')}"
        + (
            " (packages/ modified)"
            if command_output("git", "-C", str(REPO_ROOT), "status", "--porcelain", "packages")
            else ""
        ),
        f"python: {sys.version.split()[0]} ({PYTHON})",
        *(f"{name}: {version}" for name, version in versions().items()),
    ]
    return "\n".join(lines)


def closing_metrics(lines: list[str]) -> list[str]:
    """The `name: value` lines after the script's last blank line."""
    blank = max((i for i, line in enumerate(lines) if not line.strip()), default=-1)
    return [line for line in lines[blank + 1 :] if METRIC.match(line)]


def run_script(
    name: str, arguments: tuple[str, ...], limit: int, out_dir: Path
) -> tuple[int, float, list[str]]:
    """Run one script with a time limit, echoing and saving its output."""
    argv = [PYTHON, str(BENCH_DIR / f"{name}.py"), *arguments]
    print(f"\n##### {name} (limit {limit} s): {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(limit, stop_process, args=(process,))
    timer.start()
    lines: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        process.wait()
    finally:
        timer.cancel()
        stop_process(process)
    seconds = time.monotonic() - started
    timed_out = seconds >= limit
    code = process.returncode if not timed_out else 124
    header = f"# {shlex.join(argv)}  (exit {code}, {seconds:.0f} s, load {load_average()})"
    (out_dir / f"{name}.txt").write_text("\n".join([header, *lines]) + "\n")
    return code, seconds, closing_metrics(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated script names")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {name for name, _, _ in SCRIPTS}
    out_dir = BENCH_DIR / "out"
    out_dir.mkdir(exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    machine = machine_description()
    print(machine)
    summary = [f"# bench/run_all.py, started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    summary.append(f"load_average_before: {load_average()}")
    failures = []
    started = time.monotonic()
    for name, arguments, limit in SCRIPTS:
        if name not in chosen:
            continue
        code, seconds, metrics = run_script(name, arguments, limit, out_dir)
        summary += [f"\n## {name} (exit {code}, {seconds:.0f} s)", *metrics]
        if code != 0:
            failures.append(f"{name} (exit {code})")
    total = time.monotonic() - started
    summary.append(f"\nload_average_after: {load_average()}")
    summary.append(f"total_seconds: {total:.0f}")
    (out_dir / "machine.txt").write_text(machine + "\n")
    (out_dir / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n##### summary (bench/out/summary.txt)")
    print("\n".join(summary))
    if failures:
        print(f"\nFAILED: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
