"""Saving each session's output beside the workflow, where `--show-failed-logs` finds it.

The launch envelope tees the session's output to `<state dir>/<session id>.log` on the
shared filesystem, which outlives the session (CANFAR deletes finished sessions and
their logs after an hour). When a session ends, that file is moved to the job's log
path; if it is missing (no shared filesystem), the log text the tracker fetched from
the API is written instead. Failures get the session's events appended.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from canfar_core import Outcome

log = logging.getLogger(__name__)

EVENTS_HEADER = "\n---- CANFAR session events ----\n"


def session_log_file(state_dir: Path, session_id: str) -> Path:
    """Where the envelope tees a session's output."""
    return state_dir / f"{session_id}.log"


def session_exit_file(state_dir: Path, session_id: str) -> Path:
    """Where the envelope records a session's exit code."""
    return state_dir / f"{session_id}.exit"


def save_job_log(outcome: Outcome, *, state_dir: Path, dest: Path) -> Path | None:
    """Move (or write) the session's output to `dest`; returns the path, or None."""
    source = session_log_file(state_dir, outcome.session_id)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.move(source, dest)
        elif outcome.log_path is not None and outcome.log_path.is_file():
            shutil.move(outcome.log_path, dest)
        else:
            dest.write_text(outcome.logs, encoding="utf-8")  # the tail the tracker kept
        if not outcome.success and outcome.events_table:
            with open(dest, "a", encoding="utf-8") as handle:
                handle.write(EVENTS_HEADER + outcome.events_table.rstrip("\n") + "\n")
    except OSError as exc:
        log.warning("Cannot save the log of session %s to %s: %s", outcome.session_id, dest, exc)
        return None
    with contextlib.suppress(OSError):
        session_exit_file(state_dir, outcome.session_id).unlink()
    return dest
