"""Helpers shared by the benchmarks in this directory.

Each benchmark compares this project with what a user would otherwise run, in one process
tree on one machine, so the helpers here are about fairness and about reading figures off
the servers rather than guessing them:

- the embedded CANFAR platform runs as `canfar-local serve` in its own process, so that it
  has its own interpreter (as a real Skaha server would) instead of sharing the GIL with
  the client under test, and its request counters are read over `/_platform/counters`;
- a Prefect server is started exactly as `tests/prefect/conftest.py` does (SQLite, a free
  loopback port, a private `PREFECT_HOME`), so no user profile leaks into a figure;
- every wait is bounded in time, every process started here is stopped by its own pid.

Scripts print a table and end with machine-readable `name: value` lines (`print_metrics`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENV_BIN = str(Path(sys.executable).parent)
PYTHON = sys.executable
IMAGE = "images.canfar.net/skaha/base:latest"
PREFECT_IMAGE = "images.canfar.net/skaha/astroml:latest"
PACKAGES = (
    "canfar-core",
    "snakemake-executor-plugin-canfar",
    "prefect-canfar",
    "canfar",
    "snakemake",
    "snakemake-executor-plugin-cluster-generic",
    "prefect",
    "httpx",
    "aiohttp",
)


# -- the machine ---------------------------------------------------------------------------


def load_average() -> str:
    """The 1/5/15-minute load average: other work on the machine skews every figure."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def memory_total_gib() -> float:
    """Physical memory in GiB, from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def versions() -> dict[str, str]:
    """Installed versions of the packages the figures depend on."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def print_header(title: str, what: Sequence[str] = ()) -> None:
    """Title, machine and load, so a pasted output is self-describing."""
    print(f"== {title} ==")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {platform.node()}  "
        f"cpus {os.cpu_count()}  mem {memory_total_gib():.1f} GiB  "
        f"Python {platform.python_version()}  load {load_average()}"
    )
    for line in what:
        print(line)
    print(flush=True)


# -- output --------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table (numbers right-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(headers)
    ]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line([str(h) for h in headers]))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))
    print(flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_metrics(metrics: Mapping[str, float | int | str | bool]) -> None:
    """The closing `name: value` lines that `bench/run_all.py` and RESULTS.md collect."""
    print()
    for name, value in metrics.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, float):
            text = f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
        else:
            text = str(value)
        print(f"{name}: {text}")
    print(f"load_average_at_end: {load_average().split()[0]}", flush=True)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is zero."""
    return numerator / denominator if denominator else float("nan")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- processes -----------------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the servers this script started.

    `bench/run_all.py` ends an overdue script with SIGTERM; without this, the platform and
    Prefect servers (each in its own session) would outlive it.
    """

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def base_env(**extra: str) -> dict[str, str]:
    """This environment without Prefect/CANFAR/Snakemake settings, venv first on PATH.

    Sessions of the embedded platform inherit the server's PATH, so the virtualenv's `bin`
    comes first and `prefect`, `python -m snakemake` inside a session are this
    environment's, as they would be in a CANFAR image built for the workflow.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "CANFAR_", "SNAKEMAKE_"))
    }
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "")])
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM a process started here in its own session (its group), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_until(
    predicate: Callable[[], T | bool | None],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str,
) -> T:
    """Poll until `predicate` is truthy; raise TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of one process in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User+system CPU seconds a live process has used, with its reaped children if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the embedded CANFAR platform -----------------------------------------------------------


