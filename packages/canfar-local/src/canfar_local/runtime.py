"""Process-level operations on supervisors: start, identify, signal, read their files.

A pid alone is not an identity (pids are reused), so every liveness check compares the start
time recorded when the process was first seen with the one in ``/proc`` and treats zombies
as dead: after a server restart the supervisors are no longer our children and nobody may
reap them promptly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .supervisor import process_tree

SUPERVISOR_SCRIPT = Path(__file__).resolve().with_name("supervisor.py")


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start ticks) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def is_alive(pid: int | None, ticks: int | None) -> bool:
    """Whether the process that had ``pid`` and started at ``ticks`` still runs."""
    if not pid:
        return False
    stat = proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    if state in ("Z", "X"):
        return False
    return ticks is None or start == ticks


def read_json(path: Path) -> dict[str, object] | None:
    """A JSON file written atomically by a supervisor, or None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, object]) -> None:
    """Write a JSON file atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def start_supervisor(session_dir: Path) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start a detached supervisor for ``session_dir``; return it and its start ticks.

    The supervisor runs in a new session (so a server's terminal signals never reach it),
    with no inherited descriptors (so it never holds the root lock or the listening socket),
    and with ``-I -S`` so that start-up costs milliseconds.
    """
    with open(session_dir / "supervisor.err", "ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SUPERVISOR_SCRIPT), str(session_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    stat = proc_stat(process.pid)
    return process, (stat[1] if stat else None)


def signal_process(pid: int | None, ticks: int | None, sig: int) -> bool:
    """Send ``sig`` to a process if it is still the one we know; True if sent."""
    if not is_alive(pid, ticks):
        return False
    assert pid is not None
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_tree(pid: int | None, ticks: int | None) -> None:
    """SIGKILL a process and everything below it (a node lost with all it ran)."""
    if not is_alive(pid, ticks):
        return
    assert pid is not None
    for victim in [*process_tree(pid)[1:], pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)


def kill_group(pgid: int | None, ticks: int | None) -> None:
    """SIGKILL a command's process group if its leader is still the one we started."""
    if not pgid:
        return
    if ticks is not None and not is_alive(pgid, ticks):
        # The leader is gone; the group may still have members, but the id may be reused.
        stat = proc_stat(pgid)
        if stat is not None and stat[1] != ticks:
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
