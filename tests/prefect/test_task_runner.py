"""CanfarTaskRunner with a real Prefect server and the embedded platform.

Each task runs in its own session (a real process started by the platform), which runs
Prefect's task engine and reports to the same Prefect server.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from canfar_local.testing import wait_for
from prefect import flow, get_run_logger, task
from prefect.states import State
from prefect_canfar import CanfarTaskRunner, canfar_options

IMAGE = "images.canfar.net/skaha/astroml:latest"
RUNNER = {"image": IMAGE, "python": sys.executable}


class PlatformWatcher:
    """Samples the platform's session list, as a user's `canfar ps` would, every 50 ms."""

    def __init__(self, platform) -> None:
        self.platform = platform
        self.max_live = 0
        self.resources: dict[str, tuple[str | None, str | None]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.platform.token}"}
        with httpx.Client(base_url=self.platform.url, headers=headers) as http:
            while not self._stop.is_set():
                sessions = http.get("/session").json()
                live = [s for s in sessions if s["status"] in ("Pending", "Running")]
                self.max_live = max(self.max_live, len(live))
                for s in sessions:
                    self.resources[s["name"]] = (s.get("requestedCPUCores"), s.get("requestedRAM"))
                self._stop.wait(0.05)

    def __enter__(self) -> PlatformWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def runner_env(
    prefect_api, platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """Point the runner at the test's platform; a shared directory under tmp_path."""
    monkeypatch.setenv("CANFAR_URL", platform.url)
    monkeypatch.setenv("CANFAR_TOKEN", platform.token)
    yield tmp_path / "shared"


@task
def square(x: int) -> int:
    get_run_logger().info("squaring %d inside a CANFAR session", x)
    return x * x


@task
def explode(message: str) -> None:
    raise ValueError(message)


@task
def hog_memory() -> None:
    block = bytearray(3 * 1024**3)
    time.sleep(30)
    del block


@task
def session_size() -> str:
    import os

    return os.environ["OMP_NUM_THREADS"]


@task(retries=1, retry_delay_seconds=0)
def flaky(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("first attempt failed")
        raise RuntimeError("transient failure on the first attempt")
    return "second attempt"


def test_map_ten_tasks_with_logs_and_bounded_sessions(runner_env: Path, platform) -> None:
    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env, max_sessions=2))
    def squares() -> list[int]:
        return square.map(range(10)).result()

    started = datetime.now(UTC)
    with PlatformWatcher(platform) as watcher:
        assert squares() == [x * x for x in range(10)]
    assert 1 <= watcher.max_live <= 2
    assert list(runner_env.iterdir()) == [], "call and state files must be removed after use"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterLevel, LogFilterTimestamp

    # This test's logs only (the server is shared with the tests before it), and waited
    # for: the sessions ship theirs in the background, which under load lags the result.
    def logged() -> bool:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                LogFilter(
                    level=LogFilterLevel(ge_=20), timestamp=LogFilterTimestamp(after_=started)
                ),
                limit=200,
            )
        return any("squaring 7 inside a CANFAR session" in log.message for log in logs)

    wait_for(logged, timeout=60, interval=0.5, what="the task's log line in Prefect")


def test_raising_task_is_failed_with_the_remote_traceback(runner_env: Path) -> None:
    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env))
    def failing_state() -> State:
        future = explode.submit("the detector is saturated")
        future.wait()
        return future.state

    state = failing_state(return_state=True)
    task_state = state.result(raise_on_failure=False)
    assert task_state.is_failed() and not task_state.is_crashed()
    assert "ValueError" in task_state.message and "the detector is saturated" in task_state.message
    with pytest.raises(ValueError, match="the detector is saturated"):
        task_state.result()


def test_out_of_memory_kill_is_crashed_with_the_reason(runner_env: Path) -> None:
    from prefect.exceptions import CrashedRun

    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env))
    def greedy() -> None:
        with canfar_options(ram=1):
            hog_memory.submit().result()

    with pytest.raises(CrashedRun) as crashed:
        greedy()
    message = str(crashed.value)
    assert "exit code 137" in message and "memory" in message
    assert "Session log tail" in message


def test_canfar_options_set_the_sessions_requested_resources(
    runner_env: Path, platform_factory, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    # A file-mode server offering 1, 2, 4 or 8 cores: `cores=3` is raised to 4 and the
    # flow's log says so, the rule every engine shares (canfar_core.allowed.fit).
    platform = platform_factory(core_options=(1, 2, 4, 8))
    monkeypatch.setenv("CANFAR_URL", platform.url)
    monkeypatch.setenv("CANFAR_TOKEN", platform.token)

    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env, cores=1, ram=1))
    def sized() -> tuple[str, str]:
        small = session_size.submit()
        with canfar_options(cores=3, ram=3):
            big = session_size.with_options(name="big-size").submit()
        return small.result(), big.result()

    with PlatformWatcher(platform) as watcher, caplog.at_level("INFO"):
        small, big = sized()
    assert (small, big) == ("1", "4")
    requested = {name.rsplit("-", 1)[0]: value for name, value in watcher.resources.items()}
    assert requested["task-session-size"] == ("1", "1.07")
    assert requested["task-big-size"] == ("4", "3.22")
    assert (
        "Task 'big-size': cores 3 raised to 4, the smallest value the server allows."
        in caplog.messages
    )


def test_resources_are_validated_before_submission(runner_env: Path) -> None:
    from canfar_core.errors import SpecError

    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env))
    def too_big() -> None:
        with canfar_options(cores=64):
            square.submit(2)

    with pytest.raises(SpecError, match="cores=64"):
        too_big()


def test_prefect_retries_work_inside_the_session(runner_env: Path, tmp_path: Path) -> None:
    @flow(task_runner=CanfarTaskRunner(**RUNNER, shared_dir=runner_env))
    def retried() -> str:
        return flaky.submit(str(tmp_path / "attempt-marker")).result()

    assert retried() == "second attempt"
