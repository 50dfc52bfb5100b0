"""How soon Snakemake knows a job has ended: the exit-file fast path vs the list vs markers.

Two workflows of one-second jobs, each run four ways with Snakemake's default
`--seconds-between-status-checks 10`:

- a chain of 30 dependent jobs (each waits for the one before), where every second
  between a job's end and Snakemake knowing it is lost;
- a fan-out of 200 independent jobs and a merge.

(a) `--executor canfar` with the exit-file fast path (the default: the tracker reads the
    state directory every 0.5 s and the session list every 10 s);
(b) the same with `--canfar-exit-scan-interval 0`: ends are learnt from the list only,
    which the tracker reads every 0.5 s while phases change on a platform on this
    machine (on CANFAR every 2 s), about 14x the requests of (a);
(b2) the same at (a)'s request budget, `--max-status-checks-per-second 0.1`: one list
    every 10 s, as the tracker lists on CANFAR once it has backed off to the user's
    interval (the issue's "without the fast path");
(c) `--executor cluster-generic`, whose job scripts run in the background and touch
    marker files that Snakemake checks every status interval.

The canfar runs use `canfar-local serve` (out of process), so its request counters can
be read. Latency is from the end record's mtime (the session's exit file, or
cluster-generic's `.jobfinished` marker; a watcher scans for them every 20 ms and
stats each new one) to the moment Snakemake prints `Finished jobid: N` (its output
is read line by line). "p95 from rename" starts instead when the exit file got its name
(its ctime: the envelope writes a temporary file and renames it), the earliest any
reader of the directory can know; the two differ when a session waits for CPU between
its write and its `mv`.

At most `--cores` (16) jobs run at once, the rest queue `Pending` (the platform's
capacity; cluster-generic's `--jobs`). On CANFAR each session runs on its own node; on
this machine's 2 CPUs 200 in-session Snakemakes at once starve each other, and a
session's `mv` then waits up to a minute after its command ended, which no tracker
can see (`--cores 256` shows it).

    uv run python bench/fast_path.py [--chain 30] [--fan 200] [--only chain] [--cores 16]

Targets: with the fast path, latency p50 <= 1 s and p95 <= 2 s with at most one list
request per 10 s (counted at the platform: a run of T seconds makes at most 1 + T/10
lists; "list gap s" is the shortest time between two in its request log), and the
chain at least 3x faster than (b2), the list-only run at the same request budget.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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

STATUS_SECONDS = "10"
# Snakemake submits every ready job at once to the canfar runs: the platform's capacity
# (`--cores`), not `--jobs`, decides how many run.
CANFAR_JOBS = 250
LIST_INTERVAL_TARGET = 10.0  # seconds: at most one list request per this


def lists_allowed(seconds: float) -> int:
    """Lists a run of `seconds` may make at one per 10 s: the first, then one per 10 s.

    A count, not the shortest gap: the server's own times jitter by a tenth of a second
    under load, and the tracker lists when 10 s have passed less 50 ms of tolerance.
    """
    return 1 + int(seconds // LIST_INTERVAL_TARGET)


RUN_TIMEOUT_SECONDS = 1800
FINISHED = re.compile(r"Finished jobid: (\d+)")
# Job scripts in the background, their output beside them; a job id for Snakemake.
SUBMIT = """sh -c 'sh "$0" >"$0.out" 2>&1 </dev/null & echo $!'"""


def chain_snakefile(steps: int) -> str:
    return textwrap.dedent(
        f"""
        rule all:
            input: "chain/{steps - 1}.txt"

        def previous(wildcards):
            i = int(wildcards.i)
            return [] if i == 0 else [f"chain/{{i - 1}}.txt"]

        rule step:
            input: previous
            output: "chain/{{i}}.txt"
            shell: "sleep 1; echo {{wildcards.i}} > {{output}}"
        """
    )


def fan_snakefile(parts: int) -> str:
    return textwrap.dedent(
        f"""
        rule merge:
            input: expand("parts/{{i}}.txt", i=range({parts}))
            output: "merged.txt"
            shell: "cat {{input}} > {{output}}"

        rule part:
            output: "parts/{{i}}.txt"
            shell: "sleep 1; echo {{wildcards.i}} > {{output}}"
        """
    )


def written_at(path: Path, seen: float) -> tuple[float, float]:
    """When an end record was written, and when it got its name: its mtime and its ctime
    (the envelope writes a temporary file and renames it, and a rename sets the ctime),
    each capped by when the watcher first saw it (it may run late on a loaded machine,
    which would understate the latency); both are `seen` when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return seen, seen
    return min(stat.st_mtime, seen), min(stat.st_ctime, seen)


