"""Helpers of the Prefect tests: one real Prefect server for the whole test session.

The fixtures `prefect_server` and `prefect_api` live in `tests/conftest.py` so that the
Prefect and the reliability tests share one server. It is `prefect server start` on
SQLite and a free loopback port (about 12-25 s to become healthy on two cores, so it is
started once). The test process talks to it
through Prefect's settings context; subprocesses (workers, CLI calls) get
`prefect_env()`. Sessions run on the embedded CANFAR platform, whose processes inherit
this process's PATH, which `tests/conftest.py` starts with the virtualenv's `bin`, so
that `python -m prefect.engine` inside a session is this environment's Prefect; the
subprocesses of `base_env()` inherit it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
import pytest
from canfar_local.testing import wait_for

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

VENV_BIN = str(Path(sys.executable).parent)
PREFECT = (sys.executable, "-m", "prefect")
IMAGE = "images.canfar.net/skaha/astroml:latest"
# A fresh server runs its migrations before it answers: about 5 s on a quiet machine,
# 100 s seen beside the CPU-bound fault tests (pytest -n 2, tests/scheduling.py). A hang
# guard, not a wait.
SERVER_START_SECONDS = 240
# Server services no test uses. Each writes to the one SQLite database in the background,
# and Prefect 3.8's server on SQLite can stall for its 60 s busy timeout when writers
# collide ("database is locked" in server.log): marking runs Late, pools not ready,
# expiring pauses, evaluating automations and reclaiming concurrency leases are the
# writers these tests can do without. Event persistence, task-run recording and
# cancellation cleanup stay on: the worker's cancellation observer and the task runner's
# task runs need them.
QUIET_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false"
    for service in (
        "LATE_RUNS",
        "FOREMAN",
        "SCHEDULER",
        "PAUSE_EXPIRATIONS",
        "TRIGGERS",
        "REPOSSESSOR",
    )
}


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect or CANFAR settings, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "CANFAR_"))
    }
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM a process this test session started (its own group), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class PrefectServer:
    """A running `prefect server start` and how to reach it."""

    def __init__(self, api_url: str, home: Path) -> None:
        self.api_url = api_url
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess that talks to this server."""
        return base_env(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            **extra,
        )


@contextlib.contextmanager
def running_prefect_server(home: Path) -> Iterator[PrefectServer]:
    """`prefect server start` on SQLite under `home` and a free loopback port."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server = PrefectServer(api_url, home)
    log_path = home / "server.log"
    env = server.env(
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        **QUIET_SERVICES,
    )
    del env["PREFECT_API_URL"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or _healthy(api_url),
            timeout=SERVER_START_SECONDS,
            interval=0.25,
            what="the Prefect server to become healthy",
        )
        if process.poll() is not None:
            pytest.fail(f"prefect server start exited:\n{log_path.read_text()[-3000:]}")
        yield server
    finally:
        stop_process(process)


class Worker:
    """A running `prefect worker start` and its combined output."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def create_pool(env: dict[str, str], pool: str) -> None:
    """`prefect work-pool create --type canfar` (replacing a pool of that name)."""
    subprocess.run(
        [*PREFECT, "work-pool", "create", pool, "--type", "canfar", "--overwrite"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextlib.contextmanager
def running_worker(
    env: dict[str, str], pool: str, name: str, log: Path, *, create: bool = True
) -> Iterator[Worker]:
    """`prefect work-pool create --type canfar` (unless not `create`), then `prefect
    worker start` on it."""
    if create:
        create_pool(env, pool)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", pool, "--type", "canfar", "--name", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = Worker(process, log)
    try:
        wait_for(
            lambda: process.poll() is not None or f"Worker '{name}' started!" in handle.output(),
            timeout=120,
            interval=0.2,
            what="the worker to start",
        )
        assert process.poll() is None, handle.output()[-3000:]
        yield handle
    finally:
        stop_process(process)


def read_flow_run(flow_run_id: UUID) -> FlowRun:
    """The flow run as the Prefect API has it now."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def final_flow_run(flow_run_id: UUID, timeout: float = 180) -> FlowRun:
    """The flow run once it is in a final state."""

    def done() -> FlowRun | None:
        run = read_flow_run(flow_run_id)
        return run if run.state is not None and run.state.is_final() else None

    return wait_for(done, timeout=timeout, interval=0.5, what=f"flow run {flow_run_id}")