@dataclass
class ServedPlatform:
    """`canfar-local serve` in a subprocess, with its URL, token and request counters."""

    process: subprocess.Popen[str]
    url: str
    token: str
    root: Path
    log: Path

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        cores: float,
        ram_gib: float,
        start_delay: float = 0.0,
        session_nice: int = 0,
    ) -> ServedPlatform:
        """Serve on a free loopback port with the capacity the benchmark needs.

        `start_delay`: seconds each session stays Pending after admission before its
        command starts (CANFAR's scheduling and image start; `--start-delay`).
        `session_nice`: the sessions' nice value (`--session-nice`): on CANFAR sessions
        run on other nodes, here on the driver's own CPUs.
        """
        root.mkdir(parents=True, exist_ok=True)
        cli = Path(VENV_BIN) / "canfar-local"
        command = [str(cli)] if cli.exists() else [PYTHON, "-m", "canfar_local.cli"]
        log = root.parent / f"{root.name}-server.log"
        with open(log, "w") as errors:
            process = subprocess.Popen(
                [
                    *command,
                    "serve",
                    "--root",
                    str(root),
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(cores),
                    "--ram",
                    str(ram_gib),
                    "--kill-on-exit",
                    "--start-delay",
                    str(start_delay),
                    "--session-nice",
                    str(session_nice),
                ],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=base_env(),
                start_new_session=True,
            )
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(2)]
        values = dict(line.split("=", 1) for line in lines if "=" in line)
        if "CANFAR_URL" not in values or "CANFAR_TOKEN" not in values:
            stop_process(process)
            raise RuntimeError(f"canfar-local serve did not start:\n{log.read_text()[-2000:]}")
        return cls(process, values["CANFAR_URL"], values["CANFAR_TOKEN"], root, log)

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`: where `/_platform/...` lives."""
        return self.url.split("/skaha", 1)[0]

    def _admin(self, method: str, path: str) -> dict[str, int]:
        response = httpx.request(
            method,
            f"{self.origin}/_platform{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def counters(self) -> dict[str, int]:
        """Requests per `METHOD /route` since start or the last reset, and `total`."""
        return self._admin("GET", "/counters")

    def reset_counters(self) -> None:
        self._admin("DELETE", "/counters")

    def sessions(self) -> list[dict[str, Any]]:
        """The default user's sessions, as the API lists them (one uncounted-free GET)."""
        response = httpx.get(
            f"{self.url}/session",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def cpu_seconds(self, *, sessions: bool = False) -> float:
        """The server's CPU; with `sessions`, also that of the sessions it reaped.

        Supervisors reap their commands and the server reaps the supervisors, so once a
        session has ended its whole process tree is in the server's children time.
        """
        return cpu_seconds(self.process.pid, children=sessions)

    def stop(self) -> None:
        """Stop serving and kill the sessions (`--kill-on-exit`)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServedPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def request_breakdown(counters: Mapping[str, int]) -> str:
    """`POST /v1/session=500, ...` sorted by count, for the printed output."""
    items = sorted(((k, v) for k, v in counters.items() if k != "total"), key=lambda kv: -kv[1])
    return ", ".join(f"{k}={v}" for k, v in items)


# -- Prefect -------------------------------------------------------------------------------


@dataclass
class PrefectServer:
    """A running `prefect server start` on SQLite and how to reach it."""

    process: subprocess.Popen[bytes]
    api_url: str
    home: Path
    log: Path

    SERVER_START_SECONDS = 180

    @classmethod
    def start(cls, home: Path) -> PrefectServer:
        """Start the server and wait (bounded) until `/health` answers."""
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        log = home / "server.log"
        env = base_env(
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(process, api_url, home, log)
        try:
            wait_until(
                lambda: process.poll() is not None or server.healthy(),
                timeout=cls.SERVER_START_SECONDS,
                what="the Prefect server to become healthy",
            )
        except BaseException:
            stop_process(process)
            raise
        if process.poll() is not None:
            raise RuntimeError(f"prefect server start exited:\n{log.read_text()[-3000:]}")
        return server

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess (worker, CLI) that talks to this server."""
        return base_env(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **extra,
        )

    def use_in_this_process(self) -> None:
        """Point this process's Prefect settings at the server (before importing prefect)."""
        for key in [k for k in os.environ if k.startswith("PREFECT_")]:
            del os.environ[key]
        os.environ.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
        )

    def stop(self) -> None:
        stop_process(self.process)


def timed_map(runner: Any, count: int, seconds: float = 0.0) -> tuple[float, list[int]]:
    """Run a flow mapping a task `count` times under `runner`: (wall seconds, results).

    The task squares its input, after sleeping `seconds` (0: a trivial task). It is
    defined here, inside the call, so that every runner pickles it by value.
    """
    from prefect import flow, task

    @task
    def square(x: int) -> int:
        if seconds:
            time.sleep(seconds)
        return x * x

    @flow(task_runner=runner)
    def squares(n: int) -> list[int]:
        return square.map(range(n)).result()

    started = time.perf_counter()
    result = squares(count)
    return time.perf_counter() - started, result
