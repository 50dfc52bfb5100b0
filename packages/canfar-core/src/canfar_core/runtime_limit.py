"""The tracker's runtime backstop behind the launch envelope's own limit.

A runtime limit is enforced twice. The envelope stops the command itself when the limit
passes (SIGTERM to its process group, SIGKILL after `KILL_GRACE_SECONDS`, exit code
124), which keeps the command's output and records the code. The tracker deletes a
session still Running after the limit plus this margin: the envelope never started (an
image without a shell), or its timer died with it. The margin must let the envelope
finish its own stop first, or every timeout would be reported as a deletion without
the command's last output; it is the same for every engine.
"""

from __future__ import annotations

from canfar_core.launch import KILL_GRACE_SECONDS

BACKSTOP_MARGIN_SECONDS = KILL_GRACE_SECONDS + 20


def runtime_backstop(limit_seconds: float | None) -> float | None:
    """The tracker's `runtime_limit` for a command limited to `limit_seconds` (None: none)."""
    return None if limit_seconds is None else limit_seconds + BACKSTOP_MARGIN_SECONDS