class EndWatcher:
    """When each end record (exit file or marker) was written; scanned every 20 ms."""

    def __init__(self, workdir: Path, kind: str) -> None:
        self.workdir, self.kind = workdir, kind
        self.seen: dict[str, float] = {}
        self.named: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _dirs(self) -> list[Path]:
        if self.kind == "canfar":
            return [self.workdir / ".snakemake" / "canfar" / "sessions"]
        base = self.workdir / ".snakemake"
        try:
            return [base / e.name for e in os.scandir(base) if e.name.startswith("tmp.")]
        except OSError:
            return []

    def _run(self) -> None:
        suffix = ".exit" if self.kind == "canfar" else ".jobfinished"
        while not self._stop.wait(0.02):
            now = time.time()
            for directory in self._dirs():
                try:
                    names = [e.name for e in os.scandir(directory) if e.name.endswith(suffix)]
                except OSError:
                    continue
                for name in names:
                    key = name[: -len(suffix)]
                    if key not in self.seen:
                        self.seen[key], self.named[key] = written_at(directory / name, now)

    def __enter__(self) -> EndWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    label: str
    seconds: float
    ok: bool
    latencies: list[float] = field(default_factory=list)
    # From when each end record got its name (its rename), not when it was written.
    latencies_named: list[float] = field(default_factory=list)
    lists: int | None = None
    shortest_list_gap: float | None = None

    @property
    def lists_per_minute(self) -> float | None:
        return None if self.lists is None else self.lists / (self.seconds / 60)

    def percentile(self, q: float, *, named: bool = False) -> float:
        values = sorted(self.latencies_named if named else self.latencies)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def snakemake(
    label: str,
    workdir: Path,
    snakefile: str,
    args: list[str],
    env: dict[str, str],
    kind: str,
    platform: ServedPlatform | None,
    jobs: int,
) -> Run:
    """Run Snakemake once; time stamp its `Finished jobid` lines and the end records."""
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(snakefile)
    argv = [PYTHON, "-m", "snakemake", "--nocolor", "--jobs", str(jobs), *args]
    argv += ["--seconds-between-status-checks", STATUS_SECONDS]
    print(f"running ({label})", flush=True)
    finished: dict[str, float] = {}
    if platform is not None:
        platform.reset_counters()
    started = time.monotonic()
    started_wall = time.time()
    with EndWatcher(workdir, kind) as watcher:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(RUN_TIMEOUT_SECONDS, stop_process, args=(process,))
        timer.start()
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = FINISHED.search(line)
            if match:
                finished[match.group(1)] = time.time()
        process.wait()
        timer.cancel()
    seconds = time.monotonic() - started
    ok = process.returncode == 0
    if not ok:
        print(f"  FAILED (exit {process.returncode}):\n" + "".join(lines[-30:]))
    lists = platform.counters().get("GET /v1/session", 0) if platform is not None else None
    gap = None
    if platform is not None:
        gap = shortest_gap(list_times(platform.root / "requests.log", since=started_wall))
    ends, named = watcher.seen, watcher.named
    verdicts: dict[str, float] = {}
    if kind == "canfar":
        ids = canfar_jobs(workdir)
        ends = {job: ends[sid] for sid, job in ids.items() if sid in ends}
        named = {job: named[sid] for sid, job in ids.items() if sid in named}
        verdicts = {ids[sid]: t for sid, t in ledger_done(workdir).items() if sid in ids}
    latencies = [finished[j] - t for j, t in ends.items() if j in finished]
    latencies_named = [finished[j] - t for j, t in named.items() if j in finished]
    # For reading a run afterwards: Snakemake's output, and each job's end record,
    # executor verdict (the ledger's "done") and Finished line, in Unix seconds.
    (workdir / "snakemake.out").write_text("".join(lines))
    timeline = {
        job: {
            "end": ends.get(job),
            "named": named.get(job),
            "verdict": verdicts.get(job),
            "finished": finished.get(job),
        }
        for job in sorted(set(ends) | set(finished), key=int)
    }
    (workdir / "timeline.json").write_text(json.dumps(timeline, indent=1))
    print(f"  {seconds:.1f} s, {len(latencies)} latencies", flush=True)
    return Run(label, seconds, ok, latencies, latencies_named, lists, gap)


