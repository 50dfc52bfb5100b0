"""The session side of `CanfarTaskRunner`: `python -m prefect_canfar.remote <task dir>`.

Reads the pickled call the runner wrote (and deletes it at once: it carries the Prefect
settings, API key included), runs Prefect's task engine, and writes the final State
atomically beside it. Kept tiny: it runs in every task's session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from prefect_canfar.handoff import CALL_FILE, STATE_FILE


def run_task_in_session(*args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Apply the flow's Prefect settings, rebuild its context and run the task engine."""
    os.environ.update(env or {})
    from prefect.context import hydrated_context
    from prefect.engine import handle_engine_signals
    from prefect.task_engine import run_task_async, run_task_sync

    context = kwargs.pop("context", None)
    with hydrated_context(context), handle_engine_signals(kwargs.get("task_run_id")):
        task = kwargs.get("task")
        if task is not None and task.isasync:
            import asyncio

            return asyncio.run(run_task_async(*args, **kwargs))
        return run_task_sync(*args, **kwargs)


def _drain_prefect_workers() -> None:
    """Send buffered logs and events to the API before the session ends."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    except Exception:  # best effort: the State is already written
        pass


def main(argv: list[str]) -> int:
    """Run the call in `argv[1]` and write its State; exit 2 on a usage error."""
    if len(argv) != 2:
        print("usage: python -m prefect_canfar.remote <task dir>", file=sys.stderr)
        return 2
    import cloudpickle

    task_dir = Path(argv[1])
    call_path = task_dir / CALL_FILE
    payload = call_path.read_bytes()
    call_path.unlink()
    call = cloudpickle.loads(payload)
    state_bytes = call()
    tmp = task_dir / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(state_bytes)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, task_dir / STATE_FILE)
    _drain_prefect_workers()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
