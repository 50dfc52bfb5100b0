"""Flows the end-to-end tests deploy with `flow.from_source(<this directory>)`.

They run inside CANFAR sessions of the embedded platform, under `prefect flow-run
execute`, exactly as a user's flows would.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from prefect import flow, get_run_logger


@flow
def hello(name: str = "CANFAR") -> int:
    """Log a greeting, the session id and a fingerprint of the API key it was given."""
    key = os.environ.get("PREFECT_API_KEY", "")
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    get_run_logger().info(
        "hello %s from session %s (api key sha256 %s)",
        name,
        os.environ.get("skaha_sessionid"),  # noqa: SIM112 (the platform's own name)
        fingerprint,
    )
    return 42


@flow
def explode() -> None:
    """Raise, so that the engine reports the run Failed."""
    raise RuntimeError("this flow raises on purpose")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@flow
def killed() -> None:
    """SIGKILL the session's engine process and every process below it down to this one.

    This is what the kernel's OOM killer does to a session's main process: no Prefect
    code gets to report anything, and the session's command ends with status 137.
    """
    chain = []
    pid = os.getpid()
    while pid > 1:
        chain.append(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"flow-run\0execute" in cmdline or b"-m\0prefect.engine" in cmdline:
            break
        pid = _parent(pid)
    else:
        raise RuntimeError("the Prefect engine's command is not among this process's ancestors")
    for target in reversed(chain):
        os.kill(target, signal.SIGKILL)


@flow
def hog(mebibytes: int = 1536) -> int:
    """Use more memory than the session's `ram` allows, and hold it until killed."""
    block = bytearray(mebibytes * 1024 * 1024)
    time.sleep(60)
    return len(block)