def list_times(log: Path, *, since: float) -> list[float]:
    """When the platform began answering session lists (its request log), from `since` on.

    The log's time is when the answer was written; less its duration, when the server
    took the request up (a loaded server answers a list in up to 2 s).
    """
    times = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["method"] == "GET" and entry["path"].split("?")[0].endswith("/v1/session"):
            when = datetime.fromisoformat(entry["time"]).timestamp()
            when -= entry["duration_ms"] / 1000
            if when >= since:
                times.append(when)
    return times


def shortest_gap(times: list[float]) -> float | None:
    """The shortest time between two consecutive requests (None for fewer than two)."""
    ordered = sorted(times)
    return min((b - a for a, b in itertools.pairwise(ordered)), default=None)


def ledger_entries(workdir: Path, op: str) -> list[dict[str, Any]]:
    """The run ledger's entries of one kind (`submit`, `done`)."""
    ledger = workdir / ".snakemake" / "canfar" / "ledger.jsonl"
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    return [entry for entry in entries if entry.get("op") == op]


def ledger_done(workdir: Path) -> dict[str, float]:
    """Session id -> when the executor recorded its verdict (the ledger's `done`)."""
    return {e["session"]: e["t"] for e in ledger_entries(workdir, "done")}


def canfar_jobs(workdir: Path) -> dict[str, str]:
    """Session id -> Snakemake job id, from the run ledger (names end `-<jobid>-<attempt>`)."""
    return {e["session"]: e["name"].rsplit("-", 2)[-2] for e in ledger_entries(workdir, "submit")}


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=30, help="dependent jobs in the chain")
    parser.add_argument("--fan", type=int, default=200, help="independent jobs in the fan-out")
    parser.add_argument("--only", choices=["chain", "fan"], help="run one workflow only")
    parser.add_argument(
        "--ways", default="a,b,b2,c", help="which runs, comma-separated (default: a,b,b2,c)"
    )
    parser.add_argument(
        "--session-nice",
        type=int,
        default=0,
        metavar="N",
        help="nice value of the jobs (the platform's sessions, cluster-generic's scripts); "
        "19 keeps 200 in-session Snakemakes from starving the driver on 2 CPUs, as "
        "CANFAR's sessions, on other nodes, never do (default 0)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=16,
        metavar="N",
        help="how many one-core jobs run at once: the platform's capacity (the rest queue "
        "Pending, as under Kueue when the cluster is full) and cluster-generic's --jobs. "
        "On CANFAR each session has its own node; here 200 at once starve each other and "
        "an exit file gets its name (the envelope's mv) up to a minute after its command "
        "ended (default 16)",
    )
    args = parser.parse_args()
    print_header(
        "Snakemake: how soon a job's end is known (exit-file fast path)",
        [
            f"workflows: a chain of {args.chain} dependent 1 s jobs; a fan-out of "
            f"{args.fan} 1 s jobs and a merge",
            f"--seconds-between-status-checks {STATUS_SECONDS} everywhere",
            "(a) canfar, fast path on (default); (b) canfar, --canfar-exit-scan-interval 0; "
            "(b2) the same with --max-status-checks-per-second 0.1 (a's list budget); "
            "(c) cluster-generic (marker files); canfar against `canfar-local serve`",
            f"jobs at nice {args.session_nice}, at most {args.cores} running at once",
        ],
    )
    directory = Path(tempfile.mkdtemp(prefix="bench-fast-path-"))
    workflows = {"chain": chain_snakefile(args.chain), "fan": fan_snakefile(args.fan)}
    if args.only:
        workflows = {args.only: workflows[args.only]}
    runs: dict[tuple[str, str], Run] = {}
    platform = ServedPlatform.start(
        directory / "platform",
        cores=args.cores,
        ram_gib=64 * args.cores,
        session_nice=args.session_nice,
    )
    with platform:
        canfar = ["--executor", "canfar", "--canfar-url", platform.url]
        env = base_env(SNAKEMAKE_CANFAR_TOKEN=platform.token)
        modes = {
            "a: fast path": (canfar, env, "canfar", platform, CANFAR_JOBS),
            "b: list only": (
                [*canfar, "--canfar-exit-scan-interval", "0"],
                env,
                "canfar",
                platform,
                CANFAR_JOBS,
            ),
            "b2: list only, 1 list/10 s": (
                [
                    *canfar,
                    "--canfar-exit-scan-interval",
                    "0",
                    "--max-status-checks-per-second",
                    "0.1",
                ],
                env,
                "canfar",
                platform,
                CANFAR_JOBS,
            ),
            "c: cluster-generic": (
                [
                    "--executor",
                    "cluster-generic",
                    "--cluster-generic-submit-cmd",
                    f"nice -n {args.session_nice} {SUBMIT}",
                ],
                base_env(),
                "markers",
                None,
                args.cores,
            ),
        }
        chosen = set(args.ways.split(","))
        modes = {label: mode for label, mode in modes.items() if label.split(":")[0] in chosen}
        for wf, text in workflows.items():
            for label, (extra, run_env, kind, served, jobs) in modes.items():
                workdir = directory / f"{wf}-{label.split(':')[0]}"
                runs[(wf, label)] = snakemake(
                    f"{wf}, {label}", workdir, text, extra, run_env, kind, served, jobs
                )
    rows = []
    for (wf, label), run in runs.items():
        per_minute = run.lists_per_minute
        rows.append(
            [
                wf,
                label,
                f"{run.seconds:.1f}",
                f"{run.percentile(0.5):.2f}",
                f"{run.percentile(0.95):.2f}",
                f"{run.percentile(0.95, named=True):.2f}",
                "-" if per_minute is None else f"{per_minute:.1f}",
                "-" if run.shortest_list_gap is None else f"{run.shortest_list_gap:.2f}",
                "yes" if run.ok else "NO",
            ]
        )
    print_table(
        [
            "workflow",
            "run",
            "wall s",
            "latency p50 s",
            "p95 s",
            "p95 from rename s",
            "lists/min",
            "list gap s",
            "ok",
        ],
        rows,
    )
    metrics: dict[str, float | int | str | bool] = {}
    if len(modes) < 4:
        print(f"targets: not judged (a subset of the runs); work directories: {directory}")
        return 0
    met = True
    for wf in workflows:
        fast, listed = runs[(wf, "a: fast path")], runs[(wf, "b: list only")]
        budget = runs[(wf, "b2: list only, 1 list/10 s")]
        generic = runs[(wf, "c: cluster-generic")]
        metrics[f"{wf}_fast_p50_s"] = round(fast.percentile(0.5), 2)
        metrics[f"{wf}_fast_p95_s"] = round(fast.percentile(0.95), 2)
        metrics[f"{wf}_fast_p95_from_rename_s"] = round(fast.percentile(0.95, named=True), 2)
        metrics[f"{wf}_fast_lists_per_minute"] = round(fast.lists_per_minute or 0, 2)
        metrics[f"{wf}_list_only_over_fast_wall"] = ratio(listed.seconds, fast.seconds)
        metrics[f"{wf}_same_budget_list_only_over_fast_wall"] = ratio(budget.seconds, fast.seconds)
        metrics[f"{wf}_cluster_generic_over_fast_wall"] = ratio(generic.seconds, fast.seconds)
        met &= fast.ok and fast.percentile(0.5) <= 1 and fast.percentile(0.95) <= 2
        metrics[f"{wf}_fast_shortest_list_gap_s"] = round(fast.shortest_list_gap or 0, 2)
        metrics[f"{wf}_fast_lists"] = fast.lists or 0
        metrics[f"{wf}_fast_lists_allowed"] = lists_allowed(fast.seconds)
        met &= (fast.lists or 0) <= lists_allowed(fast.seconds)
    if "chain" in workflows:
        met &= metrics["chain_same_budget_list_only_over_fast_wall"] >= 3  # type: ignore[operator]
    print_metrics(metrics)
    print(f"targets: {verdict(met)}")
    print(f"work directories: {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
