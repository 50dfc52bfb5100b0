"""Flows the reliability tests deploy to a `canfar` work pool."""

from __future__ import annotations

from pathlib import Path

from prefect import flow


@flow
def square(n: int, out_dir: str) -> int:
    """Write n² to `<out_dir>/<n>.txt`: an output the test can check for each run."""
    Path(out_dir, f"{n}.txt").write_text(f"{n * n}\n")
    return n * n


@flow
def wait_forever(marker: str) -> None:
    """Touch `marker` once running, then wait to be cancelled."""
    import time

    Path(marker).touch()
    while True:
        time.sleep(1)


@flow
def key_digest(out_dir: str) -> None:
    """Prove the API key reached the engine, without printing it: write its SHA-256."""
    import hashlib
    import os

    digest = hashlib.sha256(os.environ["PREFECT_API_KEY"].encode()).hexdigest()
    Path(out_dir, "key.txt").write_text(digest)


@flow
def gated(started: str, gate: str, exit_code: int = 0) -> str:
    """Touch `started`, wait for the file `gate`, then end: normally with exit_code 0,
    else by `os._exit(exit_code)`, which no Prefect code outlives to report (a crash)."""
    import os
    import time

    Path(started).touch()
    while not Path(gate).exists():
        time.sleep(0.2)
    if exit_code:
        os._exit(exit_code)
    return "done"


@flow
def brief(seconds: float = 1.0) -> None:
    """Take a moment, so that runs under a concurrency limit overlap."""
    import time

    time.sleep(seconds)
